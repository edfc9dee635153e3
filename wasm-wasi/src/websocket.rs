//! MQTT over WebSocket inside the component: a `tungstenite` client (RFC 6455) on top of the
//! TCP stream or of the TLS session ([`crate::tls`]), for Platforms reached only on port 443
//! (`wss://<hub>/$iothub/websocket`, subprotocol `mqtt`).
//!
//! Sans-IO like the TLS layer: the driver hands it the bytes that came out of the layer below
//! and sends what it returns; it never touches a socket. `tungstenite` is written against
//! `Read + Write`, so it runs here on an in-memory [`Pipe`] whose reads say `WouldBlock` when
//! it is empty, the way its non-blocking users drive it. It was chosen over hand-written framing
//! because the parts that go wrong by hand (the upgrade check, fragmented and control frames,
//! pings while MQTT is idle, the close handshake, masking with fresh random keys) are its
//! tested core. Measured with `cargo build --release`: it adds 216 KB to the 3.0 MB library
//! component (`vdev_wasi.wasm`, +7%) and 136 KB to the 2.7 MB command (`vdev-device.wasm`),
//! which no budget limits outside the browser.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::HeaderValue;
use tungstenite::{Error, Message, WebSocket};

/// Bytes between the WebSocket and the layer below: what arrived and is not yet read, what
/// was written and not yet taken.
#[derive(Debug, Default)]
struct Pipe {
    incoming: VecDeque<u8>,
    outgoing: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() && !buf.is_empty() {
            // Not end of stream: the rest has not arrived yet.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.incoming.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Phase {
    /// The upgrade request is sent; the `101 Switching Protocols` answer is awaited.
    Upgrading(Box<MidHandshake<ClientHandshake<Pipe>>>),
    Open(Box<WebSocket<Pipe>>),
    /// Closed or failed; nothing more goes in or out.
    Done,
}

/// One WebSocket client connection carrying the MQTT byte stream.
#[derive(Debug)]
pub(crate) struct WebSocketSession {
    phase: Phase,
}

/// What the session made of bytes from the layer below.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The MQTT bytes of the binary messages that arrived.
    pub(crate) payload: Vec<u8>,
    /// Frames to send back (the pong to a ping, the close handshake's answer).
    pub(crate) to_send: Vec<u8>,
    /// True when this input completed the upgrade: the connection now carries MQTT.
    pub(crate) opened: bool,
    /// Why the Platform closed the connection, when it did.
    pub(crate) closed: Option<String>,
}

