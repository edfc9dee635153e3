//! Wall-clock helpers and the two time formats of the wire contract (RFC 3339 instants and .NET
//! TimeSpan durations). The Platform, unlike the device core, may read the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC instant with millisecond precision, e.g. `2026-01-02T03:04:05.678Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// .NET TimeSpan `[-][d.]hh:mm:ss` for a number of milliseconds.
pub(crate) fn timespan(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let total_seconds = ms.unsigned_abs() / 1000;
    let days = total_seconds / 86_400;
    let hours = (total_seconds % 86_400) / 3600;
    let minutes = (total_seconds % 3600) / 60;
    let seconds = total_seconds % 60;
    if days > 0 {
        format!("{sign}{days}.{hours:02}:{minutes:02}:{seconds:02}")
    } else {
        format!("{sign}{hours:02}:{minutes:02}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespan_matches_dotnet_format() {
        assert_eq!(timespan(39_000), "00:00:39");
        assert_eq!(timespan(734_136_000), "8.11:55:36");
        assert_eq!(timespan(-5_000), "-00:00:05");
    }

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
