//! Warning Events from the webhook, recorded by the test suite's Kubernetes API server
//! (tests/it/common/fake_kube.rs): a fail-open write and a policy refusal each get one, repeated
//! failures of the same secret are rate-limited (1st, 2nd, 4th...), and a dry run gets none.

use crate::common;

use std::time::Duration;

use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::policy::{Pattern, Policy, RegistryPattern};
use serde_json::Value;

fn events_for(kube: &FakeKube, name: &str) -> Vec<Value> {
    kube.events()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_and_policy_refusals_get_rate_limited_events_and_dry_runs_none() {
    let kube = FakeKube::start(None, reqwest::Client::new()).await;
    let policy = Policy::from_flags(
        vec![Pattern::new("argocd")],
        vec![RegistryPattern::parse("123456789012:us-*").unwrap()],
        vec![],
    );
    let h = Harness::start(Options {
        policy,
        events: Some(kube.client()),
        ..Options::default()
    })
    .await;

    // A dry run outside the policy: answered as usual, but no Event (checked at the end, after
    // Events sent later than it have arrived).
    let dry = fixture("argocd-repository-create-dry-run.json");
    let dry_name = dry["request"]["name"].as_str().unwrap().to_string();
    let (_, resp, _) = h.post(&dry.to_string(), "5s").await;
    assert!(warnings(&resp)[0].contains("refused by policy"), "{resp}");

    // A policy refusal, five times in a row: Events for the 1st, 2nd and 4th only.
    let refused = fixture("basic-auth-create.json");
    let name = refused["request"]["name"].as_str().unwrap().to_string();
    let ns = refused["request"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..5 {
        let (_, resp, _) = h.post(&refused.to_string(), "5s").await;
        assert_eq!(resp["response"]["allowed"], true);
    }
    until(
        "three RefusedByPolicy Events",
        Duration::from_secs(10),
        async || events_for(&kube, &name).len() >= 3,
    )
    .await;

    // Fail-open: ECR throttles, the write goes through with the error annotation and an Event.
    h.ecr.set_fault(Fault::Throttle);
    let open = fixture("argocd-repository-create-apply.json");
    let open_name = open["request"]["name"].as_str().unwrap().to_string();
    let (_, resp, _) = h.post(&open.to_string(), "5s").await;
    let err = annotations(&apply(&open, &resp))["ecr-token-webhook/error"].clone();
    until(
        "a TokenNotWritten Event",
        Duration::from_secs(10),
        async || !events_for(&kube, &open_name).is_empty(),
    )
    .await;
    let ev = &events_for(&kube, &open_name)[0];
    assert_eq!(ev["reason"], "TokenNotWritten");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["message"].as_str(), Some(err.as_str()));
    assert!(err.starts_with("no ECR token"), "{err}");
    assert_eq!(ev["involvedObject"]["kind"], "Secret");
    assert_eq!(ev["involvedObject"]["namespace"], "argocd");
    // CREATE: the API server has not assigned a uid yet; the Event names the secret instead.
    assert!(
        ev["involvedObject"].get("uid").is_none_or(Value::is_null),
        "{ev}"
    );

    let refusals = events_for(&kube, &name);
    assert_eq!(refusals.len(), 3, "1st, 2nd and 4th of five: {refusals:?}");
    for ev in &refusals {
        assert_eq!(ev["reason"], "RefusedByPolicy");
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["metadata"]["namespace"], ns.as_str());
        assert_eq!(
            ev["message"],
            format!("refused by policy: namespace {ns} is not in --allowed-namespaces (argocd)")
        );
    }
    assert!(
        events_for(&kube, &dry_name).is_empty(),
        "no Event for a dry run"
    );
    for ev in kube.events() {
        assert!(
            !ev.to_string().contains("fake-token-"),
            "no token in an Event"
        );
    }
}
