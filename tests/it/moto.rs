//! Compatibility with moto, a third-party ECR emulator (PyPI `moto[server]`, installed by
//! scripts/test.sh). moto answers with a token that expired in 2015: the SDK must read it, and
//! the webhook must refuse to inject it. If moto cannot be started, this test fails.

use crate::common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ecr_token_webhook::aws::ecr::EcrTokenSource;
use ecr_token_webhook::aws::token::{TokenKey, TokenSource};

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ECR_TOKEN_WEBHOOK_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let py = python();
    let child = Command::new(&py)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "moto is required ({} -m moto.server): {e}; run scripts/test.sh",
                py.display()
            )
        });
    let mut moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return moto;
        }
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!(
                "moto exited ({status}): install it with scripts/test.sh (pip install 'moto[server]')"
            );
        }
        assert!(
            Instant::now() < deadline,
            "moto did not listen on {} within 60s",
            moto.url
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_token_is_read_by_the_sdk_and_refused_as_expired() {
    install_crypto();
    let moto = start_moto();

    // The real SDK parses moto's answer.
    let source = EcrTokenSource::new(sdk_config(&moto.url));
    let token = source
        .fetch(&TokenKey::new("us-east-1", None))
        .await
        .expect("moto answers GetAuthorizationToken");
    assert_eq!(token.username, "AWS");
    assert!(
        token.password.ends_with("-auth-token"),
        "moto's token shape"
    );
    let jan_2015 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_420_070_400);
    assert_eq!(token.expires_at, jan_2015);

    // The webhook refuses to write it and says why.
    let h = Harness::start(Options {
        endpoint: Some(moto.url.clone()),
        ..Options::default()
    })
    .await;
    let review = fixture("argocd-repository-create-apply.json");
    let (_, resp, _) = h.post(&review.to_string(), "10s").await;
    assert_eq!(resp["response"]["allowed"], true);
    let after = apply(&review, &resp);
    assert!(
        after["data"].get("password").is_none(),
        "expired token not injected"
    );
    let err = &annotations(&after)["ecr-token-webhook/error"];
    assert!(
        err.contains("returned a token that expired at 2015-01-01T00:00:00Z"),
        "{err}"
    );
    assert!(warnings(&resp)[0].contains("expired at 2015-01-01T00:00:00Z"));
}
