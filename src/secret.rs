//! Reading an opted-in Secret and building the JSON patch that writes tokens into it.
//!
//! Pure functions over the object exactly as the API server sends it: `data` holds base64
//! strings (`stringData` is already folded in), and `data` or `metadata.annotations` may be
//! missing. Only the keys the design names are written; everything else stays as it is.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use kube::core::DynamicObject;
use serde_json::{Map, Value, json};

use crate::json;
use crate::registry::{self, Registry};
use crate::text::truncate;
use crate::time::rfc3339;
use crate::token::{Token, TokenKey};

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

/// The parts of a Secret the webhook reads.
#[derive(Debug)]
pub struct SecretView<'a> {
    pub labels: Option<Strings<'a>>,
    pub annotations: Option<Strings<'a>>,
    pub type_: Option<&'a str>,
    /// `None` when the object has no `data` (or `data: null`).
    data: Option<DataMap<'a>>,
    data_shape_ok: bool,
}

/// A map of strings, as kube's object holds it or as [`SecretObject`] read it.
#[derive(Clone, Copy, Debug)]
pub enum Strings<'a> {
    Map(&'a BTreeMap<String, String>),
    Read(&'a Pairs<'a>),
}

impl<'a> Strings<'a> {
    pub fn get(self, key: &str) -> Option<&'a str> {
        match self {
            Strings::Map(m) => m.get(key).map(String::as_str),
            Strings::Read(p) => p.get(key).map(|v| &**v),
        }
    }
}

/// `data`, as kube's object holds it or as [`SecretObject`] read it.
#[derive(Clone, Copy, Debug)]
enum DataMap<'a> {
    Map(&'a Map<String, Value>),
    Read(&'a Pairs<'a, DataValue<'a>>),
}

impl<'a> DataMap<'a> {
    /// `Some(None)`: the key is there, but its value is not a string.
    fn get(self, key: &str) -> Option<Option<&'a str>> {
        match self {
            DataMap::Map(m) => m.get(key).map(Value::as_str),
            DataMap::Read(p) => p.get(key).map(|v| match v {
                DataValue::Text(s) => Some(&**s),
                DataValue::NotText => None,
            }),
        }
    }
}

/// Pairs in the order read, each key once (a repeated key keeps its last value, as in a map).
/// Few are kept (the webhook's own labels, annotations and data keys), so a list beats a map;
/// keys and values borrow from the review unless they hold escapes. The first [`INLINE`] sit
/// in place, so a review allocates none; a hand-made array because smallvec's and tinyvec's
/// are invariant in their item, and these must stay covariant in `'a`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pairs<'a, V = Cow<'a, str>> {
    inline: [Option<(Cow<'a, str>, V)>; INLINE],
    more: Vec<(Cow<'a, str>, V)>,
}

/// Pairs kept without an allocation: two labels, three data keys, a few annotations.
const INLINE: usize = 4;

impl<V> Default for Pairs<'_, V> {
    fn default() -> Self {
        Pairs {
            inline: [const { None }; INLINE],
            more: Vec::new(),
        }
    }
}

impl<'a, V> Pairs<'a, V> {
    fn insert(&mut self, key: Cow<'a, str>, value: V) {
        if let Some(slot) = self.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else if let Some(free) = self.inline.iter_mut().find(|p| p.is_none()) {
            *free = Some((key, value));
        } else {
            self.more.push((key, value));
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (Cow<'a, str>, V)> {
        self.inline.iter_mut().flatten().chain(self.more.iter_mut())
    }

    fn iter(&self) -> impl Iterator<Item = &(Cow<'a, str>, V)> {
        self.inline.iter().flatten().chain(self.more.iter())
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.inline[0].is_none()
    }
}

/// A value of `data` (or `type`) as read: a string, or something else, which is an error only
/// if the webhook reads that key.
#[derive(Clone, Debug, PartialEq)]
pub enum DataValue<'a> {
    Text(Cow<'a, str>),
    NotText,
}

/// `data` as read: its kept keys, or a marker that it is not an object, so [`SecretView`]
/// still refuses the shape.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per review, on the stack: a box would bring back the allocation Pairs saves"
)]
pub enum SecretData<'a> {
    Map(Pairs<'a, DataValue<'a>>),
    NotAMap,
}

