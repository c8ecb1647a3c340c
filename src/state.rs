//! The vocabulary of a secret's state (fresh, due, expired, no-token, error, outside-policy,
//! not-opted-in) and how it is decided: pure, shared by the `status` command and the
//! refresher's state metrics, so both name a secret's state alike.

use std::time::{Duration, SystemTime};

use crate::policy;

/// The state of one secret, worst first where several apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// More than the refresh margin left.
    Fresh,
    /// Within the refresh margin: the refresher replaces it soon.
    Due,
    /// `expires-at` has passed.
    Expired,
    /// No `expires-at` (or an unreadable one) and no error: the webhook has not written it.
    NoToken,
    /// The `error` annotation is set: the last write got no token.
    Error,
    /// Refused by the policy given to `status` (the webhook leaves it, the refresher skips it).
    OutsidePolicy,
    /// Without the opt-in label (only when one secret is asked for by name).
    NotOptedIn,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Fresh,
        State::Due,
        State::Expired,
        State::NoToken,
        State::Error,
        State::OutsidePolicy,
        State::NotOptedIn,
    ];

    pub fn label(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Due => "due",
            State::Expired => "expired",
            State::NoToken => "no-token",
            State::Error => "error",
            State::OutsidePolicy => "outside-policy",
            State::NotOptedIn => "not-opted-in",
        }
    }

    /// Whether the refresher's metrics report it: its label selector lists only opted-in
    /// secrets.
    pub fn is_listed(self) -> bool {
        self != State::NotOptedIn
    }

    /// Whether the exit code reports it. A due secret is normal until it expires.
    pub fn is_problem(self) -> bool {
        !matches!(self, State::Fresh | State::Due)
    }

    /// For the verdict on one secret: "secret apps/pull has an error".
    pub fn sentence(self) -> &'static str {
        match self {
            State::Fresh => "is fresh",
            State::Due => "is due for a refresh",
            State::Expired => "has expired",
            State::NoToken => "has no token",
            State::Error => "has an error",
            State::OutsidePolicy => "is outside the policy",
            State::NotOptedIn => "is not opted in",
        }
    }

    /// For the verdict: "3 fresh", "1 with an error".
    pub fn phrase(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Due => "due for a refresh",
            State::Expired => "expired",
            State::NoToken => "without a token",
            State::Error => "with an error",
            State::OutsidePolicy => "outside the policy",
            State::NotOptedIn => "not opted in",
        }
    }
}

impl State {
    /// The state of an opted-in secret from what every reader of it has: whether the policy refuses
    /// it, its `error` annotation (see [`error_annotation`]; a policy refusal written there counts
    /// as outside the policy) and its readable `expires-at`.
    pub fn of(
        outside_policy: bool,
        error: Option<&str>,
        expires_at: Option<SystemTime>,
        now: SystemTime,
        margin: Duration,
    ) -> State {
        // The webhook writes its policy refusals into the error annotation too.
        if outside_policy || error.is_some_and(policy::is_refusal) {
            State::OutsidePolicy
        } else if error.is_some() {
            State::Error
        } else {
            match expires_at {
                None => State::NoToken,
                Some(t) if t <= now => State::Expired,
                Some(t) if t.duration_since(now).unwrap_or_default() > margin => State::Fresh,
                Some(_) => State::Due,
            }
        }
    }
}

/// The `error` annotation as it counts: trimmed, and absent when blank.
pub fn error_annotation(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|e| !e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_state_follows_policy_then_error_then_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let margin = Duration::from_secs(3600);
        let at = |s: u64| Some(now + Duration::from_secs(s));
        let refused = "refused by policy: namespace apps matches no rule";
        for (outside, error, expires_at, want) in [
            (true, None, at(7200), State::OutsidePolicy),
            // The webhook's own refusal, written into the error annotation.
            (false, Some(refused), at(7200), State::OutsidePolicy),
            (
                false,
                Some("ECR in us-east-1: timed out"),
                at(7200),
                State::Error,
            ),
            (false, None, None, State::NoToken),
            (false, None, Some(now), State::Expired),
            (false, None, at(3600), State::Due),
            (false, None, at(3601), State::Fresh),
        ] {
            assert_eq!(
                State::of(outside, error, expires_at, now, margin),
                want,
                "{outside} {error:?} {expires_at:?}"
            );
        }
    }

    #[test]
    fn a_blank_error_annotation_does_not_count() {
        assert_eq!(error_annotation(None), None);
        assert_eq!(error_annotation(Some(" \n")), None);
        assert_eq!(error_annotation(Some(" boom ")), Some("boom"));
    }

    #[test]
    fn labels_are_distinct_and_every_state_but_not_opted_in_is_listed() {
        let labels: std::collections::BTreeSet<_> = State::ALL.map(State::label).into();
        assert_eq!(labels.len(), State::ALL.len());
        let unlisted: Vec<_> = State::ALL.into_iter().filter(|s| !s.is_listed()).collect();
        assert_eq!(unlisted, [State::NotOptedIn]);
    }
}
