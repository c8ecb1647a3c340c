//! Test harness: an ECR endpoint of our own on 127.0.0.1 speaking ECR's JSON protocol, the
//! webhook served in-process over real TLS, and a real HTTPS client.
#![allow(dead_code)]

pub mod fake_kube;
pub mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ecr_token_webhook::admission::{FailureMode, Webhook};
use ecr_token_webhook::aws::ecr::{EcrTokenSource, timeout_config};
use ecr_token_webhook::aws::token::{CacheConfig, TokenCache};
use ecr_token_webhook::metrics::Metrics;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::server::{self, Listen, Running};
use ecr_token_webhook::tls;
use serde_json::{Value, json};

pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
/// ECR Public's GetAuthorizationToken (aws-sdk-ecrpublic's model).
pub const PUBLIC_TARGET: &str = "SpencerFrontendService.GetAuthorizationToken";
/// Where the fake serves EKS Pod Identity's container credentials (GET).
pub const POD_IDENTITY_PATH: &str = "/pod-identity/credentials";

/// How the fake ECR misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    Throttle,
    ServerError,
    Slow(Duration),
}

/// One GetAuthorizationToken call: ECR (`ecr`) or ECR Public (`ecr-public`), as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrCall {
    pub service: String,
    pub region: String,
    pub access_key: String,
}

/// One call for credentials: STS `AssumeRole` (signed with `signed_with`),
/// `AssumeRoleWithWebIdentity` (unsigned, with a token), or `PodIdentity` (the container
/// credentials endpoint); `issued` is the access key id handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialCall {
    pub action: String,
    pub role: String,
    pub signed_with: Option<String>,
    pub issued: String,
}

struct EcrState {
    calls: AtomicUsize,
    sts_calls: AtomicUsize,
    pod_calls: AtomicUsize,
    /// STS refuses AssumeRole with AccessDenied while set.
    sts_denied: std::sync::atomic::AtomicBool,
    ecr_log: Mutex<Vec<EcrCall>>,
    credential_log: Mutex<Vec<CredentialCall>>,
    lifetime: Mutex<Duration>,
    /// How long the credentials STS and Pod Identity hand out are valid.
    credential_lifetime: Mutex<Duration>,
    /// The token AssumeRoleWithWebIdentity and Pod Identity accept (anything while unset).
    identity_token: Mutex<Option<String>>,
    fault: Mutex<Fault>,
    /// Regions whose calls get a ServerException, whatever `fault` says.
    failing_regions: Mutex<BTreeSet<String>>,
}

/// A local AWS endpoint on 127.0.0.1: ECR's and ECR Public's `GetAuthorizationToken` (~2 KB
/// tokens of a settable lifetime, or a fault; each token distinct, so rotation is visible),
/// STS's `AssumeRole` and `AssumeRoleWithWebIdentity` (query protocol, XML), and EKS Pod
/// Identity's container credentials endpoint. It records which key signed each call.
pub struct FakeEcr {
    pub url: String,
    state: Arc<EcrState>,
}

