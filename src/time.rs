//! Timestamps and durations as the design writes them.

use std::time::{Duration, SystemTime};

/// RFC 3339 in UTC, whole seconds: `2026-11-22T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 UTC timestamp as written by [`rfc3339`] (fractions allowed).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s.trim()).ok()
}

/// Parses `90s`, `5m`, `6h`, `1h30m` (and Go's `1m0s`, which the API server sends).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("6h", Some(21600)),
            ("1h30m", Some(5400)),
            ("1m0s", Some(60)),
            (" 10s ", Some(10)),
            ("", None),
            ("ten", None),
            ("-5s", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_duration(s).ok(),
                want.map(Duration::from_secs),
                "{s:?}"
            );
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let s = rfc3339(t);
        assert_eq!(s, "2026-11-18T11:06:40Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }
}
