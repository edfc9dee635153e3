// The public API: `DeviceClient` and `StreamSender` (camelCase, Promises; types in
// vdev_web.d.ts). Options are checked here and a wrong one is named in a clear error; calls go
// to the client's coordinator (tabs.js), which runs them on the device or forwards them to the
// tab that drives it.

import { stoppedError } from "./device.js";
import { urlProblem } from "./io.js";
import { Coordinator } from "./tabs.js";

let makeCore;

/** Hands the host the wasm `Core` maker (`options => new Core(options)`); the package entry does. */
export function provideCore(make) {
  makeCore = make;
}

const CALLBACKS = [
  "onProvisioningOperation",
  "onProvisioningFailed",
  "onDesiredPropertiesChanged",
  "onConnectionStateChanged",
  "onMessageOutcome",
  "onCloudToDeviceMessage",
  "onOfflineChanged",
  "onEvent",
];

const COMPRESSION = { none: 0, fastest: 1, smallestSize: 2 };

const invalid = (name, problem) => new Error(`option ${name}: ${problem}`);

/** `object[name]`, undefined when absent (undefined or null) or when it is not of `type`. */
function option(object, name, type = "string") {
  const value = object?.[name];
  if (value == null) return undefined;
  if (typeof value !== type) throw invalid(name, `must be a ${type}`);
  return value;
}

function required(object, name) {
  const value = option(object, name);
  if (value === undefined) throw invalid(name, "is required");
  return value;
}

