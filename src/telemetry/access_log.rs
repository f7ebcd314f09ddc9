//! The request span (HTTP server + GenAI semantic conventions), one access-log event and one
//! set of metrics per proxied request, with what every layer decided.
//!
//! The span and the log line are finished when the response body ends, not when its head is
//! ready: a stream's token usage arrives in its last events, and a stream's cost is its whole
//! duration. A body dropped early (the client went away) finishes them too, marked `aborted`.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::{trace::Status, KeyValue};
use pin_project_lite::pin_project;
use portcullis_core::{
    headers::{X_PORTCULLIS_UPSTREAM, X_REQUEST_ID},
    outcome::{BreakerState, CacheOutcome, RateLimitOutcome},
    pattern::{ModelPattern, PatternSet},
    usage::{Sniffer, Usage, UsageShare},
    ErrorCode, KeyName, RequestMeta, RouteInfo, UserId,
};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{
    json_log::AccessLine,
    propagation::{self, TraceContext},
};

/// Wraps the proxy stack: opens the request span (continuing the client's `traceparent`) and,
/// when the response body ends, records the GenAI attributes on it, logs
/// `method path model upstream status latency_ms ttfb_ms request_id attempts cache user_id
/// error trace_id input_tokens output_tokens` (target `portcullis::access`) and counts the
/// request in the `portcullis_*` metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        // Counters recorded before the recorder exists would be lost.
        let _ = super::metrics::handle();
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for AccessLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        // An audit layer inside claims this and scans the body's usage for both of us.
        let usage_share = UsageShare::default();
        req.extensions_mut().insert(usage_share.clone());
        // Shared, not copied: the URI's and the header's bytes are reference-counted.
        let uri = req.uri().clone();
        let path = uri.path();
        let method = req.method().clone();
        let request_id = req.headers().get(X_REQUEST_ID).cloned();
        let request_id_str = request_id.as_ref().map_or("", header_text);
        let (system, operation) = api_of(path);
        // The proxied paths are fixed routes, so the path is also the route (low cardinality).
        // Few tracing fields (pretty logs print them on every line inside the span); the
        // semantic-convention attributes go straight to OpenTelemetry.
        let span = tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {path}"),
            otel.kind = "server",
            request_id = %request_id_str,
        );
        propagation::continue_trace(&span, req.headers());
        // The hand-kept context, for when no OpenTelemetry layer gives the span W3C ids.
        let trace = TraceContext::from_headers(req.headers());
        // One extension for both: the slot and the trace context.
        let slot = RequestSlot::new(trace);
        req.extensions_mut().insert(slot.clone());
        if super::exported(&span) {
            let mut attrs = vec![
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_string()),
                KeyValue::new("http.route", path.to_string()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("gen_ai.system", system),
                KeyValue::new("gen_ai.provider.name", system),
                KeyValue::new("gen_ai.operation.name", operation),
            ];
            if let Some(ua) = req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                attrs.push(KeyValue::new("user_agent.original", ua.to_string()));
            }
            if let Some(axum::extract::ConnectInfo(addr)) =
                req.extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            {
                attrs.push(KeyValue::new("client.address", addr.ip().to_string()));
            }
            attrs.push(KeyValue::new(
                "network.protocol.version",
                version_str(req.version()),
            ));
            // After `continue_trace`: this starts the OpenTelemetry span, which takes its
            // parent as it starts.
            super::set_attributes(&span, attrs, None);
        }
        let fut = self.inner.call(req).instrument(span.clone());
        let started = Started {
            span,
            start,
            method,
            uri,
            request_id,
            slot,
            trace,
            usage_share,
        };
        // A map, not an async block: a block would keep the inner future twice in its state
        // (captured, then awaited), and every request's boxed future is copied whole.
        Box::pin(fut.map(move |result| {
            match result {
                Ok(resp) => {
                    let claimed = started.usage_share.is_claimed();
                    let finish = Finish::new(started, &resp);
                    let sniffer = if claimed {
                        None
                    } else {
                        Sniffer::for_response(resp.status(), resp.headers())
                    };
                    Ok(resp.map(|inner| {
                        Body::new(ObservedBody {
                            inner,
                            finish: Some(finish),
                            sniffer,
                        })
                    }))
                }
                Err(e) => {
                    // The rescue layer below makes this unreachable in the gateway; a bare
                    // stack still gets its log line.
                    let Started {
                        span,
                        method,
                        uri,
                        request_id,
                        ..
                    } = started;
                    let _enter = span.enter();
                    let request_id = request_id.as_ref().map_or("", header_text);
                    tracing::warn!(target: "portcullis::access", method = %method,
                        path = %uri.path(), request_id = %request_id,
                        "request failed without a response");
                    Err(e)
                }
            }
        }))
    }
}

