//! [`Translate`]: rewrites a request in the client's API to the upstream's, and the
//! response (plain, streamed or error) back.

use portcullis_core::{error::Refused, CallerId};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use portcullis_core::body::{collect_limited, DEFAULT_MAX_BODY_BYTES};
use tower::{BoxError, Service};

use crate::{
    count,
    error::map_error,
    future::ResponseFuture,
    request::translate_request,
    response::translate_response,
    store::{Pending, ResponseStore},
    Api, Format, Plan, StreamTranslator, TranslateBody, TranslateError,
};

/// The most of a non-streamed upstream answer read for translation.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The most of an upstream error body read for translation.
const MAX_ERROR_BYTES: usize = 1024 * 1024;

/// `anthropic-version` sent to Anthropic when the client sent none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Response header naming the translation made, e.g. `openai-chat->anthropic`.
pub const X_PORTCULLIS_TRANSLATED: &str = "x-portcullis-translated";

/// Service in front of an upstream speaking [`Api`]: requests to `/v1/chat/completions`,
/// `/v1/messages` and `/v1/responses` in another shape are translated to the upstream's, and
/// its answers back. Everything else passes through untouched, except the endpoints the
/// upstream's API lacks (see [`route`]), which fail with [`TranslateError::UnsupportedPath`].
#[derive(Debug, Clone)]
pub struct Translate<S> {
    inner: S,
    api: Api,
    max_body_bytes: usize,
    store: ResponseStore,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Send it as it is.
    Pass,
    /// Translate from the first format to the second.
    Translate(Format, Format),
    /// A token-count request from the first format's count endpoint to the second's
    /// (Responses `input_tokens` -> Anthropic `count_tokens`).
    Count(Format, Format),
    /// A token-count request (in this format) the upstream's API has no endpoint for: the
    /// layer answers it with its own estimate (see [`crate::count`]).
    Estimate(Format),
    /// A stored Responses answer of this layer's (see [`crate::store`]): `GET` or `DELETE
    /// /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
    Stored,
    /// `POST /v1/responses/compact` (Codex's remote compaction), which no translated API
    /// has: the model, asked in this format, writes the summary (see [`crate::compact`]).
    Compact(Format),
    /// Refuse it.
    Refuse(TranslateError),
}

/// What [`Translate`] does with a request of `method` to `path` for an upstream speaking
/// `api`.
///
/// - `any`, or the upstream's own shape: pass.
/// - `POST` to one of the three endpoints in another shape: translate.
/// - `POST` to a token-count endpoint (`/v1/messages/count_tokens`,
///   `/v1/responses/input_tokens`) in another shape: translated to the upstream's count
///   endpoint if its API has one ([`Route::Count`]), else counted here
///   ([`Route::Estimate`]).
/// - An `anthropic` upstream refuses `/v1/embeddings`, `/v1/completions`,
///   `/v1/moderations`, `/v1/audio/*`, `/v1/images/*`, `/v1/responses/*` and
///   `/v1/chat/completions/*` (stored objects): Anthropic has none of them.
/// - `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, for an
///   `openai` or `anthropic` upstream: answered from the layer's store ([`Route::Stored`]).
/// - `POST /v1/responses/compact`, for an `openai` or `anthropic` upstream: the summary is
///   the model's, asked for by a translated request ([`Route::Compact`]).
/// - An `openai` upstream refuses the rest of `/v1/messages/*` (batches) and
///   `/v1/responses/*` (background responses' `cancel`).
/// - An `openai-responses` upstream takes chat completions and everything of the Responses
///   API as sent (its own stored responses and compaction); `/v1/messages` is translated to
///   chat completions, its token counts estimated, the rest of `/v1/messages/*` refused.
/// - Any other path passes (`/v1/models`, `/v1/files`, ...).
pub fn route(api: Api, method: &Method, path: &str) -> Route {
    if api == Api::Any {
        return Route::Pass;
    }
    // The upstream's base URL may have a path of its own
    // (`https://api.supermemory.ai/v3/https://api.anthropic.com`): the endpoint is the rest.
    let path = endpoint(path);
    if let Some(client) = Format::from_path(path) {
        return match client.target(api) {
            Some(t) if method == Method::POST => Route::Translate(client, t),
            _ => Route::Pass,
        };
    }
    if let Some(client) = Format::from_count_path(path).filter(|_| method == Method::POST) {
        return match client.target(api) {
            None => Route::Pass,
            Some(t) if t.count_path().is_some() => Route::Count(client, t),
            Some(_) => Route::Estimate(client),
        };
    }
    // An upstream of the Responses API keeps its own responses.
    if stored_path(method, path).is_some() && !api.speaks(Format::Responses) {
        return Route::Stored;
    }
    if method == Method::POST && path == "/v1/responses/compact" {
        if let Some(t) = Format::Responses.target(api) {
            return Route::Compact(t);
        }
    }
    let refused: &[&str] = match api {
        Api::Anthropic => &[
            "/v1/embeddings",
            "/v1/completions",
            "/v1/moderations",
            "/v1/audio/",
            "/v1/images/",
            "/v1/responses/",
            "/v1/chat/completions/",
        ],
        Api::OpenAi => &["/v1/messages/", "/v1/responses/"],
        Api::OpenAiResponses => &["/v1/messages/"],
        Api::Any => &[],
    };
    if refused
        .iter()
        .any(|p| path == p.trim_end_matches('/') || (p.ends_with('/') && path.starts_with(p)))
    {
        Route::Refuse(TranslateError::UnsupportedPath {
            path: path.to_owned(),
            api,
        })
    } else {
        Route::Pass
    }
}

