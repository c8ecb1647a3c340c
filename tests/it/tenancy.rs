//! Many teams on one cluster: a policy file with a rule per team (its namespaces, selected by a
//! namespace label too, its account and ECR Public, its role by default), through the webhook
//! over TLS, with namespace labels read from the suite's Kubernetes API server and tokens from
//! the suite's ECR and STS.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::fake_kube::FakeKube;
use common::*;
use ecr_token_webhook::policy::Policy;
use ecr_token_webhook::policy::namespaces::KubeNamespaceLabels;

const TEAMS: usize = 10;
const NAMESPACES_PER_TEAM: usize = 5;
const SECRETS: usize = 1000;

fn account(team: usize) -> String {
    format!("{:012}", 111_111_111_100 + team)
}

fn role(team: usize) -> String {
    format!(
        "arn:aws:iam::{}:role/team-{team:02}-ecr-pull",
        account(team)
    )
}

/// One rule per team: `team-NN-*` namespaces labelled `tenant: team-NN`, the team's account in
/// any region and ECR Public, the team's role for every secret.
fn policy() -> Policy {
    let mut yaml = String::from("rules:\n");
    for t in 0..TEAMS {
        yaml.push_str(&format!(
            "  - name: team-{t:02}\n    namespaces: [\"team-{t:02}-*\"]\n    namespaceSelector:\n      matchLabels: {{tenant: team-{t:02}}}\n    registries: [\"{}\", public]\n    defaultRole: {}\n",
            account(t),
            role(t)
        ));
    }
    Policy::from_yaml(&yaml, "tenancy.yaml").expect("policy")
}

fn registries(team: usize) -> String {
    let a = account(team);
    format!(
        "{a}.dkr.ecr.us-east-1.amazonaws.com,{a}.dkr.ecr.eu-west-1.amazonaws.com,public.ecr.aws"
    )
}

fn namespace(team: usize, n: usize) -> String {
    format!("team-{team:02}-app{n}")
}

struct Setup {
    h: Harness,
    kube: FakeKube,
}

async fn setup() -> Setup {
    install_crypto();
    let kube = FakeKube::start(None, reqwest::Client::new()).await;
    for t in 0..TEAMS {
        for n in 0..NAMESPACES_PER_TEAM {
            kube.set_namespace(&namespace(t, n), &[("tenant", &format!("team-{t:02}"))]);
        }
    }
    kube.set_namespace("team-03-unlabelled", &[]);
    let labels = KubeNamespaceLabels::new(Ok(kube.client()), Duration::from_secs(300));
    let h = Harness::start(Options {
        policy: policy(),
        namespace_labels: Some(Arc::new(labels)),
        ..Options::default()
    })
    .await;
    Setup { h, kube }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_secrets_over_ten_teams_cost_one_ecr_call_per_place_and_team() {
    let s = setup().await;
    let reviews: Vec<(usize, serde_json::Value)> = (0..SECRETS)
        .map(|i| {
            let team = i % TEAMS;
            let ns = namespace(team, i / TEAMS % NAMESPACES_PER_TEAM);
            (
                team,
                pull_secret_review(&format!("s{i:04}"), &ns, &registries(team), None),
            )
        })
        .collect();
    // Per team and registry, the passwords written: one each.
    let mut written: BTreeMap<(usize, String), BTreeSet<String>> = BTreeMap::new();
    for chunk in reviews.chunks(100) {
        let answers =
            futures::future::join_all(chunk.iter().map(|(_, r)| s.h.post_owned(r.to_string())))
                .await;
        for ((team, review), (status, resp, text)) in chunk.iter().zip(answers) {
            assert_eq!(status.as_u16(), 200, "{text}");
            assert!(warnings(&resp).is_empty(), "{:?}", warnings(&resp));
            for (host, password) in docker_passwords(review, &resp) {
                written.entry((*team, host)).or_default().insert(password);
            }
        }
    }

    let ecr_calls = s.h.ecr.calls();
    let assume_role = s.h.ecr.credential_calls("AssumeRole");
    let namespace_reads: usize = s.kube.namespace_gets().values().sum();
    eprintln!(
        "{SECRETS} secrets over {TEAMS} teams (2 regions + ECR Public each): {ecr_calls} ECR calls, \
         {} AssumeRole calls ({:?} per role), {namespace_reads} namespace reads for {} namespaces",
        assume_role.values().sum::<usize>(),
        assume_role.values().collect::<BTreeSet<_>>(),
        TEAMS * NAMESPACES_PER_TEAM
    );
    // One token per team and place (us-east-1, eu-west-1, ECR Public), shared by its secrets.
    assert_eq!(ecr_calls, TEAMS * 3);
    assert_eq!(written.len(), TEAMS * 3);
    assert!(
        written.values().all(|p| p.len() == 1),
        "one password per team and registry"
    );
    let all: BTreeSet<&String> = written.values().flatten().collect();
    assert_eq!(all.len(), TEAMS * 3, "no team got another team's token");
    // Each team's role assumed once, for all three places.
    let want: BTreeMap<String, usize> = (0..TEAMS).map(|t| (role(t), 1)).collect();
    assert_eq!(assume_role, want);
    // Every ECR call signed with the key its team's AssumeRole issued.
    let issued: BTreeSet<String> =
        s.h.ecr
            .credential_log()
            .into_iter()
            .map(|c| c.issued)
            .collect();
    let signers: BTreeMap<String, usize> =
        s.h.ecr
            .access_keys()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, k| {
                *m.entry(k).or_default() += 1;
                m
            });
    assert_eq!(signers.keys().cloned().collect::<BTreeSet<_>>(), issued);
    assert!(signers.values().all(|n| *n == 3), "{signers:?}");
    // Namespace labels: read once per namespace, then from the cache.
    assert_eq!(
        s.kube.namespace_gets(),
        (0..TEAMS)
            .flat_map(|t| (0..NAMESPACES_PER_TEAM).map(move |n| (namespace(t, n), 1)))
            .collect::<BTreeMap<_, _>>()
    );
    let m = s.h.metrics().await;
    assert!(
        m.contains("ecr_token_webhook_token_cache_lookups_total{result=\"hit\"}"),
        "{m}"
    );
}

