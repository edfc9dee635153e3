//! .NET `TimeSpan` text, as the Platform sends `tokenRemainingLifetime`.
//!
//! The Platform serializes durations in .NET's constant ("c") format,
//! `[-][d.]hh:mm:ss[.fffffff]`, where the fraction counts 100 ns ticks. The core works in
//! signed milliseconds, so parsing truncates below a millisecond (towards zero) and formatting
//! writes the canonical "c" text for a millisecond count.
//!
//! Hand-written: the grammar is a dozen lines, and no small crate speaks it.

use crate::prelude::*;

use crate::excerpt::excerpt;
use crate::text::Describe;
#[cfg(any(test, feature = "testing"))]
use crate::text::Zeros;

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// Why a text is not a .NET `TimeSpan` this module can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeSpanError {
    /// The text does not have the shape `[-][d.]hh:mm:ss[.fffffff]`.
    Malformed {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
    },
    /// Hours, minutes or seconds are larger than a clock allows.
    OutOfRange {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
        /// Which field is too large: `"hours"`, `"minutes"` or `"seconds"`.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// The duration does not fit in a signed 64-bit count of milliseconds.
    Overflow {
        /// The rejected text, shortened to its first 64 characters and `…` when longer.
        input: String,
    },
}

impl Describe for TimeSpanError {
    fn describe(&self, out: &mut String) {
        match self {
            Self::Malformed { input } => put!(
                out,
                "timespan '",
                input,
                "' is not of the form [-][d.]hh:mm:ss[.fffffff]"
            ),
            Self::OutOfRange {
                input,
                field,
                value,
                max,
            } => put!(
                out,
                "timespan '",
                input,
                "' has ",
                value,
                " ",
                field,
                ", at most ",
                max,
                " are allowed"
            ),
            Self::Overflow { input } => put!(
                out,
                "timespan '",
                input,
                "' is too long to count in signed 64-bit milliseconds"
            ),
        }
    }
}

described!(TimeSpanError);

/// Reads a .NET `TimeSpan` (`[-][d.]hh:mm:ss[.fffffff]`) as signed milliseconds.
///
/// Hours must be 0–23 (a larger count belongs in the days), minutes and seconds 0–59; hours,
/// minutes and seconds take one or two digits, the fraction one to seven. Sub-millisecond
/// digits are dropped, so `-00:00:00.0009` is 0.
pub fn parse_timespan(text: &str) -> Result<i64, TimeSpanError> {
    let malformed = || TimeSpanError::Malformed {
        input: excerpt(text, EXCERPT_CHARS),
    };
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut fields = unsigned.split(':');
    let (Some(days_and_hours), Some(minutes), Some(seconds_and_fraction), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed());
    };
    let (days, hours) = match days_and_hours.split_once('.') {
        Some((days, hours)) => (days, hours),
        None => ("0", days_and_hours),
    };
    let (seconds, fraction) = match seconds_and_fraction.split_once('.') {
        Some((seconds, fraction)) => (seconds, fraction),
        None => (seconds_and_fraction, "0"),
    };

    let days = decimal(days, 1, usize::MAX).ok_or_else(malformed)?;
    let clock_field = |digits: &str, field: &'static str, max: u64| {
        let value = decimal(digits, 1, 2).ok_or_else(malformed)?;
        if value > max {
            return Err(TimeSpanError::OutOfRange {
                input: excerpt(text, EXCERPT_CHARS),
                field,
                value,
                max,
            });
        }
        Ok(value)
    };
    let hours = clock_field(hours, "hours", 23)?;
    let minutes = clock_field(minutes, "minutes", 59)?;
    let seconds = clock_field(seconds, "seconds", 59)?;
    decimal(fraction, 1, 7).ok_or_else(malformed)?;
    let millis = fraction_millis(fraction);

    let overflow = || TimeSpanError::Overflow {
        input: excerpt(text, EXCERPT_CHARS),
    };
    let magnitude = days
        .checked_mul(MS_PER_DAY)
        .and_then(|ms| ms.checked_add(hours * MS_PER_HOUR + minutes * MS_PER_MINUTE))
        .and_then(|ms| ms.checked_add(seconds * MS_PER_SECOND + millis))
        .ok_or_else(overflow)?;
    let signed = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    signed.ok_or_else(overflow)
}

