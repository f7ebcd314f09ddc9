//! Logs, metrics and traces: subscriber set-up (fmt + OpenTelemetry), the per-request access
//! log and request span, W3C trace context, GenAI usage read from responses, and the
//! Prometheus recorder behind `GET /metrics`.
//!
//! # Without an endpoint there is no OpenTelemetry layer
//!
//! With no `otlp_endpoint` (and no `OTEL_EXPORTER_OTLP_*ENDPOINT`) nothing is exported, and
//! the OpenTelemetry layer is not installed at all: even with a never-sampling tracer it cost
//! the bare gateway about a quarter of its requests/s (benches/load.sh, ~17k -> ~23k req/s
//! without it). Trace context still works: the access log keeps a hand-made W3C context
//! ([`propagation::TraceContext`]), so the JSON access log carries a `trace_id`, and a
//! client's `traceparent` still continues through the gateway to the upstream.

pub mod access_log;
pub mod client;
pub mod human_log;
pub mod json_log;
mod log_filter;
pub mod metrics;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    trace::{BatchSpanProcessor, SdkTracerProvider},
    Resource,
};
use tracing_subscriber::{
    filter::{filter_fn, FilterExt, Targets},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
    Layer,
};

use crate::config::{LogFormat, TelemetryConfig};
use log_filter::{LogFilter, SkipAccess};

/// What reaches the OpenTelemetry layer, whatever `RUST_LOG` says: spans are the product here,
/// not log noise. Layer decisions logged at debug by the layer crates (`portcullis_*`, matched
/// by the `portcullis` prefix, so a new layer needs no entry) become span events; the
/// gateway's own modules (`portcullis::*`) stay at info; the exporter's own stack (reqwest,
/// hyper, the SDK) is kept out so exporting never traces itself. The exceptions stay at info
/// because their debug events may quote request content: memory routing's quote matched
/// header values (its decision is the `portcullis.user_id` attribute anyway), validation's
/// quote the offending field, cookie session's name cookies.
const OTEL_TARGETS: &[(&str, tracing::Level)] = &[
    ("portcullis", tracing::Level::DEBUG),
    ("portcullis::", tracing::Level::INFO),
    ("portcullis_cookie_session", tracing::Level::INFO),
    ("portcullis_memory_routing", tracing::Level::INFO),
    ("portcullis_validation", tracing::Level::INFO),
];

/// How long the exit waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps telemetry running; flushes buffered spans when dropped (at most a few seconds, so a
/// dead collector never holds up the exit).
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// The JSON access log's writer thread: its last lines are written at exit.
    access: Option<portcullis_core::lines::LineWriter>,
}

impl TelemetryGuard {
    /// Whether spans are exported (an endpoint was configured and the subscriber installed).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            access.flush_blocking(SHUTDOWN_TIMEOUT);
        }
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                // The subscriber may be gone by now: say it where a human sees it.
                eprintln!("warning: flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Where spans go: the configured base URL, else the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    /// No exporter.
    Off,
    /// `otlp_endpoint` + `/v1/traces`.
    Endpoint(String),
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (read by the
    /// exporter itself, with the same rules as every other OpenTelemetry SDK).
    FromEnv,
}

impl TraceExport {
    /// Decide from the config and an environment lookup (a parameter so tests need not touch
    /// the process environment).
    pub fn resolve(cfg: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Self::Off;
        }
        let base = cfg.otlp_endpoint.trim();
        if !base.is_empty() {
            return Self::Endpoint(traces_url(base));
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            return Self::FromEnv;
        }
        Self::Off
    }
}

/// `http://host:4318` -> `http://host:4318/v1/traces`, as `OTEL_EXPORTER_OTLP_ENDPOINT` works.
pub fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// The `service.name` resource: the config's, unless it is the default and
/// `OTEL_SERVICE_NAME` names one (so the standard variable works without a config change).
fn service_name(cfg: &TelemetryConfig) -> String {
    let default = TelemetryConfig::default().service_name;
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(v) if !v.trim().is_empty() && cfg.service_name == default => v,
        _ => cfg.service_name.clone(),
    }
}