/// `(id, input_items?)` of a stored-response path: `GET`/`DELETE /v1/responses/{id}`, `GET
/// /v1/responses/{id}/input_items`.
fn stored_path<'a>(method: &Method, path: &'a str) -> Option<(&'a str, bool)> {
    let rest = path.strip_prefix("/v1/responses/")?;
    let (id, items) = match rest.split_once('/') {
        None => (rest, false),
        Some((id, "input_items")) if method == Method::GET => (id, true),
        Some(_) => return None,
    };
    let plain = *method == Method::GET || *method == Method::DELETE;
    (!id.is_empty() && id != "input_tokens" && (items || plain)).then_some((id, items))
}

/// The API endpoint part of a request path: from its last `/v1/` on.
fn endpoint(path: &str) -> &str {
    path.rfind("/v1/").map_or(path, |i| &path[i..])
}

impl<S> Translate<S> {
    /// Wrap `inner`, an upstream speaking `api`.
    pub fn new(inner: S, api: Api) -> Self {
        Translate {
            inner,
            api,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            store: ResponseStore::default(),
        }
    }

    /// See [`TranslateLayer::with_store`](crate::TranslateLayer::with_store).
    pub fn with_store(mut self, store: ResponseStore) -> Self {
        self.store = store;
        self
    }

    /// See [`TranslateLayer::with_max_body_bytes`](crate::TranslateLayer::with_max_body_bytes).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The upstream's API.
    pub fn api(&self) -> Api {
        self.api
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for Translate<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<TranslateBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = route(self.api, req.method(), req.uri().path());
        match route {
            Route::Pass => {
                let fut = self.inner.call(req);
                ResponseFuture {
                    inner: Box::pin(async move {
                        let resp = fut.await.map_err(Into::into)?;
                        Ok(resp.map(TranslateBody::passthrough))
                    }),
                }
            }
            Route::Refuse(e) => ResponseFuture {
                inner: Box::pin(async move { Err(Refused::boxed(e)) }),
            },
            Route::Stored => {
                let store = self.store.clone();
                ResponseFuture {
                    inner: Box::pin(async move { Ok(stored(req, store).await) }),
                }
            }
            Route::Estimate(client) => {
                let limit = self.max_body_bytes;
                ResponseFuture {
                    inner: Box::pin(
                        async move { estimated(req, client, limit).await.map_err(refusal) },
                    ),
                }
            }
            Route::Compact(upstream) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let limit = self.max_body_bytes;
                let store = self.store.clone();
                ResponseFuture {
                    inner: Box::pin(async move {
                        compacted(inner, req, upstream, limit, store)
                            .await
                            .map_err(refusal)
                    }),
                }
            }
            Route::Translate(client, upstream) | Route::Count(client, upstream) => {
                let count = matches!(route, Route::Count(..));
                // The readied service serves this call; the clone waits for the next.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let limit = self.max_body_bytes;
                let store = self.store.clone();
                ResponseFuture {
                    inner: Box::pin(async move {
                        translated(inner, req, (client, upstream), count, limit, store)
                            .await
                            .map_err(refusal)
                    }),
                }
            }
        }
    }
}

