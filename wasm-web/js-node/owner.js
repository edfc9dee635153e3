// What drives the device for a client on Node.js: the client itself, alone on its outbox
// directory (lock.js refuses a second one), with the same calls as the browser's tab
// coordinator (tabs.js) offers the API, and nothing to coordinate.

import { Driver } from "./device.js";
import { VdevError } from "./errors.js";
import { describe } from "./io.js";
import { forgetDirectory, openDirStore } from "./dir_store.js";
import { perform } from "./http.js";
import { openConnection } from "./net.js";

export class SoleOwner {
  /**
   * @param {any} config what `Core` is made from, with `database` (the directory) and `ca`
   * @param {string} database
   * @param {Record<string, ((...args: any[]) => void) | undefined>} callbacks
   * @param {(options: any) => any} makeCore
   * @param {(level: any, ...details: unknown[]) => void} log the app's logger
   */
  constructor(config, database, callbacks, makeCore, log) {
    this.config = config;
    this.database = database;
    this.callbacks = callbacks;
    this.log = log;
    this.makeCore = makeCore;
    /** @type {Driver | undefined} */
    this.driver = undefined;
    // Aborts the HTTP requests still running when the device has stopped.
    this.stopped = new AbortController();
  }

  async start() {
    const transport = this.config.transport ?? "tls";
    if (transport === "websocket" && !globalThis.WebSocket) {
      throw new VdevError(
        "invalidOption",
        `option transport: websocket needs Node.js 22 or later (this is ${process.version}); use "tls" or "tcp"`,
      );
    }
    const ca = this.config.ca;
    if (ca !== undefined && typeof ca !== "string" && !(ca instanceof Uint8Array)) {
      throw new VdevError("invalidOption", "option ca: must be PEM text or its bytes");
    }
    const { store, contents, recoveries } = await openDirStore(this.database);
    let core;
    try {
      const { ca: _, database: __, ...options } = this.config;
      core = this.makeCore({
        ...options,
        transport,
        ...contents,
        savedState: contents.state,
        now: Date.now(),
        random: crypto.getRandomValues(new Uint8Array(32)),
      });
    } catch (error) {
      store.close();
      throw error;
    }
    store.attach(core);
    for (const { file, validBytes, cutBytes, reason } of recoveries) {
      core.storeRecovered(Date.now(), file, validBytes, cutBytes, reason);
    }
    this.driver = new Driver(
      core,
      /** @type {any} */ (store),
      (name, args) => this.tell(name, args),
      () => {},
      {
        open: (output, on) => /** @type {any} */ (openConnection(output, on, ca)),
        perform: (request, now) => perform(request, now, ca, this.stopped.signal),
        log: this.log,
      },
    );
  }

  /**
   * Calls the app's callback `name`.
   * @param {string} name
   * @param {unknown[]} args
   */
  tell(name, args) {
    try {
      this.callbacks[name]?.(...args);
    } catch (error) {
      this.log("error", `${name} threw: ${describe(error)}`);
    }
  }

  /**
   * A call of the API, run on the device.
   * @param {any} request
   */
  call(request) {
    const driver = /** @type {Driver} */ (this.driver);
    switch (request.kind) {
      case "send":
        return driver.send(request.stream, request.what);
      case "reported":
        return driver.updateReported(request.patch);
      default:
        return Promise.resolve(driver.setOffline(request.value === true));
    }
  }

  snapshot() {
    return /** @type {Driver} */ (this.driver).snapshot();
  }

  waitSent() {
    return /** @type {Driver} */ (this.driver).waitSent();
  }

  stop() {
    return /** @type {Driver} */ (this.driver).stop().then(() => this.stopped.abort());
  }

  /** After `stop`: deletes what the device stored. */
  forget() {
    return forgetDirectory(this.database);
  }
}
