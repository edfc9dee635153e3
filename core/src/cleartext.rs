//! The cleartext rule: which URLs and endpoints the device may use without TLS.
//!
//! Tokens and credentials travel in every request and CONNECT, so `http://`, `ws://` and plain
//! MQTT over TCP are allowed only to loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`): a
//! stand-in Platform on the same machine. `https://` and `wss://` go anywhere. The core applies
//! the rule to everything it would reach — the configured instance URL, the gateway endpoints
//! and upload URLs the Platform announces — for every host alike; hosts follow no redirect, so
//! no URL the core did not check is ever reached.
//!
//! Written by hand: a URL parser crate would cost the browser bundle several kilobytes for the
//! one thing needed here, the host of an absolute URL.

use thiserror::Error;

/// A URL or endpoint the cleartext rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InsecureUrl {
    /// Cleartext (`http://`, `ws://`, plain TCP) to a host that is not loopback.
    #[error(
        "refusing unencrypted {0}: ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"
    )]
    Cleartext(String),
    /// Not an absolute URL with a scheme the device speaks.
    #[error(
        "unsupported url '{0}': expected https://, wss:// (or http://, ws:// to a loopback host)"
    )]
    Unsupported(String),
}

/// Checks `url` against the rule.
pub fn check_url(url: &str) -> Result<(), InsecureUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| InsecureUrl::Unsupported(url.to_owned()))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => true,
        "http" | "ws" => false,
        _ => return Err(InsecureUrl::Unsupported(url.to_owned())),
    };
    let host = url_host(rest).ok_or_else(|| InsecureUrl::Unsupported(url.to_owned()))?;
    if secure || is_loopback(host) {
        Ok(())
    } else {
        Err(InsecureUrl::Cleartext(url.to_owned()))
    }
}

/// Checks a plain (unencrypted) TCP endpoint's host against the rule.
pub(crate) fn check_plain_host(host: &str, port: u16) -> Result<(), InsecureUrl> {
    if is_loopback(host) {
        Ok(())
    } else {
        Err(InsecureUrl::Cleartext(format!("tcp://{host}:{port}")))
    }
}

/// The host of what follows `scheme://`: up to the path, query or fragment, after any
/// `user@`, without the port; `[..]` kept for IPv6 literals.
fn url_host(rest: &str) -> Option<&str> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

/// `localhost` (or a name under it), `127.0.0.0/8` written in dotted decimal, or `[::1]`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host == "[::1]" || host == "::1" {
        return true;
    }
    let mut octets = host.split('.');
    octets.next() == Some("127")
        && octets.clone().count() == 3
        && octets.all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u8>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_goes_anywhere_and_cleartext_only_to_loopback() {
        for ok in [
            "https://example.com",
            "wss://hub.example/$iothub/websocket",
            "http://127.0.0.1:8080",
            "http://127.1.2.3/x",
            "ws://localhost:9001/mqtt",
            "http://LOCALHOST./",
            "http://[::1]:80/path",
            "http://api.localhost:3000",
            "HTTP://127.0.0.1",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://example.com",
            "ws://10.0.0.5:8080/mqtt",
            "http://[::ffff:127.0.0.1]:80/",
            "http://127.0.0.1.example.com/",
            "http://127.0.0.1@example.com/",
            "http://0.0.0.0:9/",
            "http://1270.0.0.1/",
        ] {
            assert!(
                matches!(check_url(refused), Err(InsecureUrl::Cleartext(_))),
                "{refused}"
            );
        }
        for odd in ["example.com", "ftp://example.com", "http://", "file:///etc"] {
            assert!(
                matches!(check_url(odd), Err(InsecureUrl::Unsupported(_))),
                "{odd}"
            );
        }
    }

    #[test]
    fn a_fragment_or_userinfo_cannot_smuggle_a_loopback_host() {
        assert!(check_url("http://example.com#@127.0.0.1").is_err());
        assert!(check_url("http://example.com?@127.0.0.1").is_err());
        assert!(check_url("http://example.com/@127.0.0.1").is_err());
    }

    #[test]
    fn plain_tcp_is_checked_by_host() {
        assert_eq!(check_plain_host("127.0.0.1", 1883), Ok(()));
        assert_eq!(
            check_plain_host("broker.example", 1883)
                .unwrap_err()
                .to_string(),
            "refusing unencrypted tcp://broker.example:1883: ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"
        );
    }
}
