//! The model router: picks the `[[models]]` entry for the body's `model`, rewrites it, sends
//! the request to that entry's upstream stack, and fails over to `fallbacks` in order.
//!
//! Entries sharing a name are one model's deployments ([`balance`](super::balance)): a request
//! goes to the available deployment whose turn it is by weight, a failed attempt moves on to
//! the model's other deployments, and only then to its `fallbacks`.

use std::{
    future::{Future, Ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use futures_util::{
    future::{BoxFuture, Either},
    TryFutureExt as _,
};
use http::{header, HeaderValue, Request, Response};
use portcullis_core::{
    body::collect_limited,
    error::find_in_chain,
    headers::{int_value, X_PORTCULLIS_ATTEMPTS, X_PORTCULLIS_UPSTREAM},
    json_skim,
    pattern::{ModelPattern, PatternSet},
    Attempts, CircuitOpen, RequestMeta, RouteInfo, UserId,
};
use smallvec::SmallVec;
use tower::{util::BoxCloneSyncService, BoxError, Service, ServiceExt};

use super::stream_end::{stream_api, StreamEnd};
use super::{
    balance::Deployments,
    client::{UpstreamConnectError, UpstreamTimeout},
    health::UpstreamStatus,
    prepare::Upstream,
};

/// The per-upstream service (retry -> breaker -> cookies -> client).
pub type UpstreamService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// No `[[models]]` entry matches the requested model.
#[derive(Debug, Clone, thiserror::Error)]
#[error("model {model:?} is not configured; configured models: {}", configured.join(", "))]
pub struct ModelNotFound {
    /// What the client asked for.
    pub model: String,
    /// Configured model names.
    pub configured: Vec<String>,
}

/// The body has no usable `model` (only reachable when validation is off).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MissingModel(pub String);

/// The upstream answered an HTML page where an API answer was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UpstreamHtml {
    /// The `[[upstreams]]` name of the upstream that sent the page.
    pub upstream: String,
    /// The upstream's status.
    pub status: u16,
    /// Cloudflare's error code, e.g. 1200.
    pub cf_error: Option<u32>,
    /// Cloudflare's ray id.
    pub cf_ray: Option<String>,
    /// The page's `<title>`.
    pub title: Option<String>,
}

impl UpstreamHtml {
    fn describe(&self) -> String {
        let mut s = format!(
            "upstream {:?} answered an HTML page instead of JSON (status {}",
            self.upstream, self.status
        );
        if let Some(c) = self.cf_error {
            s.push_str(&format!(", Cloudflare error code {c}"));
        }
        if let Some(r) = &self.cf_ray {
            s.push_str(&format!(", cf-ray {r}"));
        }
        s.push(')');
        if let Some(t) = &self.title {
            s.push_str(&format!(": {t}"));
        }
        s
    }
}

/// An error that happened after a route was chosen: carries what the error response and its
/// log line need (the upstream that failed last, attempts over all candidates).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RoutedError {
    /// Where the request went.
    pub route: RouteInfo,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

/// One model name clients may ask for, as the router sees it (built from a `[[models]]`
/// entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// What clients ask for: exact, `prefix*`, or `*`.
    pub name: String,
    /// The upstream that serves it.
    pub upstream: String,
    /// The model name sent upstream instead of the client's.
    pub model: Option<String>,
    /// Other model names tried in order when this one fails.
    pub fallbacks: Vec<String>,
    /// This deployment's share among the entries with the same name.
    pub weight: u32,
    /// Body defaults merged in before sending (the client's own values win).
    pub params: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Extra request headers for this model.
    pub headers: Arc<[(http::HeaderName, HeaderValue)]>,
}

pub(super) struct Entry {
    pub(super) upstream: Upstream,
    pub(super) service: UpstreamService,
    strip_set_cookie: bool,
    /// Breaker and active health: whether the balancer may pick it.
    status: UpstreamStatus,
}

