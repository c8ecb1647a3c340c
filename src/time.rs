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

/// A duration that is not one, with the text given.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {input:?}: {error}")]
pub struct DurationError {
    input: String,
    error: humantime::DurationError,
}

/// Parses `90s`, `5m`, `6h`, `1h30m` (and Go's `1m0s`, which the API server sends). Also the
/// flags' value parser: clap prints the error after the flag's name.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|error| DurationError {
        input: s.to_string(),
        error,
    })
}

/// `5h12m`, `3m20s`, `45s`, `2d3h`: the two largest units, the second dropped at zero.
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if d_ > 0 {
        two(d_, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m >= 10 {
        format!("{m}m")
    } else if m > 0 {
        two(m, "m", sec, "s")
    } else {
        format!("{sec}s")
    }
}

/// `12m ago`, or `in 2m` for a time ahead of this clock.
pub fn relative_past(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", compact(d)),
        Err(e) => format!("in {}", compact(e.duration())),
    }
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
