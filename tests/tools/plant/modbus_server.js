// A Modbus TCP server for edgeloop's source tests: modbus-serial's ServerTCP (not written here).
//
//   node modbus_server.js PORT [UNIT]        UNIT: the unit id it answers (default 255: any)
//
// 1000 holding registers, 1000 input registers, 1000 coils and 1000 discrete inputs, all 0;
// an address past them is answered with exception 2 (illegal data address). Prints "ready PORT"
// once listening. Commands on stdin, one JSON object a line, each answered by "ok":
//   {"holding": {"0": 17096, "1": 0}}      registers by address (also "input")
//   {"coil": {"3": true}}                  bits by address (also "discrete")
"use strict";
const ModbusRTU = require("modbus-serial");
const readline = require("readline");

const SIZE = 1000;
const tables = {
  holding: new Array(SIZE).fill(0),
  input: new Array(SIZE).fill(0),
  coil: new Array(SIZE).fill(false),
  discrete: new Array(SIZE).fill(false),
};

function get(table) {
  return (addr) => {
    if (addr < 0 || addr >= SIZE) {
      const err = new Error("illegal data address");
      err.modbusErrorCode = 0x02;
      throw err;
    }
    return tables[table][addr];
  };
}

const vector = {
  getHoldingRegister: get("holding"),
  getInputRegister: get("input"),
  getCoil: get("coil"),
  getDiscreteInput: get("discrete"),
  setRegister: (addr, value) => {
    tables.holding[addr] = value;
  },
  setCoil: (addr, value) => {
    tables.coil[addr] = value;
  },
};

const port = Number(process.argv[2]);
const unitID = Number(process.argv[3] || 255);
const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID });
server.on("initialized", () => process.stdout.write(`ready ${port}\n`));
server.on("serverError", (err) => {
  process.stderr.write(`modbus_server: ${err}\n`);
  process.exit(1);
});
server.on("socketError", () => {}); // a client that went away

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  try {
    const cmd = JSON.parse(line);
    for (const [table, values] of Object.entries(cmd)) {
      if (!Object.hasOwn(tables, table)) throw new Error(`no table ${table}`);
      for (const [addr, value] of Object.entries(values)) tables[table][Number(addr)] = value;
    }
    process.stdout.write("ok\n");
  } catch (err) {
    process.stdout.write(`error: ${err.message}\n`);
  }
});
rl.on("close", () => server.close(() => process.exit(0)));
