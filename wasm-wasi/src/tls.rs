//! TLS for MQTT inside the component: a rustls client session on top of a `wasi:sockets` TCP
//! stream, with the pure-Rust `rustls-rustcrypto` provider (the C-based providers do not build
//! for `wasm32-wasip2` here). Trusted roots are the Mozilla set (`webpki-roots`) plus, when
//! configured, the certificates of a PEM file (a private CA such as the stand-in Platform's).
//!
//! Sans-IO like the core: the driver hands it the bytes read from the socket and sends what it
//! returns; it never touches the socket itself.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The client configuration shared by every connection of a device.
pub(crate) fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| format!("tls ca file: {e}"))?;
            roots
                .add(certificate)
                .map_err(|e| format!("tls ca file: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("tls ca file: no certificate in it".into());
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One client session.
#[derive(Debug)]
pub(crate) struct TlsSession {
    connection: ClientConnection,
}

/// What the session made of bytes from the socket.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Application bytes for the core.
    pub(crate) plaintext: Vec<u8>,
    /// TLS records to send back (handshake, alerts).
    pub(crate) to_send: Vec<u8>,
}

impl TlsSession {
    /// Starts a session to `host`; the ClientHello is in [`TlsSession::take_outgoing`].
    pub(crate) fn new(config: Arc<ClientConfig>, host: &str) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("tls server name {host:?}: {e}"))?;
        let connection = ClientConnection::new(config, name).map_err(|e| format!("tls: {e}"))?;
        Ok(Self { connection })
    }

    /// True until the handshake is done.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.connection.is_handshaking()
    }

    /// TLS records waiting to be sent.
    pub(crate) fn take_outgoing(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.connection.wants_write() {
            if self.connection.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// Encrypts application bytes; returns the records to send.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        self.connection
            .writer()
            .write_all(plaintext)
            .map_err(|e| format!("tls write: {e}"))?;
        Ok(self.take_outgoing())
    }

    /// Feeds bytes read from the socket; an error is a broken or refused session.
    pub(crate) fn receive(&mut self, mut bytes: &[u8]) -> Result<Received, String> {
        let mut received = Received::default();
        while !bytes.is_empty() {
            self.connection
                .read_tls(&mut bytes)
                .map_err(|e| format!("tls read: {e}"))?;
            self.connection
                .process_new_packets()
                .map_err(|e| format!("tls: {e}"))?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match self.connection.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => received.plaintext.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("tls read: {e}")),
                }
            }
        }
        received.to_send = self.take_outgoing();
        Ok(received)
    }

    /// The close_notify alert to send before closing.
    pub(crate) fn close(&mut self) -> Vec<u8> {
        self.connection.send_close_notify();
        self.take_outgoing()
    }
}
