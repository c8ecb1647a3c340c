//! The AWS edge: `GetAuthorizationToken` through aws-sdk-ecr, and ECR Public's through
//! aws-sdk-ecrpublic.
//!
//! Credentials come from aws-config's default chain; `AWS_ENDPOINT_URL_ECR`,
//! `AWS_ENDPOINT_URL_ECR_PUBLIC` and `AWS_ENDPOINT_URL_STS` (or `AWS_ENDPOINT_URL`) point the
//! clients at other endpoints. The region comes from the registry host, so one process serves
//! registries in every region.
//!
//! Every client shares one identity cache, partitioned per credentials provider: the pod's
//! own credentials (IRSA, Pod Identity, keys) are resolved once for every region and for STS,
//! and each role has one AssumeRole provider shared by every region's client, so a role is
//! assumed once per credential lifetime, not once per region and call.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_ecr::error::ProvideErrorMetadata;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::aws::token::{Token, TokenError, TokenFuture, TokenKey, TokenSource};
use crate::registry::PUBLIC_REGION;
use crate::text::truncate;

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

#[derive(Clone)]
enum Client {
    Private(aws_sdk_ecr::Client),
    Public(aws_sdk_ecrpublic::Client),
}

pub struct EcrTokenSource {
    sdk: SdkConfig,
    /// One AssumeRole credentials provider per role, shared by every region's client.
    roles: tokio::sync::Mutex<HashMap<String, SharedCredentialsProvider>>,
    clients: tokio::sync::Mutex<HashMap<TokenKey, Client>>,
}

impl EcrTokenSource {
    pub fn new(sdk: SdkConfig) -> Self {
        // Every client built here shares this one cache (aws-config's defaults already set
        // one; a hand-made configuration may not).
        let sdk = match sdk.identity_cache() {
            Some(_) => sdk,
            None => sdk
                .into_builder()
                .identity_cache(IdentityCache::lazy().build())
                .build(),
        };
        EcrTokenSource {
            sdk,
            roles: tokio::sync::Mutex::new(HashMap::new()),
            clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The role's credentials provider, made on first use. STS is asked in the configured
    /// region (AWS_REGION), else in the region the role is first needed for.
    async fn role(&self, role_arn: &str, region: &str) -> SharedCredentialsProvider {
        let mut roles = self.roles.lock().await;
        if let Some(p) = roles.get(role_arn) {
            return p.clone();
        }
        let sts_region = self
            .sdk
            .region()
            .cloned()
            .unwrap_or_else(|| Region::new(region.to_string()));
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.sdk)
                .region(sts_region)
                .build(),
        );
        let provider = SharedCredentialsProvider::new(AssumeRole {
            sts,
            role_arn: role_arn.to_string(),
        });
        roles.insert(role_arn.to_string(), provider.clone());
        provider
    }

    /// One client per region (or ECR Public) and role, built once: clients hold connection
    /// pools; the credentials they sign with are cached in the shared identity cache.
    async fn client(&self, key: &TokenKey) -> Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(key) {
            return c.clone();
        }
        let credentials = match &key.role_arn {
            Some(role) => Some(self.role(role, &key.region).await),
            None => None,
        };
        let client = if key.public {
            let mut b = aws_sdk_ecrpublic::config::Builder::from(&self.sdk)
                .region(Region::new(PUBLIC_REGION));
            // The shared provider itself (not a wrapper): its cache partition is the role's.
            b.set_credentials_provider(credentials);
            Client::Public(aws_sdk_ecrpublic::Client::from_conf(b.build()))
        } else {
            let mut b = aws_sdk_ecr::config::Builder::from(&self.sdk)
                .region(Region::new(key.region.clone()));
            b.set_credentials_provider(credentials);
            Client::Private(aws_sdk_ecr::Client::from_conf(b.build()))
        };
        clients.insert(key.clone(), client.clone());
        tracing::debug!(key = %key, "built ECR client");
        client
    }

    async fn get_token(&self, key: &TokenKey) -> Result<Token, TokenError> {
        let malformed = |message: &str| TokenError::Malformed {
            region: key.place().to_string(),
            message: message.to_string(),
        };
        let (encoded, expires_at) = match self.client(key).await {
            Client::Private(client) => {
                let out = client
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(|e| failure(key, &e, &token_files()))?;
                let data = out
                    .authorization_data()
                    .first()
                    .ok_or_else(|| malformed("no authorizationData"))?;
                (
                    data.authorization_token().map(str::to_string),
                    data.expires_at().copied(),
                )
            }
            // ECR Public answers with one authorizationData object, not a list.
            Client::Public(client) => {
                let out = client
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(|e| failure(key, &e, &token_files()))?;
                let data = out
                    .authorization_data()
                    .ok_or_else(|| malformed("no authorizationData"))?;
                (
                    data.authorization_token().map(str::to_string),
                    data.expires_at().copied(),
                )
            }
        };
        let encoded = encoded.ok_or_else(|| malformed("no authorizationToken"))?;
        let expires_at = expires_at
            .ok_or_else(|| malformed("no expiresAt"))
            .and_then(|t| {
                SystemTime::try_from(t).map_err(|_| malformed("expiresAt out of range"))
            })?;
        let (username, password) = decode_token(&encoded).map_err(malformed)?;
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

/// Credentials of a role, from STS AssumeRole, signed with the base credentials. Unlike
/// aws-config's AssumeRoleProvider, whose STS client caches nothing (it resolves the pod's own
/// credentials again for every AssumeRole), this one's STS client shares the identity cache.
#[derive(Debug)]
struct AssumeRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
}

