//! How long the Platform asks us to wait, from an HTTP `Retry-After` header (RFC 9110 §10.2.3).
//!
//! The value is either delta-seconds (`120`) or an HTTP-date (`Wed, 25 Nov 2026 18:00:00 GMT`,
//! or the obsolete RFC 850 and asctime forms). The host's clock comes in as `now_ms`, so the
//! answer is a delay in milliseconds. A server that asks for more than a day is treated as
//! asking for a day, so one bad header cannot park the device for years.
//!
//! Dates are read by hand rather than with the `httpdate` crate, which accepts exactly the
//! same texts (a property test checks the two agree): through the standard library's clock
//! type and the panics of its round trip, the crate added 4.4 KB gzipped to the browser
//! bundle, this reader 0.7 KB.

use crate::timestamp::{days_from_civil, days_in_month};

/// The longest delay a `Retry-After` header can impose: 24 hours, in milliseconds.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1_000;

/// The delay in milliseconds that a `Retry-After` value asks for, measured from `now_ms`
/// (milliseconds since the Unix epoch).
///
/// A date in the past gives `Some(0)`; delays above [`MAX_RETRY_AFTER_MS`] are capped to it;
/// a value that is neither delta-seconds nor an HTTP-date gives `None`. A header the server
/// sent more than once comes as its values joined by `, ` (as `fetch` hands it over, and as
/// hosts must): the first value that reads counts, dates' own commas notwithstanding.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    parse_one(value, now_ms).or_else(|| {
        // The shortest prefix up to a comma that reads: `120, 60` is 120 s, and the first of
        // two dates ends at the comma after its `GMT`, not the one after its weekday.
        // Bytes and `get`: no string searcher and no slicing panic path in the wasm (the two
        // cost 1.4 KB and pulled in `char` and `Range` formatting).
        value
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b',')
            .find_map(|(at, _)| parse_one(value.get(..at)?, now_ms))
    })
}

fn parse_one(value: &str, now_ms: u64) -> Option<u64> {
    let value = trim(value.as_bytes(), |&b| b == b' ' || b == b'\t');
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        // Too many digits for u64 is still a valid, if absurd, delay: cap it.
        let seconds = value.iter().fold(0u64, |seconds, digit| {
            seconds
                .saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        });
        return Some(seconds.saturating_mul(1_000).min(MAX_RETRY_AFTER_MS));
    }
    let date_ms = parse_http_date(value)? * 1_000;
    Some(date_ms.saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS))
}

/// Full weekday names, Monday first; the first three letters are the short names.
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
/// Three-letter month names, January first.
const MONTHS: &[u8; 36] = b"JanFebMarAprMayJunJulAugSepOctNovDec";

/// The forms of an HTTP-date as templates. `a` and `b` are the letters of the short weekday
/// and month names (as in `strftime`); `d`, `y`, `h`, `m`, `s` digits of the day, year,
/// hour, minute and second; `_` a digit or a space (asctime pads the day); `?` any byte;
/// any other byte stands for itself.
const IMF_FIXDATE: &[u8] = b"aaa, dd bbb yyyy hh:mm:ss GMT";
/// C's `asctime` form, the obsolete one without a time zone.
const ASCTIME: &[u8] = b"aaa bbb _d hh:mm:ss yyyy";
/// What follows the full weekday name in an RFC 850 date. Like `httpdate`, the byte after
/// the year goes unchecked.
const RFC_850_AFTER_WEEKDAY: &[u8] = b", dd-bbb-yy?hh:mm:ss GMT";
/// The field each template letter fills, by index in [`Fields`].
const FIELD_LETTERS: &[u8; 7] = b"dyhmsab";

/// Day, year, hour, minute, second, then the weekday and month letters packed big-endian.
type Fields = [u32; 7];

