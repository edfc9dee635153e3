//! Messages as the app gives them (stream, batch and message ids, completion markers), their
//! compression, and the record format they are stored in until delivered.
//!
//! A record is what the host's outbox store keeps for one sequence number: a small binary
//! header (format version, flags, the property bag entries) followed by the payload, already
//! compressed. The format is hand-written because it is a few dozen lines and must stay
//! readable by every later version of the SDK (the version byte is checked); a record that
//! does not decode is reported as corrupt and its message rejected, never a panic.

use crate::prelude::*;

use crate::text::Describe;

/// How a stream sender compresses payloads. Compressed data is sent only when smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Send payloads as they are.
    #[default]
    None,
    /// Brotli at its fastest setting (quality 1).
    Fastest,
    /// Brotli at its smallest setting (quality 11); slow for large payloads.
    SmallestSize,
}

/// Where the messages of a stream sender go, and how they are compressed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// Stream group; the workspace's default when absent.
    pub stream_group: Option<String>,
    /// Stream; the group's default when absent.
    pub stream: Option<String>,
    /// Site id, when the messages belong to a site.
    pub site_id: Option<String>,
    /// Payload compression.
    pub compression: Compression,
}

/// Optional identifiers of one message within its stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageOptions {
    /// The batch this message belongs to.
    pub batch_id: Option<String>,
    /// The message id (several chunks may share it).
    pub message_id: Option<String>,
    /// The slice of the batch.
    pub batch_slice_id: Option<String>,
    /// The chunk of the message.
    pub chunk_id: Option<String>,
}

/// Why a message could not be accepted into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// A property value is too long for the MQTT topic it travels in.
    PropertyTooLong {
        /// Which property.
        name: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A completion marker needs the id it completes.
    MissingId(&'static str),
    /// The stream asks for compression and the device has no Brotli encoder: the build left it
    /// out and the host lent none.
    CompressionUnavailable,
    /// The payload is larger than a message may be ([`MAX_PAYLOAD_BYTES`]).
    PayloadTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Describe for MessageError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::PropertyTooLong { name, len, max } => put!(
                out,
                name,
                " is ",
                len,
                " bytes long; at most ",
                max,
                " bytes are allowed"
            ),
            Self::MissingId(name) => put!(out, name, " is required"),
            Self::CompressionUnavailable => put!(
                out,
                "compression was asked for, but this build has no Brotli encoder and none was lent to it"
            ),
            Self::PayloadTooLarge { len, max } => put!(
                out,
                "the payload is ",
                len,
                " bytes long; at most ",
                max,
                " bytes are allowed"
            ),
        }
    }
}

described!(MessageError);

/// The largest payload a message may have. Every store keeps a message as one record, and a
/// store must be able to read back whatever it was given: the file store refuses frames larger
/// than 64 MiB when it opens (as a torn or corrupt tail), so the core never hands it one.
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024 * 1024;

/// The largest record the core ever asks a store to append: the largest payload and the most
/// the properties and header can add (nine properties of at most 1,024 bytes, their names and
/// lengths).
pub const MAX_RECORD_BYTES: usize = MAX_PAYLOAD_BYTES + 64 * 1024;

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The record ends before its header does.
    Truncated,
    /// The record was written by an unknown format version.
    UnknownVersion(u8),
    /// A property name or value is not UTF-8.
    InvalidUtf8,
}

impl Describe for RecordError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Truncated => put!(out, "stored record is truncated"),
            Self::UnknownVersion(version) => {
                put!(out, "stored record has unknown format version ", version)
            }
            Self::InvalidUtf8 => put!(out, "stored record has a property that is not valid UTF-8"),
        }
    }
}

described!(RecordError);

/// Longest property value accepted: the whole topic must stay far below MQTT's 65,535 bytes.
pub(crate) const MAX_PROPERTY_LEN: usize = 1_024;
const RECORD_VERSION: u8 = 1;
const FLAG_COMPRESSED: u8 = 1;
const FLAG_EXTERNALIZE: u8 = 2;

/// A message ready to be stored: its property bag entries and final payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Property bag entries in wire order (without `content-encoding`, `has-externalized-payload`
    /// and `vdev-seq`, which are added when the message is published).
    pub(crate) properties: Vec<(String, String)>,
    /// When the app enqueued it (ms since the epoch), for the outbox's oldest-message age.
    pub(crate) enqueued_at: u64,
    /// True when `payload` is Brotli-compressed.
    pub(crate) compressed: bool,
    /// True when the payload goes by HTTP upload and only a link travels over MQTT.
    pub(crate) externalize: bool,
    pub(crate) payload: Vec<u8>,
}

