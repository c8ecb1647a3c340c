use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::policy::{Pattern, Policy, RegistryPattern};
use crate::secret::{
    ERROR_ANNOTATION, EXPIRES_AT_ANNOTATION, ROLE_ARN_ANNOTATION, SecretKind, TOUCHED_AT_ANNOTATION,
};
use crate::time::{compact, rfc3339};

use super::render::{expires_cell, touched_cell};
use super::*;

/// The examples in docs/troubleshooting.md are this module's output, checked here.
const DOCS: &str = include_str!("../../../docs/troubleshooting.md");
const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const EUW1: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";
const H: u64 = 3600;
const M: u64 = 60;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// `now` moved by `secs` (negative: in the past), as an annotation value.
fn at(secs: i64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs((1_800_000_000 + secs) as u64))
}

fn cx() -> Context {
    Context {
        now: now(),
        margin: Duration::from_secs(6 * H),
        webhook_namespace: "ecr-token-webhook".into(),
        known: Known::default(),
        namespace_labels: BTreeMap::new(),
    }
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

/// A secret: `type`, labels, annotations and data as JSON.
fn secret(ns: &str, type_: &str, labels: Value, annotations: Value, data: Value) -> DynamicObject {
    let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"name": "s", "namespace": ns, "labels": labels, "annotations": annotations}});
    if !data.is_null() {
        obj["data"] = data;
    }
    serde_json::from_value(obj).expect("test secret")
}

fn opted() -> Value {
    json!({INJECT_LABEL: "true"})
}

fn argo(annotations: Value, url: &str) -> DynamicObject {
    secret(
        "argocd",
        "Opaque",
        json!({INJECT_LABEL: "true", "argocd.argoproj.io/secret-type": "repository"}),
        annotations,
        json!({"url": b64(url), "password": b64("s3cr3t-password"), "username": b64("AWS")}),
    )
}

fn dockerconfig(annotations: Value, hosts: &[&str]) -> DynamicObject {
    let auths: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|h| (h.to_string(), json!({"auth": b64("AWS:s3cr3t-password")})))
        .collect();
    secret(
        "apps",
        "kubernetes.io/dockerconfigjson",
        opted(),
        annotations,
        json!({".dockerconfigjson": b64(&json!({"auths": auths}).to_string())}),
    )
}

fn ann(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

struct Case {
    what: &'static str,
    obj: DynamicObject,
    cx: Context,
    state: State,
    /// Each must appear in some reason, in this order.
    reasons: &'static [&'static str],
}

fn case(
    what: &'static str,
    obj: DynamicObject,
    state: State,
    reasons: &'static [&'static str],
) -> Case {
    Case {
        what,
        obj,
        cx: cx(),
        state,
        reasons,
    }
}

