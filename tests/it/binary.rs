//! The real binary: `serve --tls-self-signed`, configured through environment variables, with
//! `AWS_ENDPOINT_URL_ECR` pointing aws-config's default chain at the test suite's ECR endpoint.
//! SIGTERM stops it cleanly, and no token reaches its logs.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::LogLines;
use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-webhook");

struct Proc {
    child: Child,
    logs: LogLines,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ecr-token-webhook");
        let logs = LogLines::follow(&mut child);
        Proc { child, logs }
    }

    /// Waits (bounded) for a JSON log line whose message is `message`.
    fn wait_for(&mut self, message: &str) -> Value {
        self.logs.wait_for(&mut self.child, message)
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; then reads its last lines.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
    }

    /// Waits (bounded) for the process to exit; then reads its last lines.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within 20s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.logs.drain_quiet();
        status
    }
}

fn clean_aws_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ] {
        cmd.env_remove(var);
    }
    // No cluster either: the refresher must say so while the webhook keeps serving.
    cmd.env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
}

/// `serve` on 127.0.0.1 with `--tls-self-signed`, no cluster and no AWS configuration but what a
/// test adds.
fn serve_locally(cmd: &mut Command) -> &mut Command {
    clean_aws_env(cmd)
        .arg("serve")
        .env("ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED", "true")
        .env("ECR_TOKEN_WEBHOOK_LISTEN", "127.0.0.1:0")
        .env("ECR_TOKEN_WEBHOOK_METRICS_LISTEN", "127.0.0.1:0")
}

