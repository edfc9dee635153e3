//! MQTT 3.1.1 packet codec: turns the packets a device and its gateway exchange into bytes and
//! back, with the strict validation the spec asks of both sides.
//!
//! It is hand-written rather than taken from an MQTT crate because it ships in the browser wasm
//! bundle, where every kilobyte counts, and because vdev needs only a small subset of MQTT: QoS 0
//! and 1, no will message, and the eleven packet types of [`Packet`]. QoS 2 (on PUBLISH, in
//! SUBSCRIBE/SUBACK and the PUBREC/PUBREL/PUBCOMP packets) is rejected with a clear error.
//!
//! Both directions are decoded: the device decodes what the gateway sends, and the simulator's
//! fake broker decodes what the device sends. [`decode`] is incremental: it returns `Ok(None)` on a
//! partial packet and checks the size limit from the fixed header alone, so a host can keep bytes
//! in a buffer and call it again when more arrive, without buffering an oversized packet first.
//!
//! CONNECT decoding parses and validates a will (topic, message, will QoS and retain flags) and then
//! drops it, because [`Connect`] has no will: the device never sends one, and a peer that does is
//! still speaking valid MQTT. Any will QoS the spec allows (0 to 2) is accepted for that reason.
//! Re-encoding such a CONNECT therefore yields different bytes. Everything else is canonical: a
//! packet that decodes re-encodes to exactly the bytes it came from.

use crate::prelude::*;

use crate::text::{Describe, Hex};

/// Largest remaining length MQTT can express (four bytes of variable-length integer).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

const PROTOCOL_NAME: &str = "MQTT";
const PROTOCOL_LEVEL_3_1_1: u8 = 4;

const FLAG_CLEAN_SESSION: u8 = 0b0000_0010;
const FLAG_WILL: u8 = 0b0000_0100;
const FLAG_WILL_QOS: u8 = 0b0001_1000;
const FLAG_WILL_RETAIN: u8 = 0b0010_0000;
const FLAG_PASSWORD: u8 = 0b0100_0000;
const FLAG_USERNAME: u8 = 0b1000_0000;

const SUBACK_FAILURE: u8 = 0x80;

/// Delivery guarantee of a PUBLISH or a subscription. vdev supports QoS 0 and 1 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    /// QoS 0: fire and forget.
    AtMostOnce,
    /// QoS 1: acknowledged by PUBACK, may arrive more than once.
    AtLeastOnce,
}

impl QoS {
    fn bits(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
        }
    }

    fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Err(DecodeError::UnsupportedQoS),
            other => Err(DecodeError::InvalidQoS(other)),
        }
    }
}

/// Outcome of a connection attempt, carried by CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted,
    /// 1: the server does not support MQTT 3.1.1.
    UnacceptableProtocolVersion,
    /// 2: the client identifier is not allowed.
    IdentifierRejected,
    /// 3: the MQTT service is unavailable.
    ServerUnavailable,
    /// 4: the user name or password is malformed.
    BadUserNameOrPassword,
    /// 5: the client is not authorized to connect (for example an expired token).
    NotAuthorized,
}

impl ConnectReturnCode {
    /// What the code means, in the words of the MQTT 3.1.1 specification (§3.2.2.3).
    pub fn reason(self) -> &'static str {
        match self {
            ConnectReturnCode::Accepted => "connection accepted",
            ConnectReturnCode::UnacceptableProtocolVersion => "unacceptable protocol version",
            ConnectReturnCode::IdentifierRejected => "identifier rejected",
            ConnectReturnCode::ServerUnavailable => "server unavailable",
            ConnectReturnCode::BadUserNameOrPassword => "bad user name or password",
            ConnectReturnCode::NotAuthorized => "not authorized",
        }
    }

    /// The code as it travels in CONNACK (0–5).
    pub fn code(self) -> u8 {
        match self {
            ConnectReturnCode::Accepted => 0,
            ConnectReturnCode::UnacceptableProtocolVersion => 1,
            ConnectReturnCode::IdentifierRejected => 2,
            ConnectReturnCode::ServerUnavailable => 3,
            ConnectReturnCode::BadUserNameOrPassword => 4,
            ConnectReturnCode::NotAuthorized => 5,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUserNameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            other => return Err(DecodeError::InvalidConnectReturnCode(other)),
        })
    }
}

/// CONNECT: the first packet a client sends. It carries no will (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Client identifier; may be empty (the server then decides whether to accept it).
    pub client_id: String,
    /// User name, if any.
    pub username: Option<String>,
    /// Password bytes; MQTT 3.1.1 allows a password only together with a user name.
    pub password: Option<Vec<u8>>,
    /// Keep-alive interval in seconds; 0 turns keep-alive off.
    pub keep_alive_secs: u16,
    /// Whether the server should discard any previous session state.
    pub clean_session: bool,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server kept session state from an earlier connection (never set on refusal).
    pub session_present: bool,
    /// Whether the connection was accepted, and if not, why.
    pub code: ConnectReturnCode,
}

/// PUBLISH: an application message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic name: non-empty, without the `+` and `#` wildcards.
    pub topic: String,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Packet id, present exactly when `qos` is [`QoS::AtLeastOnce`]; never 0.
    pub packet_id: Option<u16>,
    /// Set on a redelivery; only allowed with QoS 1.
    pub dup: bool,
    /// Whether the server should retain the message for future subscribers.
    pub retain: bool,
    /// Application payload, possibly empty.
    pub payload: Vec<u8>,
}

/// SUBSCRIBE: one or more topic filters with the maximum QoS asked for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id, echoed by the SUBACK; never 0.
    pub packet_id: u16,
    /// Topic filters (non-empty, may contain wildcards) with their requested QoS; at least one.
    pub filters: Vec<(String, QoS)>,
}

/// Per-filter result in a SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubAckCode {
    /// The subscription was accepted with this maximum QoS.
    Granted(QoS),
    /// The subscription was refused (return code 0x80).
    Failure,
}

/// SUBACK: the server's answer to SUBSCRIBE, one code per filter in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet id of the SUBSCRIBE being answered; never 0.
    pub packet_id: u16,
    /// One code per requested filter; at least one.
    pub codes: Vec<SubAckCode>,
}

/// One MQTT 3.1.1 control packet of the subset vdev speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client asks to open a session.
    Connect(Connect),
    /// Server answers CONNECT.
    ConnAck(ConnAck),
    /// Application message.
    Publish(Publish),
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck {
        /// Packet id of the PUBLISH being acknowledged; never 0.
        packet_id: u16,
    },
    /// Client subscribes to topic filters.
    Subscribe(Subscribe),
    /// Server answers SUBSCRIBE.
    SubAck(SubAck),
    /// Client removes subscriptions.
    Unsubscribe {
        /// Packet id, echoed by the UNSUBACK; never 0.
        packet_id: u16,
        /// Topic filters to remove; at least one, each non-empty.
        filters: Vec<String>,
    },
    /// Server answers UNSUBSCRIBE.
    UnsubAck {
        /// Packet id of the UNSUBSCRIBE being answered; never 0.
        packet_id: u16,
    },
    /// Client keep-alive probe.
    PingReq,
    /// Server answer to PINGREQ.
    PingResp,
    /// Client closes the session cleanly.
    Disconnect,
}

