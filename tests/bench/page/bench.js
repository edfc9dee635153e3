// The in-page half of tests/bench/browser.mjs: vdev-web (from the packed tarball), MQTT.js and
// plain IndexedDB doing the same work in the same page, exposed as `window.bench` for the
// driver's `page.evaluate`. Each function measures only its own loop; the driver owns the
// Platform, the repetitions and the medians.
import init, { DeviceClient } from "/node_modules/vdev-web/vdev_web.js";
import mqtt from "/node_modules/mqtt/dist/mqtt.esm.js";

const PAYLOAD_BYTES = 256;

/** Message `n`'s 256-byte payload: the counter, then padding (as tests/benches/figures.rs). */
function payload(n) {
  return `${String(n).padStart(10, "0")} `.padEnd(PAYLOAD_BYTES, "x");
}

function payloads(count, first = 0) {
  return Array.from({ length: count }, (_, i) => payload(first + i));
}

function seconds(since) {
  return Math.max(performance.now() - since, 1) / 1000;
}

let wasm;
let vdev;

async function vdevStart({ instance, provisioningToken, deviceId }) {
  wasm ??= await init();
  const state = { connection: "", outcomes: 0, rejected: [] };
  const client = await DeviceClient.start({
    instance,
    provisioningToken,
    deviceId,
    database: `vdev-bench:${deviceId}`,
    onConnectionStateChanged: (connection) => (state.connection = connection),
    onMessageOutcome: (outcome) => {
      state.outcomes += 1;
      if (outcome.status !== "delivered") state.rejected.push(outcome);
    },
  });
  const sender = client.createStreamSender({ streamGroup: "bench", stream: "bench" });
  vdev = { client, sender, state };
}

/** Sends `count` messages without awaiting each (an app's burst); resolves with messages/s. */
async function vdevSend({ count, first = 0, chunk = count }) {
  const { sender } = vdev;
  let previous = -1;
  const started = performance.now();
  for (let from = 0; from < count; from += chunk) {
    const sequences = await Promise.all(payloads(Math.min(chunk, count - from), first + from).map((p) => sender.sendMessage(p)));
    for (const sequence of sequences) {
      if (!(sequence > previous)) throw new Error(`sequence ${sequence} after ${previous}: not in order`);
      previous = sequence;
    }
  }
  return count / seconds(started);
}

function vdevStatus() {
  if (!vdev) return null;
  return { ...vdev.state, statistics: vdev.client.statistics(), wasmBytes: wasm.memory.buffer.byteLength };
}

function vdevSetOffline(offline) {
  vdev.client.setOffline(offline);
}

async function vdevStop() {
  await vdev?.client.stop();
  vdev = undefined;
}

function wasmBytes() {
  return wasm?.memory.buffer.byteLength ?? 0;
}

let mqttClient;
let mqttTopic;

/** MQTT.js connected (or, with `manualConnect`, created and never connected) to the stand-in. */
async function mqttStart({ url, clientId, username, password, topic, manualConnect = false }) {
  mqttTopic = topic;
  mqttClient = mqtt.connect(url, {
    protocolVersion: 4,
    clientId,
    username,
    password,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
    manualConnect,
    // The default provider's counter wraps at 65,535 and overwrites outstanding callbacks.
    messageIdProvider: new mqtt.UniqueMessageIdProvider(),
  });
  if (manualConnect) return;
  await new Promise((resolve, reject) => {
    mqttClient.once("connect", resolve);
    mqttClient.once("error", (e) => reject(new Error(`mqtt.js: ${e.message}`)));
    mqttClient.once("close", () => reject(new Error("mqtt.js: connection closed before CONNACK")));
  });
}

/**
 * Publishes `count` QoS 1 messages with at most `window` outstanding (all at once when
 * `window` is absent); resolves with acknowledged messages/s.
 */
function mqttPublish({ count, window = count, first = 0 }) {
  const client = mqttClient;
  const all = payloads(count, first);
  return new Promise((resolve, reject) => {
    let next = 0;
    let acknowledged = 0;
    const started = performance.now();
    const publishNext = () => {
      const message = all[next++];
      client.publish(mqttTopic, message, { qos: 1 }, (error) => {
        if (error) return reject(new Error(`mqtt.js publish: ${error.message}`));
        acknowledged += 1;
        if (acknowledged === count) resolve(count / seconds(started));
        else if (next < count) publishNext();
      });
    };
    for (let i = 0; i < Math.min(window, count); i++) publishNext();
  });
}

/** Hands `count` QoS 1 messages to a client that is not connected: it holds them in memory. */
function mqttHoldOffline({ count }) {
  for (let i = 0; i < count; i++) mqttClient.publish(mqttTopic, payload(i), { qos: 1 });
  // The first 65,535 wait in its outgoing store, the rest (no message id left) in its queue.
  const held = mqttClient.outgoingStore._inflights.size + mqttClient._storeProcessingQueue.length;
  if (held !== count) throw new Error(`mqtt.js holds ${held} of ${count} messages`);
  return held;
}

async function mqttStop() {
  // A client that never connected has no stream to end: dropping it is all there is to do.
  if (mqttClient?.connected) await mqttClient.endAsync(true);
  mqttClient = undefined;
}

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/** Plain IndexedDB: `count` records of the same payloads, `perTransaction` puts per transaction. */
async function indexedDbPut({ count, perTransaction }) {
  const open = indexedDB.open("bench-plain-indexeddb", 1);
  open.onupgradeneeded = () => open.result.createObjectStore("messages");
  const db = await request(open);
  const all = payloads(count);
  const started = performance.now();
  const transactions = [];
  for (let from = 0; from < count; from += perTransaction) {
    // The durability vdev-web commits its appends with: on disk when `complete` fires.
    const tx = db.transaction("messages", "readwrite", { durability: "strict" });
    const store = tx.objectStore("messages");
    for (let i = from; i < Math.min(from + perTransaction, count); i++) store.put(all[i], i);
    transactions.push(
      new Promise((resolve, reject) => {
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
      }),
    );
  }
  await Promise.all(transactions);
  const rate = count / seconds(started);
  const stored = await request(db.transaction("messages").objectStore("messages").count());
  db.close();
  if (stored !== count) throw new Error(`plain IndexedDB holds ${stored} of ${count} records`);
  return rate;
}

window.bench = {
  vdevStart,
  vdevSend,
  vdevStatus,
  vdevSetOffline,
  vdevStop,
  wasmBytes,
  mqttStart,
  mqttPublish,
  mqttHoldOffline,
  mqttStop,
  indexedDbPut,
};
