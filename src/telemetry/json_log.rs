//! The JSON access log without the fmt machinery: a `tracing` layer that writes the
//! `portcullis::access` events as JSON lines by hand and hands them to a batching background
//! writer ([`portcullis_core::lines::LineWriter`]).
//!
//! The line is the one tracing-subscriber's JSON formatter writes with `flatten_event`
//! (`{"timestamp":..,"level":"INFO","message":"request",<fields>,"target":"portcullis::access"}`),
//! so nothing reading it changes; what goes is the cost: serde's map serializer over
//! `tracing-serde`, a timestamp formatted from scratch, the stdout lock and one `write` call per
//! line on the request's thread. `RUST_LOG` still decides whether access lines are written
//! (the layer carries the same filter as the other logs).
//!
//! The gateway's own access line goes faster still: [`AccessLine::emit`] writes its fields
//! from their types, under keys that are constants, before it sends the event (for the
//! OpenTelemetry span and the pretty log), and the layer takes that text instead of visiting
//! the event's eighteen fields one dynamic call at a time and escaping each field name.

use std::{
    cell::RefCell,
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::SystemTime,
};

use portcullis_core::lines::{LineWriter, Sink, WriteEvent};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{layer::Context, Layer};

/// The target of the access log's events.
pub const ACCESS_TARGET: &str = "portcullis::access";

/// Whether an [`AccessJsonLayer`] was made: only then does [`AccessLine::emit`] write its
/// fields ahead of the event.
static DIRECT: AtomicBool = AtomicBool::new(false);

/// The access writer, once the gateway's subscriber is installed with an access layer as the
/// only one that takes access events ([`write_access_alone`]).
static ALONE: OnceLock<Alone> = OnceLock::new();

/// The installed access layer's writer and its line's shape.
#[derive(Debug)]
pub(crate) enum Alone {
    /// [`AccessJsonLayer`]'s.
    Json(LineWriter),
    /// [`super::human_log::AccessHumanLayer`]'s, with or without colours.
    Pretty {
        /// The writer.
        out: LineWriter,
        /// Colours.
        ansi: bool,
    },
}

/// From now on [`AccessLine::emit`] writes its line straight to the installed access layer's
/// writer instead of sending an event: for a subscriber in which that layer is the only taker
/// of access events (no OpenTelemetry layer to turn them into span events, and a `RUST_LOG`
/// without span-scoped directives, so whether a line is written depends on its target and
/// level alone, which [`tracing::enabled!`] still asks; the pretty line's spans are read from
/// the registry, as the layer read them). The event's dispatch through the subscriber (its
/// eighteen fields offered to every layer, each visited again by the layer) was ~1.2k
/// instructions per request with JSON lines and ~6k with pretty ones. Once per process: the
/// global subscriber is never replaced.
pub(crate) fn write_access_alone(alone: Alone) {
    let _ = ALONE.set(alone);
}

thread_local! {
    /// The fields [`AccessLine::emit`] wrote for the event it is sending; `ready` until the
    /// layer takes them or the send returns.
    static FIELDS: RefCell<Fields> = RefCell::new(Fields {
        text: String::with_capacity(512),
        ready: false,
    });
}

struct Fields {
    text: String,
    ready: bool,
}

/// A thread's line or field buffer grown past this by one long line (a client's path) is
/// given back on the next line instead of kept.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

/// Lines queued for stdout at most; past it they are dropped and counted
/// (`portcullis_log_dropped_total`).
const MAX_QUEUED_LINES: usize = 100_000;

/// Writes `portcullis::access` events as JSON lines to stdout through a [`LineWriter`].
#[derive(Debug, Clone)]
pub struct AccessJsonLayer {
    out: LineWriter,
}

impl AccessJsonLayer {
    /// Start the stdout writer thread.
    pub fn stdout() -> std::io::Result<Self> {
        let out = stdout_writer()?;
        DIRECT.store(true, Ordering::Relaxed);
        Ok(Self { out })
    }

    /// The writer, to flush at exit.
    pub fn writer(&self) -> &LineWriter {
        &self.out
    }
}

impl<S: Subscriber> Layer<S> for AccessJsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Stacked beside the formatter under one filter, every event comes here.
        if event.metadata().target() != ACCESS_TARGET {
            return;
        }
        send_line(&self.out, |line| event_line(line, event, SystemTime::now()));
    }
}

