//! Every other `/v1/*` path (files, uploads, images, audio, batches, moderations, stored
//! responses, ...): sent to an upstream as it came, the body streamed, never buffered whole.
//!
//! The upstream is the one of the body's `model` when the body is JSON naming one (routed
//! like an API call: model rewrite, fallbacks), else the one named by the request header
//! `x-portcullis-upstream`, else the one of the model the URI names (the id of
//! `/v1/models/{id}`, else the `model` query parameter, as a WebSocket handshake's:
//! `GET /v1/chat/completions?model=gpt-4o` lists that model's stored completions; sent as it
//! came, no rewrite; a model only `*` claims counts as none), else, for an Anthropic request
//! (`anthropic-version`, or a `/v1/messages/...` path), the first upstream that speaks
//! Anthropic's API (`api = "anthropic"`, or on `api.anthropic.com`), else the one of the `*`
//! model; none: 404. A stored Responses path whose id is one the gateway made
//! (`/v1/responses/resp_pc..`) goes to the first translated upstream before the URI's model.
//!
//! `server.max_body_bytes` still bounds the body: a larger `Content-Length` is refused at
//! once, and a body without one is cut off and answered 413 when it crosses the limit.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderName, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use portcullis_core::{
    body::{collect_limited, CollectError},
    ModelPattern, RequestMeta, RouteInfo, UserId,
};
use tower::{BoxError, Service, ServiceExt};

use super::router::{attempts_failed, attempts_made, route_model, Inner, ModelRouter, RoutedError};

/// The request header that names the upstream of a pass-through request without a model.
pub const X_PORTCULLIS_UPSTREAM_REQUEST: HeaderName =
    HeaderName::from_static("x-portcullis-upstream");

/// The header every Anthropic API request carries.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// No upstream for a pass-through request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoUpstream(pub String);

/// The pass-through service: see the module docs. Cloning shares the router's tables.
#[derive(Clone, Debug)]
pub struct Passthrough {
    router: ModelRouter,
}

impl ModelRouter {
    /// The service for every `/v1/*` path that is not a JSON API route.
    pub fn passthrough(&self) -> Passthrough {
        Passthrough {
            router: self.clone(),
        }
    }
}

impl Service<Request<Body>> for Passthrough {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // As the router: readiness is per upstream, checked when it is known (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.router.inner.clone();
        Box::pin(pass(inner, req))
    }
}

async fn pass(inner: Arc<Inner>, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    // A JSON body naming a model (peeked above, see `peek_json`) is routed like an API call.
    if let Some(model) = req
        .extensions()
        .get::<RequestMeta>()
        .and_then(|m| m.model.clone())
    {
        let (parts, body) = req.into_parts();
        let bytes = collect_limited(body, inner.max_body_bytes).await?;
        return route_model(inner, parts, bytes, model).await;
    }
    let name = pick_upstream(&inner, req.headers(), req.uri())?;
    let Some(up) = inner.upstreams.get(&name) else {
        return Err(Box::new(NoUpstream(format!("no upstream named {name:?}"))));
    };
    let limit = inner.max_body_bytes;
    let (mut parts, body) = req.into_parts();
    let length = parts.headers.get(header::CONTENT_LENGTH).cloned();
    if length
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
    {
        return Err(Box::new(CollectError::TooLarge { limit }));
    }
    let over = Arc::new(AtomicBool::new(false));
    let body = Body::new(Capped {
        inner: Some(body),
        left: limit,
        over: over.clone(),
    });
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(up.upstream.uri_of(parts.uri.path_and_query())?);
    let user_id = parts.extensions.get::<UserId>().map(|u| u.0.clone());
    // One attempt here (retries are the upstream service's): the request's own headers and
    // extensions go, not copies.
    if let Some(h) = builder.headers_mut() {
        *h = std::mem::take(&mut parts.headers);
        up.upstream.prepare_headers(h);
        // The body goes on unchanged, so its length still holds (uploads often need it).
        if let Some(len) = length {
            h.insert(header::CONTENT_LENGTH, len);
        }
    }
    if let Some(ext) = builder.extensions_mut() {
        *ext = std::mem::take(&mut parts.extensions);
    }
    let upstream_req = builder.body(body)?;
    let route = |attempts| RouteInfo {
        model: "".into(),
        entry: None,
        upstream: up.upstream.name.clone(),
        attempts,
        user_id: user_id.clone(),
    };
    tracing::debug!(upstream = %up.upstream.name, path = %parts.uri.path(), "passing through");
    match up.service.clone().oneshot(upstream_req).await {
        // An HTML page is an error page only where an error status says so: a file's own
        // content may be HTML.
        Ok(resp) => {
            let attempts = attempts_made(&resp);
            up.answer(resp, route(attempts), |s| {
                s.is_client_error() || s.is_server_error()
            })
            .await
        }
        Err(_) if over.load(Ordering::Acquire) => Err(Box::new(CollectError::TooLarge { limit })),
        Err(e) => Err(Box::new(RoutedError {
            route: route(attempts_failed(&*e)),
            source: e,
        })),
    }
}

