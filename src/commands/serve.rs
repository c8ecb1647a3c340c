//! `serve`: the webhook, its admin server, the refresher and the files it re-reads, started in
//! order and stopped in order.

use std::sync::Arc;

use anyhow::anyhow;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::Webhook;
use crate::aws::ecr::{EcrTokenSource, load_sdk_config};
use crate::aws::token::{CacheConfig, TokenCache};
use crate::commands::cli::{ServeArgs, TlsMode};
use crate::commands::reloads;
use crate::events::EventSink;
use crate::logging;
use crate::metrics::{Metrics, RenewalOutcome};
use crate::policy::SharedPolicy;
use crate::policy::file::PolicyReloader;
use crate::policy::namespaces::{KubeNamespaceLabels, LabelsError};
use crate::refresher::leader::{Elector, LeaseConfig};
use crate::refresher::{Refresher, RefresherConfig};
use crate::server::{self, Listen};
use crate::tls::client_auth::ClientAuth;
use crate::tls::self_managed::{Check, Material, SelfManaged, SelfManagedConfig};
use crate::tls::{self, PairReloader};

/// Runs until SIGTERM or SIGINT, or until a server task fails. Errors are only printed (by
/// `main`), hence `anyhow`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut signals = Signals::register();
    let (policy, policy_bytes) = args.policy.load_policy()?;
    tracing::info!(policy = %policy.describe(), failure_mode = args.tokens.failure_mode.label(),
        refresh_margin = %humantime::format_duration(args.tokens.refresh_margin), "starting");
    // The webhook and the refresher share the policy in force; a reloaded file replaces it.
    let policy = SharedPolicy::new(policy);
    // Self-managed TLS, the refresher and the policy file's namespace selectors share one
    // client; with none of them, none is made.
    let kube = if args.tls.tls_self_managed
        || args.refresher.refresher
        || args.policy.policy_file.is_some()
    {
        kube_client(&args).await
    } else {
        Err(NoClient::NotNeeded)
    };
    let metrics = Arc::new(Metrics::default());
    let client_auth = match &args.tls.tls_client_ca_file {
        Some(ca) => {
            let auth = ClientAuth::load(ca, &args.tls.tls_client_names)?;
            tracing::info!(ca = %ca.display(), names = %logging::list(auth.names()),
                "caller authentication: /mutate serves only clients with a certificate from this CA");
            Some(auth)
        }
        None => None,
    };
    let verifier: tls::ClientVerifier = client_auth.clone().map(|a| a as _);
    let tls = start_tls(&args, &kube, &metrics, verifier).await?;

    let (webhook, tokens) = webhook(&args, &kube, &policy, &metrics).await;
    if let (Some(path), Some(bytes)) = (&args.policy.policy_file, policy_bytes) {
        reloads::policy(
            policy.clone(),
            PolicyReloader::new(path, bytes),
            args.policy_reload_interval,
            metrics.clone(),
        );
    }
    let listen = Listen {
        addr: args.listen.listen,
        metrics_addr: args.listen.metrics_listen,
    };
    let mut running = server::start(listen, tls.config, webhook, metrics.clone(), tokens).await?;
    if let Some(reloader) = tls.reloader {
        reloads::tls_pair(
            running.tls.clone(),
            reloader,
            args.tls.tls_reload_interval,
            metrics.clone(),
        );
    }
    if let Some(auth) = client_auth {
        reloads::client_ca(auth, args.tls.tls_reload_interval, metrics.clone());
    }
    if let Some((sm, material)) = tls.self_managed {
        sm.spawn_maintainer(running.tls.clone(), material, metrics.clone());
    }
    let (stop, stopped) = watch::channel(false);
    let mut background = if args.refresher.refresher {
        start_refresher(&args, kube, policy, metrics, stopped).await
    } else {
        tracing::info!("refresher off (--refresher=false)");
        None
    };
    let waited = match background.as_mut() {
        Some(task) => tokio::select! {
            r = running.wait(signals.recv()) => r.map_err(anyhow::Error::from),
            r = task => Err(anyhow!("refresher stopped unexpectedly: {r:?}")),
        },
        None => running.wait(signals.recv()).await.map_err(Into::into),
    };
    // Stop touching and give the lease up first, then drain admission requests.
    let _ = stop.send(true);
    running.set_unready();
    let shutdown = &args.shutdown;
    if waited.is_ok() && !shutdown.shutdown_delay.is_zero() {
        // Endpoints controllers and kube-proxy take a moment to drop the pod; the API server
        // may still send requests here until they do.
        tracing::info!(delay = %humantime::format_duration(shutdown.shutdown_delay),
            "shutting down: unready, still answering until the delay ends");
        tokio::select! {
            _ = tokio::time::sleep(shutdown.shutdown_delay) => {}
            _ = signals.recv() => tracing::info!("second signal: delay cut short"),
        }
    }
    tracing::info!(grace = %humantime::format_duration(shutdown.shutdown_grace),
        "shutting down: finishing in-flight requests");
    let drained = running.shutdown(shutdown.shutdown_grace).await;
    if let Some(task) = background {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    waited?;
    drained?;
    tracing::info!("stopped");
    Ok(())
}

