//! The refresher: finds opted-in secrets whose token is due and "touches" each one (a merge
//! patch of `touched-at`), so the API server sends it through the webhook again. Only metadata
//! is read and returned (`PartialObjectMetadata`): the refresher never loads a secret's data.

pub mod decide;
pub mod leader;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, Error};
use tokio::sync::watch;

use self::decide::Due;
use crate::events::{SecretRef, missing_grant, secret_event, should_report};
use crate::metrics::{Metrics, TouchOutcome as Touch};
use crate::policy::SharedPolicy;
use crate::secret::{ERROR_ANNOTATION, EXPIRES_AT_ANNOTATION, INJECT_LABEL};
use crate::state::{State, error_annotation};
use crate::time::{parse_rfc3339, rfc3339};

#[derive(Clone, Debug)]
pub struct RefresherConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Secrets whose token has less than this left are touched.
    pub margin: Duration,
    /// Touches per second, at most.
    pub touch_qps: f64,
    /// Secrets listed per page.
    pub page_size: u32,
    /// Secrets are due somewhere in (margin − window, margin] before expiry, each at its own
    /// point, so secrets sharing one token are not touched together.
    pub spread_window: Duration,
    /// Back-off for a secret whose touch did not take: first retry, and the most.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Namespaces no policy rule can cover are not touched (the webhook would refuse them).
    /// Shared with the webhook, so a reloaded policy file applies to the next pass.
    pub policy: SharedPolicy,
    /// Namespaced mode: list only in these namespaces (one list each), so RBAC can grant
    /// secrets and events per namespace. Empty: one cluster-wide list.
    pub namespaces: Vec<String>,
}

