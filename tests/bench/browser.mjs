// The browser figures of the benchmarks (issue 7) in Debian's Chromium, each beside its anchors
// in the same browser against a fresh vdev-platform per repetition: durable enqueue rate (vdev-web
// `sendMessage` vs MQTT.js QoS 1 `publish` vs plain IndexedDB), drain rate of a stored backlog
// (vdev-web vs MQTT.js with 100 and with 256 outstanding, vdev's own window) and memory with a
// backlog (vdev-web stored and draining vs MQTT.js holding it offline). Chromium runs on a fresh on-disk profile folder per repetition,
// so IndexedDB really writes to disk. Rates at the Platform come from its own `receivedTime` of
// the first and last stored message, as in tests/benches/figures.rs.
//
//   node tests/bench/browser.mjs [--quick] [--repetitions N] [--only KEY,...] [--out FILE.json]
//                                [--profile-drain FILE.cpuprofile]
//
// `--profile-drain` records the page's CPU profile while vdev-web drains its backlog (the last
// repetition's), for Chrome DevTools' Performance panel: where the drain's time goes.
//
// Writes {"quick", "repetitions", "figures": [{key, title, unit, better, rows: [{who, value}], note}]}
// (first row vdev, then its anchors; each value the median of the repetitions) and exits non-zero
// when a figure could not be produced. `--quick` uses tiny counts: it checks the harness only.
// Needs `npm ci` here, the packed vdev-web installed here (`npm install --no-save <tarball>`),
// tests/e2e's and demo-site's node_modules (their run.sh/build.sh) and vdev-platform (browser.sh
// builds the optimised one and names it in VDEV_PLATFORM_BIN).
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM_FLAGS, platformBinary, serveSite, startPlatform, tempDir, waitUntil } from "../e2e/lib.mjs";
import { STORE_DEADLINE_MS, median, messageAt, platformBuild, registerMqttDevice, storedRate } from "./platform.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const outIndex = args.indexOf("--out");
const out = path.resolve(outIndex >= 0 && args[outIndex + 1] ? args[outIndex + 1] : "browser-results.json");
const profileIndex = args.indexOf("--profile-drain");
const drainProfile = profileIndex >= 0 && args[profileIndex + 1] ? path.resolve(args[profileIndex + 1]) : undefined;
const onlyIndex = args.indexOf("--only");
const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? "").split(",") : undefined;
const repetitionsIndex = args.indexOf("--repetitions");
const repetitionsOverride = repetitionsIndex >= 0 ? Number(args[repetitionsIndex + 1]) : undefined;
if (repetitionsOverride !== undefined && !(Number.isInteger(repetitionsOverride) && repetitionsOverride > 0)) {
  console.error("error: --repetitions needs a positive whole number");
  process.exit(2);
}

const settings = quick
  ? { repetitions: 1, memoryRepetitions: 1, enqueueMessages: 300, drainMessages: 2_000, backlogMessages: 5_000 }
  : { repetitions: 3, memoryRepetitions: 1, enqueueMessages: 20_000, drainMessages: 100_000, backlogMessages: 1_000_000 };
if (repetitionsOverride) {
  settings.repetitions = repetitionsOverride;
  settings.memoryRepetitions = repetitionsOverride;
}
const WINDOW = 100;
// vdev-core's own window of publishes in flight (SessionConfig::max_in_flight): MQTT.js is
// measured with it too, so that its ratio is not a matter of window size.
const VDEV_WINDOW = 256;
const IDB_PER_TRANSACTION = 1_000;
// vdev-web's backlog is built in bursts of this many concurrent sends (bounded page memory).
const SEND_CHUNK = 10_000;
// Memory while draining is sampled until this many messages are delivered (steady state).
const DRAIN_SAMPLE_MESSAGES = 2_000;
const MB = 1024 * 1024;