#[test]
fn classifies_secrets_and_explains_problems() {
    let exp = EXPIRES_AT_ANNOTATION;
    let tch = TOUCHED_AT_ANNOTATION;
    let err = ERROR_ANNOTATION;
    let fresh = at(9 * H as i64);
    let mut cases = vec![
        case(
            "fresh",
            argo(ann(&[(exp, &fresh), (tch, &at(-3 * H as i64))]), USE1),
            State::Fresh,
            &[],
        ),
        case(
            "due, inside the refresher's window",
            argo(ann(&[(exp, &at((5 * H + 30 * M) as i64))]), USE1),
            State::Due,
            &[],
        ),
        case(
            "due and overdue, never touched",
            argo(ann(&[(exp, &at(2 * H as i64))]), USE1),
            State::Due,
            &[
                "overdue: 2h left",
                "has not touched it since it became due (never touched)",
            ],
        ),
        case(
            "due and overdue, touched since it became due",
            argo(
                ann(&[(exp, &at(2 * H as i64)), (tch, &at(-5 * M as i64))]),
                USE1,
            ),
            State::Due,
            &[
                "overdue",
                "touched it 5m ago but ecr-token-webhook/expires-at did not move",
                "kubectl -n argocd describe secret s",
            ],
        ),
        case(
            "expired, last touched before it became due",
            argo(
                ann(&[(exp, &at(-3 * M as i64)), (tch, &at(-14 * H as i64))]),
                USE1,
            ),
            State::Expired,
            &[
                "the token expired 3m ago",
                "has not touched it since it became due (last touched 14h ago)",
                "ecr_token_webhook_leader",
            ],
        ),
        case(
            "no annotations at all",
            argo(json!(null), USE1),
            State::NoToken,
            &[
                "no expires-at and no error annotation",
                "--allowed-namespaces, --allowed-registries",
                "has not touched it",
                "touch it yourself: kubectl -n argocd annotate secret s ecr-token-webhook/touched-at=",
            ],
        ),
        case(
            "no token, touched",
            argo(ann(&[(tch, &at(-2 * M as i64))]), USE1),
            State::NoToken,
            &[
                "no expires-at",
                "touched it 2m ago and the touch did not take",
            ],
        ),
        case(
            "unreadable expires-at",
            argo(ann(&[(exp, "tomorrow")]), USE1),
            State::NoToken,
            &[
                "ecr-token-webhook/expires-at \"tomorrow\" is not an RFC 3339 time",
                "no expires-at",
            ],
        ),
        case(
            "unreadable touched-at, fresh token",
            argo(ann(&[(exp, &fresh), (tch, "garbage")]), USE1),
            State::Fresh,
            &[],
        ),
        case(
            "ECR failing, old token still valid",
            argo(
                ann(&[
                    (exp, &at(3 * H as i64)),
                    (
                        err,
                        "no ECR token: GetAuthorizationToken in us-east-1: AccessDeniedException: no",
                    ),
                ]),
                USE1,
            ),
            State::Error,
            &[
                "the webhook could not write a token: no ECR token: GetAuthorizationToken",
                "ECR or AWS access is failing",
                "still valid, for 3h",
            ],
        ),
        case(
            "an error other than what is wrong now",
            argo(ann(&[(err, "data.url is missing")]), "ghcr.io/acme/charts"),
            State::Error,
            &[
                "could not write a token: data.url is missing",
                "fix the secret: url \"ghcr.io/acme/charts\" is not an ECR registry",
            ],
        ),
        case(
            "not an ECR url",
            argo(
                ann(&[(
                    err,
                    "url \"ghcr.io/acme/charts\" is not an ECR registry: not an ECR registry host",
                )]),
                "ghcr.io/acme/charts",
            ),
            State::Error,
            &[
                "could not write a token: url",
                "fix the secret as the error says; the next write or touch clears it",
            ],
        ),
        case(
            "an old error on a secret that is servable now",
            argo(
                ann(&[(exp, &at(-(H as i64))), (err, "data.url is missing")]),
                USE1,
            ),
            State::Error,
            &[
                "data.url is missing",
                "looks servable now",
                "expired 1h ago",
            ],
        ),
        case(
            "an empty error annotation is no error",
            argo(ann(&[(exp, &fresh), (err, "  ")]), USE1),
            State::Fresh,
            &[],
        ),
        case(
            "no label",
            secret(
                "apps",
                "kubernetes.io/basic-auth",
                json!({}),
                ann(&[(REGISTRIES_ANNOTATION_FOR_TESTS, USE1)]),
                json!(null),
            ),
            State::NotOptedIn,
            &[
                "not opted in: add the label: kubectl -n apps label secret s ecr-token-webhook/inject=true",
            ],
        ),
        case(
            "label with the wrong value",
            secret(
                "apps",
                "kubernetes.io/basic-auth",
                json!({INJECT_LABEL: "True"}),
                ann(&[(REGISTRIES_ANNOTATION_FOR_TESTS, USE1)]),
                json!(null),
            ),
            State::NotOptedIn,
            &[
                "label ecr-token-webhook/inject is \"True\", and only \"true\" opts in",
                "--overwrite",
            ],
        ),
        case(
            "no label and no ECR registry",
            secret(
                "apps",
                "kubernetes.io/dockerconfigjson",
                json!(null),
                json!(null),
                json!({".dockerconfigjson": b64(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"}}}"#)}),
            ),
            State::NotOptedIn,
            &[
                "add the label",
                "even opted in, the webhook could not serve it: none of its registries is an ECR host (https://index.docker.io/v1/)",
            ],
        ),
        case(
            "opted in, only non-ECR registries",
            dockerconfig(json!(null), &["docker.io", "ghcr.io"]),
            State::NoToken,
            &[
                "the webhook cannot serve it: none of its registries is an ECR host (docker.io, ghcr.io)",
                "no expires-at",
            ],
        ),
        case(
            "kube-system",
            secret(
                "kube-system",
                "kubernetes.io/basic-auth",
                opted(),
                ann(&[(REGISTRIES_ANNOTATION_FOR_TESTS, USE1)]),
                json!(null),
            ),
            State::NoToken,
            &[
                "never calls the webhook for secrets in namespace kube-system",
                "no expires-at",
            ],
        ),
        case(
            "the webhook's own namespace, expired",
            secret(
                "ecr-token-webhook",
                "kubernetes.io/basic-auth",
                opted(),
                ann(&[(REGISTRIES_ANNOTATION_FOR_TESTS, USE1), (exp, &at(-60))]),
                json!(null),
            ),
            State::Expired,
            &[
                "expired 1m ago",
                "namespace ecr-token-webhook: the webhook configuration's namespaceSelector",
            ],
        ),
        case(
            "a role the policy may refuse",
            secret(
                "apps",
                "kubernetes.io/basic-auth",
                opted(),
                ann(&[
                    (REGISTRIES_ANNOTATION_FOR_TESTS, USE1),
                    (ROLE_ARN_ANNOTATION, "arn:aws:iam::123456789012:role/x"),
                ]),
                json!(null),
            ),
            State::NoToken,
            &["it names a role", "--allowed-role-arns"],
        ),
        case(
            "garbage: data is not a map",
            secret(
                "apps",
                "kubernetes.io/dockerconfigjson",
                opted(),
                json!(null),
                json!("nope"),
            ),
            State::NoToken,
            &["the webhook cannot serve it: secret data is not a map of strings"],
        ),
        case(
            "garbage: data is not base64",
            secret(
                "apps",
                "kubernetes.io/dockerconfigjson",
                opted(),
                json!(null),
                json!({".dockerconfigjson": "%%%"}),
            ),
            State::NoToken,
            &["data..dockerconfigjson is not valid base64"],
        ),
        case(
            "garbage: docker config is not JSON",
            secret(
                "apps",
                "kubernetes.io/dockerconfigjson",
                opted(),
                json!(null),
                json!({".dockerconfigjson": b64("{not json")}),
            ),
            State::NoToken,
            &["is not valid docker config JSON"],
        ),
        case(
            "unsupported type",
            secret("apps", "Opaque", opted(), json!(null), json!(null)),
            State::NoToken,
            &["unsupported secret: type Opaque"],
        ),
    ];
    // The policy, where status is told it.
    let mut told = cx();
    told.known = Known {
        namespaces: Some(vec![Pattern::new("argocd"), Pattern::new("team-*")]),
        registries: Some(vec![RegistryPattern::parse("123456789012").unwrap()]),
        role_arns: Some(vec![]),
        policy: None,
    };
    cases.push(Case {
        cx: told.clone(),
        ..case(
            "namespace outside the policy",
            dockerconfig(json!(null), &[USE1]),
            State::OutsidePolicy,
            &["refused by policy: namespace apps is not in --allowed-namespaces (argocd,team-*): the webhook writes no token (only the error annotation) and the refresher skips the namespace"],
        )
    });
    cases.push(Case {
        cx: told.clone(),
        ..case(
            "registry and role outside the policy",
            argo(ann(&[(ROLE_ARN_ANNOTATION, "arn:aws:iam::210987654321:role/x")]), EUW1),
            State::OutsidePolicy,
            &["refused by policy: registry 210987654321.dkr.ecr.eu-west-1.amazonaws.com is not in --allowed-registries (123456789012:*)", "refused by policy: role arn:aws:iam::210987654321:role/x is not in --allowed-role-arns (none)"],
        )
    });
    // A policy file: the rule that refuses is named; labels as `run` read them.
    let mut file = cx();
    file.known = Known {
        policy: Some(
            Policy::from_yaml(
                "rules:\n  - name: argocd\n    namespaces: [argocd]\n    registries: ['123456789012']\n  - name: team-a\n    namespaces: ['apps']\n    namespaceSelector: {matchLabels: {tenant: team-a}}\n    registries: ['210987654321']\n",
                "policy.yaml",
            )
            .unwrap(),
        ),
        ..Known::default()
    };
    file.namespace_labels.insert(
        "apps".into(),
        Ok(BTreeMap::from([("tenant".into(), "team-a".into())])),
    );
    cases.push(Case {
        cx: file.clone(),
        ..case(
            "a rule of the policy file refuses the registry",
            dockerconfig(json!(null), &[USE1]),
            State::OutsidePolicy,
            &["refused by policy rule team-a (rules[1]): registry 123456789012.dkr.ecr.us-east-1.amazonaws.com is not in its registries (210987654321:*): the webhook writes no token (only the error annotation)"],
        )
    });
    let mut unlabelled = file.clone();
    unlabelled
        .namespace_labels
        .insert("apps".into(), Ok(BTreeMap::new()));
    cases.push(Case {
        cx: unlabelled,
        ..case(
            "no rule of the policy file matches",
            dockerconfig(json!(null), &[EUW1]),
            State::OutsidePolicy,
            &["refused by policy: namespace apps matches no rule: the webhook writes no token (only the error annotation) and the refresher skips the namespace"],
        )
    });
    cases.push(Case {
        cx: file.clone(),
        ..case(
            "inside the policy file: neither refused nor asked for",
            dockerconfig(json!(null), &[EUW1]),
            State::NoToken,
            &["no expires-at"],
        )
    });
    // The webhook's own refusal, read from the error annotation, when status is not told.
    cases.push(case(
        "refused by the webhook's policy",
        dockerconfig(
            ann(&[(
                err,
                "refused by policy rule team-a (rules[1]): registry 123456789012.dkr.ecr.us-east-1.amazonaws.com is not in its registries (210987654321:*)",
            )]),
            &[USE1],
        ),
        State::OutsidePolicy,
        &[
            "the webhook refused it at the last write: refused by policy rule team-a (rules[1])",
            "change the secret or the rule",
        ],
    ));
    cases.push(Case {
        cx: told.clone(),
        ..case(
            "inside the policy, so not mentioned",
            argo(json!(null), USE1),
            State::NoToken,
            &["no expires-at"],
        )
    });

    for c in cases {
        let row = classify(&c.obj, &c.cx);
        assert_eq!(row.state, c.state, "{}: {:#?}", c.what, row.reasons);
        if c.reasons.is_empty() {
            assert!(row.reasons.is_empty(), "{}: {:#?}", c.what, row.reasons);
        }
        let mut from = 0;
        for want in c.reasons {
            let found = row.reasons[from..].iter().position(|r| r.contains(want));
            let Some(i) = found else {
                panic!(
                    "{}: no reason containing {want:?} (in order) in {:#?}",
                    c.what, row.reasons
                );
            };
            from += i;
        }
        if c.what == "inside the policy, so not mentioned" {
            assert!(
                !row.reasons
                    .iter()
                    .any(|r| r.contains("rule out the policy")),
                "{:#?}",
                row.reasons
            );
        }
        for r in &row.reasons {
            assert!(!r.contains("s3cr3t"), "{}: a secret value in {r}", c.what);
        }
    }
}

const REGISTRIES_ANNOTATION_FOR_TESTS: &str = crate::secret::REGISTRIES_ANNOTATION;

#[test]
fn rows_carry_kind_registries_and_stamps() {
    let obj = dockerconfig(
        ann(&[
            (EXPIRES_AT_ANNOTATION, &at(9 * H as i64)),
            (TOUCHED_AT_ANNOTATION, "x"),
        ]),
        &[USE1, "docker.io", EUW1],
    );
    let row = classify(&obj, &cx());
    assert_eq!(row.kind, Some(SecretKind::DockerConfigJson));
    assert_eq!(row.registries, [USE1, EUW1], "ECR hosts only");
    assert_eq!(
        row.expires_at,
        Stamp::At(now() + Duration::from_secs(9 * H))
    );
    assert_eq!(row.touched_at, Stamp::Unreadable("x".into()));
    assert_eq!((row.namespace.as_str(), row.name.as_str()), ("apps", "s"));
    // A secret without namespace or name (never from the API server) still classifies.
    let bare: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}))
            .unwrap();
    let row = classify(&bare, &cx());
    assert_eq!(row.state, State::NotOptedIn);
    assert_eq!(row.kind, None);
}

