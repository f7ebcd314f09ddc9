//! W3C trace context (`traceparent`, `tracestate`): read from the client's request, written on
//! the upstream request.
//!
//! One parser reads the client's `traceparent` ([`TraceParent::parse`]), with or without an
//! OpenTelemetry layer, so both modes continue exactly the same traces. Writing uses the W3C
//! propagator directly rather than the global one, so it works however the process's
//! OpenTelemetry globals are set up (tests and embedders build the stack without
//! [`init`](super::init)).
//!
//! # Without an OpenTelemetry layer
//!
//! When nothing is exported, [`init`](super::init) installs no OpenTelemetry layer (it costs
//! about a quarter of the bare gateway's throughput), so spans have no W3C ids. The access log
//! then keeps the trace going by hand: [`TraceContext::from_headers`] continues the client's
//! `traceparent` (or starts a new trace), the context rides along as a request extension (the
//! router copies extensions onto the upstream request), [`inject`] writes a `traceparent` with
//! a fresh span id for each upstream attempt, and [`trace_id`] names the trace in the log line.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    propagation::{Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context headers, named once (a name given as text is parsed at each use).
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Make `span` a child of the trace named by the request's `traceparent`, if it has a valid
/// one. Call before anything enters the span or creates a child of it.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let Some(tp) = headers
        .get(&TRACEPARENT)
        .and_then(|v| TraceParent::parse(v.as_bytes()))
    else {
        return;
    };
    // A malformed tracestate is dropped, the trace still continues (W3C: the two headers are
    // validated independently).
    let state = headers
        .get(&TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.parent_id),
        TraceFlags::new(tp.flags & 0x01),
        true,
        state,
    );
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// Write `span`'s context as `traceparent`/`tracestate` on an outgoing request, replacing what
/// the client sent (the upstream's parent is our span, not the client's). Without an
/// OpenTelemetry layer the `fallback` context (the request's [`TraceContext`] extension) is
/// written instead, with a new span id; with neither, the headers are left as they are.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap, fallback: Option<&TraceContext>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    } else if let Some(tc) = fallback {
        tc.inject_child(headers);
    }
}

/// The trace id of `span` as 32 lowercase hex digits; without an OpenTelemetry layer, the
/// `fallback` context's; `None` when there is neither.
pub fn trace_id(span: &tracing::Span, fallback: Option<&TraceContext>) -> Option<String> {
    let cx: Context = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if sc.is_valid() {
        Some(sc.trace_id().to_string())
    } else {
        fallback.map(TraceContext::trace_id_hex)
    }
}

/// A request's W3C trace context, kept by hand when no OpenTelemetry layer gives spans ids
/// (see the module docs). The access log makes one per request and carries it in its
/// [`RequestSlot`](super::access_log::RequestSlot) request extension.
///
/// `flags` keeps only the client's sampled bit (as the OpenTelemetry propagator does); a new
/// trace is not sampled (`00`): nothing is recorded here, and the upstream may decide itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The gateway's request span id (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags (`0x01`: sampled).
    pub flags: u8,
    /// Whether the trace was continued from the client's `traceparent` (so its `tracestate`
    /// belongs to it).
    pub continued: bool,
}

/// A parsed `traceparent`: trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The caller's span id.
    pub parent_id: [u8; 8],
    /// The caller's trace flags, as sent.
    pub flags: u8,
}

impl TraceParent {
    /// Parse a `traceparent` (`VV-<32 hex>-<16 hex>-<2 hex>`, lowercase), as W3C Trace
    /// Context level 1 says a receiver must: version `00` is exactly that; a later version
    /// (`01`..`fe`) is read the same way and may carry more fields after a `-`; `ff` is
    /// invalid. `None` for anything else: uppercase or non-hex digits, wrong lengths, an
    /// all-zero trace or parent id.
    ///
    /// The one parser of the gateway: the request span (with or without OpenTelemetry) and
    /// the hand-kept [`TraceContext`] both continue exactly the traces this accepts.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let v = value.trim_ascii();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut version = [0u8; 1];
        decode_hex(&v[..2], &mut version)?;
        match version[0] {
            0x00 if v.len() == 55 => {}
            0x00 | 0xff => return None,
            _ if v.len() == 55 || v[55] == b'-' => {}
            _ => return None,
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        decode_hex(&v[3..35], &mut trace_id)?;
        decode_hex(&v[36..52], &mut parent_id)?;
        decode_hex(&v[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags: flags[0],
        })
    }
}

impl TraceContext {
    /// Continue the trace of the request's `traceparent` if it is valid, else start a new one;
    /// either way with a new span id for the gateway's request span.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match headers
            .get(&TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_bytes()))
        {
            Some(tp) => Self {
                trace_id: tp.trace_id,
                span_id: new_span_id(),
                flags: tp.flags & 0x01,
                continued: true,
            },
            None => Self::new_trace(),
        }
    }

    /// A new trace (not sampled).
    pub fn new_trace() -> Self {
        let mut id = 0u128;
        while id == 0 {
            id = rand::random();
        }
        Self {
            trace_id: id.to_be_bytes(),
            span_id: new_span_id(),
            flags: 0,
            continued: false,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        portcullis_core::hash::to_hex(&self.trace_id)
    }

    /// The `traceparent` of a new child span (a fresh span id) of this context.
    pub fn child_traceparent(&self) -> HeaderValue {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        encode_hex(&self.trace_id, &mut buf[3..35]);
        encode_hex(&new_span_id(), &mut buf[36..52]);
        encode_hex(&[self.flags], &mut buf[53..55]);
        let v =
            HeaderValue::from_bytes(&buf).expect("hex digits and dashes are a valid header value");
        // A fresh span id on every request: never indexed by HTTP/2's header compression.
        portcullis_core::headers::never_indexed(v)
    }

    /// Write [`child_traceparent`](Self::child_traceparent) on an outgoing request. A
    /// `tracestate` stays only if it came with the `traceparent` this trace continues.
    pub fn inject_child(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT.clone(), self.child_traceparent());
        if !self.continued {
            headers.remove(&TRACESTATE);
        }
    }
}

