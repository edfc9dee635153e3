// Shared pieces of the end-to-end tests: Debian's Chromium through playwright-core, a real
// vdev-platform on ephemeral loopback ports, static sites served with Vite's preview server (and
// an app by Vite's dev server), the Platform's admin API, and polling for a condition with a
// deadline (never sleeping to sync).
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { launchWebDriverBrowser } from "./webdriver.mjs";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
/** The vdev-platform binary: the debug build, or VDEV_PLATFORM_BIN (the benchmarks' optimised one). */
export const platformBinary = process.env.VDEV_PLATFORM_BIN ?? path.join(targetDir, "debug", "vdev-platform");

export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The engine the tests run in (VDEV_E2E_ENGINE: chromium, the default, firefox or webkit). */
export const engine = process.env.VDEV_E2E_ENGINE ?? "chromium";

/**
 * The browser: Debian's Chromium through Playwright, or Firefox ESR and WebKitGTK through their
 * WebDriver servers with the same page API (webdriver.mjs).
 */
export function launchBrowser({ tls } = {}) {
  if (engine !== "chromium") return launchWebDriverBrowser(engine, { tls });
  const args = [...CHROMIUM_FLAGS];
  if (tls) {
    // Chromium has no flag for a CA of its own: it trusts the server's key by its hash.
    const key = new X509Certificate(readFileSync(tls.certificate)).publicKey.export({ type: "spki", format: "der" });
    args.push(
      `--host-resolver-rules=${tls.names.map((name) => `MAP ${name} ${tls.ip}`).join(",")}`,
      `--ignore-certificate-errors-spki-list=${createHash("sha256").update(key).digest("base64")}`,
    );
  }
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args,
  });
}

/**
 * What a browser needs to reach a Platform at host names over TLS (`launchBrowser({ tls })`):
 * the names, the loopback address they stand for, the server certificate and the test CA.
 */
export function tlsOf(info, ip) {
  return {
    names: [info.hostName, `blob.${info.hostName}`],
    ip,
    certificate: path.join(path.dirname(info.caCertificatePath), "server.pem"),
    ca: info.caCertificatePath,
  };
}

export function tempDir(prefix) {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/**
 * Where a test saves its screenshots: `<engine>/<name>` under VDEV_E2E_SCREENSHOTS, else under a
 * new temporary folder.
 */
export function screenshotDir(name) {
  const base = process.env.VDEV_E2E_SCREENSHOTS ?? tempDir("vdev-e2e-screenshots-");
  const dir = path.join(base, engine, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Resolves with the first stdout line matching `pattern`; rejects if the process exits first. */
function waitForOutput(child, pattern, what, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => fail(new Error(`${what}: no "${pattern}" within ${timeoutMs} ms:\n${output}`)), timeoutMs);
    const onData = (chunk) => {
      output += chunk;
      const line = output.split("\n").find((l) => pattern.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        child.stdout.off("data", onData);
        resolve({ line, output });
      }
    };
    const onExit = (code) => fail(new Error(`${what} exited (${code}) before it was ready:\n${output}`));
    const fail = (error) => {
      clearTimeout(timer);
      child.stdout.off("data", onData);
      reject(error);
    };
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", onData);
    child.stderr.on("data", (chunk) => (output += chunk));
    child.once("exit", onExit);
    child.stdout.once("end", () => child.off("exit", onExit));
  });
}

/** Stops a process group started with `detached: true`, and waits for it. */
export async function stopProcess(child, signal = "SIGINT") {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(-child.pid, signal);
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }, 10_000);
  await exited;
  clearTimeout(timer);
}

/**
 * A real vdev-platform on ephemeral loopback ports; resolves with its platform.json. `extraArgs`
 * (flag, value pairs) replace the defaults or add flags (e.g. `["--mqtt-tcp", "127.0.0.1:0"]`).
 */