impl RefresherConfig {
    /// A window of a quarter of the margin, at most an hour.
    pub fn default_spread(margin: Duration) -> Duration {
        (margin / 4).min(Duration::from_secs(3600))
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub pages: usize,
    /// Opted-in secrets within the policy.
    pub seen: usize,
    /// Every opted-in secret listed, by state (as `status` names them) once the pass's touches
    /// are done: a touched secret counts as the touch returned it, a deleted one not at all.
    pub states: BTreeMap<State, usize>,
    /// The earliest `expires-at` among secrets within the policy, after the touches.
    pub earliest_expiry: Option<SystemTime>,
    pub due: usize,
    pub touched: usize,
    pub took: usize,
    pub failed: usize,
    pub skipped_backoff: usize,
}

/// A secret due for a touch, as listed.
struct Listed {
    namespace: String,
    name: String,
    uid: String,
    due: Due,
    state: State,
    expires_at: Option<SystemTime>,
}

/// A listed secret's state (as `status` names it) and readable `expires-at`, from its annotations.
fn state_of(
    annotations: Option<&BTreeMap<String, String>>,
    outside_policy: bool,
    now: SystemTime,
    margin: Duration,
) -> (State, Option<SystemTime>) {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let expires_at = get(EXPIRES_AT_ANNOTATION).and_then(parse_rfc3339);
    let error = error_annotation(get(ERROR_ANNOTATION));
    (
        State::of(outside_policy, error, expires_at, now, margin),
        expires_at,
    )
}

fn earliest_of(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Failure {
    count: u32,
    retry_at: Instant,
}

/// Spaces touches at `qps` with ±50 % jitter.
struct Pacer {
    period: Duration,
    next: tokio::time::Instant,
}

impl Pacer {
    fn new(qps: f64) -> Self {
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            1.0
        };
        Pacer {
            period: Duration::from_secs_f64(1.0 / qps),
            next: tokio::time::Instant::now(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        // Slots follow each other regardless of how long a touch takes; after falling behind,
        // at most one slot is caught up at once.
        let jitter = 0.5 + jitter_fraction();
        let now = tokio::time::Instant::now();
        let floor = now.checked_sub(self.period).unwrap_or(now);
        self.next = self.next.max(floor) + self.period.mul_f64(jitter);
    }
}

/// A cheap random fraction in [0, 1): the jitter needs no cryptographic quality.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(Instant::now()) % 1_000_000) as f64 / 1_000_000.0
}

pub struct Refresher {
    client: Client,
    cfg: RefresherConfig,
    metrics: Arc<Metrics>,
    failures: HashMap<String, Failure>,
    /// Set by `run`: a pass stops touching as soon as leadership is lost or shutdown begins.
    leading: Option<watch::Receiver<bool>>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl Refresher {
    pub fn new(client: Client, cfg: RefresherConfig, metrics: Arc<Metrics>) -> Self {
        Refresher {
            client,
            cfg,
            metrics,
            failures: HashMap::new(),
            leading: None,
            shutdown: None,
        }
    }

    fn may_touch(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
            && self.shutdown.as_ref().is_none_or(|s| !*s.borrow())
    }

    /// One pass over every opted-in secret: list (paginated), decide, touch the due ones.
    pub async fn pass(&mut self) -> Result<PassStats, Error> {
        let scopes: Vec<Api<Secret>> = if self.cfg.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.cfg
                .namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let selector = format!("{INJECT_LABEL}=true");
        let policy = self.cfg.policy.current();
        let mut stats = PassStats::default();
        let mut due_list = Vec::new();
        // Expiries of the secrets that are not touched; those of the touched ones are added
        // after their touch.
        let mut earliest: Option<SystemTime> = None;
        let now = SystemTime::now();
        for api in &scopes {
            let mut continue_token: Option<String> = None;
            loop {
                let mut lp = ListParams::default()
                    .labels(&selector)
                    .limit(self.cfg.page_size);
                lp = match &continue_token {
                    Some(token) => lp.continue_token(token),
                    // The first page may come from the API server's cache: a slightly stale view
                    // delays a touch by one pass at most, and the touch itself is a real write.
                    None => lp.match_any(),
                };
                let page = api.list_metadata(&lp).await?;
                stats.pages += 1;
                for item in &page.items {
                    let meta = &item.metadata;
                    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref())
                    else {
                        continue;
                    };
                    let annotations = meta.annotations.as_ref();
                    let outside = !policy.may_match_namespace(ns);
                    let (state, expires_at) = state_of(annotations, outside, now, self.cfg.margin);
                    if outside {
                        // Counted, but neither touched nor in the earliest expiry: the webhook
                        // would not refresh it.
                        *stats.states.entry(state).or_default() += 1;
                        continue;
                    }
                    stats.seen += 1;
                    let uid = meta.uid.clone().unwrap_or_else(|| format!("{ns}/{name}"));
                    let offset = decide::spread(&uid, self.cfg.spread_window);
                    let due = decide::due(annotations, now, self.cfg.margin.saturating_sub(offset));
                    if due.is_due() {
                        stats.due += 1;
                        due_list.push(Listed {
                            namespace: ns.to_string(),
                            name: name.to_string(),
                            uid,
                            due,
                            state,
                            expires_at,
                        });
                    } else {
                        *stats.states.entry(state).or_default() += 1;
                        earliest = earliest_of(earliest, expires_at);
                    }
                }
                continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
                if continue_token.is_none() {
                    break;
                }
            }
        }

        let mut pacer = Pacer::new(self.cfg.touch_qps);
        let mut stopped = false;
        for listed in due_list {
            let Listed {
                namespace: ns,
                name,
                uid,
                due,
                state,
                expires_at,
            } = listed;
            // Until a touch says otherwise, the secret is as listed.
            let mut after = (Some(state), expires_at);
            if stopped || !self.may_touch() {
                if !stopped {
                    tracing::info!("stopping the pass: no longer leading, or shutting down");
                }
                stopped = true;
            } else if let Some(f) = self.failures.get(&uid)
                && f.retry_at > Instant::now()
            {
                stats.skipped_backoff += 1;
            } else {
                pacer.wait().await;
                let failures_before = self.failures.get(&uid).map_or(0, |f| f.count);
                let report = should_report(failures_before + 1);
                let (outcome, returned) = self.touch(&ns, &name, &due, report).await;
                if let Some(a) = returned {
                    // The secret as the touch left it (the webhook's answer included).
                    let (state, expires_at) =
                        state_of(Some(&a), false, SystemTime::now(), self.cfg.margin);
                    after = (Some(state), expires_at);
                } else if outcome == Touch::Gone {
                    after = (None, None);
                }
                self.record(&mut stats, uid, outcome);
            }
            if let (Some(state), expires_at) = after {
                *stats.states.entry(state).or_default() += 1;
                earliest = earliest_of(earliest, expires_at);
            }
        }
        stats.earliest_expiry = earliest;
        // A replica that lost the lease during the pass does not publish the states: the new
        // leader does.
        if self.may_touch() {
            let states: Vec<(State, usize)> = State::ALL
                .into_iter()
                .filter(|s| s.is_listed())
                .map(|s| (s, stats.states.get(&s).copied().unwrap_or(0)))
                .collect();
            self.metrics.pass(stats.seen, stats.due, &states, earliest);
        }
        Ok(stats)
    }

    /// Books a touch's outcome: counts, the metric, and the secret's back-off.
    fn record(&mut self, stats: &mut PassStats, uid: String, outcome: Touch) {
        stats.touched += 1;
        self.metrics.touch(outcome);
        match outcome {
            Touch::Took | Touch::Gone => {
                if outcome == Touch::Took {
                    stats.took += 1;
                }
                self.failures.remove(&uid);
            }
            // Changed underneath: the next pass sees the new version.
            Touch::Conflict => {}
            Touch::DidNotTake | Touch::Forbidden | Touch::Error => {
                stats.failed += 1;
                let f = self.failures.entry(uid).or_insert(Failure {
                    count: 0,
                    retry_at: Instant::now(),
                });
                f.count += 1;
                f.retry_at = Instant::now()
                    + decide::retry_after(
                        f.count,
                        self.cfg.retry_base,
                        self.cfg.retry_max,
                        jitter_fraction(),
                    );
            }
        }
    }

    /// Touches one secret; `report` says whether a touch that does not take gets an Event.
    /// With the outcome come the annotations of the object the API server returned, if it did.
    async fn touch(
        &self,
        ns: &str,
        name: &str,
        due: &Due,
        report: bool,
    ) -> (Touch, Option<BTreeMap<String, String>>) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let now = SystemTime::now();
        let patch = Patch::Merge(decide::touch_patch(now));
        match api
            .patch_metadata(name, &PatchParams::default(), &patch)
            .await
        {
            Ok(PartialObjectMeta { metadata, .. }) => {
                let outcome = if decide::touch_took(
                    metadata.annotations.as_ref(),
                    now,
                    self.cfg.margin,
                ) {
                    tracing::debug!(
                        namespace = ns,
                        secret = name,
                        reason = due.metric_label(),
                        "touched"
                    );
                    Touch::Took
                } else {
                    let why = decide::why_not_taken(metadata.annotations.as_ref());
                    tracing::warn!(namespace = ns, secret = name, reason = %why, "touch did not refresh the token");
                    if report {
                        self.event(ns, name, &metadata, &why).await;
                    }
                    Touch::DidNotTake
                };
                (outcome, Some(metadata.annotations.unwrap_or_default()))
            }
            Err(Error::Api(s)) if s.code == 404 => (Touch::Gone, None),
            Err(Error::Api(s)) if s.code == 409 => (Touch::Conflict, None),
            Err(Error::Api(s)) if s.code == 403 => {
                // The refresher touches only the listed namespaces: there is always a grant to name.
                let advice =
                    missing_grant(&self.cfg.namespaces, ns, "patch on secrets").unwrap_or_default();
                tracing::warn!(namespace = ns, secret = name, reason = %s.message, advice, "touch forbidden");
                (Touch::Forbidden, None)
            }
            Err(e) => {
                tracing::warn!(namespace = ns, secret = name, error = %e, "touch failed");
                (Touch::Error, None)
            }
        }
    }

    /// A Warning Event on the secret, so `kubectl describe secret` shows why it was not refreshed.
    async fn event(&self, ns: &str, name: &str, meta: &ObjectMeta, message: &str) {
        let secret = SecretRef {
            namespace: ns,
            name,
            uid: meta.uid.as_deref(),
            resource_version: meta.resource_version.as_deref(),
        };
        let message = format!(
            "touch at {} did not refresh the ECR token: {message}",
            rfc3339(SystemTime::now())
        );
        if let Err(e) = secret_event(&self.client, &secret, "TokenNotRefreshed", message).await {
            tracing::warn!(namespace = ns, secret = name, error = %e, "could not record an Event");
        }
    }

    /// Earliest moment a backed-off secret may be retried.
    fn next_retry(&self) -> Option<Instant> {
        self.failures.values().map(|f| f.retry_at).min()
    }

    /// Passes every interval while `leading` is true, until `shutdown` turns true. Retries of
    /// failed touches wake it earlier (not more often than once a second).
    pub async fn run(
        mut self,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.leading = Some(leading.clone());
        self.shutdown = Some(shutdown.clone());
        loop {
            if *shutdown.borrow() {
                return;
            }
            if *leading.borrow() {
                let started = Instant::now();
                match self.pass().await {
                    Ok(s) => tracing::info!(
                        seen = s.seen,
                        due = s.due,
                        touched = s.touched,
                        took = s.took,
                        failed = s.failed,
                        pages = s.pages,
                        took_ms = started.elapsed().as_millis() as u64,
                        "refresh pass"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "refresh pass failed: cannot list secrets; the webhook keeps serving")
                    }
                }
            } else {
                // Only the leader reports the secrets' states (see Metrics::clear_secret_states).
                self.metrics.clear_secret_states();
            }
            let mut sleep = self.cfg.interval;
            if let Some(r) = self.next_retry() {
                sleep = sleep.min(
                    r.saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1)),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                // A dropped sender means leadership no longer changes: just sleep.
                _ = async {
                    if leading.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
