//! Who may receive tokens for what, as one pure decision: [`Policy::decide`].
//!
//! A policy is an ordered list of rules. A rule matches a namespace by name patterns and,
//! optionally, a label selector on the namespace; the first rule that matches decides which
//! registries (account and region patterns) its secrets may receive tokens for, which role ARNs
//! they may name, and the role used for secrets that name none. No rule, no token.
//!
//! The `--allowed-*` flags are the one-rule case ([`Policy::from_flags`]); a policy file
//! (`--policy-file`, YAML) holds any number of rules ([`Policy::from_yaml`], in [`file`]).
//! What a rule matches is in `patterns.rs`; the namespace labels a selector needs come from
//! [`namespaces`].

pub mod file;
pub mod namespaces;
mod patterns;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::registry::Registry;

pub use patterns::{
    InvalidRegistryPattern, InvalidSelector, LabelSelector, Operator, Pattern, RegistryPattern,
    Requirement,
};

/// One rule: which namespaces it covers and what their secrets may get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Shown in refusals and used as the `rule` metric label.
    pub name: Option<String>,
    pub namespaces: Vec<Pattern>,
    /// Namespaces must also carry these labels (looked up, and cached, by the webhook).
    pub namespace_selector: Option<LabelSelector>,
    pub registries: Vec<RegistryPattern>,
    /// Roles a secret may name in `ecr-token-webhook/role-arn`; empty: none but the default.
    pub role_arns: Vec<Pattern>,
    /// The role for secrets that name none; without it they get the webhook's own identity.
    pub default_role: Option<String>,
}

impl Rule {
    fn matches_name(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|p| p.matches(namespace))
    }

    /// The role a secret gets under this rule, or `None` when the role it names is refused.
    fn role(&self, named: Option<&str>) -> Result<Option<String>, ()> {
        match named {
            None => Ok(self.default_role.clone()),
            Some(role)
                if self.default_role.as_deref() == Some(role)
                    || self.role_arns.iter().any(|p| p.matches(role)) =>
            {
                Ok(Some(role.to_string()))
            }
            Some(_) => Err(()),
        }
    }
}

/// Where the rules came from, which decides how refusals name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--allowed-namespaces`, `--allowed-registries`, `--allowed-role-arns`.
    Flags,
    /// A policy file, by path.
    File(String),
}

/// A rule, named for people and for the `rule` metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleRef {
    /// The `--allowed-*` flags' one rule.
    Flags,
    /// A rule of a policy file: its index in `rules` and its name.
    File { index: usize, name: Option<String> },
}

impl RuleRef {
    /// Bounded by the number of rules: the name, else `rules[N]`; `flags` for the flags.
    pub fn metric_label(&self) -> String {
        match self {
            RuleRef::Flags => "flags".into(),
            RuleRef::File {
                name: Some(name), ..
            } => name.clone(),
            RuleRef::File { index, name: None } => format!("rules[{index}]"),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Flags => f.write_str("the --allowed-* flags"),
            RuleRef::File {
                index,
                name: Some(name),
            } => write!(f, "rule {name} (rules[{index}])"),
            RuleRef::File { index, name: None } => write!(f, "rules[{index}]"),
        }
    }
}

/// What a namespace's labels are, as far as the caller knows.
#[derive(Clone, Copy, Debug)]
pub enum Labels<'a> {
    Known(&'a BTreeMap<String, String>),
    /// Not looked up, or the lookup failed (the reason).
    Unknown(&'a str),
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No rule matches the namespace (for the flags: not in `--allowed-namespaces`).
    Namespace {
        namespace: String,
    },
    Registry {
        registry: String,
    },
    Role {
        role: String,
    },
    /// The matching rule selects namespaces by label and the labels could not be read.
    Labels {
        namespace: String,
        error: String,
    },
}

impl Reason {
    /// What was refused, for the `reason` metric label.
    pub fn metric_label(&self) -> RefusalKind {
        match self {
            Reason::Namespace { .. } => RefusalKind::Namespace,
            Reason::Registry { .. } => RefusalKind::Registry,
            Reason::Role { .. } => RefusalKind::Role,
            Reason::Labels { .. } => RefusalKind::Labels,
        }
    }
}

/// What a refusal refused: a [`Reason`] without its details.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RefusalKind {
    Namespace,
    Registry,
    Role,
    Labels,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 4] = [
        RefusalKind::Namespace,
        RefusalKind::Registry,
        RefusalKind::Role,
        RefusalKind::Labels,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Namespace => "namespace",
            RefusalKind::Registry => "registry",
            RefusalKind::Role => "role",
            RefusalKind::Labels => "labels",
        }
    }
}

/// How every refusal's message starts ([`Refusal`]'s `Display`), in the `error` annotation too.
pub const REFUSED: &str = "refused by policy";

