//! The AWS edge: `GetAuthorizationToken` through aws-sdk-ecr.
//!
//! Credentials come from aws-config's default chain; `AWS_ENDPOINT_URL_ECR` (or
//! `AWS_ENDPOINT_URL`) points the client at another endpoint. The region comes from the
//! registry host, so one process serves registries in every region.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::error::ProvideErrorMetadata;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::token::{Token, TokenError, TokenFuture, TokenKey, TokenSource};

const SESSION_NAME: &str = "ecr-token-webhook";

/// SDK timeouts: an ECR call that hangs must not outlive many admission deadlines.
pub fn timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

/// Loads the default AWS configuration (environment, profile, web identity, Pod Identity,
/// container and instance metadata).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeout_config())
        .load()
        .await
}

pub struct EcrTokenSource {
    sdk: SdkConfig,
    clients: tokio::sync::Mutex<HashMap<TokenKey, aws_sdk_ecr::Client>>,
}

impl EcrTokenSource {
    pub fn new(sdk: SdkConfig) -> Self {
        EcrTokenSource {
            sdk,
            clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// One client per region and role, built once: clients hold connection pools and the
    /// assumed-role credentials cache.
    async fn client(&self, key: &TokenKey) -> aws_sdk_ecr::Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(key) {
            return c.clone();
        }
        let region = Region::new(key.region.clone());
        let mut builder = aws_sdk_ecr::config::Builder::from(&self.sdk).region(region.clone());
        if let Some(role) = &key.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(SESSION_NAME)
                .region(region)
                .configure(&self.sdk)
                .build()
                .await;
            builder = builder.credentials_provider(provider);
        }
        let client = aws_sdk_ecr::Client::from_conf(builder.build());
        clients.insert(key.clone(), client.clone());
        tracing::debug!(key = %key, "built ECR client");
        client
    }

    async fn get_token(&self, key: &TokenKey) -> Result<Token, TokenError> {
        let client = self.client(key).await;
        let out = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| TokenError::Ecr {
                region: key.region.clone(),
                message: describe(&e),
            })?;
        let malformed = |message: &str| TokenError::Malformed {
            region: key.region.clone(),
            message: message.to_string(),
        };
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| malformed("no authorizationData"))?;
        let encoded = data
            .authorization_token()
            .ok_or_else(|| malformed("no authorizationToken"))?;
        let expires_at = data
            .expires_at()
            .ok_or_else(|| malformed("no expiresAt"))
            .and_then(|t| {
                SystemTime::try_from(*t).map_err(|_| malformed("expiresAt out of range"))
            })?;
        let (username, password) = decode_token(encoded).map_err(malformed)?;
        Ok(Token {
            username,
            password,
            expires_at,
        })
    }
}

impl TokenSource for EcrTokenSource {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> TokenFuture<'a> {
        Box::pin(self.get_token(key))
    }
}

/// ECR's `authorizationToken` is base64 of `user:password`.
pub fn decode_token(encoded: &str) -> Result<(String, String), &'static str> {
    let bytes = B64
        .decode(encoded.trim())
        .map_err(|_| "authorizationToken is not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "authorizationToken is not UTF-8")?;
    match text.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
            Ok((user.to_string(), pass.to_string()))
        }
        _ => Err("authorizationToken is not user:password"),
    }
}

/// A one-line description of an SDK error: the service's code and message when there is one,
/// the whole cause chain otherwise (no credentials, connection refused, timeout).
fn describe<E, R>(err: &aws_sdk_ecr::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match (err.code(), err.message()) {
        (Some(code), Some(msg)) => one_line(&format!("{code}: {msg}")),
        (Some(code), None) => one_line(code),
        _ => describe_chain(err),
    }
}

/// Longest description kept: it ends up in an annotation and an admission warning.
const MAX_DESCRIPTION: usize = 300;

/// One line from an error and its sources, without the Debug dump the SDK's own context
/// display appends (it can run to kilobytes and carries response headers).
pub fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = one_line(&e.to_string());
        // Many layers repeat their source's text, or add only a generic word.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) && text != "other" {
            parts.push(text);
        }
        current = e.source();
    }
    let Some(innermost) = parts.last() else {
        return "unknown error".into();
    };
    let text = if parts.iter().any(|p| p.contains("credentials")) {
        format!(
            "no usable AWS credentials (default chain: environment, profile, web identity, \
             Pod Identity, instance metadata): {innermost}"
        )
    } else {
        parts.join(": ")
    };
    crate::text::truncate(&text, MAX_DESCRIPTION)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded<'a> = Result<(&'a str, &'a str), &'a str>;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |inner, t| Some(Layer(t, inner.map(Box::new))))
            .expect("at least one layer")
    }

    #[test]
    fn describes_error_chains_on_one_short_line() {
        let cases: &[(&[&'static str], &str)] = &[
            (
                &[
                    "dispatch failure",
                    "other",
                    "an error occurred while loading credentials",
                    "failed to load IMDS session token",
                    "service error",
                    "request forbidden: IMDS is disabled",
                ],
                "no usable AWS credentials (default chain: environment, profile, web identity, \
                 Pod Identity, instance metadata): request forbidden: IMDS is disabled",
            ),
            (
                &["dispatch failure", "io error", "connection refused"],
                "dispatch failure: io error: connection refused",
            ),
            (&["timeout", "timeout"], "timeout"),
            (
                &["response error", "line\nbreak\tand  spaces"],
                "response error: line break and spaces",
            ),
            (&[""], "unknown error"),
        ];
        for (texts, want) in cases {
            assert_eq!(describe_chain(&chain(texts)), *want, "{texts:?}");
        }
        let long = describe_chain(&chain(&[Box::leak("é".repeat(400).into_boxed_str())]));
        assert!(
            long.len() <= MAX_DESCRIPTION + '…'.len_utf8(),
            "{}",
            long.len()
        );
        assert!(long.ends_with('…'));
    }

    #[test]
    fn decodes_user_and_password() {
        let cases: &[(&str, Decoded)] = &[
            ("QVdTOnNlY3JldA==", Ok(("AWS", "secret"))),
            ("QVdTOmE6Yg==", Ok(("AWS", "a:b"))),
            ("not base64!", Err("authorizationToken is not base64")),
            ("QVdT", Err("authorizationToken is not user:password")),
            (
                "OnNlY3JldA==",
                Err("authorizationToken is not user:password"),
            ),
            ("//79", Err("authorizationToken is not UTF-8")),
        ];
        for (input, want) in cases {
            let got = decode_token(input);
            let got = got
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str()))
                .map_err(|e| *e);
            assert_eq!(got, *want, "{input}");
        }
    }
}
