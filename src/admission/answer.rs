//! The answer out: the AdmissionReview's `response` (allowed, denied, or allowed with a patch
//! and warnings) and the bytes the API server reads.

use std::borrow::Cow;

use serde::Serialize;

use crate::secret::{self, SecretView};

pub(super) const WARNING_PREFIX: &str = "ecr-token-webhook: ";

/// The webhook's answer to one review: the AdmissionReview's `response`, as serialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer<'a> {
    /// Borrowed from the review's body where the request's uid is.
    uid: Cow<'a, str>,
    allowed: bool,
    /// Why the write is denied (only when not allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Denial>,
    #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// A JSON patch (RFC 6902), serialized, then base64-encoded as the answer carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// A denial's status: 403 with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Denial {
    code: u16,
    message: String,
}

impl<'a> Answer<'a> {
    pub(super) fn allow(uid: impl Into<Cow<'a, str>>) -> Self {
        Answer {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    pub(super) fn warn(&mut self, message: impl AsRef<str>) {
        self.warnings
            .push(format!("{WARNING_PREFIX}{}", message.as_ref()));
    }

    pub(super) fn deny(mut self, reason: String) -> Self {
        self.allowed = false;
        self.status = Some(Denial {
            code: 403,
            message: reason,
        });
        self.patch_type = None;
        self.patch = None;
        self
    }

    pub(super) fn with_patch(mut self, patch: &json_patch::Patch) -> Self {
        use base64::Engine;
        match serde_json::to_vec(patch) {
            Ok(json) => {
                self.patch_type = Some("JSONPatch");
                self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
            }
            // Plain data cannot fail to serialize; if it ever did, say so rather than panic.
            Err(e) => self.warn(format!("cannot serialize patch: {e}")),
        }
        self
    }

    /// The JSON patch the answer carries, decoded (for tests and tools).
    pub fn patch(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let p = self.patch.as_ref()?;
        base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .ok()
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Allowed, with a warning and the `error` annotation: the secret keeps what it had.
pub(super) fn with_error<'a>(
    mut answer: Answer<'a>,
    view: &SecretView,
    reason: &str,
) -> Answer<'a> {
    answer.warn(reason);
    let patch = secret::error_patch(view, reason);
    answer.with_patch(&patch)
}

/// The answer as the API server reads it: an AdmissionReview around the response.
#[derive(Serialize)]
struct ReviewOut<'r, 'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: &'r Answer<'a>,
}

/// The answer's bytes.
pub fn to_json(answer: &Answer) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: answer,
    })
}
