//! The refresher against the test suite's Kubernetes API server (tests/it/common/fake_kube.rs),
//! which sends each write of an opted-in Secret through the real webhook over TLS, in front of
//! the test suite's ECR endpoint.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::commands::status::State;
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::refresher::leader::{Elector, LeaseConfig};
use ecr_token_webhook::refresher::{Refresher, RefresherConfig};
use ecr_token_webhook::time::{parse_rfc3339, rfc3339};
use serde_json::{Value, json};
use tokio::sync::watch;

const MARGIN: Duration = Duration::from_secs(6 * 3600);

fn argo(name: &str, ns: &str, expires_in: Option<Duration>, opted_in: bool) -> Value {
    let mut labels = json!({"argocd.argoproj.io/secret-type": "repository"});
    if opted_in {
        labels["ecr-token-webhook/inject"] = json!("true");
    }
    let mut annotations = json!({});
    if let Some(d) = expires_in {
        annotations["ecr-token-webhook/expires-at"] = json!(rfc3339(SystemTime::now() + d));
    }
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "data": {"url": "MTIzNDU2Nzg5MDEyLmRrci5lY3IudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20=", "type": "aGVsbQ=="},
    })
}

fn config() -> RefresherConfig {
    RefresherConfig {
        interval: Duration::from_millis(200),
        margin: MARGIN,
        touch_qps: 200.0,
        page_size: 500,
        spread_window: Duration::ZERO,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        policy: Policy::default().into(),
        namespaces: Vec::new(),
    }
}

struct Setup {
    h: Harness,
    kube: FakeKube,
    metrics: Arc<Metrics>,
}

async fn setup() -> Setup {
    let h = Harness::start(Options::default()).await;
    let kube = FakeKube::start(Some(h.base.clone()), https_client(&h.ca_pem)).await;
    Setup {
        h,
        kube,
        metrics: Arc::new(Metrics::default()),
    }
}

impl Setup {
    fn refresher(&self, cfg: RefresherConfig) -> Refresher {
        Refresher::new(self.kube.client(), cfg, self.metrics.clone())
    }

    fn expires(&self, ns: &str, name: &str) -> Option<SystemTime> {
        let s = self.kube.secret(ns, name)?;
        parse_rfc3339(s["metadata"]["annotations"]["ecr-token-webhook/expires-at"].as_str()?)
    }
}

