//! `ecr-token-webhook status`: the state of opted-in secrets at a glance, with the likely cause
//! of each problem.
//!
//! [`classify`] turns a Secret into a [`Row`] (state and reasons), [`Verdict`] sums rows up, and
//! [`render_text`] / [`render_json`] print them: all pure. [`run`] is the Kubernetes edge: one
//! paginated list with the opt-in label selector (or one get), with the user's kubeconfig.
//! Secrets are read whole (a pull secret's registries are in its data) but a row holds only
//! hosts, annotations and derived facts: no secret value is ever printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, ListParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use crate::cli::{Known, OutputFormat, StatusArgs};
use crate::policy::{self, Decision, Labels, Reason, Refusal};
use crate::refresher::RefresherConfig;
use crate::secret::{
    self, ERROR_ANNOTATION, EXPIRES_AT_ANNOTATION, INJECT_LABEL, InputError, ROLE_ARN_ANNOTATION,
    SecretKind, SecretView, TOUCHED_AT_ANNOTATION,
};
/// Re-exported: `status` prints these states.
pub use crate::state::State;
use crate::state::error_annotation;
use crate::text::truncate;
use crate::time::{parse_rfc3339, rfc3339};

/// Exit codes: every secret fresh (or due and on time), a secret with a problem, and "could
/// not tell" (no cluster, no access, bad usage; clap's own usage errors are 2 as well).
pub const EXIT_OK: u8 = 0;
pub const EXIT_PROBLEM: u8 = 1;
pub const EXIT_CANNOT_TELL: u8 = 2;

/// Past the refresher's spread window, a due secret gets this much longer (a pass interval,
/// touch pacing, a failing touch's back-off) before it is called overdue.
const OVERDUE_GRACE: Duration = Duration::from_secs(15 * 60);

/// A timestamp annotation as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    Missing,
    /// Not an RFC 3339 time; the value as found, bounded.
    Unreadable(String),
    At(SystemTime),
}

impl Stamp {
    fn read(value: Option<&str>) -> Stamp {
        match value {
            None => Stamp::Missing,
            Some(v) => match parse_rfc3339(v) {
                Some(t) => Stamp::At(t),
                None => Stamp::Unreadable(truncate(v, 64)),
            },
        }
    }

    fn at(&self) -> Option<SystemTime> {
        match self {
            Stamp::At(t) => Some(*t),
            _ => None,
        }
    }

    /// The annotation's value for JSON: the time as written, or what was found.
    fn raw(&self) -> Value {
        match self {
            Stamp::Missing => Value::Null,
            Stamp::Unreadable(s) => json!(s),
            Stamp::At(t) => json!(rfc3339(*t)),
        }
    }
}

/// Everything classification depends on besides the secret.
#[derive(Clone, Debug)]
pub struct Context {
    pub now: SystemTime,
    /// The webhook's `--refresh-margin`.
    pub margin: Duration,
    /// The webhook's own namespace, which its configuration's namespaceSelector leaves out.
    pub webhook_namespace: String,
    pub known: Known,
    /// Labels of the namespaces whose policy rules select by label (read by [`run`]), or why
    /// they could not be read.
    pub namespace_labels: BTreeMap<String, Result<BTreeMap<String, String>, String>>,
}

/// One secret, as `status` shows it. Holds no secret value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `None`: a type the webhook does not handle.
    pub kind: Option<SecretKind>,
    /// The ECR hosts the webhook would write.
    pub registries: Vec<String>,
    pub expires_at: Stamp,
    pub touched_at: Stamp,
    pub error: Option<String>,
    pub state: State,
    /// The likely causes, in the order to check them; empty when there is nothing to do.
    pub reasons: Vec<String>,
}