/// The `gen_ai.system` and `gen_ai.operation.name` of a proxied path.
fn api_of(path: &str) -> (&'static str, &'static str) {
    if path.ends_with("/v1/messages") {
        ("anthropic", "chat")
    } else if path.ends_with("/v1/responses") {
        ("openai", "responses")
    } else if path.ends_with("/v1/embeddings") {
        ("openai", "embeddings")
    } else if path.ends_with("/v1/completions") && !path.ends_with("/chat/completions") {
        ("openai", "text_completion")
    } else {
        ("openai", "chat")
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A header value as text: empty when it is not visible ASCII (as before, when the text was
/// copied out at the start).
fn header_text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("")
}

/// What [`RecordRequestLayer`] saw of a request.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The requested model (the validation layer's [`RequestMeta`]).
    pub model: Option<Arc<str>>,
    /// The `[[models]]` entry that model matches (the metrics label).
    pub entry: Option<Arc<str>>,
    /// The memory user id ([`UserId`]).
    pub user_id: Option<Arc<str>>,
    /// The gateway key's name ([`KeyName`]), never the key.
    pub key: Option<Arc<str>>,
}

/// Where [`RecordRequestLayer`] leaves the requested model and user id for the access log,
/// for responses that carry no [`RouteInfo`] (cache hits, coalesced followers, rate-limit
/// refusals). A request extension that [`AccessLog`] inserts; cloning shares the slot.
///
/// It also carries the request's hand-kept [`TraceContext`], which the upstream attempts read
/// for their `traceparent` (one extension instead of two on every request).
#[derive(Debug, Clone, Default)]
pub struct RequestSlot {
    recorded: Arc<OnceLock<Recorded>>,
    trace: Option<TraceContext>,
}

impl RequestSlot {
    /// A slot for a request with this trace context.
    pub(crate) fn new(trace: TraceContext) -> Self {
        Self {
            recorded: Arc::default(),
            trace: Some(trace),
        }
    }

    /// What was recorded, if anything.
    pub fn get(&self) -> Option<&Recorded> {
        self.recorded.get()
    }

    /// The request's hand-kept trace context (see [`propagation`]).
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
}

/// Copies the validation layer's [`RequestMeta`] model and the memory user id into the access
/// log's [`RequestSlot`]. Stack it right inside the memory-routing layer (after validation),
/// so that responses made above the model router (cache hits, rate-limit refusals) are still
/// logged, traced and counted under their model and user.
///
/// It also knows the configured model names, so a response made above the router is counted
/// under its `[[models]]` entry like a routed one (metrics labels come from config only).
/// Cloning shares the names.
#[derive(Debug, Clone, Default)]
pub struct RecordRequestLayer {
    entries: Arc<PatternSet<Arc<str>>>,
}

impl RecordRequestLayer {
    /// Label requests with these `[[models]]` names (exact, `prefix*` or `*`).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            entries: Arc::new(
                names
                    .into_iter()
                    .map(|n| (ModelPattern::parse(n), Arc::<str>::from(n)))
                    .collect(),
            ),
        }
    }
}

impl<S> Layer<S> for RecordRequestLayer {
    type Service = RecordRequest<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecordRequest {
            inner,
            entries: self.entries.clone(),
        }
    }
}

/// See [`RecordRequestLayer`].
#[derive(Debug, Clone)]
pub struct RecordRequest<S> {
    inner: S,
    entries: Arc<PatternSet<Arc<str>>>,
}