/// `x-portcullis-upstream`, else the upstream of the model the URI names (a
/// `/v1/models/{id}` path's, else the `model` query parameter's), else for an Anthropic
/// request (`anthropic-version`, or a `/v1/messages/...` path: message batches) the first
/// upstream that speaks Anthropic's API, else the `*` model's upstream.
fn pick_upstream(
    inner: &Inner,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Result<String, NoUpstream> {
    if let Some(v) = headers.get(X_PORTCULLIS_UPSTREAM_REQUEST) {
        let name = v.to_str().unwrap_or("");
        return if inner.upstreams.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(NoUpstream(format!(
                "x-portcullis-upstream names no configured upstream; configured: {}",
                upstream_names(inner)
            )))
        };
    }
    // A Responses answer the gateway translated (its id says so) is kept by the translation
    // layers, which share one store: any of their upstreams answers for it.
    if let Some(name) = inner
        .translated
        .as_ref()
        .filter(|_| portcullis_translate::store::is_kept_response_path(uri.path()))
    {
        return Ok(name.clone());
    }
    // A model the URI names routes it when an entry other than `*` claims it; else the
    // request is as one that names none.
    let model = uri_model(uri);
    match model.as_deref().and_then(|m| inner.models.lookup_entry(m)) {
        Some((ModelPattern::Any, _)) | None => {}
        Some((_, route)) => return Ok(route.first().upstream.clone()),
    }
    // Anthropic's SDKs send `anthropic-version` on every request; an OpenAI client never does.
    let anthropic =
        headers.contains_key(ANTHROPIC_VERSION) || uri.path().starts_with("/v1/messages/");
    if let Some(name) = inner.anthropic.as_ref().filter(|_| anthropic) {
        return Ok(name.clone());
    }
    match inner.models.lookup("") {
        Some(star) => Ok(star.first().upstream.clone()),
        None => Err(NoUpstream(format!(
            "no upstream for this path: send a JSON body with a configured model, a \
             configured model in the query (?model=...), or the header x-portcullis-upstream \
             naming one of: {}",
            upstream_names(inner)
        ))),
    }
}

/// The model a body-less request names in its URI: the id of `/v1/models/{id}` (retrieve a
/// model, delete a fine-tune: `claude-sonnet-4-5` is asked of the `claude-*` upstream), else
/// the `model` query parameter (`GET /v1/chat/completions?model=gpt-4o`, stored completions).
fn uri_model(uri: &http::Uri) -> Option<String> {
    let from_path = uri
        .path()
        .strip_prefix("/v1/models/")
        .filter(|id| !id.is_empty())
        .map(|id| {
            percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned()
        });
    from_path.or_else(|| super::websocket::query_model(uri.query()))
}

fn upstream_names(inner: &Inner) -> String {
    let mut names: Vec<&str> = inner.upstreams.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

/// For a pass-through request: a JSON body (within the cap) is read once, so its model can
/// route it and key rate limits; any other body is left alone and marked as having no model,
/// so no layer reads it.
pub async fn peek_json(req: Request<Body>, limit: usize) -> Result<Request<Body>, BoxError> {
    let json = portcullis_core::headers::content_type(req.headers()).is_some_and(|ct| {
        portcullis_core::headers::starts_with_ignore_case(ct, b"application/json")
    });
    if json {
        let (req, _) = portcullis_core::meta::peek(req, limit).await?;
        return Ok(req);
    }
    let mut req = req;
    req.extensions_mut().insert(RequestMeta::default());
    Ok(req)
}

/// A request body that ends with an error once it passes `left` bytes, and says so in
/// `over`: the upstream sees a broken body, the client a 413. The rest of the client's body
/// is then read and dropped for a while (by the server, when the body is dropped).
struct Capped {
    inner: Option<Body>,
    left: usize,
    over: Arc<AtomicBool>,
}

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > this.left {
                        this.over.store(true, Ordering::Release);
                        // Dropped here: the server reads the rest on for a while, so the
                        // client, still sending, reads its 413 (`server::Deadline`).
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(CollectError::TooLarge {
                            limit: 0,
                        }))));
                    }
                    this.left -= data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl std::fmt::Debug for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capped").field("left", &self.left).finish()
    }
}
