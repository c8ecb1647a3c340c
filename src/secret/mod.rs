//! Reading an opted-in Secret and building the JSON patch that writes tokens into it: what a
//! secret is and needs (its kind, its registries, the [`Plan`]) here, the patches in `patch.rs`.
//!
//! Pure functions over the object exactly as the API server sends it: `data` holds base64
//! strings (`stringData` is already folded in), and `data` or `metadata.annotations` may be
//! missing. Only the keys the design names are written; everything else stays as it is.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kube::core::DynamicObject;
use serde_json::{Map, Value};

use crate::aws::token::TokenKey;
use crate::registry::{self, Registry};
use crate::text::truncate;

mod patch;

pub use patch::{error_patch, inject, inject_partial};

pub const INJECT_LABEL: &str = "ecr-token-webhook/inject";
pub const REGISTRIES_ANNOTATION: &str = "ecr-token-webhook/registries";
pub const ROLE_ARN_ANNOTATION: &str = "ecr-token-webhook/role-arn";
pub const EXPIRES_AT_ANNOTATION: &str = "ecr-token-webhook/expires-at";
pub const ERROR_ANNOTATION: &str = "ecr-token-webhook/error";
pub const TOUCHED_AT_ANNOTATION: &str = "ecr-token-webhook/touched-at";
pub const ARGOCD_SECRET_TYPE_LABEL: &str = "argocd.argoproj.io/secret-type";

const DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
const DOCKERCFG: &str = "kubernetes.io/dockercfg";
const BASIC_AUTH: &str = "kubernetes.io/basic-auth";

/// The user name ECR tokens go with.
pub const ECR_USERNAME: &str = "AWS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    ArgoRepository,
    ArgoRepoCreds,
    DockerConfigJson,
    DockerCfg,
    BasicAuth,
}

impl SecretKind {
    /// Every kind the webhook serves.
    pub const ALL: [SecretKind; 5] = [
        SecretKind::ArgoRepository,
        SecretKind::ArgoRepoCreds,
        SecretKind::DockerConfigJson,
        SecretKind::DockerCfg,
        SecretKind::BasicAuth,
    ];

    pub fn metric_label(self) -> &'static str {
        match self {
            SecretKind::ArgoRepository => "argocd-repository",
            SecretKind::ArgoRepoCreds => "argocd-repo-creds",
            SecretKind::DockerConfigJson => "dockerconfigjson",
            SecretKind::DockerCfg => "dockercfg",
            SecretKind::BasicAuth => "basic-auth",
        }
    }

    /// The data key holding the docker config, for the two pull-secret kinds.
    fn docker_key(self) -> Option<&'static str> {
        match self {
            SecretKind::DockerConfigJson => Some(".dockerconfigjson"),
            SecretKind::DockerCfg => Some(".dockercfg"),
            _ => None,
        }
    }
}

/// Why the webhook cannot serve a secret. One line each, naming what to fix; never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "unsupported secret: type {0} needs label {ARGOCD_SECRET_TYPE_LABEL}=repository|repo-creds, or type {DOCKERCONFIGJSON}, {DOCKERCFG} or {BASIC_AUTH}"
    )]
    Unsupported(String),
    #[error("secret data is not a map of strings")]
    DataShape,
    #[error("data.{0} is not a string")]
    NotString(String),
    #[error("data.{0} is not valid base64")]
    Base64(String),
    #[error("data.url is missing: an Argo CD repository secret needs the registry url")]
    MissingUrl,
    #[error("data.url is not valid UTF-8")]
    UrlEncoding,
    #[error("url {url:?} is not an ECR registry: {reason}")]
    NotEcrUrl {
        url: String,
        reason: registry::HostError,
    },
    #[error("{entry:?} in annotation {REGISTRIES_ANNOTATION} is not an ECR registry: {reason}")]
    BadRegistry {
        entry: String,
        reason: registry::HostError,
    },
    #[error("no ECR registry to write: set annotation {REGISTRIES_ANNOTATION}")]
    NoRegistries,
    #[error("data.{key} is not valid docker config JSON: {reason}")]
    DockerConfig { key: String, reason: String },
    #[error(
        "a basic-auth secret holds one token, but its registries are in several regions ({0}); use one secret per region"
    )]
    Regions(String),
}

