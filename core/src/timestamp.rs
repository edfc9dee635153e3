//! RFC 3339 instants, as the Platform sends `expirationTime` and `connectionStringExpiration`.
//!
//! The core counts time in milliseconds since the Unix epoch, so this module turns texts such as
//! `2026-11-25T18:00:00Z`, `2026-11-25T18:00:00.1234567+00:00` or `…-05:30` into that count and
//! back. Fractions finer than a millisecond are truncated; instants before 1970 are refused,
//! as the core has no use for them.
//!
//! Hand-written (days-from-civil arithmetic) rather than using `chrono` or `time`: those crates
//! add far more to the browser wasm bundle than the hundred lines needed here.

use crate::prelude::*;

use crate::excerpt::excerpt;
use crate::text::{Describe, Zeros};

const MS_PER_SECOND: i64 = 1_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const EPOCH_SHIFT_DAYS: i64 = 719_468;
const DAYS_PER_ERA: i64 = 146_097;

/// Why a text is not an RFC 3339 instant this module can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text does not have the shape `YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)`.
    Malformed {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
        /// What should have come next.
        expected: &'static str,
        /// The byte offset where it was missing.
        position: usize,
    },
    /// The text ends after the time of day, so it does not say which instant it means.
    MissingOffset {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
    },
    /// The month or the day of the month does not exist (e.g. February 30).
    InvalidDate {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
        /// The year as written.
        year: u32,
        /// The month as written.
        month: u32,
        /// The day of the month as written.
        day: u32,
    },
    /// A time-of-day or offset field is larger than a clock allows (leap seconds included).
    OutOfRange {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
        /// Which field: `"hour"`, `"minute"`, `"second"`, `"offset hour"` or `"offset minute"`.
        field: &'static str,
        /// The value as written.
        value: u32,
        /// The largest value allowed.
        max: u32,
    },
    /// The instant is before 1970-01-01T00:00:00Z.
    BeforeEpoch {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
    },
}

impl Describe for TimestampError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Malformed {
                input,
                expected,
                position,
            } => put!(
                out,
                "timestamp '",
                input,
                "' is not rfc 3339: expected ",
                expected,
                " at byte ",
                position
            ),
            Self::MissingOffset { input } => put!(
                out,
                "timestamp '",
                input,
                "' has no utc offset: it must end in 'Z' or ±hh:mm"
            ),
            Self::InvalidDate {
                input,
                year,
                month,
                day,
            } => put!(
                out,
                "timestamp '",
                input,
                "' names a day that does not exist: ",
                Zeros(u64::from(*year), 4),
                "-",
                Zeros(u64::from(*month), 2),
                "-",
                Zeros(u64::from(*day), 2)
            ),
            Self::OutOfRange {
                input,
                field,
                value,
                max,
            } => put!(
                out,
                "timestamp '",
                input,
                "' has ",
                field,
                " ",
                value,
                ", at most ",
                max,
                " is allowed"
            ),
            Self::BeforeEpoch { input } => put!(
                out,
                "timestamp '",
                input,
                "' is before 1970-01-01T00:00:00Z"
            ),
        }
    }
}

described!(TimestampError);

