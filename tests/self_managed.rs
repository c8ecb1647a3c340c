//! Self-managed TLS against the test suite's Kubernetes API server: the CA and serving pair are
//! created once and shared through a Secret, the caBundle is injected into the webhook
//! configuration, and the serving certificate is renewed under the same CA before it expires.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::selfmanaged::{NOT_AFTER_ANNOTATION, SelfManaged, SelfManagedConfig};
use ecr_token_webhook::time::rfc3339;
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
    let m = first.ensure().await.expect("ensure");
    let secret = kube
        .secret(NS, "ecr-token-webhook-tls")
        .expect("secret stored");
    assert_eq!(secret["type"], "kubernetes.io/tls");
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
    let second = SelfManaged::new(kube.client(), cfg())
        .ensure()
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_the_leaf_under_the_same_ca_and_serves_it() {
    let kube = kube().await;
    let sm = SelfManaged::new(kube.client(), cfg());
    let m = sm.ensure().await.unwrap();
    let h = Harness::start_with_tls(
        Options::default(),
        m.server_config().unwrap(),
        &m.ca_cert_pem,
    )
    .await;

    // Make the stored certificate look close to expiry.
    let mut secret = kube.secret(NS, "ecr-token-webhook-tls").unwrap();
    secret["metadata"]["annotations"][NOT_AFTER_ANNOTATION] =
        json!(rfc3339(SystemTime::now() + Duration::from_secs(86400)));
    kube.seed(secret);

    let metrics = Arc::new(Metrics::default());
    let task = SelfManaged::new(kube.client(), cfg()).spawn_maintainer(
        h.running.tls.clone(),
        m.clone(),
        metrics.clone(),
    );
    let old_cert = json!(base64::engine::general_purpose::STANDARD.encode(&m.cert_pem));
    until("renewed", Duration::from_secs(10), async || {
        kube.secret(NS, "ecr-token-webhook-tls").unwrap()["data"]["tls.crt"] != old_cert
            && metrics
                .render(&[])
                .contains("tls_reloads_total{outcome=\"reloaded\"} 1")
    })
    .await;
    assert_eq!(
        kube.secret(NS, "ecr-token-webhook-tls").unwrap()["data"]["ca.crt"],
        json!(base64::engine::general_purpose::STANDARD.encode(&m.ca_cert_pem)),
        "same CA"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_at_start_end_with_one_pair() {
    let kube = kube().await;
    let (a, b) = (
        SelfManaged::new(kube.client(), cfg()),
        SelfManaged::new(kube.client(), cfg()),
    );
    let (ma, mb) = tokio::join!(a.ensure(), b.ensure());
    let (ma, mb) = (ma.unwrap(), mb.unwrap());
    let stored = kube.secret(NS, "ecr-token-webhook-tls").unwrap();
    let stored_ca = stored["data"]["ca.crt"].clone();
    let enc = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
    // Whoever lost the create race adopted the winner's pair.
    assert_eq!(enc(&ma.ca_cert_pem), stored_ca);
    assert_eq!(enc(&mb.ca_cert_pem), stored_ca);
}