/// A Secret as the admission path reads it out of a review: exactly the fields the webhook
/// uses, through serde_json. The rest of the object (`managedFields` above all) is skipped.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SecretObject {
    #[serde(default)]
    pub metadata: SecretMeta,
    /// Kept as JSON: a `type` that is not a string reads as none, as it does from kube's object.
    #[serde(default, rename = "type")]
    pub type_: Option<Value>,
    /// Kept as JSON: a `data` that is not a map is refused only when the webhook reads it
    /// ([`InputError::DataShape`]), and a value that is not a string only when it reads that key.
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct SecretMeta {
    #[serde(default)]
    pub namespace: Option<String>,
    /// Absent on CREATE: the API server assigns it after admission.
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The parts of a Secret the webhook reads, from kube's object (the refresher, `status`) or
/// from the review's [`SecretObject`] (the admission path).
#[derive(Debug)]
pub struct SecretView<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub type_: Option<&'a str>,
    /// `None` when the object has no `data` (or `data: null`).
    data: Option<&'a Map<String, Value>>,
    data_shape_ok: bool,
}

impl<'a> SecretView<'a> {
    pub fn new(obj: &'a DynamicObject) -> Self {
        Self::from_parts(
            obj.metadata.labels.as_ref(),
            obj.metadata.annotations.as_ref(),
            obj.data.get("type"),
            obj.data.get("data"),
        )
    }

    pub fn from_object(obj: &'a SecretObject) -> Self {
        Self::from_parts(
            obj.metadata.labels.as_ref(),
            obj.metadata.annotations.as_ref(),
            obj.type_.as_ref(),
            obj.data.as_ref(),
        )
    }

    fn from_parts(
        labels: Option<&'a BTreeMap<String, String>>,
        annotations: Option<&'a BTreeMap<String, String>>,
        type_: Option<&'a Value>,
        data: Option<&'a Value>,
    ) -> Self {
        let (data, data_shape_ok) = match data {
            None | Some(Value::Null) => (None, true),
            Some(Value::Object(m)) => (Some(m), true),
            Some(_) => (None, false),
        };
        SecretView {
            labels,
            annotations,
            type_: type_.and_then(Value::as_str),
            data,
            data_shape_ok,
        }
    }

    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels?.get(key).map(String::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations?.get(key).map(String::as_str)
    }

    pub fn opted_in(&self) -> bool {
        self.label(INJECT_LABEL) == Some("true")
    }

    pub fn kind(&self) -> Result<SecretKind, InputError> {
        match self.label(ARGOCD_SECRET_TYPE_LABEL) {
            Some("repository") => return Ok(SecretKind::ArgoRepository),
            Some("repo-creds") => return Ok(SecretKind::ArgoRepoCreds),
            _ => {}
        }
        match self.type_ {
            Some(DOCKERCONFIGJSON) => Ok(SecretKind::DockerConfigJson),
            Some(DOCKERCFG) => Ok(SecretKind::DockerCfg),
            Some(BASIC_AUTH) => Ok(SecretKind::BasicAuth),
            other => Err(InputError::Unsupported(
                other.unwrap_or("Opaque").to_string(),
            )),
        }
    }

    /// `data[key]` decoded from base64, if present.
    fn decoded(&self, key: &str) -> Result<Option<Vec<u8>>, InputError> {
        if !self.data_shape_ok {
            return Err(InputError::DataShape);
        }
        let Some(v) = self.data.and_then(|d| d.get(key)) else {
            return Ok(None);
        };
        let s = v
            .as_str()
            .ok_or_else(|| InputError::NotString(key.to_string()))?;
        B64.decode(s)
            .map(Some)
            .map_err(|_| InputError::Base64(key.to_string()))
    }

