//! `ecr-token-webhook status`, the real binary, with a kubeconfig pointing at the test suite's
//! API server (tests/it/common/fake_kube.rs). Healthy secrets get their tokens from the real
//! webhook over TLS in front of the suite's ECR; broken ones are made the ways they break in a
//! cluster (ECR failing, the webhook down at write time, a refresher that stopped touching).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::time::rfc3339;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-webhook");
const USE1: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const EUW1: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `status` with `kubeconfig` and nothing of the caller's environment that it reads.
async fn status(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg("status").args(args).env("KUBECONFIG", kubeconfig);
    for var in [
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "ECR_TOKEN_WEBHOOK_REFRESH_MARGIN",
        "ECR_TOKEN_WEBHOOK_NAMESPACE",
        "ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES",
        "ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES",
        "ECR_TOKEN_WEBHOOK_ALLOWED_ROLE_ARNS",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("status finished within 90s")
    .expect("join")
    .expect("run status");
    Out {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8"),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    }
}

/// A kubeconfig for `server` whose context's namespace is `apps`.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: apps}}}}]\n"
        ),
    )
    .expect("kubeconfig");
    path
}

fn argo(ns: &str, name: &str, url: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations, "labels": {
            "ecr-token-webhook/inject": "true", "argocd.argoproj.io/secret-type": "repository"}},
        "data": {"url": B64.encode(url), "type": B64.encode("helm")}})
}

fn pull(ns: &str, name: &str, labels: Value, hosts: &[&str]) -> Value {
    let auths: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|h| {
            (
                h.to_string(),
                json!({"auth": B64.encode("user:hub-password")}),
            )
        })
        .collect();
    let config = json!({"auths": auths}).to_string();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": {".dockerconfigjson": B64.encode(config)}})
}