/// What a team may not do: another team's registry or role, or a namespace without the
/// team's label. Each refusal names the rule, writes no token, and is counted by rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_gets_nothing_of_another_teams() {
    let s = setup().await;
    let cases = [
        (
            pull_secret_review("r1", &namespace(3, 0), &registries(4), None),
            format!(
                "refused by policy rule team-03 (rules[3]): registry {}.dkr.ecr.us-east-1.amazonaws.com \
                 is not in its registries ({}:*,public:*)",
                account(4),
                account(3)
            ),
        ),
        (
            pull_secret_review("r2", &namespace(3, 0), &registries(3), Some(&role(4))),
            format!(
                "refused by policy rule team-03 (rules[3]): role {} is neither its defaultRole nor \
                 in its roleArns (none)",
                role(4)
            ),
        ),
        (
            pull_secret_review("r3", "team-03-unlabelled", &registries(3), None),
            "refused by policy: namespace team-03-unlabelled matches no rule".to_string(),
        ),
        (
            pull_secret_review("r4", "team-03-missing", &registries(3), None),
            "refused by policy rule team-03 (rules[3]): it selects namespaces by label \
             (tenant=team-03), and the labels of namespace team-03-missing cannot be read: \
             namespaces \"team-03-missing\" not found"
                .to_string(),
        ),
    ];
    for (review, want) in cases {
        let (_, resp, _) = s.h.post(&review.to_string(), "5s").await;
        let after = apply(&review, &resp);
        assert!(after.get("data").is_none(), "no token: {after}");
        assert_eq!(annotations(&after)["ecr-token-webhook/error"], want);
        assert_eq!(warnings(&resp), [format!("ecr-token-webhook: {want}")]);
    }
    assert_eq!(s.h.ecr.calls(), 0);
    assert_eq!(s.h.ecr.sts_calls(), 0);
    let m = s.h.metrics().await;
    for want in [
        "ecr_token_webhook_policy_refusals_total{rule=\"team-03\",reason=\"registry\"} 1",
        "ecr_token_webhook_policy_refusals_total{rule=\"team-03\",reason=\"role\"} 1",
        "ecr_token_webhook_policy_refusals_total{rule=\"none\",reason=\"namespace\"} 1",
        "ecr_token_webhook_policy_refusals_total{rule=\"team-03\",reason=\"labels\"} 1",
        "outcome=\"policy\"} 4",
    ] {
        assert!(m.contains(want), "missing {want}:\n{m}");
    }
}
