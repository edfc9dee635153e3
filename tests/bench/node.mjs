// The Node.js figures of the benchmarks: the vdev npm package on Node.js (its directory outbox,
// MQTT over TCP) beside MQTT.js on Node.js over TCP to the same Platform, in the same run:
// durable enqueue rate (vdev `sendMessage` resolved, fdatasync'ed, vs MQTT.js QoS 1 publish
// acknowledged vs plain appends to a file with one fdatasync per 1,000) and drain rate of a
// stored backlog (vdev vs MQTT.js with 100 and with 256 outstanding, and MQTT.js against Debian's
// mosquitto broker with no Platform in the way: the JavaScript client's own limit). A fresh Platform per
// repetition (the optimised build browser.sh makes, named in VDEV_PLATFORM_BIN, as for the
// browser figures; the debug one in the quick run); rates at the Platform from its own
// `receivedTime` of the first and last message.
//
//   node tests/bench/node.mjs [--quick] [--repetitions N] [--only KEY,...] [--out FILE.json]
//                             [--profile-drain FILE.cpuprofile]
//
// `--only` runs some figures (`node_enqueue_rate`, `node_drain_rate`); `--profile-drain` records
// this process's CPU profile while vdev drains its backlog (the last repetition's), for Chrome
// DevTools or any `.cpuprofile` reader.
//
// Writes {"quick", "repetitions", "figures": [...]} as browser.mjs does; tests/benches/figures.rs
// merges it (VDEV_BENCH_NODE_JSON). Needs `npm ci` here and the packed vdev-web installed here
// (browser.sh does both), and vdev-platform.
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { open, rm } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import path from "node:path";
import mqtt from "mqtt";
import init, { DeviceClient } from "vdev-web";
import { startPlatform, stopProcess, tempDir, waitUntil } from "../e2e/lib.mjs";
import { median, platformBuild, registerMqttDevice, storedRate } from "./platform.mjs";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const outIndex = args.indexOf("--out");
const out = path.resolve(outIndex >= 0 && args[outIndex + 1] ? args[outIndex + 1] : "node-results.json");
const repetitionsIndex = args.indexOf("--repetitions");
const settings = quick
  ? { repetitions: 1, enqueueMessages: 300, drainMessages: 2_000 }
  : { repetitions: 3, enqueueMessages: 20_000, drainMessages: 100_000 };
if (repetitionsIndex >= 0) settings.repetitions = Number(args[repetitionsIndex + 1]);
const onlyIndex = args.indexOf("--only");
const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? "").split(",") : undefined;
const profileIndex = args.indexOf("--profile-drain");
const drainProfile = profileIndex >= 0 && args[profileIndex + 1] ? path.resolve(args[profileIndex + 1]) : undefined;
const WINDOW = 100;
// vdev-core's own window of publishes in flight (SessionConfig::max_in_flight), given to MQTT.js too.
const VDEV_WINDOW = 256;
const FILE_PER_SYNC = 1_000;
const PAYLOAD_BYTES = 256;

const log = (message) => console.error(`[bench/node ${new Date().toISOString().slice(11, 19)}] ${message}`);
const count = (n) => n.toLocaleString("en-US");
const seconds = (since) => Math.max(performance.now() - since, 1) / 1000;
/** Message `n`'s 256-byte payload: the counter, then padding (as the other figures). */
const payload = (n) => `${String(n).padStart(10, "0")} `.padEnd(PAYLOAD_BYTES, "x");
const payloads = (n) => Array.from({ length: n }, (_, i) => payload(i));

// ----- the Platform ---------------------------------------------------------------------------

/** A fresh Platform with TCP MQTT (startPlatform's has none), torn down after `body`. */
async function withPlatform(body) {
  const platform = await startPlatform(tempDir("vdev-bench-node-platform-"), ["--mqtt-tcp", "127.0.0.1:0"]);
  try {
    return await body(platform);
  } finally {
    await platform.stop();
  }
}

/** A free TCP port on loopback (mosquitto cannot be told to pick one and say which). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * Debian's mosquitto broker on loopback (anonymous, nothing persisted), torn down after `body`:
 * MQTT.js with no Platform in the way, the JavaScript client's own limit. `body` gets its URL.
 */
async function withMosquitto(body) {
  const port = await freePort();
  const directory = tempDir("vdev-bench-mosquitto-");
  const config = path.join(directory, "mosquitto.conf");
  writeFileSync(config, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
  const broker = spawn("mosquitto", ["-c", config], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let output = "";
  broker.stderr.on("data", (chunk) => (output += chunk));
  const failed = new Promise((_, reject) => {
    broker.once("error", (e) => reject(new Error(`mosquitto (Debian package mosquitto): ${e.message}`)));
    broker.once("exit", (code) => reject(new Error(`mosquitto exited (${code}): ${output}`)));
  });
  failed.catch(() => {});
  const accepts = () =>
    new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
    });
  try {
    await Promise.race([failed, waitUntil("mosquitto listening", accepts)]);
    return await body(`mqtt://127.0.0.1:${port}`);
  } finally {
    await stopProcess(broker, "SIGTERM");
    await rm(directory, { recursive: true, force: true });
  }
}