/// The webhook: tokens from ECR through the cache, the policy in force, Events and namespace
/// labels with the process's Kubernetes client when it has one.
async fn webhook(
    args: &ServeArgs,
    kube: &Result<(kube::Client, String), NoClient>,
    policy: &SharedPolicy,
    metrics: &Arc<Metrics>,
) -> (Arc<Webhook>, Arc<TokenCache>) {
    let source = Arc::new(EcrTokenSource::new(load_sdk_config().await));
    let cache_config = CacheConfig {
        refresh_margin: args.tokens.refresh_margin,
        backoff: args.tokens.ecr_backoff,
        ..CacheConfig::default()
    };
    let tokens = Arc::new(TokenCache::new(source, cache_config, metrics.clone()));
    let mut webhook = Webhook::new(
        tokens.clone(),
        policy.clone(),
        args.tokens.failure_mode,
        metrics.clone(),
    );
    // Events on secrets the webhook fails open on or refuses, with the client the binary
    // already has; without one, none (said once here).
    match kube {
        Ok((client, _)) => {
            webhook = webhook.with_events(EventSink::new(
                client.clone(),
                args.refresher.secret_namespaces(),
            ));
        }
        Err(NoClient::NotNeeded) => tracing::info!(
            "no Kubernetes client (no refresher, self-managed TLS or policy file): the webhook records no Events"
        ),
        Err(e) => {
            tracing::info!(reason = %e, "no Kubernetes client: the webhook records no Events")
        }
    }
    if args.policy.policy_file.is_some() {
        // Namespace labels only for rules with a namespaceSelector: read on demand, cached.
        let client = match kube {
            Ok((client, _)) => Ok(client.clone()),
            Err(e) => Err(LabelsError::NoClient(e.to_string())),
        };
        webhook = webhook.with_namespace_labels(Arc::new(KubeNamespaceLabels::new(
            client,
            args.namespace_labels_ttl,
        )));
    }
    (Arc::new(webhook), tokens)
}

/// Why `serve` has no Kubernetes client; each part that needed one says so with this.
/// `NotNeeded`: no part asked for one.
#[derive(Clone, Debug, thiserror::Error)]
enum NoClient {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Config(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("no Kubernetes client")]
    NotNeeded,
}

/// The serving configuration of the TLS mode chosen, and what keeps it current once the
/// server runs: the files' reloader, or the self-managed pair's maintainer.
struct Tls {
    config: Arc<rustls::ServerConfig>,
    reloader: Option<PairReloader>,
    self_managed: Option<(SelfManaged, Material)>,
}

async fn start_tls(
    args: &ServeArgs,
    kube: &Result<(kube::Client, String), NoClient>,
    metrics: &Metrics,
    verifier: tls::ClientVerifier,
) -> anyhow::Result<Tls> {
    let Some(mode) = args.tls.mode() else {
        return Err(anyhow!(
            "--tls-cert-file and --tls-key-file, --tls-self-signed or --tls-self-managed is required"
        ));
    };
    let tls = match mode {
        TlsMode::SelfManaged => {
            let (sm, material) =
                start_self_managed(args, kube.clone(), metrics, verifier.clone()).await?;
            metrics.set_tls_not_after(material.not_after);
            Tls {
                config: material.server_config_with(verifier)?,
                reloader: None,
                self_managed: Some((sm, material)),
            }
        }
        TlsMode::SelfSigned { dir } => {
            let names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
            let generated = tls::generate(&names, std::time::Duration::from_secs(7 * 24 * 3600))?;
            tls::write_dir(&dir, &generated)?;
            if let Ok(t) = tls::not_after(generated.cert_pem.as_bytes(), "self-signed") {
                metrics.set_tls_not_after(t);
            }
            tracing::info!(ca = %dir.join("ca.crt").display(), "self-signed TLS: trust this CA to call the webhook");
            let config = tls::server_config_with(
                generated.cert_pem.as_bytes(),
                generated.key_pem.as_bytes(),
                "self-signed",
                verifier,
            )?;
            Tls {
                config,
                reloader: None,
                self_managed: None,
            }
        }
        TlsMode::Files { cert, key } => {
            let (pair, reloader) = PairReloader::load(cert, key, verifier)?;
            if let Some(t) = pair.not_after {
                metrics.set_tls_not_after(t);
            }
            Tls {
                config: pair.config,
                reloader: Some(reloader),
                self_managed: None,
            }
        }
    };
    Ok(tls)
}

