//! The policy flags, written once: `serve` enforces them, `status` checks secrets against them
//! (reading the same environment variables, so the webhook's environment configures both).
//! `serve` gives the lists their defaults (`*`, `*`, none); for `status` a list not given is not
//! checked.

use std::path::PathBuf;

use clap::Args;

use crate::policy::file::PolicyFileError;
use crate::policy::{InvalidRegistryPattern, Pattern, Policy, RegistryPattern};

#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Namespaces whose secrets may receive tokens (patterns with `*`, comma-separated).
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES",
        value_delimiter = ','
    )]
    pub allowed_namespaces: Option<Vec<String>>,
    /// Registries that may receive tokens: ACCOUNT[:REGION] patterns, comma-separated.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    pub allowed_registries: Option<Vec<String>>,
    /// Role ARNs a secret may name in ecr-token-webhook/role-arn (patterns); none by default.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS",
        value_delimiter = ','
    )]
    pub allowed_role_arns: Option<Vec<String>>,
    /// A policy file (YAML, usually a mounted ConfigMap) with ordered rules per namespace; it
    /// replaces the three --allowed-* flags. Reloaded when its content changes.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
}

/// Why the policy flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyArgsError {
    #[error(transparent)]
    Registry(#[from] InvalidRegistryPattern),
    #[error(
        "--policy-file {} replaces --allowed-namespaces, --allowed-registries and \
         --allowed-role-arns; leave those at their defaults (*, * and none) or unset \
         (ECR_TOKEN_WEBHOOK_ALLOWED_*) and write the rules in the file",
        .0.display()
    )]
    FileAndFlags(PathBuf),
    #[error(transparent)]
    File(#[from] PolicyFileError),
}

/// The three lists, parsed; `None` where a flag was not given.
struct Lists {
    namespaces: Option<Vec<Pattern>>,
    registries: Option<Vec<RegistryPattern>>,
    role_arns: Option<Vec<Pattern>>,
}

impl Lists {
    /// The one-rule policy of the flags, a list not given at `serve`'s default.
    fn policy(&self) -> Policy {
        Policy::from_flags(
            self.namespaces
                .clone()
                .unwrap_or_else(|| vec![Pattern::new("*")]),
            self.registries
                .clone()
                .unwrap_or_else(|| vec![RegistryPattern::any()]),
            self.role_arns.clone().unwrap_or_default(),
        )
    }
}

impl PolicyArgs {
    fn lists(&self) -> Result<Lists, PolicyArgsError> {
        let patterns = |v: &Option<Vec<String>>| {
            v.as_ref().map(|v| {
                v.iter()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(Pattern::new)
                    .collect()
            })
        };
        let registries = match &self.allowed_registries {
            None => None,
            Some(v) => Some(
                v.iter()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| RegistryPattern::parse(s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Lists {
            namespaces: patterns(&self.allowed_namespaces),
            registries,
            role_arns: patterns(&self.allowed_role_arns),
        })
    }

    /// Refuses the lists beside a policy file unless they say only `serve`'s defaults, so no
    /// setting is ever silently ignored.
    fn check_beside_file(&self, lists: &Lists) -> Result<(), PolicyArgsError> {
        match &self.policy_file {
            Some(path) if lists.policy() != Policy::default() => {
                Err(PolicyArgsError::FileAndFlags(path.clone()))
            }
            _ => Ok(()),
        }
    }

    /// `serve`'s policy: the `--allowed-*` flags', or `--policy-file`'s, read now.
    pub fn policy(&self) -> Result<Policy, PolicyArgsError> {
        self.load_policy().map(|(p, _)| p)
    }

    /// [`PolicyArgs::policy`], with the policy file's content as read (for the reloader).
    pub fn load_policy(&self) -> Result<(Policy, Option<Vec<u8>>), PolicyArgsError> {
        let lists = self.lists()?;
        self.check_beside_file(&lists)?;
        match &self.policy_file {
            None => Ok((lists.policy(), None)),
            Some(path) => {
                let (policy, bytes) = crate::policy::file::load(path)?;
                Ok((policy, Some(bytes)))
            }
        }
    }

    /// What `status` is told of the webhook's policy. A list given empty is not checked (and
    /// not refused beside a policy file): for `status` it says nothing.
    pub fn known(&self) -> Result<Known, PolicyArgsError> {
        let lists = self.lists()?;
        let lists = Lists {
            namespaces: lists.namespaces.filter(|v| !v.is_empty()),
            registries: lists.registries.filter(|v| !v.is_empty()),
            role_arns: lists.role_arns.filter(|v| !v.is_empty()),
        };
        self.check_beside_file(&lists)?;
        if let Some(path) = &self.policy_file {
            return Ok(Known {
                policy: Some(crate::policy::file::load(path)?.0),
                ..Known::default()
            });
        }
        Ok(Known {
            namespaces: lists.namespaces,
            registries: lists.registries,
            role_arns: lists.role_arns,
            policy: None,
        })
    }
}

/// What `status` knows of the webhook's configuration; `None` where it was not told. A policy
/// file, when given, replaces the three flag lists.
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub namespaces: Option<Vec<Pattern>>,
    pub registries: Option<Vec<RegistryPattern>>,
    pub role_arns: Option<Vec<Pattern>>,
    pub policy: Option<Policy>,
}
