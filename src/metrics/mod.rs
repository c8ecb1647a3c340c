//! Prometheus metrics. Labels carry kinds, outcomes and regions: never a token or secret value.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod labels;
use labels::listed;
pub use labels::{
    AdmissionOutcome, CacheResult, CallerRefusal, EcrOutcome, Operation, ReloadOutcome,
    RenewalOutcome, TouchOutcome,
};

use crate::policy::RefusalKind;
use crate::state::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub operation: Operation,
    pub kind: &'static str,
    pub outcome: AdmissionOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EcrLabels {
    pub region: String,
    pub outcome: EcrOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: CacheResult,
}

/// A policy refusal: the rule (its name, `rules[N]`, `flags`, or `none` when no rule matched;
/// bounded by the number of rules) and what was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub rule: String,
    pub reason: RefusalKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: State,
}

/// A gauge without labels that can be absent: a plain gauge always has a value, and a family
/// without labels would print `name{}`.
#[derive(Clone, Debug)]
struct OptionalGauge {
    name: &'static str,
    help: &'static str,
    value: Arc<Mutex<Option<f64>>>,
}

impl OptionalGauge {
    fn set(&self, v: Option<f64>) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}

impl Collector for OptionalGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let value = *self.value.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = value {
            let gauge = ConstGauge::new(v);
            let metric =
                encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerRefusalLabels {
    pub reason: CallerRefusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub region: String,
    pub role_arn: String,
}

pub struct Metrics {
    registry: Registry,
    admission_requests: Family<AdmissionLabels, Counter>,
    admission_duration: Histogram,
    ecr_requests: Family<EcrLabels, Counter>,
    ecr_duration: Histogram,
    cache_lookups: Family<CacheLabels, Counter>,
    token_expiry: Family<TokenLabels, Gauge<f64, AtomicU64>>,
    tls_reloads: Family<ReloadLabels, Counter>,
    tls_renewals: Family<RenewalLabels, Counter>,
    tls_not_after: Gauge<f64, AtomicU64>,
    touches: Family<TouchLabels, Counter>,
    policy_refusals: Family<PolicyLabels, Counter>,
    policy_reloads: Family<ReloadLabels, Counter>,
    secrets_seen: Gauge,
    secrets_due: Gauge,
    secrets: Family<StateLabels, Gauge>,
    earliest_expiry: OptionalGauge,
    last_pass: Gauge<f64, AtomicU64>,
    leader: Gauge,
    caller_refusals: Family<CallerRefusalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: ReloadOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    pub outcome: RenewalOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TouchLabels {
    pub outcome: TouchOutcome,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ecr_token_webhook");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by operation, secret kind and outcome",
            admission_requests.clone(),
        );
        let admission_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            admission_duration.clone(),
        );
        let ecr_requests = Family::<EcrLabels, Counter>::default();
        registry.register(
            "ecr_requests",
            "ECR GetAuthorizationToken calls by region and outcome",
            ecr_requests.clone(),
        );
        let ecr_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "ecr_request_duration_seconds",
            "Time of ECR GetAuthorizationToken calls, SDK retries included",
            ecr_duration.clone(),
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Token cache lookups: hit, miss, or stale (an older valid token served during an ECR failure)",
            cache_lookups.clone(),
        );
        // The hit series from the start, at 0.
        cache_lookups.get_or_create_owned(&CacheLabels {
            result: CacheResult::Hit,
        });
        let token_expiry = Family::<TokenLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until each cached token expires (negative once expired)",
            token_expiry.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Changes of the TLS certificate files: reloaded, or refused (the old pair stays)",
            tls_reloads.clone(),
        );
        let tls_renewals = Family::<RenewalLabels, Counter>::default();
        registry.register(
            "tls_renewals",
            "Self-managed TLS checks that failed (the stored pair stays in service while valid)",
            tls_renewals.clone(),
        );
        let tls_not_after = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            tls_not_after.clone(),
        );
        let touches = Family::<TouchLabels, Counter>::default();
        registry.register(
            "refresh_touches",
            format!(
                "Refresher touches by outcome: {}",
                listed(TouchOutcome::ALL.iter().map(|o| o.label()))
            ),
            touches.clone(),
        );
        let policy_refusals = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_refusals",
            format!(
                "Secrets refused by the policy, by rule (name, rules[N], flags, or none when no rule matched) and reason ({})",
                listed(RefusalKind::ALL.map(RefusalKind::label))
            ),
            policy_refusals.clone(),
        );
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Changes of the policy file: reloaded, or refused (the last good policy stays)",
            policy_reloads.clone(),
        );
        let secrets_seen = Gauge::default();
        registry.register(
            "refresh_secrets_seen",
            "Opted-in secrets in allowed namespaces at the last complete pass",
            secrets_seen.clone(),
        );
        let secrets_due = Gauge::default();
        registry.register(
            "refresh_secrets_due",
            "Secrets due for a touch at the last complete pass",
            secrets_due.clone(),
        );
        let secrets = Family::<StateLabels, Gauge>::default();
        registry.register(
            "secrets",
            format!(
                "Opted-in secrets by state at the last complete refresher pass (the leader only): {}",
                listed(State::ALL.into_iter().filter(|s| s.is_listed()).map(State::label))
            ),
            secrets.clone(),
        );
        let earliest_expiry = OptionalGauge {
            name: "secrets_earliest_expiry_timestamp_seconds",
            help: "The earliest expires-at among opted-in secrets within the policy at the last complete pass (Unix time; the leader only).",
            value: Arc::default(),
        };
        registry.register_collector(Box::new(earliest_expiry.clone()));
        let last_pass = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "refresh_last_pass_timestamp_seconds",
            "Unix time of the last complete refresher pass",
            last_pass.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the refresher lease",
            leader.clone(),
        );
        let caller_refusals = Family::<CallerRefusalLabels, Counter>::default();
        registry.register(
            "caller_refusals",
            format!(
                "Callers refused at the webhook port's TLS handshake (--tls-client-ca-file), by reason: {}",
                listed(CallerRefusal::ALL.iter().map(|r| r.label()))
            ),
            caller_refusals.clone(),
        );
        // Every reason from the start, so a rate over one finds 0 rather than nothing.
        for &reason in CallerRefusal::ALL {
            caller_refusals.get_or_create_owned(&CallerRefusalLabels { reason });
        }
        Metrics {
            registry,
            caller_refusals,
            touches,
            policy_refusals,
            policy_reloads,
            secrets_seen,
            secrets_due,
            secrets,
            earliest_expiry,
            last_pass,
            leader,
            tls_reloads,
            tls_renewals,
            tls_not_after,
            admission_requests,
            admission_duration,
            ecr_requests,
            ecr_duration,
            cache_lookups,
            token_expiry,
        }
    }
}