    /// The docker config of a pull secret as a JSON object, or an empty one if absent.
    fn docker_config(&self, key: &str) -> Result<Map<String, Value>, InputError> {
        let Some(bytes) = self.decoded(key)? else {
            return Ok(Map::new());
        };
        let bad = |reason: String| InputError::DockerConfig {
            key: key.to_string(),
            reason,
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(bad("not a JSON object".into())),
            // serde_json's message names a position, never the content.
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// What a secret needs: its kind, the registries to write, and the role to get tokens as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub kind: SecretKind,
    pub registries: Vec<Registry>,
    pub role_arn: Option<String>,
}

impl Plan {
    /// One token per region (and role): ECR tokens are regional, not per registry. ECR Public
    /// has a token of its own.
    pub fn token_keys(&self) -> Vec<TokenKey> {
        // Sorted and deduplicated in a Vec: one allocation for the usual single key.
        let mut keys: Vec<TokenKey> = self.registries.iter().map(|r| self.key_for(r)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The token key that serves registry `r`.
    pub fn key_for(&self, r: &Registry) -> TokenKey {
        TokenKey::for_registry(r, self.role_arn.clone())
    }
}

/// Reads what a secret needs. Fails with a message a person can act on.
pub fn plan(view: &SecretView) -> Result<Plan, InputError> {
    let kind = view.kind()?;
    let role_arn = view
        .annotation(ROLE_ARN_ANNOTATION)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let registries = match kind {
        SecretKind::ArgoRepository | SecretKind::ArgoRepoCreds => {
            let url = view.decoded("url")?.ok_or(InputError::MissingUrl)?;
            let url = std::str::from_utf8(&url).map_err(|_| InputError::UrlEncoding)?;
            vec![
                registry::parse(url).map_err(|reason| InputError::NotEcrUrl {
                    url: truncate(url, 120),
                    reason,
                })?,
            ]
        }
        SecretKind::DockerConfigJson | SecretKind::DockerCfg | SecretKind::BasicAuth => {
            let regs = match view.annotation(REGISTRIES_ANNOTATION) {
                Some(list) => annotated_registries(list)?,
                None => match kind.docker_key() {
                    Some(key) => {
                        let config = view.docker_config(key)?;
                        auths(kind, &config)?
                            .keys()
                            .filter_map(|k| registry::parse(k).ok())
                            .collect()
                    }
                    None => Vec::new(),
                },
            };
            dedup(regs)
        }
    };
    if registries.is_empty() {
        return Err(InputError::NoRegistries);
    }
    if kind == SecretKind::BasicAuth {
        // One token: ECR Public's differs from a private registry's even in us-east-1.
        let regions: BTreeSet<&str> = registries
            .iter()
            .map(|r| {
                if r.public {
                    "public"
                } else {
                    r.region.as_str()
                }
            })
            .collect();
        if regions.len() > 1 {
            return Err(InputError::Regions(
                regions.into_iter().collect::<Vec<_>>().join(", "),
            ));
        }
    }
    Ok(Plan {
        kind,
        registries,
        role_arn,
    })
}

fn annotated_registries(list: &str) -> Result<Vec<Registry>, InputError> {
    registry::split_list(list)
        .map(|entry| {
            registry::parse(entry).map_err(|reason| InputError::BadRegistry {
                entry: truncate(entry, 120),
                reason,
            })
        })
        .collect()
}

fn dedup(regs: Vec<Registry>) -> Vec<Registry> {
    let mut seen = BTreeSet::new();
    regs.into_iter()
        .filter(|r| seen.insert(r.host.clone()))
        .collect()
}

/// The map of registry entries: `auths` in `.dockerconfigjson`, the whole object in `.dockercfg`.
pub(super) fn auths(
    kind: SecretKind,
    config: &Map<String, Value>,
) -> Result<&Map<String, Value>, InputError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(Map::new);
    match kind {
        SecretKind::DockerConfigJson => match config.get("auths") {
            None | Some(Value::Null) => Ok(empty),
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(InputError::DockerConfig {
                key: ".dockerconfigjson".into(),
                reason: "auths is not an object".into(),
            }),
        },
        _ => Ok(config),
    }
}

/// The registry names a pull secret's docker config lists (its `auths` keys), ECR or not, for
/// diagnostics (`status` says which hosts are not ECR). Empty when there is no readable config;
/// a name that carries user info (`user:pass@host`) is left out.
pub fn docker_config_hosts(view: &SecretView) -> Vec<String> {
    let Ok(kind) = view.kind() else {
        return Vec::new();
    };
    let Some(key) = kind.docker_key() else {
        return Vec::new();
    };
    let Ok(config) = view.docker_config(key) else {
        return Vec::new();
    };
    auths(kind, &config)
        .map(|m| {
            m.keys()
                .filter(|k| !k.contains('@'))
                .map(|k| truncate(k, 120))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