impl FakeEcr {
    pub async fn start(lifetime: Duration) -> FakeEcr {
        let state = Arc::new(EcrState {
            calls: AtomicUsize::new(0),
            sts_calls: AtomicUsize::new(0),
            pod_calls: AtomicUsize::new(0),
            sts_denied: std::sync::atomic::AtomicBool::new(false),
            ecr_log: Mutex::new(Vec::new()),
            credential_log: Mutex::new(Vec::new()),
            lifetime: Mutex::new(lifetime),
            credential_lifetime: Mutex::new(Duration::from_secs(3600)),
            identity_token: Mutex::new(None),
            fault: Mutex::new(Fault::None),
            failing_regions: Mutex::new(BTreeSet::new()),
        });
        let app = Router::new()
            .route("/", post(ecr_handler))
            .route(POD_IDENTITY_PATH, axum::routing::get(pod_identity))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake ECR");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeEcr {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// GetAuthorizationToken calls, ECR and ECR Public.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// ECR calls in these regions fail with a ServerException (the others answer); empty clears.
    pub fn set_failing_regions(&self, regions: &[&str]) {
        *self.state.failing_regions.lock().unwrap() =
            regions.iter().map(|r| r.to_string()).collect();
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        *self.state.lifetime.lock().unwrap() = lifetime;
    }

    /// Lifetime of the credentials STS and Pod Identity issue from now on.
    pub fn set_credential_lifetime(&self, lifetime: Duration) {
        *self.state.credential_lifetime.lock().unwrap() = lifetime;
    }

    /// The only web identity / Pod Identity token accepted from now on.
    pub fn require_identity_token(&self, token: &str) {
        *self.state.identity_token.lock().unwrap() = Some(token.to_string());
    }

    /// STS calls of any kind.
    pub fn sts_calls(&self) -> usize {
        self.state.sts_calls.load(Ordering::SeqCst)
    }

    pub fn set_sts_denied(&self, denied: bool) {
        self.state.sts_denied.store(denied, Ordering::SeqCst);
    }

    /// Access key ids that signed the GetAuthorizationToken calls, in order.
    pub fn access_keys(&self) -> Vec<String> {
        self.ecr_log().into_iter().map(|c| c.access_key).collect()
    }

    /// Regions named in the SigV4 credential scope of each call, in order.
    pub fn regions(&self) -> Vec<String> {
        self.ecr_log().into_iter().map(|c| c.region).collect()
    }

    pub fn ecr_log(&self) -> Vec<EcrCall> {
        self.state.ecr_log.lock().unwrap().clone()
    }

    /// Every call for credentials (STS and Pod Identity), in order.
    pub fn credential_log(&self) -> Vec<CredentialCall> {
        self.state.credential_log.lock().unwrap().clone()
    }

    /// Calls of `action` (`AssumeRole`, `AssumeRoleWithWebIdentity`, `PodIdentity`) per role
    /// (empty for Pod Identity).
    pub fn credential_calls(&self, action: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in self.credential_log().iter().filter(|c| c.action == action) {
            *out.entry(c.role.clone()).or_default() += 1;
        }
        out
    }

    /// The password the n-th call (0-based) handed out.
    pub fn password(n: usize) -> String {
        token_password(n)
    }
}

fn token_password(n: usize) -> String {
    // Real ECR passwords are ~2 KB of base64; make ours as big and distinct per call.
    let head = format!("fake-token-{n:06}-");
    let filler: String = (0..2000 - head.len())
        .map(|i| (b'A' + ((i * 7 + n) % 26) as u8) as char)
        .collect();
    head + &filler
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/ecr/aws4_request, ...`: the access key
/// id, region and service of a SigV4 signature.
fn signature_scope(headers: &HeaderMap) -> Option<(String, String, String)> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")?
        .split(',')
        .next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() == 5).then(|| (parts[0].into(), parts[2].into(), parts[3].into()))
}

/// A value of a form-encoded body (STS's query protocol).
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let form = String::from_utf8_lossy(body);
    let raw = form
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?;
    let bytes = raw.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if bytes[i] == b'%'
            && let Some(b) = hex
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn ecr_handler(
    axum::extract::State(state): axum::extract::State<Arc<EcrState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    // STS speaks the query protocol on the same endpoint (the SDK's endpoint_url covers both).
    if target.is_none() && body.starts_with(b"Action=") {
        return sts(&state, &headers, &body);
    }
    let n = state.calls.fetch_add(1, Ordering::SeqCst);
    let public = match target {
        Some(TARGET) => false,
        Some(PUBLIC_TARGET) => true,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                "unexpected target",
            );
        }
    };
    let Some((access_key, region, service)) = signature_scope(&headers) else {
        return error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "unsigned",
        );
    };
    if service != if public { "ecr-public" } else { "ecr" } {
        return error(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "bad scope",
        );
    }
    state.ecr_log.lock().unwrap().push(EcrCall {
        service,
        region: region.clone(),
        access_key,
    });
    if serde_json::from_slice::<Value>(&body).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "body is not JSON",
        );
    }
    let mut fault = state.fault.lock().unwrap().clone();
    if state.failing_regions.lock().unwrap().contains(&region) {
        fault = Fault::ServerError;
    }
    match fault {
        Fault::None => {}
        Fault::Throttle => {
            return error(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate exceeded",
            );
        }
        Fault::ServerError => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServerException",
                "internal failure",
            );
        }
        Fault::Slow(d) => tokio::time::sleep(d).await,
    }
    let lifetime = *state.lifetime.lock().unwrap();
    let expires = SystemTime::now() + lifetime;
    let expires = expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let token = B64.encode(format!("AWS:{}", token_password(n)));
    let body = if public {
        // ECR Public: one authorizationData object, not a list.
        json!({"authorizationData": {"authorizationToken": token, "expiresAt": expires}})
    } else {
        json!({"authorizationData": [{
            "authorizationToken": token,
            "expiresAt": expires,
            "proxyEndpoint": format!("https://123456789012.dkr.ecr.{region}.amazonaws.com"),
        }]})
    };
    (
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

fn credential_expiry(state: &EcrState) -> SystemTime {
    SystemTime::now() + *state.credential_lifetime.lock().unwrap()
}

fn identity_token_ok(state: &EcrState, given: Option<&str>) -> bool {
    match state.identity_token.lock().unwrap().as_deref() {
        None => true,
        Some(want) => given == Some(want),
    }
}

/// STS: AssumeRole (signed; temporary credentials ASIA<n>, or AccessDenied as STS words it
/// while `sts_denied`) and AssumeRoleWithWebIdentity (unsigned; credentials ASIAWEB<n> for the
/// expected token).
fn sts(state: &EcrState, headers: &HeaderMap, body: &[u8]) -> Response {
    let n = state.sts_calls.fetch_add(1, Ordering::SeqCst);
    let action = form_value(body, "Action").unwrap_or_default();
    let role = form_value(body, "RoleArn").unwrap_or_default();
    let sts_error = |status: StatusCode, code: &str, message: &str| {
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>req-{n}</RequestId></ErrorResponse>"
        );
        (status, [("content-type", "text/xml")], xml).into_response()
    };
    let (issued, signed_with) = match action.as_str() {
        "AssumeRole" => {
            let Some((key, _, service)) = signature_scope(headers) else {
                return sts_error(
                    StatusCode::FORBIDDEN,
                    "MissingAuthenticationToken",
                    "unsigned",
                );
            };
            if service != "sts" {
                return sts_error(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", "bad scope");
            }
            if state.sts_denied.load(Ordering::SeqCst) {
                return sts_error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    &format!(
                        "User: arn:aws:iam::123456789012:user/webhook is not authorized to \
                         perform: sts:AssumeRole on resource: {role}"
                    ),
                );
            }
            (format!("ASIA{n:06}"), Some(key))
        }
        "AssumeRoleWithWebIdentity" => {
            let token = form_value(body, "WebIdentityToken");
            if !identity_token_ok(state, token.as_deref()) {
                return sts_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidIdentityToken",
                    "the web identity token is not the one expected",
                );
            }
            (format!("ASIAWEB{n:05}"), None)
        }
        other => {
            return sts_error(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                &format!("unexpected action {other:?}"),
            );
        }
    };
    state.credential_log.lock().unwrap().push(CredentialCall {
        action: action.clone(),
        role: role.clone(),
        signed_with,
        issued: issued.clone(),
    });
    let expiration = ecr_token_webhook::time::rfc3339(credential_expiry(state));
    let extra = if action == "AssumeRoleWithWebIdentity" {
        "<SubjectFromWebIdentityToken>system:serviceaccount:ecr-token-webhook:ecr-token-webhook</SubjectFromWebIdentityToken>"
    } else {
        ""
    };
    let xml = format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
         <Credentials><AccessKeyId>{issued}</AccessKeyId><SecretAccessKey>assumed-secret</SecretAccessKey>\
         <SessionToken>session-{n}</SessionToken><Expiration>{expiration}</Expiration></Credentials>{extra}\
         <AssumedRoleUser><Arn>{role}/ecr-token-webhook</Arn><AssumedRoleId>AROA{n}:ecr-token-webhook</AssumedRoleId></AssumedRoleUser>\
         </{action}Result><ResponseMetadata><RequestId>req-{n}</RequestId></ResponseMetadata></{action}Response>"
    );
    ([("content-type", "text/xml")], xml).into_response()
}

/// EKS Pod Identity's agent: container credentials (ASIAPOD<n>) for the expected token in the
/// Authorization header.
async fn pod_identity(
    axum::extract::State(state): axum::extract::State<Arc<EcrState>>,
    headers: HeaderMap,
) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    if !identity_token_ok(&state, given) {
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            json!({"Code": "AccessDenied", "Message": "the token is not the one expected"})
                .to_string(),
        )
            .into_response();
    }
    let n = state.pod_calls.fetch_add(1, Ordering::SeqCst);
    let issued = format!("ASIAPOD{n:05}");
    state.credential_log.lock().unwrap().push(CredentialCall {
        action: "PodIdentity".into(),
        role: String::new(),
        signed_with: None,
        issued: issued.clone(),
    });
    let body = json!({
        "AccessKeyId": issued,
        "SecretAccessKey": "pod-secret",
        "Token": format!("pod-session-{n}"),
        "AccountId": "123456789012",
        "Expiration": ecr_token_webhook::time::rfc3339(credential_expiry(&state)),
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", code),
        ],
        json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

/// SDK configuration for a local endpoint: static test credentials, few quick retries.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        )))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeout_config(timeout_config())
        .sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep().expect("tokio sleep"))
        // AssumeRole checks the expiry of the credentials it caches.
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .build()
}

pub struct Options {
    pub lifetime: Duration,
    pub margin: Duration,
    pub backoff: Duration,
    pub failure_mode: FailureMode,
    pub policy: Policy,
    /// Another ECR endpoint (moto) instead of the test suite's own.
    pub endpoint: Option<String>,
    /// Namespace labels for the policy's namespace selectors.
    pub namespace_labels: Option<Arc<dyn ecr_token_webhook::policy::namespaces::NamespaceLabels>>,
    /// A Kubernetes client for the webhook's Events (none without).
    pub events: Option<kube::Client>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lifetime: Duration::from_secs(12 * 3600),
            margin: Duration::from_secs(6 * 3600),
            backoff: Duration::from_secs(2),
            failure_mode: FailureMode::Open,
            policy: Policy::default(),
            endpoint: None,
            namespace_labels: None,
            events: None,
        }
    }
}

/// The webhook on 127.0.0.1 (ephemeral ports) over TLS, in front of a fake ECR.
pub struct Harness {
    pub metrics: Arc<Metrics>,
    pub ecr: FakeEcr,
    pub running: Running,
    pub client: reqwest::Client,
    pub base: String,
    pub metrics_base: String,
    pub ca_pem: String,
}

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An HTTPS client that trusts only `ca_pem`.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem")])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Harness {
    pub async fn start(opts: Options) -> Harness {
        install_crypto();
        let certs = tls::generate(
            &["localhost".into(), "127.0.0.1".into()],
            Duration::from_secs(3600),
        )
        .expect("certs");
        let tls_config =
            tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes(), "test")
                .expect("tls config");
        Harness::start_with_tls(opts, tls_config, &certs.ca_cert_pem).await
    }

    /// Like [`Harness::start`], serving `tls_config`; the client trusts `ca_pem`.
    pub async fn start_with_tls(
        opts: Options,
        tls_config: Arc<rustls::ServerConfig>,
        ca_pem: &str,
    ) -> Harness {
        install_crypto();
        let ecr = FakeEcr::start(opts.lifetime).await;
        let metrics = Arc::new(Metrics::default());
        let endpoint = opts.endpoint.clone().unwrap_or_else(|| ecr.url.clone());
        let source = Arc::new(EcrTokenSource::new(sdk_config(&endpoint)));
        let cache = CacheConfig {
            refresh_margin: opts.margin,
            backoff: opts.backoff,
            max_backoff: opts.backoff * 4,
        };
        let tokens = Arc::new(TokenCache::new(source, cache, metrics.clone()));
        let mut webhook = Webhook::new(
            tokens.clone(),
            opts.policy,
            opts.failure_mode,
            metrics.clone(),
        );
        if let Some(labels) = opts.namespace_labels {
            webhook = webhook.with_namespace_labels(labels);
        }
        if let Some(client) = opts.events {
            webhook = webhook.with_events(ecr_token_webhook::admission::EventSink::new(
                client,
                Vec::new(),
            ));
        }
        let webhook = Arc::new(webhook);
        let listen = Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
        };
        let running = server::start(listen, tls_config, webhook, metrics.clone(), tokens)
            .await
            .expect("start webhook");
        Harness {
            metrics,
            client: https_client(ca_pem),
            base: format!("https://127.0.0.1:{}", running.addr.port()),
            metrics_base: format!("http://127.0.0.1:{}", running.metrics_addr.port()),
            ca_pem: ca_pem.to_string(),
            ecr,
            running,
        }
    }

    /// POSTs a review to /mutate?timeout=… and returns the status and the parsed body (or text).
    pub async fn post(&self, body: &str, timeout: &str) -> (StatusCode, Value, String) {
        post_review(&self.client, &self.base, body, timeout).await
    }

    /// [`Harness::post`] with an owned body and a 10 s timeout, for many requests at once.
    pub async fn post_owned(&self, body: String) -> (StatusCode, Value, String) {
        post_review(&self.client, &self.base, &body, "10s").await
    }

    pub async fn metrics(&self) -> String {
        metrics_text(&self.metrics_base).await
    }
}

/// The text of `{metrics_base}/metrics`.
pub async fn metrics_text(metrics_base: &str) -> String {
    reqwest::get(format!("{metrics_base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

pub async fn post_review(
    client: &reqwest::Client,
    base: &str,
    body: &str,
    timeout: &str,
) -> (StatusCode, Value, String) {
    let resp = client
        .post(format!("{base}/mutate?timeout={timeout}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /mutate");
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("ECR_TOKEN_WEBHOOK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// A captured AdmissionReview; a missing fixture fails the test, it is never skipped.
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} is required: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("fixtures dir {} is required: {e}", fixtures_dir().display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// Applies the response's JSON patch to the request's object, as the API server does.
pub fn apply(review: &Value, response: &Value) -> Value {
    let mut obj = review["request"]["object"].clone();
    if let Some(p) = response["response"]["patch"].as_str() {
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let bytes = B64.decode(p).expect("patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("patch is a JSON patch");
        json_patch::patch(&mut obj, &patch.0).expect("patch applies to the request object");
    }
    obj
}

pub fn data(obj: &Value, key: &str) -> String {
    let s = obj["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("data.{key} missing in {obj}"));
    String::from_utf8(B64.decode(s).expect("base64")).expect("utf8")
}

pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn warnings(resp: &Value) -> Vec<String> {
    resp["response"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An AdmissionReview (CREATE) of a labelled pull secret in `namespace` whose registries
/// annotation is `registries`, naming `role` if given.
pub fn pull_secret_review(
    uid: &str,
    namespace: &str,
    registries: &str,
    role: Option<&str>,
) -> Value {
    let mut annotations = json!({"ecr-token-webhook/registries": registries});
    if let Some(role) = role {
        annotations["ecr-token-webhook/role-arn"] = json!(role);
    }
    let object = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": format!("pull-{uid}"), "namespace": namespace,
            "labels": {"ecr-token-webhook/inject": "true"}, "annotations": annotations},
    });
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": format!("pull-{uid}"), "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "test"}, "object": object, "oldObject": null,
            "dryRun": false,
        },
    })
}

/// The passwords a patched pull secret holds, by registry host.
pub fn docker_passwords(review: &Value, response: &Value) -> BTreeMap<String, String> {
    let after = apply(review, response);
    let cfg: Value =
        serde_json::from_str(&data(&after, ".dockerconfigjson")).expect("docker config");
    cfg["auths"]
        .as_object()
        .expect("auths")
        .iter()
        .map(|(host, e)| {
            (
                host.clone(),
                e["password"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn addr_of(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Polls `f` until it holds, failing the test if that takes longer than `limit`; returns how
/// long it took. Every wait in the suite is bounded by this.
pub async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}