/// A Kubernetes client (in-cluster or kubeconfig) and the webhook's own namespace.
async fn kube_client(args: &ServeArgs) -> Result<(kube::Client, String), NoClient> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| NoClient::Config(e.to_string()))?;
    // --namespace, else the pod's (downward API), else the service account's or kubeconfig's.
    let namespace = args
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| NoClient::Client(e.to_string()))?;
    Ok((client, namespace))
}

/// Loads, renews or creates the self-managed pair and injects its CA. Without the Kubernetes
/// API there is nothing to serve with, so failures here stop the process.
async fn start_self_managed(
    args: &ServeArgs,
    kube: Result<(kube::Client, String), NoClient>,
    metrics: &Metrics,
    client_auth: tls::ClientVerifier,
) -> anyhow::Result<(SelfManaged, Material)> {
    let (client, namespace) = kube.map_err(|e| anyhow!("--tls-self-managed: {e}"))?;
    let names = tls::service_names(&args.tls.service, &namespace);
    let cfg = SelfManagedConfig {
        secret_name: args.tls.tls_secret_name.clone(),
        namespace,
        webhook_config_name: args.tls.webhook_config_name.clone(),
        names,
        ..SelfManagedConfig::default()
    };
    tracing::info!(secret = %cfg.secret_name, namespace = %cfg.namespace,
        webhook_config = %cfg.webhook_config_name, names = %logging::list(&cfg.names), "self-managed TLS");
    let sm = SelfManaged::new(client, cfg).with_client_auth(client_auth);
    let material = match sm.ensure().await {
        Ok(Check::Current(m)) => m,
        // Serving the stored pair beats a crash loop; the maintainer retries the renewal.
        Ok(Check::Stale { material, error }) => {
            metrics.tls_renewal(RenewalOutcome::Failed);
            tracing::warn!(error = %error, not_after = %crate::time::rfc3339(material.not_after),
                "cannot store the renewed certificate; serving the stored one, which is still valid, and retrying");
            material
        }
        Err(e) => return Err(anyhow!("--tls-self-managed: nothing valid to serve: {e}")),
    };
    // The configuration may not exist yet (it is often applied after the Deployment); the
    // maintainer keeps trying, and failurePolicy Ignore covers the gap.
    if let Err(e) = sm.inject_ca_bundle(&material).await {
        tracing::warn!(error = %e, "cannot inject the caBundle yet; will retry");
    }
    Ok((sm, material))
}

/// Starts the refresher (and leader election) if a cluster is configured. Without one the
/// webhook keeps serving and says why there is no refresher.
async fn start_refresher(
    args: &ServeArgs,
    kube: Result<(kube::Client, String), NoClient>,
    policy: SharedPolicy,
    metrics: Arc<Metrics>,
    stopped: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let (client, own_namespace) = match kube {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "refresher off: the webhook keeps serving");
            return None;
        }
    };
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let (leading_tx, leading) = watch::channel(false);
    let lease_args = &args.lease;
    let elector = if lease_args.leader_election.unwrap_or(in_cluster) {
        let namespace = lease_args.lease_namespace.clone().unwrap_or(own_namespace);
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "ecr-token-webhook".into());
        let identity = format!("{identity}_{}", std::process::id());
        let lease = LeaseConfig {
            name: lease_args.lease_name.clone(),
            namespace,
            identity,
            lease_duration: lease_args.lease_duration,
            renew_deadline: lease_args.lease_renew_deadline,
            retry_period: lease_args.lease_retry_period,
        };
        tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "leader election on");
        Some(tokio::spawn(Elector::new(client.clone(), lease).run(
            leading_tx,
            stopped.clone(),
            metrics.clone(),
        )))
    } else {
        tracing::info!("leader election off: this replica touches secrets");
        let _ = leading_tx.send(true);
        metrics.set_leader(true);
        None
    };
    let cfg = RefresherConfig {
        interval: args.refresher.refresh_interval,
        margin: args.tokens.refresh_margin,
        touch_qps: args.refresher.touch_qps,
        page_size: 500,
        spread_window: RefresherConfig::default_spread(args.tokens.refresh_margin),
        retry_base: std::time::Duration::from_secs(10),
        retry_max: std::time::Duration::from_secs(600),
        policy,
        namespaces: args.refresher.secret_namespaces(),
    };
    if cfg.namespaces.is_empty() {
        tracing::info!("refresher lists opted-in secrets in all namespaces");
    } else {
        tracing::info!(namespaces = %logging::list(&cfg.namespaces), "refresher lists opted-in secrets in these namespaces only");
    }
    let refresher = Refresher::new(client, cfg, metrics);
    Some(tokio::spawn(async move {
        refresher.run(leading, stopped).await;
        if let Some(e) = elector {
            let _ = e.await;
        }
    }))
}

/// SIGTERM and SIGINT, registered once at start: a signal that arrives while the process is
/// still starting is then a clean shutdown, not the default action (exit without draining).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) {
        match (&mut self.term, &mut self.int) {
            (Some(term), Some(int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            },
            // Without signal handlers the process can still be killed; wait on Ctrl-C alone.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
