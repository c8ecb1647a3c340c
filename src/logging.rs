//! Logging: JSON lines a log pipeline can parse (one key per name, plain values, lists as JSON
//! arrays, the fields of the enclosing spans flattened into the line), or readable text. The AWS
//! SDK's own targets are held at `error` unless the filter names them: its warnings about a
//! missing credential chain are multi-line debug dumps, and the webhook says the same in one
//! line of its own.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Targets of the AWS SDK whose logs are off below `error` unless the filter names them.
pub const SDK_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_ecr",
    "aws_sdk_sts",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
];

/// Fields whose value is a list, logged with [`list`] and written as a JSON array.
pub const LIST_FIELDS: &[&str] = &["warnings", "registries", "names", "namespaces"];

/// The filter actually used: the SDK's targets at `error`, then `--log-level` as given, so a
/// directive naming an SDK target (`aws_config=debug`) opens it.
pub fn filter_directives(log_level: &str) -> String {
    let mut parts: Vec<String> = SDK_TARGETS
        .iter()
        .filter(|t| !log_level.contains(*t))
        .map(|t| format!("{t}=error"))
        .collect();
    parts.push(log_level.to_string());
    parts.join(",")
}

/// A list field's value: JSON array text, which the JSON format writes as an array.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    )
    .to_string()
}

/// One JSON object per line: timestamp, level, target, the enclosing spans' fields (outermost
/// first), then the event's own fields and `message`. A later key replaces an earlier one, so
/// no key appears twice.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields were recorded by JsonFields: a JSON object's text.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    for (k, v) in map {
                        let v = lift_list(&k, v);
                        line.insert(k, v);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Span fields as JSON, which [`JsonLines`] reads back.
pub fn span_fields() -> JsonFields {
    JsonFields::new()
}

fn lift_list(key: &str, v: Value) -> Value {
    match v {
        Value::String(s) if LIST_FIELDS.contains(&key) => match serde_json::from_str(&s) {
            Ok(Value::Array(a)) => Value::Array(a),
            _ => Value::String(s),
        },
        other => other,
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let key = field.name();
        self.0.insert(key.to_string(), lift_list(key, v));
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` arrives as format arguments, whose Debug is the text itself; `%x` fields
        // arrive as Display wrappers, whose Debug is their Display.
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_plain_values_one_key_per_name_and_arrays() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(span_fields())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("admission", uid = "u-1", namespace = "argocd", secret = %"repo");
            let _g = span.enter();
            let warnings = vec!["first warning".to_string(), "second \"quoted\"".to_string()];
            tracing::info!(kind = "argocd", took_ms = 3u64, stale = false,
                warnings = %list(&warnings), "answered");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(line["message"], "answered");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["namespace"], "argocd");
        assert_eq!(line["secret"], "repo");
        assert_eq!(line["uid"], "u-1");
        assert_eq!(line["took_ms"], 3);
        assert_eq!(line["stale"], false);
        assert_eq!(
            line["warnings"],
            serde_json::json!(["first warning", "second \"quoted\""])
        );
        assert!(!text.contains("Some("), "{text}");
        assert_eq!(text.matches("\"namespace\"").count(), 1, "{text}");
    }

    #[test]
    fn sdk_targets_are_quiet_unless_named() {
        let f = filter_directives("info");
        assert!(f.starts_with("aws_config=error,"), "{f}");
        assert!(f.ends_with(",info"), "{f}");
        let f = filter_directives("info,aws_config=debug");
        assert!(!f.contains("aws_config=error"), "{f}");
        assert!(f.contains("aws_smithy_runtime=error"), "{f}");
        for d in [
            filter_directives("debug"),
            filter_directives("warn,kube=info"),
        ] {
            tracing_subscriber::EnvFilter::try_new(&d).expect(&d);
        }
    }
}
