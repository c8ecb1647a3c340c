//! Who may receive tokens for what: namespaces, registries and role ARNs, as `*`/`?` patterns.

use std::fmt;

use crate::registry::Registry;

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

/// A registry pattern: `ACCOUNT[:REGION]`, each part a pattern (`123456789012:eu-*`, `*:us-east-1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryPattern {
    account: Pattern,
    region: Pattern,
}

impl RegistryPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (account, region) = s.split_once(':').unwrap_or((s, "*"));
        if account.is_empty() || region.is_empty() || region.contains(':') {
            return Err(format!(
                "invalid registry pattern {s:?}: expected ACCOUNT[:REGION], e.g. 123456789012:eu-*"
            ));
        }
        Ok(RegistryPattern {
            account: Pattern::new(account),
            region: Pattern::new(region),
        })
    }

    pub fn matches(&self, r: &Registry) -> bool {
        self.account.matches(&r.account) && self.region.matches(&r.region)
    }
}

impl fmt::Display for RegistryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account, self.region)
    }
}

/// A request the policy refuses, with the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("namespace {namespace} is not in --allowed-namespaces ({allowed})")]
    Namespace { namespace: String, allowed: String },
    #[error("registry {registry} is not in --allowed-registries ({allowed})")]
    Registry { registry: String, allowed: String },
    #[error("role {role} is not in --allowed-role-arns ({allowed})")]
    Role { role: String, allowed: String },
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub namespaces: Vec<Pattern>,
    pub registries: Vec<RegistryPattern>,
    /// Empty: no per-secret role is honoured.
    pub role_arns: Vec<Pattern>,
}

impl Default for Policy {
    /// Allow every namespace and registry; honour no per-secret role.
    fn default() -> Self {
        Policy {
            namespaces: vec![Pattern::new("*")],
            registries: vec![RegistryPattern {
                account: Pattern::new("*"),
                region: Pattern::new("*"),
            }],
            role_arns: Vec::new(),
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Policy {
    pub fn check_namespace(&self, namespace: &str) -> Result<(), Violation> {
        if self.namespaces.iter().any(|p| p.matches(namespace)) {
            Ok(())
        } else {
            Err(Violation::Namespace {
                namespace: namespace.to_string(),
                allowed: list(&self.namespaces),
            })
        }
    }

    pub fn check_registry(&self, registry: &Registry) -> Result<(), Violation> {
        if self.registries.iter().any(|p| p.matches(registry)) {
            Ok(())
        } else {
            Err(Violation::Registry {
                registry: registry.host.clone(),
                allowed: list(&self.registries),
            })
        }
    }

    pub fn check_role(&self, role: &str) -> Result<(), Violation> {
        if self.role_arns.iter().any(|p| p.matches(role)) {
            Ok(())
        } else {
            Err(Violation::Role {
                role: role.to_string(),
                allowed: list(&self.role_arns),
            })
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "namespaces={} registries={} role_arns={}",
            list(&self.namespaces),
            list(&self.registries),
            list(&self.role_arns)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn glob_patterns() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("apps", "apps", true),
            ("apps", "apps2", false),
            ("team-*", "team-a", true),
            ("team-*", "team-", true),
            ("team-*", "other", false),
            ("*-prod", "shop-prod", true),
            ("*-prod", "shop-prod-2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("?pps", "apps", true),
            ("?pps", "pps", false),
            ("", "", true),
            ("", "x", false),
            ("**", "x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Pattern::new(p).matches(s), want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn registry_patterns() {
        let r = registry::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        let cases = [
            ("*", true),
            ("123456789012", true),
            ("123456789012:eu-*", true),
            ("123456789012:us-*", false),
            ("*:eu-west-1", true),
            ("210987654321", false),
        ];
        for (p, want) in cases {
            assert_eq!(RegistryPattern::parse(p).unwrap().matches(&r), want, "{p}");
        }
        for bad in ["", ":eu-west-1", "123456789012:", "1:2:3"] {
            assert!(RegistryPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_names_the_rule_it_broke() {
        let policy = Policy {
            namespaces: vec![Pattern::new("argocd"), Pattern::new("team-*")],
            registries: vec![RegistryPattern::parse("123456789012:us-*").unwrap()],
            role_arns: vec![],
        };
        assert!(policy.check_namespace("team-a").is_ok());
        let err = policy
            .check_namespace("kube-system")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "namespace kube-system is not in --allowed-namespaces (argocd,team-*)"
        );
        let r = registry::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").unwrap();
        let err = policy.check_registry(&r).unwrap_err().to_string();
        assert!(
            err.contains("--allowed-registries (123456789012:us-*)"),
            "{err}"
        );
        let err = policy
            .check_role("arn:aws:iam::123456789012:role/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allowed-role-arns (none)"), "{err}");
        assert!(Policy::default().check_namespace("anything").is_ok());
        assert!(Policy::default().check_registry(&r).is_ok());
    }
}