#[test]
fn a_url_with_user_info_is_not_printed() {
    let obj = argo(json!(null), "https://user:pa55word@ghcr.io/acme");
    let row = classify(&obj, &cx());
    let all = row.reasons.join("\n");
    assert!(all.contains("data.url is not an ECR registry"), "{all}");
    assert!(!all.contains("pa55word"), "{all}");
}

#[test]
fn durations_read_compactly() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (200, "3m20s"),
        (600, "10m"),
        (45 * M + 30, "45m"),
        (H, "1h"),
        (5 * H + 12 * M + 59, "5h12m"),
        (24 * H, "1d"),
        (51 * H, "2d3h"),
    ];
    for (secs, want) in cases {
        assert_eq!(compact(Duration::from_secs(secs)), want, "{secs}");
    }
    let n = now();
    assert_eq!(
        expires_cell(n, &Stamp::At(n + Duration::from_secs(300))),
        "in 5m"
    );
    assert_eq!(expires_cell(n, &Stamp::At(n)), "expired 0s ago");
    assert_eq!(
        expires_cell(n, &Stamp::At(n - Duration::from_secs(180))),
        "expired 3m ago"
    );
    assert_eq!(expires_cell(n, &Stamp::Missing), "-");
    assert_eq!(
        expires_cell(n, &Stamp::Unreadable("x".into())),
        "unreadable"
    );
    assert_eq!(touched_cell(n, &Stamp::Missing), "never");
    assert_eq!(
        touched_cell(n, &Stamp::At(n + Duration::from_secs(120))),
        "in 2m",
        "a clock ahead of this one"
    );
}

