//! The real binary as a child process, `serve --tls-self-signed` on ephemeral ports, with an
//! environment built from nothing: only what a test passes (plus PATH), so the caller's AWS
//! and ECR_TOKEN_WEBHOOK_* settings never leak in. Each child has its own environment, which is
//! how the credential chain (IRSA, Pod Identity) is tested without touching this process's.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test; `ECR_TOKEN_WEBHOOK_BIN` names another (an older build, to compare).
pub fn bin() -> std::path::PathBuf {
    std::env::var_os("ECR_TOKEN_WEBHOOK_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ecr-token-webhook").into())
}

/// A child's stderr (its JSON log lines), read as it comes on a thread of its own.
pub struct LogLines {
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for assertions and failure messages.
    pub seen: Vec<String>,
}

impl LogLines {
    /// Reads `child`'s stderr, which must be piped.
    pub fn follow(child: &mut Child) -> LogLines {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogLines {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded, 30 s) for a line whose message is `message`; lines already read count
    /// too. Fails at once if `child` exits first.
    pub fn wait_for(&mut self, child: &mut Child, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(v) = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == message)
        {
            return v;
        }
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == message
                {
                    return v;
                }
            } else if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ecr-token-webhook exited ({status}) before {message:?}:\n{}",
                    self.seen.join("\n")
                );
            }
        }
        panic!(
            "no {message:?} log line within 30s; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Reads whatever has been logged so far, without waiting.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Reads until no line comes for 200 ms: after an exit, the pipe's last lines.
    pub fn drain_quiet(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
    }
}

pub struct WebhookProcess {
    child: Child,
    /// Its log lines, those read so far in `logs.seen`.
    pub logs: LogLines,
    pub base: String,
    pub metrics_base: String,
    pub client: reqwest::Client,
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebhookProcess {
    /// Starts `serve` with `env` (and `args`) and waits until it serves. AWS is told nothing
    /// it is not given: no instance metadata, no shared config or credentials files.
    pub fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> WebhookProcess {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("KUBECONFIG", dir.join("no-kubeconfig"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            )
            .env("ECR_TOKEN_WEBHOOK_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .args(["serve", "--tls-self-signed", "--refresher=false"])
            .arg("--tls-self-signed-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ecr-token-webhook");
        let logs = LogLines::follow(&mut child);
        let mut p = WebhookProcess {
            child,
            logs,
            base: String::new(),
            metrics_base: String::new(),
            client: reqwest::Client::new(),
        };
        let serving = p.wait_for("serving");
        let port = |field: &str| {
            super::addr_of(
                serving[field]
                    .as_str()
                    .expect("address in the serving line"),
            )
            .port()
        };
        p.base = format!("https://127.0.0.1:{}", port("addr"));
        p.metrics_base = format!("http://127.0.0.1:{}", port("metrics_addr"));
        let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("self-signed CA written");
        p.client = super::https_client(&ca);
        p
    }

    /// Waits (bounded, 30 s) for a JSON log line whose message is `message`.
    pub fn wait_for(&mut self, message: &str) -> Value {
        self.logs.wait_for(&mut self.child, message)
    }

    /// Reads whatever the process has logged so far.
    pub fn drain(&mut self) -> &[String] {
        self.logs.drain()
    }

    pub async fn post(&self, body: &str) -> (reqwest::StatusCode, Value, String) {
        let (status, json, text) = super::post_review(&self.client, &self.base, body, "10s").await;
        (
            reqwest::StatusCode::from_u16(status.as_u16()).expect("status"),
            json,
            text,
        )
    }

    pub async fn metrics(&self) -> String {
        super::metrics_text(&self.metrics_base).await
    }
}

/// Runs the binary to completion (at most 30 s) with `env` and `args`, e.g. a `serve` that
/// must refuse to start; returns its exit code and stderr.
pub fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ecr-token-webhook");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ecr-token-webhook {args:?} still running after 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code(), stderr)
}
