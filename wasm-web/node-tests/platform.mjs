// The stand-in Platform for the Node.js tests: vdev-platform (VDEV_PLATFORM_BIN) on ephemeral
// loopback ports with its own data directory, with MQTT over plain TCP and over TLS (its test
// CA in `info.caCertificatePath`), its admin API, and a restart on the same ports and data.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { connect } from "node:net";
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

export class Platform {
  static async start() {
    const platform = new Platform(mkdtempSync(join(tmpdir(), "vdev-node-platform-")));
    await platform.launch(["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"]);
    return platform;
  }

  /** @param {string} dataDir */
  constructor(dataDir) {
    this.dataDir = dataDir;
    /** @type {any} */
    this.info = undefined;
    /** @type {import("node:child_process").ChildProcess | undefined} */
    this.process = undefined;
  }

  /** @param {string[]} addresses http, mqtt tcp, mqtt tls */
  async launch([http, tcp, tls]) {
    const infoPath = join(this.dataDir, "platform.json");
    const bin = process.env.VDEV_PLATFORM_BIN;
    if (!bin) throw new Error("VDEV_PLATFORM_BIN names the vdev-platform binary");
    this.process = spawn(bin, ["--data-dir", this.dataDir, "--http", http, "--https", "off", "--mqtt-tcp", tcp, "--mqtt-tls", tls], {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, RUST_LOG: "warn" },
    });
    if (http.endsWith(":0")) {
      await waitFor("platform.json", () => existsSync(infoPath) && JSON.parse(readFileSync(infoPath, "utf8")).httpUrl != null);
      this.info = JSON.parse(readFileSync(infoPath, "utf8"));
    }
    await waitFor("the platform to listen", () => listening(this.info.httpUrl.split("://")[1]));
  }

  /** Stops it (SIGTERM) and starts it again on the same ports and data directory. */
  async restart() {
    await this.stop();
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
    const response = await fetch(`${this.info.httpUrl}/workspaces/${this.info.workspaceId}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.info.adminToken}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
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

  /** The provisioning operations that asked for `deviceId`. @param {string} deviceId */
  async operations(deviceId) {
    const { body } = await this.admin("GET", "/provisioning-operations");
    return /** @type {any[]} */ (body).filter((op) => op.deviceId === deviceId || op.requestedDeviceId === deviceId);
  }
}