/// A Secret as the admission path parses it out of a review: only what the webhook reads is
/// kept, borrowed from the review where it can be. The rest of the object (`managedFields`,
/// other labels and annotations such as `last-applied-configuration`, data keys it never reads
/// such as the old `password`) is skipped while parsing and never copied: the admission path's
/// cost is mostly this parse.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SecretObject<'a> {
    #[serde(default, borrow)]
    pub metadata: SecretMeta<'a>,
    /// A `type` that is not a string reads as none, as it does from kube's object.
    #[serde(default, borrow, rename = "type")]
    pub type_: Option<DataValue<'a>>,
    #[serde(default, borrow, deserialize_with = "read_data")]
    pub data: Option<SecretData<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct SecretMeta<'a> {
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    /// Absent on CREATE: the API server assigns it after admission.
    #[serde(default, borrow)]
    pub uid: Option<Cow<'a, str>>,
    /// The labels the webhook reads; `Some` (maybe empty) when the object has labels.
    #[serde(default, borrow, deserialize_with = "read_labels")]
    pub labels: Option<Pairs<'a>>,
    /// The webhook's own annotations; `Some` (maybe empty) when the object has annotations, so
    /// a patch still knows whether the map exists.
    #[serde(default, borrow, deserialize_with = "read_annotations")]
    pub annotations: Option<Pairs<'a>>,
}

impl<'a> SecretObject<'a> {
    /// Reads the object at `r` as the derived `Deserialize` would, but skips what it does not
    /// keep (`managedFields` above all) structurally ([`json::Reader`]) instead of parsing it.
    /// Boxed, and filled in place: it is large, and the request that holds it is moved.
    pub fn read(r: &mut json::Reader<'a>) -> Result<Box<Self>, json::Error> {
        let mut obj = Box::<SecretObject>::default();
        let (mut metadata, mut type_, mut data) = (false, None, None);
        r.object(|r, key| {
            if key.is("metadata") {
                r.once_in_place(&mut metadata, "metadata", |r| obj.metadata.read(r))?;
            } else if key.is("type") {
                r.read_once(&mut type_, "type")?;
            } else if key.is("data") {
                r.once(&mut data, "data", read_data_walk)?;
            }
            Ok(json::Walk::Next)
        })?;
        obj.type_ = type_.flatten();
        obj.data = data.and_then(|Data(d)| d);
        Ok(obj)
    }
}

impl<'a> SecretMeta<'a> {
    /// Fills in what the object's `metadata` at `r` holds of the fields kept.
    fn read(&mut self, r: &mut json::Reader<'a>) -> Result<(), json::Error> {
        let (mut namespace, mut uid, mut labels, mut annotations) = (None, None, false, false);
        r.object(|r, key| {
            // Borrowed, as `admission::read_request` reads the request's namespace.
            if key.is("namespace") {
                r.once(&mut namespace, "namespace", |r| {
                    r.nullable(json::Reader::text)
                })?;
            } else if key.is("uid") {
                r.once(&mut uid, "uid", |r| r.nullable(json::Reader::text))?;
            } else if key.is("labels") {
                r.once_in_place(&mut labels, "labels", |r| {
                    self.labels = read_kept(r, kept_label)?;
                    Ok(())
                })?;
            } else if key.is("annotations") {
                r.once_in_place(&mut annotations, "annotations", |r| {
                    self.annotations = read_kept(r, kept_annotation)?;
                    Ok(())
                })?;
            }
            Ok(json::Walk::Next)
        })?;
        self.namespace = namespace.flatten();
        self.uid = uid.flatten();
        Ok(())
    }
}

/// A map of strings keeping only the keys `keep` accepts, as [`FilteredMap`] reads it, but
/// walked with the reader: the others' values (`last-applied-configuration` above all) are
/// skipped, not parsed. Anything but an object goes to serde_json, for its `null` and its
/// error.
fn read_kept<'a>(
    r: &mut json::Reader<'a>,
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Option<Pairs<'a>>, json::Error> {
    if r.peek() != Some(b'{') {
        // `null`, or serde_json's "expected a map of strings": no key to filter either way.
        return r.read::<Labels>().map(|Labels(l)| l);
    }
    walk_kept(r, keep, json::Reader::text).map(Some)
}

/// `data` as [`read_data`] reads it, walked with the reader as [`read_kept`] walks a map.
fn read_data_walk<'a>(r: &mut json::Reader<'a>) -> Result<Data<'a>, json::Error> {
    if r.peek() != Some(b'{') {
        return r.read();
    }
    let kept = walk_kept(r, kept_data_key, json::Reader::read)?;
    Ok(Data(Some(SecretData::Map(kept))))
}

