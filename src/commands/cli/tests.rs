use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::admission::FailureMode;
use crate::policy::Policy;

#[test]
fn flags_parse_with_defaults() {
    let cli = Cli::try_parse_from(["ecr-token-webhook", "serve", "--tls-self-signed"]).unwrap();
    let Command::Serve(s) = cli.command else {
        panic!("serve")
    };
    assert_eq!(s.listen.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(s.listen.metrics_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(s.tokens.refresh_margin, Duration::from_secs(6 * 3600));
    assert_eq!(s.tokens.failure_mode, FailureMode::Open);
    assert_eq!(s.policy.policy().unwrap(), Policy::default());
    assert!(
        s.refresher.secret_namespaces().is_empty(),
        "all namespaces by default"
    );
    assert_eq!(cli.log.log_format, LogFormat::Json);
}

#[test]
fn flags_parse_lists_and_durations() {
    let cli = Cli::try_parse_from([
        "ecr-token-webhook",
        "serve",
        "--tls-cert-file",
        "c",
        "--tls-key-file",
        "k",
        "--refresh-margin",
        "1h30m",
        "--allowed-namespaces",
        "argocd,team-*",
        "--allowed-registries",
        "123456789012:us-*,210987654321",
        "--failure-mode",
        "closed",
        "--secret-namespaces",
        " argocd,,team-a,argocd ",
    ])
    .unwrap();
    let Command::Serve(s) = cli.command else {
        panic!("serve")
    };
    assert_eq!(s.tokens.refresh_margin, Duration::from_secs(5400));
    assert_eq!(
        s.policy.allowed_namespaces.as_deref(),
        Some(&["argocd".to_string(), "team-*".to_string()][..])
    );
    assert_eq!(s.policy.policy().unwrap().rules[0].registries.len(), 2);
    assert_eq!(s.tokens.failure_mode, FailureMode::Closed);
    assert_eq!(s.refresher.secret_namespaces(), ["argocd", "team-a"]);
}

#[test]
fn status_flags_read_like_kubectl() {
    let cli = Cli::try_parse_from(["x", "status"]).unwrap();
    assert_eq!(cli.log_level(), "off", "status prints its own errors");
    let Command::Status(s) = &cli.command else {
        panic!("status")
    };
    assert_eq!((s.name.as_deref(), s.namespace.as_deref()), (None, None));
    assert_eq!(s.output, OutputFormat::Text);
    assert_eq!(s.refresh_margin, Duration::from_secs(6 * 3600));
    assert_eq!(s.webhook_namespace, "ecr-token-webhook");
    let k = s.policy.known().unwrap();
    assert!(k.namespaces.is_none() && k.registries.is_none() && k.role_arns.is_none());

    let cli = Cli::try_parse_from([
        "x",
        "status",
        "-n",
        "apps",
        "pull",
        "-o",
        "json",
        "--allowed-namespaces",
        "argocd, team-*",
        "--allowed-registries",
        "123456789012:eu-*",
        "--log-level",
        "debug",
    ])
    .unwrap();
    assert_eq!(cli.log_level(), "debug");
    let Command::Status(s) = &cli.command else {
        panic!("status")
    };
    assert_eq!(
        (s.name.as_deref(), s.namespace.as_deref()),
        (Some("pull"), Some("apps"))
    );
    assert_eq!(s.output, OutputFormat::Json);
    let k = s.policy.known().unwrap();
    assert_eq!(k.namespaces.unwrap().len(), 2);
    assert_eq!(k.registries.unwrap().len(), 1);
    assert!(k.role_arns.is_none());
    assert!(Cli::try_parse_from(["x", "status", "-A"]).is_ok());

    for args in [
        vec!["x", "status", "-A", "-n", "apps"],
        vec!["x", "status", "-A", "pull"],
        vec!["x", "status", "-o", "yaml"],
        vec!["x", "status", "--refresh-margin", "soon"],
        vec!["x", "status", "a", "b"],
    ] {
        assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
    }
    let cli = Cli::try_parse_from(["x", "status", "--allowed-registries", "a:b:c"]).unwrap();
    let Command::Status(s) = &cli.command else {
        panic!("status")
    };
    assert!(s.policy.known().is_err());
    let cli = Cli::try_parse_from(["x", "serve", "--tls-self-signed"]).unwrap();
    assert_eq!(cli.log_level(), "info");
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        vec!["ecr-token-webhook", "serve"],
        vec!["ecr-token-webhook", "serve", "--tls-cert-file", "c"],
        vec![
            "ecr-token-webhook",
            "serve",
            "--tls-self-signed",
            "--refresh-margin",
            "soon",
        ],
        vec![
            "ecr-token-webhook",
            "serve",
            "--tls-self-signed",
            "--failure-mode",
            "maybe",
        ],
    ] {
        assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
    }
    let cli = Cli::try_parse_from([
        "x",
        "serve",
        "--tls-self-signed",
        "--allowed-registries",
        "a:b:c",
    ])
    .unwrap();
    let Command::Serve(s) = cli.command else {
        panic!("serve")
    };
    assert!(s.policy.policy().is_err());
}

#[test]
fn a_policy_file_replaces_the_flags() {
    let dir = std::env::temp_dir().join(format!("ecr-token-webhook-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        "rules: [{name: all, namespaces: ['*'], registries: ['*']}]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["x", "serve", "--tls-self-signed", "--policy-file", f];
        args.extend_from_slice(extra);
        let Command::Serve(s) = Cli::try_parse_from(args).unwrap().command else {
            panic!("serve")
        };
        s.policy.policy().map_err(|e| e.to_string())
    };
    let p = serve(&[]).unwrap();
    assert_eq!(p.rules[0].name.as_deref(), Some("all"));
    // The flags at their defaults say nothing and may stay (the manifests set them).
    assert!(serve(&["--allowed-namespaces", "*", "--allowed-registries", "*"]).is_ok());
    for flag in [
        ["--allowed-namespaces", "argocd"],
        ["--allowed-registries", "123456789012"],
        ["--allowed-role-arns", "arn:aws:iam::123456789012:role/x"],
    ] {
        let e = serve(&flag).unwrap_err();
        assert!(e.contains("replaces --allowed-namespaces"), "{flag:?}: {e}");
    }
    // status reads the same file, and refuses it beside a flag that says more than serve's
    // default.
    let status = |extra: &[&str]| {
        let mut args = vec!["x", "status", "--policy-file", f];
        args.extend_from_slice(extra);
        let Command::Status(s) = Cli::try_parse_from(args).unwrap().command else {
            panic!("status")
        };
        s.policy.known().map_err(|e| e.to_string())
    };
    let k = status(&["--allowed-namespaces", "*"]).unwrap();
    assert_eq!(k.policy.unwrap().rules.len(), 1);
    assert!(k.namespaces.is_none());
    let e = status(&["--allowed-role-arns", "arn:aws:iam::123456789012:role/x"]).unwrap_err();
    assert!(e.contains("replaces --allowed-namespaces"), "{e}");
    // A list given empty says nothing to status; to serve it says "none", which the file would
    // silently override.
    assert!(
        status(&["--allowed-namespaces", ""])
            .unwrap()
            .policy
            .is_some()
    );
    let e = serve(&["--allowed-namespaces", ""]).unwrap_err();
    assert!(e.contains("replaces --allowed-namespaces"), "{e}");

    std::fs::write(&file, "rules: []\n").unwrap();
    let e = serve(&[]).unwrap_err();
    assert!(e.contains(f) && e.contains("rules is empty"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn caller_authentication_is_off_unless_a_client_ca_is_given() {
    let serve = |extra: &[&str]| {
        let mut args = vec!["x", "serve", "--tls-self-signed"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Serve(s) => (s.tls.tls_client_ca_file, s.tls.tls_client_names),
            _ => panic!("serve"),
        })
    };
    assert_eq!(serve(&[]).unwrap(), (None, vec![]));
    let (ca, names) = serve(&[
        "--tls-client-ca-file",
        "/ca.crt",
        "--tls-client-names",
        "a,b",
    ])
    .unwrap();
    assert_eq!(ca, Some(PathBuf::from("/ca.crt")));
    assert_eq!(names, ["a", "b"]);
    // Names without a CA would check nothing: refused.
    assert!(serve(&["--tls-client-names", "a"]).is_err());
}

#[test]
fn the_tls_mode_is_one_of_three() {
    let mode = |extra: &[&str]| {
        let mut args = vec!["x", "serve"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .map(|cli| match cli.command {
                Command::Serve(s) => format!("{:?}", s.tls.mode()),
                _ => panic!("serve"),
            })
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        mode(&["--tls-cert-file", "c", "--tls-key-file", "k"]).unwrap(),
        r#"Some(Files { cert: "c", key: "k" })"#
    );
    assert_eq!(
        mode(&["--tls-self-signed", "--tls-self-signed-dir", "/d"]).unwrap(),
        r#"Some(SelfSigned { dir: "/d" })"#
    );
    assert_eq!(mode(&["--tls-self-managed"]).unwrap(), "Some(SelfManaged)");
    // None of the three, or two of them: clap refuses, naming the flags.
    let e = mode(&[]).unwrap_err();
    assert!(
        e.contains("--tls-cert-file") && e.contains("--tls-self-managed"),
        "{e}"
    );
    for two in [
        vec!["--tls-self-managed", "--tls-self-signed"],
        vec![
            "--tls-cert-file",
            "c",
            "--tls-key-file",
            "k",
            "--tls-self-signed",
        ],
        vec!["--tls-self-signed", "--tls-key-file", "k"],
    ] {
        let e = mode(&two).unwrap_err();
        assert!(e.contains("cannot be used with"), "{two:?}: {e}");
    }
    let e = mode(&["--tls-cert-file", "c"]).unwrap_err();
    assert!(e.contains("--tls-key-file"), "{e}");
}

#[test]
fn durations_are_refused_with_the_input() {
    let e = Cli::try_parse_from([
        "x",
        "serve",
        "--tls-self-signed",
        "--shutdown-grace",
        "soon",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid duration \"soon\""), "{e}");
}
