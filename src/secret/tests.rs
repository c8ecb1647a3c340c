use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::aws::token::Token;

const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const EUC1: &str = "210987654321.dkr.ecr.eu-central-1.amazonaws.com";

fn b64(s: &str) -> String {
    B64.encode(s)
}

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("test object")
}

fn secret(type_: &str, labels: Value, annotations: Option<Value>, data: Option<Value>) -> Value {
    let mut meta = json!({"name": "s", "namespace": "apps", "labels": labels});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_});
    if let Some(d) = data {
        obj["data"] = d;
    }
    obj
}

fn argo(kind: &str, url: &str) -> Value {
    secret(
        "Opaque",
        json!({INJECT_LABEL: "true", ARGOCD_SECRET_TYPE_LABEL: kind}),
        None,
        Some(
            json!({"url": b64(url), "type": b64("helm"), "name": b64("charts"),
                    "enableOCI": b64("true"), "project": b64("default")}),
        ),
    )
}

fn pull(type_: &str, annotations: Option<Value>, data: Option<Value>) -> Value {
    secret(type_, json!({INJECT_LABEL: "true"}), annotations, data)
}

struct Tokens {
    use1: Token,
    euc1: Token,
    public: Token,
}

impl Tokens {
    fn new() -> Self {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Tokens {
            use1: Token {
                username: "AWS".into(),
                password: "token-use1".into(),
                expires_at: base + Duration::from_secs(3600),
            },
            euc1: Token {
                username: "AWS".into(),
                password: "token-euc1".into(),
                expires_at: base,
            },
            public: Token {
                username: "AWS".into(),
                password: "token-public".into(),
                expires_at: base + Duration::from_secs(1800),
            },
        }
    }

    fn map(&self, plan: &Plan) -> BTreeMap<TokenKey, &Token> {
        plan.token_keys()
            .into_iter()
            .map(|k| {
                let t = if k.public {
                    &self.public
                } else if k.region == "eu-central-1" {
                    &self.euc1
                } else {
                    &self.use1
                };
                (k, t)
            })
            .collect()
    }
}

/// Plans, injects and applies the patch; returns the patched object.
fn run(obj: &Value) -> Result<Value, InputError> {
    let dynobj = object(obj.clone());
    let view = SecretView::new(&dynobj);
    let plan = plan(&view)?;
    let tokens = Tokens::new();
    let patch = inject(&view, &plan, &tokens.map(&plan))?;
    let mut out = obj.clone();
    json_patch::patch(&mut out, &patch.0).expect("patch applies to the object it was built from");
    assert_keeps_everything(obj, &out);
    Ok(out)
}

const WRITTEN: &[&str] = &["username", "password", ".dockerconfigjson", ".dockercfg"];

/// Nothing the secret had is lost; only the keys the design names change.
fn assert_keeps_everything(before: &Value, after: &Value) {
    if let Some(data) = before["data"].as_object() {
        for (k, v) in data {
            assert!(after["data"].get(k).is_some(), "data.{k} was lost");
            if !WRITTEN.contains(&k.as_str()) {
                assert_eq!(&after["data"][k], v, "data.{k} changed");
            }
        }
    }
    if let Some(ann) = before["metadata"]["annotations"].as_object() {
        for (k, v) in ann {
            if k == ERROR_ANNOTATION || k == EXPIRES_AT_ANNOTATION {
                continue;
            }
            assert_eq!(
                &after["metadata"]["annotations"][k], v,
                "annotation {k} changed"
            );
        }
    }
    assert_eq!(before["metadata"]["labels"], after["metadata"]["labels"]);
    assert_eq!(before["type"], after["type"]);
}