impl AssumeRole {
    async fn assume(&self) -> provider::Result {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .send()
            .await
            // The STS error stays the source: `failure` reports its code and message.
            .map_err(CredentialsError::provider_error)?;
        let c = out
            .credentials()
            .ok_or_else(|| CredentialsError::unhandled("STS AssumeRole returned no credentials"))?;
        let expiry = SystemTime::try_from(*c.expiration())
            .map_err(|_| CredentialsError::unhandled("STS AssumeRole: expiration out of range"))?;
        tracing::debug!(role_arn = %self.role_arn, access_key_id = %c.access_key_id(),
            expires_at = %crate::time::rfc3339(expiry), "assumed role");
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            Some(expiry),
            "AssumeRole",
        ))
    }
}

impl ProvideCredentials for AssumeRole {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.assume())
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

/// Files the credential chain reads, named by the environment: when credentials fail, one
/// that cannot be read is the likely reason, and the SDK's own message omits the path.
pub fn token_files() -> Vec<(&'static str, String)> {
    [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ]
    .into_iter()
    .filter_map(|var| Some((var, std::env::var(var).ok().filter(|v| !v.is_empty())?)))
    .collect()
}

/// Which step failed, with the service's code and message where there is one: the credential
/// chain, AssumeRole of the secret's role, or GetAuthorizationToken in the region.
pub fn failure(
    key: &TokenKey,
    err: &(dyn std::error::Error + 'static),
    files: &[(&'static str, String)],
) -> TokenError {
    let layers = chain(err);
    let credentials = layers
        .iter()
        .any(|e| e.is::<aws_credential_types::provider::error::CredentialsError>());
    if !credentials {
        let message = service_error(&layers).unwrap_or_else(|| describe_chain(err));
        return TokenError::Ecr {
            region: key.place().to_string(),
            message: truncate(&message, MAX_DESCRIPTION),
        };
    }
    let mut message = service_error(&layers).unwrap_or_else(|| innermost(&layers));
    for (var, path) in files {
        if let Err(e) = std::fs::metadata(path) {
            message = format!("cannot read {path} ({var}): {e}; {message}");
        }
    }
    match &key.role_arn {
        // The role is named whole; only the detail is shortened.
        Some(role_arn) => TokenError::AssumeRole {
            role_arn: role_arn.clone(),
            message: truncate(&message, MAX_DESCRIPTION),
        },
        None => TokenError::Credentials {
            message: truncate(&message, MAX_DESCRIPTION),
        },
    }
}

fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source()).collect()
}

/// `code: message` from the first layer that is a service error of ECR, ECR Public or STS (AssumeRole,
/// or AssumeRoleWithWebIdentity for IRSA).
fn service_error(layers: &[&(dyn std::error::Error + 'static)]) -> Option<String> {
    use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
    use aws_sdk_ecrpublic::operation::get_authorization_token::GetAuthorizationTokenError as PublicError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
    fn meta(e: &dyn ProvideErrorMetadata) -> Option<String> {
        match (e.code(), e.message()) {
            (Some(code), Some(msg)) => Some(one_line(&format!("{code}: {msg}"))),
            (Some(code), None) => Some(one_line(code)),
            _ => None,
        }
    }
    layers.iter().find_map(|e| {
        if let Some(x) = e.downcast_ref::<GetAuthorizationTokenError>() {
            meta(x)
        } else if let Some(x) = e.downcast_ref::<PublicError>() {
            meta(x)
        } else if let Some(x) = e.downcast_ref::<AssumeRoleError>() {
            meta(x)
        } else if let Some(x) = e.downcast_ref::<AssumeRoleWithWebIdentityError>() {
            meta(x)
        } else {
            None
        }
    })
}

/// The innermost layer with something to say: for credential failures the outer layers are
/// generic ("dispatch failure", "an error occurred while loading credentials").
fn innermost(layers: &[&(dyn std::error::Error + 'static)]) -> String {
    layers
        .iter()
        .rev()
        .map(|e| one_line(&e.to_string()))
        .find(|t| !t.is_empty() && t != "other")
        .unwrap_or_else(|| "unknown error".into())
}

/// Longest description kept: it ends up in an annotation and an admission warning.
const MAX_DESCRIPTION: usize = 300;

/// One line from an error and its sources, without the Debug dump the SDK's own context
/// display appends (it can run to kilobytes and carries response headers).
pub fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err) {
        let text = one_line(&e.to_string());
        // Many layers repeat their source's text, or add only a generic word.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) && text != "other" {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        return "unknown error".into();
    }
    truncate(&parts.join(": "), MAX_DESCRIPTION)
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

    fn layers(texts: &[&'static str]) -> Layer {
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
            assert_eq!(describe_chain(&layers(texts)), *want, "{texts:?}");
        }
        let long = describe_chain(&layers(&[Box::leak("é".repeat(400).into_boxed_str())]));
        assert!(
            long.len() <= MAX_DESCRIPTION + '…'.len_utf8(),
            "{}",
            long.len()
        );
        assert!(long.ends_with('…'));
    }

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    fn credentials_failure(inner: &'static str) -> Wrap {
        use aws_credential_types::provider::error::CredentialsError;
        Wrap(
            "dispatch failure",
            Box::new(Wrap(
                "other",
                Box::new(CredentialsError::provider_error(layers(&[
                    "failed to load IMDS session token",
                    inner,
                ]))),
            )),
        )
    }

    fn key(role: Option<&str>) -> TokenKey {
        TokenKey::new("eu-west-1", role.map(String::from))
    }

    #[test]
    fn failures_name_the_step_that_failed() {
        let role = "arn:aws:iam::123456789012:role/team-a/ecr-reader";
        let missing = "/nonexistent/ecr-token-webhook/token".to_string();
        type Case = (
            TokenKey,
            Box<dyn std::error::Error>,
            Vec<(&'static str, String)>,
            String,
        );
        let cases: Vec<Case> = vec![
            (
                key(None),
                Box::new(layers(&["dispatch failure", "io error", "connection refused"])),
                vec![],
                "GetAuthorizationToken in eu-west-1: dispatch failure: io error: connection refused".into(),
            ),
            (
                TokenKey::public(None),
                Box::new(layers(&["dispatch failure", "connection refused"])),
                vec![],
                "ECR Public GetAuthorizationToken (us-east-1): dispatch failure: connection refused"
                    .into(),
            ),
            (
                key(None),
                Box::new(credentials_failure("request forbidden: IMDS is disabled")),
                vec![],
                "AWS credentials (default chain: environment, profile, web identity, Pod Identity, \
                 container and instance metadata): request forbidden: IMDS is disabled"
                    .into(),
            ),
            (
                key(Some(role)),
                Box::new(credentials_failure("No such file or directory (os error 2)")),
                vec![("AWS_WEB_IDENTITY_TOKEN_FILE", missing.clone())],
                format!(
                    "AssumeRole of {role}: cannot read {missing} (AWS_WEB_IDENTITY_TOKEN_FILE): \
                     No such file or directory (os error 2); No such file or directory (os error 2)"
                ),
            ),
        ];
        for (key, err, files, want) in cases {
            assert_eq!(failure(&key, err.as_ref(), &files).to_string(), want);
        }
    }

    #[test]
    fn a_long_reason_is_shortened_but_never_inside_the_role() {
        let role = format!("arn:aws:iam::123456789012:role/{}/reader", "p".repeat(200));
        let detail: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
        let text = failure(&key(Some(&role)), &credentials_failure(detail), &[]).to_string();
        assert!(
            text.starts_with(&format!("AssumeRole of {role}: xxx")),
            "{text}"
        );
        assert!(text.len() <= "AssumeRole of : ".len() + role.len() + MAX_DESCRIPTION + 3);
        assert!(text.ends_with('…'));
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
