//! Logging set-up: a `tracing` subscriber writing to stderr, its level chosen by `-v` counts
//! and overridable with `RUST_LOG`, in one of two formats ([`LogFormat`]): human lines
//! (coloured on a terminal unless `NO_COLOR` is set) or one JSON object per line with the
//! structured fields (`--log-format json`, for log shippers).
//!
//! Under systemd (journald sets `JOURNAL_STREAM`) lines carry no ANSI colours and no
//! timestamps, because journald stamps them itself, and each starts with its syslog priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace), which journald strips and
//! records, so that `journalctl -p warning` works.
//!
//! While a progress bar is on the terminal ([`log_above`]), each line is printed above it
//! (indicatif's `suspend`), so the log does not scroll the bar away.
//!
//! Secrets never reach this layer: tokens are `ApiToken` (which prints `***`) and download URLs
//! are logged without their tokens or query strings by the modules that hold them.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (absent under journald), `level`, `target`,
    /// `message`, the event's fields, and `spans` (outermost first, each its `name` and
    /// fields).
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text, json)")),
        }
    }

    /// The format asked for: `flag` (`--log-format`), else `DXMIRROR_LOG_FORMAT`, else text.
    pub fn chosen(flag: Option<LogFormat>) -> Result<LogFormat, String> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match std::env::var("DXMIRROR_LOG_FORMAT") {
            Ok(v) if !v.is_empty() => {
                LogFormat::parse(&v).map_err(|e| format!("DXMIRROR_LOG_FORMAT: {e}"))
            }
            _ => Ok(LogFormat::Text),
        }
    }
}

/// The syslog priority journald reads from a `<N>` line prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Installs the global subscriber. `verbosity` is the number of `-v` flags; `quiet` lowers the
/// default to warnings. Calling it twice is harmless (the second call does nothing).
pub fn init(verbosity: u8, quiet: bool, format: LogFormat) {
    let default = match (quiet, verbosity) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "dxmirror=debug,info",
        (false, _) => "dxmirror=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = !under_journald && !no_color && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AboveBar(Vec::new()))
        .with_ansi(ansi && format == LogFormat::Text);
    let res = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields)
            .event_format(JsonLines {
                timestamps: !under_journald,
                priority: under_journald,
            })
            .try_init(),
        LogFormat::Text => {
            let text = tracing_subscriber::fmt::format()
                .with_ansi(ansi)
                .with_target(false);
            if under_journald {
                builder
                    .event_format(Prioritised(text.without_time()))
                    .try_init()
            } else {
                builder.event_format(text).try_init()
            }
        }
    };
    // An already-installed subscriber (tests, embedding) is fine.
    drop(res);
}

/// Prefixes each line of the inner format with its `<N>` syslog priority.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Collects fields as JSON values (numbers and booleans stay typed; the rest as text).
#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// Span fields stored as one JSON object's text (what [`JsonLines`] reads back).
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = JsonVisitor::default();
        fields.record(&mut v);
        write!(writer, "{}", Value::Object(v.0))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut v = JsonVisitor(span_fields(&current.fields));
        fields.record(&mut v);
        current.fields = Value::Object(v.0).to_string();
        Ok(())
    }
}

/// A span's stored fields; none when empty or unreadable.
fn span_fields(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// One JSON object per line.
struct JsonLines {
    timestamps: bool,
    priority: bool,
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        if self.timestamps {
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            line.insert("timestamp".into(), now.to_string().into());
        }
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        line.extend(fields.0);
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let mut s = Map::new();
                s.insert("name".into(), span.name().into());
                if let Some(f) = span.extensions().get::<FormattedFields<JsonFields>>() {
                    s.extend(span_fields(&f.fields));
                }
                spans.push(Value::Object(s));
            }
        }
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        if self.priority {
            write!(writer, "<{}>", syslog_priority(*meta.level()))?;
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The progress bar log lines are printed above, while one is shown.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Prints log lines above `bar` from now on (`None`: straight to stderr again).
pub fn log_above(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut slot) = BAR.lock() {
        *slot = bar;
    }
}

/// One log line, collected, then written to stderr in one piece when dropped: above the
/// progress bar when there is one.
struct AboveBar(Vec<u8>);

impl Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AboveBar {
    fn drop(&mut self) {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        let line = std::mem::take(&mut self.0);
        // A log line that cannot be written has nowhere else to go.
        let write = move || drop(std::io::stderr().write_all(&line));
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_and_formats() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::TRACE), 7);
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert!(LogFormat::parse("xml").is_err());
    }

    #[test]
    fn stored_span_fields_read_back() {
        assert_eq!(span_fields("{\"a\":1}").get("a"), Some(&Value::from(1)));
        assert!(span_fields("not json").is_empty());
    }
}
