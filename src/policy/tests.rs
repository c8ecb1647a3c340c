use crate::registry;

use super::file::{PolicyError, is_role_arn};
use super::*;

#[test]
fn glob_patterns() {
    let cases = [
        ("*", "", true),
        ("*", "anything", true),
        ("apps", "apps", true),
        ("apps", "apps2", false),
        ("team-*", "team-a", true),
        ("team-*", "team-", true),
        ("team-*", "other", false),
        ("*-prod", "shop-prod", true),
        ("*-prod", "shop-prod-2", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("?pps", "apps", true),
        ("?pps", "pps", false),
        ("", "", true),
        ("", "x", false),
        ("**", "x", true),
    ];
    for (p, s, want) in cases {
        assert_eq!(Pattern::new(p).matches(s), want, "{p:?} vs {s:?}");
    }
}

fn reg(host: &str) -> Registry {
    registry::parse(host).unwrap()
}

const EU: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const US: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const OTHER: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

#[test]
fn registry_patterns() {
    let r = reg(EU);
    let public = reg("public.ecr.aws");
    let dual = reg("ecr-public.aws.com");
    // (pattern, matches EU, matches ECR Public)
    let cases = [
        ("*", true, true),
        ("123456789012", true, false),
        ("123456789012:eu-*", true, false),
        ("123456789012:us-*", false, false),
        ("*:eu-west-1", true, false),
        ("*:us-east-1", false, true),
        ("210987654321", false, false),
        ("public", false, true),
        ("public:us-east-1", false, true),
        ("public:eu-*", false, false),
    ];
    for (p, eu, pb) in cases {
        let pattern = RegistryPattern::parse(p).unwrap();
        assert_eq!(pattern.matches(&r), eu, "{p} vs {EU}");
        assert_eq!(pattern.matches(&public), pb, "{p} vs public.ecr.aws");
        assert_eq!(pattern.matches(&dual), pb, "{p} vs ecr-public.aws.com");
    }
    for bad in ["", ":eu-west-1", "123456789012:", "1:2:3"] {
        assert!(RegistryPattern::parse(bad).is_err(), "{bad:?}");
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn label_selectors_match_as_kubernetes_does() {
    let sel: LabelSelector = serde_yaml_ng::from_str(
        "matchLabels: {team: a}\nmatchExpressions:\n  - {key: env, operator: In, values: [prod, staging]}\n  - {key: legacy, operator: DoesNotExist}\n",
    )
    .unwrap();
    assert_eq!(sel.to_string(), "team=a,env in (prod,staging),!legacy");
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("team", "a"), ("env", "prod")], true),
        (&[("team", "a"), ("env", "staging"), ("x", "y")], true),
        (&[("team", "a"), ("env", "dev")], false),
        (&[("team", "a")], false),
        (&[("team", "b"), ("env", "prod")], false),
        (&[("team", "a"), ("env", "prod"), ("legacy", "")], false),
    ];
    for (l, want) in cases {
        assert_eq!(sel.matches(&labels(l)), *want, "{l:?}");
    }
    let not_in: LabelSelector =
        serde_yaml_ng::from_str("matchExpressions: [{key: tier, operator: NotIn, values: [x]}, {key: team, operator: Exists}]").unwrap();
    assert!(not_in.matches(&labels(&[("team", "")])));
    assert!(!not_in.matches(&labels(&[("team", "a"), ("tier", "x")])));
    assert!(!not_in.matches(&labels(&[])));
    assert!(
        LabelSelector::default().matches(&labels(&[])),
        "empty selects all"
    );
}

const THREE_SHAPES: &str = r#"
rules:
  # Argo CD's namespace: any registry, any role.
  - name: argocd
    namespaces: [argocd]
    registries: ["*"]
    roleArns: ["*"]
  # A role per team: the team's namespaces, its account, its role by default.
  - name: team-a
    namespaces: ["team-a", "team-a-*"]
    namespaceSelector:
      matchLabels: {tenant: team-a}
    registries: ["111111111111:eu-*", public]
    defaultRole: arn:aws:iam::111111111111:role/team-a-ecr-pull
  - namespaces: ["team-b*"]
    registries: ["222222222222"]
    roleArns: ["arn:aws:iam::222222222222:role/team-b-*"]
  # One account for all: everything else, the webhook's own identity.
  - name: everyone
    namespaces: ["*"]
    registries: ["123456789012"]
"#;

fn shapes() -> Policy {
    Policy::from_yaml(THREE_SHAPES, "/etc/ecr-token-webhook/policy.yaml").unwrap()
}

