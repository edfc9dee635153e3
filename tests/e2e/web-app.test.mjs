// Issue 4 and issue 20 (point 9): a tiny app that installed the packed vdev-web tarball
// (tests/web-app, built by its build.sh) and is bundled four ways — `vite build`, Vite's dev
// server, webpack 5 and esbuild — runs in the current engine against a real Platform and sends a
// message end to end, each recipe in its own test.
import assert from "node:assert/strict";
import { brotliDecompressSync } from "node:zlib";
import path from "node:path";
import { after, before, test } from "node:test";
import { launchBrowser, root, serveSite, serveViteDev, startPlatform, waitUntil } from "./lib.mjs";

const app = path.join(root, "tests", "web-app");
const dist = (bundler) => path.join(app, "dist", bundler);

// What serves each recipe's page: the static bundles as the demo's are (Vite's preview server,
// which only serves files), the dev server as a developer runs it.
const RECIPES = [
  { bundler: "vite-build", serve: () => serveSite(dist("vite")) },
  { bundler: "vite-dev", serve: () => serveViteDev(app) },
  { bundler: "webpack", serve: () => serveSite(dist("webpack")) },
  { bundler: "esbuild", serve: () => serveSite(dist("esbuild")) },
];

let platform;
let browser;

before(async () => {
  platform = await startPlatform();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await platform?.stop();
});

for (const { bundler, serve } of RECIPES) {
  test(`the app bundled by ${bundler} provisions and its message reaches the Platform`, async (t) => {
    const site = await serve();
    t.after(() => site.stop());
    const deviceId = `web-app-${bundler}-${process.pid}`;
    const page = await browser.newPage();
    t.after(() => page.close());
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    const fragment = new URLSearchParams({ instance: platform.info.httpUrl, token: platform.info.provisioningToken, deviceId });
    await page.goto(`${site.url}#${fragment}`);

    // The page shows the code (or why it has none); the technician's approval goes through the
    // admin API.
    await page.waitForFunction(
      () => document.getElementById("code").textContent !== "—" || document.getElementById("error").textContent !== "",
      null,
      { timeout: 30_000 },
    );
    assert.equal(await page.textContent("#error"), "");
    assert.equal(await page.textContent("#bundler"), bundler);
    const code = await page.textContent("#code");
    const operation = await waitUntil("the pending operation at the Platform", async () =>
      (await platform.admin.get("/provisioning-operations?state=pending")).find((o) => o.verificationCode === code),
    );
    assert.equal(operation.requestedDeviceId, deviceId);
    await platform.admin.put("/provisioning-operations/approve", { provisioningOperationId: operation.provisioningOperationId });

    await page.waitForFunction(
      () => document.getElementById("outcome").textContent.split(", ").length === 2 || document.getElementById("error").textContent !== "",
      null,
      { timeout: 30_000 },
    );
    assert.equal(await page.textContent("#error"), "");
    const sequence = await page.textContent("#sequence");
    // The message, then the compressed one.
    assert.equal(await page.textContent("#outcome"), `${sequence} delivered, ${Number(sequence) + 1} delivered`);

    const messages = await platform.admin.messages(deviceId, "hello");
    assert.equal(messages.length, 1);
    assert.equal(messages[0].streamGroup, "web-app");
    assert.deepEqual(JSON.parse(messages[0].payloadText), { hello: "from a bundled app", bundler });
    // The compressed stream's message, encoded by vdev-web/brotli's wasm module.
    const [zipped, ...more] = await waitUntil("the compressed message at the Platform", async () => {
      const stored = await platform.admin.messages(deviceId, "zipped");
      return stored.length ? stored : undefined;
    });
    assert.deepEqual(more, []);
    assert.equal(zipped.contentEncoding, "br");
    const decoded = brotliDecompressSync(Buffer.from(zipped.payloadBase64, "base64")).toString();
    assert.deepEqual(JSON.parse(decoded), { bundler, readings: Array(100).fill("temperature=21.5") });
    assert.deepEqual(pageErrors, []);
  });
}
