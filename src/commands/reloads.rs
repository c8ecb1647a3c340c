//! What `serve` does when a file it re-reads changes ([`crate::reload`]): the serving pair, the
//! client CA and the policy file each go into service, or are refused, with their metric and
//! log line.

use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, ReloadOutcome};
use crate::policy::SharedPolicy;
use crate::policy::file::PolicyReloader;
use crate::reload::spawn;
use crate::tls::client_auth::ClientAuth;
use crate::tls::{PairReloader, ServingPair};

/// Puts a changed serving pair into `tls`. Live connections keep the pair they started with;
/// new handshakes get the new one.
pub fn tls_pair(
    tls: RustlsConfig,
    reloader: PairReloader,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    spawn(reloader, interval, move |found| match found {
        Ok(ServingPair { config, not_after }) => {
            tls.reload_from_config(config);
            if let Some(t) = not_after {
                metrics.set_tls_not_after(t);
            }
            metrics.tls_reload(ReloadOutcome::Reloaded);
            tracing::info!("reloaded TLS certificate");
        }
        Err(why) => {
            metrics.tls_reload(ReloadOutcome::Refused);
            tracing::warn!(error = %why, "new TLS files refused; the current certificate stays in service");
        }
    })
}

/// Puts a changed client CA into service.
pub fn client_ca(
    auth: Arc<ClientAuth>,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let ca = auth.ca_file().display().to_string();
    spawn(auth, interval, move |found| match found {
        Ok(()) => {
            metrics.tls_reload(ReloadOutcome::Reloaded);
            tracing::info!(ca = %ca, "reloaded the client CA");
        }
        Err(why) => {
            metrics.tls_reload(ReloadOutcome::Refused);
            tracing::warn!(error = %why, "new client CA refused; the CA in service stays");
        }
    })
}

/// Swaps a changed, valid policy file into `shared`.
pub fn policy(
    shared: SharedPolicy,
    reloader: PolicyReloader,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    spawn(reloader, interval, move |found| match found {
        Ok(policy) => {
            // In force and counted before it is announced: a reader of the log line sees both.
            let described = policy.describe();
            shared.replace(policy);
            metrics.policy_reload(ReloadOutcome::Reloaded);
            tracing::info!(policy = %described, "reloaded the policy file");
        }
        Err(why) => {
            metrics.policy_reload(ReloadOutcome::Refused);
            tracing::error!(error = %why, in_force = %shared.current().describe(),
                "refused the changed policy file; the last good policy stays in force");
        }
    })
}