/// Creates a secret through the API server, which sends it through the webhook (if set).
async fn create(kube: &FakeKube, obj: Value) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
    let secret: Secret = serde_json::from_value(obj).expect("secret");
    Api::<Secret>::namespaced(kube.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

fn ago(secs: u64) -> String {
    rfc3339(SystemTime::now() - Duration::from_secs(secs))
}

/// The table's row for `ns name`, split into cells.
fn row<'a>(stdout: &'a str, ns: &str, name: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= 2 && cells[0] == ns && cells[1] == name)
        .unwrap_or_else(|| panic!("no row for {ns}/{name}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_healthy_and_broken_secrets_and_exits_accordingly() {
    let h = Harness::start(Options::default()).await;
    let kube = FakeKube::start(Some(h.base.clone()), https_client(&h.ca_pem)).await;

    // Healthy: the real webhook wrote a 12-hour token.
    create(
        &kube,
        argo(
            "argocd",
            "charts",
            &format!("oci://{USE1}/charts"),
            json!({}),
        ),
    )
    .await;
    // ECR failing for a region with nothing cached: fail-open writes the error annotation.
    h.ecr.set_fault(Fault::ServerError);
    create(
        &kube,
        pull(
            "apps",
            "pull",
            json!({"ecr-token-webhook/inject": "true"}),
            &[EUW1],
        ),
    )
    .await;
    h.ecr.set_fault(Fault::None);
    // The webhook down when the secret was written: no expires-at, no error.
    kube.set_webhook(None);
    create(&kube, argo("apps", "new", USE1, json!({}))).await;
    kube.set_webhook(Some(h.base.clone()));
    // A refresher that stopped touching: the token ran out.
    kube.seed(argo(
        "apps",
        "old",
        USE1,
        json!({"ecr-token-webhook/expires-at": ago(2 * 3600), "ecr-token-webhook/touched-at": ago(14 * 3600)}),
    ));
    // Not opted in, and no ECR host in it: not listed, but diagnosed by name.
    kube.seed(pull(
        "apps",
        "hub",
        json!({}),
        &["https://index.docker.io/v1/"],
    ));
    // Listed items come back without apiVersion and kind, as a real API server sends them.
    let mut bare = argo("team", "fresh", USE1, json!({}));
    bare.as_object_mut().unwrap().remove("apiVersion");
    kube.seed(bare);
    let token_of = |ns: &str, name: &str| -> String {
        let s = kube.secret(ns, name).expect("secret");
        String::from_utf8(
            B64.decode(s["data"]["password"].as_str().expect("token"))
                .unwrap(),
        )
        .unwrap()
    };
    let token = token_of("argocd", "charts");
    assert!(token.len() > 1000, "a real token was written");
    // Give team/fresh the webhook's work too (a touch through the API server).
    let touch = json!({"metadata": {"annotations": {"ecr-token-webhook/touched-at": ago(0)}}});
    Api::<Secret>::namespaced(kube.client(), "team")
        .patch(
            "fresh",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&touch),
        )
        .await
        .expect("touch");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &kube.url);

    // All namespaces: a table, reasons, a verdict, exit 1.
    let out = status(&config, &[], &[]).await;
    println!("{}", out.stdout);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAMESPACE",
            "NAME",
            "KIND",
            "REGISTRIES",
            "EXPIRES",
            "TOUCHED",
            "STATE"
        ]
    );
    // Columns line up: every row's STATE starts where the header's does.
    let state_col = lines[0].find("STATE").unwrap();
    for l in &lines[1..6] {
        assert!(
            l.len() > state_col && &l[state_col - 3..state_col] == "   ",
            "{l:?}"
        );
    }
    let charts = row(&out.stdout, "argocd", "charts");
    assert_eq!(charts[2..4], ["argocd-repository", USE1]);
    assert!(
        charts[4] == "in" && (charts[5].starts_with("11h5") || charts[5] == "12h"),
        "{charts:?}"
    );
    assert_eq!(charts[6..], ["never", "fresh"]);
    assert_eq!(
        row(&out.stdout, "apps", "pull")[2..],
        ["dockerconfigjson", EUW1, "-", "never", "error"]
    );
    assert_eq!(
        row(&out.stdout, "apps", "new")[2..],
        ["argocd-repository", USE1, "-", "never", "no-token"]
    );
    assert_eq!(
        row(&out.stdout, "apps", "old")[2..],
        [
            "argocd-repository",
            USE1,
            "expired",
            "2h",
            "ago",
            "14h",
            "ago",
            "expired"
        ]
    );
    let fresh = row(&out.stdout, "team", "fresh");
    assert_eq!(fresh[fresh.len() - 1], "fresh", "{fresh:?}");
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("hub")),
        "not opted in, not listed"
    );
    for want in [
        "apps/pull (error):\n  - the webhook could not write a token: no ECR token: ",
        "  - ECR or AWS access is failing",
        "apps/new (no-token):\n",
        "  - no expires-at and no error annotation: the webhook has not written this secret",
        "apps/old (expired):\n  - the token expired 2h ago",
        "has not touched it since it became due (last touched 14h ago)",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in\n{}", out.stdout);
    }
    assert!(
        !out.stdout.contains("argocd/charts ("),
        "a fresh secret has no reasons"
    );
    assert_eq!(
        lines.last().unwrap(),
        &"5 secrets in all namespaces: 2 fresh, 1 expired, 1 without a token, 1 with an error"
    );
    // Never a token or another secret value.
    for value in [token.as_str(), &token_of("team", "fresh"), "hub-password"] {
        assert!(!out.stdout.contains(value) && !out.stderr.contains(value));
    }

    // JSON for scripts: the same facts.
    let out = status(&config, &["-o", "json"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stdout.contains(&token));
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["secrets"].as_array().unwrap().len(), 5);
    let by_name = |n: &str| {
        doc["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
            .clone()
    };
    let charts = by_name("charts");
    assert_eq!(charts["state"], "fresh");
    assert_eq!(charts["kind"], "argocd-repository");
    assert_eq!(charts["registries"], json!([USE1]));
    let left = charts["expiresInSeconds"].as_i64().unwrap();
    assert!(left > 11 * 3600 && left <= 12 * 3600, "{left}");
    let pull = by_name("pull");
    assert_eq!(pull["state"], "error");
    assert!(
        pull["error"]
            .as_str()
            .unwrap()
            .starts_with("no ECR token: ")
    );
    assert!(by_name("old")["expiresInSeconds"].as_i64().unwrap() < 0);
    assert_eq!(by_name("new")["expiresAt"], Value::Null);
    assert_eq!(doc["verdict"]["ok"], false);
    assert_eq!(doc["verdict"]["total"], 5);
    assert_eq!(doc["verdict"]["states"]["fresh"], 2);
    assert_eq!(doc["verdict"]["states"]["no-token"], 1);

    // One namespace with only healthy secrets: exit 0.
    let out = status(&config, &["-n", "argocd"], &[]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .ends_with("\n1 secret in namespace argocd: 1 fresh\n"),
        "{}",
        out.stdout
    );
    let out = status(&config, &["--namespace", "nothing-here"], &[]).await;
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        "no opted-in secrets (ecr-token-webhook/inject=true) in namespace nothing-here\n"
    );

    // The webhook's policy, from the same environment variables `serve` reads.
    let out = status(
        &config,
        &["-n", "apps"],
        &[("ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES", "argocd,team-*")],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains(
            "  - refused by policy: namespace apps is not in --allowed-namespaces (argocd,team-*): the webhook writes no token (only the error annotation) and the refresher skips the namespace"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("\n3 secrets in namespace apps: 3 outside the policy\n")
    );

    // One secret by name, even without the label; its namespace from the kubeconfig context.
    let out = status(&config, &["hub"], &[]).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for want in [
        "apps/hub (not-opted-in):\n  - not opted in: add the label: kubectl -n apps label secret hub ecr-token-webhook/inject=true\n",
        "  - even opted in, the webhook could not serve it: none of its registries is an ECR host (https://index.docker.io/v1/)",
        "\nsecret apps/hub is not opted in\n",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in\n{}", out.stdout);
    }
    assert_eq!(
        row(&out.stdout, "apps", "hub")[2..4],
        ["dockerconfigjson", "-"]
    );
    let out = status(&config, &["-n", "argocd", "charts", "-o", "json"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["secrets"][0]["state"], "fresh");

    // Cannot tell: exit 2 with one line that says why.
    let out = status(&config, &["-n", "apps", "missing"], &[]).await;
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr, "error: secret apps/missing not found\n");
    assert!(out.stdout.is_empty());
    let out = status(&config, &["-A", "-n", "apps"], &[]).await;
    assert_eq!(out.code, 2, "usage error");
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    let out = status(&config, &["--refresh-margin", "soon"], &[]).await;
    assert_eq!(out.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exits_2_when_the_cluster_cannot_be_reached() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
    let out = status(&config, &[], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the API server at http://127.0.0.1:{port}/"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    let out = status(&dir.path().join("absent"), &[], &[]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("error: no Kubernetes configuration"),
        "{}",
        out.stderr
    );
}

/// More secrets than one page holds: every page is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_every_page() {
    let kube = FakeKube::start(None, reqwest::Client::new()).await;
    let expires = rfc3339(SystemTime::now() + Duration::from_secs(10 * 3600));
    for i in 0..1001 {
        kube.seed(argo(
            "bulk",
            &format!("s{i:04}"),
            USE1,
            json!({"ecr-token-webhook/expires-at": expires}),
        ));
    }
    kube.seed(pull("bulk", "unlabelled", json!({}), &[USE1]));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &kube.url);
    let out = status(&config, &["-n", "bulk", "-o", "json"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["verdict"]["total"], 1001);
    assert_eq!(doc["verdict"]["states"]["fresh"], 1001);
    assert_eq!(kube.lists(), 3, "pages of 500");
    assert_eq!(kube.cluster_lists(), 0, "-n lists in the namespace only");
}

