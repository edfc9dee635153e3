//! Device identifiers: the one place that knows which device IDs the Platform accepts.
//!
//! A [`DeviceId`] can only be built through validation, so any value of the type is
//! 4–90 characters of `0-9 a-z A-Z - _ .` (the Platform's rule). Deserialization goes
//! through the same check, so an ID read back from storage or the network is never trusted
//! blindly.

use crate::prelude::*;

use core::borrow::Borrow;
use core::fmt;
use core::str::FromStr;

use crate::excerpt::excerpt;
use crate::text::Describe;

/// The fewest characters a device ID may have.
pub const DEVICE_ID_MIN_LEN: usize = 4;
/// The most characters a device ID may have.
pub const DEVICE_ID_MAX_LEN: usize = 90;

/// A device ID the Platform accepts: 4–90 characters of `0-9 a-z A-Z - _ .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

/// Why a text is not a valid [`DeviceId`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceIdError {
    /// The text has fewer than [`DEVICE_ID_MIN_LEN`] characters.
    TooShort {
        /// The rejected text.
        input: String,
        /// Its length in characters.
        len: usize,
    },
    /// The text has more than [`DEVICE_ID_MAX_LEN`] characters.
    TooLong {
        /// The rejected text, shortened to its first 100 characters and `…` when longer.
        input: String,
        /// Its length in characters.
        len: usize,
    },
    /// The text contains a character outside `0-9 a-z A-Z - _ .`.
    InvalidCharacter {
        /// The rejected text, shortened to its first 100 characters and `…` when longer.
        input: String,
        /// The first character that is not allowed.
        character: char,
        /// Where that character is, counted in characters from 0.
        position: usize,
    },
}

impl Describe for DeviceIdError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::TooShort { input, len } => put!(
                out,
                "device id '",
                input,
                "' is too short: ",
                len,
                " characters, at least ",
                DEVICE_ID_MIN_LEN,
                " are required"
            ),
            Self::TooLong { input, len } => put!(
                out,
                "device id '",
                input,
                "' is too long: ",
                len,
                " characters, at most ",
                DEVICE_ID_MAX_LEN,
                " are allowed"
            ),
            Self::InvalidCharacter {
                input,
                character,
                position,
            } => put!(
                out,
                "device id '",
                input,
                "' has the invalid character '",
                character,
                "' at position ",
                position,
                ": only 0-9, a-z, A-Z, '-', '_' and '.' are allowed"
            ),
        }
    }
}

described!(DeviceIdError);

impl DeviceId {
    /// Checks `text` against the Platform's rule and wraps it.
    pub fn parse(text: &str) -> Result<Self, DeviceIdError> {
        validate(text)?;
        Ok(Self(text.to_owned()))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID as an owned `String`, without copying.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_allowed(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.')
}

fn validate(text: &str) -> Result<(), DeviceIdError> {
    if let Some((position, character)) = text.chars().enumerate().find(|&(_, c)| !is_allowed(c)) {
        return Err(DeviceIdError::InvalidCharacter {
            input: excerpt(text, EXCERPT_CHARS),
            character,
            position,
        });
    }
    // Every allowed character is ASCII, so from here bytes and characters agree.
    let len = text.len();
    if len < DEVICE_ID_MIN_LEN {
        return Err(DeviceIdError::TooShort {
            input: text.to_owned(),
            len,
        });
    }
    if len > DEVICE_ID_MAX_LEN {
        return Err(DeviceIdError::TooLong {
            input: excerpt(text, EXCERPT_CHARS),
            len,
        });
    }
    Ok(())
}

/// Error messages quote at most this many characters of the rejected text.
const EXCERPT_CHARS: usize = 100;

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        validate(&text)?;
        Ok(Self(text))
    }
}

impl TryFrom<&str> for DeviceId {
    type Error = DeviceIdError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALPHABET: &str = "[0-9a-zA-Z._-]";

