// One owner per device across tabs: the client holding the Web Lock `vdev-web:<database>`
// drives the device; every other client of the same database (another tab, or a second
// `DeviceClient` in the same page) is a follower.
//
// Followers and the owner talk over the BroadcastChannel of the same name (plain objects with
// a type `t`):
// - a follower forwards its calls as `request`s `{from, n, kind, ...}`; the owner runs them on
//   its device and sends back an `answer` (`seq` once stored, `done`, `error`, or `retry` while
//   it stops);
// - the owner mirrors every app callback (`event`) and its figures (`snapshot`), so a follower's
//   callbacks and getters work as the owner's do, from the first `hello` or `request` it hears
//   on: an owner without followers posts nothing per message;
// - `owner` announces a new owner (followers say `hello` and resend what is unanswered; the
//   owner answers a request it already ran again instead of running it twice, and so does an
//   owner after the one that ran it: the store keeps each forwarded send's key with its record
//   (store.js, `sent:` in `meta`),
//   so a send stored by an owner that died before answering is answered, not stored twice),
//   `released` says the owner has finished (every answer is out) and lets go of the lock.
//
// When the owner stops or its tab closes, the lock goes to the next waiting client, which opens
// the database and resumes the device from it. It first waits for `released` (at most
// RELEASE_WAIT_MS, for a tab closed without one) so that no answer of the old owner is still on
// its way, then runs its own unanswered requests itself. Where the browser has no Web Locks or
// no BroadcastChannel (an insecure http:// page off localhost, an old browser), `start` refuses
// with `coordinationFailed`: two clients writing one database would overwrite each other's
// records.
//
// Everything a coordinator reacts to runs through `serial`, one step after the other: while it
// opens the database to take over, later calls wait instead of racing it.

import { Driver, deferred, stoppedError } from "./device.js";
import { VdevError } from "./errors.js";
import { describe } from "./io.js";
import { deleteStore, openStore, randomId } from "./store.js";

/**
 * @import { Log } from "./device.js"
 * @import { Callbacks, Config, MakeCore } from "./client.js"
 * @import { Deferred, Sendable, Stream } from "./device.js"
 * @import { VdevErrorCode } from "./vdev_web.js"
 */

/**
 * A call of the API, run on the device or forwarded to the owner.
 * @typedef {{ kind: "send", stream: Stream, what: Sendable }
 *   | { kind: "reported", patch: string }
 *   | { kind: "offline", value: boolean }} Request
 */

/** @typedef {Request & { t: "request", from: string, n: number }} RequestMessage */

/** @typedef {{ seq?: number, done?: true, error?: string, code?: VdevErrorCode, retry?: true }} Outcome */

/** @typedef {Outcome & { t: "answer", to: string, n: number }} AnswerMessage */

/** @typedef {ReturnType<Driver["snapshot"]>} Figures */

/** Lets go of the Web Lock. @typedef {() => void} Release */

/**
 * The version of the messages below (`v`). A client of another version (a tab left open across
 * a deploy) shares the lock, so never two drive the device, but its requests are refused with a
 * clear error instead of being misread.
 */
const PROTOCOL = 2;

/** How long a new owner waits for the previous owner's `released` before resuming the device. */
const RELEASE_WAIT_MS = 2000;

/**
 * How many followers' requests an owner remembers for answering repeats. Repeats come only
 * right after an owner announces itself, so the most recent ones are enough.
 */
const REMEMBERED_REQUESTS = 10000;

