//! The pretty access log (`log_format = "pretty"`, the default) without the fmt machinery on
//! the request's thread: a `tracing` layer that writes the `portcullis::access` events as the
//! lines tracing-subscriber's compact formatter writes for them, byte for byte (colours, the
//! span names in front, the spans' fields behind), and hands them to the same batching
//! background writer as the JSON access lines ([`super::json_log`]).
//!
//! Why: through the formatter, one access line cost ~22k instructions per request (its
//! writer, its styles, every field through `fmt` and a `dyn Debug`) and a `write` to stdout
//! on the request's thread: more than retry and the breaker together. The other events
//! (warnings, the layers' decisions) still go through the formatter; they are rare. The two
//! writers are separate, so an access line may appear up to one batch (5–20 ms) after a line
//! the formatter wrote later, as in JSON mode.

use std::{fmt::Write as _, time::SystemTime};

use portcullis_core::lines::LineWriter;
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{
    fmt::FormattedFields,
    layer::Context,
    registry::{LookupSpan, SpanRef},
    Layer,
};

use super::{json_log, HumanFields};

/// Writes `portcullis::access` events as the compact formatter's lines to stdout through a
/// [`LineWriter`]. Put it beside the formatter with [`HumanFields`], which must leave those
/// events to it (the spans' fields are the ones the formatter recorded).
#[derive(Debug, Clone)]
pub struct AccessHumanLayer {
    out: LineWriter,
    ansi: bool,
}

impl AccessHumanLayer {
    /// Start the stdout writer thread; colours as the formatter decides them by default
    /// (on unless `NO_COLOR` is set to something).
    pub fn stdout() -> std::io::Result<Self> {
        Ok(Self {
            out: json_log::stdout_writer()?,
            ansi: ansi_from_env(),
        })
    }

    /// The writer, to flush at exit.
    pub fn writer(&self) -> &LineWriter {
        &self.out
    }
}

impl<S> Layer<S> for AccessHumanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Stacked beside the formatter under one filter, every event comes here.
        if event.metadata().target() != json_log::ACCESS_TARGET {
            return;
        }
        json_log::send_line(&self.out, |line| {
            human_line(line, event, &ctx, Some(SystemTime::now()), self.ansi)
        });
    }
}

/// Colours, as the formatter decides them by default: on unless `NO_COLOR` is set to something.
pub(super) fn ansi_from_env() -> bool {
    std::env::var("NO_COLOR").map_or(true, |v| v.is_empty())
}

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// `text` in `style` (an ANSI prefix), or plain.
fn paint(out: &mut String, ansi: bool, style: &str, text: &str) {
    if ansi {
        out.push_str(style);
        out.push_str(text);
        out.push_str(RESET);
    } else {
        out.push_str(text);
    }
}

/// The compact formatter's line of `event` (its `Format<Compact>` with the default timer,
/// level and target shown, no thread names or ids; `now: None` as `without_time()`).
fn human_line<S>(
    out: &mut String,
    event: &Event<'_>,
    ctx: &Context<'_, S>,
    now: Option<SystemTime>,
    ansi: bool,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    compact_line(
        out,
        (now, meta.level(), meta.target(), ansi),
        || {
            ctx.event_scope(event)
                .into_iter()
                .flat_map(|s| s.from_root())
        },
        |out| event.record(&mut HumanLine { out, first: true }),
    );
}

/// The line [`human_line`] writes for the access event `line` would send now, in the current
/// span, written from `line`'s typed fields and the current span's scope in the registry of
/// the default subscriber (no event is sent: see [`json_log::write_access_alone`]). Without a
/// registry under the subscriber, the line has no spans.
pub(super) fn access_line(
    out: &mut String,
    line: &json_log::AccessLine<'_>,
    now: Option<SystemTime>,
    ansi: bool,
) {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let span = (dispatch.downcast_ref::<tracing_subscriber::Registry>())
            .zip(current.id())
            .and_then(|(registry, id)| registry.span(id));
        compact_line(
            out,
            (now, &Level::INFO, json_log::ACCESS_TARGET, ansi),
            || span.iter().flat_map(|s| s.scope().from_root()),
            |out| access_fields(out, line),
        );
    });
}