function log(message) {
  console.error(`[bench/browser ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

function count(n) {
  return n.toLocaleString("en-US");
}

// ----- the Platform ---------------------------------------------------------------------------

/** How many messages the Platform has stored (a fresh Platform numbers them from one on). */
async function storedCount(platform) {
  const [first, last] = [await messageAt(platform, "asc"), await messageAt(platform, "desc")];
  return first && last ? last.id - first.id + 1 : 0;
}

// ----- the browser ----------------------------------------------------------------------------

/**
 * A fresh Platform, and Chromium on a fresh profile folder on disk with the bench page open;
 * `body` runs with both, and everything is torn down (and the profile deleted) afterwards.
 */
async function withSession(siteUrl, body) {
  const platform = await startPlatform();
  const profile = tempDir("vdev-bench-profile-");
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_FLAGS,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(`${siteUrl}page/index.html`);
    await page.waitForFunction(() => window.bench !== undefined, null, { timeout: 30_000 }).catch((e) => {
      throw new Error(`the bench page did not load (${pageErrors.join("; ") || e.message})`);
    });
    const cdp = await context.newCDPSession(page);
    const call = (name, arg) => page.evaluate(([n, a]) => window.bench[n](a), [name, arg]);
    return await body({ platform, page, cdp, call, pageErrors });
  } finally {
    await context?.close();
    await platform.stop();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Starts vdev-web in the page, approves its provisioning at the Platform, waits until connected. */
async function connectedVdev(platform, page, call, deviceId) {
  await call("vdevStart", { instance: platform.info.httpUrl, provisioningToken: platform.info.provisioningToken, deviceId });
  const operation = await waitUntil("vdev-web's provisioning operation at the Platform", async () =>
    (await platform.admin.get("/provisioning-operations?state=pending")).find((o) => o.requestedDeviceId === deviceId),
  );
  await platform.admin.put("/provisioning-operations/approve", { provisioningOperationId: operation.provisioningOperationId });
  await page
    .waitForFunction(() => window.bench.vdevStatus()?.connection === "connected", null, { timeout: 60_000 })
    .catch(async (e) => {
      throw new Error(`vdev-web did not connect: ${JSON.stringify(await call("vdevStatus"))} (${e.message})`);
    });
}

/** The page's JS heap after a full garbage collection, and vdev-web's wasm linear memory. */
async function memory(cdp, call) {
  await cdp.send("HeapProfiler.collectGarbage");
  const { usedSize } = await cdp.send("Runtime.getHeapUsage");
  return { heap: usedSize, wasm: await call("wasmBytes") };
}

function mb(bytes) {
  return bytes / MB;
}

// ----- figure: durable enqueue rate -----------------------------------------------------------

async function enqueueRate(siteUrl) {
  const n = settings.enqueueMessages;
  const vdev = [];
  const mqtt = [];
  const idb = [];
  for (let rep = 1; rep <= settings.repetitions; rep++) {
    log(`enqueue rate ${rep}/${settings.repetitions}: ${count(n)} messages each`);
    await withSession(siteUrl, async ({ platform, page, call }) => {
      await connectedVdev(platform, page, call, "enqueue-vdev");
      vdev.push(await call("vdevSend", { count: n }));
      await call("vdevStop");
      await call("mqttStart", await registerMqttDevice(platform, "enqueue-mqttjs"));
      mqtt.push(await call("mqttPublish", { count: n }));
      await call("mqttStop");
      idb.push(await call("indexedDbPut", { count: n, perTransaction: IDB_PER_TRANSACTION }));
    });
  }
  return {
    key: "enqueue_rate",
    title: "Durable enqueue rate in Chromium, 256 B",
    unit: "messages/s",
    better: "higher",
    rows: [
      { who: "vdev-web sendMessage resolved (stored in IndexedDB), connected", value: median(vdev) },
      { who: "MQTT.js 5.16 publish QoS 1 acknowledged, WebSocket, all outstanding", value: median(mqtt) },
      { who: `plain IndexedDB put, ${count(IDB_PER_TRANSACTION)} per transaction, strict durability`, value: median(idb) },
    ],
    note:
      `${count(n)} messages sent at once without awaiting each, ${settings.repetitions} repetition(s) on a fresh ` +
      "on-disk profile; vdev-web connected and delivering while it stores. MQTT.js keeps nothing durable: " +
      "its rate is the Platform's acknowledgements. Plain IndexedDB commits with strict durability, as vdev-web's appends do.",
  };
}

// ----- figure: drain rate ---------------------------------------------------------------------

async function drainRate(siteUrl) {
  const n = settings.drainMessages;
  const vdev = [];
  const mqtt = [];
  const mqttWide = [];
  for (let rep = 1; rep <= settings.repetitions; rep++) {
    log(`drain rate ${rep}/${settings.repetitions}: vdev-web backlog of ${count(n)}`);
    await withSession(siteUrl, async ({ platform, page, cdp, call }) => {
      await connectedVdev(platform, page, call, "drain-vdev");
      await storeOfflineBacklog(platform, page, call, n);
      if (drainProfile) {
        await cdp.send("Profiler.enable");
        await cdp.send("Profiler.start");
      }
      await call("vdevSetOffline", false);
      vdev.push(await storedRate(platform, n));
      if (drainProfile) {
        const { profile } = await cdp.send("Profiler.stop");
        writeFileSync(drainProfile, JSON.stringify(profile));
        log(`CPU profile of vdev-web's drain: ${drainProfile}`);
      }
      await call("vdevStop");
    });
    for (const [window, rates] of [[WINDOW, mqtt], [VDEV_WINDOW, mqttWide]]) {
      log(`drain rate ${rep}/${settings.repetitions}: MQTT.js, ${count(n)} messages, ${window} outstanding`);
      await withSession(siteUrl, async ({ platform, call }) => {
        await call("mqttStart", await registerMqttDevice(platform, `drain-mqttjs-${window}`));
        await call("mqttPublish", { count: n, window });
        rates.push(await storedRate(platform, n));
        await call("mqttStop");
      });
    }
  }
  return {
    key: "drain_rate",
    title: "Drain rate of a stored backlog in Chromium, QoS 1",
    unit: "messages/s",
    better: "higher",
    rows: [
      { who: "vdev-web in Chromium, IndexedDB + WebSocket", value: median(vdev) },
      { who: `MQTT.js 5.16 in Chromium, WebSocket, ${WINDOW} outstanding`, value: median(mqtt) },
      { who: `MQTT.js 5.16 in Chromium, WebSocket, ${VDEV_WINDOW} outstanding (vdev's window)`, value: median(mqttWide) },
    ],
    note:
      `${count(n)} messages, ${settings.repetitions} repetition(s); vdev-web's backlog stored while ` +
      "setOffline(true), then drained. Rates from the Platform's receivedTime of the first and last message; " +
      `the Platform is its ${platformBuild()} build. ` +
      "`--profile-drain FILE` records the page's CPU profile of vdev-web's drain.",
  };
}