/// The batching writer of access lines to stdout (its thread started).
pub(super) fn stdout_writer() -> std::io::Result<LineWriter> {
    LineWriter::start(
        Sink::Stdout,
        MAX_QUEUED_LINES,
        Box::new(|event| {
            if let WriteEvent::Failed { error, first: true } = event {
                // The log itself is what fails: say it where a human may see it.
                eprintln!("warning: writing the access log to stdout failed: {error}");
            }
        }),
    )
}

/// Make one line in the thread's buffer with `write` and queue it on `out` (counted in
/// `portcullis_log_dropped_total` when the queue is full).
pub(super) fn send_line(out: &LineWriter, write: impl FnOnce(&mut String)) {
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return; // re-entered from inside a write: cannot happen, never panic
        };
        line.clear();
        write(&mut line);
        if !out.send(line.as_bytes()) {
            metrics::counter!("portcullis_log_dropped_total").increment(1);
        }
        if line.capacity() > MAX_KEPT_BUFFER {
            *line = String::with_capacity(1024);
        }
    });
}

/// The line of `event`: from the fields [`AccessLine::emit`] wrote for it, else from the
/// event's own.
fn event_line(out: &mut String, event: &Event<'_>, now: SystemTime) {
    FIELDS.with(|fields| match fields.try_borrow_mut() {
        Ok(mut fields) if fields.ready => {
            fields.ready = false;
            format_line(out, event, now, Some(&fields.text));
        }
        _ => format_line(out, event, now, None),
    });
}

/// One event as a JSON line (with its newline); `fields`: its fields already written (by
/// [`AccessLine::emit`]), else they are visited.
fn format_line(out: &mut String, event: &Event<'_>, now: SystemTime, fields: Option<&str>) {
    let meta = event.metadata();
    line(
        out,
        now,
        meta.level().as_str(),
        meta.target(),
        |out| match fields {
            Some(fields) => out.push_str(fields),
            None => event.record(&mut JsonFields { out }),
        },
    );
}

