//! Self-managed TLS against the test suite's Kubernetes API server: the CA and serving pair are
//! written once into the Secret the install ships (empty) and shared through it, the caBundle is
//! injected into the webhook configuration, and the serving certificate is renewed under the
//! same CA before it expires (judged from the certificate itself). A renewal that cannot be
//! stored leaves the stored pair in service while it is valid.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::time::rfc3339;
use ecr_token_webhook::tls::self_managed::{
    Check, Material, NOT_AFTER_ANNOTATION, SelfManaged, SelfManagedConfig, SelfManagedError,
};
use serde_json::{Value, json};

const NS: &str = "ecr-token-webhook";

fn cfg() -> SelfManagedConfig {
    SelfManagedConfig {
        secret_name: "ecr-token-webhook-tls".into(),
        namespace: NS.into(),
        webhook_config_name: "ecr-token-webhook".into(),
        names: vec![
            "ecr-token-webhook.ecr-token-webhook.svc".into(),
            "127.0.0.1".into(),
        ],
        ca_validity: Duration::from_secs(10 * 365 * 86400),
        cert_validity: Duration::from_secs(365 * 86400),
        renew_before: Duration::from_secs(30 * 86400),
        check_interval: Duration::from_millis(200),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
    }
}

const SECRET: &str = "ecr-token-webhook-tls";

/// The Secret as the install ships it: no pair yet.
fn shipped_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS}})
}

fn current(c: Result<Check, SelfManagedError>) -> Material {
    match c.expect("ensure") {
        Check::Current(m) => m,
        Check::Stale { error, .. } => panic!("stale: {error}"),
    }
}

fn webhook_config() -> Value {
    let hook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": "ecr-token-webhook", "namespace": NS, "path": "/mutate"}}})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "ecr-token-webhook"},
        "webhooks": [hook("inject.ecr-token-webhook.io"), hook("other.ecr-token-webhook.io")]})
}

async fn kube() -> FakeKube {
    install_crypto();
    let kube = FakeKube::start(None, reqwest::Client::new()).await;
    kube.seed_webhook_config(webhook_config());
    kube.seed(shipped_secret());
    kube
}

fn bundle_of(kube: &FakeKube) -> Vec<String> {
    kube.webhook_config("ecr-token-webhook").unwrap()["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_shares_and_injects_the_ca() {
    let kube = kube().await;
    let first = SelfManaged::new(kube.client(), cfg());
    let m = current(first.ensure().await);
    let secret = kube.secret(NS, SECRET).expect("secret stored");
    assert_eq!(secret["type"], "Opaque", "the shipped Secret, filled in");
    for k in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(secret["data"][k].is_string(), "{k}");
    }
    assert!(secret["metadata"]["annotations"][NOT_AFTER_ANNOTATION].is_string());

    assert_eq!(first.inject_ca_bundle(&m).await.unwrap(), 2);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&m.ca_cert_pem);
    assert_eq!(bundle_of(&kube), [b64.clone(), b64]);
    assert_eq!(
        first.inject_ca_bundle(&m).await.unwrap(),
        0,
        "nothing to do the second time"
    );

    // Another replica adopts the stored pair instead of making its own.
    let second = current(SelfManaged::new(kube.client(), cfg()).ensure().await);
    assert_eq!(second, m);

    // The pair serves TLS that a client trusting the caBundle accepts.
    let h = Harness::start_with_tls(
        Options::default(),
        m.server_config().unwrap(),
        &m.ca_cert_pem,
    )
    .await;
    let (status, _, _) = h
        .post(&fixture("basic-auth-create.json").to_string(), "5s")
        .await;
    assert_eq!(status.as_u16(), 200);
}

/// A short-lived stored certificate whose annotation claims a far-off expiry: the certificate
/// itself decides, so it is renewed, under the same CA, and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_the_leaf_under_the_same_ca_and_serves_it() {
    let kube = kube().await;
    let short = SelfManagedConfig {
        cert_validity: Duration::from_secs(2 * 86400),
        ..cfg()
    };
    let m = current(SelfManaged::new(kube.client(), short).ensure().await);
    let h = Harness::start_with_tls(
        Options::default(),
        m.server_config().unwrap(),
        &m.ca_cert_pem,
    )
    .await;
    let mut secret = kube.secret(NS, SECRET).unwrap();
    secret["metadata"]["annotations"][NOT_AFTER_ANNOTATION] = json!(rfc3339(
        SystemTime::now() + Duration::from_secs(300 * 86400)
    ));
    kube.seed(secret);

    let metrics = Arc::new(Metrics::default());
    let task = SelfManaged::new(kube.client(), cfg()).spawn_maintainer(
        h.running.tls.clone(),
        m.clone(),
        metrics.clone(),
    );
    let old_cert = json!(base64::engine::general_purpose::STANDARD.encode(&m.cert_pem));
    until("renewed", Duration::from_secs(10), async || {
        kube.secret(NS, SECRET).unwrap()["data"]["tls.crt"] != old_cert
            && metrics
                .render(&[])
                .contains("tls_reloads_total{outcome=\"reloaded\"} 1")
    })
    .await;
    assert_eq!(
        kube.secret(NS, SECRET).unwrap()["data"]["ca.crt"],
        json!(base64::engine::general_purpose::STANDARD.encode(&m.ca_cert_pem)),
        "same CA"
    );
    let m2 = current(SelfManaged::new(kube.client(), cfg()).ensure().await);
    assert!(
        m2.not_after > SystemTime::now() + Duration::from_secs(300 * 86400),
        "the renewed certificate is the long one"
    );
    assert!(
        metrics
            .render(&[])
            .contains("ecr_token_webhook_tls_certificate_expiry_timestamp_seconds"),
        "expiry gauge"
    );
    task.abort();
    // New handshakes verify against the unchanged caBundle.
    let client = https_client(&m.ca_cert_pem);
    let (status, _, _) = post_review(
        &client,
        &h.base,
        &fixture("basic-auth-create.json").to_string(),
        "5s",
    )
    .await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(bundle_of(&kube).len(), 2);
}

