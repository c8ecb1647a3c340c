//! What a rule matches: shell-style patterns for namespaces and role ARNs, registry patterns
//! (`ACCOUNT[:REGION]`) and Kubernetes label selectors on the namespace.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::registry::{PUBLIC_ACCOUNT, Registry};

/// A shell-style pattern: `*` matches any run of characters, `?` one character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: &str) -> Self {
        Pattern(p.trim().to_string())
    }

    pub fn matches(&self, s: &str) -> bool {
        glob(self.0.as_bytes(), s.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Iterative glob with single-star backtracking: linear in practice, no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid registry pattern {0:?}: expected ACCOUNT[:REGION], e.g. 123456789012:eu-*, or public"
)]
pub struct InvalidRegistryPattern(pub String);

/// A registry pattern: `ACCOUNT[:REGION]`, each part a pattern (`123456789012:eu-*`,
/// `*:us-east-1`). ECR Public's registries (`public.ecr.aws`, `ecr-public.aws.com`) have the
/// account `public` and the region `us-east-1`: `public` allows them, and so does `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPattern {
    account: Pattern,
    region: Pattern,
}

impl RegistryPattern {
    pub fn parse(s: &str) -> Result<Self, InvalidRegistryPattern> {
        let s = s.trim();
        let (account, region) = s.split_once(':').unwrap_or((s, "*"));
        if account.is_empty() || region.is_empty() || region.contains(':') {
            return Err(InvalidRegistryPattern(s.to_string()));
        }
        Ok(RegistryPattern {
            account: Pattern::new(account),
            region: Pattern::new(region),
        })
    }

    pub fn any() -> Self {
        RegistryPattern {
            account: Pattern::new("*"),
            region: Pattern::new("*"),
        }
    }

    pub fn matches(&self, r: &Registry) -> bool {
        debug_assert!(!r.public || r.account == PUBLIC_ACCOUNT);
        self.account.matches(&r.account) && self.region.matches(&r.region)
    }
}

impl fmt::Display for RegistryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account, self.region)
    }
}

/// A Kubernetes label selector on the namespace: `matchLabels` and `matchExpressions`, both
/// required to hold (an empty selector matches every namespace), as in the Kubernetes API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// What the API server would refuse in a label selector.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSelector {
    #[error("matchExpressions[{index}]: key is empty")]
    EmptyKey { index: usize },
    #[error("matchExpressions[{index}]: {operator:?} needs values")]
    NeedsValues { index: usize, operator: Operator },
    #[error("matchExpressions[{index}]: {operator:?} takes no values")]
    TakesNoValues { index: usize, operator: Operator },
    #[error("matchLabels: a key is empty")]
    EmptyLabelKey,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The API server's own checks: a key, and values exactly for In and NotIn.
    pub fn validate(&self) -> Result<(), InvalidSelector> {
        for (index, r) in self.match_expressions.iter().enumerate() {
            if r.key.trim().is_empty() {
                return Err(InvalidSelector::EmptyKey { index });
            }
            let operator = r.operator;
            match (operator, r.values.is_empty()) {
                (Operator::In | Operator::NotIn, true) => {
                    return Err(InvalidSelector::NeedsValues { index, operator });
                }
                (Operator::Exists | Operator::DoesNotExist, false) => {
                    return Err(InvalidSelector::TakesNoValues { index, operator });
                }
                _ => {}
            }
        }
        if self.match_labels.keys().any(|k| k.trim().is_empty()) {
            return Err(InvalidSelector::EmptyLabelKey);
        }
        Ok(())
    }
}

impl fmt::Display for LabelSelector {
    /// kubectl's selector syntax: `team=a,env in (prod,staging),!legacy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}