/// The exit-code rule of `status --help` (the binary's own text) and of the `status` section of
/// docs/configuration.md: the states each sends to 0 and to 1 are the ones the verdict treats so.
#[test]
fn status_help_and_the_docs_state_the_exit_codes_the_verdict_uses() {
    use ecr_token_webhook::commands::status::State;
    let out = Command::new(BIN)
        .args(["status", "--help"])
        .output()
        .expect("run status --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let section = page
        .split("### `ecr-token-webhook status`")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the status section of docs/configuration.md");
    let ok: Vec<&str> = State::ALL
        .iter()
        .filter(|s| !s.is_problem())
        .map(|s| s.label())
        .collect();
    let problems: Vec<&str> = State::ALL
        .iter()
        .filter(|s| s.is_problem())
        .map(|s| s.label())
        .collect();
    for (source, text) in [
        ("status --help", help.as_str()),
        ("docs/configuration.md", section),
    ] {
        // One line, without the docs' backquotes: "Exit code: 0 when ...; 1 when ...; 2 when ...".
        let flat = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('`', "");
        let rule = flat
            .split("Exit code: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{source}: no exit code rule in\n{text}"));
        let clause = |code: &str| -> String {
            rule.split("; ")
                .find(|c| c.starts_with(&format!("{code} when ")))
                .unwrap_or_else(|| panic!("{source}: no clause for {code} in {rule:?}"))
                .to_string()
        };
        let (zero, one) = (clause("0"), clause("1"));
        assert!(clause("2").contains("cannot tell"), "{source}: {rule:?}");
        for label in State::ALL.iter().map(|s| s.label()) {
            let (want, other) = if ok.contains(&label) {
                (&zero, &one)
            } else {
                (&one, &zero)
            };
            let named = |c: &str| {
                c.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
                    .any(|w| w == label)
            };
            assert!(named(want), "{source}: {label} missing from {want:?}");
            assert!(!named(other), "{source}: {label} in {other:?}");
        }
    }
    assert!(!problems.is_empty() && !ok.is_empty());
}