/// The object at `r` (its first byte is `{`), keeping the members whose key `keep` accepts,
/// each value read by `value`.
fn walk_kept<'a, V>(
    r: &mut json::Reader<'a>,
    keep: impl Fn(&[u8]) -> bool,
    value: impl Fn(&mut json::Reader<'a>) -> Result<V, json::Error>,
) -> Result<Pairs<'a, V>, json::Error> {
    let mut kept = Pairs::default();
    r.object(|r, key| {
        if let Some(key) = kept_key(key, &keep) {
            kept.insert(key, value(r)?);
        }
        Ok(json::Walk::Next)
    })?;
    Ok(kept)
}

/// A member's key as text if `keep` accepts its bytes (checked first: most keys are not
/// kept, and need no UTF-8 check); a kept key that is not UTF-8 is not kept.
fn kept_key<'a>(key: json::Key<'a>, keep: impl Fn(&[u8]) -> bool) -> Option<Cow<'a, str>> {
    match key {
        json::Key::Raw(raw) if keep(raw) => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
        json::Key::Decoded(k) if keep(k.as_bytes()) => Some(Cow::Owned(k)),
        _ => None,
    }
}

/// The fields read with a `deserialize_with` function, as types [`json::Reader::read`] takes.
struct Labels<'a>(Option<Pairs<'a>>);
struct Data<'a>(Option<SecretData<'a>>);

impl<'de> serde::Deserialize<'de> for Labels<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_labels(d).map(Labels)
    }
}

impl<'de> serde::Deserialize<'de> for Data<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_data(d).map(Data)
    }
}

/// The webhook's own annotations, the only ones it keeps.
const ANNOTATION_PREFIX: &str = "ecr-token-webhook/";

/// The data keys any secret kind reads.
const READ_DATA_KEYS: [&str; 3] = ["url", ".dockerconfigjson", ".dockercfg"];

/// What is kept of a secret, by key, on the bytes of the key: the same for serde_json's path
/// and the reader's.
fn kept_label(k: &[u8]) -> bool {
    k == INJECT_LABEL.as_bytes() || k == ARGOCD_SECRET_TYPE_LABEL.as_bytes()
}

fn kept_annotation(k: &[u8]) -> bool {
    k.starts_with(ANNOTATION_PREFIX.as_bytes())
}

fn kept_data_key(k: &[u8]) -> bool {
    READ_DATA_KEYS.iter().any(|d| d.as_bytes() == k)
}

fn read_labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Pairs<'de>>, D::Error> {
    d.deserialize_option(FilteredMap(kept_label))
}

fn read_annotations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Pairs<'de>>, D::Error> {
    d.deserialize_option(FilteredMap(kept_annotation))
}

/// A map of strings keeping only the keys `keep` accepts; the others' values are skipped.
struct FilteredMap<F>(F);

impl<'de, F: Fn(&[u8]) -> bool> serde::de::Visitor<'de> for FilteredMap<F> {
    type Value = Option<Pairs<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut kept = Pairs::default();
        while let Some(json::Text(key)) = m.next_key()? {
            if (self.0)(key.as_bytes()) {
                let json::Text(value) = m.next_value()?;
                kept.insert(key, value);
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Some(kept))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for DataValue<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<DataValue<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = DataValue<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a data value")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(DataValue::Text(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(DataValue::Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(DataValue::Text(Cow::Owned(v)))
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d)
                    .map(|_| DataValue::NotText)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(DataValue::NotText)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(DataValue::NotText)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(DataValue::NotText)
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// `data` with only the keys in [`READ_DATA_KEYS`]; anything but a map or null is kept as a
/// marker that it is not an object, so [`SecretView`] still refuses the shape.
fn read_data<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretData<'de>>, D::Error> {
    struct DataVisitor;
    impl<'de> serde::de::Visitor<'de> for DataVisitor {
        type Value = Option<SecretData<'de>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("secret data")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = Pairs::default();
            while let Some(json::Text(key)) = m.next_key()? {
                if kept_data_key(key.as_bytes()) {
                    let value = m.next_value()?;
                    kept.insert(key, value);
                } else {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(Some(SecretData::Map(kept)))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut s: A,
        ) -> Result<Self::Value, A::Error> {
            while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Some(SecretData::NotAMap))
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Some(SecretData::NotAMap))
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Some(SecretData::NotAMap))
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Some(SecretData::NotAMap))
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Some(SecretData::NotAMap))
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretData::NotAMap))
        }
    }
    d.deserialize_any(DataVisitor)
}