pub(super) struct Inner {
    /// Model names to their deployments: exact names win, then the longest `prefix*`, then `*`.
    pub(super) models: PatternSet<Deployments>,
    /// Keyed by config names (foldhash: every request looks one up).
    pub(super) upstreams: foldhash::HashMap<String, Entry>,
    /// Statuses after which another candidate is tried.
    failover_on: Vec<u16>,
    pub(super) max_body_bytes: usize,
    /// The first upstream (config order) that speaks Anthropic's API, if any.
    pub(super) anthropic: Option<String>,
    /// The first upstream the gateway translates for (`api` not `any`): it answers for the
    /// Responses the gateway keeps (every such upstream shares the one store).
    pub(super) translated: Option<String>,
}

impl Inner {
    pub(super) fn model_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|(_, d)| d.first().name.clone())
            .collect()
    }
}

/// The model router (a `tower::Service`). Cloning shares the tables.
#[derive(Clone)]
pub struct ModelRouter {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for ModelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouter")
            .field("models", &self.inner.models.len())
            .field("upstreams", &self.inner.upstreams.len())
            .finish()
    }
}

/// Builder input for one upstream.
#[derive(Debug)]
pub struct UpstreamRoute {
    /// How a request is rewritten for this upstream (URL, credentials, headers).
    pub upstream: Upstream,
    /// Its service stack.
    pub service: UpstreamService,
    /// Strip `Set-Cookie` from responses (the jar keeps them).
    pub strip_set_cookie: bool,
    /// Its breaker and active health check, which take it out of rotation.
    pub status: UpstreamStatus,
    /// Anthropic's own API (see `UpstreamConfig::speaks_anthropic`): the first such upstream
    /// takes model-less Anthropic requests on pass-through paths.
    pub speaks_anthropic: bool,
    /// The gateway translates for it (`api` is `openai` or `anthropic`): the first such
    /// upstream takes the model-less requests for the Responses the gateway keeps.
    pub translated: bool,
}

impl ModelRouter {
    /// Build the router.
    pub fn new(
        models: Vec<ModelRoute>,
        upstreams: Vec<UpstreamRoute>,
        failover_on: Vec<u16>,
        max_body_bytes: usize,
    ) -> Self {
        let anthropic = upstreams
            .iter()
            .find(|r| r.speaks_anthropic)
            .map(|r| r.upstream.name.to_string());
        let translated = upstreams
            .iter()
            .find(|r| r.translated)
            .map(|r| r.upstream.name.to_string());
        let upstreams = upstreams
            .into_iter()
            .map(|r| {
                (
                    r.upstream.name.to_string(),
                    Entry {
                        upstream: r.upstream,
                        service: r.service,
                        strip_set_cookie: r.strip_set_cookie,
                        status: r.status,
                    },
                )
            })
            .collect();
        // Entries sharing a name become one model's deployments, in config order; the model
        // keeps the place of its first entry.
        let mut grouped: Vec<(String, Vec<ModelRoute>)> = Vec::new();
        for m in models {
            match grouped.iter_mut().find(|(n, _)| *n == m.name) {
                Some((_, d)) => d.push(m),
                None => grouped.push((m.name.clone(), vec![m])),
            }
        }
        Self {
            inner: Arc::new(Inner {
                models: grouped
                    .into_iter()
                    .map(|(name, mut d)| {
                        // The fallbacks are the model's: a deployment that leaves them unset
                        // shares those of one that sets them (`check` refuses a conflict).
                        if let Some(f) = d
                            .iter()
                            .map(|r| r.fallbacks.clone())
                            .find(|f| !f.is_empty())
                        {
                            for r in &mut d {
                                r.fallbacks = f.clone();
                            }
                        }
                        (ModelPattern::parse(&name), Deployments::new(d))
                    })
                    .collect(),
                upstreams,
                failover_on,
                max_body_bytes,
                anthropic,
                translated,
            }),
        }
    }

    /// Configured model names, in config order.
    pub fn model_names(&self) -> Vec<String> {
        self.inner.model_names()
    }

    /// The `[[models]]` entry for a requested model: exact name, else the longest matching
    /// `prefix*`, else `*` (its first deployment when it has several).
    pub fn resolve(&self, model: &str) -> Option<&ModelRoute> {
        self.inner.models.lookup(model).map(Deployments::first)
    }

