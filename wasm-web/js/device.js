// The driver: owns the wasm `Core` (vdev-core's device) and does its I/O.
//
// Everything that can happen — a call of the app, a WebSocket event, a `fetch` answer, a
// finished IndexedDB transaction, the timer, the network going away or coming back — is fed to
// the core as an input with `now`, and the core's outputs are performed until it names its next
// deadline. After a burst of such wakes (one microtask later) the queued storage requests go to
// IndexedDB as ONE transaction, the timer is armed and the waiting promises whose condition now
// holds are settled. No protocol decision is made here.
//
// Offline: the core hears the browser's network (`navigator.onLine` at start, then its
// `offline`/`online` events) and the app's `setOffline` as two inputs, and decides itself.

import { closeSocket, describe, openSocket, perform } from "./io.js";
import { VdevError } from "./errors.js";
import { WakeTimer } from "./timer.js";

/**
 * @import { Core, CoreStats, Output, SendSettlement, StoreRequest } from "./vdev_web_core.js"
 * @import { DeviceEvent, LogLevel } from "./vdev_web.js"
 * @import { Answer, Store, StoreFailure } from "./store.js"
 * @import { Callbacks } from "./client.js"
 */

/**
 * Calls the app's callback `name`, its arguments typed as the public types say.
 * @typedef {<K extends keyof Callbacks>(name: K, args: Parameters<NonNullable<Callbacks[K]>>) => void} Tell
 */

/**
 * Logs through the app's logger (`StartOptions.logger`) at `level`.
 * @typedef {(level: LogLevel, ...details: unknown[]) => void} Log
 */

/** A `connect` output of the core. @typedef {Extract<Output, { kind: "connect" }>} Connect */

/**
 * A stream as the core's commands take it (`compression` as the core numbers it).
 * @typedef {{ streamGroup?: string, stream?: string, siteId?: string, compression: number }} Stream
 */

/**
 * What `send` queues: a message or the marker that completes a batch or a message.
 * @typedef {{ kind: "message", payload: Uint8Array, batchId?: string, messageId?: string,
 *     batchSliceId?: string, chunkId?: string }
 *   | { kind: "batchCompletion", batchId: string }
 *   | { kind: "messageCompletion", batchId: string, messageId: string }} Sendable
 */

/**
 * What `deferred()` makes.
 * @template T
 * @typedef {Promise<T> & { resolve(value: T): void, reject(reason: unknown): void }} Deferred
 */

/** The error of every call made after `stop()`; `stopped` lets a forwarded call go to the next owner. */
export function stoppedError() {
  return new VdevError("stopped", "the device is stopped");
}

/**
 * The error of a `send` whose message was not stored, from the store's reason.
 * @param {{ code: string, message: string }} error
 */
const notStored = (error) =>
  new VdevError(error.code === "quotaExceeded" ? "quotaExceeded" : "storageFailed", `message not stored: ${error.message}`);

/**
 * A promise with its resolve and reject functions.
 * @template [T=void]
 * @returns {Deferred<T>}
 */
export function deferred() {
  let settle;
  const promise = new Promise((resolve, reject) => (settle = { resolve, reject }));
  return Object.assign(promise, settle);
}

export class Driver {
  /**
   * `tell(name, args)` calls the app's callback `name` (and mirrors it to other tabs);
   * `settled()` is called after every burst of work (the figures may have changed).
   * `io` replaces `Driver.open` and `Driver.perform` (the Node.js host opens TCP and TLS too,
   * and trusts the app's certificate authorities for HTTPS).
   * @param {Core} core
   * @param {Store} store
   * @param {Tell} tell
   * @param {() => void} settled
   * @param {{ open?: Driver["open"], perform?: Driver["perform"], log?: Log }} [io]
   */
  constructor(core, store, tell, settled, io) {
    if (io?.open) this.open = io.open;
    if (io?.perform) this.perform = io.perform;
    /** The app's logger: each event at the level the core gives it. */
    this.log = io?.log ?? (() => {});
    this.core = core;
    this.store = store;
    this.tell = tell;
    this.settled = settled;
    /** @type {Map<number, WebSocket>} */
    this.sockets = new Map();
    /** @type {((now: number) => void)[]} */
    this.inputs = [];
    /** @type {number | null} */
    this.deadline = null;
    this.timer = new WakeTimer(() => this.wake((now) => core.timeout(now)));
    // Storage requests not yet handed to IndexedDB, in the order the core emitted them.
    /** @type {StoreRequest[]} */
    this.storeQueue = [];
    this.storeRunning = false;
    /** @type {Map<number, Deferred<number>>} */
    this.durable = new Map(); // seq -> deferred, settled as the core says (`settles` of its events)
    /** @type {Map<number, string>} */
    this.sendKeys = new Map(); // seq -> key of the forwarded request, until its append is done
    /** @type {[number, Deferred<void>][]} */
    this.savedWaiters = []; // [revision, deferred], settled by the core's reportedPropertiesStored
    /** @type {Deferred<void>[]} */
    this.sentWaiters = [];
    /** @type {Deferred<void>[]} */
    this.stopWaiters = [];
    this.stopping = false;
    if (globalThis.navigator?.onLine === false) core.networkLost(Date.now());
    this.drain();
    this.settle();
  }