/// Build the tracer provider with a batch exporter as `export` says (`Off`: no span processor).
fn tracer_provider(cfg: &TelemetryConfig, export: &TraceExport) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(service_name(cfg))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let exporter = match export {
        TraceExport::Off => None,
        TraceExport::Endpoint(url) => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .build(),
        ),
        TraceExport::FromEnv => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build(),
        ),
    };
    match exporter {
        // The batch processor queues on the request path and exports from its own thread:
        // a full queue drops spans (with a warning) instead of making a request wait.
        Some(Ok(exporter)) => builder
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .build(),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot build the OTLP exporter; traces are not exported");
            builder.build()
        }
        None => builder.build(),
    }
}

/// Install the global subscriber: `RUST_LOG`-style filtering of logs (default `info`), pretty
/// or JSON, plus the OpenTelemetry layer when spans are exported. Call once, inside the Tokio
/// runtime; keep the guard until exit.
pub fn init(cfg: &TelemetryConfig) -> TelemetryGuard {
    // Installs the Prometheus recorder before the first request counts anything.
    let _ = metrics::handle();
    let export = TraceExport::resolve(cfg, |k| std::env::var(k).ok());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    // Nothing exported: no provider and no layer (see the module docs).
    let provider = (export != TraceExport::Off).then(|| tracer_provider(cfg, &export));
    let (layers, access_writer) = layers(cfg.log_format, provider.as_ref(), true);
    let result = tracing_subscriber::registry().with(layers).try_init();
    if result.is_err() {
        // Already installed (tests start several gateways in one process): ours is unused.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return TelemetryGuard::default();
    }
    // Nothing exported: the access layer is the only taker of access events, and its lines
    // are written without sending them (`json_log::write_access_alone`).
    if let (None, Some(out)) = (&provider, &access_writer) {
        if !LogFilter::from_env().is_scoped() {
            let out = out.clone();
            json_log::write_access_alone(match cfg.log_format {
                LogFormat::Json => json_log::Alone::Json(out),
                LogFormat::Pretty => json_log::Alone::Pretty {
                    out,
                    ansi: human_log::ansi_from_env(),
                },
            });
        }
    }
    match &export {
        TraceExport::Off => {
            tracing::debug!("no OTLP endpoint configured; traces are not exported");
        }
        TraceExport::Endpoint(url) => {
            tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
        }
        TraceExport::FromEnv => {
            tracing::info!("exporting traces over OTLP/HTTP to the OTEL_EXPORTER_OTLP_* endpoint");
        }
    }
    TelemetryGuard {
        provider,
        access: access_writer,
    }
}

/// An OpenTelemetry layer was built ([`layers`]): only then are the spans' OpenTelemetry
/// attributes worth making. Pretty logs build the spans too (they print their names and
/// fields) but none of those attributes: formatted into strings and offered to a subscriber
/// with no layer to take them, they cost ~18k instructions per request (callgrind).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `span` goes to an OpenTelemetry layer: its attributes are wanted.
pub(crate) fn exported(span: &tracing::Span) -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed) && !span.is_disabled()
}

/// Set `attrs` (and `status`) on `span`'s OpenTelemetry span in one call. `set_attribute`
/// finds the span's data afresh for each attribute (two downcasts of the subscriber, a
/// registry lookup, a lock: ~700 instructions each, 29 of them per request); this asks for the
/// span's context once (which starts the OpenTelemetry span if nothing has yet: its start time
/// is the tracing span's, so a parent must be set before) and sets them all on it.
pub(crate) fn set_attributes(
    span: &tracing::Span,
    attrs: impl IntoIterator<Item = opentelemetry::KeyValue>,
    status: Option<opentelemetry::trace::Status>,
) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    let otel = cx.span();
    otel.set_attributes(attrs);
    if let Some(status) = status {
        otel.set_status(status);
    }
}

