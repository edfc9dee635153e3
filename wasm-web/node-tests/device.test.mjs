// The npm package on Node.js, installed from its packed tarball into a fresh folder as an app
// installs it, against a real vdev-platform: provisioning, delivery in order, the directory
// outbox across a SIGKILL and damage, one client per directory, a Platform restart, many devices
// in one process, and the API of issue 20 (listeners, awaited delivery, tunables seen on the
// wire, cloud-to-device, the twin's "if newer" and pending update, the logger, compression,
// forget). Run by scripts/test-node.sh.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { brotliDecompressSync } from "node:zlib";
import init, { DeviceClient } from "vdev-web";
import loadBrotli from "vdev-web/brotli";
import { Platform, waitFor } from "./platform.mjs";

/** @type {Platform} */
let platform;
before(async () => {
  await init();
  platform = await Platform.start();
});
after(() => platform?.stop());

let devices = 0;
/** A fresh outbox directory and Device ID. */
function fresh() {
  devices += 1;
  return { directory: mkdtempSync(join(tmpdir(), "vdev-node-outbox-")), deviceId: `node-${process.pid}-${devices}` };
}

/**
 * Starts a client of the test Platform that the technician approves; `events` collects every
 * event it hears.
 * @param {{ directory: string, deviceId: string }} where
 * @param {Record<string, unknown>} [options]
 */
async function start({ directory, deviceId }, options = {}) {
  /** @type {any[]} */
  const events = [];
  const client = await DeviceClient.start({
    instance: platform.info.httpUrl,
    provisioningToken: platform.info.provisioningToken,
    database: directory,
    deviceId,
    transport: "tls",
    ca: platform.ca(),
    onProvisioningOperation: (op) => platform.approve(op.id),
    onEvent: (event) => events.push(event),
    ...options,
  });
  return { client, events };
}

/** The payloads the Platform stored for `deviceId`, oldest first. @param {string} deviceId */
const stored = async (deviceId) => (await platform.messages(deviceId)).map((message) => message.payloadText);

/** `m<from>` ... `m<to - 1>`. */
const range = (/** @type {number} */ from, /** @type {number} */ to) =>
  Array.from({ length: to - from }, (_, index) => `m${from + index}`);

test("provisions with a technician's approval and delivers 1,000 messages over TLS in order, each once", async () => {
  const where = fresh();
  const { client, events } = await start(where);
  const sender = client.createStreamSender();
  const sequences = await Promise.all(range(0, 1000).map((payload) => sender.sendMessage(payload)));
  assert.deepEqual(sequences, [...sequences].sort((a, b) => a - b), "sequence numbers follow the sends");
  await client.waitEnqueuedMessagesSent();
  assert.deepEqual(await stored(where.deviceId), range(0, 1000));
  assert.equal(events.filter((e) => e.kind === "messageDelivered").length, 1000);
  assert.equal(client.deviceId, where.deviceId);
  // The default window sends in runs: the Platform saw several unacknowledged at once.
  const session = await platform.session(where.deviceId);
  assert.ok(session.peakInFlight > 1, `the default window: ${JSON.stringify(session)}`);
  assert.equal(session.keepAliveSeconds, 60);
  await client.stop();
});