impl<S, B> Service<Request<B>> for RecordRequest<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ext = req.extensions();
        if let Some(slot) = ext.get::<RequestSlot>() {
            let model = ext.get::<RequestMeta>().and_then(|m| m.model.clone());
            let entry = model
                .as_deref()
                .and_then(|m| self.entries.lookup(m))
                .cloned();
            let _ = slot.recorded.set(Recorded {
                model,
                entry,
                key: ext.get::<KeyName>().map(|k| k.0.clone()),
                user_id: ext.get::<UserId>().map(|u| u.0.clone()),
            });
        }
        self.inner.call(req)
    }
}

/// What the request brought, kept until its response.
#[derive(Debug)]
struct Started {
    span: tracing::Span,
    start: Instant,
    method: http::Method,
    /// Its path is the access line's.
    uri: http::Uri,
    request_id: Option<HeaderValue>,
    slot: RequestSlot,
    trace: TraceContext,
    usage_share: UsageShare,
}

/// Everything known when the response head is ready, kept until the body ends.
#[derive(Debug)]
struct Finish {
    span: tracing::Span,
    start: Instant,
    ttfb: Duration,
    method: http::Method,
    uri: http::Uri,
    request_id: Option<HeaderValue>,
    status: StatusCode,
    route: Option<RouteInfo>,
    cache: Option<CacheOutcome>,
    rate_limit: Option<RateLimitOutcome>,
    key: Option<Arc<str>>,
    error: Option<&'static str>,
    stream: bool,
    trace: TraceContext,
    /// Filled by an inner audit layer when it claimed it (then there is no sniffer here).
    usage_share: UsageShare,
}

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Failed,
    Aborted,
}