    /// `GET /v1/models` in OpenAI's list shape.
    pub fn models_json(&self) -> serde_json::Value {
        let data: Vec<_> = self
            .inner
            .models
            .iter()
            .map(|(_, d)| {
                let m = d.first();
                serde_json::json!({
                    "id": m.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": m.upstream,
                })
            })
            .collect();
        serde_json::json!({ "object": "list", "data": data })
    }

    /// The request template and service stack of the upstream named `name`, for requests the
    /// gateway makes on its own behalf (`GET /v1/models`, WebSocket handshakes).
    pub fn upstream(&self, name: &str) -> Option<(&Upstream, &UpstreamService)> {
        self.inner
            .upstreams
            .get(name)
            .map(|e| (&e.upstream, &e.service))
    }
}

/// Replace the body's `model` with `model`; the rest of the body is kept as parsed.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Bytes, serde_json::Error> {
    prepare_body(body, Some(model), None)
}

/// The body sent upstream: `model` replaced when given, `params` merged in under the client's
/// own values (objects key by key, so `thinking = { budget_tokens = 4096 }` fills in what the
/// client's `thinking` lacks). One parse and one write whatever is changed.
///
/// A model alone is written in place of the body's (the rest of it kept byte for byte) where
/// the skim finds one `model` member at the top; otherwise the body is read into a `Value`, but
/// not a body of more than `json_skim::MAX_VALUES` values (a `Value` of five million of them,
/// a 10 MB body's worth, takes ~300 MB).
pub fn prepare_body(
    body: &[u8],
    model: Option<&str>,
    params: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<Bytes, serde_json::Error> {
    if let (Some(model), None) = (model, params) {
        if let Some(spliced) = splice_model(body, model) {
            return Ok(spliced);
        }
    }
    if json_skim::more_values_than(body, json_skim::MAX_VALUES) {
        return Err(<serde_json::Error as serde::de::Error>::custom(format!(
            "more than {} JSON values, too many to rewrite",
            json_skim::MAX_VALUES
        )));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(model) = model {
            obj.insert("model".into(), serde_json::Value::String(model.into()));
        }
        if let Some(params) = params {
            merge_defaults(obj, params);
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&v)?))
}

/// `body` with the value of its one top-level `model` member replaced by `model` (a JSON
/// string), the rest as it came; `None` where the skim cannot say (not an object, a key with
/// an escape, no `model` or more than one), and the caller parses.
fn splice_model(body: &[u8], model: &str) -> Option<Bytes> {
    let start = json_skim::ws(body, 0);
    if body.get(start) != Some(&b'{') {
        return None;
    }
    let mut found = SmallVec::<[(usize, usize); 1]>::new();
    let end = json_skim::object_reading(body, start, |key, from| {
        let to = json_skim::skip_value(body, from)?;
        if key == b"model" {
            found.push((from, to));
        }
        Some(to)
    })?;
    let [(from, to)] = found[..] else {
        return None;
    };
    if json_skim::ws(body, end) != body.len() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + model.len() + 2);
    out.extend_from_slice(body.get(..from)?);
    portcullis_core::json_escape::write_str(&mut out, model);
    out.extend_from_slice(body.get(to..)?);
    Some(Bytes::from(out))
}

fn merge_defaults(
    into: &mut serde_json::Map<String, serde_json::Value>,
    defaults: &serde_json::Map<String, serde_json::Value>,
) {
    for (k, d) in defaults {
        match into.get_mut(k) {
            None => {
                into.insert(k.clone(), d.clone());
            }
            Some(serde_json::Value::Object(mine)) => {
                if let serde_json::Value::Object(d) = d {
                    merge_defaults(mine, d);
                }
            }
            // The client's own value wins.
            Some(_) => {}
        }
    }
}

