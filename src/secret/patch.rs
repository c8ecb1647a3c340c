//! The patches the webhook answers with: a fresh token written into the secret's format, the
//! registries that failed left as they were, and the `error` annotation.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::{Map, Value, json};

use crate::aws::token::{Token, TokenKey};
use crate::registry::{self, Registry};
use crate::text::truncate;
use crate::time::rfc3339;

use super::{
    ERROR_ANNOTATION, EXPIRES_AT_ANNOTATION, InputError, Plan, SecretKind, SecretView, auths,
};

/// Builds JSON patch operations, creating missing parent maps first.
struct PatchBuilder<'v, 'a> {
    view: &'v SecretView<'a>,
    ops: Vec<PatchOperation>,
    data_created: bool,
    annotations_created: bool,
}

impl<'v, 'a> PatchBuilder<'v, 'a> {
    fn new(view: &'v SecretView<'a>) -> Self {
        PatchBuilder {
            view,
            ops: Vec::new(),
            data_created: false,
            annotations_created: false,
        }
    }

    fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    fn set_data(&mut self, key: &str, bytes: &[u8]) {
        if self.view.data.is_none() && !self.data_created {
            self.add(PointerBuf::from_tokens(["data"]), json!({}));
            self.data_created = true;
        }
        self.add(
            PointerBuf::from_tokens(["data", key]),
            Value::String(B64.encode(bytes)),
        );
    }

    fn set_annotation(&mut self, key: &str, value: &str) {
        if self.view.annotations.is_none() && !self.annotations_created {
            self.add(
                PointerBuf::from_tokens(["metadata", "annotations"]),
                json!({}),
            );
            self.annotations_created = true;
        }
        self.add(
            PointerBuf::from_tokens(["metadata", "annotations", key]),
            Value::String(value.to_string()),
        );
    }

    fn remove_annotation(&mut self, key: &str) {
        if self.view.annotation(key).is_some() {
            self.ops.push(PatchOperation::Remove(RemoveOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations", key]),
            }));
        }
    }

    fn finish(self) -> Patch {
        Patch(self.ops)
    }
}

/// The patch that writes `tokens` into the secret described by `plan`, sets `expires-at` to the
/// earliest expiry written and removes a previous `error`.
pub fn inject(
    view: &SecretView,
    plan: &Plan,
    tokens: &BTreeMap<TokenKey, &Token>,
) -> Result<Patch, InputError> {
    inject_partial(view, plan, tokens, None)
}

/// [`inject`] for a pull secret whose tokens could be had only for some registries: the
/// registries without a token in `tokens` keep their entries exactly as they were, `expires-at`
/// is the earliest expiry among the tokens written, and `error` (when given) is set instead of
/// removed, naming what failed. Single-token kinds need their one token.
pub fn inject_partial(
    view: &SecretView,
    plan: &Plan,
    tokens: &BTreeMap<TokenKey, &Token>,
    error: Option<&str>,
) -> Result<Patch, InputError> {
    let token_for = |r: &Registry| -> Result<&Token, InputError> {
        tokens
            .get(&plan.key_for(r))
            .copied()
            // The caller fetched every key of the plan; a gap is a bug, reported not panicked.
            .ok_or(InputError::NoRegistries)
    };
    let mut b = PatchBuilder::new(view);
    let mut earliest: Option<SystemTime> = None;
    let mut note = |t: &Token| {
        earliest = Some(earliest.map_or(t.expires_at, |e| e.min(t.expires_at)));
    };
    match plan.kind {
        SecretKind::ArgoRepository | SecretKind::ArgoRepoCreds | SecretKind::BasicAuth => {
            // Argo CD secrets name one registry; basic-auth registries share one region.
            let first = plan.registries.first().ok_or(InputError::NoRegistries)?;
            let token = token_for(first)?;
            note(token);
            b.set_data("username", token.username.as_bytes());
            b.set_data("password", token.password.as_bytes());
        }
        SecretKind::DockerConfigJson | SecretKind::DockerCfg => {
            let key = plan.kind.docker_key().unwrap_or(".dockerconfigjson");
            let mut config = view.docker_config(key)?;
            {
                let entries = match plan.kind {
                    SecretKind::DockerConfigJson => {
                        auths(plan.kind, &config)?;
                        let slot = config
                            .entry("auths")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if slot.is_null() {
                            *slot = Value::Object(Map::new());
                        }
                        match slot {
                            Value::Object(m) => m,
                            _ => return Err(InputError::NoRegistries),
                        }
                    }
                    _ => &mut config,
                };
                for r in &plan.registries {
                    // No token for this registry (its region failed): its entry stays as it was.
                    let Some(token) = tokens.get(&plan.key_for(r)).copied() else {
                        continue;
                    };
                    note(token);
                    write_entry(entries, r, token, key)?;
                }
            }
            let bytes = serde_json::to_vec(&Value::Object(config)).map_err(|e| {
                InputError::DockerConfig {
                    key: key.to_string(),
                    reason: e.to_string(),
                }
            })?;
            b.set_data(key, &bytes);
        }
    }
    // No token at all is the caller's case (the error patch alone), not a write of nothing.
    let earliest = earliest.ok_or(InputError::NoRegistries)?;
    b.set_annotation(EXPIRES_AT_ANNOTATION, &rfc3339(earliest));
    match error {
        Some(message) => b.set_annotation(ERROR_ANNOTATION, &one_line(message)),
        None => b.remove_annotation(ERROR_ANNOTATION),
    }
    Ok(b.finish())
}

/// Writes one registry's credentials into a docker config map. An existing entry for the same
/// host (written with or without `https://`) is updated in place; its other fields are kept.
fn write_entry(
    entries: &mut Map<String, Value>,
    r: &Registry,
    token: &Token,
    key: &str,
) -> Result<(), InputError> {
    let existing = entries
        .keys()
        .find(|k| registry::parse(k).is_ok_and(|p| p.host == r.host))
        .cloned();
    let slot = entries
        .entry(existing.unwrap_or_else(|| r.host.clone()))
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        return Err(InputError::DockerConfig {
            key: key.to_string(),
            reason: format!("entry for {} is not an object", r.host),
        });
    }
    if let Value::Object(entry) = slot {
        let auth = B64.encode(format!("{}:{}", token.username, token.password));
        entry.insert("username".into(), Value::String(token.username.clone()));
        entry.insert("password".into(), Value::String(token.password.clone()));
        entry.insert("auth".into(), Value::String(auth));
    }
    Ok(())
}

/// The patch for a secret that gets no token: set `error` and keep everything else.
pub fn error_patch(view: &SecretView, message: &str) -> Patch {
    let mut b = PatchBuilder::new(view);
    b.set_annotation(ERROR_ANNOTATION, &one_line(message));
    b.finish()
}

/// Annotations are read by people in `kubectl describe`: one line, bounded.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(flat.trim(), 512)
}