/// Static keys and the suite's ECR endpoint.
fn with_fake_ecr<'c>(cmd: &'c mut Command, url: &str) -> &'c mut Command {
    cmd.env("AWS_ENDPOINT_URL_ECR", url)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_with_env_config_and_stops_on_sigterm() {
    install_crypto();
    let ecr = FakeEcr::start(Duration::from_secs(12 * 3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    with_fake_ecr(serve_locally(&mut cmd), &ecr.url)
        .env("ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR", dir.path())
        .env("ECR_TOKEN_WEBHOOK_ALLOWED_NAMESPACES", "argocd,apps");
    let mut proc = Proc::spawn(&mut cmd);
    let starting = proc.wait_for("starting");
    assert!(
        starting["policy"]
            .as_str()
            .unwrap()
            .contains("namespaces=argocd,apps"),
        "{starting}"
    );
    let serving = proc.wait_for("serving");
    let addr = addr_of(serving["addr"].as_str().expect("addr"));
    let metrics_addr = addr_of(serving["metrics_addr"].as_str().expect("metrics_addr"));

    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("self-signed CA written");
    let client = https_client(&ca);
    let base = format!("https://127.0.0.1:{}", addr.port());
    let review = fixture("argocd-repository-create-apply.json");
    let (status, resp, text) = post_review(&client, &base, &review.to_string(), "5s").await;
    assert_eq!(status.as_u16(), 200, "{text}");
    let after = apply(&review, &resp);
    assert_eq!(
        data(&after, "password"),
        FakeEcr::password(0),
        "token from AWS_ENDPOINT_URL_ECR"
    );
    assert_eq!(ecr.regions(), ["us-east-1"]);

    let ready = reqwest::get(format!("http://{metrics_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    let status = proc.terminate();
    assert!(status.success(), "{status}");
    let logs = proc.logs.seen.join("\n");
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
    assert!(
        logs.contains("refresher off") && logs.contains("no Kubernetes configuration"),
        "{logs}"
    );
    assert!(
        !logs.contains("fake-token-"),
        "a token reached the logs:\n{logs}"
    );
}

/// No AWS credentials at all: the SDK's own warnings (multi-line debug dumps) stay out of the
/// log, the webhook says why in one JSON line with plain fields, and the answer's warning names
/// the step that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_without_credentials_logs_one_plain_line() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    serve_locally(&mut cmd)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env("ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR", dir.path())
        .env("ECR_TOKEN_WEBHOOK_REFRESHER", "false")
        .env("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:9");
    let mut proc = Proc::spawn(&mut cmd);
    let serving = proc.wait_for("serving");
    let addr = addr_of(serving["addr"].as_str().expect("addr"));
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("CA");
    let client = https_client(&ca);
    let base = format!("https://127.0.0.1:{}", addr.port());
    let review = fixture("argocd-repository-create-apply.json").to_string();
    let (status, resp, text) = post_review(&client, &base, &review, "10s").await;
    assert_eq!(status.as_u16(), 200, "{text}");
    let warning = warnings(&resp).join("\n");
    assert!(
        warning.contains("no ECR token: AWS credentials (default chain:"),
        "{warning}"
    );
    let answered = proc.wait_for("answered");
    assert_eq!(answered["namespace"], "argocd", "{answered}");
    assert_eq!(answered["secret"], "ecr-helm-charts", "{answered}");
    assert!(answered["warnings"].is_array(), "{answered}");
    proc.terminate();
    for line in &proc.logs.seen {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(!line.contains("Some("), "{line}");
        let target = v["target"].as_str().unwrap_or_default();
        assert!(
            !target.starts_with("aws_"),
            "an SDK log line reached the default log: {line}"
        );
    }
}

/// `--shutdown-delay`: at SIGTERM /readyz fails at once, /mutate keeps answering until the
/// delay ends, then the process drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keeps_answering_while_unready_during_the_shutdown_delay() {
    install_crypto();
    let ecr = FakeEcr::start(Duration::from_secs(12 * 3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    with_fake_ecr(serve_locally(&mut cmd), &ecr.url)
        .env("ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR", dir.path())
        .env("ECR_TOKEN_WEBHOOK_REFRESHER", "false")
        .env("ECR_TOKEN_WEBHOOK_SHUTDOWN_DELAY", "4s");
    let mut proc = Proc::spawn(&mut cmd);
    let serving = proc.wait_for("serving");
    let addr = addr_of(serving["addr"].as_str().expect("addr"));
    let metrics_addr = addr_of(serving["metrics_addr"].as_str().expect("metrics_addr"));
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).expect("self-signed CA written");
    let client = https_client(&ca);
    let base = format!("https://127.0.0.1:{}", addr.port());
    let review = fixture("argocd-repository-update-touch.json").to_string();

    proc.sigterm();
    let readyz = format!("http://{metrics_addr}/readyz");
    until(
        "/readyz fails after SIGTERM",
        Duration::from_secs(3),
        async || matches!(reqwest::get(&readyz).await, Ok(r) if r.status().as_u16() == 503),
    )
    .await;
    // Still unready, still answering: the API server may call until endpoints drop the pod.
    let (status, resp, text) = post_review(&client, &base, &review, "5s").await;
    assert_eq!(status.as_u16(), 200, "{text}");
    assert_eq!(resp["response"]["allowed"], true, "{text}");
    let status = proc.wait_exit();
    assert!(status.success(), "{status}");
    let logs = proc.logs.seen.join("\n");
    let unready = logs
        .find("still answering until the delay ends")
        .expect("delay logged");
    let draining = logs
        .find("finishing in-flight requests")
        .expect("drain logged");
    assert!(unready < draining, "{logs}");
    assert!(logs.contains("\"delay\":\"4s\""), "{logs}");
}

#[test]
fn binary_refuses_bad_configuration_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.crt");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["serve".into()], 2, "--tls-cert-file"),
        (
            vec![
                "serve".into(),
                "--tls-self-signed".into(),
                "--refresh-margin".into(),
                "soon".into(),
            ],
            2,
            "invalid duration",
        ),
        (
            vec![
                "serve".into(),
                "--tls-cert-file".into(),
                missing.display().to_string(),
                "--tls-key-file".into(),
                missing.display().to_string(),
            ],
            1,
            "cannot read",
        ),
        (
            vec![
                "serve".into(),
                "--tls-self-signed".into(),
                "--allowed-registries".into(),
                "a:b:c".into(),
            ],
            1,
            "invalid registry pattern",
        ),
        (
            vec!["serve".into(), "--tls-self-managed".into()],
            1,
            "--tls-self-managed: no Kubernetes configuration",
        ),
        (
            vec![
                "serve".into(),
                "--tls-self-managed".into(),
                "--tls-self-signed".into(),
            ],
            2,
            "cannot be used with",
        ),
        (
            vec![
                "serve".into(),
                "--tls-self-signed".into(),
                "--tls-client-ca-file".into(),
                missing.display().to_string(),
            ],
            1,
            "cannot read the client CA file",
        ),
        (
            vec![
                "serve".into(),
                "--tls-self-signed".into(),
                "--tls-client-names".into(),
                "kube-apiserver".into(),
            ],
            2,
            "--tls-client-ca-file",
        ),
    ];
    for (args, code, want) in cases {
        let mut cmd = Command::new(BIN);
        let out = clean_aws_env(&mut cmd)
            .args(&args)
            .env("ECR_TOKEN_WEBHOOK_LISTEN", "127.0.0.1:0")
            .env("ECR_TOKEN_WEBHOOK_METRICS_LISTEN", "127.0.0.1:0")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn certs_command_writes_a_ca_and_prints_the_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["certs", "--out-dir"])
        .arg(dir.path())
        .args(["--service", "hook", "--namespace", "tools"])
        .output()
        .expect("run certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    use base64::Engine;
    let bundle = String::from_utf8(out.stdout).unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .expect("caBundle is base64");
    assert_eq!(pem, std::fs::read(dir.path().join("ca.crt")).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hook.tools.svc"));
    install_crypto();
    ecr_token_webhook::tls::load_files(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .expect("the written pair loads");
}

/// `serve --tls-self-managed` against the test suite's API server: the binary stores a CA and
/// serving certificate in a Secret, injects the CA into its webhook configuration, and serves
/// TLS that a client trusting only that caBundle accepts under the Service's DNS name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_self_managed_tls_stores_its_pair_and_injects_the_ca() {
    use base64::Engine;
    use common::fake_kube::FakeKube;
    use serde_json::json;
    install_crypto();
    let kube = FakeKube::start(None, reqwest::Client::new()).await;
    kube.seed_webhook_config(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "ecr-token-webhook"},
        "webhooks": [{"name": "inject.ecr-token-webhook.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"service": {"name": "ecr-token-webhook", "namespace": "tools", "path": "/mutate"}}}]
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: tools}}}}]\n",
            kube.url
        ),
    )
    .expect("kubeconfig");
    let command = || {
        let mut cmd = Command::new(BIN);
        clean_aws_env(&mut cmd)
            .arg("serve")
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("POD_NAMESPACE")
            .env("ECR_TOKEN_WEBHOOK_TLS_SELF_MANAGED", "true")
            .env("ECR_TOKEN_WEBHOOK_REFRESHER", "false")
            .env("ECR_TOKEN_WEBHOOK_LISTEN", "127.0.0.1:0")
            .env("ECR_TOKEN_WEBHOOK_METRICS_LISTEN", "127.0.0.1:0");
        cmd
    };
    // Without the Secret the install ships, there is nothing to serve: exit with what to do.
    let out = command().output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing valid to serve")
            && stderr.contains("tools/ecr-token-webhook-self-managed-tls not found"),
        "{stderr}"
    );
    // As the install ships it: Opaque, no data.
    kube.seed(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "ecr-token-webhook-self-managed-tls", "namespace": "tools"}}),
    );
    let mut proc = Proc::spawn(&mut command());
    let serving = proc.wait_for("serving");
    let addr = addr_of(serving["addr"].as_str().expect("addr"));

    // The namespace came from the kubeconfig context.
    let secret = kube
        .secret("tools", "ecr-token-webhook-self-managed-tls")
        .expect("the pair is stored in the webhook's namespace");
    assert_eq!(secret["type"], "Opaque", "the shipped Secret, filled in");
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = String::from_utf8(
        b64.decode(secret["data"]["ca.crt"].as_str().expect("ca.crt"))
            .expect("base64"),
    )
    .expect("PEM");
    let config = kube.webhook_config("ecr-token-webhook").expect("config");
    assert_eq!(
        config["webhooks"][0]["clientConfig"]["caBundle"],
        json!(b64.encode(&ca)),
        "caBundle injected"
    );

    let host = "ecr-token-webhook.tools.svc";
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA")])
        .resolve(host, addr)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = format!("https://{host}:{}", addr.port());
    let review = fixture("basic-auth-create.json").to_string();
    let (status, resp, text) = post_review(&client, &base, &review, "5s").await;
    assert_eq!(status.as_u16(), 200, "{text}");
    assert_eq!(resp["response"]["allowed"], true, "{text}");

    proc.terminate();
    let logs = proc.logs.seen.join("\n");
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a key reached the logs:\n{logs}"
    );
}

