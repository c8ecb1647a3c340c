//! Token lifetimes, rotation and faults, through the real aws-sdk-ecr client against the test
//! suite's own ECR endpoint on 127.0.0.1, and through the webhook over TLS.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use ecr_token_webhook::time::parse_rfc3339;
use serde_json::Value;

fn expires_at(after: &Value) -> SystemTime {
    parse_rfc3339(&annotations(after)["ecr-token-webhook/expires-at"])
        .expect("expires-at is RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ecr_call_for_100_concurrent_cold_requests() {
    let h = Harness::start(Options::default()).await;
    h.ecr.set_fault(Fault::Slow(Duration::from_millis(300)));
    let review = fixture("argocd-repository-create-apply.json").to_string();
    let requests = (0..100).map(|_| h.post(&review, "10s"));
    let answers = futures::future::join_all(requests).await;
    let mut passwords = std::collections::BTreeSet::new();
    for (status, resp, text) in &answers {
        assert_eq!(status.as_u16(), 200, "{text}");
        let after = apply(&fixture("argocd-repository-create-apply.json"), resp);
        passwords.insert(data(&after, "password"));
    }
    assert_eq!(h.ecr.calls(), 1, "100 cold requests share one ECR call");
    assert_eq!(passwords.len(), 1);
    assert_eq!(passwords.into_iter().next().unwrap(), FakeEcr::password(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotates_when_the_entry_ages_out() {
    // 4 s tokens, 2 s margin (slack 0.2 s): an entry is handed out for 1.8 s.
    let h = Harness::start(Options {
        lifetime: Duration::from_secs(4),
        margin: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let review = fixture("argocd-repository-create-apply.json");
    let (_, first, _) = h.post(&review.to_string(), "5s").await;
    let first = apply(&review, &first);
    let (_, again, _) = h.post(&review.to_string(), "5s").await;
    assert_eq!(
        data(&apply(&review, &again), "password"),
        data(&first, "password")
    );
    assert_eq!(h.ecr.calls(), 1);
    // A freshly written token always has more than the margin left.
    let left = expires_at(&first)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(left > Duration::from_secs(2), "{left:?}");

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (_, rotated, _) = h.post(&review.to_string(), "5s").await;
    let rotated = apply(&review, &rotated);
    assert_eq!(h.ecr.calls(), 2, "aged-out entry is fetched again");
    assert_eq!(data(&rotated, "password"), FakeEcr::password(1));
    assert!(
        expires_at(&rotated) > expires_at(&first),
        "expires-at moves forward"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_but_valid_token_is_served_during_an_outage_and_ecr_is_not_hammered() {
    let h = Harness::start(Options {
        lifetime: Duration::from_secs(6),
        margin: Duration::from_secs(3),
        backoff: Duration::from_secs(30),
        ..Options::default()
    })
    .await;
    let review = fixture("argocd-repository-create-apply.json");
    let (_, first, _) = h.post(&review.to_string(), "5s").await;
    let first = apply(&review, &first);

    h.ecr.set_fault(Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(3000)).await; // past 6 - 3 - 0.3 s
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = apply(&review, &resp);
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(
        data(&after, "password"),
        data(&first, "password"),
        "last valid token written"
    );
    let w = warnings(&resp);
    assert!(
        w.iter()
            .any(|w| w.contains("ServerException") && w.contains("valid until")),
        "{w:?}"
    );
    assert!(!annotations(&after).contains_key("ecr-token-webhook/error"));
    let calls = h.ecr.calls();
    assert!(calls >= 2, "ECR was asked again ({calls} calls)");

    // Within the back-off, further requests do not call ECR.
    for _ in 0..5 {
        let (_, resp, _) = h.post(&review.to_string(), "5s").await;
        assert_eq!(
            data(&apply(&review, &resp), "password"),
            data(&first, "password")
        );
    }
    assert_eq!(h.ecr.calls(), calls, "no calls during back-off");
    let m = h.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_token_cache_lookups_total{result=\"stale\"} 6"),
        "{m}"
    );
    assert!(m.contains("outcome=\"patched_stale\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_without_any_token() {
    let h = Harness::start(Options::default()).await;
    h.ecr.set_fault(Fault::Throttle);
    let review = fixture("dockerconfigjson-create-mixed-registries.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    assert_eq!(resp["response"]["allowed"], true);
    let after = apply(&review, &resp);
    assert_eq!(
        after["data"], review["request"]["object"]["data"],
        "data unchanged"
    );
    let err = &annotations(&after)["ecr-token-webhook/error"];
    assert!(err.contains("ThrottlingException: Rate exceeded"), "{err}");
    assert!(err.contains("us-east-1"), "{err}");
    let w = warnings(&resp);
    assert!(w[0].starts_with("ecr-token-webhook: no ECR token"), "{w:?}");
    // The SDK retried once (2 attempts), then the cache backed off.
    assert_eq!(h.ecr.calls(), 2);
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    assert!(
        warnings(&resp)[0].contains("not retried for another"),
        "{:?}",
        warnings(&resp)
    );
    assert_eq!(h.ecr.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_ecr_answers_within_the_api_server_timeout_and_fills_the_cache_later() {
    let h = Harness::start(Options::default()).await;
    h.ecr.set_fault(Fault::Slow(Duration::from_millis(2500)));
    let review = fixture("basic-auth-create.json");
    let started = Instant::now();
    let (_, resp, _) = h.post(&review.to_string(), "1s").await;
    let took = started.elapsed();
    // The answer did not wait for ECR (2.5 s): it came back within the request's timeout.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(resp["response"]["allowed"], true);
    let err = &annotations(&apply(&review, &resp))["ecr-token-webhook/error"];
    assert!(
        err.contains("no ECR token: us-east-1: no answer within the request timeout"),
        "{err}"
    );

    // The call went on in the background and filled the cache.
    h.ecr.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, resp, _) = h.post(&review.to_string(), "1s").await;
    assert_eq!(
        data(&apply(&review, &resp), "password"),
        FakeEcr::password(0)
    );
    assert_eq!(h.ecr.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_never_injected() {
    let h = Harness::start(Options {
        lifetime: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let review = fixture("argocd-repository-create-apply.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = apply(&review, &resp);
    assert!(after["data"].get("password").is_none());
    let err = &annotations(&after)["ecr-token-webhook/error"];
    assert!(err.contains("returned a token that expired at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_is_asked_with_its_own_signature_scope() {
    let h = Harness::start(Options::default()).await;
    let review = fixture("dockerconfigjson-create-without-data.json");
    let (_, resp, _) = h.post(&review.to_string(), "5s").await;
    let after = apply(&review, &resp);
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    assert_eq!(cfg["auths"].as_object().unwrap().len(), 2);
    let mut regions = h.ecr.regions();
    regions.sort();
    assert_eq!(regions, ["eu-central-1", "us-east-1"]);
}

/// AssumeRole through the real SDK against the suite's STS: the ECR call is signed with the
/// assumed role's key; when STS refuses, the reason names the step and the whole role, with
/// STS's own code and message and no debug dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_signs_with_the_role_and_a_refusal_says_so() {
    use ecr_token_webhook::aws::ecr::EcrTokenSource;
    use ecr_token_webhook::aws::token::{TokenKey, TokenSource};
    install_crypto();
    let ecr = FakeEcr::start(Duration::from_secs(12 * 3600)).await;
    let role = "arn:aws:iam::123456789012:role/teams/team-a-ecr-reader";
    let key = TokenKey::new("eu-west-1", Some(role.into()));
    let source = EcrTokenSource::new(sdk_config(&ecr.url));
    source.fetch(&key).await.expect("token under the role");
    assert_eq!(ecr.sts_calls(), 1);
    assert_eq!(
        ecr.access_keys(),
        ["ASIA000000"],
        "signed with the assumed key"
    );
    // The role's credentials serve every region and ECR Public: no second AssumeRole.
    source
        .fetch(&TokenKey::new("us-west-2", Some(role.into())))
        .await
        .expect("another region");
    source
        .fetch(&TokenKey::public(Some(role.into())))
        .await
        .expect("ECR Public");
    assert_eq!(ecr.sts_calls(), 1);
    assert_eq!(ecr.access_keys(), ["ASIA000000"; 3]);
    assert_eq!(
        ecr.credential_log()[0].signed_with.as_deref(),
        Some("AKIDTEST"),
        "AssumeRole signed with the base credentials"
    );

    ecr.set_sts_denied(true);
    // Another role: the first one's credentials are cached and shared by every region.
    let other = "arn:aws:iam::123456789012:role/teams/team-b-ecr-reader";
    let denied = TokenKey::new("us-west-2", Some(other.into()));
    let e = source.fetch(&denied).await.expect_err("STS refuses");
    let text = e.to_string();
    assert_eq!(
        text,
        format!(
            "AssumeRole of {other}: AccessDenied: User: arn:aws:iam::123456789012:user/webhook \
             is not authorized to perform: sts:AssumeRole on resource: {other}"
        )
    );
    assert_eq!(e.metric_label().label(), "assume_role");
}

/// ECR Public through the real aws-sdk-ecrpublic against the suite's endpoint, and through the
/// webhook: its own token, signed for `ecr-public` in us-east-1, cached apart from a private
/// registry's token in us-east-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_public_entries_get_ecr_publics_token() {
    let h = Harness::start(Options::default()).await;
    let mut review = fixture("dockerconfigjson-create-without-data.json");
    review["request"]["object"]["metadata"]["annotations"]["ecr-token-webhook/registries"] = serde_json::json!(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com public.ecr.aws ecr-public.aws.com"
    );
    let (_, resp, text) = h.post(&review.to_string(), "5s").await;
    let after = apply(&review, &resp);
    assert!(warnings(&resp).is_empty(), "{text}");
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    let auths = cfg["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 3);
    let mut log = h.ecr.ecr_log();
    log.sort_by(|a, b| a.service.cmp(&b.service));
    let services: Vec<(&str, &str)> = log
        .iter()
        .map(|c| (c.service.as_str(), c.region.as_str()))
        .collect();
    assert_eq!(
        services,
        [("ecr", "us-east-1"), ("ecr-public", "us-east-1")]
    );
    let public = auths["public.ecr.aws"]["password"].as_str().unwrap();
    assert_eq!(auths["ecr-public.aws.com"]["password"], public);
    assert_ne!(
        auths["123456789012.dkr.ecr.us-east-1.amazonaws.com"]["password"], public,
        "a token of its own"
    );
    // Cached like the others.
    h.post(&review.to_string(), "5s").await;
    assert_eq!(h.ecr.calls(), 2);
    let m = h.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_ecr_requests_total{region=\"public\",outcome=\"success\"} 1"),
        "{m}"
    );
}

/// A pull secret naming registries in two regions, one of whose ECR fails: the good registry
/// gets its token, the failed one's entry stays exactly as it was, the `error` annotation and
/// the warning name the failed registry; once the region answers again, the next write fills it
/// in and removes `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_region_is_named_and_the_others_are_written() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let h = Harness::start(Options {
        backoff: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const EUC1: &str = "210987654321.dkr.ecr.eu-central-1.amazonaws.com";
    let old_euc1 = serde_json::json!({"username": "AWS", "password": "old-euc1",
        "auth": b64("AWS:old-euc1")});
    let config = serde_json::json!({"auths": {EUC1: old_euc1, "docker.io": {"auth": "eDp5"}}});
    let mut review = pull_secret_review("partial", "team-a", &format!("{USE1},{EUC1}"), None);
    review["request"]["object"]["data"] =
        serde_json::json!({".dockerconfigjson": b64(&config.to_string())});
    h.ecr.set_failing_regions(&["eu-central-1"]);

    let (status, resp, text) = h.post(&review.to_string(), "5s").await;
    assert_eq!(status.as_u16(), 200, "{text}");
    assert_eq!(resp["response"]["allowed"], true);
    let after = apply(&review, &resp);
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    assert_eq!(
        cfg["auths"][EUC1], old_euc1,
        "the failed registry's entry is unchanged"
    );
    assert_eq!(cfg["auths"]["docker.io"], config["auths"]["docker.io"]);
    let written = cfg["auths"][USE1]["password"].as_str().unwrap_or_default();
    assert!(
        written.starts_with("fake-token-"),
        "a fresh token for {USE1}"
    );
    let ann = annotations(&after);
    let err = &ann["ecr-token-webhook/error"];
    assert!(
        err.starts_with(&format!("no ECR token for {EUC1}: ")),
        "{err}"
    );
    assert!(err.contains("ServerException"), "{err}");
    assert!(!err.contains(USE1), "{err}");
    assert!(ann.contains_key("ecr-token-webhook/expires-at"));
    let w = warnings(&resp);
    assert!(
        w.iter()
            .any(|w| w.starts_with(&format!("ecr-token-webhook: no ECR token for {EUC1}: "))),
        "{w:?}"
    );
    assert!(h.metrics().await.contains("outcome=\"partial\""));

    // The region answers again; a touch (UPDATE of the stored object) fills it in. The cache
    // may still be backing off for a moment, so touch until it does (bounded).
    h.ecr.set_failing_regions(&[]);
    let mut touch = review.clone();
    touch["request"]["operation"] = "UPDATE".into();
    touch["request"]["oldObject"] = after.clone();
    touch["request"]["object"] = after;
    let mut last = Value::Null;
    until(
        "the failed region's token is written",
        Duration::from_secs(20),
        async || {
            let (_, resp, _) = h.post(&touch.to_string(), "5s").await;
            last = apply(&touch, &resp);
            !annotations(&last).contains_key("ecr-token-webhook/error")
        },
    )
    .await;
    let cfg: Value = serde_json::from_str(&data(&last, ".dockerconfigjson")).unwrap();
    assert_ne!(cfg["auths"][EUC1]["password"], "old-euc1");
    assert_eq!(cfg["auths"][USE1]["password"].as_str(), Some(written));
    assert_eq!(cfg["auths"]["docker.io"], config["auths"]["docker.io"]);
}

/// Failure mode closed denies only when no token at all could be had: a partial outcome is
/// written with the warning, since a denial would keep the good tokens out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_writes_a_partial_outcome_and_denies_none_at_all() {
    let h = Harness::start(Options {
        failure_mode: ecr_token_webhook::admission::FailureMode::Closed,
        ..Options::default()
    })
    .await;
    const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const EUC1: &str = "210987654321.dkr.ecr.eu-central-1.amazonaws.com";
    let review = pull_secret_review("closed", "team-a", &format!("{USE1},{EUC1}"), None);
    h.ecr.set_failing_regions(&["eu-central-1"]);
    let (_, resp, text) = h.post(&review.to_string(), "5s").await;
    assert_eq!(resp["response"]["allowed"], true, "{text}");
    let after = apply(&review, &resp);
    let cfg: Value = serde_json::from_str(&data(&after, ".dockerconfigjson")).unwrap();
    assert!(cfg["auths"][USE1]["password"].is_string());
    assert!(
        cfg["auths"].get(EUC1).is_none(),
        "no entry made up for {EUC1}"
    );
    assert!(annotations(&after)["ecr-token-webhook/error"].contains(EUC1));

    h.ecr.set_failing_regions(&["eu-central-1", "us-east-1"]);
    let review = pull_secret_review("closed2", "team-b", EUC1, None);
    let (_, resp, text) = h.post(&review.to_string(), "5s").await;
    assert_eq!(resp["response"]["allowed"], false, "{text}");
}
