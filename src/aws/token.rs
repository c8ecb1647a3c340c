//! ECR tokens, the source trait, and the cache in front of it.
//!
//! The cache hands out a token only while it has more than the refresh margin plus a slack left,
//! so a token the webhook writes is never already due for refresh. Concurrent misses share one
//! source call (moka's `try_get_with`). When the source fails, the last token that is still valid
//! is served with a warning, and the source is left alone for a short back-off.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;

use crate::metrics::{CacheResult, EcrOutcome, Metrics, TokenLabels};
use crate::time::rfc3339;

/// What a token is for: the ECR region (tokens are regional) or ECR Public, and an optional
/// role to assume. Private and public tokens are distinct keys even in the same region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    pub region: String,
    pub role_arn: Option<String>,
    /// ECR Public (`region` is then us-east-1, where its API lives).
    pub public: bool,
}

impl TokenKey {
    /// A private registry's token for `region`.
    pub fn new(region: impl Into<String>, role_arn: Option<String>) -> Self {
        TokenKey {
            region: region.into(),
            role_arn,
            public: false,
        }
    }

    /// An ECR Public token.
    pub fn public(role_arn: Option<String>) -> Self {
        TokenKey {
            region: crate::registry::PUBLIC_REGION.to_string(),
            role_arn,
            public: true,
        }
    }

    /// The token `registry` needs under `role_arn`.
    pub fn for_registry(registry: &crate::registry::Registry, role_arn: Option<String>) -> Self {
        if registry.public {
            TokenKey::public(role_arn)
        } else {
            TokenKey::new(registry.region.clone(), role_arn)
        }
    }

    /// Where the token comes from, for messages and the `region` metric label: the region, or
    /// `public` for ECR Public.
    pub fn place(&self) -> &str {
        if self.public { "public" } else { &self.region }
    }

    /// The token expiry gauge's labels.
    pub fn metric_labels(&self) -> TokenLabels {
        TokenLabels {
            region: self.place().to_string(),
            role_arn: self.role_arn.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.public {
            "ECR Public"
        } else {
            &self.region
        };
        match &self.role_arn {
            Some(role) => write!(f, "{place} as {role}"),
            None => f.write_str(place),
        }
    }
}

/// A registry password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub username: String,
    pub password: String,
    pub expires_at: SystemTime,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &rfc3339(self.expires_at))
            .finish()
    }
}

impl Token {
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// Why no token could be had. Messages are one line, for people, and never contain a token.
/// `region` is [`TokenKey::place`]: a region, or `public` for ECR Public.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {message}", get_token_in(region))]
    Ecr { region: String, message: String },
    #[error(
        "AWS credentials (default chain: environment, profile, web identity, Pod Identity, \
         container and instance metadata): {message}"
    )]
    Credentials { message: String },
    #[error("AssumeRole of {role_arn}: {message}")]
    AssumeRole { role_arn: String, message: String },
    #[error(
        "{} returned a token that expired at {expired_at}; check the endpoint and the clock",
        ecr_in(region)
    )]
    Expired { region: String, expired_at: String },
    #[error("{} returned no usable token: {message}", ecr_in(region))]
    Malformed { region: String, message: String },
    #[error("{key}: no answer within the request timeout ({}ms left)", after.as_millis())]
    Timeout { key: String, after: Duration },
    #[error("{last_error} (not retried for another {retry_in_seconds}s)")]
    BackingOff {
        last_error: Box<TokenError>,
        retry_in_seconds: u64,
    },
}

fn get_token_in(place: &str) -> String {
    if place == "public" {
        "ECR Public GetAuthorizationToken (us-east-1)".to_string()
    } else {
        format!("GetAuthorizationToken in {place}")
    }
}

fn ecr_in(place: &str) -> String {
    if place == "public" {
        "ECR Public".to_string()
    } else {
        format!("ECR in {place}")
    }
}

impl TokenError {
    pub fn metric_label(&self) -> EcrOutcome {
        match self {
            TokenError::Ecr { .. } => EcrOutcome::Error,
            TokenError::Credentials { .. } => EcrOutcome::Credentials,
            TokenError::AssumeRole { .. } => EcrOutcome::AssumeRole,
            TokenError::Expired { .. } => EcrOutcome::Expired,
            TokenError::Malformed { .. } => EcrOutcome::Malformed,
            TokenError::Timeout { .. } => EcrOutcome::Timeout,
            TokenError::BackingOff { .. } => EcrOutcome::Backoff,
        }
    }
}

pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// Where tokens come from: ECR in production, anything in tests.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> TokenFuture<'a>;
}