export class Coordinator {
  /**
   * `config` is what `Core` is made from, `makeCore` makes it, `callbacks` are the app's.
   * @param {Config} config
   * @param {string} database
   * @param {Callbacks} callbacks
   * @param {MakeCore} makeCore
   * @param {Log} log the app's logger
   */
  constructor(config, database, callbacks, makeCore, log) {
    this.config = config;
    this.database = database;
    this.callbacks = callbacks;
    this.log = log;
    this.makeCore = makeCore;
    this.id = randomId();
    /** @type {(() => void)[]} */
    this.backlog = [];
    /** @type {Map<string, AnswerMessage | null>} */
    this.handled = new Map(); // "from n" -> the answer sent, or null while running
    this.nextRequest = 0;
    /** @type {Map<number, { message: RequestMessage, waiter: Deferred<number | undefined> }>} */
    this.pending = new Map(); // n -> { message, waiter }
    /** @type {Deferred<void>[]} */
    this.sentWaiters = [];
    /** @type {Figures} */
    this.figures = {
      pendingCount: 0,
      pendingBytes: 0,
      oldestEnqueuedAt: null,
      windowRecords: 0,
      connectionState: "disconnected",
      offline: false,
      reportedPending: false,
      workspaceId: null,
      deviceId: null,
      desired: "{}",
      desiredVersion: null,
    };
    // The browser's network events come the way of the app's calls, so both keep their order.
    this.onNetwork = (/** @type {Event} */ event) =>
      this.serial(() => this.driver?.browserNetwork(event.type === "online"));
    globalThis.addEventListener?.("online", this.onNetwork);
    globalThis.addEventListener?.("offline", this.onNetwork);
  }