/// A subscriber layer, boxed (a `Vec` of them is one layer that keeps per-layer filters).
type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The subscriber's layers: the OpenTelemetry layer when a provider exports, and the logs
/// (`RUST_LOG`, default `info`), pretty or JSON. In JSON mode with `direct_access`, the access
/// lines are written by hand off the request's thread ([`json_log`]), with the writer returned
/// to flush at exit.
///
/// A layer list, not `Option` layers: an absent `Option` layer counts as interested in
/// everything, so spans nobody prints or exports were built anyway (measured: the request
/// span, its attributes and every `instrument` on every request).
///
/// Pretty logs without an exporter are one stack under one global filter instead: the
/// formatter and the access lines see the same spans, so per-layer filters only cost (each
/// looked every span up in the registry on every enter and exit).
fn layers(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
    direct_access: bool,
) -> (Vec<BoxedLayer>, Option<portcullis_core::lines::LineWriter>) {
    let log_filter = LogFilter::from_env;
    let mut layers: Vec<BoxedLayer> = Vec::new();
    if let Some(provider) = provider {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        let otel_filter = Targets::new().with_targets(OTEL_TARGETS.iter().copied());
        layers.push(Box::new(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("portcullis"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(otel_filter),
        ));
    }
    // The logs: the formatter, and beside it the layer that writes the access lines by hand,
    // off the request's thread (json_log, human_log: the lines the formatter would write),
    // which the formatter then leaves out. One stack under one filter either way: a filtered
    // layer looks every span up in the registry at each enter and exit to ask its filter.
    let (logs, access_writer) = match format {
        LogFormat::Json => logs_layer(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
            hand_written(direct_access, json_log::AccessJsonLayer::stdout),
            json_log::AccessJsonLayer::writer,
        ),
        LogFormat::Pretty => logs_layer(
            fmt::layer().compact().fmt_fields(HumanFields),
            hand_written(direct_access, human_log::AccessHumanLayer::stdout),
            human_log::AccessHumanLayer::writer,
        ),
    };
    layers.push(match (format, provider) {
        // JSON lines print no span, so the logs take none: without an exporter no layer wants
        // spans at all, and the request span and every `instrument` cost next to nothing.
        (LogFormat::Json, _) => {
            Box::new(logs.with_filter(log_filter().and(filter_fn(|m| !m.is_span()))))
        }
        // Pretty lines print their spans. With nothing else taking spans, the logs' filter is
        // the subscriber's own (no per-layer filter at all).
        (LogFormat::Pretty, None) => Box::new(log_filter().and_then(logs)),
        // The exporter takes spans whatever `RUST_LOG` says: the logs keep their own filter.
        (LogFormat::Pretty, Some(_)) => Box::new(logs.with_filter(log_filter())),
    });
    (layers, access_writer)
}

/// The logs' layer: `formatter` alone, or with `access` (when its writer thread started) beside
/// it in [`with_access`]; and that writer, to flush at exit.
fn logs_layer<N, E, W, A>(
    formatter: fmt::Layer<tracing_subscriber::Registry, N, E, W>,
    access: Option<A>,
    writer: impl Fn(&A) -> &portcullis_core::lines::LineWriter,
) -> (BoxedLayer, Option<portcullis_core::lines::LineWriter>)
where
    N: for<'w> fmt::FormatFields<'w> + Send + Sync + 'static,
    E: fmt::FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
    A: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    match access {
        Some(a) => {
            let out = writer(&a).clone();
            (Box::new(with_access(formatter, a)), Some(out))
        }
        None => (Box::new(formatter), None),
    }
}

/// The logs' stack: `formatter` for every event but the access lines, then `access`, which
/// writes those (and must leave the other events alone). Both see the same spans.
fn with_access<S, N, E, W, A>(formatter: fmt::Layer<S, N, E, W>, access: A) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> fmt::FormatFields<'w> + 'static,
    E: fmt::FormatEvent<S, N> + 'static,
    W: for<'w> fmt::MakeWriter<'w> + 'static,
    A: Layer<S>,
{
    formatter.map_event_format(SkipAccess).and_then(access)
}

