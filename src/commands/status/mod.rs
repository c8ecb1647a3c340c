//! `ecr-token-webhook status`: the state of opted-in secrets at a glance, with the likely cause
//! of each problem.
//!
//! [`classify`] turns a Secret into a [`Row`] (state and reasons), [`Verdict`] sums rows up, and
//! [`render_text`] / [`render_json`] print them: all pure (`classify.rs`, `render.rs`). [`run`], here, is the Kubernetes edge: one
//! paginated list with the opt-in label selector (or one get), with the user's kubeconfig.
//! Secrets are read whole (a pull secret's registries are in its data) but a row holds only
//! hosts, annotations and derived facts: no secret value is ever printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, ListParams};
use kube::core::DynamicObject;

use crate::commands::cli::{Known, OutputFormat, StatusArgs};
use crate::policy::namespaces::LabelsError;
use crate::secret::INJECT_LABEL;

mod classify;
mod render;

/// Re-exported: `status` prints these states.
pub use crate::state::State;
pub use classify::{Context, Row, Stamp, classify};
pub use render::{Scope, Verdict, render_json, render_text};

/// Exit codes: every secret fresh (or due and on time), a secret with a problem, and "could
/// not tell" (no cluster, no access, bad usage; clap's own usage errors are 2 as well).
pub const EXIT_OK: u8 = 0;
pub const EXIT_PROBLEM: u8 = 1;
pub const EXIT_CANNOT_TELL: u8 = 2;

/// Secrets per page: bounded memory on clusters with many opted-in secrets.
const PAGE_SIZE: u32 = 500;
/// A bound on the pagination loop: a million secrets at 500 a page.
const MAX_PAGES: usize = 2000;

/// Runs the command: prints the report on stdout and returns the exit code. Errors that keep
/// it from telling (no kubeconfig, no access) go to stderr with [`EXIT_CANNOT_TELL`].
pub async fn run(args: &StatusArgs) -> u8 {
    match report(args).await {
        Ok((text, code)) => {
            print!("{text}");
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CANNOT_TELL
        }
    }
}

/// Errors are only printed, hence `anyhow`.
async fn report(args: &StatusArgs) -> anyhow::Result<(String, u8)> {
    let known = args.policy.known()?;
    let mut config = match &args.context {
        Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("kubeconfig context {context:?}: {e}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow!("no Kubernetes configuration (kubeconfig or in-cluster): {e}"))?,
    };
    // A status check should answer or fail promptly, not wait out kube's 295 s read timeout.
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let server = config.cluster_url.to_string();
    let scope = match (&args.name, &args.namespace) {
        (Some(name), ns) => Scope::One {
            namespace: ns
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone()),
            name: name.clone(),
        },
        (None, Some(ns)) => Scope::Namespace(ns.clone()),
        (None, None) => Scope::All,
    };
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow!("cannot build a Kubernetes client: {e}"))?;
    let objects = fetch(&client, &scope)
        .await
        .map_err(|e| anyhow!(explain_kube_error(&e, &scope, &server)))?;
    let now = SystemTime::now();
    let cx = Context {
        now,
        margin: args.refresh_margin,
        webhook_namespace: args.webhook_namespace.clone(),
        namespace_labels: namespace_labels(&client, &known, &objects).await,
        known,
    };
    let mut rows: Vec<Row> = objects.iter().map(|o| classify(o, &cx)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let verdict = Verdict::of(&rows);
    let text = match args.output {
        OutputFormat::Text => render_text(&rows, now, &scope),
        OutputFormat::Json => render_json(&rows, now, &scope, args.refresh_margin),
    };
    Ok((text, verdict.exit_code()))
}

/// The labels of each namespace whose policy rules select by label, read once per namespace.
async fn namespace_labels(
    client: &kube::Client,
    known: &Known,
    objects: &[DynamicObject],
) -> BTreeMap<String, Result<BTreeMap<String, String>, LabelsError>> {
    let mut out = BTreeMap::new();
    let Some(policy) = &known.policy else {
        return out;
    };
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in objects
        .iter()
        .filter_map(|o| o.metadata.namespace.as_deref())
    {
        if out.contains_key(ns) || !policy.needs_labels(ns) {
            continue;
        }
        let labels = match api.get_metadata(ns).await {
            Ok(m) => Ok(m.metadata.labels.unwrap_or_default()),
            Err(kube::Error::Api(s)) => Err(LabelsError::Api(s.message)),
            Err(e) => Err(LabelsError::Unreachable(chain(&e))),
        };
        out.insert(ns.to_string(), labels);
    }
    out
}

/// The opted-in secrets in scope (a paginated list with the label selector), or the one named.
async fn fetch(client: &kube::Client, scope: &Scope) -> Result<Vec<DynamicObject>, kube::Error> {
    let resource = ApiResource::erase::<Secret>(&());
    let api: Api<DynamicObject> = match scope {
        Scope::All => Api::all_with(client.clone(), &resource),
        Scope::Namespace(ns) | Scope::One { namespace: ns, .. } => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    if let Scope::One { name, .. } = scope {
        return api.get(name).await.map(|o| vec![o]);
    }
    let selector = format!("{INJECT_LABEL}=true");
    let mut out = Vec::new();
    let mut continue_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut lp = ListParams::default().labels(&selector).limit(PAGE_SIZE);
        if let Some(token) = &continue_token {
            lp = lp.continue_token(token);
        }
        let page = api.list(&lp).await?;
        out.extend(page.items);
        continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// One line that says what failed and what to try.
fn explain_kube_error(e: &kube::Error, scope: &Scope, server: &str) -> String {
    match (e, scope) {
        (kube::Error::Api(s), Scope::One { namespace, name }) if s.code == 404 => {
            format!("secret {namespace}/{name} not found")
        }
        (kube::Error::Api(s), Scope::All) if s.code == 403 => format!(
            "cannot list secrets in all namespaces: {}; with access to some namespaces only, use -n NAMESPACE",
            s.message
        ),
        (kube::Error::Api(s), _) if s.code == 403 => {
            format!("cannot read secrets: {}", s.message)
        }
        (kube::Error::Api(s), _) if s.code == 401 => format!(
            "the API server at {server} did not accept the kubeconfig's credentials: {}",
            s.message
        ),
        (kube::Error::Api(s), _) => format!("the API server at {server} answered: {}", s.message),
        _ => format!("cannot reach the API server at {server}: {}", chain(e)),
    }
}

/// An error and its causes on one line: kube's own message alone often says only "client error".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            let _ = write!(out, ": {s_text}");
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
