//! Turning an AdmissionReview into an answer: the policy, the secret's plan, tokens from the
//! cache within the API server's deadline, and the patch.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::Instrument;

use crate::json;
use crate::logging;
use crate::metrics::{AdmissionOutcome as Outcome, Metrics, Operation};
use crate::namespaces::NamespaceLabels;
use crate::policy::{Decision, Labels, Policy, Refusal, SharedPolicy};
use crate::refresh;
use crate::refresher::{self, SecretRef, secret_event};
use crate::secret::{self, SecretKind, SecretObject, SecretView};
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
    memo: PatchMemo,
    /// Warning Events on secrets that get no token; None without a Kubernetes client.
    events: Option<Arc<EventSink>>,
}

/// Warning Events on secrets the webhook fails open on or refuses by policy, rate-limited per
/// secret as the refresher's are ([`refresh::should_report`]): the 1st, 2nd, 4th, 8th... failed
/// write in a row. Sent off the request path; a success forgets the secret's count.
pub struct EventSink {
    client: kube::Client,
    /// Consecutive failed writes by namespace, then name (nested so a lookup borrows).
    failures: Mutex<HashMap<String, HashMap<String, u32>>>,
    forbidden_logged: AtomicBool,
    /// Namespaced mode's namespaces (empty: cluster-wide), for the advice on a Forbidden.
    namespaces: Vec<String>,
}

/// Secrets tracked at most; past it the counts start over (the first failure reports again).
const MAX_TRACKED: usize = 10_000;

impl EventSink {
    /// `namespaces`: the `--secret-namespaces` of namespaced mode, empty when cluster-wide.
    pub fn new(client: kube::Client, namespaces: Vec<String>) -> Arc<Self> {
        Arc::new(EventSink {
            client,
            failures: Mutex::new(HashMap::new()),
            forbidden_logged: AtomicBool::new(false),
            namespaces,
        })
    }

    /// Counts a failed write and says whether it is reported.
    fn failed(&self, namespace: &str, name: &str) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.values().map(HashMap::len).sum::<usize>() >= MAX_TRACKED {
            f.clear();
        }
        let count = f
            .entry(namespace.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert(0);
        *count = count.saturating_add(1);
        refresh::should_report(*count)
    }

    /// A token was written: the next failure is the first again.
    fn succeeded(&self, namespace: &str, name: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_empty() {
            return;
        }
        if let Some(names) = f.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                f.remove(namespace);
            }
        }
    }

    fn send(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        reason: &'static str,
        message: String,
    ) {
        let sink = self.clone();
        let (namespace, name, uid) = (
            namespace.to_string(),
            name.to_string(),
            uid.map(str::to_string),
        );
        tokio::spawn(async move {
            let secret = SecretRef {
                namespace: &namespace,
                name: &name,
                uid: uid.as_deref(),
                resource_version: None,
            };
            match secret_event(&sink.client, &secret, reason, message).await {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    match refresher::missing_grant(&sink.namespaces, &namespace, "create on events")
                    {
                        Some(advice) => {
                            if !sink.forbidden_logged.swap(true, Ordering::Relaxed) {
                                tracing::warn!(namespace, secret = name, reason = %s.message, advice,
                                    "cannot record Events: forbidden (logged once)");
                            }
                        }
                        None => tracing::debug!(
                            namespace,
                            secret = name,
                            "no Event outside the secret namespaces (namespaced mode)"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace, secret = name, error = %e, "could not record an Event")
                }
            }
        });
    }
}

/// Encoded patches for the single-token kinds, per token key and secret shape
/// ([`secret::single_token_shape`]): most writes are touches of secrets that share a token, and
/// their patch is the same bytes each time. An entry holds its token, so it is used only while
/// the cache hands out that very token; a new token replaces it.
#[derive(Default)]
struct PatchMemo(Mutex<HashMap<TokenKey, [Option<MemoEntry>; 8], foldhash::fast::RandomState>>);

/// A token and the encoded patch that writes it.
type MemoEntry = (Arc<Token>, Arc<str>);

impl PatchMemo {
    fn get(&self, key: &TokenKey, shape: u8, token: &Arc<Token>) -> Option<Arc<str>> {
        let memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match memo.get(key)?.get(usize::from(shape))? {
            Some((t, patch)) if Arc::ptr_eq(t, token) => Some(patch.clone()),
            _ => None,
        }
    }

