//! The driver's one timer (the core's next deadline: MQTT keep-alive, reconnect backoff, token
//! refresh, provisioning polls), kept on time in background tabs.
//!
//! Chrome throttles timers of hidden pages: to once a second at first and, after five minutes
//! hidden, chained timers to once a **minute** ("intensive wake-up throttling"). The core pings
//! the gateway one keep-alive interval (60 s) after its last packet and the gateway gives up
//! after 1.5 intervals (90 s), so a wake-up up to a minute late would lose the connection of a
//! tab left in the background; and no choice of keep-alive both survives minute-aligned
//! wake-ups (it would need a ping every < 30 s) and stays cheap. Dedicated workers are not
//! throttled that way, so the timer runs in a tiny worker (made from a `Blob` of three lines of
//! JavaScript, no extra file to ship) that posts a message back when it is due; messages are
//! ordinary tasks for the page and are not delayed by timer throttling. Where no worker can be
//! made (a Content Security Policy without `worker-src blob:`, an environment without
//! `Worker`, a worker that reports an `error`) it falls back to a page timer
//! (`runtime::Timeout`) — then throttling applies.
//!
//! A late or stale wake-up is harmless: the core's `handle_timeout` ignores early calls. So the
//! driver only ever moves the timer *earlier* ([`WakeTimer::ensure`]): the core's deadline moves
//! later with every packet (keep-alive, acknowledgement timeout), and re-arming the worker on
//! each of them cost a `postMessage` per message while a backlog drained.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::JsValue;
use web_sys::{Blob, BlobPropertyBag, Url, Worker};

use crate::runtime::{Listener, Timeout};

/// The worker's script: (re)arm on a delay in ms, disarm on a negative one.
const WORKER_SCRIPT: &str = "let t;onmessage=e=>{clearTimeout(t);\
if(e.data>=0)t=setTimeout(()=>postMessage(0),e.data)}";

/// One re-armable timer calling `fire` when due.
pub(crate) struct WakeTimer {
    fire: Rc<dyn Fn()>,
    /// When the armed timer fires (ms since the epoch); cleared when it fires.
    armed_at: Rc<Cell<Option<u64>>>,
    worker: Option<TimerWorker>,
    fallback: Option<Timeout>,
}

impl std::fmt::Debug for WakeTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeTimer")
            .field("in_worker", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

struct TimerWorker {
    worker: Worker,
    url: String,
    /// Set when the worker reported an error (e.g. its script was refused).
    broken: Rc<Cell<bool>>,
    _listeners: [Listener; 2],
}

impl TimerWorker {
    fn new(fire: Rc<dyn Fn()>) -> Result<Self, JsValue> {
        let options = BlobPropertyBag::new();
        options.set_type("text/javascript");
        let parts = Array::of1(&JsValue::from_str(WORKER_SCRIPT));
        let blob = Blob::new_with_str_sequence_and_options(&parts, &options)?;
        let url = Url::create_object_url_with_blob(&blob)?;
        let worker = match Worker::new(&url) {
            Ok(worker) => worker,
            Err(error) => {
                let _ = Url::revoke_object_url(&url);
                return Err(error);
            }
        };
        let broken = Rc::new(Cell::new(false));
        let on_message = {
            let fire = fire.clone();
            Listener::new(&worker, "message", move |_| fire())
        };
        // Firing makes the driver arm the timer again, which then moves to a page timer.
        let on_error = {
            let broken = broken.clone();
            Listener::new(&worker, "error", move |_| {
                broken.set(true);
                fire();
            })
        };
        Ok(Self {
            worker,
            url,
            broken,
            _listeners: [on_message, on_error],
        })
    }
}

impl Drop for TimerWorker {
    fn drop(&mut self) {
        self.worker.terminate();
        let _ = Url::revoke_object_url(&self.url);
    }
}

impl WakeTimer {
    /// A disarmed timer; in a worker when one can be made.
    pub(crate) fn new(fire: impl Fn() + 'static) -> Self {
        let armed_at = Rc::new(Cell::new(None));
        let fire: Rc<dyn Fn()> = {
            let armed_at = armed_at.clone();
            Rc::new(move || {
                armed_at.set(None);
                fire();
            })
        };
        Self {
            worker: TimerWorker::new(fire.clone()).ok(),
            fire,
            armed_at,
            fallback: None,
        }
    }

    /// Makes sure the timer fires no later than `deadline` (ms since the epoch). An earlier
    /// arming is kept, and so is an arming when there is no deadline: an early wake-up costs
    /// one ignored `handle_timeout`, a re-arming costs a message to the worker.
    pub(crate) fn ensure(&mut self, deadline: Option<u64>, now: u64) {
        let Some(deadline) = deadline else {
            return;
        };
        if self.armed_at.get().is_some_and(|at| at <= deadline) {
            return;
        }
        self.armed_at.set(Some(deadline));
        let wait = deadline.saturating_sub(now).min(i32::MAX as u64) as u32;
        self.arm(Some(wait));
    }

    /// Never fires (until armed again).
    pub(crate) fn disarm(&mut self) {
        self.armed_at.set(None);
        self.arm(None);
    }

    /// Fires in `wait_ms` (replacing any earlier arming), or never when `None`.
    fn arm(&mut self, wait_ms: Option<u32>) {
        if self.worker.as_ref().is_some_and(|timer| timer.broken.get()) {
            self.worker = None;
        }
        match &self.worker {
            Some(timer) => {
                let delay = wait_ms.map_or(-1.0, f64::from);
                if timer
                    .worker
                    .post_message(&JsValue::from_f64(delay))
                    .is_err()
                {
                    // A terminated worker: carry on with page timers.
                    self.worker = None;
                    self.arm(wait_ms);
                }
            }
            None => {
                self.fallback = wait_ms.map(|wait| {
                    let fire = self.fire.clone();
                    Timeout::new(wait, Box::new(move || fire()))
                });
            }
        }
    }
}
