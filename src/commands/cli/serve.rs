//! `serve`'s flags, one group per concern: where it listens, TLS, the tokens, the policy, the
//! refresher, its Lease and shutdown. Each group is a heading of `serve --help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::admission::FailureMode;
use crate::commands::cli::policy::PolicyArgs;
use crate::time::parse_duration;

#[derive(Debug, Args)]
// The policy lists' defaults are serve's: `status` shares the flags but checks nothing it is
// not told.
#[command(
    mut_arg("allowed_namespaces", |a| a.default_value("*")),
    mut_arg("allowed_registries", |a| a.default_value("*")),
)]
pub struct ServeArgs {
    #[command(flatten, next_help_heading = "Listen")]
    pub listen: ListenArgs,
    #[command(flatten, next_help_heading = "TLS")]
    pub tls: TlsArgs,
    /// The webhook's own namespace (its Service, TLS Secret and Lease). Default: the pod's
    /// (POD_NAMESPACE or the service account's), else `default`.
    // Under Options: the heading of the group before would otherwise carry on.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_NAMESPACE", help_heading = None)]
    pub namespace: Option<String>,
    #[command(flatten, next_help_heading = "Tokens")]
    pub tokens: TokenArgs,
    #[command(flatten, next_help_heading = "Policy")]
    pub policy: PolicyArgs,
    /// How often the policy file is checked for changes.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_POLICY_RELOAD_INTERVAL", default_value = "10s",
        value_parser = parse_duration, help_heading = "Policy")]
    pub policy_reload_interval: Duration,
    /// How long a namespace's labels are cached for the policy file's namespaceSelectors.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_NAMESPACE_LABELS_TTL", default_value = "30s",
        value_parser = parse_duration, help_heading = "Policy")]
    pub namespace_labels_ttl: Duration,
    #[command(flatten, next_help_heading = "Refresher")]
    pub refresher: RefresherArgs,
    #[command(flatten, next_help_heading = "Leader election")]
    pub lease: LeaseArgs,
    #[command(flatten, next_help_heading = "Shutdown")]
    pub shutdown: ShutdownArgs,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// HTTPS address for POST /mutate.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
}

/// Where the serving certificate comes from: exactly one of the three (clap's group
/// `tls_mode`), read as [`TlsArgs::mode`].
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(
    ArgGroup::new("tls_mode")
        .args(["tls_cert_file", "tls_self_signed", "tls_self_managed"])
        .required(true)
))]
pub struct TlsArgs {
    /// PEM certificate chain for the webhook's TLS.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the webhook's TLS.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_KEY_FILE",
        requires = "tls_cert_file",
        conflicts_with_all = ["tls_self_signed", "tls_self_managed"]
    )]
    pub tls_key_file: Option<PathBuf>,
    /// How often the TLS files are checked for a new certificate (cert-manager rotation).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "10s",
        value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Generate a CA and a certificate for localhost at start (local runs only).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Where --tls-self-signed writes ca.crt, tls.crt and tls.key.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR")]
    pub tls_self_signed_dir: Option<PathBuf>,
    /// Keep a CA and serving certificate in a Secret, inject the CA into the webhook
    /// configuration and renew before expiry (clusters without cert-manager).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED")]
    pub tls_self_managed: bool,
    /// Caller authentication: serve POST /mutate only to TLS clients whose certificate chains
    /// to this CA (PEM), normally the API server's client certificate; others are refused at
    /// the handshake. Reloaded like the serving pair. Off by default (any client is served).
    /// See docs/caller-authentication.md.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// With --tls-client-ca-file: the client certificate must also carry one of these names
    /// (a DNS subject alternative name or the common name), comma-separated. Empty: any
    /// certificate the CA signed.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "tls_client_ca_file"
    )]
    pub tls_client_names: Vec<String>,
    /// Secret that holds the self-managed CA and serving certificate.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_SECRET_NAME",
        default_value = "ecr-token-webhook-self-managed-tls"
    )]
    pub tls_secret_name: String,
    /// MutatingWebhookConfiguration whose caBundle the self-managed mode keeps current.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_WEBHOOK_CONFIG_NAME",
        default_value = "ecr-token-webhook"
    )]
    pub webhook_config_name: String,
    /// The webhook Service's name: the self-managed certificate is issued for its DNS names.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_SERVICE",
        default_value = "ecr-token-webhook"
    )]
    pub service: String,
}

