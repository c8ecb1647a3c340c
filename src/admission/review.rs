//! The review in: the parts of an AdmissionReview the webhook reads, through serde_json.

use std::borrow::Cow;

use serde::Deserialize;

use crate::secret::SecretObject;

/// The parts of an AdmissionReview the webhook reads, through serde_json: strings borrow from
/// the body where they can; `oldObject`, `userInfo`, `managedFields` and the rest are skipped.
#[derive(Deserialize)]
pub(super) struct ReviewIn<'a> {
    #[serde(rename = "apiVersion", borrow)]
    pub(super) api_version: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RequestIn<'a> {
    #[serde(borrow)]
    pub(super) uid: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) kind: KindIn<'a>,
    #[serde(borrow, default)]
    pub(super) name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) operation: Cow<'a, str>,
    #[serde(default)]
    pub(super) object: Option<SecretObject>,
    /// A dry run is never persisted: it gets its answer but no Event.
    #[serde(default, rename = "dryRun")]
    pub(super) dry_run: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct KindIn<'a> {
    #[serde(borrow, default)]
    pub(super) group: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kind: Cow<'a, str>,
}
