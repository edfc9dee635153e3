//! The IoT Hub dialect of MQTT outside the twin: every topic the device publishes or subscribes
//! to and every endpoint default, in one place.
//!
//! This module owns the telemetry topic (`devices/<ws>:<dev>/messages/events/<bag>`), the
//! subscriptions made on every connection (the twin's answers and desired patches, and
//! cloud-to-device messages on `devices/<id>/messages/devicebound/#`), reading the property bag
//! of a cloud-to-device topic, the endpoints a stand-in Platform announces ([`GatewayEndpoints`])
//! and where to connect when it announces none: TLS on 8883, `wss://<host>/$iothub/websocket`,
//! uploads on `https://<host>`. It depends on no sub-machine (the credential's module uses it). The topics the
//! twin publishes and reads (`$iothub/twin/...`) are built and parsed in `twin/topics.rs`.

use crate::prelude::*;

use crate::config::Transport;
use crate::json::{self, Object};
use crate::mqtt::codec::QoS;
use crate::mqtt::session::Endpoint;

/// The port of MQTT over TLS when the Platform announces none.
const DEFAULT_TLS_PORT: u16 = 8883;
/// The api-version the IoT Hub MQTT dialect expects at the end of the username.
pub(crate) const MQTT_API_VERSION: &str = "2018-06-30";

/// The topic a telemetry message is published on, with its URL-encoded property bag.
pub(crate) fn telemetry_topic(workspace_id: &str, device_id: &str, bag: &str) -> String {
    text!(
        "devices/",
        workspace_id,
        ':',
        device_id,
        "/messages/events/",
        bag
    )
}

/// The subscriptions of every connection of client `client_id` (`<workspace>:<device>`): the
/// twin's answers and desired patches at QoS 0, cloud-to-device messages at QoS 1.
pub(crate) fn subscriptions(client_id: &str) -> Vec<(String, QoS)> {
    vec![
        ("$iothub/twin/res/#".into(), QoS::AtMostOnce),
        (
            "$iothub/twin/PATCH/properties/desired/#".into(),
            QoS::AtMostOnce,
        ),
        (
            text!("devices/", client_id, "/messages/devicebound/#"),
            QoS::AtLeastOnce,
        ),
    ]
}

/// The property bag of a cloud-to-device topic, `devices/<id>/messages/devicebound/<bag>`.
pub(crate) fn cloud_to_device_properties(topic: &str) -> Option<&str> {
    // A byte-window search: `str::split_once` with a string pattern links the two-way string
    // searcher (1.4 KB of the browser module) for this one call.
    const MARKER: &[u8] = b"/devicebound/";
    let at = topic
        .as_bytes()
        .windows(MARKER.len())
        .position(|window| window == MARKER)?;
    topic.get(at + MARKER.len()..)
}

/// Extra endpoints announced by a stand-in Platform; a real instance announces none and the
/// IoT Hub defaults apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayEndpoints {
    /// `host:port` of plain MQTT over TCP.
    pub mqtt_tcp: Option<String>,
    /// `host:port` of MQTT over TLS.
    pub mqtt_tls: Option<String>,
    /// URL of MQTT over WebSocket.
    pub web_socket: Option<String>,
    /// Base URL of the device HTTP endpoints (file upload).
    pub http: Option<String>,
}

impl GatewayEndpoints {
    /// The `gatewayEndpoints` object of a registration answer.
    pub(crate) fn parse(object: &Object) -> Result<Self, String> {
        Ok(Self {
            mqtt_tcp: json::optional_string(object, "mqttTcp")?,
            mqtt_tls: json::optional_string(object, "mqttTls")?,
            web_socket: json::optional_string(object, "webSocket")?,
            http: json::optional_string(object, "http")?,
        })
    }
}

/// Where to open the MQTT connection over `transport`: the endpoint the Platform announced, or
/// the IoT Hub default on the credential's host `host_name`. Plain TCP without an announced
/// endpoint falls back to TLS.
pub(crate) fn endpoint_for(
    host_name: &str,
    endpoints: &GatewayEndpoints,
    transport: Transport,
) -> Endpoint {
    let tls = || {
        endpoints
            .mqtt_tls
            .as_deref()
            .and_then(split_host_port)
            .map(|(host, port)| Endpoint::Tls { host, port })
            .unwrap_or_else(|| Endpoint::Tls {
                host: unbracketed(host_name).to_owned(),
                port: DEFAULT_TLS_PORT,
            })
    };
    match transport {
        Transport::Tcp => endpoints
            .mqtt_tcp
            .as_deref()
            .and_then(split_host_port)
            .map(|(host, port)| Endpoint::Tcp { host, port })
            .unwrap_or_else(tls),
        Transport::Tls => tls(),
        Transport::WebSocket => Endpoint::WebSocket {
            url: endpoints
                .web_socket
                .clone()
                .unwrap_or_else(|| text!("wss://", host_name, "/$iothub/websocket")),
        },
    }
}

/// The base URL of the device's file-upload endpoints when the Platform announces none.
pub(crate) fn default_upload_base(host_name: &str) -> String {
    text!("https://", host_name)
}

/// `host:port` (the host possibly in brackets) split in two.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((unbracketed(host).to_owned(), port.parse().ok()?))
}

/// An IPv6 literal without the brackets a URL puts around it; any other host as it is.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts_come_without_ipv6_brackets() {
        assert_eq!(split_host_port("[::1]:1883"), Some(("::1".into(), 1883)));
        assert_eq!(
            split_host_port("127.0.0.1:8883"),
            Some(("127.0.0.1".into(), 8883))
        );
        assert_eq!(split_host_port("hub.example:x"), None);
        assert_eq!(unbracketed("[::1]"), "::1");
        assert_eq!(unbracketed("[::1"), "[::1", "not a bracketed literal");
        assert_eq!(unbracketed("hub.example"), "hub.example");
    }

    #[test]
    fn cloud_to_device_topics_give_their_property_bag() {
        let topic = "devices/ws:dev-1/messages/devicebound/%24.mid=7&color=red";
        assert_eq!(
            cloud_to_device_properties(topic),
            Some("%24.mid=7&color=red")
        );
        assert_eq!(
            cloud_to_device_properties("devices/d/messages/devicebound/"),
            Some("")
        );
        assert_eq!(
            cloud_to_device_properties("devices/d/messages/events/"),
            None
        );
        assert_eq!(cloud_to_device_properties("/devicebound"), None);
    }
}