/// A [`TranslateError`] as a refusal the edge renders in the client's shape.
fn refusal(e: BoxError) -> BoxError {
    match e.downcast::<TranslateError>() {
        Ok(t) => Refused::boxed(*t),
        Err(e) => e,
    }
}

/// Answer `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items` from
/// the store, for the caller that made the response; another's, or one not kept, is a 404
/// as OpenAI gives.
async fn stored<B, RB>(req: Request<B>, store: ResponseStore) -> Response<TranslateBody<RB>> {
    let caller = CallerId::from_parts(req.headers(), req.extensions());
    let path = endpoint(req.uri().path());
    let Some((id, items)) = stored_path(req.method(), path) else {
        return json_response(http::StatusCode::NOT_FOUND, Bytes::new());
    };
    let found = if items {
        let page = Page::of(req.uri().query());
        store
            .input_items(caller, id)
            .await
            .map(|items| page.list(items))
    } else if req.method() == Method::DELETE {
        store.delete(caller, id).await.then(|| {
            let body = serde_json::json!({"id": id, "object": "response", "deleted": true});
            Bytes::from(body.to_string())
        })
    } else {
        store.response(caller, id).await
    };
    match found {
        Some(body) => json_response(http::StatusCode::OK, body),
        None => {
            let id: String = id.chars().take(100).collect();
            let (status, body) = crate::error::render(
                Format::Responses,
                crate::error::ErrorKind::NotFound,
                &format!("No response found with id '{id}'."),
                Some("not_found"),
            );
            json_response(status, body)
        }
    }
}

/// A page of a list (`GET /v1/responses/{id}/input_items`), as OpenAI pages: `order`
/// (`desc`, the default, newest first; or `asc`), `limit` (1 to 100, default 20), `after`
/// (the id of the item before the page).
#[derive(Debug, PartialEq, Eq)]
struct Page {
    asc: bool,
    limit: usize,
    after: Option<String>,
}

impl Page {
    fn of(query: Option<&str>) -> Self {
        let mut page = Page {
            asc: false,
            limit: 20,
            after: None,
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "order" => page.asc = v == "asc",
                "limit" => page.limit = v.parse::<usize>().map_or(20, |n| n.clamp(1, 100)),
                "after" => page.after = Some(v.into_owned()),
                _ => {}
            }
        }
        page
    }

    /// The list object of this page of `items` (oldest first).
    fn list(&self, mut items: Vec<serde_json::Value>) -> Bytes {
        if !self.asc {
            items.reverse();
        }
        let start = self.after.as_deref().map_or(0, |after| {
            items
                .iter()
                .position(|i| i.get("id").and_then(serde_json::Value::as_str) == Some(after))
                // An id not in the list: nothing after it.
                .map_or(items.len(), |p| p + 1)
        });
        let has_more = items.len() > start + self.limit;
        let data: Vec<serde_json::Value> = items.into_iter().skip(start).take(self.limit).collect();
        let id_of = |i: Option<&serde_json::Value>| i.and_then(|i| i.get("id")).cloned();
        let body = serde_json::json!({"object": "list", "first_id": id_of(data.first()),
            "last_id": id_of(data.last()), "has_more": has_more, "data": data});
        Bytes::from(body.to_string())
    }
}