/// What kind of message the app enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// Ordinary data.
    Data,
    /// Closes the batch (`complete-batch=true`, payload ignored).
    CompleteBatch,
    /// Closes the message (`complete-message=true`, payload ignored).
    CompleteMessage,
}

impl StoredMessage {
    pub(crate) fn build(
        stream: &StreamOptions,
        options: &MessageOptions,
        marker: Marker,
        payload: Vec<u8>,
        upload_threshold: usize,
        now: u64,
        encoder: Option<&mut impl BrotliEncoder>,
    ) -> Result<Self, MessageError> {
        let properties = Self::properties(stream, options, marker, payload.len())?;
        // A marker's payload is ignored by the Platform: there is nothing to compress.
        let encoded = match marker {
            Marker::Data => compress(&payload, stream.compression, encoder)?,
            Marker::CompleteBatch | Marker::CompleteMessage => None,
        };
        Ok(Self::assemble(
            properties,
            payload,
            encoded,
            upload_threshold,
            now,
        ))
    }

    /// The property bag entries of a message, checked. Not inlined, nor is `assemble`: only
    /// `compress` differs between encoders, and each kind of send (lent encoder, own encoder,
    /// the two markers) would otherwise carry its own copy of the rest (about 100 bytes
    /// gzipped of the browser bundle, measured).
    #[inline(never)]
    fn properties(
        stream: &StreamOptions,
        options: &MessageOptions,
        marker: Marker,
        payload_len: usize,
    ) -> Result<Vec<(String, String)>, MessageError> {
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(MessageError::PayloadTooLarge {
                len: payload_len,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let mut properties = Vec::new();
        let mut push = |name: &'static str, value: &Option<String>| {
            if let Some(value) = value {
                if value.len() > MAX_PROPERTY_LEN {
                    return Err(MessageError::PropertyTooLong {
                        name,
                        len: value.len(),
                        max: MAX_PROPERTY_LEN,
                    });
                }
                properties.push((name.to_owned(), value.clone()));
            }
            Ok(())
        };
        push("stream-group-name", &stream.stream_group)?;
        push("stream-name", &stream.stream)?;
        push("site-id", &stream.site_id)?;
        push("batch-id", &options.batch_id)?;
        push("batch-slice-id", &options.batch_slice_id)?;
        push("message-id", &options.message_id)?;
        push("chunk-id", &options.chunk_id)?;
        // A completion names what it completes: an empty id would complete nothing the app
        // ever sent (the Platform would keep a batch named "").
        let missing = |id: &Option<String>| id.as_deref().is_none_or(str::is_empty);
        match marker {
            Marker::Data => {}
            Marker::CompleteBatch => {
                if missing(&options.batch_id) {
                    return Err(MessageError::MissingId("batch id"));
                }
                properties.push(("complete-batch".into(), "true".into()));
                properties.push(("ignore-payload".into(), "true".into()));
            }
            Marker::CompleteMessage => {
                if missing(&options.batch_id) {
                    return Err(MessageError::MissingId("batch id"));
                }
                if missing(&options.message_id) {
                    return Err(MessageError::MissingId("message id"));
                }
                properties.push(("complete-message".into(), "true".into()));
                properties.push(("ignore-payload".into(), "true".into()));
            }
        }
        Ok(properties)
    }

    #[inline(never)]
    fn assemble(
        properties: Vec<(String, String)>,
        payload: Vec<u8>,
        encoded: Option<Vec<u8>>,
        upload_threshold: usize,
        now: u64,
    ) -> Self {
        let (payload, compressed) = match encoded {
            Some(smaller) => (smaller, true),
            None => (payload, false),
        };
        let externalize = payload.len() > upload_threshold;
        Self {
            properties,
            enqueued_at: now,
            compressed,
            externalize,
            payload,
        }
    }

    /// Property bag entries as published, given the outbox origin and sequence number.
    pub(crate) fn wire_properties<'a>(
        &'a self,
        externalized: bool,
        seq_tag: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        // The official SDK puts content-encoding right after the ids and before the markers.
        let mut extra = Some([
            self.compressed.then_some(("content-encoding", "br")),
            externalized.then_some(("has-externalized-payload", "true")),
        ]);
        let mut props: Vec<(&str, &str)> = Vec::with_capacity(self.properties.len() + 3);
        for (key, value) in &self.properties {
            if key == "complete-batch" || key == "complete-message" {
                props.extend(extra.take().into_iter().flatten().flatten());
            }
            props.push((key, value));
        }
        props.extend(extra.into_iter().flatten().flatten());
        props.push(("vdev-seq", seq_tag));
        props
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let header: usize = self
            .properties
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(11 + header + self.payload.len());
        out.push(RECORD_VERSION);
        let mut flags = 0;
        if self.compressed {
            flags |= FLAG_COMPRESSED;
        }
        if self.externalize {
            flags |= FLAG_EXTERNALIZE;
        }
        out.push(flags);
        out.extend_from_slice(&self.enqueued_at.to_le_bytes());
        // Property count and lengths fit: at most 9 properties of at most MAX_PROPERTY_LEN bytes.
        out.push(self.properties.len() as u8);
        for (key, value) in &self.properties {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader(bytes);
        let version = reader.byte()?;
        if version != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let flags = reader.byte()?;
        let enqueued_at = reader.u64()?;
        let count = reader.byte()?;
        let mut properties = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let key = reader.string()?;
            let value = reader.string()?;
            properties.push((key, value));
        }
        Ok(Self {
            properties,
            enqueued_at,
            compressed: flags & FLAG_COMPRESSED != 0,
            externalize: flags & FLAG_EXTERNALIZE != 0,
            payload: reader.0.to_vec(),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let (&first, rest) = self.0.split_first().ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(first)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let (bytes, rest) = self
            .0
            .split_first_chunk::<8>()
            .ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(u64::from_le_bytes(*bytes))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = u16::from_le_bytes([self.byte()?, self.byte()?]) as usize;
        if self.0.len() < len {
            return Err(RecordError::Truncated);
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).map_err(|_| RecordError::InvalidUtf8)
    }
}

/// Brotli encoding, for [`Compression::Fastest`] and [`Compression::SmallestSize`].
///
/// The core decides whether a payload is compressed (never an empty one, never a completion
/// marker) and keeps the result only when it is smaller; the encoder only encodes. Built with
/// its `brotli` feature the core has one of its own ([`Device::send`](crate::Device::send)). A
/// host built without it (the browser package, where the encoder would make the bundle about
/// five times larger) lends one to each call of
/// [`Device::send_with_encoder`](crate::Device::send_with_encoder): a separate module the app
/// loads only when it wants compression. A generic parameter, not a trait object: an indirect
/// call keeps every function of its signature in a wasm module's table (1 KB of unrelated
/// wasm-bindgen closures in the browser bundle, measured).
pub trait BrotliEncoder {
    /// `payload` encoded at `quality` (1, the fastest, to 11, the smallest), or `None` when it
    /// could not be encoded (the payload is then sent as it is).
    fn encode(&mut self, payload: &[u8], quality: u32) -> Option<Vec<u8>>;
}

/// The core's own encoder: the `brotli` crate's, when the core is built with it.
#[cfg(feature = "brotli")]
pub(crate) struct BuiltInBrotli;

#[cfg(feature = "brotli")]
impl BrotliEncoder for BuiltInBrotli {
    fn encode(&mut self, payload: &[u8], quality: u32) -> Option<Vec<u8>> {
        let params = brotli::enc::BrotliEncoderParams {
            quality: quality as i32,
            size_hint: payload.len(),
            ..Default::default()
        };
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &payload[..], &mut out, &params).ok()?;
        Some(out)
    }
}

/// Without the `brotli` feature the core has no encoder of its own (no value of this type).
#[cfg(not(feature = "brotli"))]
pub(crate) enum BuiltInBrotli {}

#[cfg(not(feature = "brotli"))]
impl BrotliEncoder for BuiltInBrotli {
    fn encode(&mut self, _payload: &[u8], _quality: u32) -> Option<Vec<u8>> {
        match *self {}
    }
}

/// The core's own encoder, if it was built with one.
pub(crate) fn built_in_brotli() -> Option<BuiltInBrotli> {
    #[cfg(feature = "brotli")]
    {
        Some(BuiltInBrotli)
    }
    #[cfg(not(feature = "brotli"))]
    {
        None
    }
}

/// Refuses `compression` when there is nothing to compress with: compression asked for that
/// cannot happen is the app's mistake to hear about, not a silent no-op.
pub(crate) fn check_compression(
    compression: Compression,
    have_encoder: bool,
) -> Result<(), MessageError> {
    if compression == Compression::None || have_encoder {
        Ok(())
    } else {
        Err(MessageError::CompressionUnavailable)
    }
}

/// `payload` compressed when asked to and when the result is smaller.
fn compress<E: BrotliEncoder>(
    payload: &[u8],
    compression: Compression,
    encoder: Option<&mut E>,
) -> Result<Option<Vec<u8>>, MessageError> {
    check_compression(compression, encoder.is_some())?;
    let quality = match compression {
        Compression::None => return Ok(None),
        Compression::Fastest => 1,
        Compression::SmallestSize => 11,
    };
    let Some(encoder) = encoder.filter(|_| !payload.is_empty()) else {
        return Ok(None);
    };
    Ok(encoder
        .encode(payload, quality)
        .filter(|out| out.len() < payload.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `StoredMessage::build` at time 0 with the core's own encoder, if it has one.
    fn build(
        stream: &StreamOptions,
        options: &MessageOptions,
        marker: Marker,
        payload: Vec<u8>,
        upload_threshold: usize,
    ) -> Result<StoredMessage, MessageError> {
        let mut own = built_in_brotli();
        StoredMessage::build(
            stream,
            options,
            marker,
            payload,
            upload_threshold,
            0,
            own.as_mut(),
        )
    }

    /// The property names `message` puts on the wire, in order.
    fn wire_keys(message: &StoredMessage, externalized: bool, seq_tag: &str) -> Vec<String> {
        message
            .wire_properties(externalized, seq_tag)
            .iter()
            .map(|(k, _)| (*k).to_owned())
            .collect()
    }

    fn stream() -> StreamOptions {
        StreamOptions {
            stream_group: Some("group".into()),
            stream: Some("stream".into()),
            site_id: None,
            compression: Compression::None,
        }
    }

    #[test]
    fn properties_follow_the_official_order() {
        let options = MessageOptions {
            batch_id: Some("b".into()),
            message_id: Some("m".into()),
            batch_slice_id: Some("s".into()),
            chunk_id: Some("c".into()),
        };
        let message = build(&stream(), &options, Marker::Data, b"x".to_vec(), 10).unwrap();
        let keys = wire_keys(&message, false, "o.1");
        assert_eq!(
            keys,
            [
                "stream-group-name",
                "stream-name",
                "batch-id",
                "batch-slice-id",
                "message-id",
                "chunk-id",
                "vdev-seq"
            ]
        );
    }

    #[test]
    fn externalized_and_encoding_flags_come_before_the_markers() {
        let batch = MessageOptions {
            batch_id: Some("b".into()),
            ..Default::default()
        };
        let mut message = build(&stream(), &batch, Marker::CompleteBatch, vec![], 10).unwrap();
        message.compressed = true;
        let keys = wire_keys(&message, true, "o.4");
        assert_eq!(
            keys,
            [
                "stream-group-name",
                "stream-name",
                "batch-id",
                "content-encoding",
                "has-externalized-payload",
                "complete-batch",
                "ignore-payload",
                "vdev-seq"
            ]
        );
        let data = build(&stream(), &batch, Marker::Data, b"x".to_vec(), 10).unwrap();
        let props = data.wire_properties(true, "o.5");
        assert_eq!(
            props[props.len() - 2..],
            [("has-externalized-payload", "true"), ("vdev-seq", "o.5")]
        );
    }

    #[test]
    fn completion_markers_need_their_ids_and_ignore_the_payload() {
        let none = MessageOptions::default();
        assert_eq!(
            build(&stream(), &none, Marker::CompleteBatch, vec![], 10),
            Err(MessageError::MissingId("batch id"))
        );
        let batch = MessageOptions {
            batch_id: Some("b".into()),
            ..Default::default()
        };
        let message = build(&stream(), &batch, Marker::CompleteBatch, vec![], 10).unwrap();
        let props = message.wire_properties(false, "o.2");
        assert!(props.contains(&("complete-batch", "true")));
        assert!(props.contains(&("ignore-payload", "true")));

        // An empty id completes nothing the app sent.
        let empty = |batch: &str, message: &str| MessageOptions {
            batch_id: Some(batch.into()),
            message_id: Some(message.into()),
            ..Default::default()
        };
        for (options, marker, missing) in [
            (empty("", "m"), Marker::CompleteBatch, "batch id"),
            (empty("", "m"), Marker::CompleteMessage, "batch id"),
            (empty("b", ""), Marker::CompleteMessage, "message id"),
        ] {
            let none = None::<&mut BuiltInBrotli>;
            let built = StoredMessage::build(&stream(), &options, marker, vec![], 10, 0, none);
            assert_eq!(built, Err(MessageError::MissingId(missing)), "{options:?}");
        }
    }

    #[cfg(feature = "brotli")]
    #[test]
    fn compression_is_used_only_when_smaller() {
        let mut s = stream();
        s.compression = Compression::Fastest;
        let repetitive = vec![b'a'; 10_000];
        let m = build(&s, &Default::default(), Marker::Data, repetitive, 1 << 20).unwrap();
        assert!(m.compressed && m.payload.len() < 100);
        let props = m.wire_properties(false, "o.3");
        assert!(props.contains(&("content-encoding", "br")));
        let tiny = build(&s, &Default::default(), Marker::Data, b"ab".to_vec(), 10).unwrap();
        assert!(!tiny.compressed);
        assert_eq!(tiny.payload, b"ab");
    }

    /// A lent encoder that remembers what it was asked and answers with fixed bytes.
    struct Recording {
        asked: Vec<(usize, u32)>,
        answer: Vec<u8>,
    }

    impl BrotliEncoder for Recording {
        fn encode(&mut self, payload: &[u8], quality: u32) -> Option<Vec<u8>> {
            self.asked.push((payload.len(), quality));
            Some(self.answer.clone())
        }
    }

    #[test]
    fn compression_without_an_encoder_is_refused_and_a_lent_one_is_used_only_when_smaller() {
        let mut s = stream();
        s.compression = Compression::SmallestSize;
        let build = |encoder: Option<&mut Recording>, marker: Marker, payload: &[u8]| {
            let batch = MessageOptions {
                batch_id: Some("b".into()),
                ..Default::default()
            };
            StoredMessage::build(&s, &batch, marker, payload.to_vec(), 1 << 20, 0, encoder)
        };
        assert_eq!(
            build(None, Marker::Data, b"data"),
            Err(MessageError::CompressionUnavailable)
        );
        assert!(
            build(None, Marker::Data, b"").is_err(),
            "refused even when empty"
        );
        assert!(
            build(None, Marker::CompleteBatch, b"").is_ok(),
            "a marker has nothing to compress"
        );
        assert_eq!(check_compression(Compression::None, false), Ok(()));

        let mut lent = Recording {
            asked: Vec::new(),
            answer: b"xyz".to_vec(),
        };
        let smaller = build(Some(&mut lent), Marker::Data, b"four").unwrap();
        assert!(smaller.compressed);
        assert_eq!(smaller.payload, b"xyz");
        let same = build(Some(&mut lent), Marker::Data, b"abc").unwrap();
        assert!(!same.compressed, "not smaller: sent as it is");
        assert_eq!(same.payload, b"abc");
        let empty = build(Some(&mut lent), Marker::Data, b"").unwrap();
        assert!(!empty.compressed);
        assert_eq!(
            lent.asked,
            [(4, 11), (3, 11)],
            "an empty payload is not encoded"
        );
    }

    #[test]
    fn large_payloads_are_externalized() {
        let m = build(
            &stream(),
            &Default::default(),
            Marker::Data,
            vec![0; 11],
            10,
        )
        .unwrap();
        assert!(m.externalize);
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_and_the_largest_record_fits_every_store() {
        assert_eq!(
            build(
                &stream(),
                &Default::default(),
                Marker::Data,
                vec![0; MAX_PAYLOAD_BYTES + 1],
                usize::MAX
            )
            .map(|_| ()),
            Err(MessageError::PayloadTooLarge {
                len: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            })
        );
        // The largest payload with every property at its longest.
        let long = || Some("x".repeat(MAX_PROPERTY_LEN));
        let stream = StreamOptions {
            stream_group: long(),
            stream: long(),
            site_id: long(),
            ..Default::default()
        };
        let options = MessageOptions {
            batch_id: long(),
            message_id: long(),
            batch_slice_id: long(),
            chunk_id: long(),
        };
        let largest = build(
            &stream,
            &options,
            Marker::Data,
            vec![7; MAX_PAYLOAD_BYTES],
            usize::MAX,
        )
        .expect("the largest payload is taken");
        assert!(largest.encode().len() <= MAX_RECORD_BYTES);
    }

    #[test]
    fn overlong_ids_are_refused() {
        let options = MessageOptions {
            batch_id: Some("x".repeat(MAX_PROPERTY_LEN + 1)),
            ..Default::default()
        };
        assert!(matches!(
            build(&stream(), &options, Marker::Data, vec![], 10),
            Err(MessageError::PropertyTooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn records_round_trip(
            group in proptest::option::of("\\PC{0,20}"),
            batch in proptest::option::of("\\PC{0,20}"),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            externalize in any::<bool>(),
        ) {
            let s = StreamOptions { stream_group: group, ..Default::default() };
            let o = MessageOptions { batch_id: batch, ..Default::default() };
            let mut m = StoredMessage::build(&s, &o, Marker::Data, payload, usize::MAX, 0, None::<&mut BuiltInBrotli>).unwrap();
            m.externalize = externalize;
            prop_assert_eq!(StoredMessage::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn junk_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = StoredMessage::decode(&bytes);
        }
    }
}