/// The compact formatter's line: the time (unless `None`) and the level, the names of the
/// spans `scope` gives (from the root), the target, what `fields` writes, then the fields
/// each span recorded.
fn compact_line<'a, R, I>(
    out: &mut String,
    (now, level, target, ansi): (Option<SystemTime>, &Level, &str, bool),
    scope: impl Fn() -> I,
    fields: impl FnOnce(&mut String),
) where
    R: LookupSpan<'a> + 'a,
    I: Iterator<Item = SpanRef<'a, R>>,
{
    if let Some(now) = now {
        if ansi {
            out.push_str(DIM);
        }
        json_log::timestamp(out, now);
        if ansi {
            out.push_str(RESET);
        }
        out.push(' ');
    }
    let (color, level) = match *level {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    };
    paint(out, ansi, color, level);
    out.push(' ');
    let mut spans = false;
    for span in scope() {
        spans = true;
        paint(out, ansi, BOLD, span.metadata().name());
        out.push(':');
    }
    if spans {
        out.push(' ');
    }
    paint(out, ansi, DIM, target);
    paint(out, ansi, DIM, ":");
    out.push(' ');
    fields(out);
    for span in scope() {
        if let Some(fields) = span.extensions().get::<FormattedFields<HumanFields>>() {
            if !fields.is_empty() {
                out.push(' ');
                paint(out, ansi, DIM, &fields.fields);
            }
        }
    }
    out.push('\n');
}

/// The access event's fields as [`HumanLine`] records them from the event `emit` sends: in
/// the macro's order, the message bare, `None`s left out. The same list as the JSON line's
/// `write_fields`, kept apart on purpose: one walk through a writer trait for both measured
/// 0.3k-0.7k more instructions per request (callgrind, release build); the tests hold each
/// list to its formatter's line of the same event, so neither can drift.
fn access_fields(out: &mut String, line: &json_log::AccessLine<'_>) {
    fn text(out: &mut String, name: &str, value: &str) {
        out.push(' ');
        out.push_str(name);
        out.push('=');
        if plain(value) {
            out.push('"');
            out.push_str(value);
            out.push('"');
        } else {
            let _ = write!(out, "{value:?}");
        }
    }
    fn uint(out: &mut String, name: &str, value: u64) {
        out.push(' ');
        out.push_str(name);
        out.push('=');
        out.push_str(itoa::Buffer::new().format(value));
    }
    fn float(out: &mut String, name: &str, value: f64) {
        out.push(' ');
        out.push_str(name);
        out.push('=');
        push_f64_debug(out, value);
    }
    out.push_str("request");
    text(out, "method", line.method);
    text(out, "path", line.path);
    text(out, "model", line.model);
    text(out, "upstream", line.upstream);
    uint(out, "status", line.status.into());
    float(out, "latency_ms", line.latency_ms);
    float(out, "ttfb_ms", line.ttfb_ms);
    text(out, "request_id", line.request_id);
    uint(out, "attempts", line.attempts.into());
    text(out, "cache", line.cache);
    text(out, "user_id", line.user_id);
    text(out, "key", line.key);
    if let Some(e) = line.error {
        text(out, "error", e);
    }
    if let Some(t) = line.trace_id {
        text(out, "trace_id", t);
    }
    out.push_str(if line.stream {
        " stream=true"
    } else {
        " stream=false"
    });
    if let Some(n) = line.input_tokens {
        uint(out, "input_tokens", n);
    }
    if let Some(n) = line.output_tokens {
        uint(out, "output_tokens", n);
    }
    if let Some(b) = line.body {
        text(out, "body", b);
    }
}

/// An event's fields as [`HumanFields`] writes them (`name=value` with the value's `Debug`,
/// the message bare, `otel.*` left out), with the common types written without `fmt`.
struct HumanLine<'a> {
    out: &'a mut String,
    first: bool,
}

impl HumanLine<'_> {
    /// The separator and `name=`; `false`: the field is not shown.
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("otel.") {
            return false;
        }
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(' ');
        }
        if name != "message" {
            self.out.push_str(name);
            self.out.push('=');
        }
        true
    }
}