impl WebSocketSession {
    /// Starts the upgrade to `url` (`ws://` or `wss://`); the request is in
    /// [`WebSocketSession::take_outgoing`].
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("websocket url {url:?}: {e}"))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let phase = match tungstenite::client::client(request, Pipe::default()) {
            Ok((socket, _)) => Phase::Open(Box::new(socket)),
            Err(HandshakeError::Interrupted(mid)) => Phase::Upgrading(Box::new(mid)),
            Err(HandshakeError::Failure(e)) => return Err(upgrade_failure(e)),
        };
        Ok(Self { phase })
    }

    /// Bytes waiting to go to the layer below.
    pub(crate) fn take_outgoing(&mut self) -> Vec<u8> {
        match &mut self.phase {
            Phase::Upgrading(mid) => std::mem::take(&mut mid.get_mut().get_mut().outgoing),
            Phase::Open(socket) => std::mem::take(&mut socket.get_mut().outgoing),
            Phase::Done => Vec::new(),
        }
    }

    /// Frames MQTT bytes as one binary message; returns the bytes to send.
    pub(crate) fn send(&mut self, mqtt: &[u8]) -> Result<Vec<u8>, String> {
        let Phase::Open(socket) = &mut self.phase else {
            return Err("websocket is not open".into());
        };
        socket
            .send(Message::binary(mqtt.to_vec()))
            .map_err(|e| format!("websocket write: {e}"))?;
        Ok(self.take_outgoing())
    }

    /// Feeds bytes from the layer below. An error is a refused upgrade or a broken stream.
    pub(crate) fn receive(&mut self, bytes: &[u8]) -> Result<Received, String> {
        let mut received = Received::default();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Upgrading(mut mid) => {
                mid.get_mut().get_mut().incoming.extend(bytes);
                match mid.handshake() {
                    Ok((mut socket, _)) => {
                        // Bytes that came right behind the 101 answer stay in the pipe.
                        received.opened = true;
                        let left = std::mem::take(&mut socket.get_mut().incoming);
                        self.phase = Phase::Open(Box::new(socket));
                        let rest = self.receive(&Vec::from(left))?;
                        received.payload = rest.payload;
                        received.closed = rest.closed;
                    }
                    Err(HandshakeError::Interrupted(mid)) => {
                        self.phase = Phase::Upgrading(Box::new(mid));
                    }
                    Err(HandshakeError::Failure(e)) => return Err(upgrade_failure(e)),
                }
            }
            Phase::Open(mut socket) => {
                socket.get_mut().incoming.extend(bytes);
                loop {
                    match socket.read() {
                        Ok(Message::Binary(data)) => received.payload.extend_from_slice(&data),
                        Ok(Message::Text(_)) => {
                            return Err("websocket: a text message where MQTT is binary".into());
                        }
                        // Pings are answered by tungstenite itself (the pong is flushed below).
                        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                        Ok(Message::Close(frame)) => {
                            received.closed = Some(match frame {
                                Some(frame) if frame.reason.is_empty() => {
                                    format!("closed by the gateway (websocket code {})", frame.code)
                                }
                                Some(frame) => format!(
                                    "closed by the gateway (websocket code {}: {})",
                                    frame.code, frame.reason
                                ),
                                None => "closed by the gateway".to_owned(),
                            });
                        }
                        Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                            received
                                .closed
                                .get_or_insert_with(|| "closed by the gateway".into());
                            break;
                        }
                        Err(e) => return Err(format!("websocket: {e}")),
                    }
                }
                // Writes what `read` queued (a pong, the answer to a close).
                match socket.flush() {
                    Ok(()) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {}
                    Err(e) => return Err(format!("websocket write: {e}")),
                }
                received.to_send = std::mem::take(&mut socket.get_mut().outgoing);
                if received.closed.is_none() {
                    self.phase = Phase::Open(socket);
                }
            }
            Phase::Done => return Err("websocket is closed".into()),
        }
        if received.to_send.is_empty() {
            received.to_send = self.take_outgoing();
        }
        Ok(received)
    }

    /// The close frame to send before closing the stream below.
    pub(crate) fn close(&mut self) -> Vec<u8> {
        let Phase::Open(socket) = &mut self.phase else {
            return Vec::new();
        };
        let _ = socket.close(None);
        let bytes = std::mem::take(&mut socket.get_mut().outgoing);
        self.phase = Phase::Done;
        bytes
    }
}

/// Where a WebSocket URL connects: its host and port, and whether TLS comes first (`wss`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

/// Reads a `ws://` or `wss://` URL (port 80 or 443 when it names none).
pub(crate) fn target(url: &str) -> Result<Target, String> {
    let uri: tungstenite::http::Uri = url
        .parse()
        .map_err(|e| format!("websocket url {url:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(format!("websocket url {url:?}: not ws:// or wss://")),
    };
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("websocket url {url:?}: no host"))?;
    Ok(Target {
        // An IPv6 literal comes bracketed; the socket and the server name want it bare.
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        tls,
    })
}