impl Metrics {
    /// Exports every outcome of the served operations for `kinds` at 0, so that the first
    /// write that fails open (or is denied) is a rise an alert sees, not a new series.
    pub fn admissions_served(&self, kinds: &[&'static str]) {
        for operation in Operation::SERVED {
            for &kind in kinds {
                for &outcome in AdmissionOutcome::ALL {
                    let _ = self.admission_requests.get_or_create(&AdmissionLabels {
                        operation,
                        kind,
                        outcome,
                    });
                }
            }
        }
    }

    pub fn admission(
        &self,
        operation: Operation,
        kind: &'static str,
        outcome: AdmissionOutcome,
        took: Duration,
    ) {
        self.admission_requests
            .get_or_create(&AdmissionLabels {
                operation,
                kind,
                outcome,
            })
            .inc();
        self.admission_duration.observe(took.as_secs_f64());
    }

    /// Counts a call. A region's first call exports all its outcomes, 0 but this one, so a
    /// success after failures (or a failure after successes) is a rise an alert sees.
    pub fn ecr_call(&self, region: &str, outcome: EcrOutcome, took: Duration) {
        let labels = |outcome| EcrLabels {
            region: region.to_string(),
            outcome,
        };
        if self.ecr_requests.get(&labels(outcome)).is_none() {
            for &o in EcrOutcome::ALL {
                let _ = self.ecr_requests.get_or_create(&labels(o));
            }
        }
        self.ecr_requests.get_or_create(&labels(outcome)).inc();
        self.ecr_duration.observe(took.as_secs_f64());
    }

    pub fn cache_lookup(&self, result: CacheResult) {
        self.cache_lookups
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    pub fn policy_refusal(&self, rule: String, reason: RefusalKind) {
        self.policy_refusals
            .get_or_create(&PolicyLabels { rule, reason })
            .inc();
    }

    pub fn policy_reload(&self, outcome: ReloadOutcome) {
        self.policy_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    pub fn touch(&self, outcome: TouchOutcome) {
        self.touches.get_or_create(&TouchLabels { outcome }).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records a complete pass: secrets seen (within the policy) and due for a touch, the
    /// secrets by state (every state given, zeros included, so a query for one finds 0 rather
    /// than nothing), the earliest expires-at (absent without one), and when.
    pub fn pass(
        &self,
        seen: usize,
        due: usize,
        states: &[(State, usize)],
        earliest_expiry: Option<std::time::SystemTime>,
    ) {
        self.secrets_seen.set(seen as i64);
        self.secrets_due.set(due as i64);
        for (state, n) in states {
            self.secrets
                .get_or_create(&StateLabels { state: *state })
                .set(*n as i64);
        }
        self.earliest_expiry.set(earliest_expiry.map(unix_seconds));
        self.last_pass
            .set(unix_seconds(std::time::SystemTime::now()));
    }

    /// Drops the state gauges: a replica that no longer leads does not list, and its last
    /// counts would age while the leader's stay current. The pass counters and the time of the
    /// last pass stay (alerts take the newest across replicas).
    pub fn clear_secret_states(&self) {
        self.secrets.clear();
        self.earliest_expiry.set(None);
    }

    pub fn tls_renewal(&self, outcome: RenewalOutcome) {
        self.tls_renewals
            .get_or_create(&RenewalLabels { outcome })
            .inc();
    }

    pub fn set_tls_not_after(&self, t: std::time::SystemTime) {
        self.tls_not_after.set(unix_seconds(t));
    }

    pub fn tls_reload(&self, outcome: ReloadOutcome) {
        self.tls_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    pub fn caller_refused(&self, reason: CallerRefusal) {
        self.caller_refusals
            .get_or_create(&CallerRefusalLabels { reason })
            .inc();
    }

    /// Prometheus text exposition, with the token expiry gauges set from `expiries` first.
    pub fn render(&self, expiries: &[(TokenLabels, f64)]) -> String {
        self.token_expiry.clear();
        for (labels, secs) in expiries {
            self.token_expiry.get_or_create(labels).set(*secs);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Unix time in seconds, negative before 1970 (an `expires-at` can say anything).
fn unix_seconds(t: std::time::SystemTime) -> f64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_hits_are_exported_before_the_first() {
        let text = Metrics::default().render(&[]);
        assert!(
            text.contains("ecr_token_webhook_token_cache_lookups_total{result=\"hit\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn served_admission_outcomes_are_exported_at_zero_before_the_first() {
        let m = Metrics::default();
        m.admissions_served(&["dockerconfigjson", "argocd-repository"]);
        let text = m.render(&[]);
        for operation in ["CREATE", "UPDATE"] {
            for kind in ["dockerconfigjson", "argocd-repository"] {
                for outcome in AdmissionOutcome::ALL {
                    let want = format!(
                        "ecr_token_webhook_admission_requests_total{{operation=\"{operation}\",kind=\"{kind}\",outcome=\"{}\"}} 0",
                        outcome.label()
                    );
                    assert!(text.contains(&want), "missing {want} in\n{text}");
                }
            }
        }
        assert!(!text.contains("operation=\"DELETE\""), "{text}");
    }

    #[test]
    fn a_regions_first_call_exports_its_other_outcomes_at_zero() {
        let m = Metrics::default();
        m.ecr_call("eu-west-1", EcrOutcome::Credentials, Duration::ZERO);
        m.ecr_call("eu-west-1", EcrOutcome::Credentials, Duration::ZERO);
        let text = m.render(&[]);
        for outcome in EcrOutcome::ALL {
            let n = if *outcome == EcrOutcome::Credentials {
                2
            } else {
                0
            };
            let want = format!(
                "ecr_token_webhook_ecr_requests_total{{region=\"eu-west-1\",outcome=\"{}\"}} {n}\n",
                outcome.label()
            );
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn label_enums_have_distinct_labels() {
        fn distinct(labels: Vec<&str>) {
            let set: std::collections::BTreeSet<_> = labels.iter().collect();
            assert_eq!(set.len(), labels.len(), "{labels:?}");
        }
        distinct(Operation::ALL.iter().map(|o| o.label()).collect());
        distinct(AdmissionOutcome::ALL.iter().map(|o| o.label()).collect());
        distinct(EcrOutcome::ALL.iter().map(|o| o.label()).collect());
        distinct(CacheResult::ALL.iter().map(|o| o.label()).collect());
        distinct(TouchOutcome::ALL.iter().map(|o| o.label()).collect());
        distinct(ReloadOutcome::ALL.iter().map(|o| o.label()).collect());
        distinct(CallerRefusal::ALL.iter().map(|o| o.label()).collect());
        distinct(RefusalKind::ALL.map(RefusalKind::label).to_vec());
        distinct(State::ALL.map(State::label).to_vec());
        for o in Operation::ALL {
            assert_eq!(Operation::parse(o.label()), *o);
        }
    }

    #[test]
    fn renders_prefixed_families() {
        let m = Metrics::default();
        m.admission(
            Operation::Create,
            "dockerconfigjson",
            AdmissionOutcome::Patched,
            Duration::from_millis(3),
        );
        m.ecr_call("us-east-1", EcrOutcome::Success, Duration::from_millis(40));
        m.cache_lookup(CacheResult::Hit);
        m.cache_lookup(CacheResult::Hit);
        m.pass(
            3,
            1,
            &[(State::Fresh, 2), (State::Due, 1), (State::Expired, 0)],
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        );
        let text = m.render(&[(
            TokenLabels {
                region: "us-east-1".into(),
                role_arn: String::new(),
            },
            3600.0,
        )]);
        for want in [
            "ecr_token_webhook_admission_requests_total{operation=\"CREATE\",kind=\"dockerconfigjson\",outcome=\"patched\"} 1",
            "ecr_token_webhook_admission_duration_seconds_count 1",
            "ecr_token_webhook_ecr_requests_total{region=\"us-east-1\",outcome=\"success\"} 1",
            "ecr_token_webhook_token_cache_lookups_total{result=\"hit\"} 2",
            "ecr_token_webhook_token_expiry_seconds{region=\"us-east-1\",role_arn=\"\"} 3600.0",
            "ecr_token_webhook_secrets{state=\"fresh\"} 2",
            "ecr_token_webhook_secrets{state=\"expired\"} 0",
            "ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds 1700000000.0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // A replica that stops leading exports no state gauges, and keeps the rest.
        m.clear_secret_states();
        let text = m.render(&[]);
        assert!(!text.contains("ecr_token_webhook_secrets{"), "{text}");
        assert!(
            !text.contains("ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds "),
            "{text}"
        );
        assert!(
            text.contains("ecr_token_webhook_refresh_secrets_seen 3"),
            "{text}"
        );
    }
}