/// The layer writing access lines by hand (`start` starts its writer thread) when `wanted`;
/// `None` when not, or when the thread does not start (said on stderr): the formatter writes
/// those lines then.
fn hand_written<L>(wanted: bool, start: impl FnOnce() -> std::io::Result<L>) -> Option<L> {
    if !wanted {
        return None;
    }
    start()
        .map_err(|e| eprintln!("warning: access log writer thread: {e}; using the formatter"))
        .ok()
}

/// Field formatting of the pretty log: as tracing-subscriber's default, without the
/// `otel.*` fields that only name and classify spans for OpenTelemetry (they would be printed
/// on every line inside the span).
#[derive(Debug, Clone, Copy)]
struct HumanFields;

impl<'w> fmt::FormatFields<'w> for HumanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = HumanVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct HumanVisitor<'w> {
    writer: fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl HumanVisitor<'_> {
    /// Write the separator and `name=` (the message bare), then `value` with `write`;
    /// nothing for an `otel.*` field or after an error. The pieces are written one by one:
    /// one `write!` of them all went through `fmt` for each (~1k instructions a field).
    fn field(
        &mut self,
        field: &tracing::field::Field,
        value: impl FnOnce(&mut fmt::format::Writer<'_>) -> std::fmt::Result,
    ) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") {
            return;
        }
        let w = &mut self.writer;
        let mut head = || {
            if !std::mem::replace(&mut self.first, false) {
                w.write_char(' ')?;
            }
            if name != "message" {
                w.write_str(name)?;
                w.write_char('=')?;
            }
            Ok(())
        };
        self.result = head().and_then(|()| value(w));
    }
}

impl tracing::field::Visit for HumanVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.field(field, |w| w.write_str(value));
        } else if human_log::plain(value) {
            // What `Debug` writes for printable ASCII with nothing to escape.
            self.field(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.field(field, |w| write!(w, "{value:?}"));
    }
}

/// A writer the formatter's lines go into, for tests to compare.
#[cfg(test)]
pub(crate) mod test_buf {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub(crate) struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        /// What was written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The lines `emit` makes through a subscriber that `make` builds from a formatter's
    /// writer and a string for the hand-written lines: (hand-written, formatter's).
    pub(crate) fn both<S>(
        make: impl FnOnce(Buf, Arc<Mutex<String>>) -> S,
        emit: impl FnOnce(),
    ) -> (String, String)
    where
        S: tracing::Subscriber + Send + Sync + 'static,
    {
        let theirs = Buf::default();
        let ours = Arc::new(Mutex::new(String::new()));
        tracing::subscriber::with_default(make(theirs.clone(), ours.clone()), emit);
        let ours = ours.lock().unwrap().clone();
        (ours, theirs.text())
    }

    /// A line writer appending to a file of its own (for the hand-written access layers), and
    /// what it wrote.
    pub(crate) struct FileLines {
        dir: tempfile::TempDir,
        pub(crate) writer: portcullis_core::lines::LineWriter,
    }

    impl FileLines {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let sink = portcullis_core::lines::Sink::File(dir.path().join("lines"));
            let writer =
                portcullis_core::lines::LineWriter::start(sink, 16, Box::new(|_| {})).unwrap();
            Self { dir, writer }
        }

