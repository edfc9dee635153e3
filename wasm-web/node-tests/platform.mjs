// The stand-in Platform for the Node.js tests: vdev-platform (VDEV_PLATFORM_BIN) on ephemeral
// loopback ports with its own data directory, with MQTT over plain TCP and over TLS (its test
// CA in `info.caCertificatePath`), its admin API, and a restart on the same ports and data.

import { spawn } from "node:child_process";
import dns from "node:dns";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { request } from "node:https";
import { connect } from "node:net";
import { rootCertificates } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Polls `condition` every 20 ms until it holds; fails after `seconds`.
 * @param {string} what
 * @param {() => boolean | Promise<boolean>} condition
 */
export async function waitFor(what, condition, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await sleep(20);
  }
}

const listening = (/** @type {string} */ address) =>
  new Promise((resolve) => {
    const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
    const socket = connect({ host, port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });

/** Host names this process resolves itself (the strict Platform's), name -> loopback address. */
const resolved = new Map();
const systemLookup = dns.lookup;
/**
 * Makes `name` resolve to `address` in this process (for `node:net`, `node:tls` and
 * `node:http(s)`, which look names up through `dns.lookup`): no hosts file needed.
 * @param {string} name
 * @param {string} address
 */
export function resolveTo(name, address) {
  resolved.set(name, address);
  // @ts-ignore: the same function with every overload of the original
  dns.lookup = (hostname, options, callback) => {
    const done = typeof options === "function" ? options : callback;
    const all = typeof options === "object" && options?.all;
    const address = resolved.get(hostname);
    if (address === undefined) return systemLookup(hostname, options, callback);
    process.nextTick(() => (all ? done(null, [{ address, family: 4 }]) : done(null, address, 4)));
  };
}

/**
 * A request over HTTPS trusting `ca` (this process's own requests to a strict Platform).
 * @param {string} url
 * @param {{ method: string, headers: Record<string, string>, body?: string, ca: Buffer }} options
 * @returns {Promise<{ status: number, bytes: Buffer }>}
 */
function httpsCall(url, { method, headers, body, ca }) {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method, headers, ca: [...rootCertificates, ca.toString()] }, (response) => {
      /** @type {Buffer[]} */
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, bytes: Buffer.concat(chunks) }));
    });
    outgoing.on("error", reject);
    outgoing.end(body);
  });
}

export class Platform {
  static async start() {
    const platform = new Platform(mkdtempSync(join(tmpdir(), "vdev-node-platform-")));
    await platform.launch(["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"]);
    return platform;
  }

  /**
   * The stand-in in its strict mode (`--contract iothub`): what a real instance offers, on 443
   * and 8883 of its own loopback address under the host name `hub`, blob storage under
   * `blob.<hub>`, both resolved to that address in this process only.
   * @param {string} hub
   */
  static async startStrict(hub) {
    const address = `127.0.0.${2 + Math.floor(Math.random() * 250)}`;
    resolveTo(hub, address);
    resolveTo(`blob.${hub}`, address);
    const platform = new Platform(mkdtempSync(join(tmpdir(), "vdev-node-strict-platform-")), ["--contract", "iothub", "--host-name", hub]);
    await platform.launch(["off", "off", `${address}:8883`, `${address}:443`]);
    return platform;
  }

  /**
   * @param {string} dataDir
   * @param {string[]} [flags] more flags of vdev-platform
   */
  constructor(dataDir, flags = []) {
    this.dataDir = dataDir;
    this.flags = flags;
    /** @type {any} */
    this.info = undefined;
    /** @type {import("node:child_process").ChildProcess | undefined} */
    this.process = undefined;
  }