/// Why a packet could not be encoded. Nothing is appended to the output when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field does not fit the two-byte length prefix.
    FieldTooLong {
        /// Which field (for example "topic" or "password").
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A string contains U+0000, which MQTT forbids in every string.
    NullCharacter {
        /// Which field.
        field: &'static str,
    },
    /// A topic name or topic filter is empty; MQTT requires at least one character.
    EmptyTopic {
        /// Which field.
        field: &'static str,
    },
    /// A PUBLISH topic contains `+` or `#`, which only subscriptions may use.
    WildcardInTopic(String),
    /// A packet id is 0, which MQTT reserves.
    PacketIdZero,
    /// A PUBLISH has a packet id with QoS 0, or none with QoS 1.
    PacketIdQoSMismatch,
    /// A QoS 0 PUBLISH has the dup flag set.
    DupWithoutQoS,
    /// A CONNECT has a password but no user name, which MQTT 3.1.1 does not allow.
    PasswordWithoutUsername,
    /// A CONNACK refusing the connection claims a session is present.
    SessionPresentOnRefusal,
    /// A SUBSCRIBE, SUBACK or UNSUBSCRIBE has no entries.
    EmptyList {
        /// Which packet ("subscribe", "suback" or "unsubscribe").
        packet: &'static str,
    },
    /// The packet does not fit the MQTT size limit.
    PacketTooLarge {
        /// Remaining length the packet would need.
        size: usize,
    },
}

impl Describe for EncodeError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::FieldTooLong { field, len } => put!(
                out,
                field,
                " is ",
                len,
                " bytes, longer than the 65,535 bytes mqtt allows"
            ),
            Self::NullCharacter { field } => put!(
                out,
                field,
                " contains the character u+0000, which mqtt forbids"
            ),
            Self::EmptyTopic { field } => put!(
                out,
                field,
                " is empty, but mqtt topics and filters need at least one character"
            ),
            Self::WildcardInTopic(topic) => put!(
                out,
                "publish topic '",
                topic,
                "' contains a wildcard (+ or #)"
            ),
            Self::PacketIdZero => put!(out, "packet id 0 is not allowed"),
            Self::PacketIdQoSMismatch => put!(
                out,
                "a publish needs a packet id exactly when its qos is at least once"
            ),
            Self::DupWithoutQoS => put!(out, "the dup flag is only allowed on a qos 1 publish"),
            Self::PasswordWithoutUsername => {
                put!(out, "a password needs a user name in mqtt 3.1.1")
            }
            Self::SessionPresentOnRefusal => put!(
                out,
                "a connack that refuses the connection cannot report a session present"
            ),
            Self::EmptyList { packet } => put!(out, packet, " must carry at least one entry"),
            Self::PacketTooLarge { size } => put!(
                out,
                "packet body of ",
                size,
                " bytes is larger than the 268,435,455-byte mqtt limit"
            ),
        }
    }
}

described!(EncodeError);

/// Why bytes could not be decoded into a [`Packet`]. Every error means the stream is unusable:
/// MQTT has no resynchronisation, so the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet type nibble is 0 or 15, which MQTT reserves.
    UnknownPacketType(u8),
    /// PUBREC, PUBREL or PUBCOMP: the QoS 2 flow, which vdev does not support.
    UnsupportedPacketType(u8),
    /// The low nibble of the first byte is not what the packet type requires.
    InvalidFixedHeaderFlags {
        /// Packet type nibble.
        packet_type: u8,
        /// Flags nibble as received.
        flags: u8,
    },
    /// The remaining length continues past its fourth byte.
    RemainingLengthTooLong,
    /// The remaining length uses more bytes than its value needs.
    RemainingLengthNotMinimal,
    /// The whole packet (fixed header included) is larger than the caller's limit.
    PacketTooLarge {
        /// Size of the whole packet as declared by its fixed header.
        size: usize,
        /// The limit passed to [`decode`].
        max: usize,
    },
    /// The declared remaining length ends in the middle of a field (or is too short for the type).
    BodyTooShort,
    /// Bytes are left within the declared remaining length after the last field.
    TrailingBytes(usize),
    /// A string field is not valid UTF-8.
    InvalidUtf8,
    /// A string field contains U+0000.
    NullCharacter,
    /// A topic name or topic filter is empty.
    EmptyTopic,
    /// A PUBLISH (or will) topic contains `+` or `#`.
    WildcardInTopic(String),
    /// A packet id is 0, which MQTT reserves.
    PacketIdZero,
    /// A QoS value of 3, which MQTT does not define.
    InvalidQoS(u8),
    /// QoS 2 on a PUBLISH, SUBSCRIBE or SUBACK; vdev supports QoS 0 and 1 only.
    UnsupportedQoS,
    /// A QoS 0 PUBLISH has the dup flag set.
    DupWithoutQoS,
    /// CONNECT does not start with the protocol name "MQTT".
    InvalidProtocolName,
    /// CONNECT asks for a protocol level other than 4 (MQTT 3.1.1). A server answers this
    /// with [`ConnectReturnCode::UnacceptableProtocolVersion`].
    UnsupportedProtocolLevel(u8),
    /// CONNECT flags are inconsistent: reserved bit set, will QoS or retain without a will,
    /// or a password without a user name.
    InvalidConnectFlags(u8),
    /// CONNACK flags have reserved bits set, or report a session present on a refusal.
    InvalidConnAckFlags(u8),
    /// CONNACK return code above 5.
    InvalidConnectReturnCode(u8),
    /// SUBSCRIBE requested-QoS byte with reserved bits set.
    InvalidSubscriptionOptions(u8),
    /// SUBACK return code other than 0x00, 0x01, 0x02 or 0x80.
    InvalidSubAckCode(u8),
    /// A SUBSCRIBE, SUBACK or UNSUBSCRIBE has no entries.
    EmptyList {
        /// Which packet ("subscribe", "suback" or "unsubscribe").
        packet: &'static str,
    },
}

impl Describe for DecodeError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::UnknownPacketType(packet_type) => put!(out, "unknown packet type ", packet_type),
            Self::UnsupportedPacketType(packet_type) => put!(
                out,
                "packet type ",
                packet_type,
                " belongs to the qos 2 flow, which is not supported"
            ),
            Self::InvalidFixedHeaderFlags { packet_type, flags } => put!(
                out,
                "fixed header flags ",
                Hex(*flags),
                " are wrong for packet type ",
                packet_type
            ),
            Self::RemainingLengthTooLong => put!(out, "remaining length is longer than 4 bytes"),
            Self::RemainingLengthNotMinimal => {
                put!(out, "remaining length is not minimally encoded")
            }
            Self::PacketTooLarge { size, max } => put!(
                out,
                "packet of ",
                size,
                " bytes is larger than the ",
                max,
                "-byte limit"
            ),
            Self::BodyTooShort => put!(
                out,
                "declared remaining length is shorter than the packet's fields"
            ),
            Self::TrailingBytes(count) => put!(
                out,
                "declared remaining length leaves ",
                count,
                " unexpected bytes after the packet's fields"
            ),
            Self::InvalidUtf8 => put!(out, "string is not valid utf-8"),
            Self::NullCharacter => put!(
                out,
                "string contains the character u+0000, which mqtt forbids"
            ),
            Self::EmptyTopic => put!(out, "topic name or filter is empty"),
            Self::WildcardInTopic(topic) => put!(
                out,
                "publish topic '",
                topic,
                "' contains a wildcard (+ or #)"
            ),
            Self::PacketIdZero => put!(out, "packet id 0 is not allowed"),
            Self::InvalidQoS(qos) => put!(out, "invalid qos ", qos),
            Self::UnsupportedQoS => put!(out, "qos 2 is not supported"),
            Self::DupWithoutQoS => put!(out, "the dup flag is set on a qos 0 publish"),
            Self::InvalidProtocolName => put!(out, "connect protocol name is not \"MQTT\""),
            Self::UnsupportedProtocolLevel(level) => put!(
                out,
                "connect protocol level ",
                level,
                " is not supported (only 4, mqtt 3.1.1)"
            ),
            Self::InvalidConnectFlags(flags) => {
                put!(out, "connect flags ", Hex(*flags), " are invalid")
            }
            Self::InvalidConnAckFlags(flags) => {
                put!(out, "connack flags ", Hex(*flags), " are invalid")
            }
            Self::InvalidConnectReturnCode(code) => put!(out, "invalid connack return code ", code),
            Self::InvalidSubscriptionOptions(options) => put!(
                out,
                "subscribe options byte ",
                Hex(*options),
                " has reserved bits set"
            ),
            Self::InvalidSubAckCode(code) => put!(out, "invalid suback return code ", Hex(*code)),
            Self::EmptyList { packet } => put!(out, packet, " must carry at least one entry"),
        }
    }
}

