// The npm package on Node.js against the stand-in in its strict mode (`--contract iothub`):
// only what a real instance offers, so the device takes the paths a real instance makes it
// take: the HTTPS API at the hub host, MQTT over TLS on 8883 at the hub host, and blob storage
// under its own host name, all trusted through the `ca` option and resolved to the Platform's
// own loopback address in this process (platform.mjs, `resolveTo`).
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import init, { DeviceClient } from "vdev-web";
import { Platform, waitFor } from "./platform.mjs";

const HUB = "hub.vdev.test";

/** @type {Platform} */
let platform;
before(async () => {
  await init();
  platform = await Platform.startStrict(HUB);
});
after(() => platform?.stop());

const range = (/** @type {number} */ from, /** @type {number} */ to) =>
  Array.from({ length: to - from }, (_, index) => `m${from + index}`);

test("strict mode: provisioning, 200 messages, a 1 MB upload, the twin, token refreshes and a Platform restart, as on a real instance", async () => {
  assert.equal(platform.info.httpUrl, null, "no plain listener");
  assert.equal(platform.instance, `https://${HUB}`);
  // A Provisioning Token whose Registration Tokens live 6 s: refreshed at half their life.
  const { body: created } = await platform.admin("POST", "/provisioning-tokens", {
    name: "strict-node",
    defaultRegistrationTokenLifetimeSeconds: 6,
  });
  const deviceId = `node-strict-${process.pid}`;
  /** @type {any[]} */
  const events = [];
  /** @type {Record<string, unknown>[]} */
  const desired = [];
  const client = await DeviceClient.start({
    instance: HUB,
    provisioningToken: created.token,
    database: mkdtempSync(join(tmpdir(), "vdev-node-strict-")),
    deviceId,
    ca: platform.ca(),
    onProvisioningOperation: (op) => platform.approve(op.id),
    onDesiredPropertiesChanged: (properties) => desired.push(properties),
    onEvent: (event) => events.push(event),
  });
  const sender = client.createStreamSender();
  await Promise.all(range(0, 100).map((payload) => sender.sendMessage(payload)));
  await client.waitEnqueuedMessagesSent();

  // The registration answer had no gateway endpoints: MQTT went to the hub host over TLS.
  assert.ok(events.some((event) => event.kind === "connectionStateChanged" && event.state === "connected"));

  // A 1 MB message by upload to blob storage (`https://blob.<hub>/...`, no uploadUrl).
  const large = Uint8Array.from({ length: 1_048_576 }, (_, i) => (i * 13 + (i >> 10)) & 0xff);
  await sender.sendMessage(large);

  // The twin.
  await waitFor("the first twin fetch", () => desired.length > 0);
  const { status } = await platform.admin("PUT", `/devices/${deviceId}/desired-properties`, { mode: "strict" });
  assert.ok(status < 300);
  await waitFor("the desired properties", () => desired.some((properties) => properties.mode === "strict"));
  await client.updateReportedProperties({ contract: "iothub" });
  await waitFor("the reported properties", async () => (await platform.admin("GET", `/devices/${deviceId}/reported-properties`)).body?.contract === "iothub");

  // Refreshes: two more Registration Tokens while messages flow.
  let sent = 100;
  await waitFor("two token refreshes", async () => {
    await sender.sendMessage(`m${sent++}`);
    const { body: tokens } = await platform.admin("GET", `/registration-tokens?deviceId=${deviceId}`);
    return tokens.length >= 3;
  });

  // A Platform restart while the rest is sent.
  const rest = range(sent, 200).map((payload) => sender.sendMessage(payload));
  await platform.restart();
  await Promise.all(rest);
  await client.waitEnqueuedMessagesSent();

  const messages = await platform.messages(deviceId);
  const link = messages.find((message) => message.hasExternalizedPayload);
  assert.ok(link, "the large message went by upload");
  const texts = messages.filter((message) => !message.hasExternalizedPayload).map((message) => message.payloadText);
  assert.deepEqual(texts, range(0, 200), "200 messages in order, each once");
  assert.equal(link.sequence.n, 100, "the upload keeps its place in the order");
  const { status: blobStatus, bytes } = await platform.adminBytes(
    "GET",
    `/blobs/content?deviceId=${deviceId}&name=${encodeURIComponent(link.blobName)}`,
  );
  assert.equal(blobStatus, 200);
  assert.ok(bytes.equals(Buffer.from(large)), "the blob holds the message's bytes");
  assert.equal((await platform.operations(deviceId)).length, 1, "provisioned once");
  await client.stop();
});
