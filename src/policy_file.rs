//! The policy file on disk: read at start (a bad file stops the process, there is no other
//! policy to fall back on), then polled by content and swapped in when it changes. A changed
//! file that is invalid is refused with a log line and a metric while the last good policy
//! stays in force. Polling by content (not by modification time or inotify) follows a mounted
//! ConfigMap through the kubelet's symlink swap, as the TLS files do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::metrics::{Metrics, ReloadOutcome};
use crate::policy::{MAX_FILE_BYTES, Policy, SharedPolicy};

/// Why a policy file was not taken. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("policy file {path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("policy file {path}: not UTF-8")]
    NotUtf8 { path: String },
    /// What [`Policy::from_yaml`] refused, in its words.
    #[error("policy file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Reads and parses the file; the bytes are returned to compare later polls against.
pub fn load(path: &Path) -> Result<(Policy, Vec<u8>), PolicyFileError> {
    let bytes = read(path)?;
    let policy = parse(path, &bytes)?;
    Ok((policy, bytes))
}

fn read(path: &Path) -> Result<Vec<u8>, PolicyFileError> {
    use std::io::Read;
    let failed = |error| PolicyFileError::Read {
        path: path.display().to_string(),
        error,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    Ok(bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Policy, PolicyFileError> {
    let path = path.display().to_string();
    match std::str::from_utf8(bytes) {
        Err(_) => Err(PolicyFileError::NotUtf8 { path }),
        Ok(text) => Policy::from_yaml(text, &path)
            .map_err(|reason| PolicyFileError::Invalid { path, reason }),
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded(Policy),
    Refused(String),
}

pub struct Reloader {
    path: PathBuf,
    last: Vec<u8>,
}

impl Reloader {
    /// Starts from the content in force (as read by [`load`] at start).
    pub fn new(path: &Path, in_force: Vec<u8>) -> Self {
        Reloader {
            path: path.to_path_buf(),
            last: in_force,
        }
    }

    pub fn poll(&mut self) -> Reload {
        let bytes = match read(&self.path) {
            Ok(b) => b,
            // A file that vanished for a moment (mid-swap) is refused once, then read again.
            Err(e) => return Reload::Refused(e.to_string()),
        };
        if bytes == self.last {
            return Reload::Unchanged;
        }
        // Remember what was seen either way: a refused file is reported once, not every poll.
        self.last = bytes;
        match parse(&self.path, &self.last) {
            Ok(p) => Reload::Reloaded(p),
            Err(e) => Reload::Refused(e.to_string()),
        }
    }
}

/// Polls every `interval` and swaps a changed, valid policy into `shared`.
pub fn spawn_reloader(
    shared: SharedPolicy,
    mut reloader: Reloader,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_refusal: Option<String> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let polled = tokio::task::spawn_blocking(move || {
                let found = reloader.poll();
                (reloader, found)
            })
            .await;
            let found = match polled {
                Ok((r, found)) => {
                    reloader = r;
                    found
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reloader failed; the policy in force stays");
                    return;
                }
            };
            match found {
                Reload::Unchanged => {}
                Reload::Reloaded(policy) => {
                    // In force and counted before it is announced: a reader of the log line sees both.
                    let described = policy.describe();
                    shared.replace(policy);
                    metrics.policy_reload(ReloadOutcome::Reloaded);
                    tracing::info!(policy = %described, "reloaded the policy file");
                    last_refusal = None;
                }
                Reload::Refused(why) => {
                    if last_refusal.as_deref() != Some(why.as_str()) {
                        metrics.policy_reload(ReloadOutcome::Refused);
                        tracing::error!(error = %why, in_force = %shared.current().describe(),
                            "refused the changed policy file; the last good policy stays in force");
                        last_refusal = Some(why);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_by_content_and_keeps_the_last_good_policy() {
        let dir = std::env::temp_dir().join(format!(
            "ecr-token-webhook-policy-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.yaml");
        let good = "rules: [{name: a, namespaces: ['*'], registries: ['*']}]\n";
        std::fs::write(&path, good).unwrap();
        let (policy, bytes) = load(&path).unwrap();
        assert_eq!(policy.rules.len(), 1);
        let mut r = Reloader::new(&path, bytes);
        assert!(matches!(r.poll(), Reload::Unchanged));

        std::fs::write(&path, "rules: [{name: a, namespaces: ['*']}]\n").unwrap();
        match r.poll() {
            Reload::Refused(why) => assert!(
                why.contains("policy.yaml") && why.contains("missing field `registries`"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // Reported once: the same bad content is then unchanged.
        assert!(matches!(r.poll(), Reload::Unchanged));

        let two = "rules:\n  - {name: a, namespaces: [a], registries: ['*']}\n  - {name: b, namespaces: ['*'], registries: [public]}\n";
        std::fs::write(&path, two).unwrap();
        match r.poll() {
            Reload::Reloaded(p) => assert_eq!(p.rules.len(), 2),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(r.poll(), Reload::Refused(why) if why.contains("cannot read")));
        let e = load(&path).unwrap_err();
        assert!(matches!(e, PolicyFileError::Read { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("policy file {}: cannot read", path.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
