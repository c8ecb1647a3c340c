//! Self-managed TLS for clusters without cert-manager: the webhook keeps its own CA and serving
//! certificate in a Secret, writes the CA into its MutatingWebhookConfiguration's `caBundle`,
//! and renews the serving certificate under the same CA before it expires (so the bundle does
//! not change). Replicas share the Secret; writes use the resourceVersion they read, and a
//! replica that loses a race adopts the winner's pair.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};

use crate::metrics::{Metrics, ReloadOutcome, RenewalOutcome};
use crate::time::rfc3339;
use crate::tls::{self, TlsError};

pub const NOT_AFTER_ANNOTATION: &str = "ecr-token-webhook/tls-not-after";

#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    pub secret_name: String,
    pub namespace: String,
    pub webhook_config_name: String,
    /// DNS names (and IPs) of the serving certificate.
    pub names: Vec<String>,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    /// Renew the serving certificate when less than this is left.
    pub renew_before: Duration,
    pub check_interval: Duration,
    /// After a failed check or renewal: first retry, doubling up to the most.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for SelfManagedConfig {
    /// A ten-year CA, so the caBundle seldom changes; a one-year serving certificate renewed
    /// with 30 days left; checked every minute, which also repairs an overwritten caBundle;
    /// failures retried after 5 s, doubling to 5 minutes.
    fn default() -> Self {
        const DAY: u64 = 86_400;
        SelfManagedConfig {
            secret_name: "ecr-token-webhook-self-managed-tls".into(),
            namespace: "ecr-token-webhook".into(),
            webhook_config_name: "ecr-token-webhook".into(),
            names: Vec::new(),
            ca_validity: Duration::from_secs(3650 * DAY),
            cert_validity: Duration::from_secs(365 * DAY),
            renew_before: Duration::from_secs(30 * DAY),
            check_interval: Duration::from_secs(60),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error(
        "Secret {namespace}/{name} not found: the install ships it empty and the webhook fills it \
         in (it may not create Secrets); create it with `kubectl -n {namespace} create secret \
         generic {name}`"
    )]
    Missing { namespace: String, name: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The pair in service and its CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The serving certificate's own notAfter.
    pub not_after: SystemTime,
}

/// What a check of the stored pair found.
#[derive(Debug)]
pub enum Check {
    /// Good for longer than the renewal threshold: as stored, or renewed and stored now.
    Current(Material),
    /// Renewal is due but could not be stored; the stored pair is still valid and is served
    /// until it can be replaced.
    Stale {
        material: Material,
        error: SelfManagedError,
    },
}

impl Check {
    pub fn material(&self) -> &Material {
        match self {
            Check::Current(m) | Check::Stale { material: m, .. } => m,
        }
    }
}

fn text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|t| !t.trim().is_empty())
}

impl Material {
    pub fn ca_bundle(&self) -> String {
        B64.encode(&self.ca_cert_pem)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config_with(None)
    }

    /// [`Material::server_config`] with caller authentication.
    pub fn server_config_with(
        &self,
        client: tls::ClientVerifier,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config_with(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            "self-managed",
            client,
        )
    }

    /// The stored pair, with its expiry read from the certificate itself. None when the
    /// Secret is empty (as the install ships it) or holds something unreadable.
    fn from_secret(s: &Secret) -> Option<Material> {
        let cert_pem = text(s, "tls.crt")?;
        let not_after = tls::not_after(cert_pem.as_bytes(), "stored tls.crt").ok()?;
        Some(Material {
            ca_cert_pem: text(s, "ca.crt")?,
            ca_key_pem: text(s, "ca.key")?,
            cert_pem,
            key_pem: text(s, "tls.key")?,
            not_after,
        })
    }