fn row(ns: &str, name: &str, state: State) -> Row {
    Row {
        namespace: ns.into(),
        name: name.into(),
        kind: Some(SecretKind::BasicAuth),
        registries: vec![USE1.into()],
        expires_at: Stamp::Missing,
        touched_at: Stamp::Missing,
        error: None,
        state,
        reasons: Vec::new(),
    }
}

#[test]
fn verdict_counts_states_and_sets_the_exit_code() {
    let cases: Vec<(Vec<State>, &str, u8)> = vec![
        (
            vec![],
            "no opted-in secrets (ecr-token-webhook/inject=true) in all namespaces",
            0,
        ),
        (vec![State::Fresh], "1 secret in all namespaces: 1 fresh", 0),
        (
            vec![State::Fresh, State::Due, State::Fresh],
            "3 secrets in all namespaces: 2 fresh, 1 due for a refresh",
            0,
        ),
        (
            vec![State::Fresh, State::Error, State::Expired],
            "3 secrets in all namespaces: 1 fresh, 1 expired, 1 with an error",
            1,
        ),
        (
            vec![State::NoToken],
            "1 secret in all namespaces: 1 without a token",
            1,
        ),
        (
            vec![State::OutsidePolicy],
            "1 secret in all namespaces: 1 outside the policy",
            1,
        ),
        (
            vec![State::NotOptedIn],
            "1 secret in all namespaces: 1 not opted in",
            1,
        ),
    ];
    let one = Scope::One {
        namespace: "apps".into(),
        name: "pull".into(),
    };
    let v = Verdict::of(&[row("apps", "pull", State::Error)]);
    assert_eq!(v.summary(&one), "secret apps/pull has an error");
    let v = Verdict::of(&[row("apps", "pull", State::Fresh)]);
    assert_eq!(v.summary(&one), "secret apps/pull is fresh");
    for (states, summary, code) in cases {
        let rows: Vec<Row> = states.iter().map(|s| row("a", "b", *s)).collect();
        let v = Verdict::of(&rows);
        assert_eq!(v.summary(&Scope::All), summary);
        assert_eq!(v.exit_code(), code, "{summary}");
    }
}

