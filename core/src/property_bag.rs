//! The URL-encoded property bag at the end of an IoT Hub telemetry topic
//! (`devices/<ws>:<dev>/messages/events/<bag>`), e.g. `stream-name=temp&batch-id=b%201`.
//!
//! Encoding matches the official SDK byte for byte: every byte except `A-Z a-z 0-9 - . _ ~` is
//! percent-encoded with uppercase hex (what `urlencoding::encode` does). Keys are encoded the
//! same way; the official SDK leaves them raw, which only differs for keys outside that set,
//! and none of the Platform's keys are. Decoding reads `%XX` escapes only: IoT Hub does not
//! use `+` for a space, so `+` stays `+`.

use crate::prelude::*;

#[cfg(any(test, feature = "testing"))]
use crate::text::Describe;
#[cfg(any(test, feature = "testing"))]
use percent_encoding::percent_decode_str;

#[cfg(any(test, feature = "testing"))]
/// Why a text is not a property bag this module can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PropertyBagError {
    /// A `%` is not followed by two hexadecimal digits.
    InvalidEscape {
        /// The `%` and up to two characters after it.
        escape: String,
        /// The byte offset of the `%` in the bag.
        position: usize,
    },
    /// A key or value decodes to bytes that are not UTF-8.
    InvalidUtf8 {
        /// `"key"` or `"value"`.
        part: &'static str,
        /// The byte offset in the bag where that key or value starts.
        position: usize,
    },
}

#[cfg(any(test, feature = "testing"))]
impl Describe for PropertyBagError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::InvalidEscape { escape, position } => put!(
                out,
                "property bag has the invalid escape '",
                escape,
                "' at byte ",
                position,
                ": '%' must be followed by two hex digits"
            ),
            Self::InvalidUtf8 { part, position } => put!(
                out,
                "property bag ",
                part,
                " at byte ",
                position,
                " does not decode to valid utf-8"
            ),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
described!(PropertyBagError);

/// Writes `key=value` pairs joined by `&`, percent-encoding keys and values.
pub fn encode_property_bag(props: &[(&str, &str)]) -> String {
    let mut bag = String::new();
    for (index, (key, value)) in props.iter().enumerate() {
        if index > 0 {
            bag.push('&');
        }
        percent_encode(key, &mut bag);
        bag.push('=');
        percent_encode(value, &mut bag);
    }
    bag
}

/// Appends `text` with every byte outside the RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`)
/// written as `%XX`. By hand rather than with `percent_encoding::utf8_percent_encode`: the
/// crate's 768-byte table of ready-made escapes cost the browser bundle more than this loop.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

/// Reads the property bag of a message the device receives: `key=value` pairs joined by `&`,
/// in order, `%XX` escapes decoded, leniently: the message reaches the app whatever its
/// sender wrote. An escape that is not one (`%G1`, a lone `%`) stays as written, and so does a
/// key or value whose escapes decode to bytes that are not UTF-8; a pair without `=` is a key
/// with an empty value, empty pairs are skipped and repeated keys are all kept. On bytes, for
/// the browser module's size (as [`percent_encode`]; a lossy UTF-8 decoding cost it 1 KB).
pub(crate) fn read_property_bag(bag: &str) -> Vec<(String, String)> {
    fn decoded(part: &[u8]) -> String {
        let hex = |digit: u8| char::from(digit).to_digit(16);
        let mut bytes = Vec::with_capacity(part.len());
        let mut at = 0;
        while at < part.len() {
            let escape = (part[at] == b'%')
                .then(|| Some(hex(*part.get(at + 1)?)? * 16 + hex(*part.get(at + 2)?)?))
                .flatten();
            match escape {
                Some(byte) => {
                    bytes.push(byte as u8);
                    at += 3;
                }
                None => {
                    bytes.push(part[at]);
                    at += 1;
                }
            }
        }
        String::from_utf8(bytes)
            .unwrap_or_else(|_| String::from_utf8(part.to_vec()).unwrap_or_default())
    }
    bag.as_bytes()
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let equals = pair.iter().position(|&byte| byte == b'=');
            let (key, value) = match equals {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            (decoded(key), decoded(value))
        })
        .collect()
}

#[cfg(any(test, feature = "testing"))]
/// Reads `key=value` pairs joined by `&`, in order, decoding `%XX` escapes.
///
/// A pair without `=` is a key with an empty value; empty pairs (as in `a=1&&b=2` or a
/// trailing `&`) are skipped; repeated keys are all kept.
pub fn decode_property_bag(bag: &str) -> Result<Vec<(String, String)>, PropertyBagError> {
    check_escapes(bag)?;
    let mut props = Vec::new();
    let mut pair_start = 0;
    for pair in bag.split('&') {
        if !pair.is_empty() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value_start = pair_start + key.len() + 1;
            props.push((
                decode(key, "key", pair_start)?,
                decode(value, "value", value_start)?,
            ));
        }
        pair_start += pair.len() + 1;
    }
    Ok(props)
}