// ----- the clients ----------------------------------------------------------------------------

/** vdev on Node.js, approved and connected over TCP, its outbox in a fresh directory. */
async function connectedVdev(platform, deviceId) {
  const directory = tempDir("vdev-bench-node-outbox-");
  let connected;
  const isConnected = new Promise((resolve) => (connected = resolve));
  const client = await DeviceClient.start({
    instance: platform.info.httpUrl,
    provisioningToken: platform.info.provisioningToken,
    deviceId,
    database: directory,
    transport: "tcp",
    onProvisioningOperation: (op) => platform.admin.put("/provisioning-operations/approve", { provisioningOperationId: op.id }),
    onConnectionStateChanged: (state) => state === "connected" && connected(),
    onMessageOutcome: (outcome) => {
      if (outcome.status !== "delivered") throw new Error(`message ${outcome.sequence} ${outcome.status}`);
    },
  });
  await isConnected;
  return { client, sender: client.createStreamSender({ streamGroup: "bench", stream: "bench" }), directory };
}

/** Sends `messages` at once; messages/s until every send resolved (stored), in order. */
async function vdevSend(sender, messages) {
  const started = performance.now();
  const sequences = await Promise.all(messages.map((p) => sender.sendMessage(p)));
  const rate = messages.length / seconds(started);
  sequences.forEach((sequence, i) => {
    if (i > 0 && !(sequence > sequences[i - 1])) throw new Error(`sequence ${sequence} after ${sequences[i - 1]}`);
  });
  return rate;
}

async function mqttConnected({ tcpUrl, clientId, username, password }) {
  const client = mqtt.connect(tcpUrl, {
    protocolVersion: 4,
    clientId,
    username,
    password,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
    messageIdProvider: new mqtt.UniqueMessageIdProvider(),
  });
  await new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("error", (e) => reject(new Error(`mqtt.js: ${e.message}`)));
  });
  return client;
}

/** QoS 1 publishes with at most `window` outstanding; acknowledged messages/s. */
function mqttPublish(client, topic, messages, window = messages.length) {
  return new Promise((resolve, reject) => {
    let next = 0;
    let acknowledged = 0;
    const started = performance.now();
    const publishNext = () => {
      client.publish(topic, messages[next++], { qos: 1 }, (error) => {
        if (error) return reject(new Error(`mqtt.js publish: ${error.message}`));
        acknowledged += 1;
        if (acknowledged === messages.length) resolve(messages.length / seconds(started));
        else if (next < messages.length) publishNext();
      });
    };
    for (let i = 0; i < Math.min(window, messages.length); i++) publishNext();
  });
}

/** Plain appends to one file, one fdatasync per `perSync`: the disk's own rate. */
async function fileAppends(messages, perSync) {
  const directory = tempDir("vdev-bench-node-file-");
  const file = await open(path.join(directory, "log"), "a");
  const started = performance.now();
  for (let from = 0; from < messages.length; from += perSync) {
    await file.write(Buffer.from(messages.slice(from, from + perSync).join("")));
    await file.datasync();
  }
  const rate = messages.length / seconds(started);
  await file.close();
  await rm(directory, { recursive: true, force: true });
  return rate;
}

// ----- the figures ----------------------------------------------------------------------------

async function enqueueRate() {
  const n = settings.enqueueMessages;
  const [vdev, mqttjs, file] = [[], [], []];
  for (let rep = 1; rep <= settings.repetitions; rep++) {
    log(`enqueue rate ${rep}/${settings.repetitions}: ${count(n)} messages each`);
    await withPlatform(async (platform) => {
      const device = await connectedVdev(platform, "node-enqueue-vdev");
      vdev.push(await vdevSend(device.sender, payloads(n)));
      await device.client.stop();
      await rm(device.directory, { recursive: true, force: true });
      const registration = await registerMqttDevice(platform, "node-enqueue-mqttjs");
      const client = await mqttConnected(registration);
      mqttjs.push(await mqttPublish(client, registration.topic, payloads(n)));
      await client.endAsync(true);
      file.push(await fileAppends(payloads(n), FILE_PER_SYNC));
    });
  }
  return {
    key: "node_enqueue_rate",
    title: "Durable enqueue rate on Node.js, 256 B",
    unit: "messages/s",
    better: "higher",
    rows: [
      { who: "vdev on Node.js sendMessage resolved (fdatasync'ed in its outbox directory), connected", value: median(vdev) },
      { who: "MQTT.js 5.16 on Node.js publish QoS 1 acknowledged, TCP, all outstanding", value: median(mqttjs) },
      { who: `plain file appends, one fdatasync per ${count(FILE_PER_SYNC)}`, value: median(file) },
    ],
    note:
      `${count(n)} messages sent at once without awaiting each, ${settings.repetitions} repetition(s), ${process.version}; ` +
      "vdev connected and delivering while it stores. MQTT.js keeps nothing durable: its rate is the Platform's " +
      "acknowledgements.",
  };
}

