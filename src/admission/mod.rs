//! Turning an AdmissionReview into an answer: the review comes in through `review.rs`
//! (serde_json into borrowed structs), the decision is made here (the policy, the secret's
//! plan, tokens from the cache within the API server's deadline, the patch), and the answer
//! goes out through `answer.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::aws::token::{Served, Token, TokenCache, TokenError, TokenKey};
/// Re-exported where the webhook's builder takes it ([`Webhook::with_events`]).
pub use crate::events::EventSink;
use crate::logging;
use crate::metrics::{AdmissionOutcome as Outcome, Metrics, Operation};
use crate::policy::namespaces::{LabelsError, NamespaceLabels};
use crate::policy::{Decision, Labels, Policy, Refusal, SharedPolicy};
use crate::secret::{self, SecretKind, SecretView};
use crate::time::rfc3339;

mod answer;
mod review;

pub use answer::{Answer, to_json};
use answer::{WARNING_PREFIX, with_error};
use review::{RequestIn, ReviewIn};

/// What to answer when no token can be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Allow the write unchanged apart from the `error` annotation, with a warning.
    Open,
    /// Deny the write with the reason.
    Closed,
}

impl FailureMode {
    pub fn label(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// A request body that is not an AdmissionReview: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

pub struct Webhook {
    tokens: Arc<TokenCache>,
    policy: SharedPolicy,
    /// For the policy's namespace selectors; without it, rules with one refuse.
    namespace_labels: Option<Arc<dyn NamespaceLabels>>,
    failure_mode: FailureMode,
    metrics: Arc<Metrics>,
    /// Warning Events on secrets that get no token; None without a Kubernetes client.
    events: Option<Arc<EventSink>>,
}

impl Webhook {
    /// `policy`: a [`Policy`], or a [`SharedPolicy`] that a policy file reloader updates.
    pub fn new(
        tokens: Arc<TokenCache>,
        policy: impl Into<SharedPolicy>,
        failure_mode: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.admissions_served(&SecretKind::ALL.map(SecretKind::metric_label));
        Webhook {
            tokens,
            policy: policy.into(),
            namespace_labels: None,
            failure_mode,
            metrics,
            events: None,
        }
    }

    /// Records Warning Events on secrets it fails open on or refuses by policy.
    pub fn with_events(mut self, events: Arc<EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Where namespace labels come from, for rules with a `namespaceSelector`.
    pub fn with_namespace_labels(mut self, labels: Arc<dyn NamespaceLabels>) -> Self {
        self.namespace_labels = Some(labels);
        self
    }

    /// Answers one AdmissionReview body. Only a body that is not a v1 AdmissionReview with a
    /// request is an error (HTTP 400); everything else gets an answer.
    pub async fn review<'b>(
        &self,
        body: &'b [u8],
        budget: Duration,
    ) -> Result<Answer<'b>, BadReview> {
        let started = Instant::now();
        let review: ReviewIn = serde_json::from_slice(body)
            .map_err(|e| BadReview(format!("malformed AdmissionReview: {e}")))?;
        if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
            return Err(BadReview(format!(
                "expected an admission.k8s.io/v1 AdmissionReview, got {:?} {:?}",
                review.api_version, review.kind
            )));
        }
        let req = review
            .request
            .ok_or_else(|| BadReview("AdmissionReview has no request".into()))?;
        let namespace = req.namespace.as_deref().unwrap_or_default();
        // Off at the default level, so it costs nothing per request; the lines that matter
        // carry the request's fields themselves.
        let span = tracing::debug_span!("admission", uid = %req.uid, namespace, secret = %req.name);
        // A deadline, not a budget: the clock is read again only where a wait may begin.
        let deadline = started + budget;
        let (answer, kind, outcome) = self.decide(&req, deadline).instrument(span).await;
        let took = started.elapsed();
        self.metrics
            .admission(Operation::parse(&req.operation), kind, outcome, took);
        if let Some(events) = &self.events {
            self.report(events, &req, namespace, outcome, &answer);
        }
        let took_ms = took.as_millis() as u64;
        match outcome {
            Outcome::Patched | Outcome::Skipped | Outcome::Ignored => {
                tracing::debug!(uid = %req.uid, namespace, secret = %req.name, kind,
                    outcome = outcome.label(), took_ms, "answered")
            }
            _ => tracing::info!(uid = %req.uid, namespace, secret = %req.name, kind,
                outcome = outcome.label(), took_ms,
                warnings = %logging::list(answer.warnings()), "answered"),
        }
        Ok(answer)
    }