/// Reads an HTTP-date in any of its three forms (RFC 9110 §5.6.7) as seconds since the Unix
/// epoch. Like `httpdate`: surrounding whitespace is ignored, names are case-sensitive, the
/// year must be 1970–9999 (two-digit RFC 850 years below 70 are 20xx) and the weekday must
/// be the date's.
fn parse_http_date(text: &[u8]) -> Option<u64> {
    if !text.is_ascii() {
        return None;
    }
    // What `str::trim` strips from ASCII text.
    let text = trim(text, |&b| matches!(b, b'\t'..=b'\r' | b' '));
    let (fields, weekday) = match fill(IMF_FIXDATE, text).or_else(|| fill(ASCTIME, text)) {
        Some(fields) => {
            let weekday = WEEKDAYS
                .iter()
                .position(|name| pack(&name.as_bytes()[..3]) == fields[5])?;
            (fields, weekday)
        }
        None => {
            let (weekday, rest) = WEEKDAYS
                .iter()
                .enumerate()
                .find_map(|(index, name)| Some((index, text.strip_prefix(name.as_bytes())?)))?;
            let mut fields = fill(RFC_850_AFTER_WEEKDAY, rest)?;
            fields[1] += if fields[1] < 70 { 2000 } else { 1900 };
            (fields, weekday)
        }
    };
    let [day, year, hour, minute, second, _, month_letters] = fields;
    let month = MONTHS
        .chunks(3)
        .position(|name| pack(name) == month_letters)? as u32
        + 1;
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    if (days + 3) % 7 != weekday as i64 {
        return None;
    }
    let seconds = u64::from(hour * 3_600 + minute * 60 + second);
    u64::try_from(days).ok().map(|days| days * 86_400 + seconds)
}

/// `bytes` without the bytes that `strip` accepts at either end.
fn trim(mut bytes: &[u8], strip: fn(&u8) -> bool) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && strip(first)
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && strip(last)
    {
        bytes = rest;
    }
    bytes
}

/// Matches `text` against a template (see [`IMF_FIXDATE`]) and collects its fields.
fn fill(template: &[u8], text: &[u8]) -> Option<Fields> {
    if text.len() != template.len() {
        return None;
    }
    let mut fields = [0; 7];
    for (&expected, &byte) in template.iter().zip(text) {
        let field = if expected == b'_' { b'd' } else { expected };
        match FIELD_LETTERS.iter().position(|&letter| letter == field) {
            Some(name @ 5..) => fields[name] = fields[name] << 8 | u32::from(byte),
            Some(number) if byte.is_ascii_digit() => {
                fields[number] = fields[number] * 10 + u32::from(byte - b'0');
            }
            Some(_) if expected == b'_' && byte == b' ' => {}
            None if expected == b'?' || expected == byte => {}
            _ => return None,
        }
    }
    Some(fields)
}

