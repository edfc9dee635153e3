// What the benchmark harnesses (browser.mjs, node.mjs) share about the stand-in Platform: the
// device API for a plain MQTT client (MQTT.js) and the rates read from the Platform's own
// `receivedTime`, the median of repetitions, and which build of the Platform ran.
import path from "node:path";
import { platformBinary, waitUntil } from "../e2e/lib.mjs";

/** Which build of vdev-platform the figures ran against (VDEV_PLATFORM_BIN), for the notes. */
export function platformBuild() {
  return path.basename(path.dirname(platformBinary)) === "release" ? "optimised (release)" : "debug";
}

/** How long a figure may wait for its messages to be stored. */
export const STORE_DEADLINE_MS = 20 * 60_000;

/** The median of `values` (NaN when there are none). */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/** The device API (`DeviceToken` auth) of a running Platform. */
async function deviceCall(platform, method, route, token, body) {
  const response = await fetch(`${platform.info.httpUrl}${route}`, {
    method,
    headers: { Authorization: `DeviceToken ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/**
 * Provisions and registers `deviceId` over the device API (as tests/tests/mosquitto.rs does) and
 * returns what a plain MQTT client needs: `url` (MQTT over WebSocket), `tcpUrl` (plain TCP, when
 * the Platform has it), `clientId`, `username`, `password`, `topic`.
 */
export async function registerMqttDevice(platform, deviceId) {
  const { info, admin } = platform;
  const operation = await deviceCall(platform, "POST", "/provisioning-operations/init", info.provisioningToken, { deviceId });
  await admin.put("/provisioning-operations/approve", { provisioningOperationId: operation.provisioningOperationId });
  const completed = await deviceCall(platform, "PUT", "/provisioning-operations/complete", info.provisioningToken, {
    provisioningOperationId: operation.provisioningOperationId,
  });
  const registration = await deviceCall(platform, "PUT", "/devices/register", completed.registrationToken, {
    connectionStringType: "SharedAccessSignature",
  });
  const password = registration.connectionString
    .split(";")
    .find((part) => part.startsWith("SharedAccessSignature="))
    ?.slice("SharedAccessSignature=".length);
  if (!password) throw new Error(`register gave no SharedAccessSignature: ${registration.connectionString}`);
  const clientId = `${info.workspaceId}:${deviceId}`;
  return {
    url: `${info.httpUrl.replace(/^http:/, "ws:")}/$iothub/websocket`,
    tcpUrl: info.gatewayEndpoints.mqttTcp ? `mqtt://${info.gatewayEndpoints.mqttTcp}` : undefined,
    clientId,
    username: `${info.hostName}/${clientId}/?api-version=2018-06-30`,
    password,
    topic: `devices/${clientId}/messages/events/`,
  };
}

/** The first or last stored message: `{ id, receivedAt }` (ms), or null when none is stored. */
export async function messageAt(platform, order) {
  const [row] = await platform.admin.get(`/messages?order=${order}&limit=1`);
  return row ? { id: row.id, receivedAt: Date.parse(row.receivedTime) } : null;
}

/** Waits until `count` messages are stored; the Platform's rate between its first and last. */
export function storedRate(platform, count) {
  return waitUntil(
    `${count} messages stored at the Platform`,
    async () => {
      const first = await messageAt(platform, "asc");
      const last = await messageAt(platform, "desc");
      if (!first || !last || last.id - first.id + 1 < count) return null;
      return Math.max(count - 1, 1) / (Math.max(last.receivedAt - first.receivedAt, 1) / 1000);
    },
    STORE_DEADLINE_MS,
    50,
  );
}
