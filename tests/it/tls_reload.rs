//! Certificate rotation the way cert-manager and the kubelet do it: a new pair is published by
//! swapping the `..data` symlink of the mounted Secret. New handshakes present the new pair,
//! requests in flight keep working, and an invalid pair is refused while the old one stays.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ecr_token_webhook::commands::reloads;
use ecr_token_webhook::tls::{self, Generated, PairReloader};

fn pair() -> Generated {
    tls::generate(
        &["127.0.0.1".into(), "localhost".into()],
        Duration::from_secs(3600),
    )
    .expect("certs")
}

/// Publishes a cert and key as the kubelet updates a Secret volume: a new timestamped
/// directory, then an atomic rename of the `..data` symlink onto it.
fn publish(dir: &Path, version: u32, cert: &str, key: &str) {
    use std::os::unix::fs::symlink;
    let v = format!("..v{version}");
    std::fs::create_dir(dir.join(&v)).unwrap();
    std::fs::write(dir.join(&v).join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join(&v).join("tls.key"), key).unwrap();
    symlink(&v, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

async fn fresh_handshake_ok(base: &str, ca: &str) -> bool {
    // A new client has no pooled connection: this is a new TLS handshake.
    https_client(ca)
        .get(format!("{base}/mutate"))
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_are_served_without_dropping_requests() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (pair(), pair(), pair());
    publish(dir.path(), 1, &a.cert_pem, &a.key_pem);
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (serving, reloader) = PairReloader::load(&cert, &key, None).unwrap();
    let h = Harness::start_with_tls(Options::default(), serving.config, &a.ca_cert_pem).await;
    reloads::tls_pair(
        h.running.tls.clone(),
        reloader,
        Duration::from_millis(100),
        h.metrics.clone(),
    );

    // A client that trusts both CAs keeps sending over keep-alive connections throughout.
    let both = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(a.ca_cert_pem.as_bytes()).unwrap(),
            reqwest::Certificate::from_pem(b.ca_cert_pem.as_bytes()).unwrap(),
        ])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let body = fixture("basic-auth-create.json").to_string();
    let load = {
        let (stop, sent, failed, base) =
            (stop.clone(), sent.clone(), failed.clone(), h.base.clone());
        tokio::spawn(async move {
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (status, _, _) = post_review(&both, &base, &body, "5s").await;
                sent.fetch_add(1, Ordering::SeqCst);
                if status.as_u16() != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    assert!(fresh_handshake_ok(&h.base, &a.ca_cert_pem).await);
    assert!(!fresh_handshake_ok(&h.base, &b.ca_cert_pem).await);

    publish(dir.path(), 2, &b.cert_pem, &b.key_pem);
    until(
        "new handshakes present the new certificate",
        Duration::from_secs(10),
        async || fresh_handshake_ok(&h.base, &b.ca_cert_pem).await,
    )
    .await;
    assert!(
        !fresh_handshake_ok(&h.base, &a.ca_cert_pem).await,
        "old pair retired"
    );

    // Half-written or mismatched pairs are refused; the pair in service stays.
    publish(dir.path(), 3, &c.cert_pem, &b.key_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(
        dir.path(),
        4,
        "-----BEGIN CERTIFICATE-----\nMIIB",
        &c.key_pem,
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        fresh_handshake_ok(&h.base, &b.ca_cert_pem).await,
        "old pair still served"
    );
    assert!(!fresh_handshake_ok(&h.base, &c.ca_cert_pem).await);
    let m = h.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_tls_reloads_total{outcome=\"reloaded\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ecr_token_webhook_tls_reloads_total{outcome=\"refused\"} 2"),
        "{m}"
    );

    // The completed pair is picked up.
    publish(dir.path(), 5, &c.cert_pem, &c.key_pem);
    until(
        "the repaired pair is served",
        Duration::from_secs(10),
        async || fresh_handshake_ok(&h.base, &c.ca_cert_pem).await,
    )
    .await;

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent > 10, "the client kept sending ({sent} requests)");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed during rotation"
    );
}