        /// What was written so far, once the writer's queue is flushed (empty: nothing).
        pub(crate) fn text(&self) -> String {
            self.writer
                .flush_blocking(std::time::Duration::from_secs(5));
            std::fs::read_to_string(self.dir.path().join("lines")).unwrap_or_default()
        }
    }

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    /// JSON logs print no span and nothing exports them: the request span is never built
    /// (it was, through an absent `Option` layer, at a measurable cost per request). Pretty
    /// logs print spans, so there it exists.
    #[test]
    fn json_logs_without_an_exporter_build_no_spans() {
        use tracing::{callsite::Callsite, metadata::Kind, Level, Subscriber};
        // Asked as the process's only subscriber is asked when a callsite is first hit (other
        // tests' subscribers in this process would blur `enabled!` and `is_disabled`).
        let span = tracing::callsite!(name: "request", kind: Kind::SPAN, level: Level::INFO, fields: request_id);
        let access = tracing::callsite!(name: "request", kind: Kind::EVENT, target: "portcullis::access", level: Level::INFO, fields: message);
        let (json, _) = layers(LogFormat::Json, None, false);
        let sub = tracing_subscriber::registry().with(json);
        assert!(
            sub.register_callsite(span.metadata()).is_never(),
            "a span is built for JSON logs"
        );
        assert!(!sub.register_callsite(access.metadata()).is_never());
        let (pretty, _) = layers(LogFormat::Pretty, None, false);
        let sub = tracing_subscriber::registry().with(pretty);
        assert!(!sub.register_callsite(span.metadata()).is_never());
    }

    #[test]
    fn otel_targets_take_layer_debug_but_not_private_or_foreign_events() {
        use tracing::Level;
        let t = Targets::new().with_targets(OTEL_TARGETS.iter().copied());
        assert!(t.would_enable("portcullis_retry", &Level::DEBUG));
        assert!(t.would_enable("portcullis_a_new_layer", &Level::DEBUG));
        assert!(t.would_enable("portcullis::access", &Level::INFO));
        assert!(!t.would_enable("portcullis::stack", &Level::DEBUG));
        assert!(!t.would_enable("portcullis_validation", &Level::DEBUG));
        assert!(!t.would_enable("portcullis_memory_routing", &Level::DEBUG));
        assert!(!t.would_enable("hyper_util::client", &Level::INFO));
    }

    /// A span's fields as the pretty lines print them: each value as its `Debug` writes it
    /// (texts quoted and escaped where they need it, the message bare), `otel.*` left out.
    #[test]
    fn pretty_span_fields_are_debug_values() {
        let buf = test_buf::Buf::default();
        let sink = buf.clone();
        let sub = tracing_subscriber::registry().with(
            fmt::layer()
                .compact()
                .with_ansi(false)
                .without_time()
                .fmt_fields(HumanFields)
                .with_writer(move || sink.clone()),
        );
        let escaped = "tab\there \"quoted\" \u{1b}[31m é";
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(
                "request",
                plain = "sk-plain_text",
                escaped,
                empty = "",
                count = 42u64,
                delta = -7i64,
                flag = true,
                ratio = 1.5f64,
                shown = %"display text",
                list = ?[1, 2],
                otel.name = "GET /x",
                otel.kind = "server",
            );
            span.in_scope(|| tracing::info!(n = 1u64, "hello {}", "there"));
        });
        let out = buf.text();
        let want = format!(
            " request: portcullis::telemetry::tests: hello there n=1 plain=\"sk-plain_text\" \
             escaped={escaped:?} empty=\"\" count=42 delta=-7 flag=true ratio=1.5 \
             shown=display text list=[1, 2]\n"
        );
        assert_eq!(
            out.split_once("INFO").map(|(_, l)| l),
            Some(want.as_str()),
            "{out}"
        );
    }

    #[test]
    fn endpoint_is_a_base_url() {
        let none = |_: &str| None;
        assert_eq!(
            TraceExport::resolve(&cfg("http://127.0.0.1:4318"), none),
            TraceExport::Endpoint("http://127.0.0.1:4318/v1/traces".into())
        );
        assert_eq!(
            TraceExport::resolve(&cfg("http://c:4318/"), none),
            TraceExport::Endpoint("http://c:4318/v1/traces".into())
        );
        assert_eq!(TraceExport::resolve(&cfg(""), none), TraceExport::Off);
    }

    #[test]
    fn standard_variables_are_honoured() {
        let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".into());
        assert_eq!(TraceExport::resolve(&cfg(""), env), TraceExport::FromEnv);
        let disabled = |k: &str| (k == "OTEL_SDK_DISABLED").then(|| "true".into());
        assert_eq!(
            TraceExport::resolve(&cfg("http://c:4318"), disabled),
            TraceExport::Off
        );
        let none = |k: &str| (k == "OTEL_TRACES_EXPORTER").then(|| "none".into());
        assert_eq!(
            TraceExport::resolve(&cfg("http://c:4318"), none),
            TraceExport::Off
        );
    }
}