/// The TLS mode the flags chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode<'a> {
    /// A certificate and key from files, re-read when they change (cert-manager).
    Files { cert: &'a Path, key: &'a Path },
    /// A CA and a localhost certificate generated at start, written to `dir`.
    SelfSigned { dir: PathBuf },
    /// A CA and certificate kept in a Secret, the CA injected into the webhook configuration.
    SelfManaged,
}

impl TlsArgs {
    /// The mode chosen. clap's group `tls_mode` lets exactly one through, and the key file
    /// comes with the certificate file; `None` only for arguments built around clap.
    pub fn mode(&self) -> Option<TlsMode<'_>> {
        if self.tls_self_managed {
            return Some(TlsMode::SelfManaged);
        }
        if self.tls_self_signed {
            let dir = self
                .tls_self_signed_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("ecr-token-webhook"));
            return Some(TlsMode::SelfSigned { dir });
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsMode::Files { cert, key }),
            _ => None,
        }
    }
}

/// How tokens are had and what the webhook answers without one.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to answer when no token can be had: allow with an error annotation, or deny.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_FAILURE_MODE",
        value_enum,
        default_value = "open"
    )]
    pub failure_mode: FailureMode,
    /// Tokens with less than this left are replaced; a token written always has more.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN", default_value = "6h", value_parser = parse_duration)]
    pub refresh_margin: Duration,
    /// First pause after a failed ECR call before ECR is asked again (doubles up to 1m).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_ECR_BACKOFF", default_value = "2s", value_parser = parse_duration)]
    pub ecr_backoff: Duration,
}

#[derive(Debug, Args)]
pub struct RefresherArgs {
    /// Run the refresher, which touches opted-in secrets before their tokens expire.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESHER", default_value_t = true, action = clap::ArgAction::Set)]
    pub refresher: bool,
    /// Time between refresher passes over the opted-in secrets.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    /// Touches per second, at most (spread with jitter).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TOUCH_QPS", default_value_t = 5.0)]
    pub touch_qps: f64,
    /// Namespaced mode: the refresher lists opted-in secrets only in these namespaces
    /// (comma-separated names), so it needs RBAC on secrets and events only there. Empty: all
    /// namespaces (a cluster-wide list).
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES",
        value_delimiter = ','
    )]
    pub secret_namespaces: Vec<String>,
}

impl RefresherArgs {
    /// The namespaced mode's namespaces, trimmed, without blanks or repeats.
    pub fn secret_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ns in self.secret_namespaces.iter().map(|s| s.trim()) {
            if !ns.is_empty() && !out.iter().any(|o| o == ns) {
                out.push(ns.to_string());
            }
        }
        out
    }
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Only the holder of a Lease touches secrets. Default: on in a cluster, off outside.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEADER_ELECTION", action = clap::ArgAction::Set)]
    pub leader_election: Option<bool>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_LEASE_NAME",
        default_value = "ecr-token-webhook"
    )]
    pub lease_name: String,
    /// Namespace of the Lease. Default: the webhook's own namespace (see --namespace).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease is honoured without renewal.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops touching.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often candidates try to acquire or renew the Lease.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
}

#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// After SIGTERM, /readyz fails at once but the webhook keeps answering for this long, so
    /// the pod leaves the Service's endpoints before it stops accepting (in a cluster: a few
    /// seconds; it replaces a preStop sleep, which Kubernetes before 1.30 lacks).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the webhook stops accepting.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_SHUTDOWN_GRACE", default_value = "15s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}