    async fn decide<'b>(
        &self,
        req: &RequestIn<'b>,
        deadline: Instant,
    ) -> (Answer<'b>, &'static str, Outcome) {
        let mut answer = Answer::allow(req.uid.clone());
        if !matches!(&*req.operation, "CREATE" | "UPDATE") {
            return (answer, "none", Outcome::Skipped);
        }
        let k = &req.kind;
        if !(k.group.is_empty() && k.version == "v1" && k.kind == "Secret") {
            answer.warn(format!(
                "only v1 Secrets are handled; {}/{} {} left alone",
                k.group, k.version, k.kind
            ));
            return (answer, "none", Outcome::Ignored);
        }
        let Some(obj) = req.object.as_ref() else {
            return (answer, "none", Outcome::Skipped);
        };
        let view = SecretView::from_object(obj);
        if !view.opted_in() {
            return (answer, "none", Outcome::Skipped);
        }
        let kind = view
            .kind()
            .map(|k| k.metric_label())
            .unwrap_or("unsupported");
        let namespace = req
            .namespace
            .as_deref()
            .or(obj.metadata.namespace.as_deref())
            .unwrap_or_default();
        // The policy's decision: one version of it for the whole request.
        let policy = self.policy.current();
        let labels = self.namespace_labels(&policy, namespace, deadline).await;
        // No rule that could match selects by label: no lookup, and no map to allocate.
        static NONE_NEEDED: BTreeMap<String, String> = BTreeMap::new();
        let why;
        let labels = match &labels {
            Ok(Some(l)) => Labels::Known(l),
            Ok(None) => Labels::Known(&NONE_NEEDED),
            Err(e) => {
                why = e.to_string();
                Labels::Unknown(&why)
            }
        };
        // The namespace first: a secret no rule covers is refused whatever its content.
        if let Decision::Refused(r) = policy.decide(namespace, labels, &[], None) {
            return self.refused(answer, &view, kind, &r);
        }
        let mut plan = match secret::plan(&view) {
            Ok(plan) => plan,
            Err(e) => {
                return (
                    with_error(answer, &view, &e.to_string()),
                    kind,
                    Outcome::Invalid,
                );
            }
        };
        match policy.decide(
            namespace,
            labels,
            &plan.registries,
            plan.role_arn.as_deref(),
        ) {
            // The secret's role, the rule's default role, or none.
            Decision::Allowed { role, .. } => plan.role_arn = role,
            Decision::Refused(r) => return self.refused(answer, &view, kind, &r),
        }

        let fetched = self.fetch_all(plan.token_keys(), deadline).await;
        let mut failed: Vec<(&TokenKey, &TokenError)> = Vec::new();
        for (key, r) in &fetched {
            if let Err(e) = r {
                failed.push((key, e));
            }
        }
        if failed.len() == fetched.len() {
            // No token at all: as ever, the error annotation only (open) or a denial (closed).
            let e = failed
                .first()
                .map(|(_, e)| e.to_string())
                .unwrap_or_default();
            let reason = format!("no ECR token: {e}");
            return match self.failure_mode {
                FailureMode::Open => (
                    with_error(answer, &view, &reason),
                    kind,
                    Outcome::FailedOpen,
                ),
                FailureMode::Closed => (answer.deny(reason), kind, Outcome::Denied),
            };
        }
        // Some registries got no token (only pull secrets name several regions): the others
        // are written whatever the failure mode, since denying would keep the good tokens out
        // too; the failed registries keep their entries and are named in `error`.
        let partial = (!failed.is_empty()).then(|| partial_reason(&plan, &failed));
        // The tokens had, borrowed (no copy of the list on the hot path).
        let served = || {
            fetched
                .iter()
                .filter_map(|(k, r)| Some((k, r.as_ref().ok()?)))
        };
        let mut outcome = if partial.is_some() {
            Outcome::Partial
        } else {
            Outcome::Patched
        };
        for (key, s) in served() {
            if let Some(why) = &s.stale_because {
                if outcome == Outcome::Patched {
                    outcome = Outcome::PatchedStale;
                }
                answer.warn(format!(
                    "{why}; wrote the cached token for {key}, valid until {}",
                    rfc3339(s.token.expires_at)
                ));
            }
        }
        if let Some(reason) = &partial {
            answer.warn(reason);
        }
        let tokens: BTreeMap<TokenKey, &Token> =
            served().map(|(k, s)| (k.clone(), &*s.token)).collect();
        match secret::inject_partial(&view, &plan, &tokens, partial.as_deref()) {
            Ok(patch) => (answer.with_patch(&patch), kind, outcome),
            Err(e) => (
                with_error(answer, &view, &e.to_string()),
                kind,
                Outcome::Invalid,
            ),
        }
    }

    /// An Event for a write that got no token (fail-open, a partial outcome) or was refused by
    /// policy, rate-limited per secret; a written token resets the count.
    fn report(
        &self,
        events: &Arc<EventSink>,
        req: &RequestIn<'_>,
        namespace: &str,
        outcome: Outcome,
        answer: &Answer,
    ) {
        let reason = match outcome {
            Outcome::FailedOpen | Outcome::Partial => "TokenNotWritten",
            Outcome::Policy => "RefusedByPolicy",
            Outcome::Patched | Outcome::PatchedStale => {
                events.succeeded(namespace, &req.name);
                return;
            }
            _ => return,
        };
        if req.name.is_empty()
            || req.dry_run.unwrap_or(false)
            || !events.failed(namespace, &req.name)
        {
            return;
        }
        // The reason is the answer's last warning (stale-token warnings come before it).
        let message = answer
            .warnings()
            .last()
            .map(|w| w.strip_prefix(WARNING_PREFIX).unwrap_or(w).to_string())
            .unwrap_or_default();
        let uid = req.object.as_ref().and_then(|o| o.metadata.uid.as_deref());
        events.send(namespace, &req.name, uid, reason, message);
    }

    /// The namespace's labels if a rule that could match it selects by label (cached by the
    /// source; bounded by the request's deadline), else `None`: none needed.
    async fn namespace_labels(
        &self,
        policy: &Policy,
        namespace: &str,
        deadline: Instant,
    ) -> Result<Option<crate::policy::namespaces::Labels>, LabelsError> {
        if !policy.needs_labels(namespace) {
            return Ok(None);
        }
        let Some(source) = &self.namespace_labels else {
            return Err(LabelsError::NoClient(
                "no Kubernetes client to read them with".into(),
            ));
        };
        tokio::time::timeout_at(deadline.into(), source.labels(namespace))
            .await
            .unwrap_or(Err(LabelsError::Timeout))
            .map(Some)
    }

    /// A policy refusal: no token, the `error` annotation and a warning that name the rule, and
    /// the refusal counted by rule.
    fn refused<'b>(
        &self,
        answer: Answer<'b>,
        view: &SecretView,
        kind: &'static str,
        refusal: &Refusal,
    ) -> (Answer<'b>, &'static str, Outcome) {
        self.metrics
            .policy_refusal(refusal.rule_label(), refusal.reason.metric_label());
        (
            with_error(answer, view, &refusal.to_string()),
            kind,
            Outcome::Policy,
        )
    }

    /// Every key's token or why it could not be had, in order: cache hits straight away,
    /// misses fetched concurrently as tasks, so one that outlives this request's deadline still
    /// fills the cache for the next.
    async fn fetch_all(
        &self,
        keys: Vec<TokenKey>,
        deadline: Instant,
    ) -> Vec<(TokenKey, Result<Served, TokenError>)> {
        // Each key's hit, or the task fetching its miss.
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let hit = match self.tokens.cached(&key).await {
                Some(served) => Ok(served),
                None => {
                    let (cache, k) = (self.tokens.clone(), key.clone());
                    Err(tokio::spawn(async move { cache.get_missed(&k).await }))
                }
            };
            found.push((key, hit));
        }
        // What is left of the request's budget, for the timeout's message.
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut out = Vec::with_capacity(found.len());
        for (key, hit) in found {
            let got = match hit {
                Ok(served) => Ok(served),
                Err(task) => match tokio::time::timeout_at(deadline.into(), task).await {
                    Ok(Ok(got)) => got,
                    Ok(Err(join)) => Err(TokenError::Malformed {
                        region: key.place().to_string(),
                        message: format!("token task failed: {join}"),
                    }),
                    Err(_) => Err(TokenError::Timeout {
                        key: key.to_string(),
                        after: budget,
                    }),
                },
            };
            out.push((key, got));
        }
        out
    }
}

