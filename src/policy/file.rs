//! The policy file on disk: read at start (a bad file stops the process, there is no other
//! policy to fall back on), then polled by content and swapped in when it changes. A changed
//! file that is invalid is refused with a log line and a metric while the last good policy
//! stays in force. Polling by content (not by modification time or inotify) follows a mounted
//! ConfigMap through the kubelet's symlink swap, as the TLS files do.

use std::path::{Path, PathBuf};

use crate::policy::{MAX_FILE_BYTES, Policy};
use crate::reload::{Poll, Source};

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

/// Polls the policy file ([`crate::reload`]).
pub struct PolicyReloader {
    path: PathBuf,
    last: Vec<u8>,
}

impl PolicyReloader {
    /// Starts from the content in force (as read by [`load`] at start).
    pub fn new(path: &Path, in_force: Vec<u8>) -> Self {
        PolicyReloader {
            path: path.to_path_buf(),
            last: in_force,
        }
    }
}

impl Source for PolicyReloader {
    type Value = Policy;

    fn poll(&mut self) -> Poll<Policy> {
        let bytes = match read(&self.path) {
            Ok(b) => b,
            // A file that vanished for a moment (mid-swap) is refused once, then read again.
            Err(e) => return Poll::Refused(e.to_string()),
        };
        if bytes == self.last {
            return Poll::Unchanged;
        }
        // Remember what was seen either way: a refused file is reported once, not every poll.
        self.last = bytes;
        match parse(&self.path, &self.last) {
            Ok(p) => Poll::Changed(p),
            Err(e) => Poll::Refused(e.to_string()),
        }
    }
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
        let mut r = PolicyReloader::new(&path, bytes);
        assert!(matches!(r.poll(), Poll::Unchanged));

        std::fs::write(&path, "rules: [{name: a, namespaces: ['*']}]\n").unwrap();
        match r.poll() {
            Poll::Refused(why) => assert!(
                why.contains("policy.yaml") && why.contains("missing field `registries`"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // Reported once: the same bad content is then unchanged.
        assert!(matches!(r.poll(), Poll::Unchanged));

        let two = "rules:\n  - {name: a, namespaces: [a], registries: ['*']}\n  - {name: b, namespaces: ['*'], registries: [public]}\n";
        std::fs::write(&path, two).unwrap();
        match r.poll() {
            Poll::Changed(p) => assert_eq!(p.rules.len(), 2),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(r.poll(), Poll::Refused(why) if why.contains("cannot read")));
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
