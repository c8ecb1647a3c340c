//! The ways production pods get AWS credentials, through the real binary and aws-config's
//! default chain, against the test suite's own STS, Pod Identity and ECR endpoints on
//! 127.0.0.1 (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_ECR_PUBLIC`):
//!
//! - web identity (IRSA): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`;
//! - EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`;
//! - AssumeRole on top of each, for a role a secret names and for a rule's default role.
//!
//! Each ECR call must be signed with the key its path issued, credentials are renewed when they
//! expire, and STS is asked once per role (and the pod's own identity once) per credential
//! lifetime, whatever the number of regions. The environment is the child's own, so these tests
//! never touch this process's.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::process::WebhookProcess;
use common::*;

const ACCOUNT: &str = "123456789012";
const WEBHOOK_ROLE: &str = "arn:aws:iam::123456789012:role/ecr-token-webhook";
const TEAM_A: &str = "arn:aws:iam::123456789012:role/team-a-ecr-pull";
const TEAM_B: &str = "arn:aws:iam::123456789012:role/team-b-ecr-pull";
const DEFAULT_ROLE: &str = "arn:aws:iam::123456789012:role/argocd-ecr-pull";

/// Three places each secret needs a token for: two regions and ECR Public.
fn registries() -> String {
    format!(
        "{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com {ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com public.ecr.aws"
    )
}

/// Roles a secret may name in `apps`; `argocd` gets a default role.
const POLICY: &str = r#"
rules:
  - name: apps
    namespaces: [apps]
    registries: ["123456789012", public]
    roleArns: ["arn:aws:iam::123456789012:role/team-*"]
  - name: argocd
    namespaces: [argocd]
    registries: ["*"]
    defaultRole: arn:aws:iam::123456789012:role/argocd-ecr-pull
"#;

/// How the pod gets its own credentials.
enum Identity {
    WebIdentity,
    PodIdentity,
}

struct Setup {
    ecr: FakeEcr,
    _dir: tempfile::TempDir,
    hook: WebhookProcess,
}

/// The binary with `identity`, the policy above, and the suite's endpoints. `token_lifetime`
/// under the 6h refresh margin means tokens are not cached, so every request calls ECR and
/// shows which key it signed with.
async fn setup(identity: Identity, token_lifetime: Duration) -> Setup {
    install_crypto();
    let ecr = FakeEcr::start(token_lifetime).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let token_file = dir.path().join("identity-token");
    std::fs::write(&token_file, "the-pods-projected-token").unwrap();
    ecr.require_identity_token("the-pods-projected-token");
    let pod_uri = format!("{}{POD_IDENTITY_PATH}", ecr.url);
    let token_path = token_file.to_str().unwrap().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_STS", &ecr.url),
        ("AWS_ENDPOINT_URL_ECR", &ecr.url),
        ("AWS_ENDPOINT_URL_ECR_PUBLIC", &ecr.url),
        ("ECR_TOKEN_WEBHOOK_POLICY_FILE", policy.to_str().unwrap()),
    ];
    match identity {
        Identity::WebIdentity => env.extend([
            ("AWS_ROLE_ARN", WEBHOOK_ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
            ("AWS_ROLE_SESSION_NAME", "ecr-token-webhook-test"),
        ]),
        Identity::PodIdentity => env.extend([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", pod_uri.as_str()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_path.as_str(),
            ),
        ]),
    }
    let hook = WebhookProcess::start(dir.path(), &env, &[]);
    Setup {
        ecr,
        _dir: dir,
        hook,
    }
}

impl Setup {
    /// One pull secret for the three places; the answer must carry three tokens.
    async fn write(&self, uid: &str, namespace: &str, role: Option<&str>) {
        let review = pull_secret_review(uid, namespace, &registries(), role);
        let (status, resp, text) = self.hook.post(&review.to_string()).await;
        assert_eq!(status.as_u16(), 200, "{text}");
        assert!(warnings(&resp).is_empty(), "{uid}: {:?}", warnings(&resp));
        assert_eq!(docker_passwords(&review, &resp).len(), 3, "{uid}");
    }

    /// The keys that signed the ECR calls made since `from`, one per call.
    fn signers(&self, from: usize) -> Vec<String> {
        self.ecr.access_keys()[from..].to_vec()
    }

    /// The key the n-th credential call of `action` (for `role`) issued.
    fn issued(&self, action: &str, role: &str) -> Vec<String> {
        self.ecr
            .credential_log()
            .into_iter()
            .filter(|c| c.action == action && c.role == role)
            .map(|c| c.issued)
            .collect()
    }

    fn assume_role_calls(&self) -> BTreeMap<String, usize> {
        self.ecr.credential_calls("AssumeRole")
    }
}

