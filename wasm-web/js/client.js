// The public API: `DeviceClient` and `StreamSender` (camelCase, Promises; types in
// vdev_web.d.ts). Options are checked here and a wrong one is named in a clear error; calls go
// to the client's coordinator (tabs.js), which runs them on the device or forwards them to the
// tab that drives it.

import { VdevError } from "./errors.js";
import { deferred, stoppedError } from "./device.js";
import { Coordinator } from "./tabs.js";

/**
 * @import { Core, CoreOptions } from "./vdev_web_core.js"
 * @import { DeliveryOptions, DeviceEvent, MessageOptions, StartOptions, StreamSenderOptions, VdevErrorCode, WaitOptions } from "./vdev_web.js"
 * @import { Deferred, Log, Sendable, Stream } from "./device.js"
 */

/** @typedef {(options: CoreOptions) => Core} MakeCore */

/**
 * The error of a message the Platform will never have: its sequence number and the reason.
 * @param {number} sequence
 * @param {import("./vdev_web.js").RejectReason} reason
 */
function rejected(sequence, reason) {
  return Object.assign(new VdevError("messageRejected", `message ${sequence} rejected: ${reason.message}`), {
    sequence,
    reason,
  });
}

/**
 * What `Core` is made from, less what the store and the moment add; the database's name (a
 * directory on Node.js) and the Node.js host's `ca` ride along.
 * @typedef {Pick<CoreOptions, "instance" | "provisioningToken" | "deviceId" | "provisioningParameters" | "transport" | "tunables" | "brotli">
 *   & { database: string, ca?: StartOptions["ca"] }} Config
 */

/** @type {MakeCore | undefined} */
let makeCore;

/** What drives the device for a client: the tab coordination here; the Node.js entry's own. */
let Owner = Coordinator;

/**
 * Hands the host the wasm `Core` maker (`options => new Core(options)`), and what drives the
 * device when it is not the browser's `Coordinator`; the package entry does.
 * @param {MakeCore} make
 * @param {typeof Coordinator} [owner]
 */
export function provideCore(make, owner) {
  makeCore = make;
  if (owner) Owner = owner;
}

const CALLBACKS = /** @type {const} */ ([
  "onProvisioningOperation",
  "onProvisioningFailed",
  "onDesiredPropertiesChanged",
  "onConnectionStateChanged",
  "onMessageOutcome",
  "onCloudToDeviceMessage",
  "onOfflineChanged",
  "onEvent",
]);

/** @typedef {Pick<StartOptions, (typeof CALLBACKS)[number]>} Callbacks */

/** @type {Record<string, number | undefined>} */
const COMPRESSION = { none: 0, fastest: 1, smallestSize: 2 };

/**
 * @param {string} name
 * @param {string} problem
 */
const invalid = (name, problem) => new VdevError("invalidOption", `option ${name}: ${problem}`);

/**
 * `object[name]`, undefined when absent (undefined or null) or when it is not of `type`.
 * `object` is what the app passed, of the public type at best: `type` is checked here.
 * @template {object} O
 * @template {keyof O & string} K
 * @param {O | null | undefined} object
 * @param {K} name
 * @returns {O[K] | undefined}
 */
function option(object, name, type = "string") {
  const value = object?.[name];
  if (value == null) return undefined;
  if (typeof value !== type) throw invalid(name, `must be a ${type}`);
  return value;
}

const LEVELS = /** @type {const} */ (["error", "warn", "info", "debug"]);

/**
 * How the client logs: through the app's `logger` (each level a method, `console` fits), or
 * by default errors alone to the console. A logger that throws is not the device's problem.
 * @param {StartOptions["logger"]} logger
 * @returns {Log}
 */
function logThrough(logger) {
  if (logger == null) logger = { error: (...details) => console.error(...details) };
  const methods = /** @type {Record<string, unknown>} */ (logger);
  if (typeof logger !== "object" || LEVELS.some((level) => methods[level] != null && typeof methods[level] !== "function")) {
    throw invalid("logger", "must be an object whose error, warn, info and debug are functions where present");
  }
  const chosen = logger;
  return (level, ...details) => {
    try {
      chosen[level]?.("vdev:", ...details);
    } catch {}
  };
}

