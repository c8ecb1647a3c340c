//! The flag tables of docs/configuration.md against the binary's own `--help`, as the metrics
//! table is checked against `/metrics` (monitoring.rs): each table lists exactly the flags its
//! command prints, each with the environment variable `--help` names (or `none`), and a default
//! that `--help` prints is the one the table starts with.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ecr-token-webhook");

/// A flag as written in a table's first column, without backquotes: `--listen`, `-n, --namespace`,
/// `NAME` (an argument).
type Flag = String;

#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    env: Option<String>,
    default: Option<String>,
}

/// `ecr-token-webhook ARGS --help`, parsed: the flags and arguments with their `[env: ...]` and
/// `[default: ...]`; `--help` and `--version` left out (clap's own).
fn help(args: &[&str]) -> BTreeMap<Flag, Entry> {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--help");
    // A variable set here would show its value in `[env: NAME=value]`; and none should apply.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ECR_TOKEN_WEBHOOK_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("run --help");
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");

    // An entry starts on a line indented less than its description (2 or 6 spaces against 10)
    // with a flag (`-n, --namespace <NAMESPACE>`, `--listen <LISTEN>`) or an argument (`[NAME]`).
    let mut entries: Vec<(Flag, String)> = Vec::new();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let head = (2..10).contains(&indent)
            && (trimmed.starts_with('-') || (section == "Arguments:" && trimmed.starts_with('[')));
        if head {
            let (name, rest) = match trimmed.strip_prefix('[') {
                Some(arg) => {
                    let (name, rest) = arg.split_once(']').expect("[NAME]");
                    (name.to_string(), rest.to_string())
                }
                None => {
                    // The flag's spellings end where its value name or its help begins.
                    let end = trimmed
                        .find(" <")
                        .or_else(|| trimmed.find("  "))
                        .unwrap_or(trimmed.len());
                    (trimmed[..end].to_string(), trimmed[end..].to_string())
                }
            };
            entries.push((name, rest));
        } else if let Some((_, description)) = entries.last_mut() {
            description.push(' ');
            description.push_str(trimmed);
        }
    }
    let bracketed = |text: &str, key: &str| -> Option<String> {
        let start = text.find(&format!("[{key}: "))? + key.len() + 3;
        let end = start + text[start..].find(']')?;
        Some(text[start..end].to_string())
    };
    entries
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "-h, --help" | "-V, --version"))
        .map(|(name, description)| {
            let entry = Entry {
                env: bracketed(&description, "env").map(|e| e.trim_end_matches('=').to_string()),
                default: bracketed(&description, "default"),
            };
            (name, entry)
        })
        .collect()
}

/// The table under `### {heading}` in docs/configuration.md: flag, environment, default cells.
fn table(page: &str, heading: &str) -> BTreeMap<Flag, (String, String)> {
    let section = page
        .split(&format!("\n### {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"))
        .split("\n#")
        .next()
        .unwrap_or_default();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert!(
            cells.len() >= 4,
            "{heading}: a row of fewer than four cells: {line}"
        );
        let flag = cells[0]
            .replace('`', "")
            .trim_end_matches(" (argument)")
            .to_string();
        let previous = rows.insert(flag.clone(), (cells[1].to_string(), cells[2].to_string()));
        assert!(previous.is_none(), "{heading}: {flag} twice");
    }
    assert!(!rows.is_empty(), "{heading}: no table");
    rows
}

fn page() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"))
        .expect("docs/configuration.md")
}

/// What is wrong with `rows` as the documentation of `entries`, one line each.
fn disagreements(
    command: &str,
    entries: &BTreeMap<Flag, Entry>,
    rows: &BTreeMap<Flag, (String, String)>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for flag in entries.keys().filter(|f| !rows.contains_key(*f)) {
        wrong.push(format!("{command}: {flag} is not in the table"));
    }
    for flag in rows.keys().filter(|f| !entries.contains_key(*f)) {
        wrong.push(format!(
            "{command}: the table lists {flag}, which --help does not"
        ));
    }
    for (flag, entry) in entries {
        let Some((env, default)) = rows.get(flag) else {
            continue;
        };
        let want_env = entry
            .env
            .as_ref()
            .map_or("none".to_string(), |e| format!("`{e}`"));
        if *env != want_env {
            wrong.push(format!(
                "{command}: {flag}: environment {env}, --help says {want_env}"
            ));
        }
        // The table may say more after the default (`0s` (manifests: `5s`)), not something else.
        if let Some(d) = &entry.default
            && !default.starts_with(&format!("`{d}`"))
        {
            wrong.push(format!(
                "{command}: {flag}: default {default}, --help says `{d}`"
            ));
        }
    }
    wrong
}

#[test]
fn the_configuration_page_documents_every_flag_as_help_prints_it() {
    let page = page();
    let global = table(&page, "Global (any subcommand)");
    let mut wrong = disagreements("ecr-token-webhook", &help(&[]), &global);
    for (command, heading) in [
        ("serve", "`ecr-token-webhook serve`"),
        ("certs", "`ecr-token-webhook certs`"),
        ("status", "`ecr-token-webhook status`"),
    ] {
        // The global flags are printed by every command and documented once.
        let mut rows = table(&page, heading);
        for (flag, row) in &global {
            assert!(
                rows.insert(flag.clone(), row.clone()).is_none(),
                "{heading} lists the global {flag}"
            );
        }
        wrong.extend(disagreements(command, &help(&[command]), &rows));
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's flag tables vs --help:\n{}",
        wrong.join("\n")
    );
}

/// The parser above reads what it should: a known entry of each shape.
#[test]
fn help_is_read_as_printed() {
    let serve = help(&["serve"]);
    assert_eq!(
        serve["--listen"],
        Entry {
            env: Some("ECR_TOKEN_WEBHOOK_LISTEN".into()),
            default: Some("0.0.0.0:8443".into())
        }
    );
    assert_eq!(
        serve["--tls-cert-file"],
        Entry {
            env: Some("ECR_TOKEN_WEBHOOK_TLS_CERT_FILE".into()),
            default: None
        }
    );
    let status = help(&["status"]);
    assert_eq!(status["NAME"], Entry::default());
    assert_eq!(status["-n, --namespace"], Entry::default());
    assert_eq!(
        status["-o, --output"].default.as_deref(),
        Some("text"),
        "{status:?}"
    );
    let certs = help(&["certs"]);
    assert_eq!(
        certs["--validity"].default.as_deref(),
        Some("8760h"),
        "{certs:?}"
    );
    assert!(certs.contains_key("--log-level") && !certs.contains_key("-h, --help"));
}
