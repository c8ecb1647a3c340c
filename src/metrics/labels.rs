//! The label values that are closed sets: every value is known, so every series can exist
//! (at 0) before its first event. The outcomes of this crate's own steps are declared here;
//! the vocabularies of the pure modules (a secret's [`State`], a policy's [`RefusalKind`])
//! stay there and are encoded here by their `label()`.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::policy::RefusalKind;
use crate::state::State;

/// Label enums whose every value is known ([`ALL`](Operation::ALL)), so a series can be exported
/// at 0 before its first event: an alert on `increase()` sees a counter's first event only if
/// the series existed before it.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.label())
            }
        }
    };
}

label_enum! {
    /// The admission request's operation (a fixed set, whatever the request says).
    Operation {
        Create => "CREATE",
        Update => "UPDATE",
        Delete => "DELETE",
        Connect => "CONNECT",
        Other => "other",
    }
}

impl Operation {
    /// The operations the webhook configuration sends.
    pub const SERVED: [Operation; 2] = [Operation::Create, Operation::Update];

    pub fn parse(op: &str) -> Self {
        match op {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            _ => Operation::Other,
        }
    }
}

label_enum! {
    /// What the webhook did with an admission request.
    AdmissionOutcome {
        Patched => "patched",
        PatchedStale => "patched_stale",
        /// Some registries written, others failed.
        Partial => "partial",
        Skipped => "skipped",
        Ignored => "ignored",
        Policy => "policy",
        Invalid => "invalid",
        FailedOpen => "failed_open",
        Denied => "denied",
    }
}

label_enum! {
    /// How an ECR GetAuthorizationToken call ended: success, or the step that failed.
    EcrOutcome {
        Success => "success",
        Error => "error",
        Credentials => "credentials",
        AssumeRole => "assume_role",
        Expired => "expired",
        Malformed => "malformed",
        Timeout => "timeout",
        Backoff => "backoff",
    }
}

label_enum! {
    /// A token cache lookup: a valid token cached, none (an ECR call), or an older valid token
    /// served during an ECR failure.
    CacheResult {
        Hit => "hit",
        Miss => "miss",
        Stale => "stale",
    }
}

label_enum! {
    /// How a refresher touch ended.
    TouchOutcome {
        /// The webhook wrote a fresh token.
        Took => "took",
        /// Patched, but the token was not refreshed (the `error` annotation says why).
        DidNotTake => "did_not_take",
        Gone => "gone",
        Conflict => "conflict",
        Forbidden => "forbidden",
        Error => "error",
    }
}

label_enum! {
    /// A change of a watched file (TLS pair, policy file): taken, or refused and the last good
    /// one kept.
    ReloadOutcome {
        Reloaded => "reloaded",
        Refused => "refused",
    }
}

label_enum! {
    /// A self-managed TLS check that did not end well (the only outcome counted).
    RenewalOutcome {
        Failed => "failed",
    }
}

label_enum! {
    /// Why a caller was refused at the webhook port's TLS handshake (`--tls-client-ca-file`).
    CallerRefusal {
        /// No client certificate.
        NoCertificate => "no_certificate",
        /// A certificate that does not chain to the client CA (or is otherwise bad).
        Untrusted => "untrusted",
        /// Expired or not yet valid.
        Expired => "expired",
        /// Chains to the CA but carries none of the required names.
        WrongName => "wrong_name",
    }
}

/// Encodes a pure module's vocabulary by its own `label()`.
macro_rules! encode_by_label {
    ($($name:ty),+) => {
        $(impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.label())
            }
        })+
    };
}

encode_by_label!(State, RefusalKind);

/// Label values joined for a metric's help text: "took, did_not_take, gone".
pub fn listed<'a>(labels: impl IntoIterator<Item = &'a str>) -> String {
    labels.into_iter().collect::<Vec<_>>().join(", ")
}