/// Namespaced mode: one list per named namespace, never a cluster-wide one, and secrets
/// elsewhere are neither counted nor touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_mode_lists_and_touches_only_its_namespaces() {
    let s = setup().await;
    for (name, ns) in [("a", "argocd"), ("b", "apps"), ("c", "elsewhere")] {
        s.kube.seed(argo(name, ns, None, true));
    }
    let cfg = RefresherConfig {
        namespaces: vec!["argocd".into(), "apps".into()],
        ..config()
    };
    let stats = s.refresher(cfg).pass().await.expect("pass");
    assert_eq!((stats.seen, stats.took), (2, 2), "{stats:?}");
    assert_eq!(s.kube.cluster_lists(), 0, "no cluster-wide list");
    assert_eq!(s.kube.lists(), 2, "one list per namespace");
    assert!(s.expires("argocd", "a").is_some());
    assert!(s.expires("apps", "b").is_some());
    let other = s.kube.secret("elsewhere", "c").unwrap();
    assert!(
        other["metadata"]["annotations"]
            .get("ecr-token-webhook/touched-at")
            .is_none(),
        "outside the namespaced mode's namespaces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_secrets_are_touched_and_others_left_alone() {
    let s = setup().await;
    s.kube.seed(argo(
        "fresh",
        "argocd",
        Some(Duration::from_secs(11 * 3600)),
        true,
    ));
    s.kube.seed(argo(
        "expiring",
        "argocd",
        Some(Duration::from_secs(3600)),
        true,
    ));
    s.kube
        .seed(argo("expired", "apps", Some(Duration::ZERO), true));
    // Created while the webhook was down: no token, no expires-at.
    s.kube.seed(argo("never-injected", "apps", None, true));
    s.kube.seed(argo("not-opted-in", "apps", None, false));
    let mut unreadable = argo("unreadable", "apps", None, true);
    unreadable["metadata"]["annotations"]["ecr-token-webhook/expires-at"] = json!("soon");
    s.kube.seed(unreadable);

    let stats = s.refresher(config()).pass().await.expect("pass");
    assert_eq!(
        (stats.seen, stats.due, stats.took, stats.failed),
        (5, 4, 4, 0),
        "{stats:?}"
    );
    // Counted as the touches left them.
    assert_eq!(stats.states, BTreeMap::from([(State::Fresh, 5)]));
    let horizon = SystemTime::now() + MARGIN;
    for (ns, name) in [
        ("argocd", "expiring"),
        ("apps", "expired"),
        ("apps", "never-injected"),
        ("apps", "unreadable"),
    ] {
        let secret = s.kube.secret(ns, name).unwrap();
        assert!(s.expires(ns, name).unwrap() > horizon, "{name} refreshed");
        assert_eq!(data(&secret, "username"), "AWS", "{name}");
        assert!(secret["metadata"]["annotations"]["ecr-token-webhook/touched-at"].is_string());
    }
    for (ns, name) in [("argocd", "fresh"), ("apps", "not-opted-in")] {
        let secret = s.kube.secret(ns, name).unwrap();
        assert!(
            secret["metadata"]["annotations"]
                .get("ecr-token-webhook/touched-at")
                .is_none(),
            "{name}"
        );
    }
    // All four got the one cached token: one ECR call.
    assert_eq!(s.h.ecr.calls(), 1);

    // Second pass: nothing due any more.
    let stats = s.refresher(config()).pass().await.unwrap();
    assert_eq!((stats.seen, stats.due, stats.touched), (5, 0, 0));
    let m = s.metrics.render(&[]);
    for want in [
        "ecr_token_webhook_refresh_touches_total{outcome=\"took\"} 4",
        "ecr_token_webhook_refresh_secrets_seen 5",
        "ecr_token_webhook_refresh_secrets_due 0",
        "ecr_token_webhook_refresh_last_pass_timestamp_seconds",
        "ecr_token_webhook_secrets{state=\"fresh\"} 5",
        "ecr_token_webhook_secrets{state=\"expired\"} 0",
        "ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds",
    ] {
        assert!(m.contains(want), "missing {want}\n{m}");
    }
}

