#!/usr/bin/env node
// An independent Sparkplug B decoder for edgeloop's tests: Eclipse Tahu's JavaScript library
// `sparkplug-payload` (its own protobufjs build of sparkplug_b.proto), none of edgeloop's code.
//
//   node decode.js FILE...              decode each file (raw payload bytes); one JSON line each
//   node decode.js --hex < LINES        each line "TOPIC HEX" (mosquitto_sub -F '%t %x'), or HEX
//   node decode.js --base64 < LINES     each line "TOPIC BASE64", or BASE64
//   node decode.js --encode JSON        encode a payload object (sparkplug-payload's shape) and
//                                       write the raw bytes to stdout (for mosquitto_pub -s/-f)
//
// Output per payload: {"topic": ..., "payload": {timestamp, seq, metrics: [{name, type, value,
// timestamp}]}} or {"topic": ..., "error": "..."}. 64-bit integers (Long) become numbers when
// exact, else decimal strings. Install with `npm ci --prefix tests/tools/sparkplug`.
"use strict";

const fs = require("fs");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (Long.isLong(value)) {
    const n = value.toNumber();
    return Number.isSafeInteger(n) ? n : value.toString();
  }
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

function decode(topic, bytes) {
  try {
    return { topic, payload: plain(sparkplug.decodePayload(bytes)) };
  } catch (err) {
    return { topic, error: String(err && err.message ? err.message : err) };
  }
}

function main(argv) {
  if (argv[0] === "--encode") {
    const bytes = sparkplug.encodePayload(JSON.parse(argv[1]));
    process.stdout.write(Buffer.from(bytes));
    return 0;
  }
  if (argv[0] === "--hex" || argv[0] === "--base64") {
    const encoding = argv[0] === "--hex" ? "hex" : "base64";
    const lines = fs.readFileSync(0, "utf8").split("\n").filter((l) => l.trim() !== "");
    for (const line of lines) {
      const cut = line.lastIndexOf(" ");
      const topic = cut < 0 ? null : line.slice(0, cut);
      const data = Buffer.from(cut < 0 ? line.trim() : line.slice(cut + 1).trim(), encoding);
      process.stdout.write(JSON.stringify(decode(topic, data)) + "\n");
    }
    return 0;
  }
  if (argv.length === 0) {
    process.stderr.write("usage: decode.js FILE... | --hex | --base64 | --encode JSON\n");
    return 2;
  }
  for (const file of argv) {
    process.stdout.write(JSON.stringify(decode(file, fs.readFileSync(file))) + "\n");
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