// ----- figure: memory with a backlog ----------------------------------------------------------

/** Takes vdev-web offline and stores a backlog of `n` messages (in bursts, bounded memory). */
async function storeOfflineBacklog(platform, page, call, n) {
  await call("vdevSetOffline", true);
  await page.waitForFunction(() => window.bench.vdevStatus().statistics.offline, null, { timeout: 30_000 });
  const step = 100_000;
  for (let from = 0; from < n; from += step) {
    await call("vdevSend", { count: Math.min(step, n - from), first: from, chunk: SEND_CHUNK });
    if (n > step) log(`vdev-web stored ${count(Math.min(from + step, n))} of ${count(n)}`);
  }
  const pending = (await call("vdevStatus")).statistics.pendingCount;
  if (pending !== n) throw new Error(`vdev-web holds ${pending} of the ${n} messages of its backlog`);
  if ((await storedCount(platform)) !== 0) throw new Error("vdev-web delivered messages while offline");
}

/** vdev-web's memory with `n` messages stored, then its peak while it delivers the first ones. */
async function vdevBacklogMemory(siteUrl, n) {
  return withSession(siteUrl, async ({ platform, page, cdp, call }) => {
    await connectedVdev(platform, page, call, "memory-vdev");
    await storeOfflineBacklog(platform, page, call, n);
    const stored = await memory(cdp, call);
    await call("vdevSetOffline", false);
    let draining = null;
    let samples = 0;
    const enough = Math.min(DRAIN_SAMPLE_MESSAGES, n);
    await waitUntil(
      `vdev-web delivering ${enough} messages of its backlog`,
      async () => {
        const sample = await memory(cdp, call);
        samples += 1;
        if (!draining || sample.heap + sample.wasm > draining.heap + draining.wasm) draining = sample;
        const delivered = await storedCount(platform);
        return samples >= 5 && delivered >= enough;
      },
      STORE_DEADLINE_MS,
      200,
    );
    await call("vdevStop");
    return { stored, draining };
  });
}

/** MQTT.js's memory holding `n` QoS 1 messages while not connected (and the empty page's). */
async function mqttBacklogMemory(siteUrl, n) {
  return withSession(siteUrl, async ({ platform, cdp, call }) => {
    const empty = await memory(cdp, call);
    await call("mqttStart", { ...(await registerMqttDevice(platform, "memory-mqttjs")), manualConnect: true });
    await call("mqttHoldOffline", { count: n });
    const holding = await memory(cdp, call);
    await call("mqttStop");
    return { holding, empty };
  });
}