test("listeners hear the events, a delivery is awaited, and a wait gives up on its signal or timeout", async () => {
  const where = fresh();
  const { client } = await start(where);
  /** @type {number[]} */
  const delivered = [];
  /** @type {any[]} */
  const rejected = [];
  client.addEventListener("messageDelivered", (event) => delivered.push(event.detail.seq));
  client.addEventListener("messageRejected", (event) => rejected.push(event.detail));
  const sender = client.createStreamSender();
  assert.equal(await sender.deliverMessage("first"), 0);
  assert.deepEqual(await stored(where.deviceId), ["first"], "at the Platform when it resolves");
  assert.deepEqual(delivered, [0]);

  client.setOffline(true);
  await waitFor("offline", () => client.statistics().connectionState !== "connected");
  await assert.rejects(sender.deliverMessage("second", { timeout: 200 }), { code: "timedOut" });
  const controller = new AbortController();
  const waiting = client.waitEnqueuedMessagesSent({ signal: controller.signal });
  controller.abort();
  await assert.rejects(waiting, { name: "AbortError" });
  await assert.rejects(client.waitEnqueuedMessagesSent({ timeout: -1 }), { code: "invalidOption" });
  client.setOffline(false);
  await client.waitEnqueuedMessagesSent({ timeout: 30_000 });
  assert.deepEqual(await stored(where.deviceId), ["first", "second"], "given up on, still delivered");
  assert.deepEqual(delivered, [0, 1]);

  // Refused for good: the upload slot of a large message answers 400.
  const path = `/devices/${client.workspaceId}:${where.deviceId}/files`;
  await platform.armFault({ pathPrefix: path, status: 400 });
  await assert.rejects(sender.deliverMessage(new Uint8Array(1_048_576)), (error) => {
    assert.equal(error.code, "messageRejected");
    assert.equal(error.sequence, 2);
    assert.equal(error.reason.code, "uploadRefused");
    return true;
  });
  assert.deepEqual(rejected.map((event) => [event.seq, event.reason.code]), [[2, "uploadRefused"]]);
  await client.stop();
});

test("tunables: refused at start when out of bounds; a window of one and the keep-alive reach the wire, delivering in order", async () => {
  const where = fresh();
  await assert.rejects(start(where, { tunables: { maxInFlight: 0 } }), {
    code: "invalidOption",
    message: "option tunables.maxInFlight: 0 is not from 1 to 65535",
  });
  const { client } = await start(where, { tunables: { maxInFlight: 1, keepAliveSeconds: 5, ackTimeoutMs: 10_000 } });
  const sender = client.createStreamSender();
  await Promise.all(range(0, 100).map((payload) => sender.sendMessage(payload)));
  await client.waitEnqueuedMessagesSent({ timeout: 60_000 });
  assert.deepEqual(await stored(where.deviceId), range(0, 100));
  const session = await platform.session(where.deviceId);
  assert.equal(session.peakInFlight, 1, `one publish at a time: ${JSON.stringify(session)}`);
  assert.equal(session.keepAliveSeconds, 5, "the CONNECT's keep-alive");
  await client.stop();
});