/**
 * The `signal` and `timeout` of a waiting call, checked.
 * @param {WaitOptions | null | undefined} options
 * @returns {{ signal: AbortSignal | undefined, timeout: number | undefined }}
 */
function waitOptions(options) {
  const signal = options?.signal ?? undefined;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalid("signal", "must be an AbortSignal");
  const timeout = options?.timeout ?? undefined;
  if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0 && timeout <= 2 ** 31 - 1)) {
    throw invalid("timeout", "must be a number of milliseconds from 0 to 2147483647");
  }
  return { signal, timeout };
}

/**
 * `promise`, or a rejection when `signal` aborts first (with its reason, as `fetch` does) or
 * `timeout` ms pass first (`timedOut`, saying `what` did not happen). Giving up only stops the
 * waiting: `giveUp` forgets the waiter; what was waited for goes on.
 * @template T
 * @param {Promise<T>} promise
 * @param {{ signal: AbortSignal | undefined, timeout: number | undefined }} wait
 * @param {string} what
 * @param {() => void} [giveUp]
 * @returns {Promise<T>}
 */
function bounded(promise, { signal, timeout }, what, giveUp) {
  if (!signal && timeout === undefined) return promise;
  return new Promise((resolve, reject) => {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const settle = (/** @type {() => void} */ how) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", aborted);
      how();
    };
    const stop = (/** @type {unknown} */ error) => settle(() => (giveUp?.(), reject(error)));
    const aborted = () => stop(signal?.reason);
    if (signal?.aborted) return aborted();
    signal?.addEventListener("abort", aborted);
    if (timeout !== undefined) {
      timer = setTimeout(() => stop(new VdevError("timedOut", `${what} within ${timeout} ms`)), timeout);
    }
    promise.then(
      (value) => settle(() => resolve(value)),
      (error) => settle(() => reject(error)),
    );
  });
}

/**
 * @param {StartOptions} object
 * @param {"instance" | "provisioningToken" | "database"} name
 * @returns {string}
 */
function required(object, name) {
  const value = option(object, name);
  if (value === undefined) throw invalid(name, "is required");
  return value;
}

/**
 * The Core's options from `start`'s: the instance URL, token, Device ID and parameters.
 * @param {StartOptions} options
 */
function coreConfig(options) {
  /** @type {Config} */
  const config = {
    // `scheme://...` or a bare host name (https:// is implied): the core reads and checks it
    // (the cleartext rule, an empty URL) when `start` makes its trial Core.
    instance: required(options, "instance"),
    provisioningToken: required(options, "provisioningToken"),
    database: required(options, "database"),
    deviceId: option(options, "deviceId"),
    // The core refuses a transport this host cannot open (only WebSocket in a browser).
    transport: option(options, "transport"),
    ca: options.ca ?? undefined,
    // Checked by the core (it must have `encode`) when `start` makes its trial Core.
    brotli: options.brotli ?? undefined,
  };
  const parameters = options.provisioningParameters;
  if (parameters != null) {
    if (typeof parameters !== "object" || Object.values(parameters).some((value) => typeof value !== "string")) {
      throw invalid("provisioningParameters", "must be an object of strings");
    }
    config.provisioningParameters = JSON.stringify(parameters);
  }
  // Named and checked by the core (bounds, unknown names), when `start` makes its trial Core.
  const tunables = options.tunables;
  if (tunables != null) {
    if (typeof tunables !== "object" || Array.isArray(tunables)) throw invalid("tunables", "must be an object of numbers");
    config.tunables = JSON.stringify(tunables);
  }
  return config;
}

/**
 * A device: provisions itself, keeps a durable queue in IndexedDB and forwards it in order. An
 * `EventTarget`: every event of the device is dispatched under its `kind` as a `CustomEvent`
 * whose `detail` is the event (`onEvent`'s argument).
 */
