//! The refresher's decisions, as pure functions: which secrets are due, the touch patch, whether
//! a touch took, and how retries are spaced. The Kubernetes edge that lists and patches secrets
//! builds on these.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::secret::{EXPIRES_AT_ANNOTATION, TOUCHED_AT_ANNOTATION};
use crate::time::{parse_rfc3339, rfc3339};

/// Why a secret is (or is not) due for a touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// No `expires-at`: never injected (created while the webhook was down, or refused).
    Missing,
    /// `expires-at` is not an RFC 3339 time.
    Unreadable,
    /// The token expires within the refresh margin (or already has).
    Expiring { left: Duration },
    /// Not yet: it becomes due after `in_`.
    NotDue { in_: Duration },
}

impl Due {
    pub fn is_due(&self) -> bool {
        !matches!(self, Due::NotDue { .. })
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Due::Missing => "missing",
            Due::Unreadable => "unreadable",
            Due::Expiring { .. } => "expiring",
            Due::NotDue { .. } => "not_due",
        }
    }
}

/// Reads a secret's `expires-at` and decides whether it needs a touch.
pub fn due(
    annotations: Option<&BTreeMap<String, String>>,
    now: SystemTime,
    margin: Duration,
) -> Due {
    let Some(value) = annotations.and_then(|a| a.get(EXPIRES_AT_ANNOTATION)) else {
        return Due::Missing;
    };
    let Some(expires) = parse_rfc3339(value) else {
        return Due::Unreadable;
    };
    let left = expires.duration_since(now).unwrap_or_default();
    if left <= margin {
        Due::Expiring { left }
    } else {
        Due::NotDue { in_: left - margin }
    }
}

/// The merge patch a touch sends: only `touched-at`. The API server runs it through the webhook.
pub fn touch_patch(now: SystemTime) -> Value {
    json!({"metadata": {"annotations": {TOUCHED_AT_ANNOTATION: rfc3339(now)}}})
}

/// Whether the object a touch returned shows the webhook's work: `expires-at` past now plus the
/// margin. If not, the webhook was unreachable (the API server ignored it) or refused.
pub fn touch_took(
    returned: Option<&BTreeMap<String, String>>,
    now: SystemTime,
    margin: Duration,
) -> bool {
    !due(returned, now, margin).is_due()
}

/// Why a touch did not take, from the object it returned, for the Event and the log.
pub fn why_not_taken(returned: Option<&BTreeMap<String, String>>) -> String {
    const NOT_CALLED: &str = "the webhook was not called for it (unreachable, or the namespace \
        is outside the webhook configuration's namespaceSelector)";
    let get = |k: &str| returned.and_then(|a| a.get(k));
    if let Some(error) = get(crate::secret::ERROR_ANNOTATION) {
        return format!("the webhook could not write a token: {error}");
    }
    match get(EXPIRES_AT_ANNOTATION) {
        Some(at) => format!(
            "expires-at is still {at}, within the refresh margin: {NOT_CALLED}, or it had no \
             newer token (ECR failing; see the webhook's logs and ecr_requests_total)"
        ),
        None => format!(
            "no expires-at after the touch: {NOT_CALLED}, or it refused the secret by policy \
             (see the webhook's warnings)"
        ),
    }
}

