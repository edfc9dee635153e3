// The Node.js example (examples/node-sensor.mjs) runs as its README says, against the test
// Platform: it prints the verification code, and once the technician approves, its readings
// arrive at the Platform in order; Ctrl-C stops it cleanly.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Platform, waitFor } from "./platform.mjs";

/** @type {Platform} */
let platform;
before(async () => (platform = await Platform.start()));
after(() => platform?.stop());

test("the sensor example prints the verification code, then delivers a reading every second", async () => {
  const deviceId = `node-sensor-${process.pid}`;
  const directory = mkdtempSync(join(tmpdir(), "vdev-node-sensor-"));
  const sensor = spawn(
    process.execPath,
    ["node-sensor.mjs", "--platform", join(platform.dataDir, "platform.json"), "--device-id", deviceId, "--directory", directory],
    { cwd: process.cwd(), stdio: ["ignore", "pipe", "inherit"] },
  );
  let output = "";
  sensor.stdout.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => sensor.once("exit", resolve));

  await waitFor("the verification code", () => /verification code: \S+/.test(output));
  const [operation] = await platform.operations(deviceId);
  // The code printed is the one the technician sees in the console.
  assert.equal(operation.verificationCode, /verification code: (\S+)/.exec(output)?.[1]);
  await platform.approve(operation.provisioningOperationId);
  await waitFor("three readings at the Platform", async () => (await platform.messages(deviceId)).length >= 3);

  sensor.kill("SIGINT");
  assert.equal(await exited, 0);
  assert.match(output, /stopped; \d+ readings wait in /);
  const readings = (await platform.messages(deviceId)).map((message) => JSON.parse(message.payloadText));
  assert.ok(readings.every((reading) => typeof reading.celsius === "number"), JSON.stringify(readings));
  const sequences = (await platform.messages(deviceId)).map((message) => message.sequence.n);
  assert.deepEqual(sequences, [...sequences].sort((a, b) => a - b), "in order");
});
