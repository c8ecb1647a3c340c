//! The admission path without a network: each captured AdmissionReview through
//! `Webhook::review` (parse, policy, plan, token from a warm cache, inject) and `to_json` (the
//! answer's bytes), per secret kind. A regression in the hot path shows here first; the ratio
//! against the transport floor is scripts/bench.sh's job.
//!
//!   cargo bench --bench admission

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ecr_token_webhook::admission::to_json;

mod common;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("fixture"))
        })
        .collect();
    out.sort();
    out
}

fn admission(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let webhook = common::webhook();
    let budget = common::BUDGET;
    let mut group = c.benchmark_group("admission");
    for (name, body) in fixtures() {
        // Warm the cache for this fixture's regions, and check it answers.
        let warm = rt.block_on(webhook.review(&body, budget)).expect("review");
        to_json(&warm).expect("serializes");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(&name, |b| {
            b.iter(|| {
                let review = rt
                    .block_on(webhook.review(std::hint::black_box(&body), budget))
                    .expect("review");
                to_json(&review).expect("serializes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