test("the rest of the official SDK's surface: cloud-to-device properties decoded, desired properties if newer, a pending reported update, the logger at its levels", async () => {
  const where = fresh();
  /** @type {Record<string, string[]>} */
  const said = { error: [], warn: [], info: [], debug: [] };
  const logger = Object.fromEntries(
    Object.keys(said).map((level) => [level, (/** @type {string} */ prefix, /** @type {string} */ what) => said[level].push(`${prefix} ${what}`)]),
  );
  const { client } = await start(where, { logger });
  /** @type {any[]} */
  const received = [];
  client.addEventListener("cloudToDeviceMessage", (event) => received.push(/** @type {CustomEvent} */ (event).detail));
  await waitFor("connected", () => client.statistics().connectionState === "connected");

  const c2d = await platform.admin("POST", `/devices/${where.deviceId}/c2d-messages?mode=eco&note=a%20b%26c%3D%25`, { setpoint: 21.5 });
  assert.equal(c2d.status, 201, JSON.stringify(c2d.body));
  await waitFor("the cloud-to-device message", () => received.length === 1);
  assert.deepEqual({ ...received[0].properties }, { mode: "eco", note: "a b&c=%" }, "decoded for the app");
  assert.equal(new TextDecoder().decode(received[0].payload), '{"setpoint":21.5}');

  const desired = await platform.admin("PUT", `/devices/${where.deviceId}/desired-properties`, { interval: 5 });
  assert.ok(desired.status < 300, `setting desired properties answered ${desired.status}`);
  await waitFor("the desired properties", () => client.desiredProperties()?.properties.interval === 5);
  const { version } = client.desiredProperties();
  assert.equal(client.desiredPropertiesIfNewer(version), undefined, "up to date: nothing newer");
  const newer = client.desiredPropertiesIfNewer(version - 1);
  assert.equal(newer?.version, version);
  assert.equal(newer?.properties.interval, 5);

  assert.equal(client.reportedPropertiesPending, false);
  client.setOffline(true);
  await waitFor("offline", () => client.statistics().connectionState !== "connected");
  await client.updateReportedProperties({ firmware: "2.0.1" });
  assert.equal(client.reportedPropertiesPending, true, "stored, not yet acknowledged");
  // The next CONNECT is refused (return code 3): a warning, then the device connects again.
  await platform.armFault({ target: "mqttConnect", count: 1 });
  client.setOffline(false);
  await waitFor("the acknowledgement", () => !client.reportedPropertiesPending);
  const reported = await platform.admin("GET", `/devices/${where.deviceId}/reported-properties`);
  assert.equal(reported.body?.firmware, "2.0.1");

  for (const kind of ["provisioningOperation", "registered", "connectionStateChanged"]) {
    assert.ok(said.info.includes(`vdev: ${kind}`), `info: ${said.info}`);
  }
  assert.ok(said.debug.includes("vdev: cloudToDeviceMessage"), `debug: ${said.debug}`);
  assert.ok(said.warn.includes("vdev: connectionLost"), `warn: ${said.warn}`);
  assert.ok(!said.info.includes("vdev: cloudToDeviceMessage"), "each event at one level");
  assert.deepEqual(said.error, []);
  await client.stop();
});

test("forget: refused while messages are pending unless forced, then the directory is gone and the device provisions anew", async () => {
  const where = fresh();
  const { client } = await start(where);
  const sender = client.createStreamSender();
  await sender.deliverMessage("known");
  client.setOffline(true);
  await waitFor("offline", () => client.statistics().connectionState !== "connected");
  await sender.sendMessage("dropped");
  await assert.rejects(client.forget(), { code: "messagesPending" });
  assert.equal(client.pendingMessagesCount(), 1, "refused: nothing changed");
  await client.forget({ force: true });
  assert.throws(() => readdirSync(where.directory), { code: "ENOENT" }, "the directory is gone");

  /** @type {string[]} */
  const operations = [];
  const again = await start(where, { onProvisioningOperation: (op) => operations.push(op.id) });
  assert.equal(again.client.pendingMessagesCount(), 0, "the queue is gone");
  await waitFor("a new provisioning operation", () => operations.length === 1);
  assert.equal(again.client.deviceId, undefined, "the identity is gone");
  await again.client.stop();
  assert.deepEqual(await stored(where.deviceId), ["known"]);
});