fn data_str(obj: &Value, key: &str) -> String {
    let s = obj["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("data.{key} missing"));
    String::from_utf8(B64.decode(s).expect("base64")).expect("utf8")
}

fn data_json(obj: &Value, key: &str) -> Value {
    serde_json::from_str(&data_str(obj, key)).expect("json")
}

fn expires(obj: &Value) -> &str {
    obj["metadata"]["annotations"][EXPIRES_AT_ANNOTATION]
        .as_str()
        .unwrap_or("")
}

#[test]
fn argo_secrets_get_username_and_password() {
    let cases = [
        ("repository", USE1.to_string()),
        ("repository", format!("https://{USE1}")),
        ("repository", format!("oci://{USE1}/charts/app")),
        ("repo-creds", format!("oci://{USE1}/charts")),
        ("repo-creds", format!("{USE1}:443/charts")),
    ];
    for (kind, url) in cases {
        let out = run(&argo(kind, &url)).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(data_str(&out, "username"), "AWS");
        assert_eq!(data_str(&out, "password"), "token-use1");
        assert_eq!(data_str(&out, "url"), url, "url kept as written");
        assert_eq!(data_str(&out, "project"), "default");
        assert_eq!(expires(&out), "2027-01-15T09:00:00Z");
    }
}

#[test]
fn error_annotation_is_removed_and_others_kept() {
    let mut obj = argo("repository", USE1);
    obj["metadata"]["annotations"] = json!({ERROR_ANNOTATION: "old failure",
        "team/owner": "platform", EXPIRES_AT_ANNOTATION: "2020-01-01T00:00:00Z"});
    obj["data"]["username"] = json!(b64("someone"));
    let out = run(&obj).unwrap();
    let ann = out["metadata"]["annotations"].as_object().unwrap();
    assert!(!ann.contains_key(ERROR_ANNOTATION));
    assert_eq!(ann["team/owner"], "platform");
    assert_eq!(expires(&out), "2027-01-15T09:00:00Z");
    assert_eq!(data_str(&out, "username"), "AWS");
}

#[test]
fn dockerconfigjson_keeps_other_registries_and_fields() {
    let config = json!({
        "auths": {
            "https://index.docker.io/v1/": {"username": "bob", "password": "hunter2", "auth": "Ym9iOmh1bnRlcjI="},
            USE1: {"username": "AWS", "password": "old", "auth": "QVdTOm9sZA==", "email": "ops@example.com"},
        },
        "credsStore": "ecr-login",
        "HttpHeaders": {"User-Agent": "x"},
    });
    let obj = pull(
        DOCKERCONFIGJSON,
        None,
        Some(json!({".dockerconfigjson": b64(&config.to_string())})),
    );
    let out = run(&obj).unwrap();
    let got = data_json(&out, ".dockerconfigjson");
    assert_eq!(
        got["auths"]["https://index.docker.io/v1/"],
        config["auths"]["https://index.docker.io/v1/"]
    );
    assert_eq!(got["credsStore"], "ecr-login");
    assert_eq!(got["HttpHeaders"], config["HttpHeaders"]);
    let e = &got["auths"][USE1];
    assert_eq!(e["username"], "AWS");
    assert_eq!(e["password"], "token-use1");
    assert_eq!(e["auth"], b64("AWS:token-use1"));
    assert_eq!(e["email"], "ops@example.com");
    assert_eq!(got["auths"].as_object().unwrap().len(), 2);
}

#[test]
fn dockerconfigjson_updates_an_https_keyed_entry_in_place() {
    let key = format!("https://{USE1}");
    let config = json!({"auths": {&key: {"auth": "eA=="}}});
    let obj = pull(
        DOCKERCONFIGJSON,
        Some(json!({REGISTRIES_ANNOTATION: USE1})),
        Some(json!({".dockerconfigjson": b64(&config.to_string())})),
    );
    let got = data_json(&run(&obj).unwrap(), ".dockerconfigjson");
    let auths = got["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1, "{auths:?}");
    assert_eq!(auths[&key]["password"], "token-use1");
}

#[test]
fn dockerconfigjson_without_data_gets_every_annotated_registry() {
    let obj = pull(
        DOCKERCONFIGJSON,
        Some(json!({REGISTRIES_ANNOTATION: format!("{USE1}, {EUC1}\n{USE1}")})),
        None,
    );
    let out = run(&obj).unwrap();
    let got = data_json(&out, ".dockerconfigjson");
    assert_eq!(got["auths"][USE1]["password"], "token-use1");
    assert_eq!(got["auths"][EUC1]["password"], "token-euc1");
    assert_eq!(got["auths"].as_object().unwrap().len(), 2);
    // The earliest expiry among the tokens written.
    assert_eq!(expires(&out), "2027-01-15T08:00:00Z");
}

#[test]
fn ecr_public_gets_its_own_token_beside_a_private_registry_in_its_region() {
    // ECR Public's API is in us-east-1 too, but its token is not a private registry's.
    let obj = pull(
        DOCKERCONFIGJSON,
        Some(
            json!({REGISTRIES_ANNOTATION: format!("{USE1} public.ecr.aws oci://ecr-public.aws.com/alias")}),
        ),
        None,
    );
    let out = run(&obj).unwrap();
    let got = data_json(&out, ".dockerconfigjson");
    assert_eq!(got["auths"][USE1]["password"], "token-use1");
    assert_eq!(got["auths"]["public.ecr.aws"]["password"], "token-public");
    assert_eq!(got["auths"]["public.ecr.aws"]["username"], "AWS");
    assert_eq!(
        got["auths"]["ecr-public.aws.com"]["password"],
        "token-public"
    );
    assert_eq!(got["auths"].as_object().unwrap().len(), 3);
    assert_eq!(expires(&out), "2027-01-15T08:30:00Z");
    let dynobj = object(obj);
    let plan = plan(&SecretView::new(&dynobj)).unwrap();
    assert_eq!(
        plan.token_keys(),
        vec![TokenKey::new("us-east-1", None), TokenKey::public(None)]
    );

    // An entry already in the docker config is found and refreshed.
    let cfg = json!({"auths": {"https://public.ecr.aws": {"auth": "b2xk", "email": "a@b.c"}}});
    let obj = pull(
        DOCKERCONFIGJSON,
        None,
        Some(json!({".dockerconfigjson": b64(&cfg.to_string())})),
    );
    let got = data_json(&run(&obj).unwrap(), ".dockerconfigjson");
    assert_eq!(
        got["auths"]["https://public.ecr.aws"]["password"],
        "token-public"
    );
    assert_eq!(got["auths"]["https://public.ecr.aws"]["email"], "a@b.c");

    // An Argo CD repository for ECR Public's OCI charts.
    let out = run(&argo("repository", "oci://public.ecr.aws/my-alias/charts")).unwrap();
    assert_eq!(data_str(&out, "password"), "token-public");

    // A basic-auth secret holds one token: ECR Public and a private registry need two.
    let obj = pull(
        BASIC_AUTH,
        Some(json!({REGISTRIES_ANNOTATION: format!("{USE1},public.ecr.aws")})),
        None,
    );
    let e = run(&obj).unwrap_err().to_string();
    assert!(e.contains("several regions (public, us-east-1)"), "{e}");
}

#[test]
fn dockercfg_is_a_plain_map() {
    let cfg = json!({"quay.io": {"auth": "eDp5"}, USE1: {"auth": "b2xk", "email": "a@b.c"}});
    let obj = pull(
        DOCKERCFG,
        None,
        Some(json!({".dockercfg": b64(&cfg.to_string())})),
    );
    let got = data_json(&run(&obj).unwrap(), ".dockercfg");
    assert_eq!(got["quay.io"], cfg["quay.io"]);
    assert_eq!(got[USE1]["password"], "token-use1");
    assert_eq!(got[USE1]["email"], "a@b.c");
    assert!(got.get("auths").is_none());
}

#[test]
fn basic_auth_gets_username_and_password() {
    let obj = pull(
        BASIC_AUTH,
        Some(json!({REGISTRIES_ANNOTATION: USE1})),
        Some(
            json!({"username": b64("placeholder"), "password": b64("placeholder"), "extra": b64("kept")}),
        ),
    );
    let out = run(&obj).unwrap();
    assert_eq!(data_str(&out, "username"), "AWS");
    assert_eq!(data_str(&out, "password"), "token-use1");
    assert_eq!(data_str(&out, "extra"), "kept");
}

#[test]
fn pointer_keys_are_escaped() {
    let dynobj = object(argo("repository", USE1));
    let view = SecretView::new(&dynobj);
    let plan = plan(&view).unwrap();
    let tokens = Tokens::new();
    let patch = inject(&view, &plan, &tokens.map(&plan)).unwrap();
    let text = serde_json::to_string(&patch).unwrap();
    assert!(
        text.contains("\"/metadata/annotations/ecr-token-webhook~1expires-at\""),
        "{text}"
    );
    assert!(
        text.contains("\"/metadata/annotations\""),
        "parent map added first: {text}"
    );
    assert!(!text.contains("/ecr-token-webhook/error"), "{text}");
}

#[test]
fn bad_input_is_refused_with_a_clear_reason() {
    let not_ecr_url = argo("repository", "ghcr.io/org/charts");
    let mut bad_b64 = argo("repository", USE1);
    bad_b64["data"]["url"] = json!("%%%not-base64");
    let mut url_not_string = argo("repository", USE1);
    url_not_string["data"]["url"] = json!(42);
    let mut no_url = argo("repo-creds", USE1);
    no_url["data"].as_object_mut().unwrap().remove("url");
    let mut data_list = argo("repository", USE1);
    data_list["data"] = json!(["x"]);
    let mut bad_utf8 = argo("repository", USE1);
    bad_utf8["data"]["url"] = json!(B64.encode([0xff, 0xfe]));
    let docker = |cfg: &str| {
        pull(
            DOCKERCONFIGJSON,
            None,
            Some(json!({".dockerconfigjson": b64(cfg)})),
        )
    };

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "non-ECR url",
            not_ecr_url,
            "url \"ghcr.io/org/charts\" is not an ECR registry",
        ),
        ("invalid base64", bad_b64, "data.url is not valid base64"),
        (
            "url not a string",
            url_not_string,
            "data.url is not a string",
        ),
        ("missing url", no_url, "data.url is missing"),
        (
            "data not a map",
            data_list,
            "secret data is not a map of strings",
        ),
        ("url not utf-8", bad_utf8, "data.url is not valid UTF-8"),
        (
            "invalid docker JSON",
            docker("{not json"),
            "data..dockerconfigjson is not valid docker config JSON",
        ),
        (
            "docker JSON not object",
            docker("[1,2]"),
            "not a JSON object",
        ),
        (
            "auths not object",
            docker(r#"{"auths": 3}"#),
            "auths is not an object",
        ),
        (
            "no ECR entry",
            docker(r#"{"auths": {"docker.io": {}}}"#),
            "no ECR registry to write",
        ),
        (
            "empty pull secret",
            pull(DOCKERCONFIGJSON, None, None),
            "no ECR registry to write",
        ),
        (
            "non-ECR annotation entry",
            pull(
                DOCKERCONFIGJSON,
                Some(json!({REGISTRIES_ANNOTATION: format!("{USE1}, ghcr.io")})),
                None,
            ),
            "\"ghcr.io\" in annotation ecr-token-webhook/registries is not an ECR registry",
        ),
        (
            "basic-auth without registries",
            pull(BASIC_AUTH, None, None),
            "no ECR registry to write",
        ),
        (
            "basic-auth across regions",
            pull(
                BASIC_AUTH,
                Some(json!({REGISTRIES_ANNOTATION: format!("{USE1} {EUC1}")})),
                None,
            ),
            "several regions (eu-central-1, us-east-1)",
        ),
        (
            "opaque without Argo label",
            pull("Opaque", None, None),
            "unsupported secret: type Opaque",
        ),
        (
            "Argo label with another value",
            secret(
                "Opaque",
                json!({INJECT_LABEL: "true", ARGOCD_SECRET_TYPE_LABEL: "cluster"}),
                None,
                None,
            ),
            "unsupported secret",
        ),
    ];
    for (name, obj, want) in cases {
        let err = run(&obj).expect_err(name).to_string();
        assert!(
            err.contains(want),
            "{name}: {err:?} does not contain {want:?}"
        );
        assert!(!err.contains('\n'), "{name}: one line");
    }
}

#[test]
fn entry_that_is_not_an_object_is_refused_not_replaced() {
    let cfg = json!({"auths": {USE1: "oops"}});
    let obj = pull(
        DOCKERCONFIGJSON,
        None,
        Some(json!({".dockerconfigjson": b64(&cfg.to_string())})),
    );
    let err = run(&obj).unwrap_err().to_string();
    assert!(err.contains("is not an object"), "{err}");
}

#[test]
fn plan_collects_regions_and_role() {
    let obj = object(pull(
        DOCKERCONFIGJSON,
        Some(
            json!({REGISTRIES_ANNOTATION: format!("{USE1},{EUC1},123456789012.dkr.ecr.us-east-1.amazonaws.com"),
                    ROLE_ARN_ANNOTATION: " arn:aws:iam::123456789012:role/pull "}),
        ),
        None,
    ));
    let plan = plan(&SecretView::new(&obj)).unwrap();
    assert_eq!(plan.registries.len(), 2);
    let role = Some("arn:aws:iam::123456789012:role/pull".to_string());
    assert_eq!(
        plan.token_keys(),
        vec![
            TokenKey::new("eu-central-1", role.clone()),
            TokenKey::new("us-east-1", role)
        ]
    );
}

#[test]
fn opt_in_needs_the_exact_label_value() {
    for (labels, want) in [
        (json!({INJECT_LABEL: "true"}), true),
        (json!({INJECT_LABEL: "false"}), false),
        (json!({INJECT_LABEL: "True"}), false),
        (json!({}), false),
    ] {
        let obj = object(secret("Opaque", labels.clone(), None, None));
        assert_eq!(SecretView::new(&obj).opted_in(), want, "{labels}");
    }
}

#[test]
fn error_patch_sets_one_line_and_keeps_the_rest() {
    let obj = argo("repository", USE1);
    let dynobj = object(obj.clone());
    let patch = error_patch(&SecretView::new(&dynobj), "ECR failed:\nthrottled\t");
    let mut out = obj.clone();
    json_patch::patch(&mut out, &patch.0).unwrap();
    assert_eq!(
        out["metadata"]["annotations"][ERROR_ANNOTATION],
        "ECR failed: throttled"
    );
    assert_eq!(out["data"], obj["data"]);
}

#[test]
fn docker_config_hosts_names_every_entry_but_ones_with_credentials() {
    let view_of = |type_: &str, data: Option<Value>| object(pull(type_, None, data));
    let config = json!({"auths": {USE1: {}, "docker.io": {}, "https://u:p@evil.example": {}}});
    let cases: Vec<(DynamicObject, Vec<&str>)> = vec![
        (
            view_of(
                DOCKERCONFIGJSON,
                Some(json!({".dockerconfigjson": b64(&config.to_string())})),
            ),
            vec![USE1, "docker.io"],
        ),
        (
            view_of(
                DOCKERCFG,
                Some(json!({".dockercfg": b64(&json!({"ghcr.io": {}}).to_string())})),
            ),
            vec!["ghcr.io"],
        ),
        (view_of(DOCKERCONFIGJSON, None), vec![]),
        (
            view_of(DOCKERCONFIGJSON, Some(json!({".dockerconfigjson": "%%%"}))),
            vec![],
        ),
        (
            view_of(
                DOCKERCONFIGJSON,
                Some(json!({".dockerconfigjson": b64(r#"{"auths": []}"#)})),
            ),
            vec![],
        ),
        (view_of(BASIC_AUTH, None), vec![]),
        (view_of("Opaque", None), vec![]),
    ];
    for (obj, want) in cases {
        assert_eq!(docker_config_hosts(&SecretView::new(&obj)), want, "{obj:?}");
    }
}

#[test]
fn partial_tokens_write_only_their_registries_and_keep_the_rest() {
    let old_euc1 = json!({"username": "AWS", "password": "old-euc1", "auth": "QVdTOm9sZC1ldWMx"});
    let config = json!({"auths": {EUC1: old_euc1}});
    let obj = pull(
        DOCKERCONFIGJSON,
        Some(json!({REGISTRIES_ANNOTATION: format!("{USE1}, {EUC1}"), ERROR_ANNOTATION: "before"})),
        Some(json!({".dockerconfigjson": b64(&config.to_string())})),
    );
    let tokens = Tokens::new();
    /// Which regions have a token, the error to set (and find after), the passwords expected,
    /// expires-at.
    type Case<'a> = (&'a [&'a str], Option<&'a str>, Value, &'a str);
    let cases: &[Case] = &[
        (
            &["us-east-1"],
            Some("no ECR token for eu-central-1"),
            json!({USE1: "token-use1", EUC1: "old-euc1"}),
            "2027-01-15T09:00:00Z",
        ),
        (
            &["eu-central-1"],
            Some("no ECR token for us-east-1"),
            json!({EUC1: "token-euc1"}),
            "2027-01-15T08:00:00Z",
        ),
        (
            &["us-east-1", "eu-central-1"],
            None,
            json!({USE1: "token-use1", EUC1: "token-euc1"}),
            "2027-01-15T08:00:00Z",
        ),
    ];
    for (regions, error, want, want_expires) in cases {
        let dynobj = object(obj.clone());
        let view = SecretView::new(&dynobj);
        let plan = plan(&view).unwrap();
        let mut map = tokens.map(&plan);
        map.retain(|k, _| regions.contains(&k.region.as_str()));
        let patch = inject_partial(&view, &plan, &map, *error).unwrap();
        let mut out = obj.clone();
        json_patch::patch(&mut out, &patch.0).unwrap();
        assert_keeps_everything(&obj, &out);
        let got = data_json(&out, ".dockerconfigjson");
        let auths = got["auths"].as_object().unwrap();
        let passwords: serde_json::Map<String, Value> = auths
            .iter()
            .map(|(h, e)| (h.clone(), e["password"].clone()))
            .collect();
        assert_eq!(Value::Object(passwords), *want, "{regions:?}");
        if !regions.contains(&"eu-central-1") {
            // The failed registry's entry is exactly as it was.
            assert_eq!(auths[EUC1], old_euc1);
        }
        assert_eq!(expires(&out), *want_expires, "{regions:?}");
        assert_eq!(
            out["metadata"]["annotations"][ERROR_ANNOTATION].as_str(),
            *error,
            "{regions:?}"
        );
    }
    // No token at all is not a write: the caller answers with the error patch alone.
    let dynobj = object(obj.clone());
    let view = SecretView::new(&dynobj);
    let plan = plan(&view).unwrap();
    assert!(inject_partial(&view, &plan, &BTreeMap::new(), Some("x")).is_err());
}

/// The admission path reads only the fields it uses ([`SecretObject`]); for every secret it
/// must reach the same plan, patch and errors as a reading of the whole object.
#[test]
fn the_admission_parse_reads_the_same_secret_as_the_whole_object() {
    let last_applied =
        "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"stringData\":{\"a\":\"\\\"b\\\"\"}}\n";
    let mut with_foreign = argo("repository", USE1);
    with_foreign["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": last_applied,
        "team": "a",
    });
    with_foreign["metadata"]["labels"]["app"] = json!("charts");
    with_foreign["data"]["password"] = json!(b64(&"old".repeat(1000)));
    with_foreign["data"]["odd"] = json!({"not": "a string"});
    let mut with_error = argo("repo-creds", USE1);
    with_error["metadata"]["annotations"] = json!({ERROR_ANNOTATION: "old", "x": "y"});
    let mut empty_annotations = argo("repository", USE1);
    empty_annotations["metadata"]["annotations"] = json!({});
    let mut role = pull(
        BASIC_AUTH,
        Some(
            json!({REGISTRIES_ANNOTATION: USE1, ROLE_ARN_ANNOTATION: "arn:aws:iam::123456789012:role/r"}),
        ),
        None,
    );
    role["metadata"]["labels"]["other"] = json!("x");
    let mut shapes = Vec::new();
    for data in [
        json!(null),
        json!(["x"]),
        json!("x"),
        json!(7),
        json!(true),
        json!({}),
    ] {
        let mut s = argo("repository", USE1);
        s["data"] = data;
        shapes.push(s);
    }
    let mut not_opted = argo("repository", USE1);
    not_opted["metadata"]["labels"][INJECT_LABEL] = json!("false");
    let mut no_labels = pull(DOCKERCONFIGJSON, None, None);
    no_labels["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let mut url_not_string = argo("repository", USE1);
    url_not_string["data"]["url"] = json!(42);
    let docker = json!({"auths": {USE1: {"auth": "x", "email": "e"}, "ghcr.io": {"auth": "y"}}});
    let mut cases = vec![
        with_foreign,
        with_error,
        empty_annotations,
        role,
        not_opted,
        no_labels,
        url_not_string,
        argo("repo-creds", EUC1),
        pull(
            DOCKERCONFIGJSON,
            None,
            Some(json!({".dockerconfigjson": b64(&docker.to_string())})),
        ),
        pull(
            DOCKERCFG,
            None,
            Some(json!({".dockercfg": b64(&json!({EUC1: {}}).to_string())})),
        ),
        pull(
            DOCKERCONFIGJSON,
            Some(json!({REGISTRIES_ANNOTATION: format!("{USE1},{EUC1}")})),
            None,
        ),
        pull(
            DOCKERCONFIGJSON,
            None,
            Some(json!({".dockerconfigjson": b64("not json")})),
        ),
        pull("Opaque", None, None),
    ];
    cases.extend(shapes);
    let tokens = Tokens::new();
    for obj in &cases {
        let whole = object(obj.clone());
        // As the admission path reads it, from the bytes.
        let read: SecretObject = serde_json::from_str(&obj.to_string()).expect("admission parse");
        let (a, b) = (SecretView::new(&whole), SecretView::from_object(&read));
        assert_eq!(a.opted_in(), b.opted_in(), "{obj}");
        assert_eq!(a.kind(), b.kind(), "{obj}");
        assert_eq!(error_patch(&a, "why").0, error_patch(&b, "why").0, "{obj}");
        let (pa, pb) = (plan(&a), plan(&b));
        assert_eq!(pa, pb, "{obj}");
        if let Ok(p) = pa {
            let t = tokens.map(&p);
            assert_eq!(
                inject(&a, &p, &t).map(|x| x.0),
                inject(&b, &p, &t).map(|x| x.0),
                "{obj}"
            );
        }
    }
}

/// `data` as the admission path reads it: anything else than a map or null is a shape the view
/// refuses, and a value that is not a string is refused only when read.
#[test]
fn data_shapes_as_the_view_reads_them() {
    // Anything else than a map or null for `data` is a shape the view refuses.
    for (json, shape) in [
        (r#"{"data": null}"#, None),
        (r#"{"data": {}}"#, Some(true)),
        (r#"{"data": "x"}"#, Some(false)),
        (r#"{"data": [1]}"#, Some(false)),
        (r#"{"data": 1}"#, Some(false)),
    ] {
        let obj: SecretObject = serde_json::from_str(json).expect(json);
        let got = obj
            .data
            .as_ref()
            .filter(|d| !d.is_null())
            .map(Value::is_object);
        assert_eq!(got, shape, "{json}");
        let refused = SecretView::from_object(&obj).decoded("url") == Err(InputError::DataShape);
        assert_eq!(refused, shape == Some(false), "{json}");
    }
    let obj: SecretObject =
        serde_json::from_str(r#"{"data": {"url": "dXJs", ".dockercfg": null, "x": [1]}}"#).unwrap();
    let view = SecretView::from_object(&obj);
    assert_eq!(view.decoded("url"), Ok(Some(b"url".to_vec())));
    assert_eq!(view.decoded("password"), Ok(None));
    assert_eq!(
        view.decoded(".dockercfg"),
        Err(InputError::NotString(".dockercfg".into()))
    );
}

/// `type` as the admission path reads it: a string; anything else is no type, as it
/// is from kube's object.
#[test]
fn type_reads_as_kube_reads_it() {
    for (json, want) in [
        (r#"{"type": "kubernetes.io/basic-auth"}"#, Some(BASIC_AUTH)),
        (r#"{"type": "kubernetes.io\/basic-auth"}"#, Some(BASIC_AUTH)),
        (r#"{"type": null}"#, None),
        (r#"{"type": 5}"#, None),
        (r#"{"type": {"a": "b"}}"#, None),
        (r#"{}"#, None),
    ] {
        let obj: SecretObject = serde_json::from_str(json).expect(json);
        let whole = object(serde_json::from_str(json).expect(json));
        assert_eq!(SecretView::from_object(&obj).type_, want, "{json}");
        assert_eq!(SecretView::new(&whole).type_, want, "{json}");
    }
}

/// Short and long values decode alike, and bad base64 is refused either way.
#[test]
fn short_and_long_values_decode_alike() {
    let long = "x".repeat(2000);
    for (name, encoded, want) in [
        ("empty", String::new(), Ok(Some(Vec::new()))),
        ("short", b64("oci://x"), Ok(Some(b"oci://x".to_vec()))),
        (
            "at the boundary",
            b64(&long[..255]),
            Ok(Some(long[..255].into())),
        ),
        (
            "over the boundary",
            b64(&long[..256]),
            Ok(Some(long[..256].into())),
        ),
        ("long", b64(&long), Ok(Some(long.clone().into_bytes()))),
        (
            "short, bad",
            "not base64!".into(),
            Err(InputError::Base64("url".into())),
        ),
        (
            "long, bad",
            format!("{}!", b64(&long)),
            Err(InputError::Base64("url".into())),
        ),
        (
            "short, cut",
            b64("oci://x")[..5].into(),
            Err(InputError::Base64("url".into())),
        ),
    ] {
        let obj = object(secret(
            "Opaque",
            json!({}),
            None,
            Some(json!({ "url": encoded })),
        ));
        let got = SecretView::new(&obj).decoded("url");
        assert_eq!(got, want, "{name}");
    }
}