/// The `error` annotation and warning for a partial write: each failed registry with why.
fn partial_reason(plan: &secret::Plan, failed: &[(&TokenKey, &TokenError)]) -> String {
    let mut reason = String::from("no ECR token for ");
    for (i, (key, e)) in failed.iter().enumerate() {
        if i > 0 {
            reason.push_str("; ");
        }
        let hosts: Vec<&str> = plan
            .registries
            .iter()
            .filter(|r| plan.key_for(r) == **key)
            .map(|r| r.host.as_str())
            .collect();
        reason.push_str(&hosts.join(", "));
        reason.push_str(": ");
        reason.push_str(&e.to_string());
    }
    reason.push_str("; wrote the other registries");
    crate::text::truncate(&reason, 512)
}

/// The time the webhook may spend on a request whose API-server `timeout` is `timeout`:
/// a tenth (at least 200 ms) is kept back for the answer to travel.
pub fn budget_for(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).max(Duration::from_millis(200)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn read(body: &str) -> serde_json::Result<ReviewIn<'_>> {
        serde_json::from_str(body)
    }

    /// Every captured review reads, with its request and object.
    #[test]
    fn every_fixture_reads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let body = std::fs::read_to_string(&path).unwrap();
            let review = read(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let req = review.request.expect("a request");
            assert!(!req.uid.is_empty(), "{}", path.display());
            assert!(req.object.is_some(), "{}", path.display());
            n += 1;
        }
        assert!(n >= 9, "{n}");
    }

    /// What is refused as a malformed review (HTTP 400), and what reads as absent.
    #[test]
    fn bad_reviews_are_refused_and_null_is_absent() {
        for bad in [
            "",
            "[]",
            r#"{"kind":"AdmissionReview"}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","uid":"v"}}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"kind":{},"operation":"CREATE"}}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"uid":7}}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","object":{"metadata":null}}}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","object":{"metadata":{"labels":[]}}}}"#,
            r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"X","dryRun":1}}"#,
            r#"{"apiVersion":"v","kind":"k","request":null} x"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let ok = r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"X","object":null,"namespace":null}}"#;
        let r = read(ok).unwrap().request.unwrap();
        assert!(r.object.is_none() && r.namespace.is_none() && r.dry_run.is_none());
        assert!(
            read(r#"{"apiVersion":"v","kind":"k","request":null}"#)
                .unwrap()
                .request
                .is_none()
        );
        // Not in Go's order, the review's fields after the request: the same reading.
        let body = r#"{"request":{"uid":"u","kind":{},"name":"n","namespace":"ns","operation":"X","object":null,"dryRun":true},"apiVersion":"v","kind":"k"}"#;
        let r = read(body).unwrap().request.unwrap();
        assert_eq!(r.dry_run, Some(true));
        // Strings without escapes borrow from the body.
        assert!(matches!(r.uid, Cow::Borrowed("u")));
    }

    #[test]
    fn answers_serialize_as_the_api_server_reads_them() {
        let mut allowed = Answer::allow("u-\"1");
        allowed.warn("w \"quoted\"\n");
        let allowed = allowed.with_patch(&json_patch::Patch(Vec::new()));
        let denied = Answer::allow("u-2").deny("no \"token\"".into());
        for (answer, want) in [
            (
                allowed,
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": "u-\"1", "allowed": true, "patchType": "JSONPatch",
                        "patch": "W10=", "warnings": ["ecr-token-webhook: w \"quoted\"\n"]}}),
            ),
            (
                denied,
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": "u-2", "allowed": false,
                        "status": {"code": 403, "message": "no \"token\""}}}),
            ),
            (
                Answer::allow("u-3"),
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": "u-3", "allowed": true}}),
            ),
        ] {
            let bytes = to_json(&answer).unwrap();
            let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, want);
            // In the order the answer always had (preserve_order keeps `want`'s).
            assert_eq!(String::from_utf8(bytes).unwrap(), want.to_string());
        }
    }

    #[test]
    fn budget_keeps_a_margin() {
        assert_eq!(budget_for(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(
            budget_for(Duration::from_secs(1)),
            Duration::from_millis(800)
        );
        assert_eq!(budget_for(Duration::from_millis(100)), Duration::ZERO);
    }
}