test("a second client of one directory is refused, in the same process and in another", async () => {
  const where = fresh();
  const { client } = await start(where, { onProvisioningOperation: undefined });
  await assert.rejects(start(where), (error) => error.code === "storeLocked" && error.message.includes(where.directory));
  const other = spawn(process.execPath, ["--input-type=module", "-e", `
    import init, { DeviceClient } from "vdev-web";
    await init();
    try {
      await DeviceClient.start({ instance: "http://127.0.0.1:9", provisioningToken: "t", database: ${JSON.stringify(where.directory)} });
      console.log("started");
    } catch (error) { console.log(error.code); }
    process.exit(0);`], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  other.stdout.on("data", (chunk) => (output += chunk));
  await new Promise((resolve) => other.once("exit", resolve));
  assert.equal(output.trim(), "storeLocked");
  await client.stop();
  // Free again once the first one stopped.
  const { client: next } = await start(where, { onProvisioningOperation: undefined });
  await next.stop();
});

test("killed with SIGKILL while sending, a restarted process delivers every stored message once, in order, without provisioning again", async () => {
  const where = fresh();
  const infoPath = join(platform.dataDir, "platform.json");
  const run = (/** @type {string} */ mode) =>
    spawn(process.execPath, ["sender.mjs", infoPath, where.directory, where.deviceId, mode], {
      cwd: process.cwd(),
      stdio: ["ignore", "pipe", "inherit"],
    });
  const sending = run("send");
  let lines = "";
  sending.stdout.on("data", (chunk) => (lines += chunk));
  const exited = new Promise((resolve) => sending.once("exit", resolve));
  // Killed mid-stream: once it has stored a few hundred and the Platform holds some.
  await waitFor("a stream in progress", async () => lines.split("\n").length > 300 && (await stored(where.deviceId)).length > 0);
  sending.kill("SIGKILL");
  await exited;
  const resolved = lines.split("\n").filter((line) => line.startsWith("stored ")).length;

  const draining = run("drain");
  let drained = "";
  draining.stdout.on("data", (chunk) => (drained += chunk));
  await new Promise((resolve) => draining.once("exit", resolve));
  assert.equal(drained.trim(), "drained");

  const payloads = await stored(where.deviceId);
  // Every send that resolved is there, each once and in order; one more may be (stored, but
  // killed before its promise resolved).
  assert.deepEqual(payloads.slice(0, resolved), range(0, resolved));
  assert.ok(payloads.length <= resolved + 1, `${payloads.length} stored, ${resolved} resolved`);
  assert.deepEqual(payloads, range(0, payloads.length));
  assert.equal((await platform.operations(where.deviceId)).length, 1, "provisioned once");
});

test("a torn last record and a flipped byte are cut and reported on open, the records before them delivered", async () => {
  for (const damage of ["torn", "flipped"]) {
    const where = fresh();
    // Stored while the Platform cannot be reached.
    const offline = await DeviceClient.start({
      instance: "http://127.0.0.1:9",
      provisioningToken: "t",
      database: where.directory,
      deviceId: where.deviceId,
      transport: "tcp",
    });
    const sender = offline.createStreamSender();
    for (const payload of range(0, 10)) await sender.sendMessage(payload);
    await offline.stop();

    const segment = join(where.directory, readdirSync(where.directory).filter((name) => name.startsWith("seg-")).sort().pop() ?? "");
    const bytes = readFileSync(segment);
    // Frames: length (u32 LE), checksum, then the sequence number and the record.
    const starts = [];
    for (let at = 0; at < bytes.length; at += 8 + bytes.readUInt32LE(at)) starts.push(at);
    assert.equal(starts.length, 10);
    if (damage === "torn") {
      truncateSync(segment, bytes.length - 3);
    } else {
      bytes[starts[6] + 20] ^= 0x01;
      writeFileSync(segment, bytes);
    }
    const kept = damage === "torn" ? 9 : 6;

    const { client, events } = await start(where, { transport: "tcp" });
    await client.waitEnqueuedMessagesSent();
    const recovered = events.filter((event) => event.kind === "outboxRecovered");
    assert.equal(recovered.length, 1, `${damage}: one recovery reported`);
    assert.match(recovered[0].reason, damage === "torn" ? /torn record/ : /checksum mismatch/);
    assert.equal(recovered[0].validBytes, starts[kept]);
    assert.deepEqual(await stored(where.deviceId), range(0, kept), damage);
    await client.stop();
  }
});

test("the Platform stopped and restarted mid-stream: the queue drains in order, each message once", async () => {
  const where = fresh();
  let delivered = 0;
  const { client } = await start(where, {
    onMessageOutcome: (/** @type {{ status: string }} */ outcome) => (delivered += outcome.status === "delivered" ? 1 : 0),
  });
  const sender = client.createStreamSender();
  await sender.sendMessage("m0");
  await client.waitEnqueuedMessagesSent();
  const sends = range(1, 400).map((payload) => sender.sendMessage(payload));
  await waitFor("some deliveries", () => delivered > 50);
  await platform.restart();
  await Promise.all(sends);
  await client.waitEnqueuedMessagesSent();
  assert.deepEqual(await stored(where.deviceId), range(0, 400));
  await client.stop();
});

test("100 devices in one process each deliver in order", async () => {
  const all = Array.from({ length: 100 }, fresh);
  const clients = await Promise.all(all.map((where) => start(where, { transport: "tcp" })));
  await Promise.all(
    clients.map(async ({ client }) => {
      const sender = client.createStreamSender();
      await Promise.all(range(0, 20).map((payload) => sender.sendMessage(payload)));
      await client.waitEnqueuedMessagesSent();
    }),
  );
  for (const where of all) assert.deepEqual(await stored(where.deviceId), range(0, 20), where.deviceId);
  await Promise.all(clients.map(({ client }) => client.stop()));
});

test("a 1 MB message goes by upload, byte-identical at the Platform, in its place in the order", async () => {
  const where = fresh();
  const { client } = await start(where);
  const sender = client.createStreamSender();
  const large = Uint8Array.from({ length: 1_048_576 }, (_, i) => (i * 7 + Math.floor(i / 1000)) & 0xff);
  await sender.sendMessage("small before");
  assert.equal(await sender.sendMessage(large), 1);
  await sender.sendMessage("small after");
  await client.waitEnqueuedMessagesSent();

  const messages = await platform.messages(where.deviceId);
  assert.equal(messages.length, 3);
  assert.equal(messages[0].payloadText, "small before");
  assert.equal(messages[2].payloadText, "small after");
  const link = messages[1];
  assert.equal(link.hasExternalizedPayload, true, JSON.stringify(link));
  assert.equal(link.sequence.n, 1);
  const response = await fetch(
    `${platform.info.httpUrl}/workspaces/${platform.info.workspaceId}/blobs/content?deviceId=${where.deviceId}&name=${link.blobName}`,
    { headers: { Authorization: `Bearer ${platform.info.adminToken}` } },
  );
  assert.equal(response.status, 200);
  const blob = new Uint8Array(await response.arrayBuffer());
  assert.equal(blob.length, large.length, "the blob holds the whole payload");
  assert.ok(Buffer.from(blob).equals(Buffer.from(large)), "the blob holds the message's bytes");
  await client.stop();
});

test("compressed streams arrive Brotli-encoded with the build's own encoder and with vdev-web/brotli's", async () => {
  const reading = "temperature=21.5;humidity=40;".repeat(200);
  const random = Uint8Array.from({ length: 2_000 }, () => Math.floor(Math.random() * 256));
  const node = await loadBrotli();
  /** The qualities the lent encoder was asked for. @type {number[]} */
  const asked = [];
  const counting = { encode: (/** @type {Uint8Array} */ payload, /** @type {number} */ quality) => (asked.push(quality), node.encode(payload, quality)) };
  for (const brotli of [undefined, counting]) {
    const where = fresh();
    const { client } = await start(where, { brotli });
    const sender = client.createStreamSender({ compression: "smallestSize" });
    await sender.deliverMessage(reading);
    await sender.deliverMessage(random);
    const [compressed, plain] = await platform.messages(where.deviceId);
    const lent = brotli ? "lent" : "own";
    assert.equal(compressed.contentEncoding, "br", lent);
    const encoded = Buffer.from(compressed.payloadBase64, "base64");
    assert.ok(encoded.length < reading.length / 10, `${lent}: ${encoded.length} bytes`);
    assert.equal(brotliDecompressSync(encoded).toString(), reading, lent);
    assert.equal(plain.contentEncoding, null, `${lent}: not smaller, sent as it is`);
    assert.ok(Buffer.from(plain.payloadBase64, "base64").equals(random), lent);
    await client.stop();
  }
  assert.deepEqual(asked, [11, 11], "the lent encoder encoded both payloads, at the smallest setting");
});

test("desired properties arrive and reported properties reach the Platform", async () => {
  const where = fresh();
  /** @type {[Record<string, unknown>, number][]} */
  const desired = [];
  const { client } = await start(where, {
    onDesiredPropertiesChanged: (/** @type {any} */ properties, /** @type {number} */ version) => desired.push([properties, version]),
  });
  await waitFor("the first twin fetch", () => desired.length > 0);
  const { status } = await platform.admin("PUT", `/devices/${where.deviceId}/desired-properties`, { threshold: 7, mode: "eco" });
  assert.ok(status < 300, `setting desired properties answered ${status}`);
  await waitFor("the desired properties", () => desired.some(([properties]) => properties.threshold === 7));
  assert.equal(client.desiredProperties().properties.mode, "eco");

  await client.updateReportedProperties({ firmware: "1.2.3", uptime: 5 });
  await waitFor("the reported properties at the Platform", async () => {
    const { body } = await platform.admin("GET", `/devices/${where.deviceId}/reported-properties`);
    return body?.firmware === "1.2.3" && body?.uptime === 5;
  });
  await client.stop();
});

test("MQTT over WebSocket where Node.js has a WebSocket, a clear refusal at start where it has none", async () => {
  const where = fresh();
  if (!globalThis.WebSocket) {
    await assert.rejects(
      start(where, { transport: "websocket" }),
      (error) => error.code === "invalidOption" && /websocket needs Node\.js 22 or later/.test(error.message),
    );
    return;
  }
  const { client } = await start(where, { transport: "websocket" });
  const sender = client.createStreamSender();
  await Promise.all(range(0, 10).map((payload) => sender.sendMessage(payload)));
  await client.waitEnqueuedMessagesSent();
  assert.deepEqual(await stored(where.deviceId), range(0, 10));
  await client.stop();
});

test("a lock left by a client that is gone is taken over: a dead pid, another boot, this pid in an earlier life", async () => {
  const boot = (() => {
    try {
      return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    } catch {
      return "";
    }
  })();
  const stale = [
    { pid: 2 ** 22 + 12345, boot },
    { pid: 1, boot: "another-boot" },
    // A container's pid 1 after a restart: this very pid, but this process holds nothing there.
    { pid: process.pid, boot },
  ];
  for (const lock of stale) {
    if (lock.boot === "another-boot" && !boot) continue; // no boot id on this system
    const where = fresh();
    writeFileSync(join(where.directory, "lock"), JSON.stringify(lock));
    const { client } = await start(where, { onProvisioningOperation: undefined });
    assert.equal(JSON.parse(readFileSync(join(where.directory, "lock"), "utf8")).pid, process.pid, JSON.stringify(lock));
    await client.stop();
  }
});

test("stop() ends an HTTP request still waiting for its answer: the process exits", async () => {
  // A server that takes requests and never answers.
  const { createServer } = await import("node:net");
  const held = [];
  const server = createServer((socket) => held.push(socket));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  const directory = mkdtempSync(join(tmpdir(), "vdev-node-hang-"));
  const started = Date.now();
  const child = spawn(process.execPath, ["--input-type=module", "-e", `
    import init, { DeviceClient } from "vdev-web";
    await init();
    const client = await DeviceClient.start({ instance: "http://127.0.0.1:${port}", provisioningToken: "t", database: ${JSON.stringify(directory)}, transport: "tcp" });
    setTimeout(() => client.stop().then(() => console.log("stopped")), 300);`], { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  const code = await new Promise((resolve) => child.once("exit", resolve));
  server.close();
  for (const socket of held) socket.destroy();
  assert.equal(output.trim(), "stopped");
  assert.equal(code, 0);
  assert.ok(held.length > 0, "the device's request reached the server");
  // Its deadline is 30 s: the process ended long before, because stop() ended the request.
  assert.ok(Date.now() - started < 15_000, `exited after ${Date.now() - started} ms`);
});