#[test]
fn the_first_matching_rule_decides() {
    let p = shapes();
    let a_labels = labels(&[("tenant", "team-a")]);
    let none = labels(&[]);
    let team_a_role = "arn:aws:iam::111111111111:role/team-a-ecr-pull";
    type Case<'a> = (
        &'a str,
        Labels<'a>,
        Vec<Registry>,
        Option<&'a str>,
        Decision,
    );
    let file = |index, name: Option<&str>| RuleRef::File {
        index,
        name: name.map(String::from),
    };
    let allowed = |rule, role: Option<&str>| Decision::Allowed {
        rule,
        role: role.map(String::from),
    };
    let cases: Vec<Case> = vec![
        (
            "argocd",
            Labels::Known(&none),
            vec![reg(EU), reg(OTHER), reg("public.ecr.aws")],
            Some("arn:aws:iam::999999999999:role/anything"),
            allowed(
                file(0, Some("argocd")),
                Some("arn:aws:iam::999999999999:role/anything"),
            ),
        ),
        (
            "team-a-dev",
            Labels::Known(&a_labels),
            vec![
                reg("111111111111.dkr.ecr.eu-central-1.amazonaws.com"),
                reg("public.ecr.aws"),
            ],
            None,
            allowed(file(1, Some("team-a")), Some(team_a_role)),
        ),
        (
            // Naming the default role is the same as naming none.
            "team-a",
            Labels::Known(&a_labels),
            vec![reg("111111111111.dkr.ecr.eu-west-1.amazonaws.com")],
            Some(team_a_role),
            allowed(file(1, Some("team-a")), Some(team_a_role)),
        ),
        (
            // Without the label, team-a's rule does not match; the catch-all does.
            "team-a-dev",
            Labels::Known(&none),
            vec![reg(US)],
            None,
            allowed(file(3, Some("everyone")), None),
        ),
        (
            "team-b-prod",
            Labels::Unknown("not needed"),
            vec![reg("222222222222.dkr.ecr.us-west-2.amazonaws.com")],
            Some("arn:aws:iam::222222222222:role/team-b-reader"),
            allowed(
                file(2, None),
                Some("arn:aws:iam::222222222222:role/team-b-reader"),
            ),
        ),
        (
            "shop",
            Labels::Known(&none),
            vec![reg(US), reg(EU)],
            None,
            allowed(file(3, Some("everyone")), None),
        ),
    ];
    for (ns, l, regs, role, want) in cases {
        assert_eq!(p.decide(ns, l, &regs, role), want, "{ns} {role:?}");
    }
}

#[test]
fn every_refusal_names_its_rule() {
    let p = shapes();
    let a_labels = labels(&[("tenant", "team-a")]);
    /// (namespace, labels, registries, role, text, rule label, reason label)
    type Case<'a> = (
        &'a str,
        Labels<'a>,
        Vec<Registry>,
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "team-a-dev",
            Labels::Known(&a_labels),
            vec![reg(OTHER)],
            None,
            "refused by policy rule team-a (rules[1]): registry \
             210987654321.dkr.ecr.eu-west-1.amazonaws.com is not in its registries \
             (111111111111:eu-*,public:*)",
            "team-a",
            "registry",
        ),
        (
            "team-a-dev",
            Labels::Known(&a_labels),
            vec![reg("111111111111.dkr.ecr.eu-west-1.amazonaws.com")],
            Some("arn:aws:iam::111111111111:role/admin"),
            "refused by policy rule team-a (rules[1]): role arn:aws:iam::111111111111:role/admin \
             is neither its defaultRole nor in its roleArns (none)",
            "team-a",
            "role",
        ),
        (
            "team-a-dev",
            Labels::Unknown("namespaces \"team-a-dev\" is forbidden"),
            vec![],
            None,
            "refused by policy rule team-a (rules[1]): it selects namespaces by label \
             (tenant=team-a), and the labels of namespace team-a-dev cannot be read: namespaces \
             \"team-a-dev\" is forbidden",
            "team-a",
            "labels",
        ),
        (
            "team-b",
            Labels::Known(&a_labels),
            vec![reg(EU)],
            None,
            "refused by policy rules[2]: registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com \
             is not in its registries (222222222222:*)",
            "rules[2]",
            "registry",
        ),
        (
            "shop",
            Labels::Known(&a_labels),
            vec![reg("public.ecr.aws")],
            None,
            "refused by policy rule everyone (rules[3]): registry public.ecr.aws is not in its \
             registries (123456789012:*)",
            "everyone",
            "registry",
        ),
    ];
    for (ns, l, regs, role, text, rule, reason) in cases {
        let Decision::Refused(r) = p.decide(ns, l, &regs, role) else {
            panic!("{ns}: allowed")
        };
        assert_eq!(r.to_string(), text);
        assert_eq!(r.rule_label(), rule);
        assert_eq!(r.reason.metric_label().label(), reason);
    }

    // No rule: no token.
    let narrow = Policy::from_yaml(
        "rules: [{name: argocd, namespaces: [argocd], registries: ['*']}]",
        "p.yaml",
    )
    .unwrap();
    let Decision::Refused(r) = narrow.decide("dev", Labels::Unknown("-"), &[], None) else {
        panic!("allowed")
    };
    assert_eq!(
        r.to_string(),
        "refused by policy: namespace dev matches no rule"
    );
    assert_eq!(
        (r.rule_label().as_str(), r.reason.metric_label().label()),
        ("none", "namespace")
    );
}

