//! `status`'s flags.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::commands::cli::policy::PolicyArgs;
use crate::time::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `status` reads like kubectl: `-n NS`, `-A`, a NAME, `-o json`. Its namespace flag is the
/// secrets' namespace, so it reads no environment variable; the flags that describe the
/// webhook read the same variables as `serve`, so the webhook's environment configures both.
#[derive(Debug, Args)]
// The policy flags are serve's; here they say what to check secrets against, and a flag not
// given is not checked.
#[command(
    mut_arg("allowed_namespaces", |a| a.help(
        "The webhook's --allowed-namespaces, to check secrets against. Default: not checked")),
    mut_arg("allowed_registries", |a| a.help(
        "The webhook's --allowed-registries, to check secrets against. Default: not checked")),
    mut_arg("allowed_role_arns", |a| a.help(
        "The webhook's --allowed-role-arns, to check secrets against. Default: not checked")),
    mut_arg("policy_file", |a| a.help(
        "The webhook's --policy-file (a local copy, e.g. from `kubectl get configmap`), to \
         check secrets against, naming the rule that refuses. Default: not checked")),
)]
pub struct StatusArgs {
    /// One secret by name, diagnosed even without the opt-in label. Its namespace is
    /// --namespace, else the kubeconfig context's.
    pub name: Option<String>,
    /// Only secrets in this namespace. Default: all namespaces.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// All namespaces (the default without --namespace).
    #[arg(short = 'A', long, conflicts_with_all = ["namespace", "name"])]
    pub all_namespaces: bool,
    /// Output format: an aligned table with reasons, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The kubeconfig context to use. Default: the current context (or in-cluster).
    #[arg(long)]
    pub context: Option<String>,
    /// The webhook's --refresh-margin: tokens with less left are due.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN", default_value = "6h", value_parser = parse_duration)]
    pub refresh_margin: Duration,
    /// The webhook's own namespace: its configuration's namespaceSelector leaves it out (with
    /// kube-system), so secrets there never get tokens.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_NAMESPACE",
        default_value = "ecr-token-webhook"
    )]
    pub webhook_namespace: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
}