    #[test]
    fn accepts_typical_ids() {
        for text in ["abcd", "my-device_01.prod", "0000", &"x".repeat(90)] {
            let id = DeviceId::parse(text).expect(text);
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string(), text);
            assert_eq!(id.as_ref(), text);
            assert_eq!(text.parse::<DeviceId>(), Ok(id));
        }
    }

    #[test]
    fn too_short_says_how_short() {
        let error = DeviceId::parse("ab").unwrap_err();
        assert_eq!(
            error,
            DeviceIdError::TooShort {
                input: "ab".into(),
                len: 2
            }
        );
        assert_eq!(
            error.to_string(),
            r#"device id 'ab' is too short: 2 characters, at least 4 are required"#
        );
        assert!(matches!(
            DeviceId::parse(""),
            Err(DeviceIdError::TooShort { len: 0, .. })
        ));
    }

    #[test]
    fn too_long_is_rejected_and_the_message_stays_short() {
        let error = DeviceId::parse(&"a".repeat(91)).unwrap_err();
        assert!(matches!(error, DeviceIdError::TooLong { len: 91, .. }));
        assert!(
            error
                .to_string()
                .contains("too long: 91 characters, at most 90")
        );

        let error = DeviceId::parse(&"a".repeat(100_000)).unwrap_err();
        assert!(matches!(error, DeviceIdError::TooLong { len: 100_000, .. }));
        assert!(error.to_string().len() < 250, "{error}");
    }

    #[test]
    fn invalid_character_names_character_and_position() {
        let error = DeviceId::parse("dev ice").unwrap_err();
        assert_eq!(
            error.to_string(),
            "device id 'dev ice' has the invalid character ' ' at position 3: \
             only 0-9, a-z, A-Z, '-', '_' and '.' are allowed"
        );
        // Positions count characters, not bytes.
        assert!(matches!(
            DeviceId::parse("žluť"),
            Err(DeviceIdError::InvalidCharacter {
                character: 'ž',
                position: 0,
                ..
            })
        ));
        assert!(matches!(
            DeviceId::parse("aé:b"),
            Err(DeviceIdError::InvalidCharacter {
                character: 'é',
                position: 1,
                ..
            })
        ));
        // The character check comes first, so a short id with a bad character says so.
        assert!(matches!(
            DeviceId::parse("a:"),
            Err(DeviceIdError::InvalidCharacter { position: 1, .. })
        ));
    }

    #[test]
    fn borrows_as_str_for_map_lookups() {
        let mut seen = std::collections::HashSet::new();
        seen.insert(DeviceId::parse("device-1").unwrap());
        assert!(seen.contains("device-1"));
    }

    proptest! {
        #[test]
        fn every_allowed_string_of_allowed_length_parses(
            text in proptest::string::string_regex(&format!("{ALPHABET}{{4,90}}")).unwrap()
        ) {
            let id = DeviceId::parse(&text).unwrap();
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert_eq!(DeviceId::try_from(text.clone()).unwrap().into_string(), text);
        }

        #[test]
        fn wrong_length_over_the_alphabet_is_rejected_by_length(
            text in proptest::string::string_regex(&format!("{ALPHABET}{{0,3}}|{ALPHABET}{{91,300}}")).unwrap()
        ) {
            let error = DeviceId::parse(&text).unwrap_err();
            let is_length_error = matches!(
                error,
                DeviceIdError::TooShort { len, .. } | DeviceIdError::TooLong { len, .. }
                    if len == text.len()
            );
            prop_assert!(is_length_error);
        }

        #[test]
        fn any_foreign_character_is_reported_at_its_position(
            prefix in proptest::string::string_regex(&format!("{ALPHABET}{{0,100}}")).unwrap(),
            foreign in any::<char>().prop_filter("outside the alphabet", |&c| !is_allowed(c)),
            suffix in any::<String>(),
        ) {
            let text = format!("{prefix}{foreign}{suffix}");
            let error = DeviceId::parse(&text).unwrap_err();
            prop_assert_eq!(
                error,
                DeviceIdError::InvalidCharacter {
                    input: excerpt(&text, EXCERPT_CHARS),
                    character: foreign,
                    position: prefix.len(),
                }
            );
        }
    }
}
