//! Self-managed TLS for clusters without cert-manager: the webhook keeps its own CA and serving
//! certificate in a Secret, writes the CA into its MutatingWebhookConfiguration's `caBundle`,
//! and renews the serving certificate under the same CA before it expires (so the bundle does
//! not change). Replicas share the Secret; writes use the resourceVersion they read, and a
//! replica that loses a race adopts the winner's pair.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};

use crate::metrics::Metrics;
use crate::time::{parse_rfc3339, rfc3339};
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
}

impl Default for SelfManagedConfig {
    /// A ten-year CA, so the caBundle seldom changes; a one-year serving certificate renewed
    /// with 30 days left; checked every minute, which also repairs an overwritten caBundle.
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
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
    pub not_after: SystemTime,
}

impl Material {
    pub fn ca_bundle(&self) -> String {
        B64.encode(&self.ca_cert_pem)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        tls::server_config(
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
            "self-managed",
        )
    }

    fn from_secret(s: &Secret) -> Option<Material> {
        let data = s.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let not_after = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NOT_AFTER_ANNOTATION))
            .and_then(|v| parse_rfc3339(v))?;
        Some(Material {
            ca_cert_pem: text("ca.crt")?,
            ca_key_pem: text("ca.key")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
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

pub struct SelfManaged {
    client: Client,
    cfg: SelfManagedConfig,
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Api(s) if s.code == 409)
}

impl SelfManaged {
    pub fn new(client: Client, cfg: SelfManagedConfig) -> Self {
        SelfManaged { client, cfg }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    /// A pair that is usable for longer than the renewal threshold: the stored one, a renewed
    /// leaf under the stored CA, or a new CA and leaf. Stored before it is returned.
    pub async fn ensure(&self) -> Result<Material, SelfManagedError> {
        // Two rounds: a lost race re-reads and adopts the winner's pair.
        for _ in 0..2 {
            let current = self.secrets().get_opt(&self.cfg.secret_name).await?;
            let stored = current.as_ref().and_then(Material::from_secret);
            let now = SystemTime::now();
            // Whole seconds: the annotation keeps no more, and a replica reading it back must
            // see the same Material.
            let not_after = whole_seconds(now + self.cfg.cert_validity);
            if let Some(m) = &stored
                && m.not_after > now + self.cfg.renew_before
            {
                return Ok(m.clone());
            }
            let fresh = match &stored {
                Some(m) => {
                    let (cert_pem, key_pem) =
                        tls::sign_leaf(&m.ca_key_pem, &self.cfg.names, self.cfg.cert_validity)?;
                    tracing::info!(secret = %self.cfg.secret_name, "renewing the serving certificate under the existing CA");
                    Material {
                        cert_pem,
                        key_pem,
                        not_after,
                        ..m.clone()
                    }
                }
                None => {
                    let (ca_cert_pem, ca_key_pem) = tls::generate_ca(self.cfg.ca_validity)?;
                    let (cert_pem, key_pem) =
                        tls::sign_leaf(&ca_key_pem, &self.cfg.names, self.cfg.cert_validity)?;
                    tracing::info!(secret = %self.cfg.secret_name, "generated a CA and serving certificate");
                    Material {
                        ca_cert_pem,
                        ca_key_pem,
                        cert_pem,
                        key_pem,
                        not_after,
                    }
                }
            };
            match self.store(current, &fresh).await {
                Ok(()) => return Ok(fresh),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Lost twice: whatever is stored now is the most recent winner's.
        let s = self.secrets().get(&self.cfg.secret_name).await?;
        Material::from_secret(&s).ok_or_else(|| {
            SelfManagedError::Tls(TlsError::NoCertificate {
                what: format!("secret {}", self.cfg.secret_name),
            })
        })
    }

    async fn store(&self, current: Option<Secret>, m: &Material) -> Result<(), Error> {
        let mut annotations = BTreeMap::new();
        annotations.insert(NOT_AFTER_ANNOTATION.to_string(), rfc3339(m.not_after));
        match current {
            Some(mut s) => {
                s.data = Some(m.data());
                s.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .extend(annotations);
                // Replace sends the resourceVersion read: a concurrent writer makes this a 409.
                self.secrets()
                    .replace(&self.cfg.secret_name, &PostParams::default(), &s)
                    .await
                    .map(|_| ())
            }
            None => {
                let s = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.secret_name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(m.data()),
                    ..Secret::default()
                };
                self.secrets()
                    .create(&PostParams::default(), &s)
                    .await
                    .map(|_| ())
            }
        }
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
    /// another replica stored, and re-injects the bundle if something overwrote it.
    pub fn spawn_maintainer(
        self,
        tls: RustlsConfig,
        mut current: Material,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.cfg.check_interval).await;
                match self.ensure().await {
                    Ok(m) if m != current => match m.server_config() {
                        Ok(config) => {
                            tls.reload_from_config(config);
                            metrics.tls_reload("reloaded");
                            tracing::info!(not_after = %rfc3339(m.not_after), "serving the renewed certificate");
                            current = m;
                        }
                        Err(e) => {
                            metrics.tls_reload("refused");
                            tracing::warn!(error = %e, "stored pair refused; the current one stays in service");
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check the self-managed certificate")
                    }
                }
                if let Err(e) = self.inject_ca_bundle(&current).await {
                    tracing::warn!(error = %e, config = %self.cfg.webhook_config_name, "cannot inject caBundle");
                }
            }
        })
    }
}