impl Finish {
    fn new(started: Started, resp: &Response<Body>) -> Self {
        let Started {
            span,
            start,
            method,
            uri,
            request_id,
            slot,
            trace,
            usage_share,
        } = started;
        let ttfb = start.elapsed();
        let status = resp.status();
        let key = slot.get().and_then(|r| r.key.clone());
        let route = resp.extensions().get::<RouteInfo>().cloned().or_else(|| {
            // Not routed here: a cache hit, a coalesced follower, or a refusal. The model
            // comes from the validation layer's parse, the upstream from the response header.
            let recorded = slot.get().cloned().unwrap_or_default();
            let upstream = header_str(resp.headers(), &X_PORTCULLIS_UPSTREAM);
            if recorded.model.is_none() && upstream.is_none() {
                return None;
            }
            Some(RouteInfo {
                model: recorded.model.unwrap_or_else(|| "".into()),
                entry: recorded.entry,
                upstream: upstream.unwrap_or("").into(),
                attempts: 0,
                user_id: recorded.user_id,
            })
        });
        // What the layers decided, as they recorded it (typed extensions, never headers an
        // upstream could have sent).
        let ext = resp.extensions();
        let cache = ext.get::<CacheOutcome>().copied();
        let rate_limit = ext.get::<RateLimitOutcome>().copied();
        let breaker = ext.get::<BreakerState>().copied();
        let error = resp.extensions().get::<ErrorCode>().map(|e| e.0);
        let stream = header_str(resp.headers(), &header::CONTENT_TYPE)
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        // What is known at the head goes on the span now: a stream that never ends still
        // shows where it went.
        if super::exported(&span) {
            let mut attrs = vec![KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            )];
            if let Some(r) = &route {
                if !r.model.is_empty() {
                    attrs.push(KeyValue::new("gen_ai.request.model", r.model.to_string()));
                }
                if !r.upstream.is_empty() {
                    attrs.push(KeyValue::new("portcullis.upstream", r.upstream.to_string()));
                }
                attrs.push(KeyValue::new("portcullis.attempts", i64::from(r.attempts)));
                if let Some(u) = &r.user_id {
                    attrs.push(KeyValue::new("portcullis.user_id", u.to_string()));
                }
            }
            if let Some(c) = cache {
                attrs.push(KeyValue::new("portcullis.cache", c.as_str()));
            }
            if let Some(k) = &key {
                attrs.push(KeyValue::new("portcullis.key", k.to_string()));
            }
            if let Some(r) = rate_limit {
                attrs.push(KeyValue::new("portcullis.rate_limit", r.as_str()));
            }
            if let Some(b) = breaker {
                attrs.push(KeyValue::new("portcullis.circuit", b.as_str()));
            }
            if let Some(code) = error {
                attrs.push(KeyValue::new("portcullis.error", code));
            }
            let mut failed = None;
            if status.is_server_error() {
                let kind = error.map_or_else(|| status.as_u16().to_string(), str::to_string);
                attrs.push(KeyValue::new("error.type", kind.clone()));
                failed = Some(Status::error(kind));
            }
            attrs.push(KeyValue::new("portcullis.stream", stream));
            super::set_attributes(&span, attrs, failed);
        }
        Self {
            span,
            start,
            ttfb,
            method,
            uri,
            request_id,
            status,
            route,
            cache,
            rate_limit,
            key,
            error,
            stream,
            trace,
            usage_share,
        }
    }

    fn complete(self, usage: Option<Usage>, ending: Ending) {
        let latency = self.start.elapsed();
        // Its own scan, else the audit layer's (read in place), else none.
        let none;
        let usage = match (&usage, self.usage_share.get()) {
            (Some(u), _) | (None, Some(u)) => u,
            (None, None) => {
                none = Usage::default();
                &none
            }
        };
        let model = self.route.as_ref().map_or("", |r| &*r.model);
        let upstream = self.route.as_ref().map_or("", |r| &*r.upstream);
        let attempts = self.route.as_ref().map_or(0, |r| r.attempts);
        let user_id = self.route.as_ref().and_then(|r| r.user_id.as_deref());
        let span = &self.span;
        if super::exported(span) {
            let attrs = [
                (usage.response_model.as_ref())
                    .map(|m| KeyValue::new("gen_ai.response.model", m.clone())),
                (usage.response_id.as_ref())
                    .map(|id| KeyValue::new("gen_ai.response.id", id.clone())),
                (usage.input_tokens).map(|n| KeyValue::new("gen_ai.usage.input_tokens", clamp(n))),
                (usage.output_tokens)
                    .map(|n| KeyValue::new("gen_ai.usage.output_tokens", clamp(n))),
                (ending != Ending::Complete)
                    .then(|| KeyValue::new("portcullis.body", ending.as_str())),
            ];
            super::set_attributes(span, attrs.into_iter().flatten(), None);
        }
        let trace_id = propagation::trace_id(span, Some(&self.trace));
        let status = self.status.as_u16();
        let line = AccessLine {
            method: self.method.as_str(),
            path: self.uri.path(),
            model,
            upstream,
            status,
            latency_ms: millis(latency),
            ttfb_ms: millis(self.ttfb),
            request_id: self.request_id.as_ref().map_or("", header_text),
            attempts,
            cache: self.cache.map_or("", CacheOutcome::as_str),
            user_id: user_id.unwrap_or(""),
            key: self.key.as_deref().unwrap_or(""),
            error: self.error,
            trace_id: trace_id.as_deref(),
            stream: self.stream,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            body: (ending != Ending::Complete).then(|| ending.as_str()),
        };
        span.in_scope(|| line.emit());
        // Metrics are labelled with configured names only: a client cannot grow `/metrics`.
        let entry = self
            .route
            .as_ref()
            .and_then(|r| r.entry.as_deref())
            .unwrap_or("other");
        self.count(entry, upstream, attempts, latency, usage);
    }

    fn count(&self, model: &str, upstream: &str, attempts: u32, latency: Duration, usage: &Usage) {
        let h = RouteMetrics::get(model, upstream, self.status.as_u16());
        h.requests.increment(1);
        h.duration.record(latency.as_secs_f64());
        h.ttfb.record(self.ttfb.as_secs_f64());
        if attempts > 0 {
            h.attempts.increment(u64::from(attempts));
        }
        if attempts > 1 {
            h.retries.increment(u64::from(attempts - 1));
        }
        if self.rate_limit == Some(RateLimitOutcome::Limited) {
            metrics::counter!("portcullis_rate_limited_total").increment(1);
        }
        // Replayed and shared responses cost the upstream nothing: only calls that reached it
        // count as tokens spent.
        let spent = !matches!(
            self.cache,
            Some(CacheOutcome::Hit | CacheOutcome::Coalesced)
        );
        if spent {
            if let Some(n) = usage.input_tokens {
                h.input_tokens.increment(n);
            }
            if let Some(n) = usage.output_tokens {
                h.output_tokens.increment(n);
            }
        }
    }
}

