// A device app in a process of its own, for the test that kills one: `send` stores messages
// "m0", "m1", ... one after the other and prints `stored <n>` as each send resolves (until it is
// killed); `drain` starts on the same directory, waits until the queue is delivered and stops.
//   node sender.mjs <platform.json> <directory> <device id> send|drain
import init, { DeviceClient } from "vdev-web";
import { readFileSync } from "node:fs";

const [infoPath, directory, deviceId, mode] = process.argv.slice(2);
const info = JSON.parse(readFileSync(infoPath, "utf8"));
const approve = (/** @type {{ id: string }} */ op) =>
  fetch(`${info.httpUrl}/workspaces/${info.workspaceId}/provisioning-operations/approve`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${info.adminToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ provisioningOperationId: op.id }),
  });

await init();
const client = await DeviceClient.start({
  instance: info.httpUrl,
  provisioningToken: info.provisioningToken,
  database: directory,
  deviceId,
  transport: "tcp",
  onProvisioningOperation: approve,
});
if (mode === "send") {
  const sender = client.createStreamSender();
  for (let n = 0; ; n++) {
    await sender.sendMessage(`m${n}`);
    process.stdout.write(`stored ${n}\n`);
  }
} else {
  await client.waitEnqueuedMessagesSent();
  await client.stop();
  process.stdout.write("drained\n");
}