    fn put(&self, key: &TokenKey, shape: u8, token: &Arc<Token>, patch: Arc<str>) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let shapes = memo.entry(key.clone()).or_default();
        if let Some(slot) = shapes.get_mut(usize::from(shape)) {
            *slot = Some((token.clone(), patch));
        }
    }
}

const WARNING_PREFIX: &str = "ecr-token-webhook: ";

/// The parts of an AdmissionReview the webhook reads. Strings borrow from the body where they
/// can; `oldObject`, `userInfo`, `managedFields` and the rest are skipped, never parsed or
/// stored ([`read_review`]).
struct ReviewIn<'a> {
    api_version: Cow<'a, str>,
    kind: Cow<'a, str>,
    request: Option<RequestIn<'a>>,
}

struct RequestIn<'a> {
    uid: Cow<'a, str>,
    kind: KindIn<'a>,
    name: Cow<'a, str>,
    namespace: Option<Cow<'a, str>>,
    operation: Cow<'a, str>,
    /// Boxed: it is most of the request's size, and the request is moved (out of the reader,
    /// into the review's future) several times; one allocation costs less than those copies.
    object: Option<Box<SecretObject<'a>>>,
    /// A dry run is never persisted: it gets its answer but no Event ([`RequestIn::dry_run`]).
    dry_run: Option<bool>,
    /// Where the reading of the request stopped, if it stopped before its end.
    rest: Option<json::Reader<'a>>,
}

impl RequestIn<'_> {
    /// Whether the request is a dry run. Go's encoding/json writes `dryRun` after `oldObject`,
    /// which the admission path does not otherwise read, so it is looked for only when it
    /// matters: for a write that gets an Event. Damage there reads as not a dry run.
    fn dry_run(&self) -> bool {
        if let Some(d) = self.dry_run {
            return d;
        }
        let Some(mut r) = self.rest else {
            return false;
        };
        let mut dry_run = false;
        let _ = r.resume(|r, key| {
            if !key.is("dryRun") {
                return Ok(json::Walk::Next);
            }
            dry_run = r.read::<Option<bool>>()?.unwrap_or(false);
            Ok(json::Walk::Stop)
        });
        dry_run
    }
}

#[derive(Deserialize)]
struct KindIn<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

/// Reads a review body: the fields above through serde_json, the rest skipped
/// ([`json::Reader`]). The same fields are required, optional and typed as a derived
/// `Deserialize` would have them. Once the request's fields are all read, the reading stops:
/// what Go's encoding/json writes after `object` (`oldObject`, `dryRun`, `options`) is not
/// scanned, and so not checked either; `dryRun` is read when needed ([`RequestIn::dry_run`]).
fn read_review(body: &[u8]) -> Result<ReviewIn<'_>, json::Error> {
    let mut r = json::Reader::new(body);
    let (mut api_version, mut kind, mut request) = (None, None, None);
    let ended = r.object(|r, key| {
        if key.is("apiVersion") {
            r.once(&mut api_version, "apiVersion", json::Reader::text)?;
        } else if key.is("kind") {
            r.once(&mut kind, "kind", json::Reader::text)?;
        } else if key.is("request") {
            r.once(&mut request, "request", |r| r.nullable(read_request))?;
            if let Some(Some(req)) = &mut request
                && req.rest.is_some()
            {
                if api_version.is_some() && kind.is_some() {
                    return Ok(json::Walk::Stop);
                }
                // Not in Go's order: the review's own fields are still to come. `dryRun` is
                // read as `read_request` reads it: `null` is absent, a second one an error.
                let mut dry_run = req.dry_run.map(Some);
                r.resume(|r, key| {
                    if key.is("dryRun") {
                        r.read_once(&mut dry_run, "dryRun")?;
                    }
                    Ok(json::Walk::Next)
                })?;
                req.dry_run = dry_run.flatten();
                req.rest = None;
            }
        }
        Ok(json::Walk::Next)
    })?;
    let end = r.at();
    if ended {
        r.end()?;
    }
    Ok(ReviewIn {
        api_version: api_version.ok_or_else(|| json::missing(end, "apiVersion"))?,
        kind: kind.ok_or_else(|| json::missing(end, "kind"))?,
        request: request.flatten(),
    })
}