    fn data(&self) -> BTreeMap<String, ByteString> {
        [
            ("ca.crt", &self.ca_cert_pem),
            ("ca.key", &self.ca_key_pem),
            ("tls.crt", &self.cert_pem),
            ("tls.key", &self.key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }
}

/// The stored CA (certificate and key), if it outlives a new serving certificate: a leaf must
/// not outlive its issuer, so a CA that would is replaced (and the caBundle with it).
fn reusable_ca(s: &Secret, leaf_until: SystemTime) -> Option<(String, String)> {
    let cert = text(s, "ca.crt")?;
    let key = text(s, "ca.key")?;
    let until = tls::not_after(cert.as_bytes(), "stored ca.crt").ok()?;
    (until > leaf_until).then_some((cert, key))
}

pub struct SelfManaged {
    client: Client,
    cfg: SelfManagedConfig,
    /// Caller authentication (`--tls-client-ca-file`) for every pair served.
    client_auth: tls::ClientVerifier,
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Api(s) if s.code == 409)
}

/// Pause before the next attempt after `failures` failed ones in a row: doubling from `base`,
/// at most `max`.
pub fn retry_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(max)
}

impl SelfManaged {
    pub fn new(client: Client, cfg: SelfManagedConfig) -> Self {
        SelfManaged {
            client,
            cfg,
            client_auth: None,
        }
    }