  /** @param {string[]} addresses http, mqtt tcp, mqtt tls, https ("off": none) */
  async launch([http, tcp, tls, https = "off"]) {
    const infoPath = join(this.dataDir, "platform.json");
    const bin = process.env.VDEV_PLATFORM_BIN;
    if (!bin) throw new Error("VDEV_PLATFORM_BIN names the vdev-platform binary");
    this.addresses = [http, tcp, tls, https];
    const args = ["--data-dir", this.dataDir, "--http", http, "--https", https, "--mqtt-tcp", tcp, "--mqtt-tls", tls, ...this.flags];
    this.process = spawn(bin, args, { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
    if (!this.info) {
      await waitFor("platform.json", () => existsSync(infoPath) && JSON.parse(readFileSync(infoPath, "utf8")).adminToken != null);
      this.info = JSON.parse(readFileSync(infoPath, "utf8"));
    }
    await waitFor("the platform to listen", () => listening(https !== "off" ? https : this.info.httpUrl.split("://")[1]));
  }

  /** The instance URL devices are given. */
  get instance() {
    return this.info.httpUrl ?? this.info.httpsUrl;
  }

  /** Stops it (SIGTERM) and starts it again on the same ports and data directory. */
  async restart() {
    await this.stop();
    if (!this.info.httpUrl) return this.launch(/** @type {string[]} */ (this.addresses));
    const endpoints = this.info.gatewayEndpoints;
    const tlsPort = endpoints.mqttTls.slice(endpoints.mqttTls.lastIndexOf(":") + 1);
    await this.launch([this.info.httpUrl.split("://")[1], endpoints.mqttTcp, `127.0.0.1:${tlsPort}`]);
  }

  async stop() {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }

  /** The test CA, for the `ca` option. */
  ca() {
    return readFileSync(this.info.caCertificatePath);
  }

  /**
   * Calls the admin API; the status and the JSON answer.
   * @param {string} method
   * @param {string} path under /workspaces/<workspace>
   * @param {unknown} [body]
   */
  async admin(method, path, body) {
    const { status, bytes } = await this.adminBytes(method, path, body);
    const text = bytes.toString("utf8");
    return { status, body: text ? JSON.parse(text) : null };
  }

  /**
   * Calls the admin API for raw bytes (a blob's content).
   * @param {string} method
   * @param {string} path under /workspaces/<workspace>
   * @param {unknown} [body]
   */
  async adminBytes(method, path, body) {
    return this.adminAt(`${this.instance}/workspaces/${this.info.workspaceId}${path}`, method, body);
  }

  /**
   * Arms a fault of the stand-in (`POST /faults`), e.g. `{ pathPrefix, status }`.
   * @param {unknown} fault
   */
  async armFault(fault) {
    const { status, bytes } = await this.adminAt(`${this.instance}/faults`, "POST", fault);
    if (status >= 300) throw new Error(`arming the fault answered ${status}: ${bytes}`);
  }

  /**
   * @param {string} url
   * @param {string} method
   * @param {unknown} [body]
   */
  async adminAt(url, method, body) {
    const headers = { Authorization: `Bearer ${this.info.adminToken}`, "Content-Type": "application/json" };
    const json = body === undefined ? undefined : JSON.stringify(body);
    if (url.startsWith("https:")) {
      return httpsCall(url, { method, headers, body: json, ca: this.ca() });
    }
    const response = await fetch(url, { method, headers, body: json });
    return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()) };
  }

  /** Approves a provisioning operation as a technician would. @param {string} id */
  async approve(id) {
    const { status, body } = await this.admin("PUT", "/provisioning-operations/approve", { provisioningOperationId: id });
    if (status >= 300) throw new Error(`approve answered ${status}: ${JSON.stringify(body)}`);
  }

  /** The messages stored for `deviceId`, oldest first. @param {string} deviceId */
  async messages(deviceId) {
    const { status, body } = await this.admin("GET", `/devices/${deviceId}/messages?limit=100000`);
    if (status !== 200) throw new Error(`messages answered ${status}`);
    return /** @type {any[]} */ (body);
  }

  /**
   * The stand-in's facts of the device's latest MQTT session: `keepAliveSeconds` (its CONNECT's)
   * and `peakInFlight` (the most telemetry publishes unacknowledged at once).
   * @param {string} deviceId
   */
  async session(deviceId) {
    const { status, body } = await this.admin("GET", `/devices/${deviceId}/session`);
    if (status !== 200) throw new Error(`session answered ${status}: ${JSON.stringify(body)}`);
    return /** @type {{ connected: boolean, keepAliveSeconds: number, peakInFlight: number }} */ (body);
  }

  /** The provisioning operations that asked for `deviceId`. @param {string} deviceId */
  async operations(deviceId) {
    const { body } = await this.admin("GET", "/provisioning-operations");
    return /** @type {any[]} */ (body).filter((op) => op.deviceId === deviceId || op.requestedDeviceId === deviceId);
  }
}
