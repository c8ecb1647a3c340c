//! What the admission benchmarks share (benches/admission.rs, benches/floor/review_loop.rs):
//! the webhook with the default policy, failing open, in front of a token source that always
//! answers, so every review after the first is a cache hit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecr_token_webhook::admission::{FailureMode, Webhook};
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::token::{
    CacheConfig, Token, TokenCache, TokenFuture, TokenKey, TokenSource,
};

/// The time a review may take, as for the API server's default 10 s timeout.
pub const BUDGET: Duration = Duration::from_secs(9);

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

/// The webhook the benchmarks measure.
pub fn webhook() -> Webhook {
    let metrics = Arc::new(Metrics::default());
    let tokens = Arc::new(TokenCache::new(
        Arc::new(Fixed),
        CacheConfig::default(),
        metrics.clone(),
    ));
    Webhook::new(tokens, Policy::default(), FailureMode::Open, metrics)
}