described!(DecodeError);

impl Packet {
    /// The packet type's name as the specification writes it (`"CONNACK"`), for messages
    /// that should not print a whole packet.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck { .. } => "PUBACK",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe { .. } => "UNSUBSCRIBE",
            Packet::UnsubAck { .. } => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect => "DISCONNECT",
        }
    }

    /// Appends the encoded packet to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        // The body is written first and the fixed header inserted in front of it afterwards,
        // because the header's size depends on the body's.
        let first_byte = match self.encode_body(out) {
            Ok(first_byte) => first_byte,
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        };
        let remaining = out.len() - start;
        if remaining > MAX_REMAINING_LENGTH {
            out.truncate(start);
            return Err(EncodeError::PacketTooLarge { size: remaining });
        }
        let mut header = [first_byte, 0, 0, 0, 0];
        let header_len = 1 + write_remaining_length(remaining, &mut header[1..]);
        let header = &header[..header_len];
        // Make room in front of the body and put the header there (a plain move: `splice`
        // would do the same, with far more code in the browser bundle).
        out.extend_from_slice(header);
        out.copy_within(start..start + remaining, start + header.len());
        out[start..start + header.len()].copy_from_slice(header);
        Ok(())
    }

    /// Writes the variable header and payload; returns the fixed header's first byte.
    fn encode_body(&self, out: &mut Vec<u8>) -> Result<u8, EncodeError> {
        Ok(match self {
            Packet::Connect(connect) => {
                encode_connect(connect, out)?;
                CONNECT << 4
            }
            Packet::ConnAck(connack) => {
                let refused = connack.code != ConnectReturnCode::Accepted;
                if refused && connack.session_present {
                    return Err(EncodeError::SessionPresentOnRefusal);
                }
                out.extend([u8::from(connack.session_present), connack.code.code()]);
                CONNACK << 4
            }
            Packet::Publish(publish) => encode_publish(publish, out)?,
            Packet::PubAck { packet_id } => {
                write_packet_id(*packet_id, out)?;
                PUBACK << 4
            }
            Packet::Subscribe(subscribe) => {
                write_packet_id(subscribe.packet_id, out)?;
                if subscribe.filters.is_empty() {
                    return Err(EncodeError::EmptyList {
                        packet: "subscribe",
                    });
                }
                for (filter, qos) in &subscribe.filters {
                    write_topic("topic filter", filter, out)?;
                    out.push(qos.bits());
                }
                SUBSCRIBE << 4 | 0b0010
            }
            Packet::SubAck(suback) => {
                write_packet_id(suback.packet_id, out)?;
                if suback.codes.is_empty() {
                    return Err(EncodeError::EmptyList { packet: "suback" });
                }
                out.extend(suback.codes.iter().map(|code| match code {
                    SubAckCode::Granted(qos) => qos.bits(),
                    SubAckCode::Failure => SUBACK_FAILURE,
                }));
                SUBACK << 4
            }
            Packet::Unsubscribe { packet_id, filters } => {
                write_packet_id(*packet_id, out)?;
                if filters.is_empty() {
                    return Err(EncodeError::EmptyList {
                        packet: "unsubscribe",
                    });
                }
                for filter in filters {
                    write_topic("topic filter", filter, out)?;
                }
                UNSUBSCRIBE << 4 | 0b0010
            }
            Packet::UnsubAck { packet_id } => {
                write_packet_id(*packet_id, out)?;
                UNSUBACK << 4
            }
            Packet::PingReq => PINGREQ << 4,
            Packet::PingResp => PINGRESP << 4,
            Packet::Disconnect => DISCONNECT << 4,
        })
    }
}

fn encode_connect(connect: &Connect, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if connect.password.is_some() && connect.username.is_none() {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    let mut flags = 0;
    if connect.clean_session {
        flags |= FLAG_CLEAN_SESSION;
    }
    if connect.username.is_some() {
        flags |= FLAG_USERNAME;
    }
    if connect.password.is_some() {
        flags |= FLAG_PASSWORD;
    }
    write_string("protocol name", PROTOCOL_NAME, out)?;
    out.extend([PROTOCOL_LEVEL_3_1_1, flags]);
    out.extend(connect.keep_alive_secs.to_be_bytes());
    write_string("client id", &connect.client_id, out)?;
    if let Some(username) = &connect.username {
        write_string("user name", username, out)?;
    }
    if let Some(password) = &connect.password {
        write_binary("password", password, out)?;
    }
    Ok(())
}

/// Writes a PUBLISH body; returns its fixed header's first byte.
fn encode_publish(publish: &Publish, out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    if publish.topic.contains(['+', '#']) {
        return Err(EncodeError::WildcardInTopic(publish.topic.clone()));
    }
    if publish.dup && publish.qos == QoS::AtMostOnce {
        return Err(EncodeError::DupWithoutQoS);
    }
    write_topic("topic", &publish.topic, out)?;
    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtLeastOnce, Some(packet_id)) => write_packet_id(packet_id, out)?,
        _ => return Err(EncodeError::PacketIdQoSMismatch),
    }
    out.extend_from_slice(&publish.payload);
    let flags = u8::from(publish.dup) << 3 | publish.qos.bits() << 1 | u8::from(publish.retain);
    Ok(PUBLISH << 4 | flags)
}

fn write_packet_id(packet_id: u16, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::PacketIdZero);
    }
    out.extend(packet_id.to_be_bytes());
    Ok(())
}

fn write_topic(field: &'static str, topic: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if topic.is_empty() {
        return Err(EncodeError::EmptyTopic { field });
    }
    write_string(field, topic, out)
}

fn write_string(field: &'static str, value: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if value.contains('\0') {
        return Err(EncodeError::NullCharacter { field });
    }
    write_binary(field, value.as_bytes(), out)
}

fn write_binary(field: &'static str, value: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: value.len(),
    })?;
    out.extend(len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Writes `value` (at most [`MAX_REMAINING_LENGTH`]) as a variable-length integer into
/// `out`, which has room for four bytes; returns how many bytes it used.
fn write_remaining_length(mut value: usize, out: &mut [u8]) -> usize {
    let mut used = 0;
    loop {
        // Truncation is the point: the low seven bits go into this byte.
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out[used] = byte;
        used += 1;
        if value == 0 {
            return used;
        }
    }
}

#[cfg(test)]
/// Number of bytes the variable-length integer for `remaining` takes (4 for anything larger
/// than MQTT allows).
fn remaining_length_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
/// Bytes a PUBLISH with this topic and payload length occupies on the wire. The topic length is in UTF-8 bytes. Sizes beyond the MQTT limit, which cannot be
/// encoded, give a result above [`MAX_REMAINING_LENGTH`] (saturating at `usize::MAX`).
pub fn publish_wire_len(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let packet_id_len: usize = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 2,
    };
    let remaining = (2 + packet_id_len)
        .saturating_add(topic_len)
        .saturating_add(payload_len);
    remaining.saturating_add(1 + remaining_length_len(remaining))
}