/// The docs' example: one healthy and one broken secret, exactly as printed.
#[test]
fn text_output_is_an_aligned_table_with_reasons_and_a_verdict() {
    let mut healthy = argo(
        ann(&[
            (EXPIRES_AT_ANNOTATION, &at((9 * H + 12 * M) as i64)),
            (TOUCHED_AT_ANNOTATION, &at(-((2 * H + 48 * M) as i64))),
        ]),
        &format!("oci://{USE1}/charts"),
    );
    let mut broken = dockerconfig(
        ann(&[(
            ERROR_ANNOTATION,
            "no ECR token: GetAuthorizationToken in eu-west-1: AccessDeniedException: not authorized",
        )]),
        &[EUW1],
    );
    healthy.metadata.name = Some("ecr-charts".into());
    broken.metadata.name = Some("pull".into());
    let rows = vec![classify(&healthy, &cx()), classify(&broken, &cx())];
    let text = render_text(&rows, now(), &Scope::All);
    let want = "\
NAMESPACE   NAME         KIND                REGISTRIES                                     EXPIRES    TOUCHED     STATE
argocd      ecr-charts   argocd-repository   123456789012.dkr.ecr.us-east-1.amazonaws.com   in 9h12m   2h48m ago   fresh
apps        pull         dockerconfigjson    210987654321.dkr.ecr.eu-west-1.amazonaws.com   -          never       error

apps/pull (error):
  - the webhook could not write a token: no ECR token: GetAuthorizationToken in eu-west-1: AccessDeniedException: not authorized
  - ECR or AWS access is failing: see the webhook's logs (ECR token request failed), ecr_token_webhook_ecr_requests_total, and the IAM role (README: AWS access)

2 secrets in all namespaces: 1 fresh, 1 with an error
";
    assert_eq!(text, want, "\n{text}");
    assert!(
        DOCS.contains(want),
        "the troubleshooting page shows this output"
    );
    assert_eq!(
        render_text(&[], now(), &Scope::Namespace("apps".into())),
        "no opted-in secrets (ecr-token-webhook/inject=true) in namespace apps\n"
    );
}