/// Exponential back-off for a secret whose touches did not take: `base * 2^(failures-1)`, at
/// most `max`, with ±20 % jitter drawn from `jitter` in [0, 1).
pub fn retry_after(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    exp.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A stable per-secret offset in [0, window): secrets injected from one cached token expire
/// together, and touching each at its own point of the window keeps their refreshes from
/// arriving in lock-step.
pub fn spread(uid: &str, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let mut h = DefaultHasher::new();
    uid.hash(&mut h);
    let frac = (h.finish() % 1_000_000) as f64 / 1_000_000.0;
    window.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn ann(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(EXPIRES_AT_ANNOTATION.to_string(), v.to_string())])
    }

    #[test]
    fn explains_why_a_touch_did_not_take() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[],
                "no expires-at after the touch: the webhook was not called",
            ),
            (
                &[(EXPIRES_AT_ANNOTATION, "2026-01-01T00:00:00Z")],
                "expires-at is still 2026-01-01T00:00:00Z, within the refresh margin",
            ),
            (
                &[
                    (EXPIRES_AT_ANNOTATION, "2026-01-01T00:00:00Z"),
                    (crate::secret::ERROR_ANNOTATION, "ECR says no"),
                ],
                "the webhook could not write a token: ECR says no",
            ),
        ];
        for (pairs, want) in cases {
            let a: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let got = why_not_taken(Some(&a));
            assert!(got.starts_with(want), "{got}");
        }
        assert!(why_not_taken(None).starts_with("no expires-at"));
    }

    #[test]
    fn due_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let margin = Duration::from_secs(6 * H);
        let at = |secs: i64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs((1_800_000_000 + secs) as u64))
        };
        let cases: Vec<(Option<BTreeMap<String, String>>, Due)> = vec![
            (None, Due::Missing),
            (Some(BTreeMap::new()), Due::Missing),
            (Some(ann("tomorrow")), Due::Unreadable),
            (Some(ann("")), Due::Unreadable),
            (
                Some(ann(&at(-60))),
                Due::Expiring {
                    left: Duration::ZERO,
                },
            ),
            (
                Some(ann(&at(5 * H as i64))),
                Due::Expiring {
                    left: Duration::from_secs(5 * H),
                },
            ),
            (
                Some(ann(&at(6 * H as i64))),
                Due::Expiring {
                    left: Duration::from_secs(6 * H),
                },
            ),
            (
                Some(ann(&at(12 * H as i64))),
                Due::NotDue {
                    in_: Duration::from_secs(6 * H),
                },
            ),
        ];
        for (a, want) in cases {
            assert_eq!(due(a.as_ref(), now, margin), want, "{a:?}");
        }
    }

    #[test]
    fn touch_patch_sets_only_touched_at() {
        let p = touch_patch(SystemTime::UNIX_EPOCH);
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {"ecr-token-webhook/touched-at": "1970-01-01T00:00:00Z"}}})
        );
    }

    #[test]
    fn a_touch_took_only_if_expires_at_moved_past_the_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let margin = Duration::from_secs(6 * H);
        let fresh = ann(&rfc3339(now + Duration::from_secs(12 * H)));
        let old = ann(&rfc3339(now + Duration::from_secs(2 * H)));
        assert!(touch_took(Some(&fresh), now, margin));
        assert!(!touch_took(Some(&old), now, margin));
        assert!(!touch_took(None, now, margin));
    }

    #[test]
    fn retries_back_off_with_bounded_jitter() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(600));
        assert_eq!(retry_after(1, base, max, 0.5), Duration::from_secs(10));
        assert_eq!(retry_after(3, base, max, 0.5), Duration::from_secs(40));
        assert_eq!(retry_after(30, base, max, 0.5), Duration::from_secs(600));
        assert_eq!(retry_after(1, base, max, 0.0), Duration::from_secs(8));
        assert_eq!(retry_after(1, base, max, 1.0), Duration::from_secs(12));
        assert_eq!(retry_after(0, base, max, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn spread_is_stable_and_inside_the_window() {
        let w = Duration::from_secs(1800);
        assert_eq!(spread("a", w), spread("a", w));
        assert_eq!(spread("a", Duration::ZERO), Duration::ZERO);
        let offsets: Vec<Duration> = (0..1000).map(|i| spread(&format!("uid-{i}"), w)).collect();
        assert!(offsets.iter().all(|d| *d < w));
        // Roughly uniform: every tenth of the window is used.
        for tenth in 0..10 {
            let lo = w / 10 * tenth;
            assert!(
                offsets.iter().any(|d| *d >= lo && *d < lo + w / 10),
                "tenth {tenth}"
            );
        }
    }
}