/// A JSON line (with its newline) around the fields `fields` writes.
fn line(
    out: &mut String,
    now: SystemTime,
    level: &str,
    target: &str,
    fields: impl FnOnce(&mut String),
) {
    out.push_str(r#"{"timestamp":""#);
    timestamp(out, now);
    out.push_str(r#"","level":""#);
    out.push_str(level);
    out.push('"');
    fields(out);
    out.push_str(r#","target":""#);
    escape(out, target);
    out.push_str("\"}\n");
}

/// The fields of one access line (target `portcullis::access`, message `request`), typed.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLine<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The requested model (`""` when none).
    pub model: &'a str,
    /// The upstream that answered (`""` when none).
    pub upstream: &'a str,
    /// The response status.
    pub status: u16,
    /// Milliseconds to the end of the response body.
    pub latency_ms: f64,
    /// Milliseconds to the response head.
    pub ttfb_ms: f64,
    /// The request id.
    pub request_id: &'a str,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The dedup cache outcome (`""` when none).
    pub cache: &'a str,
    /// The memory user id (`""` when none).
    pub user_id: &'a str,
    /// The gateway key's name, never the key (`""` when none).
    pub key: &'a str,
    /// The error code, when the gateway made the answer.
    pub error: Option<&'a str>,
    /// The W3C trace id.
    pub trace_id: Option<&'a str>,
    /// Whether the answer was an event stream.
    pub stream: bool,
    /// Input tokens, as the answer reported them.
    pub input_tokens: Option<u64>,
    /// Output tokens, as the answer reported them.
    pub output_tokens: Option<u64>,
    /// How the body ended, when it did not complete.
    pub body: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Send the access event in the current span. With the JSON access layer on (and the line
    /// enabled), the fields are written here first, exactly as the layer would write them
    /// from the event, and the layer takes them; with that layer the only taker of access
    /// events ([`write_access_alone`]), the line is written and no event is sent.
    pub fn emit(&self) {
        if let Some(alone) = ALONE.get() {
            if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
                let now = SystemTime::now();
                match alone {
                    Alone::Json(out) => self.send(out, now),
                    Alone::Pretty { out, ansi } => send_line(out, |text| {
                        super::human_log::access_line(text, self, Some(now), *ansi);
                    }),
                }
            }
            return;
        }
        let ahead = DIRECT.load(Ordering::Relaxed)
            && tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
            && FIELDS.with(|fields| {
                let Ok(mut fields) = fields.try_borrow_mut() else {
                    return false;
                };
                if fields.text.capacity() > MAX_KEPT_BUFFER {
                    fields.text = String::with_capacity(512);
                }
                fields.text.clear();
                self.write_fields(&mut fields.text);
                fields.ready = true;
                true
            });
        tracing::info!(
            target: ACCESS_TARGET,
            method = self.method,
            path = self.path,
            model = self.model,
            upstream = self.upstream,
            status = self.status,
            latency_ms = self.latency_ms,
            ttfb_ms = self.ttfb_ms,
            request_id = self.request_id,
            attempts = self.attempts,
            cache = self.cache,
            user_id = self.user_id,
            key = self.key,
            error = self.error,
            trace_id = self.trace_id,
            stream = self.stream,
            input_tokens = self.input_tokens,
            output_tokens = self.output_tokens,
            body = self.body,
            "request"
        );
        if ahead {
            // Not taken when the layer's filter left the event out.
            FIELDS.with(|fields| {
                if let Ok(mut fields) = fields.try_borrow_mut() {
                    fields.ready = false;
                }
            });
        }
    }

    /// Queue the line on `out`, as [`AccessJsonLayer`] writes it for the event [`Self::emit`]
    /// would send at `now`.
    fn send(&self, out: &LineWriter, now: SystemTime) {
        send_line(out, |out| {
            line(out, now, "INFO", ACCESS_TARGET, |out| {
                self.write_fields(out)
            });
        });
    }

    /// The fields as [`JsonFields`] writes the event's: in the macro's order, the message
    /// first, `None`s left out.
    fn write_fields(&self, out: &mut String) {
        fn text(out: &mut String, key: &str, value: &str) {
            out.push_str(key);
            escape(out, value);
            out.push('"');
        }
        fn uint(out: &mut String, key: &str, value: u64) {
            out.push_str(key);
            out.push_str(itoa::Buffer::new().format(value));
        }
        fn float(out: &mut String, key: &str, value: f64) {
            out.push_str(key);
            push_f64(out, value);
        }
        out.push_str(r#","message":"request""#);
        text(out, r#","method":""#, self.method);
        text(out, r#","path":""#, self.path);
        text(out, r#","model":""#, self.model);
        text(out, r#","upstream":""#, self.upstream);
        uint(out, r#","status":"#, self.status.into());
        float(out, r#","latency_ms":"#, self.latency_ms);
        float(out, r#","ttfb_ms":"#, self.ttfb_ms);
        text(out, r#","request_id":""#, self.request_id);
        uint(out, r#","attempts":"#, self.attempts.into());
        text(out, r#","cache":""#, self.cache);
        text(out, r#","user_id":""#, self.user_id);
        text(out, r#","key":""#, self.key);
        if let Some(e) = self.error {
            text(out, r#","error":""#, e);
        }
        if let Some(t) = self.trace_id {
            text(out, r#","trace_id":""#, t);
        }
        out.push_str(if self.stream {
            r#","stream":true"#
        } else {
            r#","stream":false"#
        });
        if let Some(n) = self.input_tokens {
            uint(out, r#","input_tokens":"#, n);
        }
        if let Some(n) = self.output_tokens {
            uint(out, r#","output_tokens":"#, n);
        }
        if let Some(b) = self.body {
            text(out, r#","body":""#, b);
        }
    }
}

/// An access line with every field set, escapes in its texts, for tests.
#[cfg(test)]
pub(crate) fn sample_line() -> AccessLine<'static> {
    AccessLine {
        method: "POST",
        path: "/v1/chat/\"completions\"",
        model: "gpt-4o\nmini\u{8}\u{1}é",
        upstream: "mock",
        status: 502,
        latency_ms: 1.952,
        ttfb_ms: 1.0e-7,
        request_id: "req-1",
        attempts: 3,
        cache: "miss",
        user_id: "u\\1",
        key: "team-a",
        error: Some("upstream_unavailable"),
        trace_id: Some("0af7651916cd43dd8448eb211c80319c"),
        stream: true,
        input_tokens: Some(23),
        output_tokens: Some(0),
        body: Some("aborted"),
    }
}

/// A float as tracing-subscriber's JSON writes it (serde_json's digits; `null` if not finite).
fn push_f64(out: &mut String, value: f64) {
    if value.is_finite() {
        // serde_json's own float writer, without `fmt`'s float machinery.
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

struct JsonFields<'a> {
    out: &'a mut String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push_str(",\"");
        // Field names are identifiers (`a.b` at most), so `escape` copies them whole.
        escape(self.out, field.name());
        self.out.push_str("\":");
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_f64(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push('"');
        escape(self.out, value);
        self.out.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        self.out.push('"');
        // Format straight into the line, escaping as it goes.
        let _ = write!(Escaping(self.out), "{value:?}");
        self.out.push('"');
    }
}

/// A `fmt::Write` that JSON-escapes what it is given.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// Append `s` as the inside of a JSON string, as serde_json (so tracing-subscriber) writes it.
fn escape(out: &mut String, s: &str) {
    portcullis_core::json_escape::escape(s, |piece| out.push_str(piece));
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber writes it:
/// `2026-12-03T05:39:47.517098Z`.
pub(super) fn timestamp(out: &mut String, now: SystemTime) {
    portcullis_core::rfc3339::push(out, now, 6);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::{fmt, layer::SubscriberExt};

    #[test]
    fn timestamps_have_six_digits_of_microseconds() {
        for (micros, want) in [
            (0u32, "1970-01-01T00:00:07.000000Z"),
            (5, "1970-01-01T00:00:07.000005Z"),
            (517_098, "1970-01-01T00:00:07.517098Z"),
            (999_999, "1970-01-01T00:00:07.999999Z"),
        ] {
            let mut s = String::new();
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(7)
                + std::time::Duration::from_micros(micros.into());
            timestamp(&mut s, t);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn escaping_matches_json() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é 🦀";
        let mut s = String::from("\"");
        escape(&mut s, nasty);
        s.push('"');
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, nasty);
    }

    /// Records the line of one event through `event_line`.
    struct Capture(Arc<Mutex<String>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut line = String::new();
            event_line(&mut line, event, SystemTime::now());
            *self.0.lock().unwrap() = line;
        }
    }

    /// The line `emit` makes through `event_line` (ours) and through tracing-subscriber's JSON
    /// formatter, flattened (theirs).
    fn both_lines(emit: impl FnOnce()) -> (String, String) {
        crate::telemetry::test_buf::both(
            |sink, ours| {
                tracing_subscriber::registry()
                    .with(
                        fmt::layer()
                            .json()
                            .flatten_event(true)
                            .with_current_span(false)
                            .with_span_list(false)
                            .with_writer(move || sink.clone()),
                    )
                    .with(Capture(ours))
            },
            emit,
        )
    }

    /// The gateway's JSON logs as one stack under one filter (`RUST_LOG` = `info` and no
    /// spans): the access line written once, by [`AccessJsonLayer`], the other events by the
    /// formatter, nothing below the level; the spans around them are not taken.
    #[test]
    fn one_stack_writes_each_line_once() {
        use tracing_subscriber::{filter::filter_fn, filter::FilterExt as _};
        let file = crate::telemetry::test_buf::FileLines::new();
        let access = AccessJsonLayer {
            out: file.writer.clone(),
        };
        let (_, theirs) = crate::telemetry::test_buf::both(
            |sink, _| {
                let formatter = fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(move || sink.clone());
                let filter = crate::telemetry::log_filter::LogFilter::from_spec(Some("info"))
                    .and(filter_fn(|m| !m.is_span()));
                tracing_subscriber::registry()
                    .with(crate::telemetry::with_access(formatter, access).with_filter(filter))
            },
            || {
                let span = tracing::info_span!("request", request_id = "r1");
                let _e = span.enter();
                tracing::warn!(target: "portcullis_retry", "retrying");
                tracing::debug!(target: "portcullis_retry", "not at info");
                sample_line().emit();
            },
        );
        let ours = file.text();
        assert_eq!(ours.lines().count(), 1, "{ours}");
        assert!(ours.contains(r#""target":"portcullis::access""#), "{ours}");
        assert_eq!(theirs.lines().count(), 1, "{theirs}");
        assert!(theirs.contains(r#""message":"retrying""#), "{theirs}");
        assert!(
            !theirs.contains("r1") && !ours.contains(r#""request_id":"r1""#),
            "{theirs}{ours}"
        );
    }

    /// The hand-written line has the same fields, values and order as tracing-subscriber's
    /// JSON formatter (flattened), so log pipelines see no change.
    #[test]
    fn same_line_as_the_fmt_json_formatter() {
        let path = "/v1/chat/\"completions\"";
        let error: Option<&str> = None;
        let (ours, theirs) = both_lines(|| {
            tracing::info!(
                target: "portcullis::access",
                method = %http::Method::POST,
                path = %path,
                // Control characters with short escapes (`\b`, `\f`) and without.
                model = "gpt-4o\nmini\u{8}\u{c}\u{1}",
                status = 200u16,
                latency_ms = 1.952f64,
                whole = 2.0f64,
                tiny = 1.0e-7f64,
                huge = 1.5e300f64,
                third = 1.0f64 / 3.0,
                attempts = 1u32,
                negative = -3i64,
                stream = false,
                error,
                input_tokens = Some(23u64),
                "request"
            );
        });
        // Different instants; the timestamp's format is checked apart, the rest byte for byte.
        let strip = |l: &str| -> (String, String) {
            let head = r#"{"timestamp":""#;
            assert!(l.starts_with(head), "{l}");
            let ts = l[head.len()..head.len() + 27].to_string();
            (ts, format!("{head}{}", &l[head.len() + 27..]))
        };
        let (ts, ours_rest) = strip(&ours);
        let (_, theirs_rest) = strip(&theirs);
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert_eq!(ours_rest, theirs_rest);
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(v["model"], "gpt-4o\nmini\u{8}\u{c}\u{1}");
        assert!(v.get("error").is_none());
        assert!(ours.ends_with("}\n"));
    }

    /// The line of the gateway's access event, written from `AccessLine`'s types, is the
    /// line the fmt JSON formatter writes from the event: every field, in order, escaped,
    /// with and without the optional ones.
    #[test]
    fn access_line_written_ahead_is_the_fmt_json_formatters() {
        DIRECT.store(true, Ordering::Relaxed);
        let full = sample_line();
        let bare = AccessLine {
            latency_ms: f64::NAN,
            ..AccessLine::default()
        };
        for line in [full, bare] {
            let (ours, theirs) = both_lines(|| line.emit());
            let rest = |l: &str| l[l.find(r#""level""#).unwrap()..].to_string();
            assert_eq!(rest(&ours), rest(&theirs));
            // Taken: the next event of the target is written from its own fields.
            assert!(!FIELDS.with(|f| f.borrow().ready));
        }
    }

    /// The line written without an event (the subscriber's only taker of access events) is
    /// the line the layer writes from the event, and so the fmt JSON formatter's.
    #[test]
    fn an_access_line_written_alone_is_the_layers_line() {
        DIRECT.store(true, Ordering::Relaxed);
        let rest = |l: &str| l[l.find(r#""level""#).unwrap()..].to_string();
        for line in [sample_line(), AccessLine::default()] {
            let file = crate::telemetry::test_buf::FileLines::new();
            line.send(&file.writer, SystemTime::now());
            let alone = file.text();
            let (ours, theirs) = both_lines(|| line.emit());
            assert_eq!(alone.lines().count(), 1, "{alone}");
            assert_eq!(rest(&alone), rest(&ours));
            assert_eq!(rest(&alone), rest(&theirs));
            assert!(alone.starts_with(r#"{"timestamp":""#), "{alone}");
        }
    }

    /// A client's long path grows the thread's field buffer once; the next line gives it back.
    #[test]
    fn a_long_path_leaves_no_large_buffer_behind() {
        DIRECT.store(true, Ordering::Relaxed);
        let long = "/v1/".to_string() + &"x".repeat(100_000);
        let capacity = || FIELDS.with(|f| f.borrow().text.capacity());
        let (ours, _) = both_lines(|| {
            AccessLine {
                path: &long,
                ..AccessLine::default()
            }
            .emit()
        });
        assert!(ours.contains(&long));
        assert!(capacity() > MAX_KEPT_BUFFER);
        let (ours, _) = both_lines(|| AccessLine::default().emit());
        assert!(ours.contains(r#""path":"""#), "{ours}");
        assert!(capacity() <= MAX_KEPT_BUFFER, "{}", capacity());
    }
}