export class DeviceClient extends EventTarget {
  /**
   * Made by `start` only (the types make it private).
   * @param {Coordinator} coordinator
   */
  constructor(coordinator) {
    super();
    this.coordinator = coordinator;
    /**
     * The event types a listener was ever added for: an event nobody listens to costs no
     * `CustomEvent` (a drain has one per message).
     * @type {Set<string>}
     */
    this.listened = new Set();
    /**
     * `deliverMessage`'s waiters, by sequence number.
     * @type {Map<number, Deferred<number>>}
     */
    this.deliveries = new Map();
    /** Set once `stop` finished: no outcome comes any more. */
    this.stopped = false;
    /**
     * Whether the browser keeps this site's storage under pressure and past its eviction rules
     * (Safari deletes a site's data after seven days without interaction unless it is
     * persistent); `null` until the browser answered, or where it cannot say.
     * @type {boolean | null}
     */
    this.persistentStorage = null;
    /**
     * The core's refusal of compressed streams, when it has no Brotli encoder.
     * @type {Error | undefined}
     */
    this.compressionRefusal = undefined;
  }

  /**
   * Opens the database, resumes what it holds (identity, tokens, queue, twin) and starts the
   * device. Resolves as soon as it runs; provisioning and connecting go on after that.
   * @param {StartOptions} options
   */
  static async start(options) {
    if (!makeCore) throw new VdevError("notInitialized", "the wasm module is not initialised: call init() first");
    const config = coreConfig(options);
    // The instance URL, Device ID and parameters are the core's to check, also in a tab that
    // only follows; its refusals name the option.
    let trial;
    try {
      trial = makeCore({ ...config, random: new Uint8Array(32) });
    } catch (error) {
      throw new VdevError("invalidOption", /** @type {Error} */ (error).message);
    }
    // Whether streams may ask for compression is the core's answer, kept for
    // `createStreamSender`, which must refuse at the call (a following tab has no Core).
    /** @type {Error | undefined} */
    let compressionRefusal;
    try {
      trial.checkCompression(1); // "fastest": either compression needs an encoder
    } catch (error) {
      compressionRefusal = /** @type {Error} */ (error);
    } finally {
      trial.free();
    }
    /** @type {Callbacks} */
    const callbacks = {};
    // `any`: TypeScript cannot pair each name with its own callback type through the loop.
    for (const name of CALLBACKS) callbacks[name] = /** @type {any} */ (option(options, name, "function"));
    // Every event reaches the client's listeners after the app's `onEvent` (which alone sees
    // those of `start` itself, before there is a client to listen to).
    /** @type {DeviceClient | undefined} */
    let client;
    const onEvent = callbacks.onEvent;
    callbacks.onEvent = (event) => {
      try {
        onEvent?.(event);
      } finally {
        client?.dispatch(event);
      }
    };
    const coordinator = new Owner(config, config.database, callbacks, makeCore, logThrough(options.logger));
    await coordinator.start();
    client = new DeviceClient(coordinator);
    client.compressionRefusal = compressionRefusal;
    // Not awaited: Firefox asks the user, and `start` must not wait for an answer that may come
    // late or never (a headless Firefox never resolves it).
    void client.askPersistentStorage();
    return client;
  }

  /**
   * Asks the browser to keep the queue's storage (`navigator.storage.persist()`), so that
   * queued messages are not evicted; `statistics().persistentStorage` tells the answer once
   * the browser (or, in Firefox, the user) gave it.
   */
  async askPersistentStorage() {
    // `persist` exists in pages, not in workers.
    const storage = /** @type {(StorageManager & { persist?: () => Promise<boolean> }) | undefined} */ (
      globalThis.navigator?.storage
    );
    if (!storage || typeof storage.persist !== "function") return;
    try {
      this.persistentStorage = (await storage.persisted()) || (await storage.persist());
    } catch {
      // A browser may refuse the question itself (an opaque origin); the answer stays unknown.
    }
  }

