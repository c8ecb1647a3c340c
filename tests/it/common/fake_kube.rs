//! A small in-process Kubernetes API server on 127.0.0.1 for refresher tests. It keeps Secrets,
//! Leases and Events; lists with label selectors, `limit` and `continue` (also as
//! PartialObjectMetadataList); applies merge patches; and, like the real API server, sends each
//! write of an opted-in Secret through the real webhook over TLS and applies its JSON patch
//! (failurePolicy Ignore: an unreachable webhook lets the write through unmutated).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

type Key = (String, String);

#[derive(Default)]
struct Store {
    secrets: BTreeMap<Key, Value>,
    webhook_configs: BTreeMap<String, Value>,
    leases: BTreeMap<Key, Value>,
    events: Vec<Value>,
    /// Namespaces by name, with their labels; gets of each counted.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    namespace_gets: BTreeMap<String, usize>,
    /// Status code to answer instead of patching, per secret.
    patch_faults: HashMap<Key, u16>,
    /// Status code to answer instead of replacing (PUT), per secret.
    replace_faults: HashMap<Key, u16>,
    /// Every patch of a secret: (namespace, name, when).
    patches: Vec<(String, String, Instant)>,
    lists: usize,
    /// Lists across all namespaces (`/api/v1/secrets`), which namespaced RBAC would refuse.
    cluster_lists: usize,
    requests: usize,
}

pub struct FakeKube {
    pub url: String,
    state: Arc<KubeState>,
}

struct KubeState {
    store: Mutex<Store>,
    rv: AtomicU64,
    webhook: Mutex<Option<String>>,
    client: reqwest::Client,
}

impl FakeKube {
    /// Starts the fake API server; `webhook` is the base URL of the webhook (or None), whose
    /// certificate `client` trusts.
    pub async fn start(webhook: Option<String>, client: reqwest::Client) -> FakeKube {
        let state = Arc::new(KubeState {
            store: Mutex::new(Store::default()),
            rv: AtomicU64::new(1),
            webhook: Mutex::new(webhook),
            client,
        });
        let app = Router::new()
            .route("/api/v1/secrets", get(list_all))
            .route("/api/v1/namespaces/{ns}", get(get_namespace))
            .route(
                "/api/v1/namespaces/{ns}/secrets",
                get(list_ns).post(create_secret),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(get_secret).patch(patch_secret).put(replace_secret),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
                get(get_webhook_config).patch(patch_webhook_config),
            )
            .route("/api/v1/namespaces/{ns}/events", post(create_event))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// A kube client for this API server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("kube client")
    }

    pub fn set_webhook(&self, url: Option<String>) {
        *self.state.webhook.lock().unwrap() = url;
    }