/// Classifies a secret as the API server returns it.
pub fn classify(obj: &DynamicObject, cx: &Context) -> Row {
    let view = SecretView::new(obj);
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let plan = secret::plan(&view);
    let expires_at = Stamp::read(view.annotation(EXPIRES_AT_ANNOTATION));
    let touched_at = Stamp::read(view.annotation(TOUCHED_AT_ANNOTATION));
    let error = error_annotation(view.annotation(ERROR_ANNOTATION)).map(str::to_string);
    let mut row = Row {
        kind: view.kind().ok(),
        registries: plan
            .as_ref()
            .map(|p| p.registries.iter().map(|r| r.host.clone()).collect())
            .unwrap_or_default(),
        namespace,
        name,
        expires_at,
        touched_at,
        error,
        state: State::Fresh,
        reasons: Vec::new(),
    };
    let ex = Explainer {
        row: &row,
        cx,
        view: &view,
    };
    let (state, reasons) = if !view.opted_in() {
        (State::NotOptedIn, ex.not_opted_in(plan.as_ref().err()))
    } else {
        let refusals = ex.policy_refusals(plan.as_ref().ok());
        let state = State::of(
            refusals.is_some(),
            row.error.as_deref(),
            row.expires_at.at(),
            cx.now,
            cx.margin,
        );
        let reasons = match (state, refusals, &row.error, row.expires_at.at()) {
            (State::OutsidePolicy, Some(refusals), _, _) => refusals,
            // The webhook's own refusal names the rule; status was not told the policy to check.
            (State::OutsidePolicy, None, Some(error), _) => ex.refused_by_webhook(error),
            (State::Error, _, Some(error), _) => ex.error(error, plan.as_ref().err()),
            (State::Expired, _, _, Some(t)) => ex.expired(t),
            (State::Due, _, _, Some(t)) => ex.due(t, t.duration_since(cx.now).unwrap_or_default()),
            (State::NoToken, ..) => ex.no_token(plan.as_ref().err()),
            _ => Vec::new(),
        };
        (state, reasons)
    };
    row.state = state;
    row.reasons = reasons;
    row
}

/// What a refusal means for the secret.
fn consequence(r: &Refusal) -> &'static str {
    match r.reason {
        Reason::Namespace { .. } => {
            "the webhook writes no token (only the error annotation) and the refresher skips the namespace"
        }
        _ => "the webhook writes no token (only the error annotation)",
    }
}

/// Builds the reasons: what the secret shows, then what to check, the way
/// docs/troubleshooting.md orders it.
struct Explainer<'a> {
    row: &'a Row,
    cx: &'a Context,
    view: &'a SecretView<'a>,
}