  /**
   * A sender for one stream (the workspace's defaults when the names are absent).
   * @param {StreamSenderOptions | null} [options]
   */
  createStreamSender(options) {
    const name = option(options, "compression") ?? "none";
    const compression = Object.hasOwn(COMPRESSION, name) ? COMPRESSION[name] : undefined;
    if (compression === undefined) {
      throw invalid("compression", `must be "none", "fastest" or "smallestSize", not "${name}"`);
    }
    const refusal = this.compressionRefusal;
    if (compression && refusal) {
      throw new VdevError(
        /** @type {VdevErrorCode} */ (refusal.name),
        `${refusal.message} (start({ brotli: await loadBrotli() }), loadBrotli from "vdev-web/brotli")`,
      );
    }
    const stream = {
      streamGroup: option(options, "streamGroup"),
      stream: option(options, "stream"),
      siteId: option(options, "siteId"),
      compression,
    };
    return new StreamSender(this, stream);
  }

  /**
   * @param {string} type
   * @param {EventListenerOrEventListenerObject | null} listener
   * @param {boolean | AddEventListenerOptions} [options]
   */
  addEventListener(type, listener, options) {
    this.listened.add(type);
    super.addEventListener(type, listener, options);
  }

  /**
   * Settles `deliverMessage`'s waiter of an outcome, then tells the listeners.
   * @param {DeviceEvent} event
   */
  dispatch(event) {
    if (event.kind === "messageDelivered" || event.kind === "messageRejected") {
      const waiter = this.deliveries.get(event.seq);
      if (waiter) {
        this.deliveries.delete(event.seq);
        if (event.kind === "messageDelivered") waiter.resolve(event.seq);
        else waiter.reject(rejected(event.seq, event.reason));
      }
    }
    if (this.listened.has(event.kind)) this.dispatchEvent(new CustomEvent(event.kind, { detail: event }));
  }

  /**
   * Resolves with `sequence` once that message is delivered; rejects when it is rejected.
   * Registered before its outcome can come: see `deliverMessage`.
   * @param {number} sequence
   * @returns {Promise<number>}
   */
  delivery(sequence) {
    if (this.stopped) return Promise.reject(stoppedError());
    /** @type {Deferred<number>} */
    const waiter = deferred();
    this.deliveries.set(sequence, waiter);
    return waiter;
  }

  /** Messages stored and not yet delivered or rejected. */
  pendingMessagesCount() {
    return this.coordinator.snapshot().pendingCount;
  }

