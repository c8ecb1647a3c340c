//! Turning an AdmissionReview into an answer: the policy, the secret's plan, tokens from the
//! cache within the API server's deadline, and the patch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::Instrument;

use crate::logging;
use crate::metrics::Metrics;
use crate::namespaces::NamespaceLabels;
use crate::policy::{Decision, Labels, Policy, Refusal, SharedPolicy};
use crate::secret::{self, SecretView};
use crate::time::rfc3339;
use crate::token::{Served, Token, TokenCache, TokenError, TokenKey};

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
}

const WARNING_PREFIX: &str = "ecr-token-webhook: ";

/// How a request ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Patched,
    PatchedStale,
    Skipped,
    Ignored,
    Policy,
    Invalid,
    FailedOpen,
    Denied,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::PatchedStale => "patched_stale",
            Outcome::Skipped => "skipped",
            Outcome::Ignored => "ignored",
            Outcome::Policy => "policy",
            Outcome::Invalid => "invalid",
            Outcome::FailedOpen => "failed_open",
            Outcome::Denied => "denied",
        }
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn warn(resp: &mut AdmissionResponse, message: impl AsRef<str>) {
    resp.warnings
        .get_or_insert_with(Vec::new)
        .push(format!("{WARNING_PREFIX}{}", message.as_ref()));
}

impl Webhook {
    /// `policy`: a [`Policy`], or a [`SharedPolicy`] that a policy file reloader updates.
    pub fn new(
        tokens: Arc<TokenCache>,
        policy: impl Into<SharedPolicy>,
        failure_mode: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        Webhook {
            tokens,
            policy: policy.into(),
            namespace_labels: None,
            failure_mode,
            metrics,
        }
    }

    /// Where namespace labels come from, for rules with a `namespaceSelector`.
    pub fn with_namespace_labels(mut self, labels: Arc<dyn NamespaceLabels>) -> Self {
        self.namespace_labels = Some(labels);
        self
    }