/// Printable ASCII without a quote or a backslash: what `Debug` writes unescaped. One pass,
/// eight bytes at a time (it was three: `is_ascii`, the JSON string scan, a search for 0x7f;
/// ~140 instructions for each of the access line's dozen texts).
pub(super) fn plain(value: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `w` is 0 / below `n` / above `n` (the classic bit tricks; exact as a
    // yes or no for any bytes, with `n` at most 0x80 below and 0x7f above).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    let above = |w: u64, n: u64| (w.wrapping_add(ONES * (0x7f - n)) | w) & HIGH != 0;
    let mut words = value.as_bytes().chunks_exact(8);
    for word in words.by_ref() {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        let w = u64::from_le_bytes(le);
        if below(w, 0x20) || above(w, 0x7e) || zero(w ^ (ONES * 0x22)) || zero(w ^ (ONES * 0x5c)) {
            return false;
        }
    }
    (words.remainder().iter()).all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for HumanLine<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.name(field) {
            return;
        }
        if field.name() == "message" {
            self.out.push_str(value);
        } else if plain(value) {
            // What `Debug` writes for printable ASCII with nothing to escape.
            self.out.push('"');
            self.out.push_str(value);
            self.out.push('"');
        } else {
            let _ = write!(self.out, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            self.out.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.name(field) {
            self.out.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.name(field) {
            push_f64_debug(self.out, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.name(field) {
            let _ = write!(self.out, "{value:?}");
        }
    }
}

/// `value` as `Debug` writes it. Between 1e-4 and 1e14 (and zero) `Debug` writes the shortest
/// decimal that reads back as `value`, with at least one digit after the point, as serde_json's
/// float writer does (the latencies of the access line are there). Elsewhere `Debug` writes it:
/// past 1e16 it turns to exponents, and from ~5.6e14 a double's exact decimal is short enough
/// for two shortest candidates to tie, which the two writers break differently.
pub(super) fn push_f64_debug(out: &mut String, value: f64) {
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e14).contains(&magnitude) {
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        let _ = write!(out, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt, layer::SubscriberExt, Layer as _};

    use super::*;

    /// Records the line of every event through `human_line`, without the time.
    struct Capture(Arc<Mutex<String>>, bool);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            human_line(&mut self.0.lock().unwrap(), event, &ctx, None, self.1);
        }
    }

    /// The lines `emit` makes through `human_line` (ours) and through the compact formatter
    /// with `HumanFields` (theirs), neither with the time.
    fn both(ansi: bool, emit: impl FnOnce()) -> (String, String) {
        crate::telemetry::test_buf::both(
            |sink, ours| {
                tracing_subscriber::registry()
                    .with(
                        fmt::layer()
                            .compact()
                            .fmt_fields(HumanFields)
                            .with_ansi(ansi)
                            .without_time()
                            .with_writer(move || sink.clone()),
                    )
                    .with(Capture(ours, ansi))
            },
            emit,
        )
    }

    /// The access event as the gateway sends it, inside the request span and an inner one:
    /// the same line as the formatter's, with and without colours.
    #[test]
    fn same_line_as_the_compact_formatter() {
        for ansi in [true, false] {
            let (ours, theirs) = both(ansi, || {
                let outer = tracing::info_span!(
                    "request",
                    otel.name = "POST /v1/chat/completions",
                    request_id = %"req-1",
                );
                let inner = tracing::info_span!("upstream_attempt", attempt = 2u32);
                let _o = outer.enter();
                let _i = inner.enter();
                // Every field, and then some left out, a text with a character `Debug`
                // escapes and an empty one.
                crate::telemetry::json_log::AccessLine {
                    model: "gpt-4o\nmini\u{8}é\u{200b}",
                    key: "",
                    output_tokens: None,
                    ..crate::telemetry::json_log::sample_line()
                }
                .emit();
            });
            assert_eq!(ours, theirs, "ansi {ansi}");
            assert!(ours.contains("attempts=3"), "{ours}");
            assert!(!ours.contains("otel."), "{ours}");
        }
    }

    /// The line written without an event, from the access line's fields and the registry's
    /// current spans, is the formatter's line of the event: with and without colours, spans
    /// and optional fields, and outside any span.
    #[test]
    fn an_access_line_written_alone_is_the_formatters() {
        use crate::telemetry::json_log::{sample_line, AccessLine};
        for ansi in [true, false] {
            let mut alone = String::new();
            let (_, theirs) = both(ansi, || {
                let outer = tracing::info_span!(
                    "request",
                    otel.name = "POST /v1/chat/completions",
                    request_id = %"req-1",
                );
                let _o = outer.enter();
                // A child of the request span: both in the line.
                let inner = tracing::info_span!("upstream_attempt", attempt = 2u32);
                let _i = inner.enter();
                let line = AccessLine {
                    model: "gpt-4o\nmini\u{8}é\u{200b}",
                    key: "",
                    output_tokens: None,
                    latency_ms: f64::NAN,
                    ttfb_ms: 1.5e15,
                    ..sample_line()
                };
                access_line(&mut alone, &line, None, ansi);
                line.emit();
            });
            assert_eq!(alone, theirs, "ansi {ansi}");
            assert!(
                ansi || alone.contains(" INFO request:upstream_attempt: portcullis::access: "),
                "{alone}"
            );
            assert!(
                ansi || alone.ends_with(" request_id=req-1 attempt=2\n"),
                "{alone}"
            );
            let mut alone = String::new();
            let (_, theirs) = both(ansi, || {
                access_line(&mut alone, &AccessLine::default(), None, ansi);
                AccessLine::default().emit();
            });
            assert_eq!(alone, theirs, "ansi {ansi}, no span");
        }
    }

    /// The lines `emit` makes through the gateway's pretty stack without an exporter (one
    /// filter for `RUST_LOG` = `spec`, the formatter, [`AccessHumanLayer`] writing to a file):
    /// (hand-written, formatter's), neither with colours, the hand-written without its time.
    fn stacked(spec: &str, emit: impl FnOnce()) -> (String, String) {
        let file = crate::telemetry::test_buf::FileLines::new();
        let access = AccessHumanLayer {
            out: file.writer.clone(),
            ansi: false,
        };
        let (_, theirs) = crate::telemetry::test_buf::both(
            |sink, _| {
                tracing_subscriber::registry().with(
                    crate::telemetry::log_filter::LogFilter::from_spec(Some(spec)).and_then(
                        crate::telemetry::with_access(
                            fmt::layer()
                                .compact()
                                .fmt_fields(HumanFields)
                                .with_ansi(false)
                                .without_time()
                                .with_writer(move || sink.clone()),
                            access,
                        ),
                    ),
                )
            },
            emit,
        );
        // Each line starts with its time and a space.
        let ours = file
            .text()
            .lines()
            .map(|l| format!("{}\n", &l[l.find(' ').unwrap() + 1..]))
            .collect();
        (ours, theirs)
    }

    /// Under one filter, the access line is written once, by hand, as the formatter would
    /// have written it (span names and fields included); every other event the filter lets
    /// through is the formatter's, in its spans; what the filter refuses is nowhere.
    #[test]
    fn one_filter_each_line_once() {
        let emit = || {
            let request = tracing::info_span!("request", request_id = %"req-1");
            let _r = request.enter();
            tracing::warn!(target: "portcullis_retry", attempt = 2u32, "retrying");
            tracing::debug!(target: "portcullis_retry", "not at info");
            crate::telemetry::json_log::sample_line().emit();
        };
        let (ours, theirs) = stacked("info", emit);
        assert_eq!(ours.lines().count(), 1, "{ours}");
        assert!(
            ours.starts_with(" INFO request: portcullis::access: request "),
            "{ours}"
        );
        assert!(ours.trim_end().ends_with(" request_id=req-1"), "{ours}");
        assert_eq!(theirs.lines().count(), 1, "{theirs}");
        assert!(
            theirs.contains(" WARN request: portcullis_retry: retrying attempt=2 request_id=req-1"),
            "{theirs}"
        );
        // The formatter alone (a per-layer filter keeping the access lines out) writes the
        // same access line.
        let (_, alone) = both(false, emit);
        assert!(alone.contains(&ours), "{alone}\n{ours}");
        // `RUST_LOG=warn`: the access line (info) is gone too.
        let (ours, theirs) = stacked("warn", emit);
        assert_eq!((ours.as_str(), theirs.lines().count()), ("", 1), "{theirs}");
    }

    /// A directive scoped to a span still works through the filter: `RUST_LOG=warn,
    /// [request]=debug` lets debug events through inside the request span only.
    #[test]
    fn scoped_directives_still_follow_spans() {
        let (_, theirs) = stacked("warn,[request]=debug", || {
            tracing::debug!(target: "portcullis_retry", "outside");
            let request = tracing::info_span!("request", request_id = %"req-1");
            request.in_scope(|| tracing::debug!(target: "portcullis_retry", "inside"));
        });
        assert!(theirs.contains("inside"), "{theirs}");
        assert!(!theirs.contains("outside"), "{theirs}");
    }

    /// Over ASCII, `plain` says "unescaped" exactly where `Debug` writes the text back as it
    /// is (at every position of a word and its tail).
    #[test]
    fn plain_is_where_debug_escapes_nothing() {
        for b in 0u8..=0x7f {
            for at in 0..12 {
                let mut s = "abcdefghijk".to_string();
                s.insert(at, char::from(b));
                assert_eq!(
                    plain(&s),
                    format!("{s:?}") == format!("\"{s}\""),
                    "{b:#x} at {at}"
                );
            }
        }
        // Anything else is left to `Debug` itself, in a word or in its tail.
        for s in ["é", "\u{200b}", "a\u{80}"] {
            assert!(!plain(s), "{s:?}");
        }
        for c in ['é', '\u{80}', '\u{7ff}', '\u{200b}', '😀', '\u{7f}'] {
            for at in 0..=16 {
                let mut s = "abcdefghijklmnop".to_string();
                s.insert(at, c);
                assert!(!plain(&s), "{s:?}");
            }
        }
        assert!(plain(""));
        assert!(plain(
            "a plain text of several words, ~!#$%&'()*+,-./:;<=>?@[]^_`{|}"
        ));
    }

    /// Where `push_f64_debug` writes a float itself, its text is `Debug`'s, at the edges of
    /// that range and on either side of them, and across it.
    #[test]
    fn floats_as_debug_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1e-4,
            9.999e-5,
            1e-5,
            1e14,
            99_999_999_999_999.98,
            1e16,
            2.0,
            1.952,
            1e-7,
            0.1,
            1.0 / 3.0,
            123_456.789,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
        ];
        // Across the range and past it, every few bit patterns of the doubles.
        let (lo, hi) = (1e-6f64.to_bits(), 1e18f64.to_bits());
        values.extend(
            (lo..hi)
                .step_by(((hi - lo) / 200_000) as usize)
                .map(f64::from_bits),
        );
        for v in values.iter().flat_map(|v| [*v, -*v]) {
            let mut out = String::new();
            push_f64_debug(&mut out, v);
            assert_eq!(out, format!("{v:?}"), "{}", v.to_bits());
        }
    }

    /// Every field type and level, outside any span.
    #[test]
    fn other_fields_and_levels_outside_spans() {
        for ansi in [true, false] {
            let (ours, theirs) = both(ansi, || {
                tracing::warn!(
                    target: "portcullis::access",
                    negative = -3i64,
                    whole = 2.0f64,
                    huge = 1.5e300f64,
                    third = 1.0f64 / 3.0,
                    flag = false,
                    shown = ?Some("x"),
                    otel.kind = "server",
                    "a {} message",
                    "formatted"
                );
                tracing::error!(target: "portcullis::access", message = "as a \"str\"");
                tracing::info!(target: "portcullis::access", "only a message");
            });
            assert_eq!(ours, theirs, "ansi {ansi}");
            assert_eq!(ours.lines().count(), 3);
        }
    }
}