export async function startPlatform(dataDir = tempDir("vdev-e2e-platform-"), extraArgs = []) {
  const flags = { "--data-dir": dataDir, "--http": "127.0.0.1:0", "--mqtt-tcp": "off", "--mqtt-tls": "off", "--https": "off" };
  for (let i = 0; i + 1 < extraArgs.length; i += 2) flags[extraArgs[i]] = extraArgs[i + 1];
  const child = spawn(
    platformBinary,
    Object.entries(flags).flat(),
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  await waitForOutput(child, /vdev-platform is running/, "vdev-platform");
  const info = JSON.parse(readFileSync(path.join(dataDir, "platform.json"), "utf8"));
  return { child, info, admin: adminApi(info), stop: () => stopProcess(child).then(() => rmSync(dataDir, { recursive: true, force: true })) };
}

/** Serves a built site on an ephemeral loopback port (demo-site/serve.mjs, Vite's preview server). */
export async function serveSite(dist) {
  const child = spawn(process.execPath, [path.join(root, "demo-site", "serve.mjs"), dist, "0"], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const { line } = await waitForOutput(child, /"url"/, "serve.mjs");
  return { child, url: JSON.parse(line).url, stop: () => stopProcess(child, "SIGTERM") };
}

/** A loopback port free now, for a server that cannot listen on port 0 and say which it got. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Vite's dev server (`vite`, the app's own CLI and vite.config.js) for the app in `appDir`, on a
 * free loopback port; resolves once it answers. `--strictPort` makes a port taken meanwhile a
 * failure, not a server elsewhere. The URL names localhost for the reason serve.mjs gives.
 */
export async function serveViteDev(appDir) {
  const port = await freePort();
  const child = spawn(
    path.join(appDir, "node_modules", ".bin", "vite"),
    ["--host", "127.0.0.1", "--port", String(port), "--strictPort", "--clearScreen", "false"],
    { cwd: appDir, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk) => (output += chunk));
  const stop = () => stopProcess(child, "SIGTERM");
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  try {
    // Polled at 127.0.0.1, where it listens: Node may try localhost's ::1 alone. A vite that
    // exited ends the wait at once.
    await waitUntil(
      "Vite's dev server to answer",
      // Each try bounded: a server that accepts and never answers must not outlast the deadline.
      async () => exited() || (await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) })).ok,
    );
    if (exited()) throw new Error(`vite exited (${child.exitCode ?? child.signalCode}) before it answered`);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}:\n${output}`);
  }
  return { child, url: `http://localhost:${port}/`, output: () => output, stop };
}

/**
 * The demo command itself (demo-site/run.sh) on ephemeral ports; resolves with its two URLs.
 * With `tlsIp`, its Platform behaves as a real instance does (devices over https:// and wss://
 * on port 443 of that address, at a host name; needs root).
 */
export async function startDemo({ dataDir = tempDir("vdev-e2e-demo-"), tlsIp } = {}) {
  const child = spawn("bash", [path.join(root, "demo-site", "run.sh"), "--skip-setup", "--skip-build"], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      VDEV_DEMO_HTTP: "127.0.0.1:0",
      VDEV_DEMO_PORT: "0",
      VDEV_DEMO_DATA_DIR: dataDir,
      ...(tlsIp ? { VDEV_DEMO_TLS_IP: tlsIp } : {}),
    },
  });
  const { output } = await waitForOutput(child, /^\s+logs:/, "demo-site/run.sh");
  const url = (label) => output.match(new RegExp(`${label}:\\s+(\\S+)`))?.[1];
  const demoUrl = url("demo page");
  const consoleUrl = url("technician console");
  if (!demoUrl || !consoleUrl) throw new Error(`run.sh printed no URLs:\n${output}`);
  const info = JSON.parse(readFileSync(path.join(dataDir, "platform.json"), "utf8"));
  const stop = () => stopProcess(child).then(() => rmSync(dataDir, { recursive: true, force: true }));
  return { child, demoUrl, consoleUrl, info, admin: adminApi(info), stop };
}

/** The Platform's admin API for the default workspace. */
export function adminApi(info) {
  const call = async (method, route, body) => {
    const response = await fetch(`${info.httpUrl}/workspaces/${info.workspaceId}${route}`, {
      method,
      headers: { Authorization: `Bearer ${info.adminToken}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    get: (route) => call("GET", route),
    put: (route, body) => call("PUT", route, body),
    /** Messages of a device, oldest first. */
    messages: (deviceId, stream) =>
      call("GET", `/messages?${new URLSearchParams({ deviceId, ...(stream ? { stream } : {}), order: "asc", limit: "10000" })}`),
  };
}

/** Polls `check` (which returns a truthy value when done) until it does or the deadline passes. */
export async function waitUntil(what, check, timeoutMs = 30_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** The messages' payload counters `n`, for order and completeness checks. */
export function payloadCounters(messages) {
  return messages.map((m) => JSON.parse(m.payloadText).n);
}