fn json_response<RB>(status: http::StatusCode, body: Bytes) -> Response<TranslateBody<RB>> {
    let len = body.len();
    let mut resp = Response::new(TranslateBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Answer a token-count request with the layer's own estimate ([`crate::count`]).
async fn estimated<B, RB>(
    req: Request<B>,
    client: Format,
    limit: usize,
) -> Result<Response<TranslateBody<RB>>, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = collect_limited(req.into_body(), limit).await?;
    let n = count::estimate_input_tokens(client, &bytes)?;
    let body = count::input_tokens_body(client, n);
    let mut resp = Response::new(TranslateBody::full(body.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let tag = format!("{}->estimate", tag(client));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(X_PORTCULLIS_TRANSLATED, v);
    }
    tracing::debug!(from = ?client, input_tokens = n, "token count estimated");
    Ok(resp)
}

async fn translated<S, B, RB>(
    mut inner: S,
    req: Request<B>,
    (client, upstream): (Format, Format),
    count: bool,
    limit: usize,
    store: ResponseStore,
) -> Result<Response<TranslateBody<RB>>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let mut bytes = collect_limited(body, limit).await?;
    // A compaction request (its last item a `compaction_trigger`): the model is asked for
    // the summary, which comes back as a `compaction` item (`crate::compact`).
    let compaction = match client {
        Format::Responses if !count => crate::compact::trigger_request(&bytes)?,
        _ => None,
    };
    if let Some(ask) = &compaction {
        bytes = ask.body.clone();
    }
    // The Responses API's stored state, kept here for an upstream that has none.
    let mut pending = None;
    if client == Format::Responses && !count {
        let caller = CallerId::from_parts(&parts.headers, &parts.extensions);
        (bytes, pending) = store.prepare(caller, bytes, limit).await?;
    }
    let (out, plan, path) = match upstream.count_path().filter(|_| count) {
        Some(path) => {
            let mut plan = Plan::new(client, upstream);
            plan.count = true;
            (count::count_request(client, upstream, &bytes)?, plan, path)
        }
        None => {
            let (out, mut plan) = translate_request(client, upstream, &bytes)?;
            if client == Format::Responses {
                plan.response_id = Some(crate::response::fresh_response_id());
            }
            (out, plan, upstream.path())
        }
    };
    parts.uri = with_path(&parts.uri, path)?;
    rewrite_request_headers(&mut parts.headers, upstream, out.len());
    tracing::debug!(from = ?client, to = ?upstream, "translating request");
    let call = inner.call(Request::from_parts(parts, B::from(out)));
    match compaction {
        // A streamed compaction answers at once and keeps the client's stream alive while
        // the model writes (a slow one takes minutes).
        Some(ask) if ask.stream => {
            let id = plan
                .response_id
                .clone()
                .unwrap_or_else(crate::response::fresh_response_id);
            let summary = Box::pin(async move {
                let failed = |e: BoxError| ("upstream_error".to_owned(), e.to_string());
                let resp = call.await.map_err(|e| failed(e.into()))?;
                let resp = translate_answer(resp, &plan, None).await.map_err(failed)?;
                let ok = resp.status().is_success();
                let body = collect_limited(resp.into_body(), limit)
                    .await
                    .map_err(|e| failed(e.into()))?;
                if ok {
                    Ok(body)
                } else {
                    Err(crate::compact::error_of(&body))
                }
            });
            let body = TranslateBody::compacting(crate::compact::Compacting::new(
                &id, &ask.model, summary,
            ));
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            Ok(resp)
        }
        Some(_) => {
            let resp = translate_answer(call.await.map_err(Into::into)?, &plan, pending).await?;
            summarized(resp, limit, |answer| {
                Ok((crate::compact::trigger_answer(answer)?, false))
            })
            .await
        }
        None => translate_answer(call.await.map_err(Into::into)?, &plan, pending).await,
    }
}

/// `POST /v1/responses/compact` to an upstream speaking `upstream` ([`crate::compact`]): the
/// conversation and a request for its summary go as a translated Responses request; a 2xx
/// answer becomes the compacted history, any other goes back as it came (in the Responses
/// shape).
async fn compacted<S, B, RB>(
    inner: S,
    req: Request<B>,
    upstream: Format,
    limit: usize,
    store: ResponseStore,
) -> Result<Response<TranslateBody<RB>>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let bytes = collect_limited(body, limit).await?;
    // A `previous_response_id` (the Agents SDK's compaction session sends only that) is
    // resolved first, so the user messages of the whole chain are kept; nothing is stored.
    let caller = CallerId::from_parts(&parts.headers, &parts.extensions);
    let (bytes, _not_stored) = store.prepare(caller, bytes, limit).await?;
    let ask = crate::compact::compact_request(&bytes)?;
    let req = Request::from_parts(parts, B::from(ask.body));
    let resp = translated(
        inner,
        req,
        (Format::Responses, upstream),
        false,
        limit,
        store,
    )
    .await?;
    let kept = ask.kept;
    summarized(resp, limit, |answer| {
        Ok((crate::compact::compact_answer(answer, kept)?, false))
    })
    .await
}