    /// Stores a secret as it is, without admission (as if the webhook had been down).
    pub fn seed(&self, mut secret: Value) {
        let ns = secret["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = secret["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        self.state.stamp(&mut secret, true);
        self.state
            .store
            .lock()
            .unwrap()
            .secrets
            .insert((ns, name), secret);
    }

    pub fn seed_webhook_config(&self, mut config: Value) {
        let name = config["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        config["metadata"]["resourceVersion"] = json!(self.state.next_rv());
        self.state
            .store
            .lock()
            .unwrap()
            .webhook_configs
            .insert(name, config);
    }

    pub fn webhook_config(&self, name: &str) -> Option<Value> {
        self.state
            .store
            .lock()
            .unwrap()
            .webhook_configs
            .get(name)
            .cloned()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .store
            .lock()
            .unwrap()
            .secrets
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn set_patch_fault(&self, ns: &str, name: &str, code: u16) {
        self.state
            .store
            .lock()
            .unwrap()
            .patch_faults
            .insert((ns.to_string(), name.to_string()), code);
    }

    /// Makes PUTs of this secret fail with `code` (None: succeed again).
    pub fn set_replace_fault(&self, ns: &str, name: &str, code: Option<u16>) {
        let mut store = self.state.store.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        match code {
            Some(c) => store.replace_faults.insert(key, c),
            None => store.replace_faults.remove(&key),
        };
    }

    pub fn events(&self) -> Vec<Value> {
        self.state.store.lock().unwrap().events.clone()
    }

    pub fn patches(&self) -> Vec<(String, String, Instant)> {
        self.state.store.lock().unwrap().patches.clone()
    }

    /// List requests served (one per page).
    /// Creates (or relabels) a namespace.
    pub fn set_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.state
            .store
            .lock()
            .unwrap()
            .namespaces
            .insert(name.to_string(), labels);
    }

    /// How often each namespace was read.
    pub fn namespace_gets(&self) -> BTreeMap<String, usize> {
        self.state.store.lock().unwrap().namespace_gets.clone()
    }

    pub fn lists(&self) -> usize {
        self.state.store.lock().unwrap().lists
    }

    pub fn cluster_lists(&self) -> usize {
        self.state.store.lock().unwrap().cluster_lists
    }

    pub fn requests(&self) -> usize {
        self.state.store.lock().unwrap().requests
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .store
            .lock()
            .unwrap()
            .leases
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
}

impl KubeState {
    fn next_rv(&self) -> String {
        self.rv.fetch_add(1, Ordering::SeqCst).to_string()
    }

    fn stamp(&self, obj: &mut Value, create: bool) {
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        if create {
            meta["uid"] = json!(format!("uid-{rv}"));
            meta["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
        }
        meta["resourceVersion"] = json!(rv);
    }

    fn count(&self) {
        self.store.lock().unwrap().requests += 1;
    }

    /// Sends a write through the webhook as the API server does; `None` means unchanged.
    async fn admit(&self, op: &str, obj: &Value, old: Option<&Value>) -> Result<Value, Response> {
        let opted_in = |o: &Value| o["metadata"]["labels"]["ecr-token-webhook/inject"] == "true";
        if !opted_in(obj) && !old.is_some_and(opted_in) {
            return Ok(obj.clone());
        }
        let Some(base) = self.webhook.lock().unwrap().clone() else {
            return Ok(obj.clone());
        };
        let review = json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": format!("review-{}", self.next_rv()),
                "kind": {"group": "", "version": "v1", "kind": "Secret"},
                "resource": {"group": "", "version": "v1", "resource": "secrets"},
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"]["namespace"],
                "operation": op,
                "userInfo": {"username": "fake-apiserver"},
                "object": obj,
                "oldObject": old,
                "dryRun": false,
            }
        });
        let sent = self
            .client
            .post(format!("{base}/mutate?timeout=5s"))
            .json(&review)
            .send()
            .await;
        // failurePolicy: Ignore.
        let Ok(resp) = sent else {
            return Ok(obj.clone());
        };
        let Ok(answer) = resp.json::<Value>().await else {
            return Ok(obj.clone());
        };
        let r = &answer["response"];
        if r["allowed"] != true {
            let msg = r["status"]["message"].as_str().unwrap_or("denied");
            return Err(status(
                400,
                "BadRequest",
                &format!("admission webhook denied the request: {msg}"),
            ));
        }
        let mut out = obj.clone();
        if let Some(p) = r["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("patch base64");
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON patch");
            json_patch::patch(&mut out, &patch.0).expect("webhook patch applies");
        }
        Ok(out)
    }
}

/// A write that carried a resourceVersion other than the stored one, as the API server says it.
fn conflict() -> Response {
    status(
        409,
        "Conflict",
        "the object has been modified; please apply your changes to the latest version",
    )
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn metadata_only(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

fn matches_selector(obj: &Value, selector: Option<&str>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',')
            .filter(|s| !s.is_empty())
            .all(|term| match term.split_once('=') {
                Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')] == v,
                None => obj["metadata"]["labels"].get(term).is_some(),
            })
    })
}

