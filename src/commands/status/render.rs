//! Printing what [`classify`](super::classify) found: the table, the JSON and the verdict.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::secret::{INJECT_LABEL, SecretKind};
use crate::state::State;
use crate::time::{compact, relative_past, rfc3339};

use super::classify::{Row, Stamp};
use super::{EXIT_OK, EXIT_PROBLEM};

pub(super) fn expires_cell(now: SystemTime, s: &Stamp) -> String {
    match s {
        Stamp::Missing => "-".to_string(),
        Stamp::Unreadable(_) => "unreadable".to_string(),
        Stamp::At(t) => match t.duration_since(now) {
            Ok(left) if !left.is_zero() => format!("in {}", compact(left)),
            Ok(_) => "expired 0s ago".to_string(),
            Err(e) => format!("expired {} ago", compact(e.duration())),
        },
    }
}

pub(super) fn touched_cell(now: SystemTime, s: &Stamp) -> String {
    match s {
        Stamp::Missing => "never".to_string(),
        Stamp::Unreadable(_) => "unreadable".to_string(),
        Stamp::At(t) => relative_past(now, *t),
    }
}

pub(super) fn kind_cell(kind: Option<SecretKind>) -> &'static str {
    kind.map_or("unsupported", SecretKind::metric_label)
}

/// What to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
    One { namespace: String, name: String },
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Scope::All => "in all namespaces".into(),
            Scope::Namespace(ns) => format!("in namespace {ns}"),
            Scope::One { namespace, name } => format!("{namespace}/{name}"),
        }
    }
}

/// The counts behind the one-line verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub total: usize,
    /// Per state, in [`State::ALL`] order.
    pub counts: Vec<(State, usize)>,
}

impl Verdict {
    pub fn of(rows: &[Row]) -> Verdict {
        Verdict {
            total: rows.len(),
            counts: State::ALL
                .iter()
                .map(|s| (*s, rows.iter().filter(|r| r.state == *s).count()))
                .collect(),
        }
    }

    pub fn ok(&self) -> bool {
        self.counts.iter().all(|(s, n)| !s.is_problem() || *n == 0)
    }

    pub fn exit_code(&self) -> u8 {
        if self.ok() { EXIT_OK } else { EXIT_PROBLEM }
    }

    /// `12 secrets in all namespaces: 11 fresh, 1 with an error`; for one secret,
    /// `secret apps/pull has an error`.
    pub fn summary(&self, scope: &Scope) -> String {
        let where_ = scope.describe();
        if let (Scope::One { .. }, Some((state, _))) =
            (scope, self.counts.iter().find(|(_, n)| *n > 0))
        {
            return format!("secret {where_} {}", state.sentence());
        }
        if self.total == 0 {
            return format!("no opted-in secrets ({INJECT_LABEL}=true) {where_}");
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.phrase()))
            .collect();
        let noun = if self.total == 1 { "secret" } else { "secrets" };
        format!("{} {noun} {where_}: {}", self.total, parts.join(", "))
    }
}

/// The aligned table, the reasons of each secret that has any, and the verdict.
pub fn render_text(rows: &[Row], now: SystemTime, scope: &Scope) -> String {
    let verdict = Verdict::of(rows);
    let mut out = String::new();
    if !rows.is_empty() {
        let header = [
            "NAMESPACE",
            "NAME",
            "KIND",
            "REGISTRIES",
            "EXPIRES",
            "TOUCHED",
            "STATE",
        ]
        .map(String::from);
        let cells: Vec<[String; 7]> = rows
            .iter()
            .map(|r| {
                [
                    r.namespace.clone(),
                    r.name.clone(),
                    kind_cell(r.kind).to_string(),
                    if r.registries.is_empty() {
                        "-".to_string()
                    } else {
                        r.registries.join(",")
                    },
                    expires_cell(now, &r.expires_at),
                    touched_cell(now, &r.touched_at),
                    r.state.label().to_string(),
                ]
            })
            .collect();
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}   ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for r in rows.iter().filter(|r| !r.reasons.is_empty()) {
            let _ = writeln!(out, "\n{}/{} ({}):", r.namespace, r.name, r.state.label());
            for reason in &r.reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        }
        out.push('\n');
    }
    out.push_str(&verdict.summary(scope));
    out.push('\n');
    out
}

/// The machine-readable document: every row's fields and the verdict.
pub fn render_json(rows: &[Row], now: SystemTime, scope: &Scope, margin: Duration) -> String {
    let verdict = Verdict::of(rows);
    let secs = |from: SystemTime, to: SystemTime| -> i64 {
        match to.duration_since(from) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    };
    let secrets: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "namespace": r.namespace,
                "name": r.name,
                "kind": r.kind.map(SecretKind::metric_label),
                "registries": r.registries,
                "expiresAt": r.expires_at.raw(),
                "expiresInSeconds": r.expires_at.at().map(|t| secs(now, t)),
                "touchedAt": r.touched_at.raw(),
                "touchedSecondsAgo": r.touched_at.at().map(|t| secs(t, now)),
                "error": r.error,
                "state": r.state.label(),
                "reasons": r.reasons,
            })
        })
        .collect();
    let states: serde_json::Map<String, Value> = verdict
        .counts
        .iter()
        .map(|(s, n)| (s.label().to_string(), json!(n)))
        .collect();
    let doc = json!({
        "checkedAt": rfc3339(now),
        "refreshMargin": humantime::format_duration(margin).to_string(),
        "secrets": secrets,
        "verdict": {
            "ok": verdict.ok(),
            "total": verdict.total,
            "states": states,
            "summary": verdict.summary(scope),
        },
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}