#[test]
fn the_flags_are_the_one_rule_case_with_their_own_words() {
    let p = Policy::from_flags(
        vec![Pattern::new("argocd"), Pattern::new("team-*")],
        vec![RegistryPattern::parse("123456789012:us-*").unwrap()],
        vec![],
    );
    let none = labels(&[]);
    let l = Labels::Known(&none);
    assert_eq!(
        p.decide("team-a", l, &[reg(US)], None),
        Decision::Allowed {
            rule: RuleRef::Flags,
            role: None
        }
    );
    type Case<'a> = (&'a str, Vec<Registry>, Option<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "kube-system",
            vec![],
            None,
            "refused by policy: namespace kube-system is not in --allowed-namespaces (argocd,team-*)",
            "namespace",
        ),
        (
            "argocd",
            vec![reg(EU)],
            None,
            "refused by policy: registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com is not in \
             --allowed-registries (123456789012:us-*)",
            "registry",
        ),
        (
            "argocd",
            vec![reg(US)],
            Some("arn:aws:iam::123456789012:role/x"),
            "refused by policy: role arn:aws:iam::123456789012:role/x is not in \
             --allowed-role-arns (none)",
            "role",
        ),
    ];
    for (ns, regs, role, text, reason) in cases {
        let Decision::Refused(r) = p.decide(ns, l, &regs, role) else {
            panic!("{ns}: allowed")
        };
        assert_eq!(r.to_string(), text);
        assert_eq!(
            (r.rule_label().as_str(), r.reason.metric_label().label()),
            ("flags", reason)
        );
    }
    let d = Policy::default();
    assert!(matches!(
        d.decide("anything", l, &[reg(EU), reg("public.ecr.aws")], None),
        Decision::Allowed { .. }
    ));
    assert!(!d.needs_labels("anything"));
    assert_eq!(
        d.describe(),
        "namespaces=* registries=*:* role_arns=none".to_string()
    );
}

#[test]
fn labels_are_needed_only_where_a_selector_could_apply() {
    let p = shapes();
    assert!(p.needs_labels("team-a-dev"));
    assert!(!p.needs_labels("argocd"));
    assert!(!p.needs_labels("shop"));
    assert!(p.may_match_namespace("shop"));
    let narrow = Policy::from_yaml(
        "rules: [{namespaces: [argocd], registries: ['*']}]",
        "p.yaml",
    )
    .unwrap();
    assert!(!narrow.may_match_namespace("shop"));
    assert_eq!(
        p.describe(),
        "file=/etc/ecr-token-webhook/policy.yaml rules=argocd,team-a,rules[2],everyone"
    );
}

