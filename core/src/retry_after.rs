//! How long the Platform asks us to wait, from an HTTP `Retry-After` header (RFC 9110 §10.2.3).
//!
//! The value is either delta-seconds (`120`) or an HTTP-date (`Wed, 25 Nov 2026 18:00:00 GMT`,
//! or the obsolete RFC 850 and asctime forms); dates are read with the small `httpdate` crate.
//! The host's clock comes in as `now_ms`, so the answer is a delay in milliseconds. A server
//! that asks for more than a day is treated as asking for a day, so one bad header cannot park
//! the device for years.

use std::time::UNIX_EPOCH;

/// The longest delay a `Retry-After` header can impose: 24 hours, in milliseconds.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1_000;

/// The delay in milliseconds that a `Retry-After` value asks for, measured from `now_ms`
/// (milliseconds since the Unix epoch).
///
/// A date in the past gives `Some(0)`; delays above [`MAX_RETRY_AFTER_MS`] are capped to it;
/// a value that is neither delta-seconds nor an HTTP-date gives `None`.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still a valid, if absurd, delay: cap it.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(seconds.saturating_mul(1_000).min(MAX_RETRY_AFTER_MS));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    // httpdate reads no year before 1970, but a date before the epoch is simply in the past.
    let date_ms = date.duration_since(UNIX_EPOCH).map_or(0, |since_epoch| {
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    });
    Some(date_ms.saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// 2026-11-25T18:00:00Z.
    const NOW_MS: u64 = 1_795_629_600_000;

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
        fn near_misses_never_panic(value in "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} [0-9]{2,5} [0-9:]{8} GMT", now_ms in any::<u64>()) {
            if let Some(delay) = parse_retry_after(&value, now_ms) {
                prop_assert!(delay <= MAX_RETRY_AFTER_MS);
            }
        }
    }
}
