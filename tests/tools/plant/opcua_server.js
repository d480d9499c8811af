// An OPC UA server for edgeloop's source tests: node-opcua's own server (not written here).
//
//   node opcua_server.js PORT NAME[:TYPE] ...     TYPE: Double (default), Float, Int32, Boolean
//
// Each NAME becomes a variable with node id "ns=1;s=NAME" (value 0). Security mode None,
// anonymous. Prints "ready PORT" once listening. Commands on stdin, one JSON object a line:
//   {"set": "NAME", "value": 1.5}            a new value (status Good, source time now)
//   {"set": "NAME", "status": "BadSensorFailure"}   a bad status (the value kept)
// Each command is answered by "ok" (or "error: …"). Ends on SIGTERM/SIGKILL or stdin's end.
"use strict";
const { OPCUAServer } = require("node-opcua-server");
const { nodesets } = require("node-opcua-nodesets");
const { Variant, DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const readline = require("readline");

async function main() {
  const port = Number(process.argv[2]);
  const specs = process.argv.slice(3).map((s) => {
    const [name, type] = s.split(":");
    return { name, type: DataType[type || "Double"] };
  });
  const server = new OPCUAServer({
    port,
    nodeset_filename: [nodesets.standard],
    securityModes: [1], // MessageSecurityMode.None
    securityPolicies: ["http://opcfoundation.org/UA/SecurityPolicy#None"],
    allowAnonymous: true,
    serverCapabilities: { maxSessions: 20 },
  });
  await server.initialize();
  const ns = server.engine.addressSpace.getOwnNamespace();
  const folder = ns.addFolder(server.engine.addressSpace.rootFolder.objects, {
    browseName: "Plant",
  });
  const vars = {};
  for (const { name, type } of specs) {
    const variable = ns.addVariable({
      componentOf: folder,
      nodeId: `s=${name}`,
      browseName: name,
      dataType: type,
      minimumSamplingInterval: 10,
      value: new Variant({ dataType: type, value: type === DataType.Boolean ? false : 0 }),
    });
    vars[name] = { variable, type };
  }
  await server.start();
  process.stdout.write(`ready ${server.endpoints[0].port}\n`);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    try {
      const cmd = JSON.parse(line);
      if (!Object.hasOwn(vars, cmd.set)) throw new Error(`no variable ${cmd.set}`);
      const { variable: v, type } = vars[cmd.set];
      if (cmd.status !== undefined) {
        const code = StatusCodes[cmd.status];
        if (!code) throw new Error(`no status code ${cmd.status}`);
        const old = v.readValue().value;
        v.setValueFromSource(old, code);
      } else {
        v.setValueFromSource(new Variant({ dataType: type, value: cmd.value }), StatusCodes.Good);
      }
      process.stdout.write("ok\n");
    } catch (err) {
      process.stdout.write(`error: ${err.message}\n`);
    }
  });
  rl.on("close", async () => {
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((err) => {
  process.stderr.write(`opcua_server: ${err.stack || err}\n`);
  process.exit(1);
});