impl Explainer<'_> {
    fn kubectl(&self) -> String {
        format!("kubectl -n {} ", self.row.namespace)
    }

    fn not_opted_in(&self, input: Option<&InputError>) -> Vec<String> {
        let label = format!(
            "{}label secret {} {INJECT_LABEL}=true",
            self.kubectl(),
            self.row.name
        );
        let mut out = vec![match self.view.label(INJECT_LABEL) {
            None => format!("not opted in: add the label: {label}"),
            Some(v) => format!(
                "not opted in: label {INJECT_LABEL} is {:?}, and only \"true\" opts in: {label} --overwrite",
                truncate(v, 40)
            ),
        }];
        if let Some(e) = input {
            out.push(format!(
                "even opted in, the webhook could not serve it: {}",
                self.input(e)
            ));
        }
        out
    }

    /// The refusals the known policy makes, or `None` when it allows the secret (or is unknown).
    fn policy_refusals(&self, plan: Option<&secret::Plan>) -> Option<Vec<String>> {
        let known = &self.cx.known;
        let ns = self.row.namespace.as_str();
        let registries = plan.map(|p| p.registries.as_slice()).unwrap_or_default();
        let role = plan.and_then(|p| p.role_arn.as_deref());
        let refusals = match &known.policy {
            Some(policy) => {
                let labels = match self.cx.namespace_labels.get(ns) {
                    Some(Ok(l)) => Labels::Known(l),
                    Some(Err(e)) => Labels::Unknown(e),
                    None => Labels::Unknown("status did not read them"),
                };
                match policy.decide(ns, labels, registries, role) {
                    Decision::Allowed { .. } => Vec::new(),
                    Decision::Refused(r) => vec![r],
                }
            }
            None => policy::check_flags(
                known.namespaces.as_deref(),
                known.registries.as_deref(),
                known.role_arns.as_deref(),
                ns,
                registries,
                role,
            ),
        };
        let out: Vec<String> = refusals
            .iter()
            .map(|r| format!("{r}: {}", consequence(r)))
            .collect();
        (!out.is_empty()).then_some(out)
    }

    /// The webhook's refusal, from the `error` annotation, when status was not told the policy.
    fn refused_by_webhook(&self, error: &str) -> Vec<String> {
        vec![
            format!("the webhook refused it at the last write: {error}"),
            "the error names the policy rule (in the webhook's --policy-file, or its --allowed-* \
             flags): change the secret or the rule; the next write or touch clears the annotation"
                .to_string(),
        ]
    }

    fn error(&self, error: &str, input: Option<&InputError>) -> Vec<String> {
        let mut out = vec![format!("the webhook could not write a token: {error}")];
        if let Some(e) = input {
            let input = self.input(e);
            out.push(if error.contains(&input) {
                "fix the secret as the error says; the next write or touch clears it".to_string()
            } else {
                format!("fix the secret: {input}")
            });
        } else if error.starts_with("no ECR token") {
            out.push(
                "ECR or AWS access is failing: see the webhook's logs (ECR token request failed), \
                 ecr_token_webhook_ecr_requests_total, and the IAM role (README: AWS access)"
                    .to_string(),
            );
        } else {
            out.push(format!(
                "the secret looks servable now; the error is from an earlier write: {}",
                self.touch_yourself()
            ));
        }
        match self.row.expires_at {
            Stamp::At(t) if t > self.cx.now => out.push(format!(
                "the token written before is still valid, for {}",
                compact(t.duration_since(self.cx.now).unwrap_or_default())
            )),
            Stamp::At(t) => out.push(format!(
                "the token written before expired {} ago",
                compact(self.cx.now.duration_since(t).unwrap_or_default())
            )),
            _ => {}
        }
        out
    }

    fn no_token(&self, input: Option<&InputError>) -> Vec<String> {
        let mut out = Vec::new();
        if let Stamp::Unreadable(v) = &self.row.expires_at {
            out.push(format!(
                "{EXPIRES_AT_ANNOTATION} {v:?} is not an RFC 3339 time; the next token written replaces it"
            ));
        }
        if let Some(why) = self.excluded_namespace() {
            out.push(why);
        }
        if let Some(e) = input {
            out.push(format!("the webhook cannot serve it: {}", self.input(e)));
        }
        out.push(
            "no expires-at and no error annotation: the webhook has not written this secret. It \
             was not called (down or unreachable at the last write, or the namespace is left out \
             by the webhook configuration's namespaceSelector), or it refused the secret by \
             policy (a warning at write time, no annotation)"
                .to_string(),
        );
        out.extend(self.unknown_policy());
        match &self.row.touched_at {
            Stamp::At(t) => out.push(format!(
                "the refresher touched it {} and the touch did not take; the Events say why: {}describe secret {}",
                relative_past(self.cx.now, *t),
                self.kubectl(),
                self.row.name
            )),
            _ => out.push(format!(
                "the refresher has not touched it: it touches a secret without expires-at on its next pass; if it does not, check that it runs, one replica leads (ecr_token_webhook_leader) and --secret-namespaces (if set) includes {}",
                self.row.namespace
            )),
        }
        out.push(self.touch_yourself());
        out
    }

    fn expired(&self, t: SystemTime) -> Vec<String> {
        let mut out = vec![format!(
            "the token expired {} ago ({EXPIRES_AT_ANNOTATION} {})",
            compact(self.cx.now.duration_since(t).unwrap_or_default()),
            rfc3339(t)
        )];
        out.extend(self.excluded_namespace());
        out.push(self.not_refreshed(t));
        out
    }

    fn due(&self, t: SystemTime, left: Duration) -> Vec<String> {
        let window = RefresherConfig::default_spread(self.cx.margin);
        let deadline = self
            .cx
            .margin
            .saturating_sub(window)
            .saturating_sub(OVERDUE_GRACE);
        if left >= deadline {
            return Vec::new();
        }
        vec![
            format!(
                "overdue: {} left, but the refresher replaces tokens when less than --refresh-margin ({}) is left",
                compact(left),
                humantime::format_duration(self.cx.margin)
            ),
            self.not_refreshed(t),
        ]
    }

    /// Why a token that became due was not replaced, from the last touch.
    fn not_refreshed(&self, expires: SystemTime) -> String {
        let became_due = expires.checked_sub(self.cx.margin).unwrap_or(expires);
        match self.row.touched_at.at() {
            Some(touched) if touched >= became_due => format!(
                "the refresher touched it {} but {EXPIRES_AT_ANNOTATION} did not move: the webhook was not called for it (unreachable, or the namespace is outside its namespaceSelector) or had no newer token (ECR failing); the Events say which: {}describe secret {}",
                relative_past(self.cx.now, touched),
                self.kubectl(),
                self.row.name
            ),
            touched => format!(
                "the refresher has not touched it since it became due ({}): check that it runs, one replica leads (ecr_token_webhook_leader), --secret-namespaces (if set) includes {}, and its logs (refresh pass, touch forbidden)",
                match touched {
                    Some(t) => format!("last touched {}", relative_past(self.cx.now, t)),
                    None => "never touched".to_string(),
                },
                self.row.namespace
            ),
        }
    }

    fn excluded_namespace(&self) -> Option<String> {
        let ns = self.row.namespace.as_str();
        (ns == "kube-system" || ns == self.cx.webhook_namespace).then(|| {
            format!(
                "the API server never calls the webhook for secrets in namespace {ns}: the webhook configuration's namespaceSelector leaves out kube-system and the webhook's own namespace ({}); keep opted-in secrets elsewhere",
                self.cx.webhook_namespace
            )
        })
    }

    /// What the policy could refuse that `status` was not told about.
    fn unknown_policy(&self) -> Vec<String> {
        let known = &self.cx.known;
        if known.policy.is_some() {
            return Vec::new();
        }
        let mut unknown = Vec::new();
        if known.namespaces.is_none() {
            unknown.push("--allowed-namespaces");
        }
        if known.registries.is_none() {
            unknown.push("--allowed-registries");
        }
        let mut out = Vec::new();
        if self.view.annotation(ROLE_ARN_ANNOTATION).is_some() && known.role_arns.is_none() {
            out.push(format!(
                "it names a role ({ROLE_ARN_ANNOTATION}): the webhook honours only roles in its --allowed-role-arns, none by default"
            ));
            unknown.push("--allowed-role-arns");
        }
        if !unknown.is_empty() {
            out.push(format!(
                "to rule out the policy here, give status the webhook's --policy-file, or its {}",
                unknown.join(", ")
            ));
        }
        out
    }

    fn touch_yourself(&self) -> String {
        format!(
            "to see the webhook's answer, touch it yourself: {}annotate secret {} {TOUCHED_AT_ANNOTATION}=\"$(date -u +%FT%TZ)\" --overwrite",
            self.kubectl(),
            self.row.name
        )
    }

    /// An input error, with the hosts a pull secret names when none is ECR.
    fn input(&self, e: &InputError) -> String {
        match e {
            // A url with user info would print a credential; say what is wrong without it.
            InputError::NotEcrUrl { url, reason } if url.contains('@') => {
                format!("data.url is not an ECR registry: {reason}")
            }
            InputError::NoRegistries => {
                let hosts = secret::docker_config_hosts(self.view);
                if hosts.is_empty() {
                    e.to_string()
                } else {
                    format!(
                        "none of its registries is an ECR host ({}); only ECR registries (private, and ECR Public) get tokens: {e}",
                        hosts.join(", ")
                    )
                }
            }
            _ => e.to_string(),
        }
    }
}