/// The model and stream flag of a body no layer above has parsed (validation off, or a
/// path it does not check), with the one parser of `portcullis_core::meta`.
fn model_from_body(body: &[u8]) -> Result<RequestMeta, MissingModel> {
    match portcullis_core::meta::parse(body) {
        None => Err(MissingModel("request body is not a JSON object".into())),
        Some(m) if m.model.is_none() => Err(MissingModel(
            "model: is required and must be a string".into(),
        )),
        Some(m) => Ok(m),
    }
}

impl Service<Request<Body>> for ModelRouter {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per upstream and checked when the candidate is known (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(route(inner, req))
    }
}

// The request-path futures below are async blocks returned by plain functions, not `async fn`s:
// an `async fn` keeps its arguments twice in its state (as arguments and as the locals they
// become), and every request's boxed future is copied and carried whole.
// `route` is a chain, not one block: a block keeps what it captures (the request's parts) to
// its end, beside `route_model`'s state, which holds them again.
fn route(
    inner: Arc<Inner>,
    req: Request<Body>,
) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send {
    let (parts, body) = req.into_parts();
    let limit = inner.max_body_bytes;
    collect_limited(body, limit)
        .err_into::<BoxError>()
        .and_then(move |bytes| {
            // A layer above (validation) has read the body already; without one, read it
            // here. A request validation let through without a model (a Responses API call
            // naming a stored prompt instead) goes where "" resolves: the `*` model.
            let requested = match parts.extensions.get::<RequestMeta>() {
                Some(m) => m.model.clone(),
                None => match model_from_body(&bytes) {
                    Ok(m) => m.model,
                    Err(e) => return Either::Left(std::future::ready(Err(e.into()))),
                },
            }
            .unwrap_or_else(|| "".into());
            Either::Right(route_model(inner, parts, bytes, requested))
        })
}

/// Send a buffered body to the model's upstream, failing over to its fallbacks.
#[allow(clippy::manual_async_fn)] // see `route`
pub(super) fn route_model(
    inner: Arc<Inner>,
    mut parts: http::request::Parts,
    bytes: Bytes,
    requested: Arc<str>,
) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send {
    async move {
        let inner = &*inner;
        let not_found = || -> BoxError {
            Box::new(ModelNotFound {
                model: requested.to_string(),
                configured: inner.model_names(),
            })
        };
        let Some(first) = inner.models.lookup(&requested) else {
            return Err(not_found());
        };
        // Inline (no allocation) for a model with up to three fallbacks.
        let mut chain: SmallVec<[&Deployments; 4]> = smallvec::smallvec![first];
        for f in &first.first().fallbacks {
            if let Some(m) = inner.models.get(&ModelPattern::parse(f)) {
                chain.push(m);
            }
        }
        let path_and_query = parts.uri.path_and_query().cloned();
        let mut attempts = 0u32;
        let user_id = parts.extensions.get::<UserId>().map(|u| u.0.clone());
        let route_info = |upstream: &Arc<str>, attempts: u32| RouteInfo {
            model: requested.clone(),
            entry: Some(first.name().clone()),
            upstream: upstream.clone(),
            attempts,
            user_id: user_id.clone(),
        };
        let available = |r: &ModelRoute| {
            inner
                .upstreams
                .get(&r.upstream)
                .is_some_and(|u| u.status.available())
        };
        // Deployments out of rotation (open breaker, failing health check) are skipped. If every
        // deployment of the model and of its fallbacks is out, they are all tried anyway, in the
        // usual order: a guess that they recovered beats failing without trying.
        let any_available = chain.iter().any(|d| d.routes().iter().any(&available));
        let candidates: SmallVec<[(usize, &ModelRoute); 4]> = chain
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                d.order(available, !any_available)
                    .into_iter()
                    .map(move |j| (i, &d.routes()[j]))
            })
            .collect();
        let last = candidates.len().saturating_sub(1);
        for (n, (i, entry)) in candidates.into_iter().enumerate() {
            let Some(up) = inner.upstreams.get(&entry.upstream) else {
                continue; // validated at load; unreachable in practice
            };
            // The model sent upstream: the entry's rewrite, else for a fallback its own name.
            let send_model = match &entry.model {
                Some(m) => Some(m.as_str()),
                None if i > 0 && !entry.name.contains('*') => Some(entry.name.as_str()),
                None => None,
            };
            let rewrite = send_model.filter(|m| *m != &*requested);
            let body = match (rewrite, &entry.params) {
                (None, None) => bytes.clone(),
                (model, params) => prepare_body(&bytes, model, params.as_deref())?,
            };
            let upstream_req = upstream_request(
                up,
                entry,
                &mut parts,
                n == last,
                path_and_query.as_ref(),
                body,
            )?;
            tracing::debug!(upstream = %up.upstream.name, model = %requested, candidate = n, "routing");
            match up.service.clone().oneshot(upstream_req).await {
                Ok(resp) => {
                    attempts = attempts.saturating_add(attempts_made(&resp));
                    let status = resp.status().as_u16();
                    if n < last && inner.failover_on.contains(&status) {
                        tracing::info!(upstream = %up.upstream.name, status, "failing over to the next deployment or fallback");
                        continue;
                    }
                    let path = parts.uri.path();
                    return up
                        .answer(resp, route_info(&up.upstream.name, attempts), |_| true)
                        .await
                        .map(|r| end_streams_loudly(r, path));
                }
                Err(e) => {
                    attempts = attempts.saturating_add(attempts_failed(&*e));
                    let failover = find_in_chain::<CircuitOpen>(&*e).is_some()
                        || find_in_chain::<UpstreamConnectError>(&*e).is_some()
                        || find_in_chain::<UpstreamTimeout>(&*e).is_some();
                    if n < last && failover {
                        tracing::info!(upstream = %up.upstream.name, error = %e, "failing over to the next deployment or fallback");
                        continue;
                    }
                    return Err(Box::new(RoutedError {
                        route: route_info(&up.upstream.name, attempts),
                        source: e,
                    }));
                }
            }
        }
        Err(not_found())
    }
}