/// Decodes one packet from the front of `buf`. `Ok(None)`: more bytes are needed (a partial
/// packet). `Ok(Some((packet, consumed)))` on success, where `consumed` is the size of the whole
/// packet. Err on malformed input or a packet whose size (fixed header included) exceeds
/// `max_packet_size`, checked from the fixed header alone, before the body arrives. The first
/// byte's type and flags are checked as soon as it arrives.
pub fn decode(buf: &[u8], max_packet_size: usize) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first_byte >> 4;
    let flags = first_byte & 0x0F;
    check_fixed_header(packet_type, flags)?;
    let Some((remaining, length_len)) = read_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + length_len + remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    check_fixed_body_len(packet_type, remaining)?;
    let Some(body) = buf.get(1 + length_len..size) else {
        return Ok(None);
    };
    let packet = decode_body(packet_type, flags, body)?;
    Ok(Some((packet, size)))
}

fn check_fixed_header(packet_type: u8, flags: u8) -> Result<(), DecodeError> {
    let expected_flags = match packet_type {
        PUBLISH => {
            let qos = QoS::from_bits((flags >> 1) & 0b11)?;
            if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
                return Err(DecodeError::DupWithoutQoS);
            }
            return Ok(());
        }
        PUBREC..=PUBCOMP => return Err(DecodeError::UnsupportedPacketType(packet_type)),
        SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        CONNECT | CONNACK | PUBACK | SUBACK | UNSUBACK | PINGREQ | PINGRESP | DISCONNECT => 0,
        _ => return Err(DecodeError::UnknownPacketType(packet_type)),
    };
    if flags != expected_flags {
        return Err(DecodeError::InvalidFixedHeaderFlags { packet_type, flags });
    }
    Ok(())
}

/// Rejects a wrong remaining length for fixed-size packets before their body arrives.
fn check_fixed_body_len(packet_type: u8, remaining: usize) -> Result<(), DecodeError> {
    let expected = match packet_type {
        CONNACK | PUBACK | UNSUBACK => 2,
        PINGREQ | PINGRESP | DISCONNECT => 0,
        _ => return Ok(()),
    };
    match remaining.cmp(&expected) {
        core::cmp::Ordering::Less => Err(DecodeError::BodyTooShort),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(DecodeError::TrailingBytes(remaining - expected)),
    }
}

/// Reads the variable-length remaining length; `Ok(None)` if it is not complete yet.
/// Returns the value and how many bytes encoded it.
fn read_remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if index == 4 {
            break;
        }
        value |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A zero final byte after the first means a shorter encoding existed.
            if index > 0 && byte == 0 {
                return Err(DecodeError::RemainingLengthNotMinimal);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::RemainingLengthTooLong);
    }
    Ok(None)
}

fn decode_body(packet_type: u8, flags: u8, body: &[u8]) -> Result<Packet, DecodeError> {
    let mut reader = Reader { bytes: body };
    let packet = match packet_type {
        CONNECT => Packet::Connect(decode_connect(&mut reader)?),
        CONNACK => {
            let ack_flags = reader.u8()?;
            let code = ConnectReturnCode::from_byte(reader.u8()?)?;
            let refused_with_session = code != ConnectReturnCode::Accepted && ack_flags != 0;
            if ack_flags > 1 || refused_with_session {
                return Err(DecodeError::InvalidConnAckFlags(ack_flags));
            }
            Packet::ConnAck(ConnAck {
                session_present: ack_flags == 1,
                code,
            })
        }
        PUBLISH => Packet::Publish(decode_publish(flags, &mut reader)?),
        PUBACK => Packet::PubAck {
            packet_id: reader.packet_id()?,
        },
        SUBSCRIBE => Packet::Subscribe(decode_subscribe(&mut reader)?),
        SUBACK => Packet::SubAck(decode_suback(&mut reader)?),
        UNSUBSCRIBE => {
            let packet_id = reader.packet_id()?;
            let mut filters = Vec::new();
            while !reader.is_empty() {
                filters.push(reader.topic()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::EmptyList {
                    packet: "unsubscribe",
                });
            }
            Packet::Unsubscribe { packet_id, filters }
        }
        UNSUBACK => Packet::UnsubAck {
            packet_id: reader.packet_id()?,
        },
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        // check_fixed_header has already rejected every other type.
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    reader.finish()?;
    Ok(packet)
}

fn decode_connect(reader: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    if reader.binary()? != PROTOCOL_NAME.as_bytes() {
        return Err(DecodeError::InvalidProtocolName);
    }
    let level = reader.u8()?;
    if level != PROTOCOL_LEVEL_3_1_1 {
        return Err(DecodeError::UnsupportedProtocolLevel(level));
    }
    let flags = reader.u8()?;
    let has_will = flags & FLAG_WILL != 0;
    let will_qos = (flags & FLAG_WILL_QOS) >> 3;
    let reserved_set = flags & 0b1 != 0;
    let will_details_without_will = !has_will && flags & (FLAG_WILL_QOS | FLAG_WILL_RETAIN) != 0;
    let password_without_username = flags & FLAG_PASSWORD != 0 && flags & FLAG_USERNAME == 0;
    if reserved_set || will_details_without_will || password_without_username {
        return Err(DecodeError::InvalidConnectFlags(flags));
    }
    if will_qos == 3 {
        return Err(DecodeError::InvalidQoS(will_qos));
    }
    let keep_alive_secs = reader.u16()?;
    let client_id = reader.string()?;
    if has_will {
        // Validated, then dropped: `Connect` carries no will (see the module doc).
        let will_topic = reader.topic()?;
        reject_wildcards(&will_topic)?;
        reader.binary()?;
    }
    let username = match flags & FLAG_USERNAME {
        0 => None,
        _ => Some(reader.string()?),
    };
    let password = match flags & FLAG_PASSWORD {
        0 => None,
        _ => Some(reader.binary()?.to_vec()),
    };
    Ok(Connect {
        client_id,
        username,
        password,
        keep_alive_secs,
        clean_session: flags & FLAG_CLEAN_SESSION != 0,
    })
}

fn decode_publish(flags: u8, reader: &mut Reader<'_>) -> Result<Publish, DecodeError> {
    // check_fixed_header has already validated the QoS bits and the dup/QoS combination.
    let qos = QoS::from_bits((flags >> 1) & 0b11)?;
    let topic = reader.topic()?;
    reject_wildcards(&topic)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(reader.packet_id()?),
    };
    Ok(Publish {
        topic,
        qos,
        packet_id,
        dup: flags & 0b1000 != 0,
        retain: flags & 0b0001 != 0,
        payload: reader.rest().to_vec(),
    })
}

