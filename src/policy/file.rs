//! The policy file: its YAML shape and checks ([`Policy::from_yaml`]), and the file on disk,
//! read at start (a bad file stops the process, there is no other
//! policy to fall back on), then polled by content and swapped in when it changes. A changed
//! file that is invalid is refused with a log line and a metric while the last good policy
//! stays in force. Polling by content (not by modification time or inotify) follows a mounted
//! ConfigMap through the kubelet's symlink swap, as the TLS files do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::{
    InvalidRegistryPattern, InvalidSelector, LabelSelector, MAX_FILE_BYTES, MAX_RULES, Origin,
    Pattern, Policy, RegistryPattern, Rule,
};
use crate::reload::{Poll, Source};

/// Why a policy file was not taken. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("policy file {path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("policy file {path}: not UTF-8")]
    NotUtf8 { path: String },
    /// What [`Policy::from_yaml`] refused.
    #[error("policy file {path}: {error}")]
    Invalid { path: String, error: PolicyError },
}

/// Why a policy file's content was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    /// serde_yaml_ng's messages name a line and column, never more of the content.
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("rules is empty: every secret would be refused")]
    NoRules,
    #[error("more than {MAX_RULES} rules")]
    TooManyRules,
    /// `at` is `rules[INDEX]`, with the rule's name when it has one.
    #[error("{at}: {problem}")]
    Rule { at: String, problem: RuleError },
}

/// Why one rule was refused; each message starts with the field at fault.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("name: at most 63 letters, digits, '-', '_' or '.' (it is a metric label)")]
    BadName,
    #[error("name: {0:?} is reserved")]
    ReservedName(String),
    #[error("name: {0:?} is used by an earlier rule")]
    DuplicateName(String),
    #[error("{field}: an entry is empty")]
    EmptyEntry { field: &'static str },
    #[error("namespaces: at least one pattern is required (\"*\" for all)")]
    NoNamespaces,
    #[error("registries: at least one pattern is required (\"*\" for any registry)")]
    NoRegistries,
    #[error("registries: {0}")]
    Registry(#[from] InvalidRegistryPattern),
    #[error("namespaceSelector: {0}")]
    Selector(#[from] InvalidSelector),
    #[error("defaultRole: {0:?} is not a role ARN (arn:aws:iam::123456789012:role/NAME)")]
    DefaultRole(String),
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
        Ok(text) => {
            Policy::from_yaml(text, &path).map_err(|error| PolicyFileError::Invalid { path, error })
        }
    }
}

impl Policy {
    /// Parses and checks a policy file. `path` names it in messages.
    pub fn from_yaml(text: &str, path: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(PolicyError::TooLarge);
        }
        // serde_yaml_ng's messages name a line and column, never more of the content.
        let doc: FileDoc = serde_yaml_ng::from_str(text)?;
        if doc.rules.is_empty() {
            return Err(PolicyError::NoRules);
        }
        if doc.rules.len() > MAX_RULES {
            return Err(PolicyError::TooManyRules);
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (index, r) in doc.rules.into_iter().enumerate() {
            let at = match &r.name {
                Some(name) => format!("rules[{index}] ({name})"),
                None => format!("rules[{index}]"),
            };
            rules.push(
                r.check(&mut names)
                    .map_err(|problem| PolicyError::Rule { at, problem })?,
            );
        }
        Ok(Policy {
            rules,
            origin: Origin::File(path.to_string()),
        })
    }
}

/// The policy file's shape. Unknown fields are errors, so a misspelt key (`namespace:`) is
/// refused instead of silently widening or narrowing a rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    rules: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileRule {
    name: Option<String>,
    namespaces: Vec<String>,
    namespace_selector: Option<LabelSelector>,
    registries: Vec<String>,
    #[serde(default)]
    role_arns: Vec<String>,
    default_role: Option<String>,
}

impl FileRule {
    fn check(self, names: &mut BTreeSet<String>) -> Result<Rule, RuleError> {
        if let Some(name) = &self.name {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(RuleError::BadName);
            }
            if name.starts_with("rules[") || name == "none" || name == "flags" {
                return Err(RuleError::ReservedName(name.clone()));
            }
            if !names.insert(name.clone()) {
                return Err(RuleError::DuplicateName(name.clone()));
            }
        }
        let patterns = |field: &'static str, v: Vec<String>| -> Result<Vec<Pattern>, RuleError> {
            if v.iter().any(|s| s.trim().is_empty()) {
                return Err(RuleError::EmptyEntry { field });
            }
            Ok(v.iter().map(|s| Pattern::new(s)).collect())
        };
        if self.namespaces.is_empty() {
            return Err(RuleError::NoNamespaces);
        }
        if self.registries.is_empty() {
            return Err(RuleError::NoRegistries);
        }
        let registries = self
            .registries
            .iter()
            .map(|s| RegistryPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(selector) = &self.namespace_selector {
            selector.validate()?;
        }
        let default_role = match self.default_role.as_deref().map(str::trim) {
            None => None,
            Some(role) if is_role_arn(role) => Some(role.to_string()),
            Some(role) => return Err(RuleError::DefaultRole(role.to_string())),
        };
        Ok(Rule {
            name: self.name,
            namespaces: patterns("namespaces", self.namespaces)?,
            namespace_selector: self.namespace_selector,
            registries,
            role_arns: patterns("roleArns", self.role_arns)?,
            default_role,
        })
    }
}

/// `arn:<partition>:iam::<account>:role/<name>`: enough to catch a name or a typo.
pub(super) fn is_role_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
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