/// The request for one candidate. The last candidate takes the client's headers and
/// extensions instead of a copy (with one deployment and no fallback, the only one: no copy
/// at all). A function of its own, so that what it builds is not kept in the routing future.
fn upstream_request(
    up: &Entry,
    entry: &ModelRoute,
    parts: &mut http::request::Parts,
    last: bool,
    path_and_query: Option<&http::uri::PathAndQuery>,
    body: Bytes,
) -> Result<Request<Body>, BoxError> {
    let (mut headers, extensions) = if last {
        (
            std::mem::take(&mut parts.headers),
            std::mem::take(&mut parts.extensions),
        )
    } else {
        (parts.headers.clone(), parts.extensions.clone())
    };
    up.upstream.prepare_headers(&mut headers);
    for (n, v) in entry.headers.iter() {
        headers.insert(n.clone(), v.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = up.upstream.uri_of(path_and_query)?;
    *req.headers_mut() = headers;
    *req.extensions_mut() = extensions;
    Ok(req)
}

/// Upstream attempts behind a response: the retry layer's count, one without it. Never a
/// header: an upstream could send one.
pub(super) fn attempts_made(resp: &Response<Body>) -> u32 {
    resp.extensions().get::<Attempts>().map_or(1, |a| a.0)
}

/// Upstream attempts behind an error: the retry layer's count; none when the breaker
/// refused the call, one otherwise.
pub(super) fn attempts_failed(e: &(dyn std::error::Error + 'static)) -> u32 {
    find_in_chain::<portcullis_retry::Attempted>(e)
        .map(|a| a.attempts)
        .unwrap_or(if find_in_chain::<CircuitOpen>(e).is_some() {
            0
        } else {
            1
        })
}

/// [`Entry::answer`]'s future: ready at once, or reading an HTML page.
pub(super) type Answer = Either<
    Ready<Result<Response<Body>, BoxError>>,
    BoxFuture<'static, Result<Response<Body>, BoxError>>,
>;

impl Entry {
    /// The upstream's answer as the client gets it: an HTML page (where `html_is_error` says
    /// the status calls for JSON) becomes a 502 naming what the page says; the jar keeps
    /// `Set-Cookie`; `x-portcullis-upstream` and `-attempts` say where it went.
    pub(super) fn answer(
        &self,
        mut resp: Response<Body>,
        route: RouteInfo,
        html_is_error: impl Fn(http::StatusCode) -> bool,
    ) -> Answer {
        if is_html(resp.headers()) && html_is_error(resp.status()) {
            // Boxed: reading the page is the rare path, and its future would otherwise sit in
            // every request's.
            let upstream = self.upstream.name.clone();
            return Either::Right(Box::pin(async move {
                let err = html_error(&upstream, resp).await;
                Err::<Response<Body>, BoxError>(Box::new(RoutedError {
                    route,
                    source: Box::new(err),
                }))
            }));
        }
        let h = resp.headers_mut();
        if self.strip_set_cookie {
            h.remove(header::SET_COOKIE);
        }
        if let Some(v) = &self.upstream.name_header {
            h.insert(X_PORTCULLIS_UPSTREAM, v.clone());
        }
        h.insert(X_PORTCULLIS_ATTEMPTS, int_value(route.attempts));
        resp.extensions_mut().insert(route);
        Either::Left(std::future::ready(Ok(resp)))
    }
}

/// An event stream that breaks after its first byte ends with the client's error event, in
/// the shape of the API at `path` (only looked up for an event stream: two substring searches
/// a JSON answer need not pay).
fn end_streams_loudly(resp: Response<Body>, path: &str) -> Response<Body> {
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if sse {
        resp.map(|b| Body::new(StreamEnd::new(b, stream_api(path))))
    } else {
        resp
    }
}

fn is_html(h: &http::HeaderMap) -> bool {
    use portcullis_core::headers::{content_type, starts_with_ignore_case as starts};
    content_type(h).is_some_and(|ct| starts(ct, b"text/html") || starts(ct, b"application/xhtml"))
}

/// Read (the start of) an HTML page and pull out what helps a human: Cloudflare's error
/// code, the ray id, the title.
async fn html_error(upstream: &str, resp: Response<Body>) -> UpstreamHtml {
    let status = resp.status();
    let cf_ray = resp
        .headers()
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Pages are small; a cap keeps a hostile one from costing memory.
    let page = read_prefix(resp.into_body(), 64 * 1024).await;
    let text = String::from_utf8_lossy(&page);
    let (cf_error, ray_in_page, title) = scan_html(&text);
    UpstreamHtml {
        upstream: upstream.to_string(),
        status: status.as_u16(),
        cf_error,
        cf_ray: cf_ray.or(ray_in_page),
        title,
    }
}

async fn read_prefix(body: Body, cap: usize) -> Bytes {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    while out.len() < cap {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d[..d.len().min(cap - out.len())]);
                }
            }
            _ => break,
        }
    }
    Bytes::from(out)
}

