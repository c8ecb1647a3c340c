//! The label values that are closed sets: every value is known, so every series can exist
//! (at 0) before its first event.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Label enums whose every value is exported at 0 before its first event: an alert on
/// `increase()` sees a counter's first event only if the series existed before it.
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