impl fmt::Display for TraceContext {
    /// The request span's own `traceparent`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        encode_hex(&self.trace_id, &mut buf[3..35]);
        encode_hex(&self.span_id, &mut buf[36..52]);
        encode_hex(&[self.flags], &mut buf[53..55]);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = 0u64;
    while id == 0 {
        id = rand::random();
    }
    id.to_be_bytes()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// Lowercase hex only, as W3C trace context requires.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (pair, o) in hex.chunks_exact(2).zip(out.iter_mut()) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    #[test]
    fn a_valid_traceparent_parses() {
        let tp = TraceParent::parse(format!("00-{TRACE}-{PARENT}-01").as_bytes()).unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.trace_id[15], 0x36);
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags, 1);
        let tp = TraceParent::parse(format!(" 00-{TRACE}-{PARENT}-00 ").as_bytes()).unwrap();
        assert_eq!(tp.flags, 0);
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        for v in [
            format!("01-{TRACE}-{PARENT}-01"),
            format!("fe-{TRACE}-{PARENT}-01-what-comes-next"),
        ] {
            let tp = TraceParent::parse(v.as_bytes()).expect(&v);
            assert_eq!(tp.trace_id[0], 0x4b);
            assert_eq!(tp.flags, 1);
        }
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let bad = [
            String::new(),
            "garbage".into(),
            format!("ff-{TRACE}-{PARENT}-01"),
            format!("01-{TRACE}-{PARENT}-01x"),
            format!("00-{TRACE}-{PARENT}-01-extra"),
            format!("00-{TRACE}-{PARENT}-1"),
            format!("00-{TRACE}-{PARENT}-0g"),
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("00-{}-{PARENT}-01", &TRACE[1..]),
            format!("00-{TRACE}0-{PARENT}-01"),
            format!("00-{TRACE}-{}-01", &PARENT[1..]),
            format!("00-{TRACE}-{}x-01", &PARENT[1..]),
            format!("00_{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}_{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}_01"),
            format!("00-{}-{PARENT}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{PARENT}-01", "é".repeat(16)),
        ];
        for b in &bad {
            assert_eq!(TraceParent::parse(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn the_context_continues_or_starts_a_trace() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{TRACE}-{PARENT}-03")).unwrap(),
        );
        let tc = TraceContext::from_headers(&h);
        assert_eq!(tc.trace_id_hex(), TRACE);
        assert_ne!(tc.span_id, [0; 8]);
        assert_eq!(tc.flags, 1, "only the sampled bit is kept");
        assert!(tc.continued);
        let own = tc.to_string();
        assert!(own.starts_with(&format!("00-{TRACE}-")) && own.ends_with("-01"));
        assert!(!own.contains(PARENT));

        h.insert("traceparent", HeaderValue::from_static("00-nonsense"));
        let new = TraceContext::from_headers(&h);
        assert!(!new.continued);
        assert_eq!(new.flags, 0);
        assert_ne!(new.trace_id_hex(), TRACE);
        assert_eq!(new.trace_id_hex().len(), 32);
        assert_ne!(new.trace_id, TraceContext::new_trace().trace_id);
    }

    #[test]
    fn upstream_attempts_get_a_child_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{TRACE}-{PARENT}-01")).unwrap(),
        );
        h.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let tc = TraceContext::from_headers(&h);
        let mut out = h.clone();
        inject(&tracing::Span::none(), &mut out, Some(&tc));
        // A new span id on every attempt: never indexed by HTTP/2's header compression.
        assert!(out["traceparent"].is_sensitive());
        let sent = out["traceparent"].to_str().unwrap();
        let parsed = TraceParent::parse(sent.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id, tc.trace_id);
        assert_ne!(parsed.parent_id, tc.span_id, "each attempt is a new span");
        assert_eq!(parsed.flags, 1);
        assert_eq!(out["tracestate"], "vendor=x");

        // A new trace: the client's stray tracestate is not the new trace's.
        let tc = TraceContext::new_trace();
        let mut out = h.clone();
        tc.inject_child(&mut out);
        assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));
        assert!(out.get(&TRACESTATE).is_none());

        // Neither OpenTelemetry nor a fallback: the headers stay as they are.
        let mut out = h.clone();
        inject(&tracing::Span::none(), &mut out, None);
        assert_eq!(out, h);
        assert_eq!(trace_id(&tracing::Span::none(), None), None);
        assert_eq!(
            trace_id(&tracing::Span::none(), Some(&tc)),
            Some(tc.trace_id_hex())
        );
    }
}