/// Reads an RFC 3339 instant as milliseconds since the Unix epoch.
///
/// Accepts `T`, `t` or a space between date and time, any number of fraction digits
/// (truncated to milliseconds), and `Z`, `z` or a `±hh:mm` offset, which is required.
pub fn parse_rfc3339(text: &str) -> Result<u64, TimestampError> {
    let mut cursor = Cursor { text, position: 0 };
    let year = cursor.number(4, "a 4-digit year")?;
    cursor.literal(b'-', "'-' after the year")?;
    let month = cursor.number(2, "a 2-digit month")?;
    cursor.literal(b'-', "'-' after the month")?;
    let day = cursor.number(2, "a 2-digit day")?;
    cursor.one_of(b"Tt ", "'T' between date and time")?;
    let hour = cursor.number(2, "a 2-digit hour")?;
    cursor.literal(b':', "':' after the hour")?;
    let minute = cursor.number(2, "a 2-digit minute")?;
    cursor.literal(b':', "':' after the minute")?;
    let second = cursor.number(2, "2-digit seconds")?;
    let millis = if cursor.peek() == Some(b'.') {
        cursor.position += 1;
        cursor.fraction_millis()?
    } else {
        0
    };
    let offset_minutes = cursor.offset_minutes()?;
    if cursor.peek().is_some() {
        return Err(cursor.malformed("the end of the text"));
    }

    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::InvalidDate {
            input: excerpt(text, EXCERPT_CHARS),
            year,
            month,
            day,
        });
    }
    check_range(text, "hour", hour, 23)?;
    check_range(text, "minute", minute, 59)?;
    // A leap second (`:60`) cannot be told apart from the next second in a millisecond count,
    // and .NET never writes one.
    check_range(text, "second", second, 59)?;

    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + i64::from(hour * 3_600 + minute * 60 + second)
        - offset_minutes * 60;
    let ms = seconds * MS_PER_SECOND + millis;
    u64::try_from(ms).map_err(|_| TimestampError::BeforeEpoch {
        input: excerpt(text, EXCERPT_CHARS),
    })
}

#[cfg(any(test, feature = "testing"))]
/// Writes milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// Instants from year 10000 on (beyond 253402300799999) get a longer year, which
/// [`parse_rfc3339`] does not read back.
pub fn format_rfc3339(ms: u64) -> String {
    // u64::MAX / 86_400_000 is about 2.1e11, far inside i64.
    let days = (ms / 86_400_000) as i64;
    let ms_of_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let mut text = String::with_capacity(24);
    put!(
        &mut text,
        // From 1970 on: the year is never negative.
        Zeros(year.unsigned_abs(), 4),
        '-',
        Zeros(u64::from(month), 2),
        '-',
        Zeros(u64::from(day), 2),
        'T',
        Zeros(ms_of_day / 3_600_000, 2),
        ':',
        Zeros(ms_of_day / 60_000 % 60, 2),
        ':',
        Zeros(ms_of_day / 1_000 % 60, 2),
        '.',
        Zeros(ms_of_day % 1_000, 3),
        'Z'
    );
    text
}

struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    fn malformed(&self, expected: &'static str) -> TimestampError {
        TimestampError::Malformed {
            input: excerpt(self.text, EXCERPT_CHARS),
            expected,
            position: self.position,
        }
    }

    fn number(&mut self, digits: usize, expected: &'static str) -> Result<u32, TimestampError> {
        let end = self.position + digits;
        let field = self
            .text
            .as_bytes()
            .get(self.position..end)
            .filter(|field| field.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| self.malformed(expected))?;
        self.position = end;
        Ok(field
            .iter()
            .fold(0, |value, digit| value * 10 + u32::from(digit - b'0')))
    }

    fn literal(&mut self, byte: u8, expected: &'static str) -> Result<(), TimestampError> {
        self.one_of(&[byte], expected).map(drop)
    }

    fn one_of(&mut self, bytes: &[u8], expected: &'static str) -> Result<u8, TimestampError> {
        match self.peek() {
            Some(found) if bytes.contains(&found) => {
                self.position += 1;
                Ok(found)
            }
            _ => Err(self.malformed(expected)),
        }
    }

    /// Reads one or more digits after the decimal point, keeping the first three.
    fn fraction_millis(&mut self) -> Result<i64, TimestampError> {
        let rest = self
            .text
            .as_bytes()
            .get(self.position..)
            .unwrap_or_default();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(self.malformed("fraction digits after '.'"));
        }
        let fraction = &rest[..digits];
        self.position += digits;
        Ok(fraction
            .iter()
            .chain(core::iter::repeat(&b'0'))
            .take(3)
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')))
    }

    /// Reads `Z` or `±hh:mm`, as minutes east of UTC.
    fn offset_minutes(&mut self) -> Result<i64, TimestampError> {
        let sign = match self.peek() {
            None => {
                return Err(TimestampError::MissingOffset {
                    input: excerpt(self.text, EXCERPT_CHARS),
                });
            }
            Some(b'Z' | b'z') => {
                self.position += 1;
                return Ok(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return Err(self.malformed("'Z' or a ±hh:mm offset")),
        };
        self.position += 1;
        let hours = self.number(2, "a 2-digit offset hour")?;
        self.literal(b':', "':' in the offset")?;
        let minutes = self.number(2, "a 2-digit offset minute")?;
        check_range(self.text, "offset hour", hours, 23)?;
        check_range(self.text, "offset minute", minutes, 59)?;
        Ok(sign * i64::from(hours * 60 + minutes))
    }
}

fn check_range(
    text: &str,
    field: &'static str,
    value: u32,
    max: u32,
) -> Result<(), TimestampError> {
    if value > max {
        return Err(TimestampError::OutOfRange {
            input: excerpt(text, EXCERPT_CHARS),
            field,
            value,
            max,
        });
    }
    Ok(())
}

fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

pub(crate) fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    // Count years from March, so the leap day is the last day of the year.
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - EPOCH_SHIFT_DAYS
}