#[test]
fn bad_files_are_refused_with_the_place_and_the_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "missing field `rules`"),
        ("rules: []", "rules is empty"),
        ("rules: {}", "invalid type"),
        (
            "rules:\n  - namespaces: [a]\n",
            "missing field `registries`",
        ),
        (
            "rules:\n  - namespace: [a]\n    registries: ['*']\n",
            "unknown field `namespace`",
        ),
        (
            "rules:\n  - namespaces: []\n    registries: ['*']\n",
            "rules[0]: namespaces: at least one pattern",
        ),
        (
            "rules:\n  - {name: x, namespaces: [a], registries: []}\n",
            "rules[0] (x): registries: at least one pattern",
        ),
        (
            "rules:\n  - {namespaces: [a], registries: ['1:2:3']}\n",
            "rules[0]: registries: invalid registry pattern \"1:2:3\"",
        ),
        (
            "rules:\n  - {namespaces: [a], registries: ['*'], defaultRole: team-a}\n",
            "rules[0]: defaultRole: \"team-a\" is not a role ARN",
        ),
        (
            "rules:\n  - {namespaces: [a], registries: ['*'], roleArns: ['']}\n",
            "rules[0]: roleArns: an entry is empty",
        ),
        (
            "rules:\n  - {name: a, namespaces: [a], registries: ['*']}\n  - {name: a, namespaces: [b], registries: ['*']}\n",
            "rules[1] (a): name: \"a\" is used by an earlier rule",
        ),
        (
            "rules:\n  - {name: 'team a', namespaces: [a], registries: ['*']}\n",
            "name: at most 63 letters",
        ),
        (
            "rules:\n  - {name: none, namespaces: [a], registries: ['*']}\n",
            "name: \"none\" is reserved",
        ),
        (
            "rules:\n  - namespaces: [a]\n    registries: ['*']\n    namespaceSelector: {matchExpressions: [{key: t, operator: In}]}\n",
            "rules[0]: namespaceSelector: matchExpressions[0]: In needs values",
        ),
        (
            "rules:\n  - namespaces: [a]\n    registries: ['*']\n    namespaceSelector: {matchExpressions: [{key: t, operator: Exists, values: [x]}]}\n",
            "Exists takes no values",
        ),
        (
            "rules:\n  - namespaces: [a]\n    registries: ['*']\n    namespaceSelector: {matchExpressions: [{key: t, operator: Equals, values: [x]}]}\n",
            "unknown variant `Equals`",
        ),
        ("rules:\n  - namespaces: [a\n", "line 2"),
    ];
    for (text, want) in cases {
        let e = Policy::from_yaml(text, "p.yaml")
            .expect_err(text)
            .to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let big = "#".repeat(MAX_FILE_BYTES + 1);
    assert!(matches!(
        Policy::from_yaml(&big, "p.yaml"),
        Err(PolicyError::TooLarge)
    ));
    // JSON is YAML too.
    assert!(
        Policy::from_yaml(
            r#"{"rules": [{"namespaces": ["*"], "registries": ["*"]}]}"#,
            "p.json"
        )
        .is_ok()
    );
}

#[test]
fn role_arns_are_recognised() {
    for ok in [
        "arn:aws:iam::123456789012:role/x",
        "arn:aws-cn:iam::123456789012:role/path/x",
        "arn:aws-us-gov:iam::123456789012:role/x",
    ] {
        assert!(is_role_arn(ok), "{ok}");
    }
    for bad in [
        "x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:iam::12345678901:role/x",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:sts::123456789012:role/x",
    ] {
        assert!(!is_role_arn(bad), "{bad}");
    }
}

#[test]
fn a_shared_policy_is_replaced_whole() {
    let shared = SharedPolicy::from(Policy::default());
    let held = shared.current();
    shared.replace(shapes());
    assert_eq!(
        held.origin,
        Origin::Flags,
        "a request keeps the version it started with"
    );
    assert_eq!(shared.current().rules.len(), 4);
}

#[test]
fn status_checks_only_the_flags_it_knows() {
    let ns = [Pattern::new("argocd")];
    let out = check_flags(Some(&ns), None, None, "apps", &[reg(EU)], Some("r"));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].to_string(),
        "refused by policy: namespace apps is not in --allowed-namespaces (argocd)"
    );
    assert!(check_flags(None, None, None, "apps", &[reg(EU)], Some("r")).is_empty());
}

/// The example the kustomize component ships and the policy files of docs/policy.md are files the
/// binary accepts.
#[test]
fn the_shipped_example_and_the_documented_policies_parse() {
    let example = include_str!("../../deploy/components/policy-file/policy.yaml");
    let p = Policy::from_yaml(example, "policy.yaml").unwrap();
    assert_eq!(p.rules.len(), 2);
    let page = include_str!("../../docs/policy.md");
    let section = page
        .split("## Policy file")
        .nth(1)
        .and_then(|s| s.split("## Warnings").next())
        .expect("docs/policy.md has a Policy file section");
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 4, "the format and the three usual shapes");
    for b in blocks {
        Policy::from_yaml(b, "docs/policy.md").unwrap_or_else(|e| panic!("{e}:\n{b}"));
    }
}

#[test]
fn every_refusal_message_reads_as_a_refusal_and_nothing_else_does() {
    let refusal = |rule, reason| Refusal {
        rule,
        reason,
        allowed: "argocd".into(),
    };
    let labels = Reason::Labels {
        namespace: "apps".into(),
        error: "forbidden".into(),
    };
    for r in [
        refusal(Some(RuleRef::Flags), Reason::Role { role: "r".into() }),
        refusal(
            None,
            Reason::Namespace {
                namespace: "apps".into(),
            },
        ),
        refusal(None, labels),
    ] {
        assert!(is_refusal(&r.to_string()), "{r}");
    }
    for other in ["", "ECR in us-east-1: timed out", " refused by policy"] {
        assert!(!is_refusal(other), "{other:?}");
    }
}