async fn list_all(
    State(s): State<Arc<KubeState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    list(&s, None, &q, &headers)
}

async fn list_ns(
    State(s): State<Arc<KubeState>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    list(&s, Some(&ns), &q, &headers)
}

fn list(
    s: &KubeState,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let mut store = s.store.lock().unwrap();
    store.requests += 1;
    store.lists += 1;
    if ns.is_none() {
        store.cluster_lists += 1;
    }
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let matching: Vec<&Value> = store
        .secrets
        .iter()
        .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
        .map(|(_, v)| v)
        .filter(|v| matches_selector(v, q.get("labelSelector").map(String::as_str)))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| {
            if wants_metadata(headers) {
                metadata_only(v)
            } else {
                (*v).clone()
            }
        })
        .collect();
    let next = start + page.len();
    let continue_ = if next < matching.len() {
        next.to_string()
    } else {
        String::new()
    };
    let rv = s.rv.load(Ordering::SeqCst).to_string();
    let (api_version, kind) = if wants_metadata(headers) {
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    } else {
        ("v1", "SecretList")
    };
    axum::Json(json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"resourceVersion": rv, "continue": continue_}, "items": page}))
    .into_response()
}

async fn get_namespace(
    State(s): State<Arc<KubeState>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.count();
    let mut store = s.store.lock().unwrap();
    *store.namespace_gets.entry(ns.clone()).or_default() += 1;
    let Some(labels) = store.namespaces.get(&ns) else {
        return status(404, "NotFound", &format!("namespaces \"{ns}\" not found"));
    };
    let obj = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels, "uid": format!("uid-ns-{ns}")}});
    if wants_metadata(&headers) {
        axum::Json(metadata_only(&obj)).into_response()
    } else {
        axum::Json(obj).into_response()
    }
}

async fn get_secret(
    State(s): State<Arc<KubeState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    s.count();
    match s.store.lock().unwrap().secrets.get(&(ns, name.clone())) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}