/** This process's CPU profiler, started. */
async function startProfiler() {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return session;
}

async function drainRate() {
  const n = settings.drainMessages;
  const [vdev, mqttjs, mqttjsWide, mosquitto] = [[], [], [], []];
  for (let rep = 1; rep <= settings.repetitions; rep++) {
    log(`drain rate ${rep}/${settings.repetitions}: vdev backlog of ${count(n)}`);
    await withPlatform(async (platform) => {
      const device = await connectedVdev(platform, "node-drain-vdev");
      device.client.setOffline(true);
      await waitUntil("vdev offline", () => device.client.offline);
      for (let from = 0; from < n; from += 10_000) {
        await Promise.all(payloads(Math.min(10_000, n - from)).map((p) => device.sender.sendMessage(p)));
      }
      if (device.client.pendingMessagesCount() !== n) throw new Error(`vdev holds ${device.client.pendingMessagesCount()} of ${n}`);
      const profiler = drainProfile && rep === settings.repetitions ? await startProfiler() : undefined;
      device.client.setOffline(false);
      vdev.push(await storedRate(platform, n));
      if (profiler) {
        const { profile } = await profiler.post("Profiler.stop");
        profiler.disconnect();
        writeFileSync(drainProfile, JSON.stringify(profile));
        log(`CPU profile of vdev's drain: ${drainProfile}`);
      }
      await device.client.waitEnqueuedMessagesSent();
      await device.client.stop();
      await rm(device.directory, { recursive: true, force: true });
    });
    for (const [window, rates] of [[WINDOW, mqttjs], [VDEV_WINDOW, mqttjsWide]]) {
      log(`drain rate ${rep}/${settings.repetitions}: MQTT.js, ${count(n)} messages, ${window} outstanding`);
      await withPlatform(async (platform) => {
        const registration = await registerMqttDevice(platform, `node-drain-mqttjs-${window}`);
        const client = await mqttConnected(registration);
        await mqttPublish(client, registration.topic, payloads(n), window);
        rates.push(await storedRate(platform, n));
        await client.endAsync(true);
      });
    }
    log(`drain rate ${rep}/${settings.repetitions}: MQTT.js to mosquitto, ${count(n)} messages, ${VDEV_WINDOW} outstanding`);
    await withMosquitto(async (tcpUrl) => {
      const client = await mqttConnected({ tcpUrl, clientId: "node-drain-mosquitto" });
      mosquitto.push(await mqttPublish(client, "bench/drain", payloads(n), VDEV_WINDOW));
      await client.endAsync(true);
    });
  }
  return {
    key: "node_drain_rate",
    title: "Drain rate of a stored backlog on Node.js, QoS 1",
    unit: "messages/s",
    better: "higher",
    rows: [
      { who: "vdev on Node.js, directory outbox + TCP", value: median(vdev) },
      { who: `MQTT.js 5.16 on Node.js, TCP, ${WINDOW} outstanding`, value: median(mqttjs) },
      { who: `MQTT.js 5.16 on Node.js, TCP, ${VDEV_WINDOW} outstanding (vdev's window)`, value: median(mqttjsWide) },
      {
        who: `MQTT.js 5.16 on Node.js to Debian's mosquitto 2.0 (no Platform, nothing durable), TCP, ${VDEV_WINDOW} outstanding`,
        value: median(mosquitto),
      },
    ],
    note:
      `${count(n)} messages, ${settings.repetitions} repetition(s), ${process.version}; vdev's backlog stored while ` +
      "setOffline(true), then drained. Rates from the Platform's receivedTime of the first and last message; " +
      `the Platform is its ${platformBuild()} build. Against mosquitto (which stores nothing), the rate is MQTT.js's ` +
      "own, from its first publish to its last acknowledgement.",
  };
}

async function main() {
  const started = Date.now();
  await init();
  const figures = [];
  const failures = [];
  const all = { node_enqueue_rate: enqueueRate, node_drain_rate: drainRate };
  const unknown = (only ?? []).filter((key) => !(key in all));
  if (unknown.length) throw new Error(`--only: unknown figure(s) ${unknown.join(", ")}; known: ${Object.keys(all).join(", ")}`);
  for (const [key, figure] of Object.entries(all)) {
    if (only && !only.includes(key)) continue;
    try {
      figures.push(await figure());
    } catch (e) {
      failures.push(`${figure.name}: ${e.stack ?? e}`);
      log(`${figure.name} failed: ${e.message ?? e}`);
    }
  }
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ quick, repetitions: settings.repetitions, figures }, null, 2)}\n`);
  for (const f of figures) {
    console.log(`${f.title} (${f.unit}, ${f.better} is better)`);
    for (const r of f.rows) console.log(`  ${r.value.toFixed(1).padStart(12)}  ${r.who}`);
  }
  console.log(`node figures: ${out} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  const invalid = figures.filter((f) => f.rows.some((r) => !Number.isFinite(r.value)));
  if (failures.length || invalid.length) {
    for (const failure of failures) console.error(`error: ${failure}`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((e) => {
  console.error(`error: ${e.stack ?? e}`);
  process.exit(1);
});