/// Up to four bytes as one big-endian number, so names compare as integers.
fn pack(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0, |packed, &byte| packed << 8 | u32::from(byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn a_header_sent_twice_counts_by_its_first_value() {
        assert_eq!(parse_retry_after("120, 60", 0), Some(120_000));
        assert_eq!(
            parse_retry_after("junk, 60", 0),
            None,
            "the first value, or none"
        );
        let now = 1_445_412_400_000; // 2015-10-21 07:26:40 UTC
        assert_eq!(
            parse_retry_after(
                "Wed, 21 Oct 2015 07:28:00 GMT, Thu, 22 Oct 2015 07:28:00 GMT",
                now
            ),
            Some(80_000)
        );
    }
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-25T18:00:00Z.
    const NOW_MS: u64 = 1_795_629_600_000;

    /// What the `httpdate` crate reads from `text`, in seconds since the epoch.
    fn reference(text: &str) -> Option<u64> {
        let date = httpdate::parse_http_date(text).ok()?;
        Some(date.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    /// The implementation before the hand-written date reader, on `httpdate`.
    fn reference_retry_after(value: &str, now_ms: u64) -> Option<u64> {
        let value = value.trim_matches([' ', '\t']);
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(seconds.saturating_mul(1_000).min(MAX_RETRY_AFTER_MS));
        }
        let date_ms = reference(value)? * 1_000;
        Some(date_ms.saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS))
    }

    /// `seconds` written as an IMF-fixdate, an RFC 850 date and an asctime date.
    fn date_forms(seconds: u64) -> [String; 3] {
        let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds));
        // `Sun, 06 Nov 1994 08:49:37 GMT`
        let (short_weekday, day, month) = (&imf[..3], &imf[5..7], &imf[8..11]);
        let (year, time) = (&imf[12..16], &imf[17..25]);
        let weekday = WEEKDAYS
            .iter()
            .find(|name| name.starts_with(short_weekday))
            .unwrap();
        let rfc850 = format!("{weekday}, {day}-{month}-{} {time} GMT", &year[2..]);
        let asctime_day = day.replacen('0', " ", usize::from(day.starts_with('0')));
        let asctime = format!("{short_weekday} {month} {asctime_day} {time} {year}");
        [imf, rfc850, asctime]
    }

    #[test]
    fn reads_delta_seconds() {
        assert_eq!(parse_retry_after("120", NOW_MS), Some(120_000));
        assert_eq!(parse_retry_after("0", NOW_MS), Some(0));
        assert_eq!(parse_retry_after(" 5\t", NOW_MS), Some(5_000));
        assert_eq!(parse_retry_after("007", NOW_MS), Some(7_000));
    }

    #[test]
    fn caps_absurd_delays_at_a_day() {
        assert_eq!(parse_retry_after("86400", NOW_MS), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("86401", NOW_MS), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", NOW_MS),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW_MS),
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn reads_http_dates_in_all_three_forms() {
        for value in [
            "Wed, 25 Nov 2026 18:02:00 GMT",
            "Wednesday, 25-Nov-26 18:02:00 GMT",
            "Wed Nov 25 18:02:00 2026",
        ] {
            assert_eq!(parse_retry_after(value, NOW_MS), Some(120_000), "{value}");
        }
        // The date has whole seconds; the clock has milliseconds.
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 18:00:01 GMT", NOW_MS + 250),
            Some(750)
        );
    }

    #[test]
    fn a_date_in_the_past_means_now() {
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 17:59:59 GMT", NOW_MS),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", NOW_MS),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 18:00:00 GMT", NOW_MS),
            Some(0)
        );
    }

    #[test]
    fn junk_gives_none() {
        for value in [
            "",
            "  ",
            "-5",
            "+5",
            "1.5",
            "1e3",
            "soon",
            "120 seconds",
            "Wed, 30 Feb 2026 18:00:00 GMT",
            "Wed, 25 Nov 2026 18:00:00 CET",
            "2026-11-25T18:00:00Z",
            "Thu, 25 Nov 2026 18:00:00 GMT",
            "Wed, 25 Nov 1969 18:00:00 GMT",
            "Wed, 25 Nov 2026 24:00:00 GMT",
            "Wed, 25 nov 2026 18:00:00 GMT",
            "Wed Nov 25 18:00:00 2026 GMT",
            "Wednesday, 25-Nov-2026 18:00:00 GMT",
            "٣",
        ] {
            assert_eq!(parse_retry_after(value, NOW_MS), None, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn delta_seconds_are_exact_up_to_the_cap(seconds in 0u64..=86_400, now_ms in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(&seconds.to_string(), now_ms), Some(seconds * 1_000));
        }

        #[test]
        fn dates_give_the_distance_from_now(
            date_seconds in 0u64..253_402_300_800,
            now_ms in 0u64..253_402_300_800_000,
        ) {
            let value = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(date_seconds));
            let expected = (date_seconds * 1_000).saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS);
            prop_assert_eq!(parse_retry_after(&value, now_ms), Some(expected));
        }

        #[test]
        fn junk_never_panics_and_never_exceeds_the_cap(value in any::<String>(), now_ms in any::<u64>()) {
            if let Some(delay) = parse_retry_after(&value, now_ms) {
                prop_assert!(delay <= MAX_RETRY_AFTER_MS);
            }
        }

        #[test]
        fn reads_every_form_as_httpdate_does(seconds in 0u64..253_402_300_800, form in 0usize..3) {
            let text = &date_forms(seconds)[form];
            prop_assert_eq!(parse_http_date(text.as_bytes()), reference(text), "{}", text);
        }

        #[test]
        fn agrees_with_httpdate_on_near_misses(
            seconds in 0u64..253_402_300_800,
            form in 0usize..3,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), "[ 0-9:,A-Za-z\t\n\x0B\r-]"), 1..3),
        ) {
            let mut text = date_forms(seconds)[form].clone().into_bytes();
            for (index, replacement) in edits {
                let at = index.index(text.len());
                text.splice(at..at + 1, replacement.bytes());
            }
            let text = String::from_utf8(text).unwrap();
            prop_assert_eq!(parse_http_date(text.as_bytes()), reference(&text), "{:?}", text);
        }

        #[test]
        fn delays_agree_with_the_httpdate_implementation(
            value in "[ \t\n0-9]{0,25}|[ \t]?[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} 2[0-9]{3} [0-9:]{8} GMT[ \t\r]?",
            now_ms in any::<u64>(),
        ) {
            prop_assert_eq!(parse_retry_after(&value, now_ms), reference_retry_after(&value, now_ms));
        }

        #[test]
        fn agrees_with_httpdate_on_junk(text in any::<String>()) {
            prop_assert_eq!(parse_http_date(text.as_bytes()), reference(&text));
        }

        #[test]
        fn near_misses_never_panic(value in "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} [0-9]{2,5} [0-9:]{8} GMT", now_ms in any::<u64>()) {
            if let Some(delay) = parse_retry_after(&value, now_ms) {
                prop_assert!(delay <= MAX_RETRY_AFTER_MS);
            }
        }
    }
}