/// Whether a message (an `error` annotation) is a policy refusal's.
pub fn is_refusal(message: &str) -> bool {
    message.starts_with(REFUSED)
}

/// A refusal: the rule that refused (none when no rule matched a policy file's namespace),
/// why, and what the rule allows, ready to be shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Option<RuleRef>,
    pub reason: Reason,
    /// The rule's patterns for what was refused, as shown (`argocd,team-*`; `none`).
    pub allowed: String,
}

impl Refusal {
    /// The `rule` metric label: the rule's, or `none` when no rule matched.
    pub fn rule_label(&self) -> String {
        self.rule
            .as_ref()
            .map_or_else(|| "none".into(), RuleRef::metric_label)
    }
}

/// Every refusal starts with `refused by policy` and names the rule, so the annotation, the
/// warning, the refresher's Event and `status` all say which rule to look at.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed = &self.allowed;
        match (&self.rule, &self.reason) {
            (Some(RuleRef::Flags), Reason::Namespace { namespace }) => write!(
                f,
                "{REFUSED}: namespace {namespace} is not in --allowed-namespaces ({allowed})"
            ),
            (Some(RuleRef::Flags), Reason::Registry { registry }) => write!(
                f,
                "{REFUSED}: registry {registry} is not in --allowed-registries ({allowed})"
            ),
            (Some(RuleRef::Flags), Reason::Role { role }) => write!(
                f,
                "{REFUSED}: role {role} is not in --allowed-role-arns ({allowed})"
            ),
            (_, Reason::Namespace { namespace }) => {
                write!(f, "{REFUSED}: namespace {namespace} matches no rule")
            }
            (Some(rule), Reason::Registry { registry }) => write!(
                f,
                "{REFUSED} {rule}: registry {registry} is not in its registries ({allowed})"
            ),
            (Some(rule), Reason::Role { role }) => write!(
                f,
                "{REFUSED} {rule}: role {role} is neither its defaultRole nor in its roleArns ({allowed})"
            ),
            (rule, Reason::Labels { namespace, error }) => {
                let rule = rule.as_ref().map(|r| format!(" {r}")).unwrap_or_default();
                write!(
                    f,
                    "{REFUSED}{rule}: it selects namespaces by label ({allowed}), and the labels of namespace {namespace} cannot be read: {error}"
                )
            }
            (None, reason) => write!(f, "{REFUSED}: {reason:?}"),
        }
    }
}

/// The answer for one secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by `rule`; `role` is the one to get tokens as: the secret's, else the rule's
    /// default, else none (the webhook's own identity).
    Allowed {
        rule: RuleRef,
        role: Option<String>,
    },
    Refused(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub origin: Origin,
}

impl Default for Policy {
    /// The flags' defaults: every namespace and registry; no per-secret role.
    fn default() -> Self {
        Policy::from_flags(
            vec![Pattern::new("*")],
            vec![RegistryPattern::any()],
            Vec::new(),
        )
    }
}

pub fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Most rules a policy file may hold: the `rule` metric label has one value per rule.
pub const MAX_RULES: usize = 500;
/// Largest policy file read.
pub const MAX_FILE_BYTES: usize = 1 << 20;

impl Policy {
    /// The `--allowed-*` flags as one rule.
    pub fn from_flags(
        namespaces: Vec<Pattern>,
        registries: Vec<RegistryPattern>,
        role_arns: Vec<Pattern>,
    ) -> Self {
        Policy {
            rules: vec![Rule {
                name: None,
                namespaces,
                namespace_selector: None,
                registries,
                role_arns,
                default_role: None,
            }],
            origin: Origin::Flags,
        }
    }