#[test]
fn json_output_has_every_field_and_the_verdict() {
    let fresh = argo(
        ann(&[
            (EXPIRES_AT_ANNOTATION, &at(9 * H as i64)),
            (TOUCHED_AT_ANNOTATION, &at(-120)),
        ]),
        USE1,
    );
    let expired = argo(ann(&[(EXPIRES_AT_ANNOTATION, &at(-180))]), USE1);
    let garbage = argo(ann(&[(EXPIRES_AT_ANNOTATION, "soon\"\n{")]), USE1);
    let rows: Vec<Row> = [fresh, expired, garbage]
        .iter()
        .map(|o| classify(o, &cx()))
        .collect();
    let out = render_json(&rows, now(), &Scope::All, Duration::from_secs(6 * H));
    assert!(!out.contains("s3cr3t"), "{out}");
    let doc: Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(doc["checkedAt"], rfc3339(now()));
    assert_eq!(doc["refreshMargin"], "6h");
    let s = &doc["secrets"];
    assert_eq!(s[0]["namespace"], "argocd");
    assert_eq!(s[0]["name"], "s");
    assert_eq!(s[0]["kind"], "argocd-repository");
    assert_eq!(s[0]["registries"], json!([USE1]));
    assert_eq!(s[0]["expiresAt"], at(9 * H as i64));
    assert_eq!(s[0]["expiresInSeconds"], 9 * H);
    assert_eq!(s[0]["touchedSecondsAgo"], 120);
    assert_eq!(s[0]["error"], Value::Null);
    assert_eq!(s[0]["state"], "fresh");
    assert_eq!(s[0]["reasons"], json!([]));
    assert_eq!(s[1]["state"], "expired");
    assert_eq!(s[1]["expiresInSeconds"], -180);
    assert_eq!(s[1]["touchedAt"], Value::Null);
    assert_eq!(s[2]["state"], "no-token");
    assert_eq!(
        s[2]["expiresAt"], "soon\"\n{",
        "the unreadable value, as found"
    );
    assert_eq!(s[2]["expiresInSeconds"], Value::Null);
    let v = &doc["verdict"];
    assert_eq!(v["ok"], false);
    assert_eq!(v["total"], 3);
    assert_eq!(
        v["states"],
        json!({"fresh": 1, "due": 0, "expired": 1, "no-token": 1, "error": 0,
            "outside-policy": 0, "not-opted-in": 0})
    );
    assert_eq!(
        v["summary"],
        "3 secrets in all namespaces: 1 fresh, 1 expired, 1 without a token"
    );
}

