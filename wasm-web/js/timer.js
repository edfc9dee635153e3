// The driver's one timer (the core's next deadline: MQTT keep-alive, reconnect backoff, token
// refresh, provisioning polls), kept on time in background tabs.
//
// Chrome throttles timers of hidden pages: to once a second at first and, after five minutes
// hidden, chained timers to once a minute ("intensive wake-up throttling"). The core pings the
// gateway one keep-alive interval (60 s) after its last packet and the gateway gives up after
// 1.5 intervals, so a wake-up up to a minute late would lose the connection of a background tab.
// Dedicated workers are not throttled that way, so the timer runs in a tiny worker (made from a
// Blob, no extra file to ship) that posts a message back when it is due; messages are ordinary
// tasks for the page and are not delayed by timer throttling. Where no worker can be made (a
// Content Security Policy without `worker-src blob:`, no `Worker`, a worker that reports an
// error) it falls back to a page timer, and throttling applies.
//
// A late or stale wake-up is harmless: the core ignores an early `timeout`. So the timer is only
// ever moved earlier (`ensure`): the core's deadline moves later with every packet, and
// re-arming the worker on each of them would cost a `postMessage` per message of a backlog.

/** The worker's script: (re)arm on a delay in ms, disarm on a negative one. */
const WORKER_SCRIPT = "let t;onmessage=e=>{clearTimeout(t);if(e.data>=0)t=setTimeout(()=>postMessage(0),e.data)}";

export class WakeTimer {
  /**
   * A disarmed timer calling `fire` when due; in a worker when one can be made.
   * @param {() => void} fire
   */
  constructor(fire) {
    this.fire = () => {
      this.armedAt = undefined;
      fire();
    };
    try {
      this.url = URL.createObjectURL(new Blob([WORKER_SCRIPT], { type: "text/javascript" }));
      this.worker = new Worker(this.url);
      this.worker.onmessage = this.fire;
      // Firing makes the driver arm the timer again, which then goes to a page timer.
      this.worker.onerror = () => {
        this.dropWorker();
        this.fire();
      };
    } catch {
      this.dropWorker();
    }
  }

  /**
   * Makes sure the timer fires no later than `deadline` (ms since the epoch; null: no need).
   * @param {number | null} deadline
   * @param {number} now
   */
  ensure(deadline, now) {
    // A disarmed timer (`armedAt` undefined) compares false, so it is armed.
    if (deadline == null || /** @type {number} */ (this.armedAt) <= deadline) return;
    this.armedAt = deadline;
    this.arm(Math.min(Math.max(0, deadline - now), 2 ** 31 - 1));
  }

  /** Never fires (until armed again); also ends the worker. */
  disarm() {
    this.armedAt = undefined;
    this.arm(-1);
    this.dropWorker();
  }

  /**
   * Fires in `wait` ms, replacing an earlier arming; never when negative.
   * @param {number} wait
   */
  arm(wait) {
    clearTimeout(this.fallback);
    if (this.worker) {
      try {
        this.worker.postMessage(wait);
        return;
      } catch {
        this.dropWorker();
      }
    }
    if (wait >= 0) this.fallback = setTimeout(this.fire, wait);
  }

  dropWorker() {
    this.worker?.terminate();
    if (this.url) URL.revokeObjectURL(this.url);
    this.worker = this.url = undefined;
  }
}
