//! W3C trace context (`traceparent`, `tracestate`): read from the client's request, written on
//! the upstream request.
//!
//! The W3C propagator is used directly rather than the global one, so the gateway continues a
//! client's trace however the process's OpenTelemetry globals are set up (tests and embedders
//! build the stack without [`init`](super::init)).

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
    Context,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

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
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
        let _ = span.set_parent(cx);
    }
}

/// Write `span`'s context as `traceparent`/`tracestate` on an outgoing request, replacing what
/// the client sent (the upstream's parent is our span, not the client's). Without an
/// OpenTelemetry layer the headers are left as they are, so the client's context still flows.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// The trace id of `span` as 32 lowercase hex digits, or `None` when it has none.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx: Context = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