/// OpenShift's restricted-v2 SCC runs the image as an arbitrary UID of the namespace's range,
/// with group 0 and no passwd entry (`HOME=/`; docs/openshift.md). The binary, copied the way the
/// image holds it (root-owned, 0755), serves as such a UID, and writes its `--tls-self-signed`
/// files under a `$TMPDIR` that only root and group 0 may write. Changing user needs root: run
/// as another user, this test fails and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_as_an_arbitrary_uid_with_group_0() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;

    let me = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    assert_eq!(
        me, 0,
        "this test runs the binary as another UID, which needs root: run it as root \
         (sudo -E cargo nextest run --test it binary::)"
    );
    install_crypto();
    let ecr = FakeEcr::start(Duration::from_secs(12 * 3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let set_mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    set_mode(dir.path(), 0o755);
    let bin = dir.path().join("ecr-token-webhook");
    std::fs::copy(BIN, &bin).expect("copy the binary");
    set_mode(&bin, 0o755);
    // $TMPDIR: owned by root and group 0 (the test runs as root:root), writable by the group only.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir tmp");
    set_mode(&tmp, 0o770);
    assert_eq!(std::fs::metadata(&tmp).expect("tmp").gid(), 0);
    // A UID of an OpenShift namespace's range (1000680000/10000), different each run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let uid = 1_000_680_000 + nanos % 10_000;

    let mut cmd = Command::new(&bin);
    with_fake_ecr(serve_locally(&mut cmd), &ecr.url)
        .uid(uid)
        .gid(0)
        .current_dir("/")
        .env("HOME", "/")
        .env("TMPDIR", &tmp)
        .env_remove("ECR_TOKEN_WEBHOOK_TLS_SELF_SIGNED_DIR")
        .env("ECR_TOKEN_WEBHOOK_REFRESHER", "false");
    let mut proc = Proc::spawn(&mut cmd);
    let serving = proc.wait_for("serving");
    let addr = addr_of(serving["addr"].as_str().expect("addr"));

    // The process is who OpenShift would make it: that UID, group 0, no other group.
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.child.id()))
        .expect("the process's status");
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(field("Uid:"), vec![uid.to_string(); 4], "{status}");
    assert_eq!(field("Gid:"), vec!["0".to_string(); 4], "{status}");
    assert!(field("Groups:").is_empty(), "{status}");

    // Its files, in $TMPDIR/ecr-token-webhook, are its own; the keys private.
    let written = tmp.join("ecr-token-webhook");
    for (name, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("tls.crt", 0o644),
        ("tls.key", 0o600),
    ] {
        let meta = std::fs::metadata(written.join(name)).expect(name);
        assert_eq!((meta.uid(), meta.gid()), (uid, 0), "{name}");
        assert_eq!(meta.mode() & 0o777, mode, "{name}");
    }

    let ca = std::fs::read_to_string(written.join("ca.crt")).expect("CA");
    let client = https_client(&ca);
    let base = format!("https://127.0.0.1:{}", addr.port());
    let review = fixture("argocd-repository-create-apply.json");
    let (code, resp, text) = post_review(&client, &base, &review.to_string(), "5s").await;
    assert_eq!(code.as_u16(), 200, "{text}");
    assert_eq!(
        data(&apply(&review, &resp), "password"),
        FakeEcr::password(0),
        "{text}"
    );
    let status = proc.terminate();
    assert!(status.success(), "{status}");
}
