//! The HTTP edge: `POST /mutate` over rustls, and the plain-HTTP admin server with
//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::{Webhook, budget_for, to_json};
use crate::aws::token::TokenCache;
use crate::metrics::Metrics;
use crate::time::parse_duration;

/// An AdmissionReview carries the object and the old object; Secrets are at most 1 MiB each.
pub const BODY_LIMIT: usize = 6 * 1024 * 1024;

/// The API server's default webhook timeout, used when the request names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection must finish its TLS handshake and first request within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `timeout` from the query string the API server sends (`?timeout=5s`).
pub fn timeout_from_query(query: Option<&str>) -> Duration {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.strip_prefix("timeout="))
        .find_map(|v| parse_duration(v).ok())
        .filter(|d| !d.is_zero())
        .map_or(DEFAULT_TIMEOUT, |d| d.min(Duration::from_secs(30)))
}

pub fn webhook_router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .with_state(webhook)
}

async fn mutate(State(webhook): State<Arc<Webhook>>, request: Request) -> Response {
    // The body limit is applied here, so a body too large is told apart from one cut off.
    let (head, body) = request.into_parts();
    let budget = budget_for(timeout_from_query(head.uri.query()));
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => return body_refused(&e),
    };
    match webhook.review(&body, budget).await {
        Ok(answer) => match to_json(&answer) {
            Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot serialize AdmissionReview: {e}\n"),
            )
                .into_response(),
        },
        Err(bad) => {
            tracing::warn!(error = %bad, "bad admission request");
            (StatusCode::BAD_REQUEST, format!("{bad}\n")).into_response()
        }
    }
}

/// A body that could not be read: too large (413, as axum's extractor answers), or cut off.
fn body_refused(e: &axum::Error) -> Response {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("AdmissionReview larger than {BODY_LIMIT} bytes\n"),
            )
                .into_response();
        }
        source = s.source();
    }
    (
        StatusCode::BAD_REQUEST,
        format!("cannot read the body: {e}\n"),
    )
        .into_response()
}

#[derive(Clone)]
struct Admin {
    metrics: Arc<Metrics>,
    tokens: Arc<TokenCache>,
    ready: Arc<AtomicBool>,
}

pub fn admin_router(
    metrics: Arc<Metrics>,
    tokens: Arc<TokenCache>,
    ready: Arc<AtomicBool>,
) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin {
            metrics,
            tokens,
            ready,
        })
}

async fn render_metrics(State(a): State<Admin>) -> Response {
    let text = a.metrics.render(&a.tokens.expiries());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(a): State<Admin>) -> Response {
    if a.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running webhook: its bound addresses, and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tls: RustlsConfig,
    handle: axum_server::Handle<SocketAddr>,
    ready: Arc<AtomicBool>,
    stop_admin: watch::Sender<bool>,
    web: JoinHandle<std::io::Result<()>>,
    admin: JoinHandle<std::io::Result<()>>,
}

pub struct Listen {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

/// Binds both listeners and starts serving. Ready once this returns.
pub async fn start(
    listen: Listen,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
    metrics: Arc<Metrics>,
    tokens: Arc<TokenCache>,
) -> Result<Running, ServeError> {
    let ready = Arc::new(AtomicBool::new(false));
    let admin_listener = tokio::net::TcpListener::bind(listen.metrics_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.metrics_addr,
            source,
        })?;
    let metrics_addr = admin_listener.local_addr()?;
    let web_listener =
        std::net::TcpListener::bind(listen.addr).map_err(|source| ServeError::Bind {
            addr: listen.addr,
            source,
        })?;
    let addr = web_listener.local_addr()?;

    let (stop_admin, mut stopped) = watch::channel(false);
    // Refused callers (--tls-client-ca-file) surface as failed accepts, with the peer address.
    let refusals = crate::tls::client_auth::refusal_handler(metrics.clone());
    let admin_app = admin_router(metrics, tokens, ready.clone());
    let admin = tokio::spawn(async move {
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });

    let tls = RustlsConfig::from_config(tls);
    let handle = axum_server::Handle::new();
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls.clone())
        .handshake_timeout(HANDSHAKE_TIMEOUT);
    let server = axum_server::from_tcp(web_listener)?
        .acceptor(acceptor)
        .handle(handle.clone())
        .first_request_timeout(HANDSHAKE_TIMEOUT)
        .accept_error_handler(move |peer, e| refusals(peer, e));
    let app = webhook_router(webhook);
    let web = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    ready.store(true, Ordering::SeqCst);
    tracing::info!(%addr, %metrics_addr, "serving");
    Ok(Running {
        addr,
        metrics_addr,
        tls,
        handle,
        ready,
        stop_admin,
        web,
        admin,
    })
}

impl Running {
    /// Waits until a server task ends on its own (which is a failure) or `signal` fires.
    /// Returns whether the signal fired.
    pub async fn wait(
        &mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        tokio::select! {
            _ = signal => Ok(()),
            r = &mut self.web => Err(match r { Ok(Ok(())) => ServeError::Io(std::io::Error::other("webhook server stopped")), Ok(Err(e)) => e.into(), Err(e) => e.into() }),
            r = &mut self.admin => Err(match r { Ok(Ok(())) => ServeError::Io(std::io::Error::other("metrics server stopped")), Ok(Err(e)) => e.into(), Err(e) => e.into() }),
        }
    }

    /// Reports unready while still serving: the first step of a shutdown, so endpoints drop
    /// the pod before it stops accepting.
    pub fn set_unready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Stops accepting, reports unready, lets in-flight requests finish within `grace`.
    pub async fn shutdown(self, grace: Duration) -> Result<(), ServeError> {
        self.ready.store(false, Ordering::SeqCst);
        self.handle.graceful_shutdown(Some(grace));
        let web = self.web.await;
        let _ = self.stop_admin.send(true);
        let admin = self.admin.await;
        web??;
        admin??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_server_timeout() {
        let cases = [
            (None, 10),
            (Some("timeout=5s"), 5),
            (Some("foo=bar&timeout=3s"), 3),
            (Some("timeout=1m0s"), 30),
            (Some("timeout=junk"), 10),
            (Some("timeout=0s"), 10),
            (Some(""), 10),
        ];
        for (q, want) in cases {
            assert_eq!(timeout_from_query(q), Duration::from_secs(want), "{q:?}");
        }
    }
}