/** The Core's options from `start`'s: the instance URL, token, Device ID and parameters. */
function coreConfig(options) {
  let instance = required(options, "instance");
  // `scheme://...` or a bare host name (https:// is implied).
  if (!/^[^:]*:\/\//.test(instance)) instance = `https://${instance}`;
  const problem = urlProblem(instance);
  if (problem) throw invalid("instance", problem);
  const config = {
    instance: instance.replace(/\/+$/, ""),
    provisioningToken: required(options, "provisioningToken"),
    database: required(options, "database"),
    deviceId: option(options, "deviceId"),
  };
  const parameters = options.provisioningParameters;
  if (parameters != null) {
    if (typeof parameters !== "object" || Object.values(parameters).some((value) => typeof value !== "string")) {
      throw invalid("provisioningParameters", "must be an object of strings");
    }
    config.provisioningParameters = JSON.stringify(parameters);
  }
  return config;
}

/** A device: provisions itself, keeps a durable queue in IndexedDB and forwards it in order. */
export class DeviceClient {
  /**
   * Opens the database, resumes what it holds (identity, tokens, queue, twin) and starts the
   * device. Resolves as soon as it runs; provisioning and connecting go on after that.
   */
  static async start(options) {
    if (!makeCore) throw new Error("the wasm module is not initialised: call init() first");
    const config = coreConfig(options);
    // The Device ID and parameters are the core's to check, also in a tab that only follows.
    makeCore({ ...config, random: new Uint8Array(32) }).free();
    const callbacks = {};
    for (const name of CALLBACKS) callbacks[name] = option(options, name, "function");
    const coordinator = new Coordinator(config, config.database, callbacks, makeCore);
    await coordinator.start();
    const client = new DeviceClient();
    client.coordinator = coordinator;
    return client;
  }

  /** A sender for one stream (the workspace's defaults when the names are absent). */
  createStreamSender(options) {
    const name = option(options, "compression") ?? "none";
    const compression = COMPRESSION[name];
    if (compression === undefined) {
      throw invalid("compression", `must be "none", "fastest" or "smallestSize", not "${name}"`);
    }
    const stream = {
      streamGroup: option(options, "streamGroup"),
      stream: option(options, "stream"),
      siteId: option(options, "siteId"),
      compression,
    };
    return new StreamSender(this.coordinator, stream);
  }

  /** Messages stored and not yet delivered or rejected. */
  pendingMessagesCount() {
    return this.coordinator.snapshot().pendingCount;
  }

  /** Resolves once no message is pending (delivered or rejected, every one). */
  waitEnqueuedMessagesSent() {
    return this.coordinator.waitSent();
  }

  /** The desired properties (the saved copy until the first fetch) and their version. */
  desiredProperties() {
    const { desired, desiredVersion } = this.coordinator.snapshot();
    return { properties: JSON.parse(desired), version: desiredVersion };
  }

  /**
   * Merges `patch` into the reported properties (JSON merge patch: `null` deletes). Resolves once
   * the change is saved; it reaches the Platform when connected, across restarts.
   */
  updateReportedProperties(patch) {
    let text;
    try {
      text = JSON.stringify(patch);
    } catch {}
    if (typeof text !== "string") return Promise.reject(invalid("patch", "must be a JSON-serialisable object"));
    return this.coordinator.call({ kind: "reported", patch: text }).then(() => {});
  }

  /** The workspace id, once registered. */
  get workspaceId() {
    return this.coordinator.snapshot().workspaceId ?? undefined;
  }

  /** The Device ID, once registered. */
  get deviceId() {
    return this.coordinator.snapshot().deviceId ?? undefined;
  }

  /** Queue and connection figures. */
  statistics() {
    const { pendingCount, pendingBytes, oldestEnqueuedAt, windowRecords, connectionState, offline } =
      this.coordinator.snapshot();
    const role = this.coordinator.driver ? "owner" : "follower";
    return { pendingCount, pendingBytes, oldestEnqueuedAt, windowRecords, connectionState, offline, role };
  }

  /**
   * Takes the device offline (`true`) or lets it go online again (`false`). The device is
   * offline while the app says so or the browser does: the connection is closed, nothing is sent
   * or fetched, and sends are stored to go out, in order, later.
   */
  setOffline(offline) {
    this.coordinator.call({ kind: "offline", value: !!offline }).catch(() => {});
  }

  /** Whether the device is offline (the browser's `offline` event or `setOffline(true)`). */
  get offline() {
    return this.coordinator.snapshot().offline;
  }

  /**
   * Disconnects, finishes pending storage work and closes the database. Queued messages stay
   * stored for the next start.
   */
  stop() {
    return this.coordinator.stop();
  }
}

/** Sends messages to one stream. */
export class StreamSender {
  constructor(coordinator, stream) {
    this.coordinator = coordinator;
    this.stream = stream;
  }

  /**
   * Queues a message. Resolves to its sequence number once it is durably stored (never waits for
   * the network); rejects when it cannot be stored.
   */
  sendMessage(payload, options) {
    try {
      // A copy: the app may reuse its array before the message is handed over.
      payload =
        typeof payload === "string"
          ? new TextEncoder().encode(payload)
          : payload instanceof Uint8Array
            ? payload.slice()
            : undefined;
      if (!payload) throw invalid("payload", "must be a Uint8Array or a string");
      return this.enqueue({
        kind: "message",
        payload,
        batchId: option(options, "batchId"),
        messageId: option(options, "messageId"),
        batchSliceId: option(options, "batchSliceId"),
        chunkId: option(options, "chunkId"),
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Queues the marker that completes batch `batchId`; resolves to its sequence number. */
  enqueueBatchCompletion(batchId) {
    return this.enqueue({ kind: "batchCompletion", batchId }, ["batchId"]);
  }

  /** Queues the marker that completes message `messageId` of batch `batchId`. */
  enqueueMessageCompletion(batchId, messageId) {
    return this.enqueue({ kind: "messageCompletion", batchId, messageId }, ["batchId", "messageId"]);
  }

  enqueue(what, strings = []) {
    const wrong = strings.find((name) => typeof what[name] !== "string");
    if (wrong) return Promise.reject(invalid(wrong, "must be a string"));
    return this.coordinator.call({ kind: "send", stream: this.stream, what });
  }
}