#[cfg(any(test, feature = "testing"))]
/// Writes signed milliseconds in .NET's constant ("c") `TimeSpan` format.
///
/// Days appear only when there are any, the fraction only when it is not zero, and then with
/// all seven digits, as .NET writes them: `1.02:03:04.5000000`, `00:10:00`, `-00:00:01`.
pub fn format_timespan(ms: i64) -> String {
    let magnitude = ms.unsigned_abs();
    let days = magnitude / MS_PER_DAY;
    let hours = magnitude % MS_PER_DAY / MS_PER_HOUR;
    let minutes = magnitude % MS_PER_HOUR / MS_PER_MINUTE;
    let seconds = magnitude % MS_PER_MINUTE / MS_PER_SECOND;
    let millis = magnitude % MS_PER_SECOND;

    let mut text = String::with_capacity(24);
    if ms < 0 {
        text.push('-');
    }
    if days > 0 {
        put!(&mut text, days, '.');
    }
    put!(
        &mut text,
        Zeros(hours, 2),
        ':',
        Zeros(minutes, 2),
        ':',
        Zeros(seconds, 2)
    );
    if millis > 0 {
        put!(&mut text, '.', Zeros(millis, 3), "0000");
    }
    text
}

/// The value of `digits` if it is `min..=max` ASCII digits, saturating at `u64::MAX`.
fn decimal(digits: &str, min: usize, max: usize) -> Option<u64> {
    let shaped = (min..=max).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    shaped.then(|| {
        digits.bytes().fold(0u64, |value, digit| {
            value
                .saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        })
    })
}

/// Milliseconds in a validated fraction of a second, truncating the digits past the third.
fn fraction_millis(fraction: &str) -> u64 {
    fraction
        .bytes()
        .chain(core::iter::repeat(b'0'))
        .take(3)
        .fold(0, |value, digit| value * 10 + u64::from(digit - b'0'))
}