  /** Starts as the owner when the lock is free, else as a follower. */
  async start() {
    const name = `vdev-web:${this.database}`;
    const locks = globalThis.navigator?.locks;
    try {
      if (!locks || !globalThis.BroadcastChannel) {
        const missing = !locks ? "Web Locks" : "BroadcastChannel";
        // Browsers give Web Locks to secure contexts only, and engines disagree on which
        // loopback pages are secure: WebKit does not count http://127.0.0.1.
        const why =
          globalThis.isSecureContext === false
            ? `this page (${globalThis.location?.origin}) is not a secure context in this browser, ` +
              `so it has no ${missing}`
            : `this page has no ${missing}`;
        throw new VdevError(
          "coordinationFailed",
          `${why}, and vdev cannot keep a second client (another tab) from writing the same ` +
            "database: serve the page over https:// or from http://localhost (WebKit does not " +
            "count http://127.0.0.1 as secure), in a browser that has Web Locks and BroadcastChannel",
        );
      }
      this.channel = new BroadcastChannel(name);
      this.channel.onmessage = (event) => this.serial(() => this.message(event.data));
      let release;
      try {
        release = await /** @type {Promise<Release | void>} */ (new Promise((resolve, reject) => {
          locks
            .request(name, { ifAvailable: true }, (lock) =>
              lock && /** @type {Promise<void>} */ (new Promise((release) => resolve(release))))
            .then(() => resolve(), reject);
        }));
      } catch (error) {
        throw new VdevError("coordinationFailed", `cannot coordinate with other tabs: ${describe(error)}`);
      }
      if (release) return await this.exclusive(() => this.becomeOwner(release));
      this.follow(locks, name);
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * Runs `step` now, or once the exclusive step that is running has finished; its result.
   * @template T
   * @param {() => T} step
   * @returns {T | Promise<T>}
   */
  serial(step) {
    // Also behind queued steps: a step that runs while the backlog drains (an app callback
    // calling the API) keeps its place after the calls made before it.
    if (!this.busy && !this.backlog.length) return step();
    /** @type {Deferred<T>} */
    const waiter = deferred();
    this.backlog.push(() => {
      try {
        waiter.resolve(step());
      } catch (error) {
        waiter.reject(error);
      }
    });
    return waiter;
  }

  /**
   * Runs the async `step` with every later step waiting until it has finished.
   * @param {() => Promise<void>} step
   */
  exclusive(step) {
    return this.serial(() => {
      this.busy = true;
      let done;
      try {
        done = step();
      } catch (error) {
        done = Promise.reject(error);
      }
      done
        .catch(() => {})
        .then(() => {
          this.busy = false;
          while (!this.busy && this.backlog.length) /** @type {() => void} */ (this.backlog.shift())();
        });
      return done;
    });
  }

  /** @param {{ t: string, [field: string]: unknown }} message */
  post(message) {
    // Only a closed channel refuses; there is nobody to tell then.
    try {
      this.channel?.postMessage({ ...message, v: PROTOCOL });
    } catch {}
  }

  /**
   * Calls the app's callback `name` and mirrors it to the followers.
   * @template {keyof Callbacks} K
   * @param {K} name
   * @param {Parameters<NonNullable<Callbacks[K]>>} args
   */
  tell(name, args) {
    try {
      // `any`: the arguments are checked at the callers, as each callback's own.
      /** @type {any} */ (this.callbacks[name])?.(...args);
    } catch (error) {
      this.log("error", `${name} threw: ${describe(error)}`);
    }
    if (this.driver && this.followersPresent) this.post({ t: "event", name, args });
  }

  /** Owner: tells the followers the figures, when they changed. */
  figuresChanged() {
    if (!this.followersPresent || !this.driver) return;
    const figures = this.driver.snapshot();
    const text = JSON.stringify(figures);
    if (text !== this.lastFigures) {
      this.lastFigures = text;
      this.post({ t: "snapshot", ...figures });
    }
  }

  /** The figures the getters show: the device's own, or the owner's last snapshot. */
  snapshot() {
    return this.driver ? this.driver.snapshot() : this.figures;
  }

  /**
   * Opens the store and starts the driver; tells the followers.
   * @param {Release} [release]
   */
  async becomeOwner(release) {
    this.release = release;
    try {
      const { store, contents } = await openStore(this.database);
      const { sent, ...facts } = contents;
      // Forwarded sends a previous owner stored: answered from here, never stored twice.
      for (const [key, seq] of sent) {
        const space = key.lastIndexOf(" ");
        this.handled.set(key, { t: "answer", to: key.slice(0, space), n: Number(key.slice(space + 1)), seq });
      }
      let core;
      try {
        core = this.makeCore({
          ...this.config,
          ...facts,
          savedState: facts.state,
          now: Date.now(),
          random: crypto.getRandomValues(new Uint8Array(32)),
        });
      } catch (error) {
        store.close();
        throw error;
      }
      this.driver = new Driver(
        core,
        store,
        (name, args) => this.tell(name, args),
        () => this.figuresChanged(),
        { log: this.log },
      );
    } catch (error) {
      this.release?.();
      this.release = undefined;
      throw error;
    }
    this.ownerPresent = false;
    this.post({ t: "owner" });
  }

  /**
   * Becomes a follower: queues for the lock (to take over later), asks the owner for figures.
   * @param {LockManager} [locks]
   * @param {string} [name]
   */
  follow(locks = /** @type {LockManager} */ (this.locks), name = /** @type {string} */ (this.lockName)) {
    this.locks = locks;
    this.lockName = name;
    this.abort = new AbortController();
    locks
      .request(name, { signal: this.abort.signal }, (lock) => /** @type {Promise<void>} */ (new Promise((release) => {
        if (this.stopping) release();
        else this.serial(() => this.lockGranted(release));
      })))
      // Rejects (AbortError) for a follower that stopped.
      .catch(() => {});
    this.post({ t: "hello" });
  }

  /** @param {Release} release */
  lockGranted(release) {
    // The lock and the channel are two roads: unless the old owner's `released` is here, its
    // last answers may still be on their way (or it was closed without one).
    if (!this.sawReleased) {
      const wait = setTimeout(() => this.serial(() => this.releaseWaitOver()), RELEASE_WAIT_MS);
      this.promoting = { release, wait };
    } else {
      return this.promote(release);
    }
  }

  releaseWaitOver() {
    const promoting = this.promoting;
    this.promoting = undefined;
    if (promoting) return this.promote(promoting.release);
  }

  /**
   * A follower takes over: resumes the device and runs its own unanswered requests.
   * @param {Release} release
   */
  promote(release) {
    return this.exclusive(() => this.takeOver(release));
  }

  /** @param {Release} release */
  async takeOver(release) {
    if (this.stopping) return release();
    this.abort = undefined;
    try {
      await this.becomeOwner(release);
    } catch (error) {
      // The calls waiting for an owner fail with the reason; the client queues for the lock
      // again, to try once more when the next owner lets go.
      const failure = new VdevError("coordinationFailed", `cannot take over the device: ${error.message}`);
      this.log("error", failure.message);
      for (const { waiter } of this.pending.values()) waiter.reject(failure);
      this.pending.clear();
      for (const waiter of this.sentWaiters.splice(0)) waiter.reject(failure);
      this.follow();
      return;
    }
    const driver = /** @type {Driver} */ (this.driver); // made by becomeOwner
    const pending = [...this.pending.values()];
    this.pending.clear();
    // Never `offline` (a follower keeps that as its wish), so each answers with a promise. A
    // send the previous owner stored but could not answer is answered from the store.
    for (const { message, waiter } of pending) {
      const stored = this.handled.get(`${this.id} ${message.n}`);
      if (stored?.seq !== undefined) waiter.resolve(stored.seq);
      else /** @type {Promise<number | undefined>} */ (this.run(message, `${this.id} ${message.n}`)).then(waiter.resolve, waiter.reject);
    }
    for (const waiter of this.sentWaiters.splice(0)) driver.waitSent().then(waiter.resolve, waiter.reject);
    if (this.offlineWish !== undefined) driver.setOffline(this.offlineWish);
  }

  /**
   * Runs a call (as a follower would forward it) on this owner's device; `key` names a
   * forwarded request, which the store remembers with its message.
   * @param {Request} request
   * @param {string} [key]
   */
  run(request, key) {
    const driver = /** @type {Driver} */ (this.driver); // only an owner runs calls
    switch (request.kind) {
      case "send":
        return driver.send(request.stream, request.what, key);
      case "reported":
        return driver.updateReported(request.patch);
      case "offline":
        return driver.setOffline(request.value === true);
      default:
        // Sent by another tab, whose requests the types cannot vouch for.
        return Promise.reject(
          new VdevError("versionMismatch", `unknown forwarded request '${/** @type {{ kind: string }} */ (request).kind}'`),
        );
    }
  }

  /**
   * A call of this client's API: run on the device, or forwarded to the owner.
   * @param {Request} request
   */
  call(request) {
    // A promise also for calls that answer nothing (`offline`).
    return Promise.resolve(this.serial(() => {
      if (this.stopping) return Promise.reject(stoppedError());
      if (this.driver) return this.run(request);
      if (request.kind === "offline") {
        this.offlineWish = request.value;
        return this.tellOfflineWish();
      }
      /** @type {Deferred<number | undefined>} */
      const waiter = deferred();
      const message = this.request(request);
      this.pending.set(message.n, { message, waiter });
      return waiter;
    }));
  }

  /** Resolves once no message is pending. */
  waitSent() {
    return this.serial(() => {
      if (this.stopping) return Promise.reject(stoppedError());
      if (this.driver) return this.driver.waitSent();
      /** @type {Deferred<void>} */
      const waiter = deferred();
      this.sentWaiters.push(waiter);
      this.answerSentWaiters();
      return waiter;
    });
  }

  /**
   * Posts a request to the owner; returns the message.
   * @param {Request} request
   */
  request(request) {
    /** @type {RequestMessage} */
    const message = { ...request, t: "request", from: this.id, n: this.nextRequest++ };
    this.post(message);
    return message;
  }

  /** Follower: asks the owner to apply this app's `setOffline` (again: the same value twice changes nothing). */
  tellOfflineWish() {
    if (this.offlineWish !== undefined) this.request({ kind: "offline", value: this.offlineWish });
  }

  /** After `stop`: deletes the database (the owner's database connection is closed by then). */
  forget() {
    return deleteStore(this.database);
  }

  /**
   * Stops: the owner stops its device and lets go of the lock; a follower leaves the queue.
   * Not an exclusive step: while the device finishes, the answers to followers' requests it
   * stores go out, and only then `released`.
   */
  stop() {
    return this.serial(() => {
      if (!this.stopping) {
        this.stopping = true;
        const driverStopped = this.driver ? this.driver.stop() : Promise.resolve();
        this.stopped = driverStopped.then(() => this.serial(() => this.detach()));
      }
      return this.stopped;
    });
  }

  detach() {
    this.abort?.abort();
    if (this.promoting) {
      clearTimeout(this.promoting.wait);
      this.promoting.release();
    }
    if (this.driver) this.post({ t: "released" });
    this.close();
    this.release?.();
    for (const { waiter } of this.pending.values()) waiter.reject(stoppedError());
    this.pending.clear();
    for (const waiter of this.sentWaiters.splice(0)) waiter.reject(stoppedError());
  }

  close() {
    this.channel?.close();
    this.channel = undefined;
    globalThis.removeEventListener?.("online", this.onNetwork);
    globalThis.removeEventListener?.("offline", this.onNetwork);
  }

  /**
   * A message from another client of the same database.
   * @param {any} message whatever another tab posted, checked before use
   */
  message(message) {
    const owner = !!this.driver;
    if (message?.v !== PROTOCOL) {
      // Refuse a request of another version; its answers are still heard (they settle our calls).
      if (owner && message?.t === "request") {
        this.post({
          t: "answer",
          to: message.from,
          n: message.n,
          error: "another tab drives this device with another version of vdev-web: reload it",
          code: "versionMismatch",
        });
      }
      if (owner || message?.t !== "answer") return;
    }
    switch (`${message?.t} ${owner}`) {
      case "hello true":
        this.followersPresent = true;
        /** @type {string | undefined} the figures last posted, as JSON */
        this.lastFigures = undefined;
        return this.figuresChanged();
      case "request true":
        this.followersPresent = true;
        return this.runForwarded(message);
      case "owner false":
        this.ownerPresent = true;
        this.sawReleased = false;
        this.post({ t: "hello" });
        this.tellOfflineWish();
        for (const { message } of this.pending.values()) this.post(message);
        return;
      case "released false": {
        this.ownerPresent = false;
        this.sawReleased = true;
        const promoting = this.promoting;
        if (promoting) {
          this.promoting = undefined;
          clearTimeout(promoting.wait);
          return this.promote(promoting.release);
        }
        return;
      }
      case "answer false":
        return this.answered(message);
      case "event false":
        return this.tell(message.name, message.args);
      case "snapshot false":
        this.ownerPresent = true;
        this.figures = message;
        return this.answerSentWaiters();
      // Not for this role (e.g. another follower's request), or unknown.
    }
  }

  /**
   * Owner: runs a follower's request once, answering repeats with the first answer.
   * @param {RequestMessage} message
   */
  runForwarded(message) {
    const key = `${message.from} ${message.n}`;
    if (this.handled.has(key)) {
      const answer = this.handled.get(key);
      if (answer) this.post(answer);
      return;
    }
    /** @type {(fields: Outcome) => AnswerMessage} */
    const answer = (fields) => ({ t: "answer", to: message.from, n: message.n, ...fields });
    if (this.stopping) return this.post(answer({ retry: true }));
    if (message.kind === "offline") return this.run(message);
    this.handled.set(key, null);
    // Forget the oldest beyond the bound (a Map keeps insertion order).
    if (this.handled.size > REMEMBERED_REQUESTS) {
      this.handled.delete(/** @type {string} */ (this.handled.keys().next().value));
    }
    const finish = (/** @type {Outcome} */ fields) =>
      this.serial(() => {
        const reply = answer(fields);
        if (fields.retry) this.handled.delete(key);
        else if (this.handled.has(key)) this.handled.set(key, reply);
        this.post(reply);
      });
    /** @type {Promise<number | undefined>} */ (this.run(message, key)).then(
      (seq) => finish(message.kind === "send" ? { seq } : { done: true }),
      (error) => finish(error.code === "stopped" ? { retry: true } : { error: error.message, code: error.code }),
    );
  }

  /**
   * Follower: the owner answered one of our requests.
   * @param {AnswerMessage} message
   */
  answered(message) {
    if (message.to !== this.id || message.retry) return; // a retry stays pending for the next owner
    const entry = this.pending.get(message.n);
    if (!entry) return;
    this.pending.delete(message.n);
    // An owner of an earlier version sends no code: its refusal is the versions' mismatch.
    if (message.error !== undefined) entry.waiter.reject(new VdevError(message.code ?? "versionMismatch", message.error));
    else entry.waiter.resolve(message.seq);
    this.answerSentWaiters();
  }

  answerSentWaiters() {
    if (!this.pending.size && this.figures.pendingCount === 0 && this.ownerPresent) {
      for (const waiter of this.sentWaiters.splice(0)) waiter.resolve();
    }
  }
}
