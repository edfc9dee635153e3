//! MQTT transport connections over the browser's `WebSocket` (subprotocol `mqtt`, binary
//! frames as `ArrayBuffer`). A [`Socket`] turns the socket's events into [`SocketEvent`]s for
//! the driver and closes the socket when dropped; its listeners go with it, so a connection the
//! core closed reports nothing more.

use std::rc::Rc;

use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::runtime::{Listener, check_url_allowed, describe};

/// What happened on a socket.
#[derive(Debug)]
pub(crate) enum SocketEvent {
    /// The connection is open.
    Opened,
    /// A binary message arrived.
    Data(Vec<u8>),
    /// The connection closed or could not be opened.
    Closed(String),
}

/// An open (or opening) WebSocket and its listeners.
#[derive(Debug)]
pub(crate) struct Socket {
    socket: WebSocket,
    _listeners: [Listener; 3],
}

impl Socket {
    /// Starts opening `url`; `notify` hears about it. Refuses `ws://` to a host that is not
    /// loopback: the MQTT password would travel in clear.
    pub(crate) fn open(url: &str, notify: Rc<dyn Fn(SocketEvent)>) -> Result<Self, String> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(format!("{url} is not a websocket url"));
        }
        check_url_allowed(url)?;
        let socket = WebSocket::new_with_str(url, "mqtt")
            .map_err(|error| format!("cannot open {url}: {}", describe(&error)))?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let notify = notify.clone();
            Listener::new(&socket, "open", move |_| notify(SocketEvent::Opened))
        };
        let on_message = {
            let notify = notify.clone();
            Listener::new(&socket, "message", move |event| {
                // A WebSocket's `message` events are `MessageEvent`s, its `close` events
                // `CloseEvent`s (the socket is this module's own: nothing else dispatches on it).
                let message: &MessageEvent = event.unchecked_ref();
                match message.data().dyn_into::<ArrayBuffer>().ok() {
                    Some(buffer) => notify(SocketEvent::Data(Uint8Array::new(&buffer).to_vec())),
                    None => notify(SocketEvent::Closed(
                        "the gateway sent a text frame; mqtt needs binary frames".into(),
                    )),
                }
            })
        };
        // An `error` event is always followed by `close`, which carries the details.
        let on_close = Listener::new(&socket, "close", move |event| {
            let close: &CloseEvent = event.unchecked_ref();
            let reason = if close.reason().is_empty() {
                format!("websocket closed (code {})", close.code())
            } else {
                format!(
                    "websocket closed (code {}: {})",
                    close.code(),
                    close.reason()
                )
            };
            notify(SocketEvent::Closed(reason));
        });
        Ok(Self {
            socket,
            _listeners: [on_open, on_message, on_close],
        })
    }

    /// Sends one binary message.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), String> {
        self.socket
            .send_with_u8_array(bytes)
            .map_err(|error| format!("websocket send failed: {}", describe(&error)))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Closing an already closed socket is a no-op; nothing to report either way.
        let _ = self.socket.close();
    }
}
