// A temperature sensor on Node.js with the vdev npm package: it provisions itself (printing
// the verification code a technician approves in the Platform's console), then stores a reading
// every second and delivers them in order; Ctrl-C stops it, and what is not delivered yet waits
// in its outbox directory for the next start.
//
//   npm install            (in this folder: installs the package built into ../pkg)
//   node node-sensor.mjs --platform ../../vdev-data/platform.json
//   node node-sensor.mjs --instance https://example.com --token <provisioning token>
//
// Options: --platform <platform.json of a stand-in Platform: its URL, token and test CA>,
// --instance, --token, --ca <PEM file>, --device-id, --transport tls|tcp|websocket,
// --directory <outbox directory> (default ./sensor-outbox).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import init, { DeviceClient } from "vdev-web";

const { values: args } = parseArgs({
  options: {
    platform: { type: "string" },
    instance: { type: "string" },
    token: { type: "string" },
    ca: { type: "string" },
    "device-id": { type: "string" },
    transport: { type: "string" },
    directory: { type: "string", default: "./sensor-outbox" },
  },
});
const platform = args.platform ? JSON.parse(readFileSync(args.platform, "utf8")) : {};
const instance = args.instance ?? platform.httpUrl;
const provisioningToken = args.token ?? platform.provisioningToken;
if (!instance || !provisioningToken) {
  console.error("usage: node node-sensor.mjs --platform <platform.json> | --instance <url> --token <provisioning token>");
  process.exit(2);
}
const caFile = args.ca ?? platform.caCertificatePath;

await init();
const client = await DeviceClient.start({
  instance,
  provisioningToken,
  database: args.directory,
  deviceId: args["device-id"],
  transport: /** @type {any} */ (args.transport),
  ca: caFile ? readFileSync(caFile) : undefined,
  onProvisioningOperation: (operation) =>
    console.log(`verification code: ${operation.verificationCode} (approve it in the technician console)`),
  onConnectionStateChanged: (state) => console.log(`connection: ${state}`),
  onMessageOutcome: (outcome) => console.log(`reading ${outcome.sequence} ${outcome.status}`),
  onEvent: (event) => {
    if (event.kind === "connectionLost") console.log(`connection lost: ${event.reason.message}`);
  },
});

const sender = client.createStreamSender({ streamGroup: "sensors", stream: "temperature" });
const started = Date.now();
const timer = setInterval(async () => {
  // A slow sine wave around 21 °C.
  const celsius = 21 + 2 * Math.sin((Date.now() - started) / 60_000);
  const sequence = await sender.sendMessage(JSON.stringify({ celsius: Math.round(celsius * 100) / 100 }));
  console.log(`reading ${sequence} stored: ${celsius.toFixed(2)} °C`);
}, 1000);

process.once("SIGINT", async () => {
  clearInterval(timer);
  await client.stop();
  console.log(`stopped; ${client.pendingMessagesCount()} readings wait in ${args.directory}`);
});
