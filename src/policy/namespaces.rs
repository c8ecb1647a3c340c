//! Namespace labels for the policy file's `namespaceSelector`s. An AdmissionReview for a Secret
//! does not carry its namespace's labels, so the webhook reads them (`get` on namespaces,
//! metadata only) and caches them per namespace for a short time: a burst of writes in one
//! namespace costs one API call, and a label change takes effect within the TTL. The webhook
//! asks only when a rule that could match the namespace has a selector.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

pub type Labels = Arc<BTreeMap<String, String>>;
pub type LabelsFuture<'a> = Pin<Box<dyn Future<Output = Result<Labels, LabelsError>> + Send + 'a>>;

/// Why a namespace's labels could not be read; the policy refuses with this text. Cloned, as
/// concurrent lookups of one namespace share one failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    /// The process has no Kubernetes client, and why.
    #[error("{0}")]
    NoClient(String),
    #[error("{0} (the webhook's ServiceAccount needs get on namespaces)")]
    Forbidden(String),
    /// The API server's own message.
    #[error("{0}")]
    Api(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    #[error("namespaces \"{0}\" not found")]
    NotFound(String),
    /// The lookup did not finish within the admission request's deadline.
    #[error("no answer from the Kubernetes API within the request timeout")]
    Timeout,
}

/// Where namespace labels come from: the API server in production, a map in tests.
pub trait NamespaceLabels: Send + Sync + 'static {
    fn labels<'a>(&'a self, namespace: &'a str) -> LabelsFuture<'a>;
}

/// Labels read through the Kubernetes API and cached for `ttl`. Concurrent misses for one
/// namespace share one request; failures are not cached.
pub struct KubeNamespaceLabels {
    client: Result<kube::Client, LabelsError>,
    cache: moka::future::Cache<String, Labels>,
}

impl KubeNamespaceLabels {
    /// `client` is the reason there is none when the process has no Kubernetes configuration:
    /// rules with selectors then refuse with it.
    pub fn new(client: Result<kube::Client, LabelsError>, ttl: Duration) -> Self {
        KubeNamespaceLabels {
            client,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    async fn fetch(&self, namespace: &str) -> Result<Labels, LabelsError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let api: Api<Namespace> = Api::all(client.clone());
        match api.get_metadata(namespace).await {
            Ok(meta) => Ok(Arc::new(meta.metadata.labels.unwrap_or_default())),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(LabelsError::Forbidden(s.message)),
            Err(kube::Error::Api(s)) => Err(LabelsError::Api(s.message)),
            Err(e) => Err(LabelsError::Unreachable(e.to_string())),
        }
    }
}

impl NamespaceLabels for KubeNamespaceLabels {
    fn labels<'a>(&'a self, namespace: &'a str) -> LabelsFuture<'a> {
        Box::pin(async move {
            self.cache
                .try_get_with(namespace.to_string(), self.fetch(namespace))
                .await
                .map_err(|e| (*e).clone())
        })
    }
}

/// Fixed labels, for tests and for runs without a cluster.
pub struct StaticNamespaceLabels(pub BTreeMap<String, BTreeMap<String, String>>);

impl NamespaceLabels for StaticNamespaceLabels {
    fn labels<'a>(&'a self, namespace: &'a str) -> LabelsFuture<'a> {
        Box::pin(async move {
            self.0
                .get(namespace)
                .cloned()
                .map(Arc::new)
                .ok_or_else(|| LabelsError::NotFound(namespace.to_string()))
        })
    }
}
