//! Caller authentication over real TLS with a real client: with `--tls-client-ca-file`, only
//! clients whose certificate chains to the client CA (and carries a required name) get an
//! answer; no certificate, a certificate from another CA, a self-signed, an expired one or one
//! without the name are refused at the handshake and counted by reason. The CA file reloads;
//! the admin port stays plain HTTP.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ecr_token_webhook::commands::reloads;
use ecr_token_webhook::tls;
use ecr_token_webhook::tls::client_auth::ClientAuth;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use reqwest::StatusCode;

const NAME: &str = "kube-apiserver.ecr-token-webhook";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

fn client_params(name: &str, expired: bool) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(2);
        p.not_after = now - time::Duration::days(1);
    }
    p
}

/// A certificate and key, PEM, as one identity for reqwest.
fn identity(ca: &Ca, name: &str, expired: bool) -> String {
    let key = KeyPair::generate().unwrap();
    let cert = client_params(name, expired)
        .signed_by(&key, &ca.issuer)
        .unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

fn self_signed(name: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let cert = client_params(name, false).self_signed(&key).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// A fresh client (no pooled connection: every request is a new handshake) trusting the
/// webhook's serving CA, presenting `identity` when given.
fn client(server_ca: &str, identity: Option<&str>) -> reqwest::Client {
    install_crypto();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Whether a review sent by `client` comes back with a token.
async fn gets_a_token(client: &reqwest::Client, base: &str) -> bool {
    let body = fixture("basic-auth-create.json").to_string();
    let sent = client
        .post(format!("{base}/mutate?timeout=5s"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(resp) = sent else { return false };
    if resp.status() != StatusCode::OK {
        return false;
    }
    let text = resp.text().await.unwrap_or_default();
    text.contains("\"patch\"")
}

fn refusals(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("ecr_token_webhook_caller_refusals_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
}

async fn start(
    client_ca_pem: &str,
    names: &[String],
) -> (Harness, Arc<ClientAuth>, tempfile::TempDir) {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, client_ca_pem).unwrap();
    let auth = ClientAuth::load(&ca_file, names).unwrap();
    let serving = tls::generate(&["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    let config = tls::server_config_with(
        serving.cert_pem.as_bytes(),
        serving.key_pem.as_bytes(),
        "test",
        Some(auth.clone()),
    )
    .unwrap();
    let h = Harness::start_with_tls(Options::default(), config, &serving.ca_cert_pem).await;
    (h, auth, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_ca_get_tokens() {
    let trusted = ca("API server client CA");
    let other = ca("some other CA");
    let (h, _auth, _dir) = start(&trusted.pem, &[]).await;
    let good = client(&h.ca_pem, Some(&identity(&trusted, NAME, false)));
    assert!(
        gets_a_token(&good, &h.base).await,
        "the CA's client is served"
    );
    // Over and over on one connection, too (the API server keeps its connections).
    for _ in 0..3 {
        assert!(gets_a_token(&good, &h.base).await);
    }
    let refused = [
        ("no certificate", client(&h.ca_pem, None), "no_certificate"),
        (
            "another CA",
            client(&h.ca_pem, Some(&identity(&other, NAME, false))),
            "untrusted",
        ),
        (
            "self-signed",
            client(&h.ca_pem, Some(&self_signed(NAME))),
            "untrusted",
        ),
        (
            "expired",
            client(&h.ca_pem, Some(&identity(&trusted, NAME, true))),
            "expired",
        ),
    ];
    for (what, c, _) in &refused {
        assert!(!gets_a_token(c, &h.base).await, "{what}: must get no token");
    }
    let calls = h.ecr.calls();
    let m = until_metrics(&h, |m| {
        refusals(m, "no_certificate") == 1
            && refusals(m, "untrusted") == 2
            && refusals(m, "expired") == 1
    })
    .await;
    assert_eq!(refusals(&m, "wrong_name"), 0, "{m}");
    // Refused callers never reached the handler: one admission, one ECR call, for `good`.
    assert!(
        m.contains("ecr_token_webhook_admission_requests_total{operation=\"CREATE\",kind=\"basic-auth\",outcome=\"patched\"} 4"),
        "{m}"
    );
    assert_eq!(calls, 1);
}

/// Waits (bounded) until the metrics satisfy `ok`; returns them.
async fn until_metrics(h: &Harness, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = h.metrics().await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never matched:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_names_are_checked_after_the_chain() {
    let trusted = ca("API server client CA");
    let names = vec!["other-name".to_string(), NAME.to_string()];
    let (h, _auth, _dir) = start(&trusted.pem, &names).await;
    let good = client(&h.ca_pem, Some(&identity(&trusted, NAME, false)));
    assert!(gets_a_token(&good, &h.base).await);
    let unnamed = client(&h.ca_pem, Some(&identity(&trusted, "some-pod", false)));
    assert!(!gets_a_token(&unnamed, &h.base).await);
    // A wrong CA is refused as untrusted before its (right) name is looked at.
    let other = ca("some other CA");
    let forged = client(&h.ca_pem, Some(&identity(&other, NAME, false)));
    assert!(!gets_a_token(&forged, &h.base).await);
    until_metrics(&h, |m| {
        refusals(m, "wrong_name") == 1 && refusals(m, "untrusted") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_ca_is_picked_up_and_a_bad_one_refused() {
    let first = ca("first client CA");
    let second = ca("second client CA");
    let (h, auth, dir) = start(&first.pem, &[]).await;
    reloads::client_ca(auth, Duration::from_millis(100), h.metrics.clone());
    let (old, new) = (
        identity(&first, NAME, false),
        identity(&second, NAME, false),
    );
    assert!(gets_a_token(&client(&h.ca_pem, Some(&old)), &h.base).await);
    assert!(!gets_a_token(&client(&h.ca_pem, Some(&new)), &h.base).await);

    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &second.pem).unwrap();
    until(
        "the new client CA is in service",
        Duration::from_secs(10),
        async || gets_a_token(&client(&h.ca_pem, Some(&new)), &h.base).await,
    )
    .await;
    assert!(!gets_a_token(&client(&h.ca_pem, Some(&old)), &h.base).await);

    // A broken file is refused; the CA in service stays.
    std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let m = until_metrics(&h, |m| {
        m.contains("ecr_token_webhook_tls_reloads_total{outcome=\"refused\"} 1")
    })
    .await;
    assert!(
        m.contains("ecr_token_webhook_tls_reloads_total{outcome=\"reloaded\"} 1"),
        "{m}"
    );
    assert!(gets_a_token(&client(&h.ca_pem, Some(&new)), &h.base).await);
}

/// A rotated serving pair keeps asking for client certificates: the reloader builds every new
/// config with the verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_serving_pair_still_requires_a_client_certificate() {
    install_crypto();
    let trusted = ca("API server client CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &trusted.pem).unwrap();
    let auth = ClientAuth::load(&ca_file, &[]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = tls::generate(&["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let (serving, reloader) = tls::PairReloader::load(&cert, &key, Some(auth)).unwrap();
    let h = Harness::start_with_tls(Options::default(), serving.config, &first.ca_cert_pem).await;
    reloads::tls_pair(
        h.running.tls.clone(),
        reloader,
        Duration::from_millis(100),
        h.metrics.clone(),
    );
    // A new serving pair under a new CA: a client that trusts only the new CA gets through
    // once it is in service, and only with its certificate.
    let second = tls::generate(&["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    let with_cert = identity(&trusted, NAME, false);
    until(
        "the new serving pair is in service",
        Duration::from_secs(10),
        async || gets_a_token(&client(&second.ca_cert_pem, Some(&with_cert)), &h.base).await,
    )
    .await;
    assert!(!gets_a_token(&client(&second.ca_cert_pem, None), &h.base).await);
    until_metrics(&h, |m| refusals(m, "no_certificate") == 1).await;
}

/// Self-managed TLS: a renewed pair put in service by the maintainer keeps asking for client
/// certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_managed_renewal_still_requires_a_client_certificate() {
    use ecr_token_webhook::tls::self_managed::{Check, SelfManaged, SelfManagedConfig};
    use serde_json::json;
    install_crypto();
    let ns = "ecr-token-webhook";
    let kube = common::fake_kube::FakeKube::start(None, reqwest::Client::new()).await;
    kube.seed_webhook_config(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": "ecr-token-webhook"},
        "webhooks": [{"name": "inject.ecr-token-webhook.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "clientConfig": {"service": {"name": "ecr-token-webhook",
            "namespace": ns, "path": "/mutate"}}}]}));
    kube.seed(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "tls", "namespace": ns}}),
    );
    // A two-day certificate, renewed with 30 days left: the first check renews it.
    let cfg = || SelfManagedConfig {
        secret_name: "tls".into(),
        namespace: ns.into(),
        names: vec!["127.0.0.1".into()],
        cert_validity: Duration::from_secs(2 * 86400),
        check_interval: Duration::from_millis(200),
        ..SelfManagedConfig::default()
    };
    let Ok(Check::Current(m)) = SelfManaged::new(kube.client(), cfg()).ensure().await else {
        panic!("no self-managed pair")
    };
    let trusted = ca("API server client CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &trusted.pem).unwrap();
    let auth = ClientAuth::load(&ca_file, &[]).unwrap();
    let config = m.server_config_with(Some(auth.clone())).unwrap();
    let h = Harness::start_with_tls(Options::default(), config, &m.ca_cert_pem).await;
    let task = SelfManaged::new(kube.client(), cfg())
        .with_client_auth(Some(auth))
        .spawn_maintainer(h.running.tls.clone(), m.clone(), h.metrics.clone());
    until_metrics(&h, |m| {
        m.contains("ecr_token_webhook_tls_reloads_total{outcome=\"reloaded\"} 1")
    })
    .await;
    task.abort();
    let with_cert = identity(&trusted, NAME, false);
    assert!(gets_a_token(&client(&m.ca_cert_pem, Some(&with_cert)), &h.base).await);
    assert!(!gets_a_token(&client(&m.ca_cert_pem, None), &h.base).await);
    until_metrics(&h, |m| refusals(m, "no_certificate") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_ca_any_client_is_served_as_before() {
    let h = Harness::start(Options::default()).await;
    let trusted = ca("unused CA");
    assert!(gets_a_token(&client(&h.ca_pem, None), &h.base).await);
    assert!(
        gets_a_token(
            &client(&h.ca_pem, Some(&identity(&trusted, NAME, false))),
            &h.base
        )
        .await
    );
    let m = h.metrics().await;
    for reason in ["no_certificate", "untrusted", "expired", "wrong_name"] {
        assert_eq!(refusals(&m, reason), 0, "{m}");
    }
}