/// The metric handles of one (model entry, upstream, status): registered once, then reused,
/// so counting a request builds no label strings and looks nothing up in the recorder. The
/// labels come from config (and status codes), so the table stays small.
struct RouteMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    ttfb: metrics::Histogram,
    attempts: metrics::Counter,
    retries: metrics::Counter,
    input_tokens: metrics::Counter,
    output_tokens: metrics::Counter,
}

/// model entry -> upstream -> status (nested so a lookup borrows the names). foldhash: the
/// names come from config, and each request looks them up.
type RouteTable = foldhash::HashMap<
    Box<str>,
    foldhash::HashMap<Box<str>, foldhash::HashMap<u16, Arc<RouteMetrics>>>,
>;

/// At most this many (entry, upstream, status) handle sets are kept; past it (only a config
/// with thousands of names could get there) handles are registered per request instead.
const MAX_ROUTE_METRICS: usize = 4096;

static ROUTE_METRICS: std::sync::LazyLock<std::sync::RwLock<(RouteTable, usize)>> =
    std::sync::LazyLock::new(Default::default);

impl RouteMetrics {
    fn new(model: &str, upstream: &str, status: u16) -> Self {
        let model = model.to_string();
        let upstream = upstream.to_string();
        Self {
            requests: metrics::counter!(
                "portcullis_requests_total",
                "model" => model.clone(),
                "upstream" => upstream.clone(),
                "status" => status.to_string()
            ),
            duration: metrics::histogram!(
                "portcullis_request_duration_seconds",
                "model" => model.clone(),
                "upstream" => upstream.clone()
            ),
            ttfb: metrics::histogram!(
                "portcullis_time_to_first_byte_seconds",
                "model" => model.clone(),
                "upstream" => upstream.clone()
            ),
            attempts: metrics::counter!(
                "portcullis_upstream_attempts_total",
                "upstream" => upstream.clone()
            ),
            retries: metrics::counter!(
                "portcullis_upstream_retries_total",
                "upstream" => upstream
            ),
            input_tokens: metrics::counter!(
                "portcullis_tokens_total", "model" => model.clone(), "type" => "input"
            ),
            output_tokens: metrics::counter!(
                "portcullis_tokens_total", "model" => model, "type" => "output"
            ),
        }
    }

    fn get(model: &str, upstream: &str, status: u16) -> Arc<Self> {
        {
            let table = ROUTE_METRICS.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = table
                .0
                .get(model)
                .and_then(|u| u.get(upstream))
                .and_then(|s| s.get(&status))
            {
                return h.clone();
            }
        }
        let h = Arc::new(Self::new(model, upstream, status));
        let mut guard = ROUTE_METRICS.write().unwrap_or_else(|p| p.into_inner());
        let (table, len) = &mut *guard;
        if *len < MAX_ROUTE_METRICS {
            let slot = table
                .entry(model.into())
                .or_default()
                .entry(upstream.into())
                .or_default()
                .entry(status);
            if let std::collections::hash_map::Entry::Vacant(v) = slot {
                v.insert(h.clone());
                *len += 1;
            }
        }
        h
    }
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

/// Milliseconds with microsecond precision: `63.886`, not `63.88618999999999`.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pin_project! {
    /// The response body, passed through unchanged while GenAI usage is read from it; holds
    /// the request span open until it ends.
    struct ObservedBody {
        #[pin]
        inner: Body,
        finish: Option<Finish>,
        sniffer: Option<Sniffer>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if let Some(f) = this.finish.take() {
                // A body that was empty from the start may be dropped without being polled.
                let ending = if this.inner.is_end_stream() { Ending::Complete } else { Ending::Aborted };
                // An audit layer's body inside fills the usage share when it goes: first.
                this.inner.set(Body::empty());
                f.complete(this.sniffer.take().map(Sniffer::finish), ending);
            }
        }
    }
}

impl ObservedBody {
    fn end(self: Pin<&mut Self>, ending: Ending) {
        let this = self.project();
        if let Some(f) = this.finish.take() {
            f.complete(this.sniffer.take().map(Sniffer::finish), ending);
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.as_mut().project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(s), Some(d)) = (this.sniffer.as_mut(), frame.data_ref()) {
                    s.feed(d);
                }
                if self.inner.is_end_stream() {
                    self.end(Ending::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(Ending::Failed),
            Poll::Ready(None) => self.end(Ending::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
