//! Benchmark (not a test): one refresher pass over 10,000 opted-in secrets in the test suite's
//! in-process API server, with the real webhook over TLS behind it. Prints wall time, API
//! requests and the process's peak RSS (API server, webhook and refresher together).
//!
//!     cargo bench --bench refresh_pass

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::refresher::{Refresher, RefresherConfig};
use ecr_token_webhook::time::rfc3339;
use serde_json::json;

const SECRETS: usize = 10_000;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn secret(i: usize, due: bool) -> serde_json::Value {
    let mut annotations = json!({});
    if !due {
        annotations["ecr-token-webhook/expires-at"] =
            json!(rfc3339(SystemTime::now() + Duration::from_secs(11 * 3600)));
    }
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": format!("repo-{i:05}"), "namespace": format!("team-{}", i % 50),
            "labels": {"ecr-token-webhook/inject": "true", "argocd.argoproj.io/secret-type": "repository"},
            "annotations": annotations},
        "data": {"url": "MTIzNDU2Nzg5MDEyLmRrci5lY3IudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20="},
    })
}

async fn run(label: &str, due_every: usize, qps: f64) {
    let h = Harness::start(Options::default()).await;
    let kube = FakeKube::start(Some(h.base.clone()), https_client(&h.ca_pem)).await;
    for i in 0..SECRETS {
        kube.seed(secret(i, due_every > 0 && i % due_every == 0));
    }
    let cfg = RefresherConfig {
        interval: Duration::from_secs(60),
        margin: Duration::from_secs(6 * 3600),
        touch_qps: qps,
        page_size: 500,
        spread_window: Duration::ZERO,
        retry_base: Duration::from_secs(10),
        retry_max: Duration::from_secs(600),
        policy: Policy::default().into(),
        namespaces: Vec::new(),
    };
    let mut refresher = Refresher::new(kube.client(), cfg, Arc::new(Metrics::default()));
    let before = kube.requests();
    let started = Instant::now();
    let stats = refresher.pass().await.expect("pass");
    let took = started.elapsed();
    println!(
        "{label}: secrets={} due={} touched={} took={} pages={} wall={:.3}s api_requests={} peak_rss={} kB",
        stats.seen,
        stats.due,
        stats.touched,
        stats.took,
        stats.pages,
        took.as_secs_f64(),
        kube.requests() - before,
        peak_rss_kb()
    );
}

fn main() {
    install_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        run("none due (list only)", 0, 5.0).await;
        run("1,000 due at --touch-qps 200", 10, 200.0).await;
    });
}
