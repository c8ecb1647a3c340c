//! The metric names the shipped alerts, the dashboard, the runbook and docs/configuration.md use
//! are the ones the binary exports: `Metrics` with every family recorded once, rendered as `/metrics`
//! serves it. (tests/kube/test_prometheus.py checks the same against a running binary scraped by
//! a real Prometheus.)

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ecr_token_webhook::aws::token::TokenKey;
use ecr_token_webhook::metrics::{
    AdmissionOutcome, CacheResult, EcrOutcome, Metrics, Operation, ReloadOutcome, RenewalOutcome,
    TouchOutcome,
};
use ecr_token_webhook::policy::RefusalKind;
use ecr_token_webhook::state::State;

/// The text exposition with every family holding a sample.
fn exposition() -> String {
    let m = Metrics::default();
    m.admission(
        Operation::Create,
        "dockerconfigjson",
        AdmissionOutcome::Patched,
        Duration::from_millis(3),
    );
    m.ecr_call("us-east-1", EcrOutcome::Success, Duration::from_millis(40));
    m.cache_lookup(CacheResult::Hit);
    m.touch(TouchOutcome::Took);
    m.set_leader(true);
    m.pass(
        1,
        0,
        &[(State::Fresh, 1)],
        Some(SystemTime::now() + Duration::from_secs(3600)),
    );
    m.tls_renewal(RenewalOutcome::Failed);
    m.policy_refusal("team-a".into(), RefusalKind::Registry);
    m.policy_reload(ReloadOutcome::Reloaded);
    m.tls_reload(ReloadOutcome::Reloaded);
    m.set_tls_not_after(SystemTime::now());
    m.render(&[(TokenKey::new("us-east-1", None).metric_labels(), 3600.0)])
}

/// Sample names (`name_total`, `name_bucket`, ...) and families with their types.
fn exported() -> (BTreeSet<String>, Vec<(String, String)>) {
    let text = exposition();
    let mut samples = BTreeSet::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.push((name.to_string(), kind.to_string()));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (samples, families)
}

/// Every `ecr_token_webhook_*` name in a text.
fn referenced(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "ecr_token_webhook_";
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let after = &rest[i..];
        let end = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        out.insert(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn alerts_dashboard_and_runbook_use_exported_metrics() {
    let (samples, _) = exported();
    for path in [
        "deploy/components/alerts/prometheusrule.yaml",
        "deploy/helm/ecr-token-webhook/templates/prometheusrule.yaml",
        "deploy/helm/ecr-token-webhook/dashboards/ecr-token-webhook.json",
        "tests/monitoring/rules.test.yaml",
        "docs/runbook.md",
    ] {
        let names = referenced(&read(path));
        assert!(!names.is_empty(), "{path} names no metric");
        let unknown: Vec<_> = names.difference(&samples).collect();
        assert!(
            unknown.is_empty(),
            "{path} uses metrics the binary does not export: {unknown:?}\nexported: {samples:?}"
        );
    }
}

/// The metrics table of docs/configuration.md lists every family under the name queries use (counters with
/// `_total`), and nothing else.
#[test]
fn the_configuration_page_documents_every_metric() {
    let (_, families) = exported();
    let page = read("docs/configuration.md");
    let documented: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `ecr_token_webhook_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("ecr_token_webhook_{n}"))
        .collect();
    let wanted: BTreeSet<String> = families
        .iter()
        .map(|(name, kind)| {
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.clone()
            }
        })
        .collect();
    assert_eq!(
        documented, wanted,
        "docs/configuration.md's metrics table vs /metrics"
    );
}