#[cfg(any(test, feature = "testing"))]
/// The Gregorian (year, month, day) of a count of days since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + EPOCH_SHIFT_DAYS;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days - era * DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both values are small and positive by construction.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Error messages quote at most this many characters of the rejected text.
const EXCERPT_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// First instant of year 10000, the first one that needs a five-digit year.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;

    #[test]
    fn parses_what_the_platform_sends() {
        let cases = [
            ("2026-11-25T18:00:00Z", 1_795_629_600_000),
            ("2026-11-25T18:00:00.1234567+00:00", 1_795_629_600_123),
            ("2026-11-25T18:00:00-05:30", 1_795_649_400_000),
            ("2026-11-25T23:30:00+05:30", 1_795_629_600_000),
            ("2026-11-25t18:00:00z", 1_795_629_600_000),
            ("2026-11-25 18:00:00Z", 1_795_629_600_000),
            ("2026-11-25T18:00:00.5Z", 1_795_629_600_500),
            ("2026-11-25T18:00:00.000999999999Z", 1_795_629_600_000),
            ("2000-02-29T12:34:56Z", 951_827_696_000),
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T01:00:00+01:00", 0),
            ("1969-12-31T23:00:00.001-01:00", 1),
            ("9999-12-31T23:59:59.999Z", YEAR_10000_MS - 1),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_rfc3339(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn formats_with_milliseconds_and_z() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(1_795_629_600_123),
            "2026-11-25T18:00:00.123Z"
        );
        assert_eq!(format_rfc3339(951_827_696_000), "2000-02-29T12:34:56.000Z");
        assert_eq!(
            format_rfc3339(YEAR_10000_MS - 1),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339(YEAR_10000_MS), "10000-01-01T00:00:00.000Z");
        // Absurd values still format without panicking.
        assert!(format_rfc3339(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn rejects_days_that_do_not_exist() {
        let error = parse_rfc3339("2026-02-30T00:00:00Z").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"timestamp '2026-02-30T00:00:00Z' names a day that does not exist: 2026-02-30"#
        );
        for text in [
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-13-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-32T00:00:00Z",
        ] {
            assert!(
                matches!(parse_rfc3339(text), Err(TimestampError::InvalidDate { .. })),
                "{text}"
            );
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn rejects_clock_and_offset_fields_out_of_range() {
        let cases = [
            ("2026-11-25T24:00:00Z", "hour"),
            ("2026-11-25T18:60:00Z", "minute"),
            ("2026-11-25T23:59:60Z", "second"),
            ("2026-11-25T18:00:00+24:00", "offset hour"),
            ("2026-11-25T18:00:00-05:60", "offset minute"),
        ];
        for (text, expected_field) in cases {
            assert!(
                matches!(
                    parse_rfc3339(text),
                    Err(TimestampError::OutOfRange { field, .. }) if field == expected_field
                ),
                "{text}"
            );
        }
        assert_eq!(
            parse_rfc3339("2026-11-25T18:00:00+24:00")
                .unwrap_err()
                .to_string(),
            r#"timestamp '2026-11-25T18:00:00+24:00' has offset hour 24, at most 23 is allowed"#
        );
    }

    #[test]
    fn rejects_instants_before_1970() {
        for text in [
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:30:00+01:00",
            "0000-01-01T00:00:00Z",
        ] {
            assert_eq!(
                parse_rfc3339(text),
                Err(TimestampError::BeforeEpoch { input: text.into() })
            );
        }
    }

    #[test]
    fn requires_an_offset() {
        let error = parse_rfc3339("2026-11-25T18:00:00.1234567").unwrap_err();
        assert!(matches!(error, TimestampError::MissingOffset { .. }));
        assert_eq!(
            error.to_string(),
            r#"timestamp '2026-11-25T18:00:00.1234567' has no utc offset: it must end in 'Z' or ±hh:mm"#
        );
    }

    #[test]
    fn rejects_malformed_text_saying_where() {
        let error = parse_rfc3339("2026-11-25X18:00:00Z").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"timestamp '2026-11-25X18:00:00Z' is not rfc 3339: expected 'T' between date and time at byte 10"#
        );
        for (text, position) in [
            ("", 0),
            ("26-11-25T18:00:00Z", 0),
            ("2026/11/25T18:00:00Z", 4),
            ("2026-11-25T18:00Z", 16),
            ("2026-11-25T18:00:00.Z", 20),
            ("2026-11-25T18:00:00+0530", 22),
            ("2026-11-25T18:00:00+05", 22),
            ("2026-11-25T18:00:00 Z", 19),
            ("2026-11-25T18:00:00ZZ", 20),
            ("2026-11-25T18:00:00Z ", 20),
            ("2026-11-25T1٣:00:00Z", 11),
            ("+2026-11-25T18:00:00Z", 0),
        ] {
            assert!(
                matches!(
                    parse_rfc3339(text),
                    Err(TimestampError::Malformed { position: at, .. }) if at == position
                ),
                "{text:?} gave {:?}",
                parse_rfc3339(text)
            );
        }
    }

    #[test]
    fn calendar_arithmetic_matches_counting_days_one_by_one() {
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..=(400 * 366) {
            assert_eq!(days_from_civil(year, month, day), days);
            assert_eq!(civil_from_days(days), (i64::from(year), month, day));
            day += 1;
            if day > days_in_month(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    /// `httpdate` is an independent implementation of the same calendar.
    fn http_date_fields(ms: u64) -> (String, String, String, String) {
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms));
        // "Wed, 25 Nov 2026 18:00:00 GMT"
        let fields: Vec<&str> = text.split(' ').collect();
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|&name| name == fields[2])
        .unwrap()
            + 1;
        (
            fields[3].to_owned(),
            format!("{month:02}"),
            fields[1].to_owned(),
            fields[4].to_owned(),
        )
    }

    proptest! {
        #[test]
        fn round_trips_every_millisecond_before_year_10000(ms in 0..YEAR_10000_MS) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }

        #[test]
        fn agrees_with_httpdate(ms in 0..YEAR_10000_MS) {
            let text = format_rfc3339(ms);
            let (year, month, day, time) = http_date_fields(ms);
            prop_assert_eq!(&text[..19], format!("{year}-{month}-{day}T{time}"));
        }

        #[test]
        fn offsets_shift_the_instant(
            ms in 2 * 86_400_000..YEAR_10000_MS - 2 * 86_400_000,
            offset_minutes in -(23 * 60 + 59)..=(23i64 * 60 + 59),
        ) {
            // Write the local wall-clock time of `ms` at the offset, then read it back.
            let local = format_rfc3339(ms.checked_add_signed(offset_minutes * 60_000).unwrap());
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let magnitude = offset_minutes.unsigned_abs();
            let text = format!(
                "{}{sign}{:02}:{:02}",
                &local[..23],
                magnitude / 60,
                magnitude % 60
            );
            prop_assert_eq!(parse_rfc3339(&text), Ok(ms));
        }

        #[test]
        fn junk_never_panics(text in any::<String>()) {
            let _ = parse_rfc3339(&text);
        }

        #[test]
        fn near_misses_never_panic(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]{0,12}[Zz+-]?[0-9:]{0,6}") {
            if let Ok(ms) = parse_rfc3339(&text) {
                prop_assert!(ms < YEAR_10000_MS + 86_400_000);
            }
        }
    }
}
