// Issue 4: a tiny Vite app that installed the packed vdev-web tarball (tests/web-app, built by
// its build.sh) runs in Chromium against a real Platform and sends a message end to end.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser, root, serveSite, startPlatform, waitUntil } from "./lib.mjs";

let platform;
let site;
let browser;

before(async () => {
  platform = await startPlatform();
  site = await serveSite(path.join(root, "tests", "web-app", "dist"));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await site?.stop();
  await platform?.stop();
});

test("the built Vite app provisions and its message reaches the Platform", async () => {
  const deviceId = `web-app-${process.pid}`;
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  const fragment = new URLSearchParams({ instance: platform.info.httpUrl, token: platform.info.provisioningToken, deviceId });
  await page.goto(`${site.url}#${fragment}`);

  // The page shows the code; the technician's approval goes through the admin API.
  await page.waitForFunction(() => document.getElementById("code").textContent !== "—", null, { timeout: 30_000 });
  const code = await page.textContent("#code");
  const operation = await waitUntil("the pending operation at the Platform", async () =>
    (await platform.admin.get("/provisioning-operations?state=pending")).find((o) => o.verificationCode === code),
  );
  assert.equal(operation.requestedDeviceId, deviceId);
  await platform.admin.put("/provisioning-operations/approve", { provisioningOperationId: operation.provisioningOperationId });

  await page.waitForFunction(() => document.getElementById("outcome").textContent.endsWith(" delivered"), null, { timeout: 30_000 });
  assert.equal(await page.textContent("#error"), "");
  const sequence = await page.textContent("#sequence");
  assert.equal(await page.textContent("#outcome"), `${sequence} delivered`);

  const messages = await platform.admin.messages(deviceId, "hello");
  assert.equal(messages.length, 1);
  assert.equal(messages[0].streamGroup, "web-app");
  assert.deepEqual(JSON.parse(messages[0].payloadText), { hello: "from a Vite app" });
  assert.deepEqual(pageErrors, []);
});