/// Find Cloudflare's error code, ray id and the page title in an HTML page.
pub fn scan_html(text: &str) -> (Option<u32>, Option<String>, Option<String>) {
    let lower = text.to_ascii_lowercase();
    let digits_after = |pat: &str| -> Option<u32> {
        let mut from = 0;
        while let Some(i) = lower[from..].find(pat) {
            let start = from + i + pat.len();
            let rest = &lower[start..];
            let rest = rest.trim_start_matches([' ', ':', '#']);
            let rest = strip_tags(rest);
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if (3..=5).contains(&n.len()) {
                return n.parse().ok();
            }
            from = start;
        }
        None
    };
    let cf_error = digits_after("error code").or_else(|| digits_after("error"));
    let ray = lower.find("ray id").map(|i| {
        let rest = strip_tags(text[i + 6..].trim_start_matches([' ', ':']));
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    });
    let title = lower.find("<title>").and_then(|i| {
        let start = i + 7;
        lower[start..]
            .find("</title>")
            .map(|j| text[start..start + j].trim().to_string())
    });
    (
        cf_error,
        ray.filter(|r| !r.is_empty()),
        title.filter(|t| !t.is_empty()),
    )
}

fn strip_tags(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if s.starts_with('<') {
            match s.find('>') {
                Some(j) => s = &s[j + 1..],
                None => return s,
            }
        } else {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_told_by_its_media_type_in_any_case() {
        let of = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_html(&h)
        };
        for html in [
            "text/html",
            "text/html; charset=utf-8",
            " Text/HTML;charset=UTF-8",
            "APPLICATION/XHTML+xml",
        ] {
            assert!(of(html), "{html}");
        }
        for other in [
            "application/json",
            "text/htm",
            "text/plain; x=text/html",
            "",
        ] {
            assert!(!of(other), "{other}");
        }
        assert!(!is_html(&http::HeaderMap::new()));
    }

    #[test]
    fn params_fill_in_under_the_clients_values() {
        let params = serde_json::json!({
            "thinking": {"type": "enabled", "budget_tokens": 4096},
            "temperature": 0.2,
            "metadata": {"user_id": "u1"}
        });
        let b = prepare_body(
            br#"{"model":"a","temperature":1,"metadata":{"tag":"x"},"messages":[]}"#,
            Some("b"),
            params.as_object(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["temperature"], 1, "the client's value wins");
        assert_eq!(v["thinking"]["budget_tokens"], 4096);
        assert_eq!(
            v["metadata"],
            serde_json::json!({"tag": "x", "user_id": "u1"})
        );
    }

    /// A model alone is written in place: the rest of the body byte for byte (spaces, order,
    /// escapes), the model escaped; where the skim cannot say, the body is parsed as before.
    #[test]
    fn a_model_alone_is_written_in_place() {
        let body = br#" { "messages" : [{"role":"user","content":"a\u00e9\n"}], "model" : "a" , "z":1.50 } "#;
        let b = rewrite_model(body, "b\"q").unwrap();
        let want = br#" { "messages" : [{"role":"user","content":"a\u00e9\n"}], "model" : "b\"q" , "z":1.50 } "#;
        assert_eq!(&b[..], &want[..], "{}", String::from_utf8_lossy(&b));
        // Parsed: two models, an escaped key, none, not an object.
        for body in [
            &br#"{"model":"a","model":"c","x":1}"#[..],
            br#"{"mod\u0065l":"a","x":1}"#,
            br#"{"x":1}"#,
        ] {
            let b = rewrite_model(body, "b").unwrap();
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["model"], "b", "{}", String::from_utf8_lossy(body));
            assert_eq!(v["x"], 1);
        }
        assert!(rewrite_model(b"[1]", "b").is_ok());
        // A body of more values than a tree is built of: written in place when it can be,
        // refused when it would have to be parsed.
        let many = format!(
            r#"{{"model":"a","input":[{}0]}}"#,
            "0,".repeat(json_skim::MAX_VALUES)
        );
        let b = rewrite_model(many.as_bytes(), "b").unwrap();
        assert_eq!(&b[..13], br#"{"model":"b","#);
        assert_eq!(b.len(), many.len());
        let params = serde_json::json!({"temperature": 0.2});
        let e = prepare_body(many.as_bytes(), Some("b"), params.as_object()).unwrap_err();
        assert!(e.to_string().contains("too many to rewrite"), "{e}");
    }

    #[test]
    fn rewrite_keeps_other_fields() {
        let b = rewrite_model(
            br#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#,
            "b",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["messages"][0]["content"], "hi");
    }

    #[test]
    fn cloudflare_page_is_understood() {
        let page = r#"<!DOCTYPE html><html><head><title>Error 1200 | Cloudflare</title></head>
        <body><h1>Error <span>1200</span></h1><p>Ray ID: <strong>8a1b2c3d4e5f6789</strong></p></body></html>"#;
        let (code, ray, title) = scan_html(page);
        assert_eq!(code, Some(1200));
        assert_eq!(ray.as_deref(), Some("8a1b2c3d4e5f6789"));
        assert_eq!(title.as_deref(), Some("Error 1200 | Cloudflare"));
        let (code, _, _) = scan_html("<html>error code: 1020</html>");
        assert_eq!(code, Some(1020));
        let (code, ray, title) = scan_html("<html><body>Bad gateway</body></html>");
        assert_eq!((code, ray, title), (None, None, None));
    }
}
