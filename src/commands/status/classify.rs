//! A secret's state and the likely cause of its problem, from the Secret alone: pure.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kube::core::DynamicObject;
use serde_json::{Value, json};

use crate::commands::cli::Known;
use crate::policy::namespaces::LabelsError;
use crate::policy::{self, Decision, Labels, Reason, Refusal};
use crate::refresher::RefresherConfig;
use crate::secret::{
    self, ERROR_ANNOTATION, EXPIRES_AT_ANNOTATION, INJECT_LABEL, InputError, ROLE_ARN_ANNOTATION,
    SecretKind, SecretView, TOUCHED_AT_ANNOTATION,
};
use crate::state::State;
use crate::state::error_annotation;
use crate::text::truncate;
use crate::time::{compact, parse_rfc3339, relative_past, rfc3339};

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

    pub(super) fn at(&self) -> Option<SystemTime> {
        match self {
            Stamp::At(t) => Some(*t),
            _ => None,
        }
    }

    /// The annotation's value for JSON: the time as written, or what was found.
    pub(super) fn raw(&self) -> Value {
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
    pub namespace_labels: BTreeMap<String, Result<BTreeMap<String, String>, LabelsError>>,
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
                let unknown;
                let labels = match self.cx.namespace_labels.get(ns) {
                    Some(Ok(l)) => Labels::Known(l),
                    Some(Err(e)) => {
                        unknown = e.to_string();
                        Labels::Unknown(&unknown)
                    }
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