#[cfg(any(test, feature = "testing"))]
fn check_escapes(bag: &str) -> Result<(), PropertyBagError> {
    let bytes = bag.as_bytes();
    for (position, _) in bag.match_indices('%') {
        let digits = bytes.get(position + 1..position + 3);
        if !digits.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
            let escape = bag[position..].chars().take(3).collect();
            return Err(PropertyBagError::InvalidEscape { escape, position });
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "testing"))]
fn decode(encoded: &str, part: &'static str, position: usize) -> Result<String, PropertyBagError> {
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| PropertyBagError::InvalidUtf8 { part, position })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(props: &[(&str, &str)]) -> Vec<(String, String)> {
        props
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    #[test]
    fn encodes_like_the_official_sdk() {
        let bag = encode_property_bag(&[
            ("stream-group-name", "my group"),
            ("stream-name", "temp/°C"),
            ("batch-id", "a&b=c+d%~._-"),
            ("content-encoding", "br"),
        ]);
        assert_eq!(
            bag,
            "stream-group-name=my%20group&stream-name=temp%2F%C2%B0C\
             &batch-id=a%26b%3Dc%2Bd%25~._-&content-encoding=br"
        );
        assert_eq!(encode_property_bag(&[]), "");
        assert_eq!(encode_property_bag(&[("k", "")]), "k=");
        assert_eq!(encode_property_bag(&[("a b", "c")]), "a%20b=c");
    }

    #[test]
    fn a_received_bag_is_read_leniently() {
        assert_eq!(
            read_property_bag("stream-name=temp%2F%c2%b0C&k=1&k=2&flag&empty=&&a=b=c&p=1+1"),
            owned(&[
                ("stream-name", "temp/°C"),
                ("k", "1"),
                ("k", "2"),
                ("flag", ""),
                ("empty", ""),
                ("a", "b=c"),
                ("p", "1+1"),
            ])
        );
        assert_eq!(read_property_bag(""), vec![]);
        // What the strict reader refuses arrives as written.
        assert_eq!(
            read_property_bag("a=%G1&b=100%&c=%FF%41"),
            owned(&[("a", "%G1"), ("b", "100%"), ("c", "%FF%41")])
        );
    }

    proptest! {
        #[test]
        fn the_lenient_reader_agrees_with_the_strict_one_on_what_encode_writes(
            props in proptest::collection::vec((".{1,8}", ".{0,8}"), 0..5)
        ) {
            let refs: Vec<(&str, &str)> =
                props.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bag = encode_property_bag(&refs);
            prop_assert_eq!(read_property_bag(&bag), decode_property_bag(&bag).unwrap());
            prop_assert_eq!(read_property_bag(&bag), props);
        }
    }

    #[test]
    fn decodes_pairs_in_order() {
        let props = decode_property_bag("stream-name=temp%2F%c2%b0C&k=1&k=2&flag&empty=").unwrap();
        assert_eq!(
            props,
            owned(&[
                ("stream-name", "temp/°C"),
                ("k", "1"),
                ("k", "2"),
                ("flag", ""),
                ("empty", ""),
            ])
        );
        assert_eq!(decode_property_bag(""), Ok(vec![]));
        assert_eq!(
            decode_property_bag("a=1&&b=2&"),
            Ok(owned(&[("a", "1"), ("b", "2")]))
        );
        assert_eq!(decode_property_bag("a=b=c"), Ok(owned(&[("a", "b=c")])));
        // `+` is a literal plus in IoT Hub property bags.
        assert_eq!(decode_property_bag("a=1+1"), Ok(owned(&[("a", "1+1")])));
    }

    #[test]
    fn rejects_bad_escapes_saying_where() {
        let error = decode_property_bag("a=1&b=%G1").unwrap_err();
        assert_eq!(
            error,
            PropertyBagError::InvalidEscape {
                escape: "%G1".into(),
                position: 6
            }
        );
        assert_eq!(
            error.to_string(),
            r#"property bag has the invalid escape '%G1' at byte 6: '%' must be followed by two hex digits"#
        );
        for (bag, position) in [
            ("%", 0),
            ("a=%4", 2),
            ("a=%%41", 2),
            ("a%é=1", 1),
            ("k=v%", 3),
        ] {
            assert!(
                matches!(
                    decode_property_bag(bag),
                    Err(PropertyBagError::InvalidEscape { position: at, .. }) if at == position
                ),
                "{bag:?} gave {:?}",
                decode_property_bag(bag)
            );
        }
    }

    #[test]
    fn rejects_invalid_utf8_saying_which_part() {
        assert_eq!(
            decode_property_bag("ok=1&a=%FF"),
            Err(PropertyBagError::InvalidUtf8 {
                part: "value",
                position: 7
            })
        );
        assert_eq!(
            decode_property_bag("ok=1&%C3=x"),
            Err(PropertyBagError::InvalidUtf8 {
                part: "key",
                position: 5
            })
        );
        assert_eq!(
            PropertyBagError::InvalidUtf8 {
                part: "value",
                position: 7
            }
            .to_string(),
            "property bag value at byte 7 does not decode to valid utf-8"
        );
    }

    proptest! {
        #[test]
        fn values_match_urlencoding_byte_for_byte(value in any::<String>()) {
            let bag = encode_property_bag(&[("k", &value)]);
            prop_assert_eq!(bag, format!("k={}", urlencoding::encode(&value)));
        }

        #[test]
        fn encoded_bags_use_only_unreserved_bytes_and_uppercase_escapes(
            key in any::<String>(),
            value in any::<String>(),
        ) {
            let bag = encode_property_bag(&[(&key, &value)]);
            prop_assert!(bag.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%=".contains(&b)));
            for (position, _) in bag.match_indices('%') {
                let hex = &bag.as_bytes()[position + 1..position + 3];
                prop_assert!(hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)));
            }
        }

        #[test]
        fn round_trips_arbitrary_unicode(props in proptest::collection::vec((any::<String>(), any::<String>()), 0..8)) {
            let borrowed: Vec<(&str, &str)> =
                props.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
            let bag = encode_property_bag(&borrowed);
            prop_assert_eq!(decode_property_bag(&bag), Ok(props));
        }

        #[test]
        fn junk_never_panics(bag in any::<String>()) {
            let _ = decode_property_bag(&bag);
        }

        #[test]
        fn near_misses_never_panic(bag in "[a-z=&%0-9A-Fé]{0,24}") {
            let _ = decode_property_bag(&bag);
        }
    }
}
