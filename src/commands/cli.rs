//! Command-line flags. Every flag of `serve` and `certs` also reads an `ECR_TOKEN_WEBHOOK_*`
//! environment variable; `status` reads like kubectl (see [`StatusArgs`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission::FailureMode;
use crate::policy::{Pattern, Policy, RegistryPattern};
use crate::time::parse_duration;

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

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
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
    /// PEM certificate chain for the webhook's TLS.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_CERT_FILE",
        requires = "tls_key_file",
        required_unless_present_any = ["tls_self_signed", "tls_self_managed"]
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the webhook's TLS.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// How often the TLS files are checked for a new certificate (cert-manager rotation).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = duration)]
    pub tls_reload_interval: Duration,
    /// Generate a CA and a certificate for localhost at start (local runs only).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED", conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub tls_self_signed: bool,
    /// Where --tls-self-signed writes ca.crt, tls.crt and tls.key.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR")]
    pub tls_self_signed_dir: Option<PathBuf>,
    /// Keep a CA and serving certificate in a Secret, inject the CA into the webhook
    /// configuration and renew before expiry (clusters without cert-manager).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED",
        conflicts_with_all = ["tls_cert_file", "tls_key_file", "tls_self_signed"])]
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
    /// The webhook's own namespace (its Service, TLS Secret and Lease). Default: the pod's
    /// (POD_NAMESPACE or the service account's), else `default`.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// What to answer when no token can be had: allow with an error annotation, or deny.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_FAILURE_MODE",
        value_enum,
        default_value = "open"
    )]
    pub failure_mode: FailureMode,
    /// Tokens with less than this left are replaced; a token written always has more.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN", default_value = "6h", value_parser = duration)]
    pub refresh_margin: Duration,
    /// Namespaces whose secrets may receive tokens (patterns with `*`, comma-separated).
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_namespaces: Vec<String>,
    /// Registries that may receive tokens: ACCOUNT[:REGION] patterns, comma-separated.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_registries: Vec<String>,
    /// Role ARNs a secret may name in ecr-token-webhook/role-arn (patterns); none by default.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS",
        value_delimiter = ','
    )]
    pub allowed_role_arns: Vec<String>,
    /// A policy file (YAML, usually a mounted ConfigMap) with ordered rules per namespace; it
    /// replaces the three --allowed-* flags. Reloaded when its content changes.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// How often the policy file is checked for changes.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_POLICY_RELOAD_INTERVAL", default_value = "10s", value_parser = duration)]
    pub policy_reload_interval: Duration,
    /// How long a namespace's labels are cached for the policy file's namespaceSelectors.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_NAMESPACE_LABELS_TTL", default_value = "30s", value_parser = duration)]
    pub namespace_labels_ttl: Duration,
    /// Namespaced mode: the refresher lists opted-in secrets only in these namespaces
    /// (comma-separated names), so it needs RBAC on secrets and events only there. Empty: all
    /// namespaces (a cluster-wide list).
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_SECRET_NAMESPACES",
        value_delimiter = ','
    )]
    pub secret_namespaces: Vec<String>,
    /// First pause after a failed ECR call before ECR is asked again (doubles up to 1m).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_ECR_BACKOFF", default_value = "2s", value_parser = duration)]
    pub ecr_backoff: Duration,
    /// Run the refresher, which touches opted-in secrets before their tokens expire.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESHER", default_value_t = true, action = clap::ArgAction::Set)]
    pub refresher: bool,
    /// Time between refresher passes over the opted-in secrets.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_INTERVAL", default_value = "1m", value_parser = duration)]
    pub refresh_interval: Duration,
    /// Touches per second, at most (spread with jitter).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_TOUCH_QPS", default_value_t = 5.0)]
    pub touch_qps: f64,
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
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops touching.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub lease_renew_deadline: Duration,
    /// How often candidates try to acquire or renew the Lease.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub lease_retry_period: Duration,
    /// After SIGTERM, /readyz fails at once but the webhook keeps answering for this long, so
    /// the pod leaves the Service's endpoints before it stops accepting (in a cluster: a few
    /// seconds; it replaces a preStop sleep, which Kubernetes before 1.30 lacks).
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the webhook stops accepting.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_SHUTDOWN_GRACE", default_value = "15s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
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

    /// The policy of the `--allowed-*` flags, or of `--policy-file`, read now. A file replaces
    /// the flags: given together with a flag at other than its default, it is refused, so no
    /// setting is ever silently ignored.
    pub fn policy(&self) -> Result<Policy, String> {
        self.load_policy().map(|(p, _)| p)
    }

    /// [`ServeArgs::policy`], with the policy file's content as read (for the reloader).
    pub fn load_policy(&self) -> Result<(Policy, Option<Vec<u8>>), String> {
        let flags = flag_policy(
            &self.allowed_namespaces,
            &self.allowed_registries,
            &self.allowed_role_arns,
        )?;
        let Some(path) = &self.policy_file else {
            return Ok((flags, None));
        };
        if flags != Policy::default() {
            return Err(format!(
                "--policy-file {} replaces --allowed-namespaces, --allowed-registries and \
                 --allowed-role-arns; leave those at their defaults (*, * and none) or unset \
                 (ECR_TOKEN_WEBHOOK_ALLOWED_*) and write the rules in the file",
                path.display()
            ));
        }
        crate::policy::file::load(path)
            .map(|(policy, bytes)| (policy, Some(bytes)))
            .map_err(|e| e.to_string())
    }
}

