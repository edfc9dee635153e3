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

use crate::prelude::*;

use crate::text::Describe;

/// A URL or endpoint the cleartext rule refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsecureUrl {
    /// Cleartext (`http://`, `ws://`, plain TCP) to a host that is not loopback.
    Cleartext(String),
    /// Not an absolute URL with a scheme the device speaks.
    Unsupported(String),
}

impl Describe for InsecureUrl {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Cleartext(endpoint) => put!(
                out,
                "refusing unencrypted ",
                endpoint,
                ": ws://, http:// and plain tcp are allowed only for loopback hosts, use wss://, https:// or tls"
            ),
            Self::Unsupported(url) => put!(
                out,
                "unsupported url '",
                url,
                "': expected https://, wss:// (or http://, ws:// to a loopback host)"
            ),
        }
    }
}

described!(InsecureUrl);

/// Checks `url` against the rule.
pub fn check_url(url: &str) -> Result<(), InsecureUrl> {
    let unsupported = || InsecureUrl::Unsupported(url.to_owned());
    // Byte searches: `str::split_once` with a string pattern links the two-way string searcher
    // (about 1.4 KB of the browser module) for this one call.
    let bytes = url.as_bytes();
    let at = bytes
        .windows(3)
        .position(|w| w == b"://")
        .ok_or_else(unsupported)?;
    let (scheme, rest) = (&bytes[..at], &bytes[at + 3..]);
    let secure = if scheme.eq_ignore_ascii_case(b"https") || scheme.eq_ignore_ascii_case(b"wss") {
        true
    } else if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"ws") {
        false
    } else {
        return Err(unsupported());
    };
    let host = url_host(rest).ok_or_else(unsupported)?;
    if secure || is_loopback(host) {
        Ok(())
    } else {
        Err(InsecureUrl::Cleartext(url.to_owned()))
    }
}

/// Checks a plain (unencrypted) TCP endpoint's host against the rule.
pub(crate) fn check_plain_host(host: &str, port: u16) -> Result<(), InsecureUrl> {
    if is_loopback(host.as_bytes()) {
        Ok(())
    } else {
        Err(InsecureUrl::Cleartext(text!("tcp://", host, ':', port)))
    }
}

/// The host of what follows `scheme://`: up to the path, query or fragment, after any
/// `user@`, without the port; `[..]` kept for IPv6 literals.
fn url_host(rest: &[u8]) -> Option<&[u8]> {
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if host_port.first() == Some(&b'[') {
        &host_port[..=host_port.iter().position(|&b| b == b']')?]
    } else {
        let colon = host_port.iter().position(|&b| b == b':');
        &host_port[..colon.unwrap_or(host_port.len())]
    };
    (!host.is_empty()).then_some(host)
}

/// `localhost` (or a name under it), `127.0.0.0/8` written in dotted decimal, or `[::1]`.
fn is_loopback(host: &[u8]) -> bool {
    let host = host.strip_suffix(b".").unwrap_or(host);
    const LOCALHOST: &[u8] = b"localhost";
    let under_localhost = host.len() > LOCALHOST.len()
        && host[host.len() - LOCALHOST.len() - 1] == b'.'
        && host[host.len() - LOCALHOST.len()..].eq_ignore_ascii_case(LOCALHOST);
    if host.eq_ignore_ascii_case(LOCALHOST) || under_localhost || host == b"[::1]" || host == b"::1"
    {
        return true;
    }
    let mut octets = host.split(|&b| b == b'.');
    octets.next() == Some(b"127") && {
        let rest: [Option<&[u8]>; 4] = [octets.next(), octets.next(), octets.next(), octets.next()];
        rest[3].is_none() && rest[..3].iter().all(|octet| octet.is_some_and(is_octet))
    }
}

/// 0 to 255 in 1 to 3 decimal digits.
fn is_octet(digits: &[u8]) -> bool {
    (1..=3).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
            <= 255
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