async function memoryBacklog(siteUrl) {
  const n = settings.backlogMessages;
  const runs = { stored: [], draining: [], holding: [], empty: [] };
  for (let rep = 1; rep <= settings.memoryRepetitions; rep++) {
    log(`memory ${rep}/${settings.memoryRepetitions}: vdev-web backlog of ${count(n)}`);
    const { stored, draining } = await vdevBacklogMemory(siteUrl, n);
    log(`memory ${rep}/${settings.memoryRepetitions}: MQTT.js holding ${count(n)} offline`);
    const { holding, empty } = await mqttBacklogMemory(siteUrl, n);
    runs.stored.push(stored);
    runs.draining.push(draining);
    runs.holding.push(holding);
    runs.empty.push(empty);
  }
  const total = (samples) => median(samples.map((s) => mb(s.heap + s.wasm)));
  const breakdown = (samples) =>
    `wasm ${median(samples.map((s) => mb(s.wasm))).toFixed(1)} MB + JS heap ${median(samples.map((s) => mb(s.heap))).toFixed(1)} MB`;
  return {
    key: "memory_backlog",
    title: `Memory with a ${count(n)}-message backlog in Chromium`,
    unit: "MB",
    better: "lower",
    rows: [
      { who: "vdev-web, backlog stored in IndexedDB (wasm memory + JS heap)", value: total(runs.stored) },
      { who: "vdev-web, while the backlog drains (wasm memory + JS heap, peak)", value: total(runs.draining) },
      { who: "MQTT.js 5.16 holding the backlog offline (JS heap)", value: median(runs.holding.map((s) => mb(s.heap))) },
    ],
    note:
      `${settings.memoryRepetitions} repetition(s). vdev-web stored: ${breakdown(runs.stored)}; ` +
      `draining: ${breakdown(runs.draining)} (largest of samples until ${count(Math.min(DRAIN_SAMPLE_MESSAGES, n))} are delivered); ` +
      "MQTT.js: JS heap (its outgoing store and, past 65,535 message ids, its queue). " +
      "JS heap after a full GC (CDP HeapProfiler.collectGarbage, Runtime.getHeapUsage); " +
      `the empty page's heap is ${median(runs.empty.map((s) => mb(s.heap))).toFixed(1)} MB. Payloads are 256-character strings.`,
  };
}

// ----- main -----------------------------------------------------------------------------------

function checkSetUp() {
  const missing = [
    [platformBinary, "cargo build --release -p vdev-platform (tests/bench/browser.sh does)"],
    [path.join(here, "node_modules", "vdev-web", "vdev_web.js"), "npm install --no-save wasm-web/pkg/vdev-web-*.tgz in tests/bench"],
    [path.join(here, "node_modules", "mqtt", "dist", "mqtt.esm.js"), "npm ci in tests/bench"],
  ].filter(([file]) => !existsSync(file));
  if (missing.length) {
    throw new Error(`set-up incomplete:\n${missing.map(([file, fix]) => `  ${file} is missing (${fix})`).join("\n")}`);
  }
}

async function main() {
  const started = Date.now();
  checkSetUp();
  const site = await serveSite(here);
  const figures = [];
  const failures = [];
  try {
    const all = { enqueue_rate: enqueueRate, drain_rate: drainRate, memory_backlog: memoryBacklog };
    const unknown = (only ?? []).filter((key) => !(key in all));
    if (unknown.length) throw new Error(`--only: unknown figure ${unknown.join(", ")} (known: ${Object.keys(all).join(", ")})`);
    for (const [key, figure] of Object.entries(all)) {
      if (only && !only.includes(key)) continue;
      try {
        figures.push(await figure(site.url));
      } catch (e) {
        failures.push(`${figure.name}: ${e.stack ?? e}`);
        log(`${figure.name} failed: ${e.message ?? e}`);
      }
    }
  } finally {
    await site.stop();
  }
  const invalid = figures.filter((f) => f.rows.some((r) => !Number.isFinite(r.value))).map((f) => f.key);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ quick, repetitions: settings.repetitions, figures }, null, 2)}\n`);
  for (const f of figures) {
    console.log(`${f.title} (${f.unit}, ${f.better} is better)`);
    for (const r of f.rows) console.log(`  ${r.value.toFixed(1).padStart(12)}  ${r.who}`);
  }
  console.log(`browser figures: ${out} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (failures.length || invalid.length) {
    for (const failure of failures) console.error(`error: ${failure}`);
    if (invalid.length) console.error(`error: figures without a value: ${invalid.join(", ")}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(`error: ${e.stack ?? e}`);
  process.exit(1);
});