/// The `--allowed-*` flags as the one-rule policy.
fn flag_policy(
    namespaces: &[String],
    registries: &[String],
    role_arns: &[String],
) -> Result<Policy, String> {
    let registries = registries
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| RegistryPattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Policy::from_flags(
        patterns(namespaces),
        registries,
        patterns(role_arns),
    ))
}

fn patterns(v: &[String]) -> Vec<Pattern> {
    v.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(Pattern::new)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `status` reads like kubectl: `-n NS`, `-A`, a NAME, `-o json`. Its namespace flag is the
/// secrets' namespace, so it reads no environment variable; the flags that describe the
/// webhook read the same variables as `serve`, so the webhook's environment configures both.
#[derive(Debug, Args)]
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
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN", default_value = "6h", value_parser = duration)]
    pub refresh_margin: Duration,
    /// The webhook's own namespace: its configuration's namespaceSelector leaves it out (with
    /// kube-system), so secrets there never get tokens.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_NAMESPACE",
        default_value = "ecr-token-webhook"
    )]
    pub webhook_namespace: String,
    /// The webhook's --allowed-namespaces, to check secrets against. Default: not checked.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES",
        value_delimiter = ','
    )]
    pub allowed_namespaces: Vec<String>,
    /// The webhook's --allowed-registries, to check secrets against. Default: not checked.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    pub allowed_registries: Vec<String>,
    /// The webhook's --allowed-role-arns, to check secrets against. Default: not checked.
    #[arg(
        long,
        env = "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS",
        value_delimiter = ','
    )]
    pub allowed_role_arns: Vec<String>,
    /// The webhook's --policy-file (a local copy, e.g. from `kubectl get configmap`), to check
    /// secrets against, naming the rule that refuses. Default: not checked.
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
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