fn read_request<'a>(r: &mut json::Reader<'a>) -> Result<RequestIn<'a>, json::Error> {
    let (mut uid, mut kind, mut name, mut namespace) = (None, None, None, None);
    let (mut operation, mut object, mut dry_run) = (None, None, None);
    let ended = r.object(|r, key| {
        if key.is("uid") {
            r.once(&mut uid, "uid", json::Reader::text)?;
        } else if key.is("kind") {
            r.read_once(&mut kind, "kind")?;
        } else if key.is("name") {
            r.once(&mut name, "name", json::Reader::text)?;
        } else if key.is("namespace") {
            r.once(&mut namespace, "namespace", |r| {
                r.nullable(json::Reader::text)
            })?;
        } else if key.is("operation") {
            r.once(&mut operation, "operation", json::Reader::text)?;
        } else if key.is("dryRun") {
            r.read_once(&mut dry_run, "dryRun")?;
        } else if key.is("object") {
            r.once(&mut object, "object", |r| r.nullable(SecretObject::read))?;
        }
        // Everything the webhook uses is read, whatever comes next (only `dryRun` matters).
        let all = uid.is_some()
            && kind.is_some()
            && name.is_some()
            && namespace.is_some()
            && operation.is_some()
            && object.is_some();
        Ok(if all {
            json::Walk::Stop
        } else {
            json::Walk::Next
        })
    })?;
    let end = r.at();
    Ok(RequestIn {
        uid: uid.ok_or_else(|| json::missing(end, "uid"))?,
        kind: kind.ok_or_else(|| json::missing(end, "kind"))?,
        name: name.unwrap_or_default(),
        namespace: namespace.flatten(),
        operation: operation.ok_or_else(|| json::missing(end, "operation"))?,
        object: object.flatten(),
        dry_run: dry_run.flatten(),
        rest: (!ended).then_some(*r),
    })
}

/// The webhook's answer to one review.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<'a> {
    /// Borrowed from the review's body where the request's uid is.
    uid: Cow<'a, str>,
    allowed: bool,
    /// Why the write is denied (only when not allowed).
    message: Option<String>,
    /// A JSON patch (RFC 6902), serialized, then base64-encoded as the answer carries it.
    patch: Option<Arc<str>>,
    warnings: Vec<String>,
}

