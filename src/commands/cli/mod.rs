//! Command-line flags. Every flag of `serve` and `certs` also reads an `ECR_TOKEN_WEBHOOK_*`
//! environment variable; `status` reads like kubectl (see [`StatusArgs`]). `serve`'s flags come
//! in groups, one per concern, each its own heading in `--help` ([`serve`]); the policy flags
//! are one group that `serve` and `status` share ([`policy`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::time::parse_duration;

pub mod policy;
pub mod serve;
pub mod status;

pub use policy::{Known, PolicyArgs, PolicyArgsError};
pub use serve::{
    LeaseArgs, ListenArgs, RefresherArgs, ServeArgs, ShutdownArgs, TlsArgs, TlsMode, TokenArgs,
};
pub use status::{OutputFormat, StatusArgs};

#[derive(Debug, Parser)]
#[command(
    name = "ecr-token-webhook",
    version,
    about = "Keeps Amazon ECR tokens fresh in Kubernetes Secrets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook (HTTPS) and metrics (HTTP).
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate for the webhook Service, for clusters without
    /// cert-manager.
    Certs(CertsArgs),
    /// Show the state of opted-in secrets (kind, registries, token expiry, last touch, errors)
    /// with the likely cause of each problem. Uses your kubeconfig. Exit code: 0 when every
    /// secret is fresh or due; 1 when one is expired, no-token, error, outside-policy or (a
    /// secret given by name) not-opted-in; 2 when it cannot tell.
    Status(StatusArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ECR_TOKEN_WEBHOOK_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`) or a tracing directive list. Default: `info`;
    /// `off` for `status`, whose errors are its own output.
    #[arg(long, global = true, env = "ECR_TOKEN_WEBHOOK_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl Cli {
    /// The log filter given, else the command's default.
    pub fn log_level(&self) -> &str {
        match (&self.log.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Command::Status(_)) => "off",
            (None, _) => "info",
        }
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_CERTS_DIR", default_value = "certs")]
    pub out_dir: PathBuf,
    /// The webhook Service's name.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_SERVICE",
        default_value = "ecr-token-webhook"
    )]
    pub service: String,
    /// The webhook Service's namespace.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_NAMESPACE",
        default_value = "ecr-token-webhook"
    )]
    pub namespace: String,
    /// Extra DNS names or IP addresses for the serving certificate.
    #[arg(
        long = "extra-name",
        env = "ECR_TOKEN_WEBHOOK_EXTRA_NAMES",
        value_delimiter = ','
    )]
    pub extra_names: Vec<String>,
    /// Validity of the CA and the certificate.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_CERTS_VALIDITY", default_value = "8760h", value_parser = parse_duration)]
    pub validity: Duration,
}

#[cfg(test)]
mod tests;