/// The state gauges: every opted-in secret by the state `status` would give it, after the
/// pass's touches, and the earliest expiry among those within the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_counted_by_state() {
    let s = setup().await;
    let hours = |h: u64| Some(Duration::from_secs(h * 3600));
    s.kube.seed(argo("fresh", "argocd", hours(11), true));
    s.kube.seed(argo("expiring", "argocd", hours(1), true));
    s.kube.seed(argo("never-injected", "apps", None, true));
    let expired_at = SystemTime::now() - Duration::from_secs(60);
    let mut expired = argo("expired", "apps", None, true);
    expired["metadata"]["annotations"]["ecr-token-webhook/expires-at"] = json!(rfc3339(expired_at));
    s.kube.seed(expired);
    // A valid token and an error from a later write: error, and not due.
    let mut error = argo("error", "apps", hours(11), true);
    error["metadata"]["annotations"]["ecr-token-webhook/error"] = json!("no ECR token: denied");
    s.kube.seed(error);
    // Outside the policy: counted, not touched, and not the earliest expiry.
    let mut outside = argo("outside", "kube-system", None, true);
    outside["metadata"]["annotations"]["ecr-token-webhook/expires-at"] =
        json!(rfc3339(SystemTime::now() - Duration::from_secs(7200)));
    s.kube.seed(outside);
    s.kube.seed(argo("not-opted-in", "apps", None, false));
    let mut cfg = config();
    cfg.policy = Policy::from_flags(
        vec![
            ecr_token_webhook::policy::Pattern::new("argocd"),
            ecr_token_webhook::policy::Pattern::new("apps"),
        ],
        vec![ecr_token_webhook::policy::RegistryPattern::any()],
        vec![],
    )
    .into();

    // The webhook is unreachable: the touches do not take and the secrets stay as they were.
    s.kube.set_webhook(Some("https://127.0.0.1:9".into()));
    let mut r = s.refresher(cfg);
    let stats = r.pass().await.unwrap();
    assert_eq!((stats.due, stats.failed), (3, 3), "{stats:?}");
    let want = BTreeMap::from([
        (State::Fresh, 1),
        (State::Due, 1),
        (State::Expired, 1),
        (State::NoToken, 1),
        (State::Error, 1),
        (State::OutsidePolicy, 1),
    ]);
    assert_eq!(stats.states, want);
    let earliest = stats.earliest_expiry.expect("an earliest expiry");
    assert_eq!(rfc3339(earliest), rfc3339(expired_at));
    let m = s.metrics.render(&[]);
    for state in [
        "fresh",
        "due",
        "expired",
        "no-token",
        "error",
        "outside-policy",
    ] {
        let want = format!("ecr_token_webhook_secrets{{state=\"{state}\"}} 1\n");
        assert!(m.contains(&want), "missing {want}\n{m}");
    }
    let unix = earliest
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        m.contains(&format!(
            "ecr_token_webhook_secrets_earliest_expiry_timestamp_seconds {unix}.0\n"
        )),
        "{m}"
    );

    // The webhook is back: after their back-offs (each its own) the three get tokens and count
    // as fresh; the error stays until something writes the secret again.
    s.kube.set_webhook(Some(s.h.base.clone()));
    let want = BTreeMap::from([
        (State::Fresh, 4),
        (State::Error, 1),
        (State::OutsidePolicy, 1),
    ]);
    until("the retries take", Duration::from_secs(5), async || {
        r.pass().await.unwrap().states == want
    })
    .await;
    let m = s.metrics.render(&[]);
    assert!(
        m.contains("ecr_token_webhook_secrets{state=\"expired\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("ecr_token_webhook_secrets{state=\"fresh\"} 4\n"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_that_did_not_take_is_reported_and_retried() {
    let s = setup().await;
    s.kube.seed(argo("repo", "argocd", None, true));
    // The webhook is unreachable: the API server lets the touch through unmutated.
    s.kube.set_webhook(Some("https://127.0.0.1:9".into()));
    let mut r = s.refresher(config());
    let stats = r.pass().await.unwrap();
    assert_eq!((stats.due, stats.took, stats.failed), (1, 0, 1));
    assert!(s.expires("argocd", "repo").is_none());
    let events = s.kube.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "TokenNotRefreshed");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["involvedObject"]["name"], "repo");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("the webhook was not called")
    );

    // Within the back-off the secret is skipped.
    let stats = r.pass().await.unwrap();
    assert_eq!((stats.skipped_backoff, stats.touched), (1, 0));

    // The webhook is back: the retry after the back-off succeeds.
    s.kube.set_webhook(Some(s.h.base.clone()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stats = r.pass().await.unwrap();
    assert_eq!((stats.touched, stats.took), (1, 1), "{stats:?}");
    assert!(s.expires("argocd", "repo").unwrap() > SystemTime::now() + MARGIN);
    let m = s.metrics.render(&[]);
    assert!(
        m.contains("ecr_token_webhook_refresh_touches_total{outcome=\"did_not_take\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_reported_at_the_1st_2nd_and_4th() {
    let s = setup().await;
    s.kube.seed(argo("repo", "argocd", None, true));
    s.kube.set_webhook(Some("https://127.0.0.1:9".into()));
    let mut r = s.refresher(config());
    let mut events_after = Vec::new();
    // Bounded: retry_max is 400ms (±20 %), so each retry is due within half a second.
    for _ in 0..4 {
        until("a retry that fails", Duration::from_secs(5), async || {
            r.pass().await.unwrap().failed == 1
        })
        .await;
        events_after.push(s.kube.events().len());
    }
    assert_eq!(events_after, [1, 2, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_refuses_is_named_in_the_event() {
    let s = setup().await;
    s.kube.seed(argo("repo", "argocd", None, true));
    s.h.ecr.set_fault(Fault::ServerError);
    let stats = s.refresher(config()).pass().await.unwrap();
    assert_eq!(stats.failed, 1);
    let msg = s.kube.events()[0]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("the webhook could not write a token") && msg.contains("ServerException"),
        "{msg}"
    );
}

/// A policy rule that refuses the secret's registry: the touch does not take, and the Event
/// quotes the refusal, naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_refusal_is_named_in_the_event() {
    let policy = Policy::from_yaml(
        "rules:\n  - name: argocd-eu\n    namespaces: [argocd]\n    registries: ['*:eu-*']\n",
        "policy.yaml",
    )
    .unwrap();
    let h = Harness::start(Options {
        policy: policy.clone(),
        ..Options::default()
    })
    .await;
    let kube = FakeKube::start(Some(h.base.clone()), https_client(&h.ca_pem)).await;
    let s = Setup {
        h,
        kube,
        metrics: Arc::new(Metrics::default()),
    };
    s.kube.seed(argo("repo", "argocd", None, true));
    // A namespace no rule covers is not touched at all.
    s.kube.seed(argo("elsewhere", "apps", None, true));
    let mut cfg = config();
    cfg.policy = policy.into();
    let stats = s.refresher(cfg).pass().await.unwrap();
    assert_eq!((stats.seen, stats.failed), (1, 1));
    let events = s.kube.events();
    assert_eq!(events.len(), 1);
    let msg = events[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "the webhook could not write a token: refused by policy rule argocd-eu (rules[0]): \
             registry 123456789012.dkr.ecr.us-east-1.amazonaws.com is not in its registries (*:eu-*)"
        ),
        "{msg}"
    );
    assert_eq!(s.h.ecr.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_gone_are_told_apart() {
    let s = setup().await;
    s.kube.seed(argo("forbidden", "apps", None, true));
    s.kube.seed(argo("deleted", "apps", None, true));
    s.kube.set_patch_fault("apps", "forbidden", 403);
    s.kube.set_patch_fault("apps", "deleted", 404);
    let stats = s.refresher(config()).pass().await.unwrap();
    assert_eq!(
        (stats.touched, stats.failed),
        (2, 1),
        "404 is not an error: {stats:?}"
    );
    let m = s.metrics.render(&[]);
    assert!(
        m.contains("ecr_token_webhook_refresh_touches_total{outcome=\"forbidden\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ecr_token_webhook_refresh_touches_total{outcome=\"gone\"} 1"),
        "{m}"
    );
    assert!(s.kube.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_outside_the_policy_are_not_touched() {
    let s = setup().await;
    s.kube.seed(argo("a", "argocd", None, true));
    s.kube.seed(argo("b", "kube-system", None, true));
    let mut cfg = config();
    cfg.policy = Policy::from_flags(
        vec![ecr_token_webhook::policy::Pattern::new("argocd")],
        vec![ecr_token_webhook::policy::RegistryPattern::any()],
        vec![],
    )
    .into();
    let stats = s.refresher(cfg).pass().await.unwrap();
    assert_eq!((stats.seen, stats.took), (1, 1));
    assert!(s.expires("kube-system", "b").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_secrets_are_paged_and_touches_are_paced() {
    let s = setup().await;
    for i in 0..5000 {
        // 100 need a token; the rest are fresh.
        let expires = if i % 50 == 0 {
            None
        } else {
            Some(Duration::from_secs(11 * 3600))
        };
        s.kube.seed(argo(
            &format!("s{i:05}"),
            &format!("ns{}", i % 7),
            expires,
            true,
        ));
    }
    let mut cfg = config();
    cfg.touch_qps = 200.0;
    let stats = s.refresher(cfg).pass().await.unwrap();
    assert_eq!(
        (stats.seen, stats.due, stats.took),
        (5000, 100, 100),
        "{stats:?}"
    );
    assert_eq!(stats.pages, 10);
    assert_eq!(s.kube.lists(), 10, "500 per page");
    // 100 touches at 200/s with ±50 % jitter cannot take less than 99 × 2.5 ms.
    let patches = s.kube.patches();
    assert_eq!(patches.len(), 100);
    let span = patches.last().unwrap().2 - patches.first().unwrap().2;
    assert!(
        span >= Duration::from_millis(247),
        "touches were not paced: {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_touches_only_while_leading() {
    let s = setup().await;
    s.kube.seed(argo("repo", "argocd", None, true));
    let (lead_tx, lead_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(s.refresher(config()).run(lead_rx, stop_rx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.kube.patches().is_empty(), "a follower does not touch");
    let m = s.metrics.render(&[]);
    assert!(!m.contains("ecr_token_webhook_secrets{"), "{m}");
    lead_tx.send(true).unwrap();
    until("leader touched", Duration::from_secs(5), async || {
        s.expires("argocd", "repo").is_some()
    })
    .await;
    until(
        "the leader reports states",
        Duration::from_secs(5),
        async || {
            s.metrics
                .render(&[])
                .contains("ecr_token_webhook_secrets{state=\"fresh\"} 1")
        },
    )
    .await;
    // Leadership lost: the states go (the new leader reports them), the last pass stays.
    lead_tx.send(false).unwrap();
    until(
        "the states are dropped",
        Duration::from_secs(5),
        async || !s.metrics.render(&[]).contains("ecr_token_webhook_secrets{"),
    )
    .await;
    assert!(
        s.metrics
            .render(&[])
            .contains("ecr_token_webhook_refresh_last_pass_timestamp_seconds")
    );
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "ecr-token-webhook".into(),
        namespace: "ecr-token-webhook".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

struct Candidate {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn candidate(kube: &FakeKube, identity: &str) -> Candidate {
    let (tx, leading) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let elector = Elector::new(kube.client(), lease(identity));
    let task = tokio::spawn(elector.run(tx, stopped, Arc::new(Metrics::default())));
    Candidate {
        leading,
        stop,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_hand_over_on_stop_and_take_over_after_a_crash() {
    let s = setup().await;
    let a = candidate(&s.kube, "a");
    until("a leads", Duration::from_secs(5), async || {
        *a.leading.borrow()
    })
    .await;
    let b = candidate(&s.kube, "b");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        *a.leading.borrow() && !*b.leading.borrow(),
        "exactly one leader"
    );
    assert_eq!(
        s.kube
            .lease("ecr-token-webhook", "ecr-token-webhook")
            .unwrap()["spec"]["holderIdentity"],
        "a"
    );

    // A stops cleanly: it releases the lease and b takes over well before the lease would expire.
    a.stop.send(true).unwrap();
    a.task.await.unwrap();
    let took = until(
        "b takes over after a release",
        Duration::from_secs(5),
        async || *b.leading.borrow(),
    )
    .await;
    assert!(
        took < Duration::from_millis(1500),
        "hand-over took {took:?}"
    );

    // B crashes (no release): c takes over only once the lease has expired.
    let c = candidate(&s.kube, "c");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*c.leading.borrow());
    b.task.abort();
    let crashed = Instant::now();
    until(
        "c takes over after b crashed",
        Duration::from_secs(10),
        async || *c.leading.borrow(),
    )
    .await;
    assert!(
        crashed.elapsed() >= Duration::from_millis(1500),
        "not before the lease expired"
    );
    let lease = s
        .kube
        .lease("ecr-token-webhook", "ecr-token-webhook")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "c");
    assert!(lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 2);
    c.stop.send(true).unwrap();
    drop(b.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stops_touching_when_leadership_is_lost() {
    let s = setup().await;
    for i in 0..200 {
        s.kube.seed(argo(&format!("r{i:03}"), "argocd", None, true));
    }
    let mut cfg = config();
    cfg.touch_qps = 100.0; // about two seconds for the whole pass
    let (lead_tx, lead_rx) = watch::channel(true);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(s.refresher(cfg).run(lead_rx, stop_rx));
    until("touching started", Duration::from_secs(5), async || {
        !s.kube.patches().is_empty()
    })
    .await;
    lead_tx.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_loss = s.kube.patches().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = s.kube.patches().len();
    assert!(
        later <= at_loss + 1,
        "kept touching after losing the lease: {at_loss} -> {later}"
    );
    assert!(later < 200, "the pass was cut short ({later} touches)");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
}