  /**
   * Feeds one input to the core (`input(now)`), performs its outputs, settles after the burst.
   * An input that comes while another is being handled (an app callback calling the API) waits
   * for it to finish, so callbacks never run inside each other.
   * @param {(now: number) => void} input
   */
  wake(input) {
    if (this.finished) return;
    this.inputs.push(input);
    if (this.inputs.length > 1) return;
    while (this.inputs.length) {
      this.inputs[0](Date.now());
      this.drain();
      this.inputs.shift();
    }
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => {
        this.scheduled = false;
        this.settle();
      });
    }
  }

  /**
   * Queues a message or marker; resolves to its sequence number once it is durable. `key`
   * names a forwarded request (tabs.js): the store keeps it with the record, in the same
   * transaction.
   * @param {Stream} stream
   * @param {Sendable} what
   * @param {string} [key]
   * @returns {Promise<number>}
   */
  send(stream, what, key) {
    if (this.stopping) return Promise.reject(stoppedError());
    /** @type {Deferred<number>} */
    const waiter = deferred();
    this.wake((now) => {
      let seq;
      try {
        seq =
          what.kind === "message"
            ? this.core.send(now, what.payload, stream.streamGroup, stream.stream, stream.siteId,
                stream.compression, what.batchId, what.messageId, what.batchSliceId, what.chunkId)
            : what.kind === "batchCompletion"
              ? this.core.enqueueBatchCompletion(now, stream.streamGroup, stream.stream, stream.siteId, what.batchId)
              : this.core.enqueueMessageCompletion(now, stream.streamGroup, stream.stream, stream.siteId,
                  what.batchId, what.messageId);
      } catch (error) {
        return waiter.reject(new VdevError(error.name, `message refused: ${error.message}`));
      }
      this.durable.set(seq, waiter);
      if (key !== undefined) this.sendKeys.set(seq, key);
    });
    return waiter;
  }

  /**
   * Merges a patch (JSON text) into the reported properties; resolves once it is saved.
   * @param {string} patch
   * @returns {Promise<void>}
   */
  updateReported(patch) {
    if (this.stopping) return Promise.reject(stoppedError());
    const waiter = deferred();
    this.wake((now) => {
      try {
        this.savedWaiters.push([this.core.updateReportedProperties(now, patch), waiter]);
      } catch (error) {
        return waiter.reject(new VdevError(error.name, error.message));
      }
    });
    return waiter;
  }

  /**
   * Resolves once no message is pending.
   * @returns {Promise<void>}
   */
  waitSent() {
    if (this.stopping) return Promise.reject(stoppedError());
    const waiter = deferred();
    this.sentWaiters.push(waiter);
    this.wake(() => {});
    return waiter;
  }

  /**
   * The app holds the device offline (`true`) or lets the browser decide (`false`).
   * @param {boolean} offline
   */
  setOffline(offline) {
    this.wake((now) => this.core.appOffline(now, offline));
  }

  /**
   * The browser's `online` (`true`) or `offline` (`false`) event.
   * @param {boolean} online
   */
  browserNetwork(online) {
    this.wake((now) => (online ? this.core.networkAvailable(now) : this.core.networkLost(now)));
  }

  /**
   * Stops the device, finishes storage work and closes everything.
   * @returns {Promise<void>}
   */
  stop() {
    if (this.finished) return Promise.resolve();
    const waiter = deferred();
    this.stopWaiters.push(waiter);
    this.stopping = true;
    this.wake((now) => this.core.stop(now));
    return waiter;
  }

  /**
   * The core's next output, with the byte strings its text announces taken in its order.
   * @returns {Output}
   */
  nextOutput() {
    const core = this.core;
    const output = JSON.parse(core.pollOutput());
    switch (output.kind) {
      case "transmit":
        output.bytes = core.takeBytes();
        break;
      case "http":
        output.body = core.takeBytes();
        break;
      case "event":
        if (output.payload) output.payload = core.takeBytes();
        break;
      // The Node.js build's store reads these from the core itself: there, nothing follows.
      case "append":
        for (const record of output.records) record.data = core.takeBytes();
        break;
      case "saveState":
        output.state = core.takeBytes();
        break;
    }
    return output;
  }

  /** Performs every output until the core names its next deadline. */
  drain() {
    for (;;) {
      const output = this.nextOutput();
      switch (output.kind) {
        case "timeout":
          this.deadline = output.deadline;
          return;
        case "append":
        case "remove":
        case "load":
        case "saveState":
        case "reserve":
          this.storeQueue.push(output);
          break;
        case "http":
          this.perform(output, Date.now()).then(
            (response) =>
              this.wake((now) =>
                this.core.httpResponse(now, output.id, response.status, response.retryAfter, response.body),
              ),
            (error) => this.wake((now) => this.core.httpFailed(now, output.id, error)),
          );
          break;
        case "connect":
          this.connect(output);
          break;
        case "transmit": {
          const socket = this.sockets.get(output.conn);
          try {
            socket?.send(output.bytes);
          } catch (error) {
            this.forget(output.conn);
            this.core.closed(Date.now(), output.conn, `websocket send failed: ${describe(error)}`);
          }
          break;
        }
        case "close":
          this.forget(output.conn);
          break;
        case "event":
          if (output.settles) this.settleSends(output.settles);
          this.log(output.level, output.event.kind, output.event);
          this.event(output.event, output.payload);
          break;
        default: {
          // tsc (js-check) fails here when the core gains an output this host does not handle.
          /** @type {never} */
          const unhandled = output;
          throw new Error(`unhandled core output ${JSON.stringify(unhandled)}`);
        }
      }
    }
  }

  /** @param {Connect} output */
  connect(output) {
    const conn = output.conn;
    const closed = (/** @type {string} */ reason) =>
      this.wake((now) => {
        // Also when the socket is still open (a text frame): the core is done with it.
        this.forget(conn);
        this.core.closed(now, conn, reason);
      });
    try {
      this.sockets.set(
        conn,
        this.open(output, {
          open: () => this.wake((now) => this.core.connected(now, conn)),
          data: (bytes) => this.wake((now) => this.core.received(now, conn, bytes)),
          closed,
        }),
      );
    } catch (reason) {
      // Reported like any other failed connection, on the next turn.
      queueMicrotask(() => closed(String(reason)));
    }
  }

  /**
   * Opens the connection a `connect` output names, WebSocket-like (`send`, `close`, the `on*`
   * handlers `closeSocket` silences); throws a reason when it cannot even start. (The Node.js
   * host opens TCP and TLS too.)
   * @param {Connect} output
   * @param {Parameters<typeof openSocket>[1]} on
   * @returns {WebSocket}
   */
  open({ url }, on) {
    // Never asked for: the core is made for WebSocket only (`validate_for`).
    if (!url) throw "tcp and tls are not available in this host";
    return openSocket(url, on);
  }

  /**
   * Performs an `http` output (io.js: `fetch`).
   * @param {Extract<Output, { kind: "http" }>} request
   * @param {number} now
   * @returns {Promise<{ status: number, retryAfter: string | undefined, body: Uint8Array }>}
   */
  perform(request, now) {
    return perform(request, now);
  }

  /** @param {number} conn */
  forget(conn) {
    const socket = this.sockets.get(conn);
    if (socket) {
      this.sockets.delete(conn);
      closeSocket(socket);
    }
  }

  /**
   * Tells the app about an event of the core: every event goes to `onEvent` as the core wrote
   * it; the shortcut callbacks get the parts they always had.
   * @param {DeviceEvent & { payload?: Uint8Array }} event the core's JSON, without its payload
   * @param {Uint8Array | undefined} payload
   */
  event(event, payload) {
    if (payload) event.payload = payload;
    this.tell("onEvent", [event]);
    switch (event.kind) {
      case "provisioningOperation":
        return this.tell("onProvisioningOperation", [
          { id: event.id, verificationCode: event.verificationCode, expiresAt: event.expiresAt },
        ]);
      case "provisioningFailed":
        return this.tell("onProvisioningFailed", [event.reason]);
      case "offlineChanged":
        return this.tell("onOfflineChanged", [event.offline]);
      case "connectionStateChanged":
        return this.tell("onConnectionStateChanged", [event.state]);
      case "reportedPropertiesStored":
        this.savedWaiters = this.savedWaiters.filter(
          ([revision, waiter]) => revision > event.revision || waiter.resolve(),
        );
        return;
      case "messageDelivered":
        return this.tell("onMessageOutcome", [{ sequence: event.seq, status: "delivered" }]);
      case "messageRejected":
        return this.tell("onMessageOutcome", [
          { sequence: event.seq, status: "rejected", reason: event.reason },
        ]);
      case "desiredPropertiesChanged":
        return this.tell("onDesiredPropertiesChanged", [event.properties, event.version]);
      case "cloudToDeviceMessage":
        return this.tell("onCloudToDeviceMessage", [{ properties: event.properties, payload: event.payload }]);
    }
  }

  /** After a burst of wakes: start a storage transaction, arm the timer, settle the waiters. */
  settle() {
    if (this.finished) return;
    this.flushStore();
    this.timer.ensure(this.deadline, Date.now());
    if (this.sentWaiters.length && this.stats().pendingCount === 0) {
      this.sentWaiters.splice(0).forEach((w) => w.resolve());
    }
    this.settled();
    if (this.stopWaiters.length && !this.storeRunning && !this.storeQueue.length) this.finish();
  }

  finish() {
    this.finished = true;
    for (const conn of [...this.sockets.keys()]) this.forget(conn);
    this.timer.disarm();
    this.store.close();
    this.stopWaiters.forEach((w) => w.resolve());
    for (const waiter of [...this.durable.values(), ...this.savedWaiters.map(([, w]) => w), ...this.sentWaiters]) {
      waiter.reject(stoppedError());
    }
  }

  flushStore() {
    if (this.storeRunning || !this.storeQueue.length) return;
    this.storeRunning = true;
    const requests = this.storeQueue.splice(0);
    /** @type {Map<string, number>} */
    const sends = new Map();
    for (const request of requests) {
      if (request.kind !== "append") continue;
      for (const { seq } of request.records) {
        const key = this.sendKeys.get(seq);
        if (key !== undefined) {
          sends.set(key, seq);
          this.sendKeys.delete(seq);
        }
      }
    }
    this.store.execute(requests, sends).then(
      (answers) => this.wake((now) => this.stored(now, answers)),
      (failure) => this.wake((now) => this.storeFailed(now, requests, failure)),
    );
  }

  /**
   * @param {number} now
   * @param {Answer[]} answers
   */
  stored(now, answers) {
    this.storeRunning = false;
    for (const answer of answers) {
      if (answer.kind === "appended") {
        this.core.appended(now, answer.first, answer.last);
      } else if (answer.kind === "reserved") {
        this.core.reserved(now, answer.below);
      } else if (answer.kind === "stateSaved") {
        this.core.stateSaved(now, answer.reportedRevision);
      } else if (answer.kind === "input") {
        answer.feed(now);
      } else {
        this.core.loaded(now, answer.records);
      }
    }
  }

  /**
   * A transaction failed: each of its requests is reported to the core, which decides what
   * follows (appends end in rejections, loads, removals and saves are asked for again later).
   *
   * @param {number} now
   * @param {StoreRequest[]} requests
   * @param {StoreFailure} failure
   */
  storeFailed(now, requests, failure) {
    this.storeRunning = false;
    const { quotaExceeded, message } = failure;
    for (const request of requests) {
      if (request.kind === "append") {
        const records = request.records;
        if (!records.length) continue;
        this.core.appendFailed(now, records[0].seq, records[records.length - 1].seq, quotaExceeded, message);
      } else if (request.kind === "load") {
        this.core.loadFailed(now, quotaExceeded, message);
      } else if (request.kind === "remove") {
        this.core.removeFailed(now, request.seqs, request.bytes, quotaExceeded, message);
      } else if (request.kind === "reserve") {
        this.core.reserveFailed(now, request.below, quotaExceeded, message);
      } else {
        this.core.saveStateFailed(now, quotaExceeded, message);
      }
    }
  }

  /**
   * Settles the sends that wait here as the core says (`Event::send_settlement`).
   * @param {SendSettlement} settlement
   */
  settleSends({ first, last, error }) {
    for (let seq = first; seq <= last; seq++) {
      const waiter = this.durable.get(seq);
      if (waiter) {
        this.durable.delete(seq);
        if (error) waiter.reject(notStored(error));
        else waiter.resolve(seq);
      }
    }
  }

  /** @returns {CoreStats} */
  stats() {
    return JSON.parse(this.core.stats());
  }

  /** The figures the getters show (and followers are told). */
  snapshot() {
    const core = this.core;
    return {
      ...this.stats(),
      workspaceId: core.workspaceId() ?? null,
      deviceId: core.deviceId() ?? null,
      desired: core.desiredProperties(),
      desiredVersion: core.desiredVersion() ?? null,
    };
  }
}
