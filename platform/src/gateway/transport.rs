//! Byte transports under MQTT sessions and the accept loops of the MQTT listeners.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{self, Transport};
use crate::state::AppState;

/// A byte stream (TCP or TLS over TCP).
#[derive(Debug)]
pub struct StreamTransport<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for StreamTransport<S> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }
}

/// MQTT over WebSocket: binary messages carry the MQTT byte stream.
#[derive(Debug)]
pub struct WebSocketTransport {
    socket: WebSocket,
    pending: Vec<u8>,
}

impl WebSocketTransport {
    /// Wrap an upgraded socket.
    pub fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            pending: Vec::new(),
        }
    }
}

impl Transport for WebSocketTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending.drain(..n);
                return Ok(n);
            }
            match self.socket.recv().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(bytes))) => self.pending.extend_from_slice(&bytes),
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frames are not mqtt",
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.socket
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .map_err(io::Error::other)
    }
}

/// Accept MQTT over plain TCP until shutdown.
pub async fn serve_tcp(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let connections = crate::state::OpenConnections::new(state.max_connections);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(counted) = connections.admit() else {
                    tracing::warn!(%peer, "mqtt connection refused: too many open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let session = session::run(
                    StreamTransport(stream),
                    state.clone(),
                    shutdown.clone(),
                    format!("tcp:{peer}"),
                );
                tasks.spawn(async move {
                    let _counted = counted;
                    session.await;
                });
            }
            Err(e) => {
                tracing::warn!(%e, "mqtt tcp accept failed");
                tokio::time::sleep(crate::http::ACCEPT_RETRY).await;
            }
        }
    }
}

/// Accept MQTT over TLS until shutdown.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let connections = crate::state::OpenConnections::new(state.max_connections);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(counted) = connections.admit() else {
                    tracing::warn!(%peer, "mqtt connection refused: too many open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let state = state.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let _counted = counted;
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            session::run(
                                StreamTransport(tls),
                                state,
                                shutdown,
                                format!("tls:{peer}"),
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::info!(%peer, %e, "tls handshake failed"),
                        Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%e, "mqtt tls accept failed");
                tokio::time::sleep(crate::http::ACCEPT_RETRY).await;
            }
        }
    }
}