  /**
   * Resolves once no message is pending (delivered or rejected, every one); rejects when
   * `options.signal` aborts or `options.timeout` ms pass first (the messages stay queued).
   * @param {WaitOptions | null} [options]
   */
  waitEnqueuedMessagesSent(options) {
    try {
      const wait = waitOptions(options);
      /** @type {Promise<void>} */
      const sent = Promise.resolve(this.coordinator.waitSent());
      return bounded(sent, wait, "the queued messages were not all sent");
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The desired properties (the saved copy until the first fetch) and their version. */
  desiredProperties() {
    const { desired, desiredVersion } = this.coordinator.snapshot();
    return { properties: JSON.parse(desired), version: desiredVersion };
  }

  /**
   * The desired properties and their version when it is above `version` (the one the app has
   * applied); `undefined` when the app is up to date, or before the first fetch.
   * @param {number} version
   */
  desiredPropertiesIfNewer(version) {
    if (typeof version !== "number") throw invalid("version", "must be a number");
    const { desired, desiredVersion } = this.coordinator.snapshot();
    // The core's rule (`Device::desired_properties_if_newer`), on the figures a follower has too.
    if (desiredVersion == null || !(desiredVersion > version)) return undefined;
    return { properties: JSON.parse(desired), version: desiredVersion };
  }

  /** Whether a reported-properties update waits for the Platform's acknowledgement. */
  get reportedPropertiesPending() {
    return this.coordinator.snapshot().reportedPending;
  }

  /**
   * Merges `patch` into the reported properties (JSON merge patch: `null` deletes). Resolves once
   * the change is saved; it reaches the Platform when connected, across restarts.
   * @param {Record<string, unknown>} patch
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
    const persistentStorage = this.persistentStorage;
    return {
      pendingCount,
      pendingBytes,
      oldestEnqueuedAt,
      windowRecords,
      connectionState,
      offline,
      role,
      persistentStorage,
    };
  }

  /**
   * Takes the device offline (`true`) or lets it go online again (`false`). The device is
   * offline while the app says so or the browser does: the connection is closed, nothing is sent
   * or fetched, and sends are stored to go out, in order, later.
   * @param {boolean} offline
   */
  setOffline(offline) {
    this.coordinator.call({ kind: "offline", value: !!offline }).catch(() => {});
  }

  /** Whether the device is offline (the browser's `offline` event or `setOffline(true)`). */
  get offline() {
    return this.coordinator.snapshot().offline;
  }

  /**
   * Forgets the device: stops it and deletes what it stored (its queue, identity, tokens and
   * twin), so that the next `start` with this database provisions a new device. Refused with
   * `messagesPending` while stored messages are not delivered, unless `force` (they are
   * dropped), and with `coordinationFailed` in a tab that only follows (forget it where it
   * runs).
   * @param {{ force?: boolean } | null} [options]
   */
  async forget(options) {
    const force = option(options, "force", "boolean") ?? false;
    if (!this.coordinator.driver) {
      throw new VdevError("coordinationFailed", "another tab drives this device: forget it there");
    }
    const pending = this.pendingMessagesCount();
    if (pending > 0 && !force) {
      throw new VdevError(
        "messagesPending",
        `${pending} stored messages are not delivered yet: forget({ force: true }) drops them`,
      );
    }
    await this.stop();
    await this.coordinator.forget();
  }

  /**
   * Disconnects, finishes pending storage work and closes the database. Queued messages stay
   * stored for the next start.
   */
  stop() {
    return Promise.resolve(this.coordinator.stop()).then(() => {
      this.stopped = true;
      for (const waiter of this.deliveries.values()) waiter.reject(stoppedError());
      this.deliveries.clear();
    });
  }
}

/** Sends messages to one stream. */
export class StreamSender {
  /**
   * @param {DeviceClient} client
   * @param {Stream} stream
   */
  constructor(client, stream) {
    this.client = client;
    this.stream = stream;
  }

  /**
   * Queues a message and resolves to its sequence number once the Platform acknowledged it;
   * rejects with `messageRejected` (and the reason) when it never will be, as `sendMessage`
   * does when it cannot be stored, and when `options.signal` aborts or `options.timeout` ms
   * pass first (the message stays queued and still goes out).
   * @param {any} payload a Uint8Array or a string
   * @param {DeliveryOptions | null} [options]
   */
  deliverMessage(payload, options) {
    try {
      const wait = waitOptions(options);
      return this.sendMessage(payload, options).then((stored) => {
        const sequence = /** @type {number} */ (stored);
        // Registered in the turn the message is stored: it is sent only once stored, so its
        // outcome comes in a later turn.
        const delivered = this.client.delivery(sequence);
        const giveUp = () => this.client.deliveries.delete(sequence);
        return bounded(delivered, wait, `message ${sequence} was not delivered`, giveUp);
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Queues a message. Resolves to its sequence number once it is durably stored (never waits for
   * the network); rejects when it cannot be stored.
   * @param {any} payload a Uint8Array or a string as the types say, but checked here
   * @param {MessageOptions | null} [options]
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

  /**
   * Queues the marker that completes batch `batchId`; resolves to its sequence number.
   * @param {string} batchId
   */
  enqueueBatchCompletion(batchId) {
    return this.enqueue({ kind: "batchCompletion", batchId }, ["batchId"]);
  }

  /**
   * Queues the marker that completes message `messageId` of batch `batchId`.
   * @param {string} batchId
   * @param {string} messageId
   */
  enqueueMessageCompletion(batchId, messageId) {
    return this.enqueue({ kind: "messageCompletion", batchId, messageId }, ["batchId", "messageId"]);
  }

  /**
   * @template {Sendable} W
   * @param {W} what
   * @param {(keyof W & string)[]} [strings] the fields that must be strings (the app may pass anything)
   */
  enqueue(what, strings = []) {
    const wrong = strings.find((name) => typeof what[name] !== "string");
    if (wrong) return Promise.reject(invalid(wrong, "must be a string"));
    return this.client.coordinator.call({ kind: "send", stream: this.stream, what });
  }
}