/// A 2xx summary answer (unstreamed, in the Responses shape) rewritten by `write` into the
/// body to send (and whether it is a stream); any other answer as it came.
async fn summarized<RB>(
    resp: Response<TranslateBody<RB>>,
    limit: usize,
    write: impl FnOnce(&[u8]) -> Result<(Bytes, bool), TranslateError>,
) -> Result<Response<TranslateBody<RB>>, BoxError>
where
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let (out, stream) = write(&collect_limited(body, limit).await?)?;
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, TranslateBody::full(out)))
}

/// The same URI with another endpoint (any base path before it kept); the query is dropped
/// (Claude Code's `?beta=true` means nothing to another API).
fn with_path(uri: &Uri, path: &'static str) -> Result<Uri, http::Error> {
    let old = uri.path();
    let base = &old[..old.len() - endpoint(old).len()];
    let path = format!("{base}{path}");
    let mut b = Uri::builder();
    if let Some(s) = uri.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = uri.authority() {
        b = b.authority(a.clone());
    }
    b.path_and_query(path).build()
}

fn rewrite_request_headers(h: &mut HeaderMap, upstream: Format, len: usize) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Translation reads the answer: it must come uncompressed.
    h.remove(header::ACCEPT_ENCODING);
    match upstream {
        Format::Messages => {
            if !h.contains_key("anthropic-version") {
                h.insert(
                    "anthropic-version",
                    HeaderValue::from_static(ANTHROPIC_VERSION),
                );
            }
            // A passed-through OpenAI-style `Authorization: Bearer sk-ant-api..` is an
            // Anthropic API key: Anthropic reads those from x-api-key. (OAuth tokens,
            // `sk-ant-oat..`, do go in Authorization.)
            if !h.contains_key("x-api-key") {
                let key = h
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .filter(|k| k.starts_with("sk-ant-api"))
                    .and_then(|k| HeaderValue::from_str(k).ok());
                if let Some(mut k) = key {
                    k.set_sensitive(true);
                    h.remove(header::AUTHORIZATION);
                    h.insert("x-api-key", k);
                }
            }
        }
        Format::ChatCompletions | Format::Responses => {
            h.remove("anthropic-version");
            h.remove("anthropic-beta");
            if !h.contains_key(header::AUTHORIZATION) {
                if let Some(k) = h.remove("x-api-key") {
                    if let Ok(mut v) = HeaderValue::from_bytes(&[b"Bearer ", k.as_bytes()].concat())
                    {
                        v.set_sensitive(true);
                        h.insert(header::AUTHORIZATION, v);
                    }
                }
            }
        }
    }
}

fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn tag(f: Format) -> &'static str {
    match f {
        Format::ChatCompletions => "openai-chat",
        Format::Messages => "anthropic",
        Format::Responses => "openai-responses",
    }
}