impl<'a> Answer<'a> {
    fn allow(uid: impl Into<Cow<'a, str>>) -> Self {
        Answer {
            uid: uid.into(),
            allowed: true,
            message: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, message: impl AsRef<str>) {
        self.warnings
            .push(format!("{WARNING_PREFIX}{}", message.as_ref()));
    }

    fn deny(mut self, reason: String) -> Self {
        self.allowed = false;
        self.message = Some(reason);
        self.patch = None;
        self
    }

    fn with_patch(mut self, patch: &json_patch::Patch) -> Self {
        match encode_patch(patch) {
            Ok(encoded) => self.patch = Some(encoded),
            // Plain data cannot fail to serialize; if it ever did, say so rather than panic.
            Err(e) => self.warn(format!("cannot serialize patch: {e}")),
        }
        self
    }

    /// The JSON patch the answer carries, decoded (for tests and tools).
    pub fn patch(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let p = self.patch.as_ref()?;
        base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .ok()
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
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
            memo: PatchMemo::default(),
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
        let review =
            read_review(body).map_err(|e| BadReview(format!("malformed AdmissionReview: {e}")))?;
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
                warnings = %logging::list(&answer.warnings), "answered"),
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
        let labels = match &labels {
            Ok(Some(l)) => Labels::Known(l),
            Ok(None) => Labels::Known(&NONE_NEEDED),
            Err(e) => Labels::Unknown(e),
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
        let shape = secret::single_token_shape(&view, &plan);
        let reusable = match (shape, fetched.as_slice()) {
            (Some(shape), [(key, Ok(s))]) => Some((key, shape, &s.token)),
            _ => None,
        };
        if let Some((key, shape, token)) = reusable
            && let Some(patch) = self.memo.get(key, shape, token)
        {
            answer.patch = Some(patch);
            return (answer, kind, outcome);
        }
        let tokens: BTreeMap<TokenKey, &Token> =
            served().map(|(k, s)| (k.clone(), &*s.token)).collect();
        match secret::inject_partial(&view, &plan, &tokens, partial.as_deref()) {
            Ok(patch) => {
                let answer = answer.with_patch(&patch);
                if let (Some((key, shape, token)), Some(encoded)) = (reusable, &answer.patch) {
                    self.memo.put(key, shape, token, encoded.clone());
                }
                (answer, kind, outcome)
            }
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
        if req.name.is_empty() || req.dry_run() || !events.failed(namespace, &req.name) {
            return;
        }
        // The reason is the answer's last warning (stale-token warnings come before it).
        let message = answer
            .warnings
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
    ) -> Result<Option<crate::namespaces::Labels>, String> {
        if !policy.needs_labels(namespace) {
            return Ok(None);
        }
        let Some(source) = &self.namespace_labels else {
            return Err("no Kubernetes client to read them with".into());
        };
        tokio::time::timeout_at(deadline.into(), source.labels(namespace))
            .await
            .map(|r| r.map(Some))
            .unwrap_or_else(|_| {
                Err("no answer from the Kubernetes API within the request timeout".into())
            })
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
        // The usual case, every key a hit, builds the answer's list and nothing else.
        let mut hits = Vec::with_capacity(keys.len());
        let mut keys = keys.into_iter();
        let mut found: Vec<(TokenKey, Option<Served>)> = loop {
            let Some(key) = keys.next() else {
                return hits;
            };
            if let Some(served) = self.tokens.cached(&key).await {
                hits.push((key, Ok(served)));
                continue;
            }
            let mut found = Vec::with_capacity(hits.len() + 1 + keys.len());
            found.extend(hits.into_iter().map(|(k, s)| (k, s.ok())));
            found.push((key, None));
            break found;
        };
        for key in keys {
            let hit = self.tokens.cached(&key).await;
            found.push((key, hit));
        }
        // What is left of the request's budget, for the timeout's message.
        let budget = deadline.saturating_duration_since(Instant::now());
        let tasks: Vec<_> = found
            .into_iter()
            .map(|(key, hit)| {
                let task = match hit {
                    Some(_) => None,
                    None => {
                        let cache = self.tokens.clone();
                        let k = key.clone();
                        Some(tokio::spawn(async move { cache.get_missed(&k).await }))
                    }
                };
                (key, hit, task)
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (key, hit, task) in tasks {
            let Some(task) = task else {
                if let Some(served) = hit {
                    out.push((key, Ok(served)));
                }
                continue;
            };
            let got = match tokio::time::timeout_at(deadline.into(), task).await {
                Ok(Ok(got)) => got,
                Ok(Err(join)) => Err(TokenError::Malformed {
                    region: key.place().to_string(),
                    message: format!("token task failed: {join}"),
                }),
                Err(_) => Err(TokenError::Timeout {
                    key: key.to_string(),
                    after: budget,
                }),
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

/// A JSON patch serialized and base64-encoded, as an AdmissionResponse carries it.
fn encode_patch(patch: &json_patch::Patch) -> serde_json::Result<Arc<str>> {
    use base64::Engine;
    let json = serde_json::to_vec(patch)?;
    Ok(base64::engine::general_purpose::STANDARD
        .encode(json)
        .into())
}

/// Allowed, with a warning and the `error` annotation: the secret keeps what it had.
fn with_error<'a>(mut answer: Answer<'a>, view: &SecretView, reason: &str) -> Answer<'a> {
    answer.warn(reason);
    let patch = secret::error_patch(view, reason);
    answer.with_patch(&patch)
}

/// The answer as the API server reads it, in three parts so the memoized patch is never
/// copied: the bytes before the patch, the patch (shared with the memo), the bytes after. The
/// patch is base64 (the documented form; a byte array would be four times the size), which
/// needs no escaping; a denial is a 403 status with the reason.
#[derive(Debug)]
pub struct AnswerParts {
    pub head: Vec<u8>,
    pub patch: Option<Arc<str>>,
    pub tail: Cow<'static, [u8]>,
}

impl AnswerParts {
    pub fn len(&self) -> usize {
        self.head.len() + self.patch.as_deref().map_or(0, str::len) + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn to_parts(answer: &Answer) -> serde_json::Result<AnswerParts> {
    let mut head = Vec::with_capacity(160 + answer.uid.len());
    head.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    serde_json::to_writer(&mut head, &answer.uid)?;
    head.extend_from_slice(if answer.allowed {
        br#","allowed":true"#
    } else {
        br#","allowed":false"#
    });
    if let Some(message) = &answer.message {
        head.extend_from_slice(br#","status":{"code":403,"message":"#);
        serde_json::to_writer(&mut head, message)?;
        head.push(b'}');
    }
    let patch = answer.patch.clone();
    if patch.is_some() {
        head.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
    }
    let close: &'static [u8] = if patch.is_some() { b"\"}}" } else { b"}}" };
    let tail = if answer.warnings.is_empty() {
        Cow::Borrowed(close)
    } else {
        let mut tail =
            Vec::with_capacity(16 + answer.warnings.iter().map(|w| w.len() + 4).sum::<usize>());
        if patch.is_some() {
            tail.push(b'"');
        }
        tail.extend_from_slice(br#","warnings":"#);
        serde_json::to_writer(&mut tail, &answer.warnings)?;
        tail.extend_from_slice(b"}}");
        Cow::Owned(tail)
    };
    Ok(AnswerParts { head, patch, tail })
}

/// The answer's bytes in one buffer ([`to_parts`] joined).
pub fn to_json(answer: &Answer) -> serde_json::Result<Vec<u8>> {
    let parts = to_parts(answer)?;
    let mut buf = Vec::with_capacity(parts.len());
    buf.extend_from_slice(&parts.head);
    buf.extend_from_slice(parts.patch.as_deref().unwrap_or_default().as_bytes());
    buf.extend_from_slice(&parts.tail);
    Ok(buf)
}

/// The time the webhook may spend on a request whose API-server `timeout` is `timeout`:
/// a tenth (at least 200 ms) is kept back for the answer to travel.
pub fn budget_for(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).max(Duration::from_millis(200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a derived `Deserialize` reads, the reference for [`read_review`].
    #[derive(Deserialize)]
    struct SerdeReview<'a> {
        #[serde(rename = "apiVersion", borrow)]
        api_version: Cow<'a, str>,
        #[serde(borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        request: Option<SerdeRequest<'a>>,
    }

    #[derive(Deserialize)]
    struct SerdeRequest<'a> {
        #[serde(borrow)]
        uid: Cow<'a, str>,
        #[serde(borrow)]
        kind: KindIn<'a>,
        #[serde(borrow, default)]
        name: Cow<'a, str>,
        #[serde(borrow, default)]
        namespace: Option<Cow<'a, str>>,
        #[serde(borrow)]
        operation: Cow<'a, str>,
        #[serde(default)]
        object: Option<SecretObject<'a>>,
        #[serde(default, rename = "dryRun")]
        dry_run: Option<bool>,
    }

    /// What the webhook uses of a review, in one line.
    fn line(api_version: &str, kind: &str, r: Option<&RequestIn>) -> String {
        let r = r.map(|r| {
            let k = &r.kind;
            format!(
                "{}|{}/{}/{}|{}|{:?}|{}|{}|{:?}",
                r.uid,
                k.group,
                k.version,
                k.kind,
                r.name,
                r.namespace,
                r.operation,
                r.dry_run(),
                r.object
            )
        });
        format!("{api_version}|{kind}|{r:?}")
    }

    fn ours(body: &[u8]) -> Result<String, json::Error> {
        let v = read_review(body)?;
        Ok(line(&v.api_version, &v.kind, v.request.as_ref()))
    }

    fn serdes(body: &[u8]) -> serde_json::Result<String> {
        let v: SerdeReview = serde_json::from_slice(body)?;
        let r = v.request.map(|r| RequestIn {
            uid: r.uid,
            kind: r.kind,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            object: r.object.map(Box::new),
            dry_run: r.dry_run,
            rest: None,
        });
        Ok(line(&v.api_version, &v.kind, r.as_ref()))
    }

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        out.sort();
        assert!(out.len() >= 9, "{out:?}");
        out
    }

    /// The review reader keeps what a derived `Deserialize` would, for every captured review
    /// and for each of them damaged a byte at a time: where serde_json reads a review, it
    /// reads the same (but for a `dryRun` the damage hides). Where serde_json refuses one, the
    /// reader may answer from what it read, since it does not check what it skips or what
    /// follows `object`; it never panics, and no review cut short before the end of `object`
    /// is read. Most damage it still refuses (counted).
    #[test]
    fn the_review_reader_agrees_with_serde_on_every_fixture_and_damage() {
        let (mut checked, mut refused_too, mut serde_refused) = (0, 0, 0);
        for (name, body) in fixtures() {
            let want = serdes(&body).unwrap();
            assert_eq!(ours(&body).unwrap(), want, "{name}");
            // Where the reading may stop: just past `object`, before the member after it.
            let mut tail = body
                .windows(11)
                .position(|w| w == b"\"oldObject\"")
                .unwrap_or(body.len());
            while tail > 0 && (body[tail - 1] == b',' || body[tail - 1].is_ascii_whitespace()) {
                tail -= 1;
            }
            // dryRun is the one field read from the tail; damage there may hide it.
            let unless_dry_run = |s: &str| s.replace("|true|", "|false|");
            for cut in 0..body.len() {
                if body[cut..].iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match ours(&body[..cut]) {
                    Err(_) => {}
                    Ok(o) => {
                        assert!(cut >= tail, "{name} cut at {cut} read");
                        assert_eq!(unless_dry_run(&o), unless_dry_run(&want), "{name} {cut}");
                    }
                }
            }
            // Every byte of the touch; every seventh of the others (the same structure).
            let step = if name.ends_with("update-touch.json") {
                1
            } else {
                7
            };
            for at in (0..body.len()).step_by(step) {
                for with in [
                    Some(b'"'),
                    Some(b'}'),
                    Some(b']'),
                    Some(b'\\'),
                    Some(b','),
                    Some(b'x'),
                    Some(0x01),
                    None,
                ] {
                    let mut damaged = body.clone();
                    match with {
                        Some(c) => damaged[at] = c,
                        None => {
                            damaged.remove(at);
                        }
                    }
                    checked += 1;
                    match (serdes(&damaged), ours(&damaged)) {
                        (Ok(s), Ok(o)) if at < tail => assert_eq!(o, s, "{name} {at} {with:?}"),
                        (Ok(s), Ok(o)) => {
                            assert_eq!(unless_dry_run(&o), unless_dry_run(&s), "{name} {at}")
                        }
                        (Ok(_), Err(e)) => panic!("{name} {at} {with:?}: refused valid: {e}"),
                        (Err(_), Err(_)) if at < tail => {
                            serde_refused += 1;
                            refused_too += 1;
                        }
                        (Err(_), Ok(_)) if at < tail => serde_refused += 1,
                        (Err(_), _) => {}
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
        // Before the tail, what it lets through is damage to what it skips.
        assert!(
            refused_too * 10 > serde_refused * 9,
            "refused {refused_too} of the {serde_refused} serde_json refused"
        );
    }

    #[test]
    fn review_errors_name_the_field_and_the_byte() {
        let cases = [
            (
                r#"{"kind":"AdmissionReview"}"#,
                "missing field `apiVersion` at byte 26",
            ),
            (
                r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","uid":"v"}}"#,
                "duplicate field `uid` at byte 87",
            ),
            (
                r#"{"apiVersion":"v","kind":"k","request":{"kind":{},"operation":"CREATE"}}"#,
                "missing field `uid` at byte 71",
            ),
            (
                r#"{"apiVersion":"v","kind":"k","request":{"uid":7}}"#,
                "invalid type: integer `7`, expected a string at byte 46",
            ),
            (
                r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","object":{"metadata":null}}}"#,
                "expected an object at byte 102",
            ),
            (
                r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"CREATE","object":{"metadata":{"labels":[]}}}}"#,
                "invalid type: sequence, expected a map of strings at byte 112",
            ),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|(body, _)| read_review(body.as_bytes()).err().map(|e| e.to_string()))
            .collect();
        let want: Vec<_> = cases.iter().map(|(_, w)| Some(w.to_string())).collect();
        assert_eq!(got, want);
        // null request and object are absent, as for serde's Option.
        let ok = r#"{"apiVersion":"v","kind":"k","request":{"uid":"u","kind":{},"operation":"X","object":null,"namespace":null}}"#;
        let v = read_review(ok.as_bytes()).unwrap();
        let r = v.request.unwrap();
        assert!(r.object.is_none() && r.namespace.is_none());
        let v = read_review(br#"{"apiVersion":"v","kind":"k","request":null}"#).unwrap();
        assert!(v.request.is_none());
        // Not in Go's order, the review's fields after the request: dryRun reads the same.
        for (dry_run, want) in [("null", Ok(None)), ("true", Ok(Some(true))), ("1", Err(()))] {
            let body = format!(
                r#"{{"request":{{"uid":"u","kind":{{}},"name":"n","namespace":"ns","operation":"X","object":null,"dryRun":{dry_run}}},"apiVersion":"v","kind":"k"}}"#
            );
            let got = read_review(body.as_bytes()).map(|v| v.request.and_then(|r| r.dry_run));
            assert_eq!(got.map_err(|_| ()), want, "{dry_run}");
            let serde = serde_json::from_str::<SerdeReview>(&body)
                .map(|v| v.request.and_then(|r| r.dry_run));
            assert_eq!(serde.map_err(|_| ()), want, "serde, {dry_run}");
        }
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