/// `5h12m`, `3m20s`, `45s`, `2d3h`: the two largest units, the second dropped at zero.
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    let (d_, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if d_ > 0 {
        two(d_, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m >= 10 {
        format!("{m}m")
    } else if m > 0 {
        two(m, "m", sec, "s")
    } else {
        format!("{sec}s")
    }
}

/// `12m ago`, or `in 2m` for a time ahead of this clock.
fn relative_past(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", compact(d)),
        Err(e) => format!("in {}", compact(e.duration())),
    }
}

fn expires_cell(now: SystemTime, s: &Stamp) -> String {
    match s {
        Stamp::Missing => "-".to_string(),
        Stamp::Unreadable(_) => "unreadable".to_string(),
        Stamp::At(t) => match t.duration_since(now) {
            Ok(left) if !left.is_zero() => format!("in {}", compact(left)),
            Ok(_) => "expired 0s ago".to_string(),
            Err(e) => format!("expired {} ago", compact(e.duration())),
        },
    }
}

fn touched_cell(now: SystemTime, s: &Stamp) -> String {
    match s {
        Stamp::Missing => "never".to_string(),
        Stamp::Unreadable(_) => "unreadable".to_string(),
        Stamp::At(t) => relative_past(now, *t),
    }
}

fn kind_cell(kind: Option<SecretKind>) -> &'static str {
    kind.map_or("unsupported", SecretKind::metric_label)
}

/// What to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
    One { namespace: String, name: String },
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Scope::All => "in all namespaces".into(),
            Scope::Namespace(ns) => format!("in namespace {ns}"),
            Scope::One { namespace, name } => format!("{namespace}/{name}"),
        }
    }
}

/// The counts behind the one-line verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub total: usize,
    /// Per state, in [`State::ALL`] order.
    pub counts: Vec<(State, usize)>,
}