fn upgrade_failure(error: Error) -> String {
    match error {
        Error::Http(response) => format!(
            "websocket upgrade refused: HTTP {}",
            response.status().as_u16()
        ),
        other => format!("websocket upgrade failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    //! Against tungstenite's server side over an in-memory pipe: the same library's other role,
    //! a real peer for framing, not a mock of the Platform (the integration tests in
    //! `tests/tests/wasi_*.rs` run against the stand-in).
    use super::*;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;

    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    fn server_accepting(request: Vec<u8>) -> (WebSocket<Pipe>, Vec<u8>) {
        let pipe = Pipe {
            incoming: request.into(),
            outgoing: Vec::new(),
        };
        let callback =
            |_: &tungstenite::handshake::server::Request,
             mut response: tungstenite::handshake::server::Response| {
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                Ok(response)
            };
        let mut server = tungstenite::accept_hdr(pipe, callback).expect("upgrade accepted");
        let answer = std::mem::take(&mut server.get_mut().outgoing);
        (server, answer)
    }

    fn exchange(server: &mut WebSocket<Pipe>, bytes: Vec<u8>) -> Vec<Vec<u8>> {
        server.get_mut().incoming.extend(bytes);
        let mut messages = Vec::new();
        loop {
            match server.read() {
                Ok(Message::Binary(data)) => messages.push(data.to_vec()),
                Ok(_) => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return messages,
                Err(e) => panic!("server read: {e}"),
            }
        }
    }

    #[test]
    fn upgrades_then_carries_mqtt_both_ways_and_answers_pings() {
        let mut client = WebSocketSession::new("wss://hub.example/$iothub/websocket").unwrap();
        let request = client.take_outgoing();
        let text = String::from_utf8_lossy(&request);
        assert!(
            text.starts_with("GET /$iothub/websocket HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("Host: hub.example\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{text}");
        assert!(
            client.send(b"early").is_err(),
            "nothing goes before the upgrade"
        );

        let (mut server, answer) = server_accepting(request);
        // The 101 answer and the first server frame in one read.
        server.send(Message::binary(vec![0x20, 2, 0, 0])).unwrap();
        let mut bytes = answer;
        bytes.extend(std::mem::take(&mut server.get_mut().outgoing));
        let received = client.receive(&bytes).unwrap();
        assert!(received.opened);
        assert_eq!(received.payload, [0x20, 2, 0, 0]);

        let frame = client.send(&[0x30, 3, 0, 1, b'a']).unwrap();
        assert_eq!(exchange(&mut server, frame), [vec![0x30, 3, 0, 1, b'a']]);

        // A ping split across two reads, then a fragmented binary message.
        server.send(Message::Ping(vec![7].into())).unwrap();
        let ping = std::mem::take(&mut server.get_mut().outgoing);
        let first = client.receive(&ping[..1]).unwrap();
        assert!(first.payload.is_empty() && first.to_send.is_empty());
        let pong = client.receive(&ping[1..]).unwrap().to_send;
        assert!(!pong.is_empty(), "a ping is answered");
        server.get_mut().incoming.extend(pong);
        assert!(matches!(server.read(), Ok(Message::Pong(p)) if p[..] == [7]));

        use tungstenite::protocol::frame::Frame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let first = Frame::message(vec![0x30, 4], OpCode::Data(Data::Binary), false);
        let last = Frame::message(vec![0, 1, b'b', b'c'], OpCode::Data(Data::Continue), true);
        server.send(Message::Frame(first)).unwrap();
        server.send(Message::Frame(last)).unwrap();
        let fragments = std::mem::take(&mut server.get_mut().outgoing);
        let received = client.receive(&fragments).unwrap();
        assert_eq!(received.payload, [0x30, 4, 0, 1, b'b', b'c']);
    }

    #[test]
    fn a_refused_upgrade_and_a_close_say_why() {
        let mut client = WebSocketSession::new("ws://127.0.0.1:1/$iothub/websocket").unwrap();
        client.take_outgoing();
        let refused = client
            .receive(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .unwrap_err();
        assert_eq!(refused, "websocket upgrade refused: HTTP 404");

        let mut client = WebSocketSession::new("ws://127.0.0.1:1/$iothub/websocket").unwrap();
        let (mut server, answer) = server_accepting(client.take_outgoing());
        assert!(client.receive(&answer).unwrap().opened);
        server
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "token expired".into(),
            }))
            .unwrap();
        let close = std::mem::take(&mut server.get_mut().outgoing);
        let received = client.receive(&close).unwrap();
        assert_eq!(
            received.closed.as_deref(),
            Some("closed by the gateway (websocket code 1008: token expired)")
        );
        assert!(!received.to_send.is_empty(), "the close is answered");
        assert!(
            client.send(b"late").is_err(),
            "nothing goes after the close"
        );
    }

    #[test]
    fn urls_name_host_port_and_tls() {
        let hub = target("wss://hub.example/$iothub/websocket").unwrap();
        assert_eq!(
            (hub.host.as_str(), hub.port, hub.tls),
            ("hub.example", 443, true)
        );
        let local = target("ws://[::1]:8081/mqtt").unwrap();
        assert_eq!(
            (local.host.as_str(), local.port, local.tls),
            ("::1", 8081, false)
        );
        assert!(
            target("https://hub.example/")
                .unwrap_err()
                .contains("not ws:// or wss://")
        );
        assert!(target("not a url").is_err());
    }

    #[test]
    fn closing_sends_a_close_frame_and_nothing_after_it() {
        let mut client = WebSocketSession::new("ws://127.0.0.1:1/$iothub/websocket").unwrap();
        let (mut server, answer) = server_accepting(client.take_outgoing());
        assert!(client.receive(&answer).unwrap().opened);
        let close = client.close();
        server.get_mut().incoming.extend(close);
        assert!(matches!(server.read(), Ok(Message::Close(_))));
        assert!(client.send(b"late").is_err());
        assert!(client.close().is_empty());
    }

    #[test]
    fn text_where_mqtt_is_binary_is_an_error() {
        let mut client = WebSocketSession::new("ws://127.0.0.1:1/$iothub/websocket").unwrap();
        let (mut server, answer) = server_accepting(client.take_outgoing());
        client.receive(&answer).unwrap();
        server.send(Message::text("hello")).unwrap();
        let text = std::mem::take(&mut server.get_mut().outgoing);
        assert!(client.receive(&text).unwrap_err().contains("text message"));
    }
}