async fn translate_answer<RB>(
    resp: Response<RB>,
    plan: &Plan,
    pending: Option<Pending>,
) -> Result<Response<TranslateBody<RB>>, BoxError>
where
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let (mut parts, body) = resp.into_parts();
    let ct = content_type(&parts.headers);
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    let is_json = ct.starts_with("application/json") || ct.contains("+json");
    let is_sse = ct.starts_with("text/event-stream");
    let h = &mut parts.headers;
    if let Ok(v) = HeaderValue::from_str(&format!("{}->{}", tag(plan.client), tag(plan.upstream))) {
        h.insert(X_PORTCULLIS_TRANSLATED, v);
    }
    if parts.status.is_success() {
        if encoded && (is_sse || is_json) {
            return Err(TranslateError::InvalidUpstream {
                format: plan.upstream,
                message: "the answer is compressed".into(),
            }
            .into());
        }
        if is_sse {
            h.remove(header::CONTENT_LENGTH);
            let t = StreamTranslator::new(plan)?;
            return Ok(Response::from_parts(
                parts,
                TranslateBody::stream_kept(body, t, pending),
            ));
        }
        if is_json {
            let bytes = collect_limited(body, MAX_RESPONSE_BYTES).await?;
            let out = if plan.count {
                count::count_response(plan.client, plan.upstream, &bytes)?
            } else {
                translate_response(plan, &bytes)?
            };
            if let Some(p) = pending {
                p.record_body(&out).await;
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            return Ok(Response::from_parts(parts, TranslateBody::full(out)));
        }
        return Ok(Response::from_parts(
            parts,
            TranslateBody::passthrough(body),
        ));
    }
    // An error answer. HTML pages and compressed bodies go through as they are (the
    // gateway's router reports HTML pages itself).
    if encoded || ct.starts_with("text/html") {
        return Ok(Response::from_parts(
            parts,
            TranslateBody::passthrough(body),
        ));
    }
    let bytes = collect_limited(body, MAX_ERROR_BYTES).await?;
    let m = map_error(plan.client, parts.status, &bytes);
    parts.status = m.status;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.body.len()));
    if m.no_retry {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    Ok(Response::from_parts(parts, TranslateBody::full(m.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(route(Api::Any, &post, "/v1/messages"), Route::Pass);
        assert_eq!(
            route(Api::Anthropic, &post, "/v1/chat/completions"),
            Route::Translate(Format::ChatCompletions, Format::Messages)
        );
        assert_eq!(route(Api::Anthropic, &post, "/v1/messages"), Route::Pass);
        assert_eq!(
            route(Api::Anthropic, &post, "/v1/messages/count_tokens"),
            Route::Pass
        );
        assert_eq!(
            route(Api::Anthropic, &Method::GET, "/v1/models"),
            Route::Pass
        );
        assert!(matches!(
            route(Api::Anthropic, &post, "/v1/embeddings"),
            Route::Refuse(_)
        ));
        assert!(matches!(
            route(Api::Anthropic, &post, "/v1/audio/speech"),
            Route::Refuse(_)
        ));
        assert_eq!(
            route(Api::OpenAi, &post, "/v1/responses"),
            Route::Translate(Format::Responses, Format::ChatCompletions)
        );
        assert_eq!(route(Api::OpenAi, &post, "/v1/embeddings"), Route::Pass);
        assert_eq!(
            route(Api::OpenAi, &post, "/v1/messages/count_tokens"),
            Route::Estimate(Format::Messages)
        );
        assert_eq!(
            route(Api::OpenAi, &post, "/v1/responses/input_tokens"),
            Route::Estimate(Format::Responses)
        );
        assert_eq!(
            route(Api::Anthropic, &post, "/v1/responses/input_tokens"),
            Route::Count(Format::Responses, Format::Messages)
        );
        assert_eq!(
            route(Api::Any, &post, "/v1/responses/input_tokens"),
            Route::Pass
        );
        assert!(matches!(
            route(Api::OpenAi, &post, "/v1/messages/batches"),
            Route::Refuse(_)
        ));
        assert!(matches!(
            route(Api::OpenAi, &Method::GET, "/v1/messages/count_tokens"),
            Route::Refuse(_)
        ));
        // Stored answers of this layer's: read, listed, deleted here; nothing else.
        for (m, p) in [
            (Method::GET, "/v1/responses/resp_1"),
            (Method::DELETE, "/v1/responses/resp_1"),
            (Method::GET, "/v1/responses/resp_1/input_items"),
        ] {
            assert_eq!(route(Api::OpenAi, &m, p), Route::Stored, "{m} {p}");
            assert_eq!(route(Api::Anthropic, &m, p), Route::Stored, "{m} {p}");
            assert_eq!(route(Api::Any, &m, p), Route::Pass, "{m} {p}");
            assert_eq!(route(Api::OpenAiResponses, &m, p), Route::Pass, "{m} {p}");
        }
        // Chat completions and the Responses API both as sent (its stored responses, its
        // compaction, its token counts the upstream's own); Messages to chat completions.
        let both = Api::OpenAiResponses;
        for p in [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/responses/compact",
            "/v1/responses/input_tokens",
            "/v1/responses/resp_1/cancel",
            "/v1/embeddings",
        ] {
            assert_eq!(route(both, &post, p), Route::Pass, "{p}");
        }
        assert_eq!(
            route(both, &post, "/v1/messages"),
            Route::Translate(Format::Messages, Format::ChatCompletions)
        );
        assert_eq!(
            route(both, &post, "/v1/messages/count_tokens"),
            Route::Estimate(Format::Messages)
        );
        assert!(matches!(
            route(both, &post, "/v1/messages/batches"),
            Route::Refuse(_)
        ));
        assert!(both.speaks(Format::Responses) && !Api::Anthropic.speaks(Format::Responses));

        assert!(matches!(
            route(Api::OpenAi, &post, "/v1/responses/resp_1/cancel"),
            Route::Refuse(_)
        ));
        assert!(matches!(
            route(Api::Anthropic, &Method::GET, "/v1/responses/resp_1/other"),
            Route::Refuse(_)
        ));
    }

    #[test]
    fn headers_for_anthropic_and_openai() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-ant-api03-x"),
        );
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        rewrite_request_headers(&mut h, Format::Messages, 10);
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(h["x-api-key"], "sk-ant-api03-x");
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert!(!h.contains_key(header::ACCEPT_ENCODING));
        assert_eq!(h[header::CONTENT_LENGTH], "10");

        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("local"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.insert("anthropic-beta", HeaderValue::from_static("x"));
        rewrite_request_headers(&mut h, Format::ChatCompletions, 3);
        assert_eq!(h[header::AUTHORIZATION], "Bearer local");
        assert!(!h.contains_key("anthropic-version"));
        assert!(!h.contains_key("anthropic-beta"));
        assert!(!h.contains_key("x-api-key"));
    }

    #[test]
    fn path_rewrite_keeps_authority_drops_query() {
        let u: Uri = "https://api.anthropic.com/v1/chat/completions?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            with_path(&u, "/v1/messages").unwrap().to_string(),
            "https://api.anthropic.com/v1/messages"
        );
        let u: Uri = "https://api.supermemory.ai/v3/https://api.anthropic.com/v1/chat/completions"
            .parse()
            .unwrap();
        assert_eq!(
            with_path(&u, "/v1/messages").unwrap().to_string(),
            "https://api.supermemory.ai/v3/https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            route(Api::Anthropic, &Method::POST, u.path()),
            Route::Translate(Format::ChatCompletions, Format::Messages)
        );
        let u: Uri = "/v1/messages?beta=true".parse().unwrap();
        assert_eq!(
            with_path(&u, "/v1/chat/completions").unwrap().to_string(),
            "/v1/chat/completions"
        );
    }

    #[test]
    fn input_items_page_as_openai_pages() {
        let items: Vec<serde_json::Value> = (0..5)
            .map(|i| serde_json::json!({"id": format!("i{i}")}))
            .collect();
        let page = |q: &str| -> serde_json::Value {
            serde_json::from_slice(&Page::of(Some(q)).list(items.clone())).unwrap()
        };
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let all = page("");
        assert_eq!(ids(&all), ["i4", "i3", "i2", "i1", "i0"], "newest first");
        assert_eq!(all["has_more"], false);
        let first = page("limit=2");
        assert_eq!(ids(&first), ["i4", "i3"]);
        assert_eq!(
            (&first["first_id"], &first["last_id"], &first["has_more"]),
            (
                &serde_json::json!("i4"),
                &serde_json::json!("i3"),
                &serde_json::json!(true)
            )
        );
        assert_eq!(ids(&page("limit=2&after=i3")), ["i2", "i1"]);
        let last = page("limit=2&after=i1");
        assert_eq!(
            (ids(&last), &last["has_more"]),
            (vec!["i0".to_owned()], &serde_json::json!(false))
        );
        assert_eq!(ids(&page("order=asc&limit=3&after=i0")), ["i1", "i2", "i3"]);
        assert!(ids(&page("after=nope")).is_empty());
        assert_eq!(Page::of(Some("limit=0")).limit, 1);
        assert_eq!(Page::of(Some("limit=1000")).limit, 100);
        assert_eq!(Page::of(Some("limit=x")).limit, 20);
    }
}
