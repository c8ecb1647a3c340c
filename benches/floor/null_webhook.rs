//! The floor for the admission benchmarks: a webhook on the same transport as ecr-token-webhook
//! (axum over rustls, HTTP/1.1 keep-alive, the same TLS settings) that does no work of its own.
//!
//!   null-webhook allow ADDR DIR   answers every review "allowed" with the request's uid
//!   null-webhook patch ADDR DIR   the same plus a constant JSON patch shaped like ours for an
//!                                 Argo CD secret: username, a ~2 KB password and expires-at
//!
//! It writes a CA to DIR/ca.crt for the client, prints `listening ADDR`, and runs until killed.
//! Reading the uid means scanning the whole body, as any webhook must; nothing else is parsed.
//! It links the library, so it runs on the same global allocator as ecr-token-webhook's build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use ecr_token_webhook::tls;
use serde::Deserialize;

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(Deserialize)]
struct Request<'a> {
    uid: &'a str,
}

/// The answer around the uid: `{prefix}{uid}{suffix}`.
struct Answer {
    prefix: &'static str,
    suffix: String,
}

async fn mutate(State(answer): State<Arc<Answer>>, body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<Review>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed AdmissionReview\n").into_response();
    };
    let uid = review.request.uid;
    let mut out = String::with_capacity(answer.prefix.len() + uid.len() + answer.suffix.len());
    out.push_str(answer.prefix);
    // A uid from the API server is a UUID; escape anything else rather than break the JSON.
    match serde_json::to_string(uid) {
        Ok(quoted) => out.push_str(&quoted[1..quoted.len() - 1]),
        Err(_) => return (StatusCode::BAD_REQUEST, "bad uid\n").into_response(),
    }
    out.push_str(&answer.suffix);
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn answer(mode: &str) -> Option<Answer> {
    let prefix =
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":""#;
    match mode {
        "allow" => Some(Answer {
            prefix,
            suffix: r#"","allowed":true}}"#.to_string(),
        }),
        "patch" => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let password: String = (0..2000).map(|i| (b'A' + (i % 26) as u8) as char).collect();
            let patch = serde_json::json!([
                {"op": "add", "path": "/data/username", "value": b64.encode("AWS")},
                {"op": "add", "path": "/data/password", "value": b64.encode(password)},
                {"op": "add", "path": "/metadata/annotations/ecr-token-webhook~1expires-at",
                    "value": "2026-11-23T20:00:00Z"},
            ]);
            let encoded = b64.encode(patch.to_string());
            Some(Answer {
                prefix,
                suffix: format!(
                    r#"","allowed":true,"patchType":"JSONPatch","patch":"{encoded}"}}}}"#
                ),
            })
        }
        _ => None,
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr), Some(dir)) = (args.get(1), args.get(2), args.get(3)) else {
        return Err("usage: null-webhook allow|patch ADDR DIR".into());
    };
    let answer = answer(mode).ok_or("mode is allow or patch")?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| "cannot install the rustls crypto provider")?;
    let names = ["localhost", "127.0.0.1"].map(String::from).to_vec();
    let generated =
        tls::generate(&names, Duration::from_secs(86_400)).map_err(|e| e.to_string())?;
    tls::write_dir(std::path::Path::new(dir), &generated).map_err(|e| e.to_string())?;
    let config = tls::server_config(
        generated.cert_pem.as_bytes(),
        generated.key_pem.as_bytes(),
        "null-webhook",
    )
    .map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    println!(
        "listening {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(Duration::from_secs(10));
    let app = Router::new()
        .route("/mutate", post(mutate))
        .with_state(Arc::new(answer));
    axum_server::from_tcp(listener)
        .map_err(|e| e.to_string())?
        .acceptor(acceptor)
        .serve(app.into_make_service())
        .await
        .map_err(|e| e.to_string())
}