/// Renewal due but the update refused: the stored pair, still valid, stays in service, the
/// failure is counted and retried with back-off, and the renewal lands once writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_keeps_serving_the_stored_pair_and_retries() {
    let kube = kube().await;
    let short = SelfManagedConfig {
        cert_validity: Duration::from_secs(86400),
        ..cfg()
    };
    let m = current(SelfManaged::new(kube.client(), short).ensure().await);
    kube.set_replace_fault(NS, SECRET, Some(403));

    // At start: the stale pair is handed out with the reason, not an error.
    match SelfManaged::new(kube.client(), cfg()).ensure().await {
        Ok(Check::Stale { material, error }) => {
            assert_eq!(material, m);
            assert!(error.to_string().contains("forbidden"), "{error}");
        }
        other => panic!("want Stale, got {other:?}"),
    }

    let h = Harness::start_with_tls(
        Options::default(),
        m.server_config().unwrap(),
        &m.ca_cert_pem,
    )
    .await;
    let metrics = Arc::new(Metrics::default());
    let task = SelfManaged::new(kube.client(), cfg()).spawn_maintainer(
        h.running.tls.clone(),
        m.clone(),
        metrics.clone(),
    );
    until("failures counted", Duration::from_secs(10), async || {
        metrics
            .render(&[])
            .contains("tls_renewals_total{outcome=\"failed\"} 3")
    })
    .await;
    let (status, _, _) = h
        .post(&fixture("basic-auth-create.json").to_string(), "5s")
        .await;
    assert_eq!(status.as_u16(), 200, "still serving the stored pair");

    kube.set_replace_fault(NS, SECRET, None);
    let old_cert = json!(base64::engine::general_purpose::STANDARD.encode(&m.cert_pem));
    until(
        "renewed once writes work",
        Duration::from_secs(10),
        async || {
            kube.secret(NS, SECRET).unwrap()["data"]["tls.crt"] != old_cert
                && metrics
                    .render(&[])
                    .contains("tls_reloads_total{outcome=\"reloaded\"} 1")
        },
    )
    .await;
    task.abort();
}

/// Nothing valid to serve: the Secret is missing (the webhook may not create it), or it is
/// empty and the first write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_serve_is_an_error_that_says_what_to_do() {
    let kube = kube().await;
    let missing = SelfManagedConfig {
        secret_name: "absent".into(),
        ..cfg()
    };
    let e = SelfManaged::new(kube.client(), missing)
        .ensure()
        .await
        .expect_err("missing Secret");
    let text = e.to_string();
    assert!(
        text.contains("ecr-token-webhook/absent not found")
            && text.contains("the install ships it")
            && text.contains("kubectl -n ecr-token-webhook create secret generic absent"),
        "{text}"
    );

    kube.set_replace_fault(NS, SECRET, Some(403));
    let e = SelfManaged::new(kube.client(), cfg())
        .ensure()
        .await
        .expect_err("empty Secret, write refused");
    assert!(e.to_string().contains("forbidden"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_at_start_end_with_one_pair() {
    let kube = kube().await;
    let (a, b) = (
        SelfManaged::new(kube.client(), cfg()),
        SelfManaged::new(kube.client(), cfg()),
    );
    let (ma, mb) = tokio::join!(a.ensure(), b.ensure());
    let (ma, mb) = (current(ma), current(mb));
    let stored = kube.secret(NS, SECRET).unwrap();
    let stored_ca = stored["data"]["ca.crt"].clone();
    let enc = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
    // Whoever lost the race adopted the winner's pair.
    assert_eq!(enc(&ma.ca_cert_pem), stored_ca);
    assert_eq!(enc(&mb.ca_cert_pem), stored_ca);
}