impl<'a> SecretView<'a> {
    pub fn new(obj: &'a DynamicObject) -> Self {
        let (data, data_shape_ok) = match obj.data.get("data") {
            None | Some(Value::Null) => (None, true),
            Some(Value::Object(m)) => (Some(DataMap::Map(m)), true),
            Some(_) => (None, false),
        };
        SecretView {
            labels: obj.metadata.labels.as_ref().map(Strings::Map),
            annotations: obj.metadata.annotations.as_ref().map(Strings::Map),
            type_: obj.data.get("type").and_then(Value::as_str),
            data,
            data_shape_ok,
        }
    }

    pub fn from_object(obj: &'a SecretObject<'a>) -> Self {
        let (data, data_shape_ok) = match &obj.data {
            None => (None, true),
            Some(SecretData::Map(p)) => (Some(DataMap::Read(p)), true),
            Some(SecretData::NotAMap) => (None, false),
        };
        SecretView {
            labels: obj.metadata.labels.as_ref().map(Strings::Read),
            annotations: obj.metadata.annotations.as_ref().map(Strings::Read),
            type_: match &obj.type_ {
                Some(DataValue::Text(t)) => Some(t),
                _ => None,
            },
            data,
            data_shape_ok,
        }
    }

    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels?.get(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations?.get(key)
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

    /// `data[key]` decoded and handed to `read`, if present. A short value (up to 255 bytes: a
    /// repository URL) is decoded on the stack, so the usual review allocates nothing for it.
    fn with_decoded<R>(
        &self,
        key: &str,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, InputError> {
        if !self.data_shape_ok {
            return Err(InputError::DataShape);
        }
        let Some(v) = self.data.and_then(|d| d.get(key)) else {
            return Ok(None);
        };
        let s = v.ok_or_else(|| InputError::NotString(key.to_string()))?;
        let bad = || InputError::Base64(key.to_string());
        let mut stack = [0u8; 256];
        if base64::decoded_len_estimate(s.len()) <= stack.len() {
            let n = B64.decode_slice(s, &mut stack).map_err(|_| bad())?;
            Ok(Some(read(&stack[..n])))
        } else {
            let bytes = B64.decode(s).map_err(|_| bad())?;
            Ok(Some(read(&bytes)))
        }
    }

    /// The docker config of a pull secret as a JSON object, or an empty one if absent.
    fn docker_config(&self, key: &str) -> Result<Map<String, Value>, InputError> {
        let Some(parsed) = self.with_decoded(key, |b| serde_json::from_slice::<Value>(b))? else {
            return Ok(Map::new());
        };
        let bad = |reason: String| InputError::DockerConfig {
            key: key.to_string(),
            reason,
        };
        match parsed {
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
            let read = |url: &[u8]| {
                let url = std::str::from_utf8(url).map_err(|_| InputError::UrlEncoding)?;
                registry::parse(url).map_err(|reason| InputError::NotEcrUrl {
                    url: truncate(url, 120),
                    reason,
                })
            };
            vec![
                view.with_decoded("url", read)?
                    .ok_or(InputError::MissingUrl)??,
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
fn auths(kind: SecretKind, config: &Map<String, Value>) -> Result<&Map<String, Value>, InputError> {
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

/// For the kinds that hold one token in `username` and `password` (Argo CD, basic-auth), the
/// patch [`inject`] builds depends only on the token and on whether the secret already has
/// `data`, `annotations` and the `error` annotation. This is that shape (0 to 7), so a patch can
/// be reused for every secret of the same shape that gets the same token; None for other kinds.
pub fn single_token_shape(view: &SecretView, plan: &Plan) -> Option<u8> {
    match plan.kind {
        SecretKind::ArgoRepository | SecretKind::ArgoRepoCreds | SecretKind::BasicAuth => Some(
            u8::from(view.data.is_some())
                | u8::from(view.annotations.is_some()) << 1
                | u8::from(view.annotation(ERROR_ANNOTATION).is_some()) << 2,
        ),
        SecretKind::DockerConfigJson | SecretKind::DockerCfg => None,
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

#[cfg(test)]
mod tests;