    /// Whether deciding for `namespace` needs its labels: a rule that matches its name has a
    /// selector. Only then does the webhook look them up.
    pub fn needs_labels(&self, namespace: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.namespace_selector.is_some() && r.matches_name(namespace))
    }

    /// Whether some rule may cover `namespace` (by name; selectors aside). The refresher skips
    /// namespaces no rule can cover.
    pub fn may_match_namespace(&self, namespace: &str) -> bool {
        self.rules.iter().any(|r| r.matches_name(namespace))
    }

    /// The decision for a secret in `namespace` that needs tokens for `registries` and names
    /// `role_arn` (if any). The first rule whose namespace patterns and selector match decides;
    /// a rule with a selector whose labels are unknown refuses rather than being skipped, so
    /// that a later, wider rule never applies by accident.
    pub fn decide(
        &self,
        namespace: &str,
        labels: Labels<'_>,
        registries: &[Registry],
        role_arn: Option<&str>,
    ) -> Decision {
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matches_name(namespace) {
                continue;
            }
            let rule_ref = self.rule_ref(index, rule);
            if let Some(selector) = &rule.namespace_selector {
                match labels {
                    Labels::Known(l) if selector.matches(l) => {}
                    Labels::Known(_) => continue,
                    Labels::Unknown(error) => {
                        return Decision::Refused(Refusal {
                            rule: Some(rule_ref),
                            reason: Reason::Labels {
                                namespace: namespace.to_string(),
                                error: error.to_string(),
                            },
                            allowed: selector.to_string(),
                        });
                    }
                }
            }
            if let Some(r) = registries
                .iter()
                .find(|r| !rule.registries.iter().any(|p| p.matches(r)))
            {
                return Decision::Refused(Refusal {
                    rule: Some(rule_ref),
                    reason: Reason::Registry {
                        registry: r.host.clone(),
                    },
                    allowed: list(&rule.registries),
                });
            }
            return match rule.role(role_arn) {
                Ok(role) => Decision::Allowed {
                    rule: rule_ref,
                    role,
                },
                Err(()) => Decision::Refused(Refusal {
                    rule: Some(rule_ref),
                    reason: Reason::Role {
                        role: role_arn.unwrap_or_default().to_string(),
                    },
                    allowed: list(&rule.role_arns),
                }),
            };
        }
        Decision::Refused(match self.origin {
            Origin::Flags => Refusal {
                rule: Some(RuleRef::Flags),
                reason: Reason::Namespace {
                    namespace: namespace.to_string(),
                },
                allowed: self
                    .rules
                    .first()
                    .map(|r| list(&r.namespaces))
                    .unwrap_or_else(|| "none".into()),
            },
            Origin::File(_) => Refusal {
                rule: None,
                reason: Reason::Namespace {
                    namespace: namespace.to_string(),
                },
                allowed: String::new(),
            },
        })
    }

    fn rule_ref(&self, index: usize, rule: &Rule) -> RuleRef {
        match self.origin {
            Origin::Flags => RuleRef::Flags,
            Origin::File(_) => RuleRef::File {
                index,
                name: rule.name.clone(),
            },
        }
    }

    /// One line for the start-up and reload logs.
    pub fn describe(&self) -> String {
        match (&self.origin, self.rules.as_slice()) {
            (Origin::Flags, [r]) => format!(
                "namespaces={} registries={} role_arns={}",
                list(&r.namespaces),
                list(&r.registries),
                list(&r.role_arns)
            ),
            (origin, rules) => {
                let names: Vec<String> = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| r.name.clone().unwrap_or_else(|| format!("rules[{i}]")))
                    .collect();
                let file = match origin {
                    Origin::File(p) => p.as_str(),
                    Origin::Flags => "flags",
                };
                format!("file={file} rules={}", names.join(","))
            }
        }
    }
}

/// The policy in force, shared by the webhook and the refresher and replaced whole when the
/// policy file changes: a request sees one version from start to end.
#[derive(Clone, Debug)]
pub struct SharedPolicy(Arc<RwLock<Arc<Policy>>>);

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        SharedPolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    pub fn current(&self) -> Arc<Policy> {
        // A poisoned lock still holds a whole policy (it is only ever replaced whole).
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}

impl From<Policy> for SharedPolicy {
    fn from(policy: Policy) -> Self {
        SharedPolicy::new(policy)
    }
}

/// A request `status` is told some of the flags for: the parts it knows are checked, each with
/// the flags' own wording.
pub fn check_flags(
    namespaces: Option<&[Pattern]>,
    registries: Option<&[RegistryPattern]>,
    role_arns: Option<&[Pattern]>,
    namespace: &str,
    hosts: &[Registry],
    role_arn: Option<&str>,
) -> Vec<Refusal> {
    let mut out = Vec::new();
    if let Some(ns) = namespaces
        && !ns.iter().any(|p| p.matches(namespace))
    {
        out.push(Refusal {
            rule: Some(RuleRef::Flags),
            reason: Reason::Namespace {
                namespace: namespace.to_string(),
            },
            allowed: list(ns),
        });
    }
    if let Some(regs) = registries {
        for r in hosts.iter().filter(|r| !regs.iter().any(|p| p.matches(r))) {
            out.push(Refusal {
                rule: Some(RuleRef::Flags),
                reason: Reason::Registry {
                    registry: r.host.clone(),
                },
                allowed: list(regs),
            });
        }
    }
    if let (Some(roles), Some(role)) = (role_arns, role_arn)
        && !roles.iter().any(|p| p.matches(role))
    {
        out.push(Refusal {
            rule: Some(RuleRef::Flags),
            reason: Reason::Role {
                role: role.to_string(),
            },
            allowed: list(roles),
        });
    }
    out
}

#[cfg(test)]
mod tests;
