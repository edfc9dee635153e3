//! What the browser gives the driver besides sockets, HTTP and storage: the clock, random
//! bytes, timers and event listeners, the rule about unencrypted connections, and the console
//! for errors nobody awaits.
//!
//! Timers and listeners are hand-written rather than gloo's, for the bundle's size (see
//! [`Timeout`] and [`Listener`]).
//!
//! Everything goes through the global object (`globalThis`), not `window`, so the same code
//! runs in a page and in a worker.

use std::future::Future;
use std::pin::Pin;

use js_sys::{Promise, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::{Event, EventTarget};

#[wasm_bindgen]
extern "C" {
    /// JavaScript's `String(value)`: how the console would show a thrown non-`Error` value.
    #[wasm_bindgen(js_name = String)]
    fn js_string(value: &JsValue) -> String;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, delay_ms: u32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// Calls a function once after a delay, unless dropped first: gloo's `Timeout` with a boxed
/// callback, so that one closure type serves every caller (gloo's `Closure::once` is compiled
/// anew for each call site's closure).
pub(crate) struct Timeout {
    id: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `callback` in `delay_ms` milliseconds.
    pub(crate) fn new(delay_ms: u32, callback: Box<dyn FnOnce()>) -> Self {
        let mut callback = Some(callback);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(callback) = callback.take() {
                callback();
            }
        });
        Self {
            id: set_timeout(callback.as_ref().unchecked_ref(), delay_ms),
            _callback: callback,
        }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        // Clearing a timer that already fired is a no-op.
        clear_timeout(&self.id);
    }
}

/// An event listener, removed when dropped: what gloo-events' `EventListener` does, without
/// its options object (every listener here is a plain bubbling one) and its thread-locals.
pub(crate) struct Listener {
    target: EventTarget,
    event_type: &'static str,
    callback: Closure<dyn FnMut(Event)>,
}

impl Listener {
    /// Calls `callback` with every `event_type` event of `target`.
    pub(crate) fn new(
        target: &EventTarget,
        event_type: &'static str,
        callback: impl FnMut(&Event) + 'static,
    ) -> Self {
        let mut callback = callback;
        let callback = Closure::<dyn FnMut(Event)>::new(move |event: Event| callback(&event));
        // Only throws for a callback that is not a function.
        let _ =
            target.add_event_listener_with_callback(event_type, callback.as_ref().unchecked_ref());
        Self {
            target: target.clone(),
            event_type,
            callback,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.target.remove_event_listener_with_callback(
            self.event_type,
            self.callback.as_ref().unchecked_ref(),
        );
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.event_type)
    }
}

/// Runs `future` to completion on the page's event loop.
///
/// The future is boxed first so that wasm-bindgen-futures' task machinery is compiled once
/// for `Pin<Box<dyn Future>>` instead of once per future type (about 3 KB of the bundle).
pub(crate) fn spawn(future: impl Future<Output = ()> + 'static) {
    let future: Pin<Box<dyn Future<Output = ()>>> = Box::pin(future);
    wasm_bindgen_futures::spawn_local(future);
}

/// A `Promise` settled by `future`; boxed for the same reason as [`spawn`].
pub(crate) fn promise(future: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let future: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>> = Box::pin(future);
    wasm_bindgen_futures::future_to_promise(future)
}

/// Milliseconds since the Unix epoch, the core's notion of time.
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// `N` bytes from `crypto.getRandomValues`.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    // No `instanceof Crypto` check (an import and a JS shim more): an object without
    // `getRandomValues` makes the call below throw, which is reported.
    let crypto: web_sys::Crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .ok()
        .filter(JsValue::is_object)
        .ok_or("this environment has no crypto.getRandomValues")?
        .unchecked_into();
    let mut bytes = [0u8; N];
    crypto
        .get_random_values_with_u8_array(&mut bytes)
        .map_err(|error| format!("crypto.getRandomValues failed: {}", describe(&error)))?;
    Ok(bytes)
}

/// Whether `host` (as `URL.hostname` gives it) is a loopback address: `localhost`,
/// 127.0.0.0/8 or `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host == "::1" || is_loopback_ipv4(host)
}

/// Whether `host` is a dotted-quad IPv4 address in 127.0.0.0/8 (`URL.hostname` writes every
/// IPv4 form this way). Checked by hand: `Ipv4Addr`'s parser costs 1.5 KB of the bundle.
fn is_loopback_ipv4(host: &str) -> bool {
    let mut parts = 0;
    for part in host.split('.') {
        let in_range = part.len() <= 3
            && !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0')) <= 255;
        if !in_range || (parts == 0 && part != "127") {
            return false;
        }
        parts += 1;
    }
    parts == 4
}

/// Refuses URLs that would carry tokens unencrypted off this machine: `ws://` and `http://` are
/// allowed for loopback hosts only; `wss://` and `https://` anywhere.
pub(crate) fn check_url_allowed(url: &str) -> Result<(), String> {
    let parsed = web_sys::Url::new(url).map_err(|_| format!("'{url}' is not a valid url"))?;
    match parsed.protocol().as_str() {
        "wss:" | "https:" => Ok(()),
        "ws:" | "http:" if is_loopback_host(&parsed.hostname()) => Ok(()),
        "ws:" | "http:" => Err(format!(
            "refusing unencrypted {url}: ws:// and http:// are allowed only for loopback hosts, use wss:// or https://"
        )),
        other => Err(format!("unsupported url scheme '{other}' in {url}")),
    }
}

/// A readable description of a thrown JavaScript value (an `Error`, a `DOMException`, ...).
pub(crate) fn describe(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", error.name(), error.message());
    }
    if let Some(exception) = value.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", exception.name(), exception.message());
    }
    js_string(value)
}

/// Reports an error that has no caller to return to (an app callback threw, storage keeps failing).
pub(crate) fn console_error(message: &str) {
    web_sys::console::error_2(&JsValue::from_str("vdev:"), &JsValue::from_str(message));
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.3.2.1",
            "[::1]",
            "::1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1",
            "128.0.0.1",
            "[::2]",
            "localhost.example",
            "127.0.0",
            "127.0.0.1.2",
            "127.0.0.256",
            "127.0.0.1000",
            "127..0.1",
            "127.0.0.",
            "127.0.0.+1",
            "1127.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