#[test]
fn kube_errors_say_what_to_try() {
    let api = |code: u16, message: &str| {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }))
    };
    let one = Scope::One {
        namespace: "apps".into(),
        name: "pull".into(),
    };
    let cases = [
        (
            api(404, "not found"),
            one.clone(),
            "secret apps/pull not found",
        ),
        (
            api(403, "secrets is forbidden"),
            Scope::All,
            "cannot list secrets in all namespaces: secrets is forbidden; with access to some namespaces only, use -n NAMESPACE",
        ),
        (
            api(403, "nope"),
            Scope::Namespace("apps".into()),
            "cannot read secrets: nope",
        ),
        (
            api(401, "Unauthorized"),
            Scope::All,
            "the API server at https://k:6443/ did not accept the kubeconfig's credentials",
        ),
        (
            api(500, "boom"),
            one,
            "the API server at https://k:6443/ answered: boom",
        ),
    ];
    for (e, scope, want) in cases {
        let got = explain_kube_error(&e, &scope, "https://k:6443/");
        assert!(got.starts_with(want), "{got}");
    }
}

/// The docs' example of one secret asked for by name: no label, and no ECR host in it.
#[test]
fn one_secret_without_the_label_is_diagnosed() {
    let mut hub = secret(
        "apps",
        "kubernetes.io/dockerconfigjson",
        json!(null),
        json!(null),
        json!({".dockerconfigjson": b64(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"}}}"#)}),
    );
    hub.metadata.name = Some("hub".into());
    let text = render_text(
        &[classify(&hub, &cx())],
        now(),
        &Scope::One {
            namespace: "apps".into(),
            name: "hub".into(),
        },
    );
    let want = "\
NAMESPACE   NAME   KIND               REGISTRIES   EXPIRES   TOUCHED   STATE
apps        hub    dockerconfigjson   -            -         never     not-opted-in

apps/hub (not-opted-in):
  - not opted in: add the label: kubectl -n apps label secret hub ecr-token-webhook/inject=true
  - even opted in, the webhook could not serve it: none of its registries is an ECR host (https://index.docker.io/v1/); only ECR registries (private, and ECR Public) get tokens: no ECR registry to write: set annotation ecr-token-webhook/registries

secret apps/hub is not opted in
";
    assert_eq!(text, want, "\n{text}");
    assert!(
        DOCS.contains(want),
        "the troubleshooting page shows this output"
    );
}
