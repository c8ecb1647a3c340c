//! Leader election with a coordination.k8s.io Lease, as client-go does it: the holder renews
//! every retry period; others take over once they have seen no renewal for a lease duration
//! (measured on their own clock, so clock skew between replicas does not matter). The leader
//! gives the lease up on shutdown so a follower takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use tokio::sync::watch;

use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease is honoured without renewal (client-go default 15s).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (default 10s).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (default 2s).
    pub retry_period: Duration,
}

/// What the elector last saw of the lease, and when (on the local clock).
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Option<Observed>,
    last_renew: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            last_renew: None,
        }
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquire.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: returns whether this replica holds the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        // Restart the expiry clock whenever the record changes.
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time);
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renew_time: spec.renew_time.clone(),
                at: Instant::now(),
            });
        }
        let ours = holder.as_deref() == Some(self.cfg.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(self.cfg.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let expired = holder.is_none()
            || self
                .observed
                .as_ref()
                .is_some_and(|o| o.at.elapsed() > duration);
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 };
        let acquire = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(transitions, acquire));
        // Replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it: holder cleared, duration 1s.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Runs until `shutdown` turns true, publishing leadership on `leading`.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
        metrics: std::sync::Arc<Metrics>,
    ) {
        let mut leader = false;
        loop {
            let result = self.try_acquire_or_renew().await;
            let now_leader = match result {
                Ok(true) => {
                    self.last_renew = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "lease request failed");
                    // Keep leading only while within the renew deadline.
                    leader
                        && self
                            .last_renew
                            .is_some_and(|t| t.elapsed() < self.cfg.renew_deadline)
                }
            };
            if now_leader != leader {
                leader = now_leader;
                tracing::info!(identity = %self.cfg.identity, leader, lease = %self.cfg.name, "leadership changed");
                let _ = leading.send(leader);
                metrics.set_leader(leader);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if leader {
            let _ = leading.send(false);
            metrics.set_leader(false);
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.cfg.name, "released the lease"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the lease; it expires on its own")
                }
            }
        }
    }
}