    /// Answers one AdmissionReview body. `budget` is how long token fetching may take.
    pub async fn review(
        &self,
        body: &[u8],
        budget: Duration,
    ) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let started = Instant::now();
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
            .map_err(|e| BadReview(format!("malformed AdmissionReview: {e}")))?;
        if review.types.api_version != "admission.k8s.io/v1"
            || review.types.kind != "AdmissionReview"
        {
            return Err(BadReview(format!(
                "expected an admission.k8s.io/v1 AdmissionReview, got {:?} {:?}",
                review.types.api_version, review.types.kind
            )));
        }
        let req: AdmissionRequest<DynamicObject> = review
            .try_into()
            .map_err(|_| BadReview("AdmissionReview has no request".into()))?;
        let span = tracing::info_span!("admission", uid = %req.uid,
            namespace = req.namespace.as_deref().unwrap_or(""), secret = %req.name);
        let (resp, kind, outcome) = self
            .decide(&req, budget, started)
            .instrument(span.clone())
            .await;
        let took = started.elapsed();
        self.metrics
            .admission(operation_name(&req.operation), kind, outcome.label(), took);
        let took_ms = took.as_millis() as u64;
        span.in_scope(|| match outcome {
            Outcome::Patched | Outcome::Skipped | Outcome::Ignored => {
                tracing::debug!(kind, outcome = outcome.label(), took_ms, "answered")
            }
            _ => tracing::info!(kind, outcome = outcome.label(), took_ms,
                warnings = %logging::list(resp.warnings.as_deref().unwrap_or_default()), "answered"),
        });
        Ok(resp.into_review())
    }

    async fn decide(
        &self,
        req: &AdmissionRequest<DynamicObject>,
        budget: Duration,
        started: Instant,
    ) -> (AdmissionResponse, &'static str, Outcome) {
        let mut resp = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return (resp, "none", Outcome::Skipped);
        }
        let k = &req.kind;
        if !(k.group.is_empty() && k.version == "v1" && k.kind == "Secret") {
            warn(
                &mut resp,
                format!(
                    "only v1 Secrets are handled; {}/{} {} left alone",
                    k.group, k.version, k.kind
                ),
            );
            return (resp, "none", Outcome::Ignored);
        }
        let Some(obj) = req.object.as_ref() else {
            return (resp, "none", Outcome::Skipped);
        };
        let view = SecretView::new(obj);
        if !view.opted_in() {
            return (resp, "none", Outcome::Skipped);
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
        let labels = self
            .namespace_labels(&policy, namespace, budget.saturating_sub(started.elapsed()))
            .await;
        let labels = match &labels {
            Ok(l) => Labels::Known(l),
            Err(e) => Labels::Unknown(e),
        };
        // The namespace first: a secret no rule covers is refused whatever its content.
        if let Decision::Refused(r) = policy.decide(namespace, labels, &[], None) {
            return self.refused(resp, &view, kind, &r);
        }
        let mut plan = match secret::plan(&view) {
            Ok(plan) => plan,
            Err(e) => {
                return (
                    self.with_error(resp, &view, &e.to_string()),
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
            Decision::Refused(r) => return self.refused(resp, &view, kind, &r),
        }

        let remaining = budget.saturating_sub(started.elapsed());
        let served = match self.fetch_all(plan.token_keys(), remaining).await {
            Ok(served) => served,
            Err(e) => {
                let reason = format!("no ECR token: {e}");
                return match self.failure_mode {
                    FailureMode::Open => (
                        self.with_error(resp, &view, &reason),
                        kind,
                        Outcome::FailedOpen,
                    ),
                    FailureMode::Closed => (resp.deny(reason), kind, Outcome::Denied),
                };
            }
        };
        let mut outcome = Outcome::Patched;
        for (key, s) in &served {
            if let Some(why) = &s.stale_because {
                outcome = Outcome::PatchedStale;
                warn(
                    &mut resp,
                    format!(
                        "{why}; wrote the cached token for {key}, valid until {}",
                        rfc3339(s.token.expires_at)
                    ),
                );
            }
        }
        let tokens: BTreeMap<TokenKey, &Token> =
            served.iter().map(|(k, s)| (k.clone(), &*s.token)).collect();
        match secret::inject(&view, &plan, &tokens) {
            Ok(patch) => match resp.clone().with_patch(patch) {
                Ok(r) => (r, kind, outcome),
                Err(e) => {
                    warn(&mut resp, format!("cannot serialize patch: {e}"));
                    (resp, kind, Outcome::Invalid)
                }
            },
            Err(e) => (
                self.with_error(resp, &view, &e.to_string()),
                kind,
                Outcome::Invalid,
            ),
        }
    }

    /// The namespace's labels if a rule that could match it selects by label (cached by the
    /// source; bounded by what is left of the request's budget), else none needed.
    async fn namespace_labels(
        &self,
        policy: &Policy,
        namespace: &str,
        budget: Duration,
    ) -> Result<crate::namespaces::Labels, String> {
        if !policy.needs_labels(namespace) {
            return Ok(Default::default());
        }
        let Some(source) = &self.namespace_labels else {
            return Err("no Kubernetes client to read them with".into());
        };
        tokio::time::timeout(budget, source.labels(namespace))
            .await
            .unwrap_or_else(|_| {
                Err("no answer from the Kubernetes API within the request timeout".into())
            })
    }

    /// A policy refusal: no token, the `error` annotation and a warning that name the rule, and
    /// the refusal counted by rule.
    fn refused(
        &self,
        resp: AdmissionResponse,
        view: &SecretView,
        kind: &'static str,
        refusal: &Refusal,
    ) -> (AdmissionResponse, &'static str, Outcome) {
        self.metrics
            .policy_refusal(refusal.rule_label(), refusal.reason.metric_label());
        (
            self.with_error(resp, view, &refusal.to_string()),
            kind,
            Outcome::Policy,
        )
    }

    /// Allowed, with a warning and the `error` annotation: the secret keeps what it had.
    fn with_error(
        &self,
        mut resp: AdmissionResponse,
        view: &SecretView,
        reason: &str,
    ) -> AdmissionResponse {
        warn(&mut resp, reason);
        let patch = secret::error_patch(view, reason);
        match resp.clone().with_patch(patch) {
            Ok(r) => r,
            Err(_) => resp,
        }
    }

    /// Fetches every key concurrently. The fetches run as tasks, so one that outlives this
    /// request's deadline still fills the cache for the next request.
    async fn fetch_all(
        &self,
        keys: Vec<TokenKey>,
        budget: Duration,
    ) -> Result<Vec<(TokenKey, Served)>, TokenError> {
        let deadline = tokio::time::Instant::now() + budget;
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let cache = self.tokens.clone();
                let k = key.clone();
                (key, tokio::spawn(async move { cache.get(&k).await }))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (key, task) in tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(served))) => out.push((key, served)),
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(join)) => {
                    return Err(TokenError::Malformed {
                        region: key.region,
                        message: format!("token task failed: {join}"),
                    });
                }
                Err(_) => {
                    return Err(TokenError::Timeout {
                        key: key.to_string(),
                        after: budget,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Serializes an answer the way the Kubernetes documentation writes it: kube-core would send
/// the patch as an array of numbers, which Go accepts, but base64 is the documented form and
/// a quarter of the size.
pub fn to_json(mut review: AdmissionReview<DynamicObject>) -> serde_json::Result<Vec<u8>> {
    use base64::Engine;
    let patch = review.response.as_mut().and_then(|r| r.patch.take());
    let mut value = serde_json::to_value(&review)?;
    if let (Some(patch), Some(resp)) = (
        patch,
        value.get_mut("response").and_then(|r| r.as_object_mut()),
    ) {
        resp.insert(
            "patch".into(),
            base64::engine::general_purpose::STANDARD
                .encode(patch)
                .into(),
        );
    }
    serde_json::to_vec(&value)
}

/// The time the webhook may spend on a request whose API-server `timeout` is `timeout`:
/// a tenth (at least 200 ms) is kept back for the answer to travel.
pub fn budget_for(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).max(Duration::from_millis(200)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