/// The pod's own identity (`base_action`, issued for `base_role`) signs the secrets that name no
/// role and signs AssumeRole; each role's key signs its secrets' calls; every one is fetched
/// once for three regions and written twice.
async fn each_path_signs_with_its_own_key(identity: Identity, base_action: &str, base_role: &str) {
    let s = setup(identity, Duration::from_secs(12 * 3600)).await;

    // No role: the pod's own credentials, for two regions and ECR Public.
    s.write("own-1", "apps", None).await;
    let base = s.issued(base_action, base_role);
    assert_eq!(base.len(), 1, "{base_action} once for three places");
    assert_eq!(s.signers(0), vec![base[0].clone(); 3]);

    // A role the secret names, assumed with the pod's own credentials.
    s.write("team-a-1", "apps", Some(TEAM_A)).await;
    let team_a = s.issued("AssumeRole", TEAM_A);
    assert_eq!(team_a.len(), 1, "one AssumeRole for three places");
    assert_eq!(s.signers(3), vec![team_a[0].clone(); 3]);
    let log = s.ecr.credential_log();
    let assumed = log.iter().find(|c| c.role == TEAM_A).unwrap();
    assert_eq!(
        assumed.signed_with.as_deref(),
        Some(base[0].as_str()),
        "AssumeRole is signed with the pod's own key"
    );

    // A second role, and the rule's default role for a secret that names none.
    s.write("team-b-1", "apps", Some(TEAM_B)).await;
    s.write("argocd-1", "argocd", None).await;
    let default = s.issued("AssumeRole", DEFAULT_ROLE);
    assert_eq!(default.len(), 1);
    assert_eq!(s.signers(9), vec![default[0].clone(); 3]);

    // Written again: tokens come from the cache; no call to ECR, STS or the agent.
    let (ecr_calls, credential_calls) = (s.ecr.calls(), s.ecr.credential_log().len());
    for (uid, ns, role) in [
        ("own-2", "apps", None),
        ("team-a-2", "apps", Some(TEAM_A)),
        ("team-b-2", "apps", Some(TEAM_B)),
        ("argocd-2", "argocd", None),
    ] {
        s.write(uid, ns, role).await;
    }
    assert_eq!(s.ecr.calls(), ecr_calls);
    assert_eq!(s.ecr.credential_log().len(), credential_calls);

    let per_role = s.assume_role_calls();
    eprintln!(
        "{base_action}: 8 secrets x 3 places (2 regions + ECR Public), 4 identities: {} ECR calls, \
         {} {base_action}, AssumeRole per role {per_role:?}",
        s.ecr.calls(),
        s.issued(base_action, base_role).len()
    );
    assert_eq!(s.ecr.calls(), 12, "one call per place and identity");
    assert_eq!(
        per_role,
        BTreeMap::from([
            (DEFAULT_ROLE.to_string(), 1),
            (TEAM_A.to_string(), 1),
            (TEAM_B.to_string(), 1)
        ])
    );
    assert_eq!(s.issued(base_action, base_role).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_and_assume_role_sign_with_the_keys_they_issued() {
    each_path_signs_with_its_own_key(
        Identity::WebIdentity,
        "AssumeRoleWithWebIdentity",
        WEBHOOK_ROLE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_and_assume_role_sign_with_the_keys_they_issued() {
    each_path_signs_with_its_own_key(Identity::PodIdentity, "PodIdentity", "").await;
}

/// Credentials that expire are fetched again: STS hands out credentials that are due for
/// renewal at once (5 s left, under the SDK's renewal buffer of at least 10 s), and tokens are
/// not cached, so each write must sign with freshly issued keys.
async fn expiring_credentials_are_renewed(identity: Identity, base_action: &str, base_role: &str) {
    let s = setup(identity, Duration::from_secs(3600)).await;
    s.ecr.set_credential_lifetime(Duration::from_secs(5));
    s.write("own-1", "apps", None).await;
    s.write("own-2", "apps", None).await;
    let base = s.issued(base_action, base_role);
    assert!(base.len() >= 2, "renewed: {base:?}");
    let signers = s.signers(0);
    assert_ne!(
        signers[0], signers[5],
        "the second write signs with a new key"
    );
    assert!(
        signers.iter().all(|k| base.contains(k)),
        "{signers:?} not among {base:?}"
    );

    let from = s.ecr.access_keys().len();
    s.write("team-a-1", "apps", Some(TEAM_A)).await;
    s.write("team-a-2", "apps", Some(TEAM_A)).await;
    let team_a = s.issued("AssumeRole", TEAM_A);
    assert!(team_a.len() >= 2, "renewed: {team_a:?}");
    let signers = s.signers(from);
    assert_ne!(signers[0], signers[5]);
    assert!(signers.iter().all(|k| team_a.contains(k)), "{signers:?}");

    // Long-lived again: the next credentials are kept.
    s.ecr.set_credential_lifetime(Duration::from_secs(3600));
    s.write("team-a-3", "apps", Some(TEAM_A)).await;
    let n = s.issued("AssumeRole", TEAM_A).len();
    s.write("team-a-4", "apps", Some(TEAM_A)).await;
    s.write("team-a-5", "apps", Some(TEAM_A)).await;
    assert_eq!(s.issued("AssumeRole", TEAM_A).len(), n, "kept while valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_web_identity_and_role_credentials_are_renewed() {
    expiring_credentials_are_renewed(
        Identity::WebIdentity,
        "AssumeRoleWithWebIdentity",
        WEBHOOK_ROLE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_pod_identity_and_role_credentials_are_renewed() {
    expiring_credentials_are_renewed(Identity::PodIdentity, "PodIdentity", "").await;
}

/// A token file that STS (or the agent) does not accept: the warning names the step and the
/// file's variable is no help here (it is readable), but STS's own code is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_identity_token_is_reported_as_the_credentials_step() {
    let s = setup(Identity::WebIdentity, Duration::from_secs(12 * 3600)).await;
    s.ecr.require_identity_token("another-token");
    let review = pull_secret_review("own", "apps", &registries(), None);
    let (_, resp, _) = s.hook.post(&review.to_string()).await;
    let w = warnings(&resp);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("ecr-token-webhook: no ECR token: AWS credentials (default chain")
            && w[0].contains("InvalidIdentityToken"),
        "{w:?}"
    );
}
