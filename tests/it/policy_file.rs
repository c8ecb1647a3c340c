//! `--policy-file` in the real binary: a ConfigMap-style mount (the kubelet's `..data` symlink
//! swap) is followed as it changes; a bad version is refused with a log line and a metric while
//! the last good policy stays in force; a bad file at start, or the file given together with
//! an `--allowed-*` flag, stops the process with the reason.

use crate::common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{WebhookProcess, run};
use common::*;

/// A directory laid out as the kubelet mounts a ConfigMap: `policy.yaml -> ..data/policy.yaml`,
/// `..data -> ..<version>`; a new version is swapped in with one atomic rename.
struct ConfigMapMount {
    dir: PathBuf,
    version: usize,
}

impl ConfigMapMount {
    fn new(dir: &Path, content: &str) -> ConfigMapMount {
        let mut m = ConfigMapMount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        m.update(content);
        symlink("..data/policy.yaml", dir.join("policy.yaml")).unwrap();
        m
    }

    fn update(&mut self, content: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("policy.yaml"), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }
}

const FIRST: &str =
    "rules:\n  - name: first\n    namespaces: [apps]\n    registries: [\"123456789012\"]\n";
const SECOND: &str = "rules:\n  - name: second\n    namespaces: [apps]\n    registries: [\"123456789012\", \"210987654321:eu-*\"]\n";
const REGISTRY: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_file_is_reloaded_and_a_bad_version_is_refused() {
    install_crypto();
    let ecr = FakeEcr::start(Duration::from_secs(12 * 3600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mount_dir = dir.path().join("policy");
    std::fs::create_dir(&mount_dir).unwrap();
    let mut mount = ConfigMapMount::new(&mount_dir, FIRST);
    let policy = mount.path();
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_ECR", ecr.url.as_str()),
        ("ECR_TOKEN_WEBHOOK_POLICY_FILE", policy.to_str().unwrap()),
        ("ECR_TOKEN_WEBHOOK_POLICY_RELOAD_INTERVAL", "100ms"),
        // The manifests' defaults for the flags: allowed beside a file.
        ("ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES", "*"),
        ("ECR_TOKEN_WEBHOOK_ALLOWED_REGISTRIES", "*"),
    ];
    let mut hook = WebhookProcess::start(&dir.path().join("tls"), &env, &[]);
    let starting = hook.wait_for("starting");
    assert_eq!(
        starting["policy"],
        format!("file={} rules=first", policy.display())
    );
    let review = pull_secret_review("a", "apps", REGISTRY, None);
    let refused_by_first = format!(
        "ecr-token-webhook: refused by policy rule first (rules[0]): registry {REGISTRY} is not \
         in its registries (123456789012:*)"
    );
    let (_, resp, _) = hook.post(&review.to_string()).await;
    assert_eq!(warnings(&resp), std::slice::from_ref(&refused_by_first));

    // A bad version: refused, reported once, the first policy stays in force.
    mount.update("rules:\n  - name: second\n    namespaces: [apps]\n");
    let line =
        hook.wait_for("refused the changed policy file; the last good policy stays in force");
    let error = line["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("policy file {}: ", policy.display()))
            && error.contains("missing field `registries`"),
        "{line}"
    );
    assert_eq!(line["level"], "ERROR");
    let (_, resp, _) = hook.post(&review.to_string()).await;
    assert_eq!(warnings(&resp), [refused_by_first]);
    let m = hook.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_policy_reloads_total{outcome=\"refused\"} 1"),
        "{m}"
    );

    // A good version: swapped in, and the secret now gets its token.
    mount.update(SECOND);
    let line = hook.wait_for("reloaded the policy file");
    assert_eq!(
        line["policy"],
        format!("file={} rules=second", policy.display())
    );
    let (_, resp, _) = hook.post(&review.to_string()).await;
    assert!(warnings(&resp).is_empty(), "{:?}", warnings(&resp));
    assert_eq!(docker_passwords(&review, &resp).len(), 1);
    let m = hook.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_policy_reloads_total{outcome=\"reloaded\"} 1"),
        "{m}"
    );
}

#[test]
fn a_bad_policy_file_or_a_flag_beside_it_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let p = policy.to_str().unwrap();
    let serve = [
        "serve",
        "--tls-self-signed",
        "--refresher=false",
        "--log-format=text",
    ];

    std::fs::write(
        &policy,
        "rules:\n  - namespaces: [apps]\n    registries: ['1:2:3']\n",
    )
    .unwrap();
    let (code, stderr) = run(dir.path(), &[("ECR_TOKEN_WEBHOOK_POLICY_FILE", p)], &serve);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "policy file {p}: rules[0]: registries: invalid registry pattern \"1:2:3\""
        )),
        "{stderr}"
    );

    std::fs::write(&policy, FIRST).unwrap();
    let (code, stderr) = run(
        dir.path(),
        &[
            ("ECR_TOKEN_WEBHOOK_POLICY_FILE", p),
            ("ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES", "argocd"),
        ],
        &serve,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--policy-file {p} replaces --allowed-namespaces")),
        "{stderr}"
    );

    let (code, stderr) = run(
        dir.path(),
        &[("ECR_TOKEN_WEBHOOK_POLICY_FILE", "/nonexistent/policy.yaml")],
        &serve,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("policy file /nonexistent/policy.yaml: cannot read"),
        "{stderr}"
    );
}
