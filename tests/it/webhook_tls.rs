//! End to end over real TLS: the AdmissionReviews a real kube-apiserver sent (tests/fixtures),
//! answered by the webhook in front of the test suite's ECR endpoint, patches applied with
//! json-patch and the resulting Secrets asserted.

use crate::common;

use std::time::Duration;

use common::*;
use ecr_token_webhook::admission::FailureMode;
use ecr_token_webhook::policy::{Pattern, Policy, RegistryPattern};
use reqwest::StatusCode;
use serde_json::{Value, json};

const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const EUC1: &str = "210987654321.dkr.ecr.eu-central-1.amazonaws.com";

/// Checks the invariants every fixture answer must hold, returns the patched Secret.
fn patched(review: &Value, resp: &Value) -> Value {
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(
        resp["response"]["uid"], review["request"]["uid"],
        "uid carried over"
    );
    assert_eq!(resp["response"]["allowed"], true);
    let after = apply(review, resp);
    // Nothing the secret had is lost; keys the design does not name are unchanged.
    let before = &review["request"]["object"];
    if let Some(data) = before["data"].as_object() {
        for (k, v) in data {
            assert!(after["data"].get(k).is_some(), "data.{k} lost");
            if !["username", "password", ".dockerconfigjson", ".dockercfg"].contains(&k.as_str()) {
                assert_eq!(&after["data"][k], v, "data.{k} changed");
            }
        }
    }
    for (k, v) in annotations(before) {
        if !k.starts_with("ecr-token-webhook/expires-at")
            && !k.starts_with("ecr-token-webhook/error")
        {
            assert_eq!(
                annotations(&after).get(&k),
                Some(&v),
                "annotation {k} changed"
            );
        }
    }
    assert_eq!(before["metadata"]["labels"], after["metadata"]["labels"]);
    assert_eq!(
        before["metadata"]["managedFields"],
        after["metadata"]["managedFields"]
    );
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gets_a_token() {
    let h = Harness::start(Options::default()).await;
    let names = fixture_names();
    assert!(
        names.len() >= 9,
        "expected the captured fixtures, found {names:?}"
    );
    for name in &names {
        let review = fixture(name);
        let (status, resp, text) = h.post(&review.to_string(), "5s").await;
        assert_eq!(status, StatusCode::OK, "{name}: {text}");
        assert!(warnings(&resp).is_empty(), "{name}: {:?}", warnings(&resp));
        let after = patched(&review, &resp);
        let ann = annotations(&after);
        assert!(
            ann.contains_key("ecr-token-webhook/expires-at"),
            "{name}: {ann:?}"
        );
        assert!(!ann.contains_key("ecr-token-webhook/error"), "{name}");
        let ty = after["type"].as_str().unwrap_or_default();
        if ty == "kubernetes.io/dockerconfigjson" {
            let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
            let e = &cfg["auths"][USE1];
            assert_eq!(e["username"], "AWS", "{name}");
            assert!(
                e["password"].as_str().unwrap().starts_with("fake-token-"),
                "{name}"
            );
        } else {
            assert_eq!(data(&after, "username"), "AWS", "{name}");
            assert!(
                data(&after, "password").starts_with("fake-token-"),
                "{name}"
            );
            assert!(
                data(&after, "password").len() >= 2000,
                "{name}: realistic token size"
            );
        }
    }
    // One token per region, whatever the number of secrets: us-east-1, eu-west-1, eu-central-1.
    let mut regions = h.ecr.regions();
    regions.sort();
    assert_eq!(regions, ["eu-central-1", "eu-west-1", "us-east-1"]);
    let m = h.metrics().await;
    assert!(
        m.contains(
            "ecr_token_webhook_ecr_requests_total{region=\"us-east-1\",outcome=\"success\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("ecr_token_webhook_token_cache_lookups_total{result=\"hit\"}"),
        "{m}"
    );
    assert!(
        m.contains("ecr_token_webhook_token_expiry_seconds{region=\"us-east-1\",role_arn=\"\"}"),
        "{m}"
    );
    assert!(m.contains("outcome=\"patched\""), "{m}");
    assert!(!m.contains("fake-token-"), "no token in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_patched_as_the_design_says() {
    let h = Harness::start(Options::default()).await;

    // Argo CD repo-creds with oci:// and a path: url, type kept; username/password written.
    let review = fixture("argocd-repo-creds-create-oci.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    assert_eq!(
        data(&after, "url"),
        "oci://123456789012.dkr.ecr.eu-west-1.amazonaws.com/charts"
    );
    assert_eq!(data(&after, "type"), "oci");

    // Mixed pull secret: docker.io entry and credsStore kept, the old ECR entry replaced.
    let review = fixture("dockerconfigjson-create-mixed-registries.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    assert_eq!(cfg["credsStore"], "ecr-login");
    assert_eq!(
        cfg["auths"]["https://index.docker.io/v1/"]["password"],
        "hunter2"
    );
    assert_ne!(cfg["auths"][USE1]["password"], "old");
    let auth = cfg["auths"][USE1]["auth"].as_str().unwrap();
    let pw = cfg["auths"][USE1]["password"].as_str().unwrap();
    assert_eq!(auth, base64_of(&format!("AWS:{pw}")));

    // No data at all: both annotated registries, in two regions, with the earliest expiry.
    let review = fixture("dockerconfigjson-create-without-data.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    assert_eq!(cfg["auths"].as_object().unwrap().len(), 2);
    assert!(
        cfg["auths"][EUC1]["password"]
            .as_str()
            .unwrap()
            .starts_with("fake-token-")
    );

    // The refresher's touch (UPDATE) gets the current cached token and keeps touched-at.
    let create = fixture("argocd-repository-create-apply.json");
    let (_, resp, _) = h.post(&create.to_string(), "5s").await;
    let created = patched(&create, &resp);
    let review = fixture("argocd-repository-update-touch.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    assert_eq!(data(&after, "password"), data(&created, "password"));
    assert_eq!(
        annotations(&after)["ecr-token-webhook/touched-at"],
        "2026-11-22T12:00:00Z"
    );
    assert_eq!(annotations(&after)["probe.lab/mutated-by"], "probe-webhook");

    // Dry run is mutated like a real write (the API server shows the client the result).
    let review = fixture("argocd-repository-create-dry-run.json");
    assert_eq!(review["request"]["dryRun"], true);
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    assert_eq!(data(&patched(&review, &resp), "username"), "AWS");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_for_the_webhook_pass_unchanged() {
    let h = Harness::start(Options::default()).await;
    let base = fixture("argocd-repository-create-apply.json");

    let mut not_opted_in = base.clone();
    not_opted_in["request"]["object"]["metadata"]["labels"]["ecr-token-webhook/inject"] =
        json!("false");
    let mut delete = base.clone();
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["oldObject"] = delete["request"]["object"].take();
    let mut configmap = base.clone();
    configmap["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});

    for (name, review, warns) in [
        ("not opted in", not_opted_in, false),
        ("delete", delete, false),
        ("configmap", configmap, true),
    ] {
        let (status, resp, text) = h.post(&review.to_string(), "5s").await;
        assert_eq!(status, StatusCode::OK, "{name}: {text}");
        assert_eq!(resp["response"]["allowed"], true, "{name}");
        assert_eq!(resp["response"]["uid"], review["request"]["uid"], "{name}");
        assert!(resp["response"]["patch"].is_null(), "{name}: no patch");
        assert_eq!(
            !warnings(&resp).is_empty(),
            warns,
            "{name}: {:?}",
            warnings(&resp)
        );
    }
    assert_eq!(
        h.ecr.calls(),
        0,
        "ECR is not asked for secrets it does not serve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reviews_get_400_with_a_message() {
    let h = Harness::start(Options::default()).await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "not JSON",
            "{not json".into(),
            400,
            "malformed AdmissionReview",
        ),
        ("empty", String::new(), 400, "malformed AdmissionReview"),
        (
            "no request",
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            400,
            "has no request",
        ),
        (
            "v1beta1",
            {
                let mut r = fixture("basic-auth-create.json");
                r["apiVersion"] = json!("admission.k8s.io/v1beta1");
                r.to_string()
            },
            400,
            "expected an admission.k8s.io/v1 AdmissionReview",
        ),
        ("array", "[]".into(), 400, "malformed AdmissionReview"),
        (
            "too big",
            format!("{{\"pad\": \"{}\"}}", "x".repeat(7 * 1024 * 1024)),
            413,
            "larger than 6291456 bytes",
        ),
    ];
    for (name, body, want, msg) in cases {
        let resp = h
            .client
            .post(format!("{}/mutate", h.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect(name);
        assert_eq!(resp.status().as_u16(), want, "{name}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(msg), "{name}: {text}");
    }
    // Still serving after all that.
    let (status, _, _) = h
        .post(&fixture("basic-auth-create.json").to_string(), "5s")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_webhook_cannot_serve_is_allowed_with_a_warning_and_an_error_annotation() {
    let h = Harness::start(Options::default()).await;
    let mut review = fixture("argocd-repository-create-apply.json");
    review["request"]["object"]["data"]["url"] = json!(base64_of("ghcr.io/org/charts"));
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    let w = warnings(&resp);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("is not an ECR registry"), "{w:?}");
    assert!(annotations(&after)["ecr-token-webhook/error"].contains("is not an ECR registry"));
    assert!(after["data"].get("password").is_none());

    let mut review = fixture("dockerconfigjson-create-mixed-registries.json");
    review["request"]["object"]["data"][".dockerconfigjson"] = json!("%%%");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = patched(&review, &resp);
    assert_eq!(
        after["data"], review["request"]["object"]["data"],
        "nothing lost"
    );
    assert!(warnings(&resp)[0].contains("data..dockerconfigjson is not valid base64"));
}

/// A refusal writes no token: the secret keeps its data, and the warning and the `error`
/// annotation say which rule refused (for the flags, which flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_write_no_token_and_name_the_rule() {
    let policy = Policy::from_flags(
        vec![Pattern::new("argocd")],
        vec![RegistryPattern::parse("123456789012:us-*").unwrap()],
        vec![],
    );
    let h = Harness::start(Options {
        policy,
        ..Options::default()
    })
    .await;
    let cases = [
        ("argocd-repository-create-apply.json", None),
        (
            "basic-auth-create.json",
            Some("refused by policy: namespace apps is not in --allowed-namespaces (argocd)"),
        ),
        (
            "argocd-repo-creds-create-oci.json",
            Some(
                "refused by policy: registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com is not in --allowed-registries (123456789012:us-*)",
            ),
        ),
    ];
    for (name, want) in cases {
        let review = fixture(name);
        let (_, resp, _) = h.post(&review.to_string(), "5s").await;
        assert_eq!(resp["response"]["allowed"], true, "{name}");
        let after = apply(&review, &resp);
        match want {
            None => assert!(after["data"]["password"].is_string(), "{name}"),
            Some(msg) => {
                assert_eq!(
                    after["data"], review["request"]["object"]["data"],
                    "{name}: no token written"
                );
                assert_eq!(
                    annotations(&after)["ecr-token-webhook/error"],
                    msg,
                    "{name}"
                );
                assert_eq!(
                    warnings(&resp),
                    [format!("ecr-token-webhook: {msg}")],
                    "{name}"
                );
            }
        }
    }
    // A role the policy does not allow.
    let mut review = fixture("argocd-repository-create-apply.json");
    review["request"]["object"]["metadata"]["annotations"]["ecr-token-webhook/role-arn"] =
        json!("arn:aws:iam::123456789012:role/anything");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    assert!(apply(&review, &resp)["data"].get("password").is_none());
    assert!(warnings(&resp)[0].contains("--allowed-role-arns (none)"));
    let m = h.metrics().await;
    for want in [
        "ecr_token_webhook_policy_refusals_total{rule=\"flags\",reason=\"namespace\"} 1",
        "ecr_token_webhook_policy_refusals_total{rule=\"flags\",reason=\"registry\"} 1",
        "ecr_token_webhook_policy_refusals_total{rule=\"flags\",reason=\"role\"} 1",
    ] {
        assert!(m.contains(want), "missing {want}:\n{m}");
    }
    assert_eq!(h.ecr.calls(), 1, "no ECR call for refused secrets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let h = Harness::start(Options::default()).await;
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("{}{path}", h.metrics_base))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let (_, _, _) = h
        .post(&fixture("basic-auth-create.json").to_string(), "5s")
        .await;
    let m = h.metrics().await;
    for want in [
        "ecr_token_webhook_admission_requests_total{operation=\"CREATE\",kind=\"basic-auth\",outcome=\"patched\"} 1",
        "ecr_token_webhook_admission_duration_seconds_bucket",
        "ecr_token_webhook_token_cache_lookups_total{result=\"miss\"} 1",
    ] {
        assert!(m.contains(want), "missing {want}:\n{m}");
    }
    // Graceful shutdown: stops, and the port no longer answers.
    let addr = h.running.addr;
    h.running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_denies_with_the_reason() {
    let h = Harness::start(Options {
        failure_mode: FailureMode::Closed,
        ..Options::default()
    })
    .await;
    h.ecr.set_fault(Fault::Throttle);
    let review = fixture("basic-auth-create.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    assert_eq!(resp["response"]["allowed"], false);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("ThrottlingException: Rate exceeded"), "{msg}");
    assert!(resp["response"]["patch"].is_null());
}
