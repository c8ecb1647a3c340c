//! The admission path in a loop, for instruction counts: callgrind counts instructions, which
//! do not depend on how busy the machine is, as time does.
//!
//!   review-loop N [FIXTURE]         N reviews of FIXTURE (default: the captured touch) through
//!                                   `Webhook::review` and `to_json`, warm cache, as
//!                                   benches/admission.rs sets it up
//!   review-loop N [FIXTURE] floor   the floor's own work instead: a uid-only serde_json parse
//!
//! Instructions per review: the difference between two counts, which cancels start-up:
//!   valgrind --tool=callgrind target/release/examples/review-loop 10000   (then 20000)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecr_token_webhook::admission::{FailureMode, Webhook, to_json};
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::token::{
    CacheConfig, Token, TokenCache, TokenFuture, TokenKey, TokenSource,
};

/// Always the same 12-hour token with a ~2 KB password, like ECR's.
struct Fixed;

impl TokenSource for Fixed {
    fn fetch<'a>(&'a self, _key: &'a TokenKey) -> TokenFuture<'a> {
        Box::pin(async {
            Ok(Token {
                username: "AWS".into(),
                password: "P".repeat(2000),
                expires_at: SystemTime::now() + Duration::from_secs(12 * 3600),
            })
        })
    }
}

#[derive(serde::Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    uid: &'a str,
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .ok_or("usage: review-loop N [FIXTURE] [floor]")?;
    let fixture = args
        .get(2)
        .map_or("tests/fixtures/argocd-repository-update-touch.json", |s| s);
    let body = std::fs::read(fixture).map_err(|e| format!("{fixture}: {e}"))?;
    let mut bytes = 0;
    if args.get(3).is_some_and(|a| a == "floor") {
        for _ in 0..n {
            let r: Review =
                serde_json::from_slice(std::hint::black_box(&body)).map_err(|e| e.to_string())?;
            bytes += serde_json::to_string(r.request.uid)
                .map_err(|e| e.to_string())?
                .len();
        }
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let metrics = Arc::new(Metrics::default());
        let tokens = Arc::new(TokenCache::new(
            Arc::new(Fixed),
            CacheConfig::default(),
            metrics.clone(),
        ));
        let webhook = Webhook::new(tokens, Policy::default(), FailureMode::Open, metrics);
        let budget = Duration::from_secs(9);
        for _ in 0..n {
            let answer = rt
                .block_on(webhook.review(std::hint::black_box(&body), budget))
                .map_err(|e| e.to_string())?;
            bytes += to_json(&answer).map_err(|e| e.to_string())?.len();
        }
    }
    println!("{n} reviews, {bytes} bytes answered");
    Ok(())
}
