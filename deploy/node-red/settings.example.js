// Node-RED 4.x settings for edgeloop's flow (deploy/node-red/flows.json). Every site-specific
// value comes from the environment, with these defaults; tests/integrations/test_node_red.py
// runs Node-RED 4.1.8 on this very file. Run:
//   EDGELOOP_PREFIX=edgeloop/v1 MQTT_HOST=broker.plant MQTT_PORT=1883 \
//     node-red --settings deploy/node-red/settings.example.js
const env = process.env;
const defaults = {
    MQTT_HOST: "127.0.0.1",               // the site broker (TLS and a login: edit the broker node)
    MQTT_PORT: "1883",
    EDGELOOP_PREFIX: "edgeloop/v1",        // pi_edge's --prefix
    EDGELOOP_CLASSES: "normal,bearing_fault,drive_wear,pump_fault",  // the vocabulary of the model
    PLANT_ALARM_TOPIC: "plant/alarms/edgeloop",  // alarms on <this>/<machine>, retained
    PLANT_ALARM_SEVERITY: "major",
    NODE_RED_STATUS_TOPIC: "plant/node-red/edgeloop/status",  // online/offline, retained (birth, will)
};
for (const [key, value] of Object.entries(defaults)) {
    if (!env[key]) env[key] = value;
}

module.exports = {
    uiHost: env.NODE_RED_HOST || "127.0.0.1",   // the form is served here too: 0.0.0.0 for the plant
    uiPort: parseInt(env.NODE_RED_PORT || "1880", 10),
    userDir: env.NODE_RED_USER_DIR || undefined,   // default ~/.node-red
    flowFile: env.NODE_RED_FLOWS || "flows.json",  // relative to userDir
    flowFilePretty: true,
    // Encrypts a broker login you add in the editor; set NODE_RED_CREDENTIAL_SECRET on a plant.
    credentialSecret: env.NODE_RED_CREDENTIAL_SECRET || false,
    // The editor is off unless NODE_RED_EDITOR=1; then protect it with adminAuth
    // (https://nodered.org/docs/user-guide/runtime/securing-node-red).
    disableEditor: env.NODE_RED_EDITOR !== "1",
    editorTheme: { tours: false, projects: { enabled: false } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    functionExternalModules: false,
    telemetry: { enabled: false },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    logging: { console: { level: env.NODE_RED_LOG_LEVEL || "info", metrics: false, audit: false } },
};