/// Error messages quote at most this many characters of the rejected text.
const EXCERPT_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_dotnet_writes() {
        let cases = [
            ("00:10:00", 600_000),
            ("00:00:00", 0),
            ("-00:00:01", -1_000),
            ("1.02:03:04.5000000", 93_784_500),
            ("23:59:59.9999999", 86_399_999),
            ("7.00:00:00", 7 * 86_400_000),
            ("-1.00:00:00.0010000", -86_400_001),
            // TimeSpan.MaxValue and MinValue.
            ("10675199.02:48:05.4775807", 922_337_203_685_477),
            ("-10675199.02:48:05.4775808", -922_337_203_685_477),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_timespan(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn accepts_short_fields_and_fractions() {
        assert_eq!(parse_timespan("1:2:3"), Ok(3_723_000));
        assert_eq!(parse_timespan("00:00:01.5"), Ok(1_500));
        assert_eq!(parse_timespan("00:00:01.05"), Ok(1_050));
        assert_eq!(parse_timespan("00:00:00.0005"), Ok(0));
        // Truncation goes towards zero on both sides.
        assert_eq!(parse_timespan("00:00:00.0019999"), Ok(1));
        assert_eq!(parse_timespan("-00:00:00.0019999"), Ok(-1));
        assert_eq!(parse_timespan("-00:00:00.0009"), Ok(0));
    }

    #[test]
    fn rejects_clock_fields_out_of_range() {
        let error = parse_timespan("1.24:00:00").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"timespan '1.24:00:00' has 24 hours, at most 23 are allowed"#
        );
        // .NET reads a bare "24:00:00" as 24 days; refusing it avoids guessing.
        assert!(matches!(
            parse_timespan("24:00:00"),
            Err(TimeSpanError::OutOfRange {
                field: "hours",
                value: 24,
                ..
            })
        ));
        assert!(matches!(
            parse_timespan("00:60:00"),
            Err(TimeSpanError::OutOfRange {
                field: "minutes",
                ..
            })
        ));
        assert!(matches!(
            parse_timespan("00:00:60"),
            Err(TimeSpanError::OutOfRange {
                field: "seconds",
                max: 59,
                ..
            })
        ));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "-",
            "10",
            "00:00",
            "00:00:00:00",
            "00:00:00.",
            "00:00:00.12345678",
            ".00:00:00",
            "1.:00:00",
            "+00:00:00",
            " 00:00:00",
            "00:00:00 ",
            "--00:00:01",
            "a.00:00:00",
            "000:00:00",
            "00:0x:00",
            "00:00:00.-1",
            "1.2.03:00:00",
            "٣:00:00",
        ] {
            assert!(
                matches!(parse_timespan(text), Err(TimeSpanError::Malformed { .. })),
                "{text:?} gave {:?}",
                parse_timespan(text)
            );
        }
        assert_eq!(
            parse_timespan("soon").unwrap_err().to_string(),
            r#"timespan 'soon' is not of the form [-][d.]hh:mm:ss[.fffffff]"#
        );
    }

    #[test]
    fn rejects_what_does_not_fit_in_i64_milliseconds() {
        let too_many_days = format!("{}.00:00:00", u64::MAX / MS_PER_DAY + 1);
        assert!(matches!(
            parse_timespan(&too_many_days),
            Err(TimeSpanError::Overflow { .. })
        ));
        let huge_digits = format!("{}.00:00:00", "9".repeat(10_000));
        let error = parse_timespan(&huge_digits).unwrap_err();
        assert!(matches!(error, TimeSpanError::Overflow { .. }));
        assert!(error.to_string().len() < 200);
        // Just past i64::MAX ms, and exactly i64::MIN ms.
        assert!(matches!(
            parse_timespan("106751991167.07:12:55.8080000"),
            Err(TimeSpanError::Overflow { .. })
        ));
        assert_eq!(
            parse_timespan("-106751991167.07:12:55.8080000"),
            Ok(i64::MIN)
        );
    }

    #[test]
    fn formats_in_dotnet_constant_format() {
        assert_eq!(format_timespan(600_000), "00:10:00");
        assert_eq!(format_timespan(0), "00:00:00");
        assert_eq!(format_timespan(-1_000), "-00:00:01");
        assert_eq!(format_timespan(93_784_500), "1.02:03:04.5000000");
        assert_eq!(format_timespan(1), "00:00:00.0010000");
        assert_eq!(format_timespan(-1), "-00:00:00.0010000");
        assert_eq!(format_timespan(i64::MAX), "106751991167.07:12:55.8070000");
        assert_eq!(format_timespan(i64::MIN), "-106751991167.07:12:55.8080000");
    }

    proptest! {
        #[test]
        fn round_trips_within_dotnet_range(ms in -(10i64.pow(13) - 1)..10i64.pow(13)) {
            prop_assert_eq!(parse_timespan(&format_timespan(ms)), Ok(ms));
        }

        #[test]
        fn round_trips_any_i64(ms in any::<i64>()) {
            prop_assert_eq!(parse_timespan(&format_timespan(ms)), Ok(ms));
        }

        #[test]
        fn junk_never_panics(text in any::<String>()) {
            let _ = parse_timespan(&text);
        }

        #[test]
        fn near_misses_never_panic(text in "-?[0-9.:]{0,30}") {
            if let Ok(ms) = parse_timespan(&text) {
                // Anything accepted is a real duration that formats back to the same value.
                prop_assert_eq!(parse_timespan(&format_timespan(ms)), Ok(ms));
            }
        }
    }
}