impl StatusArgs {
    /// The parts of the webhook's policy given; an empty list means "not given".
    pub fn known(&self) -> Result<Known, String> {
        let patterns = |v: &[String]| -> Option<Vec<Pattern>> {
            let p: Vec<Pattern> = v
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(Pattern::new)
                .collect();
            (!p.is_empty()).then_some(p)
        };
        let registries = self
            .allowed_registries
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| RegistryPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut known = Known {
            namespaces: patterns(&self.allowed_namespaces),
            registries: (!registries.is_empty()).then_some(registries),
            role_arns: patterns(&self.allowed_role_arns),
            policy: None,
        };
        if let Some(path) = &self.policy_file {
            // As for serve: the file replaces the flags, which may only say their defaults.
            let defaults = known
                .namespaces
                .as_ref()
                .is_none_or(|n| n == &[Pattern::new("*")])
                && known
                    .registries
                    .as_ref()
                    .is_none_or(|r| r == &[RegistryPattern::any()])
                && known.role_arns.is_none();
            if !defaults {
                return Err(format!(
                    "--policy-file {} replaces the --allowed-* flags; give one or the other",
                    path.display()
                ));
            }
            known = Known {
                policy: Some(
                    crate::policy::file::load(path)
                        .map_err(|e| e.to_string())?
                        .0,
                ),
                ..Default::default()
            };
        }
        Ok(known)
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
    #[arg(long, env = "ECR_TOKEN_WEBHOOK_CERTS_VALIDITY", default_value = "8760h", value_parser = duration)]
    pub validity: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["ecr-token-webhook", "serve", "--tls-self-signed"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(s.metrics_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(s.refresh_margin, Duration::from_secs(6 * 3600));
        assert_eq!(s.failure_mode, FailureMode::Open);
        assert_eq!(s.policy().unwrap(), Policy::default());
        assert!(
            s.secret_namespaces().is_empty(),
            "all namespaces by default"
        );
        assert_eq!(cli.log.log_format, LogFormat::Json);
    }

    #[test]
    fn flags_parse_lists_and_durations() {
        let cli = Cli::try_parse_from([
            "ecr-token-webhook",
            "serve",
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
            "--refresh-margin",
            "1h30m",
            "--allowed-namespaces",
            "argocd,team-*",
            "--allowed-registries",
            "123456789012:us-*,210987654321",
            "--failure-mode",
            "closed",
            "--secret-namespaces",
            " argocd,,team-a,argocd ",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.refresh_margin, Duration::from_secs(5400));
        assert_eq!(s.allowed_namespaces, ["argocd", "team-*"]);
        assert_eq!(s.policy().unwrap().rules[0].registries.len(), 2);
        assert_eq!(s.failure_mode, FailureMode::Closed);
        assert_eq!(s.secret_namespaces(), ["argocd", "team-a"]);
    }

    #[test]
    fn status_flags_read_like_kubectl() {
        let cli = Cli::try_parse_from(["x", "status"]).unwrap();
        assert_eq!(cli.log_level(), "off", "status prints its own errors");
        let Command::Status(s) = &cli.command else {
            panic!("status")
        };
        assert_eq!((s.name.as_deref(), s.namespace.as_deref()), (None, None));
        assert_eq!(s.output, OutputFormat::Text);
        assert_eq!(s.refresh_margin, Duration::from_secs(6 * 3600));
        assert_eq!(s.webhook_namespace, "ecr-token-webhook");
        let k = s.known().unwrap();
        assert!(k.namespaces.is_none() && k.registries.is_none() && k.role_arns.is_none());

        let cli = Cli::try_parse_from([
            "x",
            "status",
            "-n",
            "apps",
            "pull",
            "-o",
            "json",
            "--allowed-namespaces",
            "argocd, team-*",
            "--allowed-registries",
            "123456789012:eu-*",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.log_level(), "debug");
        let Command::Status(s) = &cli.command else {
            panic!("status")
        };
        assert_eq!(
            (s.name.as_deref(), s.namespace.as_deref()),
            (Some("pull"), Some("apps"))
        );
        assert_eq!(s.output, OutputFormat::Json);
        let k = s.known().unwrap();
        assert_eq!(k.namespaces.unwrap().len(), 2);
        assert_eq!(k.registries.unwrap().len(), 1);
        assert!(k.role_arns.is_none());
        assert!(Cli::try_parse_from(["x", "status", "-A"]).is_ok());

        for args in [
            vec!["x", "status", "-A", "-n", "apps"],
            vec!["x", "status", "-A", "pull"],
            vec!["x", "status", "-o", "yaml"],
            vec!["x", "status", "--refresh-margin", "soon"],
            vec!["x", "status", "a", "b"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
        let cli = Cli::try_parse_from(["x", "status", "--allowed-registries", "a:b:c"]).unwrap();
        let Command::Status(s) = &cli.command else {
            panic!("status")
        };
        assert!(s.known().is_err());
        let cli = Cli::try_parse_from(["x", "serve", "--tls-self-signed"]).unwrap();
        assert_eq!(cli.log_level(), "info");
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            vec!["ecr-token-webhook", "serve"],
            vec!["ecr-token-webhook", "serve", "--tls-cert-file", "c"],
            vec![
                "ecr-token-webhook",
                "serve",
                "--tls-self-signed",
                "--refresh-margin",
                "soon",
            ],
            vec![
                "ecr-token-webhook",
                "serve",
                "--tls-self-signed",
                "--failure-mode",
                "maybe",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "x",
            "serve",
            "--tls-self-signed",
            "--allowed-registries",
            "a:b:c",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert!(s.policy().is_err());
    }

    #[test]
    fn a_policy_file_replaces_the_flags() {
        let dir =
            std::env::temp_dir().join(format!("ecr-token-webhook-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(
            &file,
            "rules: [{name: all, namespaces: ['*'], registries: ['*']}]\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let serve = |extra: &[&str]| {
            let mut args = vec!["x", "serve", "--tls-self-signed", "--policy-file", f];
            args.extend_from_slice(extra);
            let Command::Serve(s) = Cli::try_parse_from(args).unwrap().command else {
                panic!("serve")
            };
            s.policy()
        };
        let p = serve(&[]).unwrap();
        assert_eq!(p.rules[0].name.as_deref(), Some("all"));
        // The flags at their defaults say nothing and may stay (the manifests set them).
        assert!(serve(&["--allowed-namespaces", "*", "--allowed-registries", "*"]).is_ok());
        for flag in [
            ["--allowed-namespaces", "argocd"],
            ["--allowed-registries", "123456789012"],
            ["--allowed-role-arns", "arn:aws:iam::123456789012:role/x"],
        ] {
            let e = serve(&flag).unwrap_err();
            assert!(e.contains("replaces --allowed-namespaces"), "{flag:?}: {e}");
        }
        // status reads the same file, and refuses it beside a flag that says more than serve's
        // default.
        let status = |extra: &[&str]| {
            let mut args = vec!["x", "status", "--policy-file", f];
            args.extend_from_slice(extra);
            let Command::Status(s) = Cli::try_parse_from(args).unwrap().command else {
                panic!("status")
            };
            s.known()
        };
        let k = status(&["--allowed-namespaces", "*"]).unwrap();
        assert_eq!(k.policy.unwrap().rules.len(), 1);
        assert!(k.namespaces.is_none());
        let e = status(&["--allowed-role-arns", "arn:aws:iam::123456789012:role/x"]).unwrap_err();
        assert!(e.contains("replaces the --allowed-* flags"), "{e}");

        std::fs::write(&file, "rules: []\n").unwrap();
        let e = serve(&[]).unwrap_err();
        assert!(e.contains(f) && e.contains("rules is empty"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn caller_authentication_is_off_unless_a_client_ca_is_given() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["x", "serve", "--tls-self-signed"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Serve(s) => (s.tls_client_ca_file, s.tls_client_names),
                _ => panic!("serve"),
            })
        };
        assert_eq!(serve(&[]).unwrap(), (None, vec![]));
        let (ca, names) = serve(&[
            "--tls-client-ca-file",
            "/ca.crt",
            "--tls-client-names",
            "a,b",
        ])
        .unwrap();
        assert_eq!(ca, Some(PathBuf::from("/ca.crt")));
        assert_eq!(names, ["a", "b"]);
        // Names without a CA would check nothing: refused.
        assert!(serve(&["--tls-client-names", "a"]).is_err());
    }
}