async fn create_secret(
    State(s): State<Arc<KubeState>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    s.count();
    let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    obj["metadata"]["namespace"] = json!(ns);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if s.store
        .lock()
        .unwrap()
        .secrets
        .contains_key(&(ns.clone(), name.clone()))
    {
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    let mut obj = match s.admit("CREATE", &obj, None).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    s.stamp(&mut obj, true);
    let mut store = s.store.lock().unwrap();
    // Another create may have won while the webhook answered.
    let key = (ns, name.clone());
    if store.secrets.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    store.secrets.insert(key, obj.clone());
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

async fn patch_secret(
    State(s): State<Arc<KubeState>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    method: Method,
    body: Bytes,
) -> Response {
    s.count();
    let key = (ns.clone(), name.clone());
    let (old, fault) = {
        let mut store = s.store.lock().unwrap();
        store
            .patches
            .push((ns.clone(), name.clone(), Instant::now()));
        (
            store.secrets.get(&key).cloned(),
            store.patch_faults.get(&key).copied(),
        )
    };
    match fault {
        Some(403) => return status(403, "Forbidden", "secrets is forbidden: cannot patch"),
        Some(code) => return status(code, "Fault", "injected fault"),
        None => {}
    }
    let Some(old) = old else {
        return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
    };
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if method != Method::PATCH || !ct.starts_with("application/merge-patch+json") {
        return status(
            415,
            "UnsupportedMediaType",
            "only merge patches are supported here",
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    let mut obj = old.clone();
    json_patch::merge(&mut obj, &patch);
    let mut obj = match s.admit("UPDATE", &obj, Some(&old)).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    s.stamp(&mut obj, false);
    s.store.lock().unwrap().secrets.insert(key, obj.clone());
    if wants_metadata(&headers) {
        axum::Json(metadata_only(&obj)).into_response()
    } else {
        axum::Json(obj).into_response()
    }
}

async fn create_event(
    State(s): State<Arc<KubeState>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    s.count();
    let Ok(mut ev) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    let rv = s.next_rv();
    let prefix = ev["metadata"]["generateName"]
        .as_str()
        .unwrap_or("event.")
        .to_string();
    ev["metadata"]["name"] = json!(format!("{prefix}{rv}"));
    ev["metadata"]["namespace"] = json!(ns);
    ev["metadata"]["resourceVersion"] = json!(rv);
    s.store.lock().unwrap().events.push(ev.clone());
    (StatusCode::CREATED, axum::Json(ev)).into_response()
}

async fn get_lease(
    State(s): State<Arc<KubeState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    s.count();
    match s.store.lock().unwrap().leases.get(&(ns, name.clone())) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => status(
            404,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn create_lease(
    State(s): State<Arc<KubeState>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Response {
    s.count();
    let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    let name = lease["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lease["metadata"]["namespace"] = json!(ns);
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    let mut store = s.store.lock().unwrap();
    if store.leases.contains_key(&(ns.clone(), name.clone())) {
        return status(409, "AlreadyExists", "lease exists");
    }
    lease["metadata"]["resourceVersion"] = json!(s.next_rv());
    store.leases.insert((ns, name), lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

async fn replace_lease(
    State(s): State<Arc<KubeState>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    s.count();
    let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    let mut store = s.store.lock().unwrap();
    let key = (ns, name);
    let Some(current) = store.leases.get(&key) else {
        return status(404, "NotFound", "lease not found");
    };
    if lease["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return conflict();
    }
    lease["metadata"]["resourceVersion"] = json!(s.next_rv());
    store.leases.insert(key, lease.clone());
    axum::Json(lease).into_response()
}

async fn replace_secret(
    State(s): State<Arc<KubeState>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    s.count();
    let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "invalid JSON");
    };
    let key = (ns, name.clone());
    let (old, fault) = {
        let store = s.store.lock().unwrap();
        (
            store.secrets.get(&key).cloned(),
            store.replace_faults.get(&key).copied(),
        )
    };
    if let Some(code) = fault {
        return status(code, "Forbidden", "secrets is forbidden: cannot update");
    }
    let Some(old) = old else {
        return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
    };
    if obj["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
        return conflict();
    }
    let mut obj = match s.admit("UPDATE", &obj, Some(&old)).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    s.stamp(&mut obj, false);
    let mut store = s.store.lock().unwrap();
    // Another writer may have won while the webhook answered.
    if store
        .secrets
        .get(&key)
        .map(|v| &v["metadata"]["resourceVersion"])
        != Some(&old["metadata"]["resourceVersion"])
    {
        return conflict();
    }
    store.secrets.insert(key, obj.clone());
    axum::Json(obj).into_response()
}

async fn get_webhook_config(State(s): State<Arc<KubeState>>, Path(name): Path<String>) -> Response {
    s.count();
    match s.store.lock().unwrap().webhook_configs.get(&name) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => status(
            404,
            "NotFound",
            &format!("mutatingwebhookconfigurations \"{name}\" not found"),
        ),
    }
}

async fn patch_webhook_config(
    State(s): State<Arc<KubeState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.count();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/json-patch+json") {
        return status(
            415,
            "UnsupportedMediaType",
            "only JSON patches are supported here",
        );
    }
    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(&body) else {
        return status(400, "BadRequest", "invalid JSON patch");
    };
    let rv = s.next_rv();
    let mut store = s.store.lock().unwrap();
    let Some(config) = store.webhook_configs.get_mut(&name) else {
        return status(404, "NotFound", "not found");
    };
    let mut updated = config.clone();
    if let Err(e) = json_patch::patch(&mut updated, &patch.0) {
        return status(422, "Invalid", &e.to_string());
    }
    updated["metadata"]["resourceVersion"] = json!(rv);
    *config = updated.clone();
    axum::Json(updated).into_response()
}