fn decode_subscribe(reader: &mut Reader<'_>) -> Result<Subscribe, DecodeError> {
    let packet_id = reader.packet_id()?;
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.topic()?;
        let options = reader.u8()?;
        if options & !0b11 != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(options));
        }
        filters.push((filter, QoS::from_bits(options)?));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyList {
            packet: "subscribe",
        });
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_suback(reader: &mut Reader<'_>) -> Result<SubAck, DecodeError> {
    let packet_id = reader.packet_id()?;
    let codes = reader
        .rest()
        .iter()
        .map(|&code| match code {
            SUBACK_FAILURE => Ok(SubAckCode::Failure),
            0..=2 => QoS::from_bits(code).map(SubAckCode::Granted),
            other => Err(DecodeError::InvalidSubAckCode(other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if codes.is_empty() {
        return Err(DecodeError::EmptyList { packet: "suback" });
    }
    Ok(SubAck { packet_id, codes })
}

fn reject_wildcards(topic: &str) -> Result<(), DecodeError> {
    if topic.contains(['+', '#']) {
        return Err(DecodeError::WildcardInTopic(topic.to_owned()));
    }
    Ok(())
}

/// Cursor over a packet body whose every read fails with [`DecodeError::BodyTooShort`] instead
/// of running past the declared remaining length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::BodyTooShort);
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&[byte], rest) = self
            .bytes
            .split_first_chunk()
            .ok_or(DecodeError::BodyTooShort)?;
        self.bytes = rest;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let (&bytes, rest) = self
            .bytes
            .split_first_chunk()
            .ok_or(DecodeError::BodyTooShort)?;
        self.bytes = rest;
        Ok(u16::from_be_bytes(bytes))
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::PacketIdZero),
            packet_id => Ok(packet_id),
        }
    }

    fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let text = core::str::from_utf8(self.binary()?).map_err(|_| DecodeError::InvalidUtf8)?;
        if text.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(text.to_owned())
    }

    fn topic(&mut self) -> Result<String, DecodeError> {
        let topic = self.string()?;
        if topic.is_empty() {
            return Err(DecodeError::EmptyTopic);
        }
        Ok(topic)
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            left => Err(DecodeError::TrailingBytes(left)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_LIMIT: usize = usize::MAX;

    fn encode(packet: &Packet) -> Vec<u8> {
        let mut out = Vec::new();
        packet.encode(&mut out).expect("test packet is valid");
        out
    }

    fn decode_all(bytes: &[u8]) -> Packet {
        let (packet, consumed) = decode(bytes, NO_LIMIT)
            .expect("valid bytes")
            .expect("complete packet");
        assert_eq!(consumed, bytes.len());
        packet
    }

    /// Asserts that `packet` encodes to exactly `bytes` and that `bytes` decode back to it.
    fn assert_vector(packet: Packet, bytes: &[u8]) {
        assert_eq!(encode(&packet), bytes, "encoding of {packet:?}");
        assert_eq!(decode_all(bytes), packet);
    }

    fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &[u8]) -> Packet {
        Packet::Publish(Publish {
            topic: topic.to_owned(),
            qos,
            packet_id,
            dup: false,
            retain: false,
            payload: payload.to_vec(),
        })
    }

    fn decode_err(bytes: &[u8]) -> DecodeError {
        decode(bytes, NO_LIMIT).expect_err("bytes are malformed")
    }

    fn encode_err(packet: &Packet) -> EncodeError {
        let mut out = vec![0xAA];
        let error = packet.encode(&mut out).expect_err("packet is invalid");
        assert_eq!(out, [0xAA], "a failed encode must not touch the output");
        error
    }

    #[test]
    fn connect_with_username_and_password_matches_spec_layout() {
        let connect = Packet::Connect(Connect {
            client_id: "dev".into(),
            username: Some("u".into()),
            password: Some(b"pw".to_vec()),
            keep_alive_secs: 10,
            clean_session: true,
        });
        #[rustfmt::skip]
        let bytes = [
            0x10, 22,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0b1100_0010, 0x00, 0x0A,
            0x00, 0x03, b'd', b'e', b'v',
            0x00, 0x01, b'u',
            0x00, 0x02, b'p', b'w',
        ];
        assert_vector(connect, &bytes);
    }

    #[test]
    fn connect_minimal_has_no_optional_fields() {
        let connect = Packet::Connect(Connect {
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_secs: 0,
            clean_session: false,
        });
        #[rustfmt::skip]
        let bytes = [
            0x10, 12,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        assert_vector(connect, &bytes);
    }

    #[test]
    fn connect_will_from_spec_example_flags_is_parsed_and_dropped() {
        // Flags 0xCE and keep-alive 10 are the spec's example (section 3.1.2.10).
        #[rustfmt::skip]
        let bytes = [
            0x10, 29,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A,
            0x00, 0x01, b'c',
            0x00, 0x03, b'a', b'/', b'w',
            0x00, 0x03, b'b', b'y', b'e',
            0x00, 0x01, b'u',
            0x00, 0x01, b'p',
        ];
        let expected = Packet::Connect(Connect {
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            keep_alive_secs: 10,
            clean_session: true,
        });
        assert_eq!(decode_all(&bytes), expected);
    }

    #[test]
    fn connect_will_must_be_valid_even_though_it_is_dropped() {
        #[rustfmt::skip]
        let will = [
            0x10, 17,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x04, 0x00, 0x00,
            0x00, 0x00,
            0x00, 0x01, b'w',
            0x00, 0x00,
        ];
        let expected = Packet::Connect(Connect {
            client_id: String::new(),
            username: None,
            password: None,
            keep_alive_secs: 0,
            clean_session: false,
        });
        assert_eq!(decode_all(&will), expected);
        let mut wildcard_topic = will;
        wildcard_topic[16] = b'#';
        assert_eq!(
            decode_err(&wildcard_topic),
            DecodeError::WildcardInTopic("#".into())
        );
        let empty_topic = [&will[..14], &[0x00, 0x00, 0x00, 0x00]].concat();
        let mut empty_topic = empty_topic;
        empty_topic[1] = 16;
        assert_eq!(decode_err(&empty_topic), DecodeError::EmptyTopic);
        let mut will_qos_3 = will;
        will_qos_3[9] = 0b0001_1100;
        assert_eq!(decode_err(&will_qos_3), DecodeError::InvalidQoS(3));
        // The will message's length prefix is cut off by the declared length.
        let mut no_will_message = will;
        no_will_message[1] = 16;
        assert_eq!(
            decode_err(&no_will_message[..18]),
            DecodeError::BodyTooShort
        );
    }

    #[test]
    fn connect_rejects_bad_protocol_and_flags() {
        let good = encode(&Packet::Connect(Connect {
            client_id: "c".into(),
            username: None,
            password: None,
            keep_alive_secs: 60,
            clean_session: true,
        }));
        let with = |index: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[index] = byte;
            decode_err(&bytes)
        };
        assert_eq!(with(5, b'X'), DecodeError::InvalidProtocolName);
        assert_eq!(with(8, 3), DecodeError::UnsupportedProtocolLevel(3));
        assert_eq!(with(8, 5), DecodeError::UnsupportedProtocolLevel(5));
        assert_eq!(with(9, 0b11), DecodeError::InvalidConnectFlags(0b11));
        // Will QoS and will retain without the will flag.
        assert_eq!(with(9, 0b1010), DecodeError::InvalidConnectFlags(0b1010));
        assert_eq!(
            with(9, 0b10_0010),
            DecodeError::InvalidConnectFlags(0b10_0010)
        );
        // Password without user name.
        assert_eq!(
            with(9, 0b100_0010),
            DecodeError::InvalidConnectFlags(0b100_0010)
        );
        // MQTT 3.1's "MQIsdp" name is not accepted.
        #[rustfmt::skip]
        let mqtt_3_1 = [
            0x10, 15, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
            0x00, 0x01, b'c',
        ];
        assert_eq!(decode_err(&mqtt_3_1), DecodeError::InvalidProtocolName);
    }

    #[test]
    fn bytes_past_the_last_field_are_rejected() {
        let mut connect = encode(&Packet::Connect(Connect {
            client_id: "c".into(),
            username: None,
            password: None,
            keep_alive_secs: 60,
            clean_session: true,
        }));
        connect[1] += 1;
        connect.push(0);
        assert_eq!(decode_err(&connect), DecodeError::TrailingBytes(1));
        // A user name flag with no user name, and a cut-off user name.
        let mut missing_username = encode(&Packet::Connect(Connect {
            client_id: "c".into(),
            username: Some("user".into()),
            password: None,
            keep_alive_secs: 60,
            clean_session: true,
        }));
        missing_username[1] -= 6;
        missing_username.truncate(missing_username.len() - 6);
        assert_eq!(decode_err(&missing_username), DecodeError::BodyTooShort);
        missing_username[1] += 3;
        missing_username.extend([0x00, 0x04, b'u']);
        assert_eq!(decode_err(&missing_username), DecodeError::BodyTooShort);
    }

    #[test]
    fn connack_vectors() {
        let accepted = |session_present| {
            Packet::ConnAck(ConnAck {
                session_present,
                code: ConnectReturnCode::Accepted,
            })
        };
        assert_vector(accepted(false), &[0x20, 0x02, 0x00, 0x00]);
        assert_vector(accepted(true), &[0x20, 0x02, 0x01, 0x00]);
        let codes = [
            ConnectReturnCode::UnacceptableProtocolVersion,
            ConnectReturnCode::IdentifierRejected,
            ConnectReturnCode::ServerUnavailable,
            ConnectReturnCode::BadUserNameOrPassword,
            ConnectReturnCode::NotAuthorized,
        ];
        for (byte, code) in (1..).zip(codes) {
            let refusal = Packet::ConnAck(ConnAck {
                session_present: false,
                code,
            });
            assert_vector(refusal, &[0x20, 0x02, 0x00, byte]);
        }
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x00, 0x06]),
            DecodeError::InvalidConnectReturnCode(6)
        );
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x02, 0x00]),
            DecodeError::InvalidConnAckFlags(2)
        );
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x01, 0x05]),
            DecodeError::InvalidConnAckFlags(1)
        );
        let refused_with_session = Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::NotAuthorized,
        });
        assert_eq!(
            encode_err(&refused_with_session),
            EncodeError::SessionPresentOnRefusal
        );
    }

    #[test]
    fn publish_vectors_follow_spec_example_topic_and_packet_id() {
        // Topic "a/b" and packet id 10 are the spec's example (section 3.3.2.3).
        #[rustfmt::skip]
        let qos1 = [
            0x32, 9, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ];
        assert_vector(publish("a/b", QoS::AtLeastOnce, Some(10), b"hi"), &qos1);
        let qos0 = [0x30, 5, 0x00, 0x03, b'a', b'/', b'b'];
        assert_vector(publish("a/b", QoS::AtMostOnce, None, b""), &qos0);
        let flagged = Packet::Publish(Publish {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            packet_id: Some(0xFFFF),
            dup: true,
            retain: true,
            payload: vec![0],
        });
        assert_vector(flagged, &[0x3B, 6, 0x00, 0x01, b't', 0xFF, 0xFF, 0x00]);
    }

    #[test]
    fn utf8_string_vector_from_spec() {
        // "A\u{2A6D4}" encodes as 00 05 41 F0 AA 9B 94 (spec section 1.5.3, figure 1.3).
        let bytes = [0x30, 7, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
        assert_vector(publish("A\u{2A6D4}", QoS::AtMostOnce, None, b""), &bytes);
    }

    #[test]
    fn publish_rejections() {
        // QoS bits 2 and 3.
        assert_eq!(decode_err(&[0x34]), DecodeError::UnsupportedQoS);
        assert_eq!(decode_err(&[0x36]), DecodeError::InvalidQoS(3));
        assert_eq!(decode_err(&[0x38]), DecodeError::DupWithoutQoS);
        assert_eq!(
            decode_err(&[0x30, 5, 0x00, 0x03, b'a', b'/', b'#']),
            DecodeError::WildcardInTopic("a/#".into())
        );
        assert_eq!(
            decode_err(&[0x30, 5, 0x00, 0x03, b'+', b'/', b'b']),
            DecodeError::WildcardInTopic("+/b".into())
        );
        assert_eq!(decode_err(&[0x30, 2, 0x00, 0x00]), DecodeError::EmptyTopic);
        assert_eq!(
            decode_err(&[0x32, 5, 0x00, 0x01, b't', 0x00, 0x00]),
            DecodeError::PacketIdZero
        );
        assert_eq!(
            decode_err(&[0x32, 4, 0x00, 0x01, b't', 0x00]),
            DecodeError::BodyTooShort
        );
        assert_eq!(
            decode_err(&[0x30, 4, 0x00, 0x02, 0xC3, 0x28]),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            decode_err(&[0x30, 3, 0x00, 0x01, 0x00]),
            DecodeError::NullCharacter
        );
    }

    #[test]
    fn publish_encode_rejections() {
        let base = Publish {
            topic: "t".into(),
            qos: QoS::AtLeastOnce,
            packet_id: Some(1),
            dup: false,
            retain: false,
            payload: Vec::new(),
        };
        let with = |change: fn(&mut Publish)| {
            let mut publish = base.clone();
            change(&mut publish);
            encode_err(&Packet::Publish(publish))
        };
        assert_eq!(with(|p| p.packet_id = Some(0)), EncodeError::PacketIdZero);
        assert_eq!(
            with(|p| p.packet_id = None),
            EncodeError::PacketIdQoSMismatch
        );
        assert_eq!(
            with(|p| p.qos = QoS::AtMostOnce),
            EncodeError::PacketIdQoSMismatch
        );
        assert_eq!(
            with(|p| {
                p.qos = QoS::AtMostOnce;
                p.packet_id = None;
                p.dup = true;
            }),
            EncodeError::DupWithoutQoS
        );
        assert_eq!(
            with(|p| p.topic = "a/+/c".into()),
            EncodeError::WildcardInTopic("a/+/c".into())
        );
        assert_eq!(
            with(|p| p.topic = String::new()),
            EncodeError::EmptyTopic { field: "topic" }
        );
        assert_eq!(
            with(|p| p.topic = "a\0b".into()),
            EncodeError::NullCharacter { field: "topic" }
        );
        assert_eq!(
            with(|p| p.topic = "x".repeat(65_536)),
            EncodeError::FieldTooLong {
                field: "topic",
                len: 65_536
            }
        );
        let longest_topic = Packet::Publish(Publish {
            topic: "x".repeat(65_535),
            ..base.clone()
        });
        assert_eq!(decode_all(&encode(&longest_topic)), longest_topic);
    }

    #[test]
    fn puback_unsuback_and_empty_packets() {
        assert_vector(Packet::PubAck { packet_id: 10 }, &[0x40, 0x02, 0x00, 0x0A]);
        assert_vector(
            Packet::UnsubAck { packet_id: 258 },
            &[0xB0, 0x02, 0x01, 0x02],
        );
        assert_vector(Packet::PingReq, &[0xC0, 0x00]);
        assert_vector(Packet::PingResp, &[0xD0, 0x00]);
        assert_vector(Packet::Disconnect, &[0xE0, 0x00]);
        assert_eq!(
            decode_err(&[0x40, 0x02, 0x00, 0x00]),
            DecodeError::PacketIdZero
        );
        assert_eq!(
            encode_err(&Packet::PubAck { packet_id: 0 }),
            EncodeError::PacketIdZero
        );
        // Fixed-size packets with the wrong length fail from the header alone.
        assert_eq!(decode_err(&[0xC0, 0x01]), DecodeError::TrailingBytes(1));
        assert_eq!(decode_err(&[0x40, 0x01]), DecodeError::BodyTooShort);
        assert_eq!(decode_err(&[0x20, 0x03]), DecodeError::TrailingBytes(1));
    }

    #[test]
    fn subscribe_vectors() {
        // Packet id 10 and filters "a/b", "c/d" are the spec's example (section 3.8.3.1),
        // with the second filter at QoS 0 since QoS 2 is unsupported.
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 10,
            filters: vec![
                ("a/b".into(), QoS::AtLeastOnce),
                ("c/d".into(), QoS::AtMostOnce),
            ],
        });
        #[rustfmt::skip]
        let bytes = [
            0x82, 14, 0x00, 0x0A,
            0x00, 0x03, b'a', b'/', b'b', 0x01,
            0x00, 0x03, b'c', b'/', b'd', 0x00,
        ];
        assert_vector(subscribe, &bytes);
        let wildcards = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![
                ("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
                ("+".into(), QoS::AtMostOnce),
            ],
        });
        assert_eq!(decode_all(&encode(&wildcards)), wildcards);

        let mut qos2 = bytes;
        qos2[9] = 0x02;
        assert_eq!(decode_err(&qos2), DecodeError::UnsupportedQoS);
        let mut reserved = bytes;
        reserved[9] = 0x41;
        assert_eq!(
            decode_err(&reserved),
            DecodeError::InvalidSubscriptionOptions(0x41)
        );
        assert_eq!(
            decode_err(&[0x82, 0x02, 0x00, 0x0A]),
            DecodeError::EmptyList {
                packet: "subscribe"
            }
        );
        assert_eq!(
            decode_err(&[0x80, 0x02, 0x00, 0x0A]),
            DecodeError::InvalidFixedHeaderFlags {
                packet_type: 8,
                flags: 0
            }
        );
        // A filter without its options byte.
        assert_eq!(
            decode_err(&[0x82, 0x05, 0x00, 0x0A, 0x00, 0x01, b'a']),
            DecodeError::BodyTooShort
        );
        let empty = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![],
        });
        assert_eq!(
            encode_err(&empty),
            EncodeError::EmptyList {
                packet: "subscribe"
            }
        );
        let empty_filter = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(String::new(), QoS::AtMostOnce)],
        });
        assert_eq!(
            encode_err(&empty_filter),
            EncodeError::EmptyTopic {
                field: "topic filter"
            }
        );
    }

    #[test]
    fn suback_vectors() {
        // The spec's example (section 3.9.3) without its QoS 2 code.
        let suback = Packet::SubAck(SubAck {
            packet_id: 10,
            codes: vec![
                SubAckCode::Granted(QoS::AtMostOnce),
                SubAckCode::Granted(QoS::AtLeastOnce),
                SubAckCode::Failure,
            ],
        });
        assert_vector(suback, &[0x90, 5, 0x00, 0x0A, 0x00, 0x01, 0x80]);
        assert_eq!(
            decode_err(&[0x90, 6, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80]),
            DecodeError::UnsupportedQoS
        );
        assert_eq!(
            decode_err(&[0x90, 3, 0x00, 0x0A, 0x03]),
            DecodeError::InvalidSubAckCode(3)
        );
        assert_eq!(
            decode_err(&[0x90, 2, 0x00, 0x0A]),
            DecodeError::EmptyList { packet: "suback" }
        );
    }

    #[test]
    fn unsubscribe_vectors() {
        // The spec's example (section 3.10.3.1).
        let unsubscribe = Packet::Unsubscribe {
            packet_id: 10,
            filters: vec!["a/b".into(), "c/d".into()],
        };
        #[rustfmt::skip]
        let bytes = [
            0xA2, 12, 0x00, 0x0A,
            0x00, 0x03, b'a', b'/', b'b',
            0x00, 0x03, b'c', b'/', b'd',
        ];
        assert_vector(unsubscribe, &bytes);
        assert_eq!(
            decode_err(&[0xA2, 0x02, 0x00, 0x0A]),
            DecodeError::EmptyList {
                packet: "unsubscribe"
            }
        );
        let empty = Packet::Unsubscribe {
            packet_id: 1,
            filters: vec![],
        };
        assert_eq!(
            encode_err(&empty),
            EncodeError::EmptyList {
                packet: "unsubscribe"
            }
        );
    }

    #[test]
    fn fixed_header_rejections() {
        assert_eq!(decode_err(&[0x00]), DecodeError::UnknownPacketType(0));
        assert_eq!(
            decode_err(&[0xF0, 0x00]),
            DecodeError::UnknownPacketType(15)
        );
        for packet_type in 5..=7 {
            assert_eq!(
                decode_err(&[packet_type << 4]),
                DecodeError::UnsupportedPacketType(packet_type)
            );
        }
        assert_eq!(
            decode_err(&[0xC1, 0x00]),
            DecodeError::InvalidFixedHeaderFlags {
                packet_type: 12,
                flags: 1
            }
        );
        assert_eq!(
            decode_err(&[0x12]),
            DecodeError::InvalidFixedHeaderFlags {
                packet_type: 1,
                flags: 2
            }
        );
    }

    #[test]
    fn remaining_length_boundaries_match_spec_table() {
        // (remaining length, its encoding) from the spec's table 2.4.
        let table: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, encoding) in table {
            let mut out = [0; 4];
            let used = write_remaining_length(value, &mut out);
            assert_eq!(&out[..used], encoding, "encoding of {value}");
            assert_eq!(remaining_length_len(value), encoding.len());
            assert_eq!(
                read_remaining_length(encoding),
                Ok(Some((value, encoding.len())))
            );
        }
    }

    #[test]
    fn publish_at_remaining_length_boundaries_round_trips() {
        // A QoS 0 publish with topic "t" has 3 bytes of variable header.
        for remaining in [3, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let packet = publish("t", QoS::AtMostOnce, None, &vec![0x5A; remaining - 3]);
            let bytes = encode(&packet);
            let mut header = [0; 4];
            let length_len = write_remaining_length(remaining, &mut header);
            assert_eq!(bytes[0], 0x30);
            assert_eq!(&bytes[1..=length_len], &header[..length_len]);
            assert_eq!(bytes.len(), 1 + length_len + remaining);
            assert_eq!(
                publish_wire_len(1, remaining - 3, QoS::AtMostOnce),
                bytes.len()
            );
            assert_eq!(decode_all(&bytes), packet);
        }
    }

    #[test]
    fn remaining_length_rejections() {
        assert_eq!(
            decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            DecodeError::RemainingLengthTooLong
        );
        assert_eq!(
            decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0x80]),
            DecodeError::RemainingLengthTooLong
        );
        assert_eq!(
            decode_err(&[0xC0, 0x80, 0x00]),
            DecodeError::RemainingLengthNotMinimal
        );
        assert_eq!(
            decode_err(&[0x30, 0x83, 0x80, 0x00]),
            DecodeError::RemainingLengthNotMinimal
        );
        // Partial remaining lengths wait for more bytes.
        assert_eq!(decode(&[0x30, 0xFF, 0xFF, 0xFF], NO_LIMIT), Ok(None));
        assert_eq!(decode(&[], NO_LIMIT), Ok(None));
        assert_eq!(decode(&[0x30], NO_LIMIT), Ok(None));
    }

    #[test]
    fn too_large_is_detected_from_the_fixed_header_alone() {
        // The largest possible PUBLISH header, with none of its body present.
        let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(decode(&header, NO_LIMIT), Ok(None));
        assert_eq!(
            decode(&header, 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1024
            })
        );
        // The limit covers the whole packet, fixed header included.
        let ping = [0xC0, 0x00];
        assert_eq!(decode(&ping, 2), Ok(Some((Packet::PingReq, 2))));
        assert_eq!(
            decode(&ping, 1),
            Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
        );
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = vec![0xC0, 0x00];
        Packet::PubAck { packet_id: 7 }.encode(&mut out).unwrap();
        assert_eq!(out, [0xC0, 0x00, 0x40, 0x02, 0x00, 0x07]);
    }

    #[test]
    fn password_without_username_cannot_be_encoded() {
        let connect = Packet::Connect(Connect {
            client_id: "c".into(),
            username: None,
            password: Some(b"secret".to_vec()),
            keep_alive_secs: 30,
            clean_session: true,
        });
        assert_eq!(encode_err(&connect), EncodeError::PasswordWithoutUsername);
    }

    #[test]
    fn error_messages_are_lowercase_and_clear() {
        assert_eq!(
            ConnectReturnCode::BadUserNameOrPassword.reason(),
            "bad user name or password"
        );
        assert_eq!(
            DecodeError::InvalidFixedHeaderFlags {
                packet_type: 3,
                flags: 0b0110
            }
            .to_string(),
            "fixed header flags 0x06 are wrong for packet type 3"
        );
        assert_eq!(
            DecodeError::InvalidConnAckFlags(0x82).to_string(),
            "connack flags 0x82 are invalid"
        );
        assert_eq!(
            DecodeError::WildcardInTopic("a/+".into()).to_string(),
            "publish topic 'a/+' contains a wildcard (+ or #)"
        );
        assert_eq!(
            EncodeError::PacketTooLarge { size: 268_435_456 }.to_string(),
            "packet body of 268435456 bytes is larger than the 268,435,455-byte mqtt limit"
        );
        assert_eq!(
            DecodeError::UnsupportedQoS.to_string(),
            "qos 2 is not supported"
        );
        assert_eq!(
            DecodeError::PacketTooLarge { size: 10, max: 5 }.to_string(),
            "packet of 10 bytes is larger than the 5-byte limit"
        );
    }

    // ---- properties ----

    /// Strings MQTT allows: any unicode except U+0000.
    fn any_string() -> impl Strategy<Value = String> {
        "[^\u{0}]{0,40}"
    }

    fn topic_name() -> impl Strategy<Value = String> {
        "[^\u{0}+#]{1,40}"
    }

    fn topic_filter() -> impl Strategy<Value = String> {
        "[^\u{0}]{1,40}"
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
    }

    fn packet_id() -> impl Strategy<Value = u16> {
        1..=u16::MAX
    }

    fn arb_publish() -> impl Strategy<Value = Publish> {
        (
            topic_name(),
            qos(),
            packet_id(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..4096),
        )
            .prop_map(|(topic, qos, id, dup, retain, payload)| {
                let acked = qos == QoS::AtLeastOnce;
                Publish {
                    topic,
                    qos,
                    packet_id: acked.then_some(id),
                    dup: dup && acked,
                    retain,
                    payload,
                }
            })
    }

    fn arb_connect() -> impl Strategy<Value = Connect> {
        (
            any_string(),
            prop::option::of(any_string()),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(
                |(client_id, username, password, keep_alive_secs, clean_session)| {
                    // MQTT 3.1.1 allows a password only with a user name.
                    let password = password.filter(|_| username.is_some());
                    Connect {
                        client_id,
                        username,
                        password,
                        keep_alive_secs,
                        clean_session,
                    }
                },
            )
    }

    fn arb_connack() -> impl Strategy<Value = ConnAck> {
        let code = prop_oneof![
            Just(ConnectReturnCode::Accepted),
            Just(ConnectReturnCode::UnacceptableProtocolVersion),
            Just(ConnectReturnCode::IdentifierRejected),
            Just(ConnectReturnCode::ServerUnavailable),
            Just(ConnectReturnCode::BadUserNameOrPassword),
            Just(ConnectReturnCode::NotAuthorized),
        ];
        (any::<bool>(), code).prop_map(|(session_present, code)| ConnAck {
            session_present: session_present && code == ConnectReturnCode::Accepted,
            code,
        })
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let suback_code = prop_oneof![
            qos().prop_map(SubAckCode::Granted),
            Just(SubAckCode::Failure)
        ];
        prop_oneof![
            arb_connect().prop_map(Packet::Connect),
            arb_connack().prop_map(Packet::ConnAck),
            arb_publish().prop_map(Packet::Publish),
            packet_id().prop_map(|packet_id| Packet::PubAck { packet_id }),
            (
                packet_id(),
                prop::collection::vec((topic_filter(), qos()), 1..8)
            )
                .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe {
                    packet_id,
                    filters
                })),
            (packet_id(), prop::collection::vec(suback_code, 1..8))
                .prop_map(|(packet_id, codes)| Packet::SubAck(SubAck { packet_id, codes })),
            (packet_id(), prop::collection::vec(topic_filter(), 1..8))
                .prop_map(|(packet_id, filters)| Packet::Unsubscribe { packet_id, filters }),
            packet_id().prop_map(|packet_id| Packet::UnsubAck { packet_id }),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
            Just(Packet::Disconnect),
        ]
    }

    /// Checks what every decode result must satisfy, whatever the input.
    fn check_decode_invariants(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(Some((packet, consumed))) = decode(bytes, NO_LIMIT) {
            prop_assert!(consumed >= 2 && consumed <= bytes.len());
            // Every accepted packet is canonical: it re-encodes to the bytes it came from,
            // except a CONNECT whose dropped will changes its encoding.
            let will_dropped =
                matches!(packet, Packet::Connect(_)) && connect_flags(bytes) & FLAG_WILL != 0;
            if !will_dropped {
                prop_assert_eq!(encode(&packet), &bytes[..consumed]);
            }
        }
        Ok(())
    }

    /// The connect-flags byte of an encoded CONNECT: seven bytes into the body.
    fn connect_flags(bytes: &[u8]) -> u8 {
        let (_, length_len) = read_remaining_length(&bytes[1..]).unwrap().unwrap();
        bytes[1 + length_len + 7]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(packet in arb_packet()) {
            let bytes = encode(&packet);
            prop_assert_eq!(decode(&bytes, bytes.len()), Ok(Some((packet, bytes.len()))));
        }

        #[test]
        fn kind_names_the_packet_type_on_the_wire(packet in arb_packet()) {
            // MQTT 3.1.1 §2.2.1: the packet type is the high nibble of the first byte.
            const NAMES: [&str; 15] = [
                "", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
                "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP",
                "DISCONNECT",
            ];
            let bytes = encode(&packet);
            prop_assert_eq!(packet.kind(), NAMES[usize::from(bytes[0] >> 4)]);
        }

        #[test]
        fn publish_wire_len_matches_encoding(publish in arb_publish()) {
            let expected = publish_wire_len(publish.topic.len(), publish.payload.len(), publish.qos);
            prop_assert_eq!(encode(&Packet::Publish(publish)).len(), expected);
        }

        #[test]
        fn strict_prefixes_need_more_bytes(packet in arb_packet(), max in 0usize..64) {
            let bytes = encode(&packet);
            for len in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..len], NO_LIMIT), Ok(None));
                // With a small limit, the only error a prefix may give is the size check.
                match decode(&bytes[..len], max) {
                    Ok(None) => {}
                    Err(DecodeError::PacketTooLarge { size, .. }) => {
                        prop_assert_eq!(size, bytes.len());
                        prop_assert!(size > max);
                    }
                    other => prop_assert!(false, "prefix of {} bytes gave {:?}", len, other),
                }
            }
        }

        #[test]
        fn concatenated_packets_decode_in_order(packets in prop::collection::vec(arb_packet(), 1..6)) {
            let mut stream = Vec::new();
            for packet in &packets {
                packet.encode(&mut stream).unwrap();
            }
            let mut decoded = Vec::new();
            let mut rest = &stream[..];
            while let Some((packet, consumed)) = decode(rest, NO_LIMIT).unwrap() {
                decoded.push(packet);
                rest = &rest[consumed..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(decoded, packets);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_decode_invariants(&bytes)?;
        }

        #[test]
        fn mutated_encodings_never_panic(
            packet in arb_packet(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // Valid encodings with a few bytes changed and the tail cut reach far deeper into
            // the decoder than random bytes, which mostly fail on the first byte.
            let mut bytes = encode(&packet);
            for (index, byte) in edits {
                let position = index.index(bytes.len());
                bytes[position] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            check_decode_invariants(&bytes)?;
        }
    }
}