/// A token handed out by the cache, and whether it came from a failed refresh.
#[derive(Clone, Debug)]
pub struct Served {
    pub token: Arc<Token>,
    /// Set when the source failed and a still-valid older token was served instead.
    pub stale_because: Option<TokenError>,
}

#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// The refresher replaces tokens with less than this left.
    pub refresh_margin: Duration,
    /// First back-off after a failed source call; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_margin: Duration::from_secs(6 * 3600),
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl CacheConfig {
    /// Extra time on top of the margin, so a token just handed out is not due a moment later:
    /// a tenth of the margin, at most five minutes.
    pub fn slack(&self) -> Duration {
        (self.refresh_margin / 10).min(Duration::from_secs(300))
    }

    /// How long a fresh token may be handed out.
    pub fn time_to_live(&self, token: &Token, now: SystemTime) -> Duration {
        token
            .remaining(now)
            .saturating_sub(self.refresh_margin + self.slack())
    }
}

struct TokenExpiry(CacheConfig);

impl Expiry<TokenKey, Arc<Token>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<Token>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.0.time_to_live(value, SystemTime::now()))
    }
}

struct Failure {
    error: TokenError,
    retry_at: Instant,
    consecutive: u32,
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    fresh: moka::future::Cache<TokenKey, Arc<Token>>,
    /// The newest token per key, kept past its cache life to bridge an ECR outage.
    last_good: Mutex<HashMap<TokenKey, Arc<Token>>>,
    failures: Mutex<HashMap<TokenKey, Failure>>,
    metrics: Arc<Metrics>,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        let fresh = moka::future::Cache::builder()
            .max_capacity(10_000)
            .expire_after(TokenExpiry(config))
            .build();
        TokenCache {
            source,
            config,
            fresh,
            last_good: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// A token for `key` with more than the refresh margin left, or a still-valid older one
    /// with the reason a fresh one could not be had.
    pub async fn get(&self, key: &TokenKey) -> Result<Served, TokenError> {
        match self.cached(key).await {
            Some(served) => Ok(served),
            None => self.get_missed(key).await,
        }
    }

    /// The fresh token for `key` if the cache has one: the hit path, which never calls out.
    pub async fn cached(&self, key: &TokenKey) -> Option<Served> {
        let token = self.fresh.get(key).await?;
        if self
            .config
            .time_to_live(&token, SystemTime::now())
            .is_zero()
        {
            return None;
        }
        self.metrics.cache_lookup(CacheResult::Hit);
        Some(Served {
            token,
            stale_because: None,
        })
    }

    /// After [`cached`](Self::cached) found nothing: one shared source call per key, or the
    /// last good token while the source is failing.
    pub async fn get_missed(&self, key: &TokenKey) -> Result<Served, TokenError> {
        self.metrics.cache_lookup(CacheResult::Miss);
        if let Some(err) = self.backing_off(key) {
            return self.fall_back(key, err);
        }
        let result = self.fresh.try_get_with(key.clone(), self.fetch(key)).await;
        match result {
            Ok(token) => Ok(Served {
                token,
                stale_because: None,
            }),
            Err(err) => self.fall_back(key, (*err).clone()),
        }
    }

    async fn fetch(&self, key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        let started = Instant::now();
        let result = self.source.fetch(key).await.and_then(|t| {
            let now = SystemTime::now();
            if t.expires_at <= now {
                Err(TokenError::Expired {
                    region: key.place().to_string(),
                    expired_at: rfc3339(t.expires_at),
                })
            } else {
                Ok(t)
            }
        });
        let outcome = match &result {
            Ok(_) => EcrOutcome::Success,
            Err(e) => e.metric_label(),
        };
        self.metrics
            .ecr_call(key.place(), outcome, started.elapsed());
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                let ttl = self.config.time_to_live(&token, SystemTime::now());
                if ttl.is_zero() {
                    tracing::warn!(key = %key, expires_at = %rfc3339(token.expires_at),
                        "ECR token lives shorter than the refresh margin; it is used but not cached");
                }
                lock(&self.last_good).insert(key.clone(), token.clone());
                lock(&self.failures).remove(key);
                Ok(token)
            }
            Err(error) => {
                let mut failures = lock(&self.failures);
                let consecutive = failures.get(key).map_or(0, |f| f.consecutive) + 1;
                let backoff = self
                    .config
                    .backoff
                    .saturating_mul(1 << (consecutive - 1).min(16))
                    .min(self.config.max_backoff);
                tracing::warn!(key = %key, error = %error, consecutive, backoff = %humantime::format_duration(backoff),
                    "ECR token request failed");
                failures.insert(
                    key.clone(),
                    Failure {
                        error: error.clone(),
                        retry_at: Instant::now() + backoff,
                        consecutive,
                    },
                );
                Err(error)
            }
        }
    }

    fn backing_off(&self, key: &TokenKey) -> Option<TokenError> {
        let failures = lock(&self.failures);
        let f = failures.get(key)?;
        let now = Instant::now();
        (f.retry_at > now).then(|| TokenError::BackingOff {
            last_error: Box::new(f.error.clone()),
            retry_in_seconds: (f.retry_at - now).as_secs().max(1),
        })
    }

    /// Serves the last good token while it is still worth writing (more than the slack left).
    fn fall_back(&self, key: &TokenKey, error: TokenError) -> Result<Served, TokenError> {
        let last = lock(&self.last_good).get(key).cloned();
        match last {
            Some(token) if token.remaining(SystemTime::now()) > self.config.slack() => {
                self.metrics.cache_lookup(CacheResult::Stale);
                Ok(Served {
                    token,
                    stale_because: Some(error),
                })
            }
            _ => Err(error),
        }
    }

    /// Seconds until each known token expires, for the metrics endpoint.
    pub fn expiries(&self) -> Vec<(TokenLabels, f64)> {
        let now = SystemTime::now();
        lock(&self.last_good)
            .iter()
            .map(|(k, t)| {
                let secs = match t.expires_at.duration_since(now) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                (k.metric_labels(), secs)
            })
            .collect()
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map: keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fixed {
        calls: AtomicUsize,
        lifetime: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    impl TokenSource for Fixed {
        fn fetch<'a>(&'a self, key: &'a TokenKey) -> TokenFuture<'a> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err(TokenError::Ecr {
                        region: key.region.clone(),
                        message: "boom".into(),
                    });
                }
                Ok(Token {
                    username: "AWS".into(),
                    password: format!("pw-{n}"),
                    expires_at: SystemTime::now() + self.lifetime,
                })
            })
        }
    }

    fn cache(lifetime: Duration, margin: Duration) -> (Arc<Fixed>, TokenCache) {
        let src = Arc::new(Fixed {
            calls: AtomicUsize::new(0),
            lifetime,
            fail: Default::default(),
        });
        let cfg = CacheConfig {
            refresh_margin: margin,
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        };
        let c = TokenCache::new(src.clone(), cfg, Arc::new(Metrics::default()));
        (src, c)
    }

    #[test]
    fn time_to_live_subtracts_margin_and_slack() {
        let cfg = CacheConfig::default();
        assert_eq!(cfg.slack(), Duration::from_secs(300));
        let now = SystemTime::now();
        let t = Token {
            username: "AWS".into(),
            password: "x".into(),
            expires_at: now + Duration::from_secs(12 * 3600),
        };
        assert_eq!(
            cfg.time_to_live(&t, now),
            Duration::from_secs(6 * 3600 - 300)
        );
        let short = Token {
            expires_at: now + Duration::from_secs(3600),
            ..t
        };
        assert_eq!(cfg.time_to_live(&short, now), Duration::ZERO);
    }

    #[test]
    fn debug_redacts_password() {
        let t = Token {
            username: "AWS".into(),
            password: "very-secret".into(),
            expires_at: SystemTime::UNIX_EPOCH,
        };
        let s = format!("{t:?}");
        assert!(!s.contains("very-secret"), "{s}");
        assert!(s.contains("1970-01-01T00:00:00Z"), "{s}");
    }

    #[tokio::test]
    async fn hit_after_miss_and_stale_on_failure() {
        let (src, c) = cache(Duration::from_secs(3600), Duration::from_secs(60));
        let key = TokenKey::new("us-east-1", None);
        let a = c.get(&key).await.unwrap();
        let b = c.get(&key).await.unwrap();
        assert_eq!(a.token.password, b.token.password);
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);

        // Force a miss, then fail: the old token is still valid and is served as stale.
        c.fresh.invalidate(&key).await;
        src.fail.store(true, Ordering::SeqCst);
        let s = c.get(&key).await.unwrap();
        assert_eq!(s.token.password, a.token.password);
        assert!(s.stale_because.is_some());
        // Backing off: no further source call.
        c.get(&key).await.unwrap();
        assert_eq!(src.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_token_is_refused() {
        let (_src, c) = cache(Duration::ZERO, Duration::from_secs(60));
        let err = c.get(&TokenKey::new("eu-west-1", None)).await.unwrap_err();
        assert!(matches!(err, TokenError::Expired { .. }), "{err}");
    }
}
