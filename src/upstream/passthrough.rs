//! Every other `/v1/*` path (files, uploads, images, audio, batches, moderations, stored
//! responses, ...): sent to an upstream as it came, the body streamed, never buffered whole.
//!
//! The upstream is the one of the body's `model` when the body is JSON naming one (routed
//! like an API call: model rewrite, fallbacks), else the one named by the request header
//! `x-portcullis-upstream`, else the one of the `*` model; none: 404.
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
    RequestMeta, RouteInfo, UserId,
};
use tower::{BoxError, Service, ServiceExt};

use super::router::{attempts_failed, attempts_made, route_model, Inner, ModelRouter, RoutedError};

/// The request header that names the upstream of a pass-through request without a model.
pub const X_PORTCULLIS_UPSTREAM_REQUEST: HeaderName =
    HeaderName::from_static("x-portcullis-upstream");

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
        return route_model(&inner, parts, bytes, model).await;
    }
    let name = pick_upstream(&inner, req.headers())?;
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

/// `x-portcullis-upstream`, else the `*` model's upstream.
fn pick_upstream(inner: &Inner, headers: &http::HeaderMap) -> Result<String, NoUpstream> {
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
    match inner.models.lookup("") {
        Some(star) => Ok(star.first().upstream.clone()),
        None => Err(NoUpstream(format!(
            "no upstream for this path: send a JSON body with a configured model, or the \
             header x-portcullis-upstream naming one of: {}",
            upstream_names(inner)
        ))),
    }
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
/// is then read and dropped for a while ([`linger`]).
struct Capped {
    inner: Option<Body>,
    left: usize,
    over: Arc<AtomicBool>,
}

/// How much of an over-limit body is read and dropped after the 413, at most.
const LINGER_BYTES: usize = 8 * 1024 * 1024;
/// For how long, at most.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Read and drop the rest of a client's body that crossed the limit, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`]: a client still sending when the 413 is written keeps
/// its connection long enough to read it, where closing it with the body unread resets the
/// connection under the client's next write (nginx's `lingering_close`, for the same reason).
async fn linger(mut body: Body) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut left = LINGER_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n >= left {
                return;
            }
            left -= n;
        }
    })
    .await;
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
                        if let Some(rest) = this.inner.take() {
                            tokio::spawn(linger(rest));
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_body_over_the_limit_is_read_on_for_a_while_after_the_413() {
        // A client's upload, one bounded frame at a time.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let data = rx.recv().await?;
            Some((Ok::<_, std::convert::Infallible>(Frame::data(data)), rx))
        });
        let over = Arc::new(AtomicBool::new(false));
        let mut capped = Capped {
            inner: Some(Body::new(http_body_util::StreamBody::new(frames))),
            left: 10,
            over: over.clone(),
        };
        tx.send(Bytes::from_static(b"12345")).await.expect("sent");
        let first = capped
            .frame()
            .await
            .expect("a frame")
            .expect("under the limit");
        assert_eq!(first.into_data().expect("data"), "12345");
        tx.send(Bytes::from_static(b"1234567890"))
            .await
            .expect("sent");
        assert!(capped.frame().await.expect("a frame").is_err());
        assert!(over.load(Ordering::Acquire));
        // The upstream request (and this body) is gone; the client, still sending, is read
        // and dropped rather than cut off.
        drop(capped);
        for _ in 0..20 {
            tokio::time::timeout(Duration::from_secs(5), tx.send(Bytes::from_static(b"more")))
                .await
                .expect("read on, not stalled")
                .expect("read on, not refused");
        }
    }
}