    /// Pairs put in service by the maintainer ask clients for certificates verified by `client`.
    pub fn with_client_auth(mut self, client: tls::ClientVerifier) -> Self {
        self.client_auth = client;
        self
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    async fn read(&self) -> Result<Secret, SelfManagedError> {
        self.secrets()
            .get_opt(&self.cfg.secret_name)
            .await?
            .ok_or_else(|| SelfManagedError::Missing {
                namespace: self.cfg.namespace.clone(),
                name: self.cfg.secret_name.clone(),
            })
    }

    /// A new serving certificate: under the stored CA when it outlives the certificate,
    /// otherwise under a new CA.
    fn fresh(&self, current: &Secret) -> Result<Material, TlsError> {
        let leaf_until = SystemTime::now() + self.cfg.cert_validity;
        let (ca_cert_pem, ca_key_pem) = match reusable_ca(current, leaf_until) {
            Some(ca) => {
                tracing::info!(secret = %self.cfg.secret_name, "renewing the serving certificate under the existing CA");
                ca
            }
            None => {
                tracing::info!(secret = %self.cfg.secret_name, "generating a CA and serving certificate");
                tls::generate_ca(self.cfg.ca_validity)?
            }
        };
        let (cert_pem, key_pem) =
            tls::sign_leaf(&ca_key_pem, &self.cfg.names, self.cfg.cert_validity)?;
        let not_after = tls::not_after(cert_pem.as_bytes(), "new serving certificate")?;
        Ok(Material {
            ca_cert_pem,
            ca_key_pem,
            cert_pem,
            key_pem,
            not_after,
        })
    }

    /// Reads the stored pair and renews it when less than the renewal threshold is left
    /// (judged from the certificate itself). A renewal that cannot be stored leaves the stored
    /// pair in service while it is valid ([`Check::Stale`]); an error means there is nothing
    /// valid to serve.
    pub async fn ensure(&self) -> Result<Check, SelfManagedError> {
        // Two rounds: a lost race re-reads and adopts the winner's pair.
        for _ in 0..2 {
            let current = self.read().await?;
            let stored = Material::from_secret(&current);
            let now = SystemTime::now();
            if let Some(m) = &stored
                && m.not_after > now + self.cfg.renew_before
            {
                return Ok(Check::Current(m.clone()));
            }
            let fresh = self.fresh(&current)?;
            match self.store(current, &fresh).await {
                Ok(()) => return Ok(Check::Current(fresh)),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => {
                    return match stored {
                        Some(material) if material.not_after > now => Ok(Check::Stale {
                            material,
                            error: e.into(),
                        }),
                        _ => Err(e.into()),
                    };
                }
            }
        }
        // Lost twice: whatever is stored now is the most recent winner's.
        Material::from_secret(&self.read().await?)
            .filter(|m| m.not_after > SystemTime::now())
            .map(Check::Current)
            .ok_or_else(|| {
                SelfManagedError::Tls(TlsError::NoCertificate {
                    what: format!("secret {}", self.cfg.secret_name),
                })
            })
    }

    /// Writes the pair into the Secret read as `current` (PUT with its resourceVersion: a
    /// concurrent writer makes this a 409). The Secret is never created here.
    async fn store(&self, mut current: Secret, m: &Material) -> Result<(), Error> {
        current.data = Some(m.data());
        // For people reading the Secret; renewal reads the certificate itself.
        current
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(NOT_AFTER_ANNOTATION.to_string(), rfc3339(m.not_after));
        self.secrets()
            .replace(&self.cfg.secret_name, &PostParams::default(), &current)
            .await
            .map(|_| ())
    }

    /// Writes the CA into every webhook of the configuration whose `caBundle` differs.
    /// Returns how many were changed.
    pub async fn inject_ca_bundle(&self, m: &Material) -> Result<usize, Error> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = api.get(&self.cfg.webhook_config_name).await?;
        let bundle = ByteString(m.ca_cert_pem.as_bytes().to_vec());
        let encoded = m.ca_bundle();
        let ops: Vec<serde_json::Value> = config
            .webhooks
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, w)| w.client_config.ca_bundle.as_ref() != Some(&bundle))
            .map(|(i, _)| {
                serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                    "value": encoded})
            })
            .collect();
        if ops.is_empty() {
            return Ok(0);
        }
        let n = ops.len();
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).map_err(Error::SerdeError)?;
        api.patch(
            &self.cfg.webhook_config_name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
        tracing::info!(config = %self.cfg.webhook_config_name, webhooks = n, "injected caBundle");
        Ok(n)
    }

    /// Keeps the served pair and the caBundle current: renews before expiry, adopts a pair
    /// another replica stored, and re-injects the bundle if something overwrote it. A renewal
    /// that cannot be stored is retried with back-off while the current pair stays in service.
    pub fn spawn_maintainer(
        self,
        tls: RustlsConfig,
        mut current: Material,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures = 0u32;
            let auth = self.client_auth.clone();
            loop {
                let wait = match failures {
                    0 => self.cfg.check_interval,
                    n => retry_delay(n, self.cfg.retry_base, self.cfg.retry_max),
                };
                tokio::time::sleep(wait).await;
                let found = match self.ensure().await {
                    Ok(Check::Current(m)) => {
                        if failures > 0 {
                            tracing::info!(
                                failures,
                                "self-managed certificate checked again after failures"
                            );
                        }
                        failures = 0;
                        Some(m)
                    }
                    Ok(Check::Stale { material, error }) => {
                        failures += 1;
                        metrics.tls_renewal(RenewalOutcome::Failed);
                        tracing::warn!(error = %error, failures,
                            not_after = %rfc3339(material.not_after),
                            retry_in = %humantime::format_duration(retry_delay(failures, self.cfg.retry_base, self.cfg.retry_max)),
                            "cannot store the renewed certificate; the stored one stays in service until it expires");
                        Some(material)
                    }
                    Err(e) => {
                        failures += 1;
                        metrics.tls_renewal(RenewalOutcome::Failed);
                        tracing::warn!(error = %e, failures, "cannot check the self-managed certificate; the current one stays in service");
                        None
                    }
                };
                match found {
                    Some(m) if m != current => match m.server_config_with(auth.clone()) {
                        Ok(config) => {
                            tls.reload_from_config(config);
                            metrics.tls_reload(ReloadOutcome::Reloaded);
                            metrics.set_tls_not_after(m.not_after);
                            tracing::info!(not_after = %rfc3339(m.not_after), "serving the renewed certificate");
                            current = m;
                        }
                        Err(e) => {
                            metrics.tls_reload(ReloadOutcome::Refused);
                            tracing::warn!(error = %e, "stored pair refused; the current one stays in service");
                        }
                    },
                    _ => {}
                }
                if let Err(e) = self.inject_ca_bundle(&current).await {
                    tracing::warn!(error = %e, config = %self.cfg.webhook_config_name, "cannot inject caBundle");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_to_a_cap() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let got: Vec<u64> = (1..=9)
            .map(|n| retry_delay(n, base, max).as_secs())
            .collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX, base, max), max);
    }
}