impl Verdict {
    pub fn of(rows: &[Row]) -> Verdict {
        Verdict {
            total: rows.len(),
            counts: State::ALL
                .iter()
                .map(|s| (*s, rows.iter().filter(|r| r.state == *s).count()))
                .collect(),
        }
    }

    pub fn ok(&self) -> bool {
        self.counts.iter().all(|(s, n)| !s.is_problem() || *n == 0)
    }

    pub fn exit_code(&self) -> u8 {
        if self.ok() { EXIT_OK } else { EXIT_PROBLEM }
    }

    /// `12 secrets in all namespaces: 11 fresh, 1 with an error`; for one secret,
    /// `secret apps/pull has an error`.
    pub fn summary(&self, scope: &Scope) -> String {
        let where_ = scope.describe();
        if let (Scope::One { .. }, Some((state, _))) =
            (scope, self.counts.iter().find(|(_, n)| *n > 0))
        {
            return format!("secret {where_} {}", state.sentence());
        }
        if self.total == 0 {
            return format!("no opted-in secrets ({INJECT_LABEL}=true) {where_}");
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.phrase()))
            .collect();
        let noun = if self.total == 1 { "secret" } else { "secrets" };
        format!("{} {noun} {where_}: {}", self.total, parts.join(", "))
    }
}

/// The aligned table, the reasons of each secret that has any, and the verdict.
pub fn render_text(rows: &[Row], now: SystemTime, scope: &Scope) -> String {
    let verdict = Verdict::of(rows);
    let mut out = String::new();
    if !rows.is_empty() {
        let header = [
            "NAMESPACE",
            "NAME",
            "KIND",
            "REGISTRIES",
            "EXPIRES",
            "TOUCHED",
            "STATE",
        ]
        .map(String::from);
        let cells: Vec<[String; 7]> = rows
            .iter()
            .map(|r| {
                [
                    r.namespace.clone(),
                    r.name.clone(),
                    kind_cell(r.kind).to_string(),
                    if r.registries.is_empty() {
                        "-".to_string()
                    } else {
                        r.registries.join(",")
                    },
                    expires_cell(now, &r.expires_at),
                    touched_cell(now, &r.touched_at),
                    r.state.label().to_string(),
                ]
            })
            .collect();
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}   ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for r in rows.iter().filter(|r| !r.reasons.is_empty()) {
            let _ = writeln!(out, "\n{}/{} ({}):", r.namespace, r.name, r.state.label());
            for reason in &r.reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        }
        out.push('\n');
    }
    out.push_str(&verdict.summary(scope));
    out.push('\n');
    out
}

/// The machine-readable document: every row's fields and the verdict.
pub fn render_json(rows: &[Row], now: SystemTime, scope: &Scope, margin: Duration) -> String {
    let verdict = Verdict::of(rows);
    let secs = |from: SystemTime, to: SystemTime| -> i64 {
        match to.duration_since(from) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    };
    let secrets: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "namespace": r.namespace,
                "name": r.name,
                "kind": r.kind.map(SecretKind::metric_label),
                "registries": r.registries,
                "expiresAt": r.expires_at.raw(),
                "expiresInSeconds": r.expires_at.at().map(|t| secs(now, t)),
                "touchedAt": r.touched_at.raw(),
                "touchedSecondsAgo": r.touched_at.at().map(|t| secs(t, now)),
                "error": r.error,
                "state": r.state.label(),
                "reasons": r.reasons,
            })
        })
        .collect();
    let states: serde_json::Map<String, Value> = verdict
        .counts
        .iter()
        .map(|(s, n)| (s.label().to_string(), json!(n)))
        .collect();
    let doc = json!({
        "checkedAt": rfc3339(now),
        "refreshMargin": humantime::format_duration(margin).to_string(),
        "secrets": secrets,
        "verdict": {
            "ok": verdict.ok(),
            "total": verdict.total,
            "states": states,
            "summary": verdict.summary(scope),
        },
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

// ---- The Kubernetes edge ----

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

async fn report(args: &StatusArgs) -> Result<(String, u8), String> {
    let known = args.known()?;
    let mut config = match &args.context {
        Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("kubeconfig context {context:?}: {e}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (kubeconfig or in-cluster): {e}"))?,
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
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let objects = fetch(&client, &scope)
        .await
        .map_err(|e| explain_kube_error(&e, &scope, &server))?;
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
) -> BTreeMap<String, Result<BTreeMap<String, String>, String>> {
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
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(chain(&e)),
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
