//! [`Validation`]: the service that reads, checks and passes on request bodies.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header::CONTENT_LENGTH, HeaderMap, Method, Request};
use http_body::Body;
use portcullis_core::body::{collect_limited, DEFAULT_MAX_BODY_BYTES};
use tower::{BoxError, Service};

use portcullis_core::error::Refused;

use crate::{future::ResponseFuture, BodyTooLarge, Config, Route};

/// Checks the body of `POST` requests to the LLM API routes ([`Route`]) and passes the request
/// on only if it is valid, with a [`RequestMeta`](portcullis_core::RequestMeta) extension.
///
/// Other requests (other paths, other methods, e.g. `GET /v1/models`, `GET /v1/responses/{id}`
/// or OpenAI's `GET /v1/chat/completions` listing) pass through untouched, their bodies unread
/// and uncapped here (the gateway caps them elsewhere).
///
/// Errors, boxed: [`InvalidRequest`](crate::InvalidRequest) (the inner service is not called),
/// [`BodyTooLarge`] (before reading when `content-length` says so, otherwise as soon as the
/// limit is passed), [`BodyReadError`](crate::BodyReadError), and the inner service's own.
#[derive(Clone, Debug)]
pub struct Validation<S> {
    inner: S,
    config: Config,
    max_body_bytes: usize,
    canonical_body: bool,
}

impl<S> Validation<S> {
    /// Wrap `inner`, with the default body cap ([`DEFAULT_MAX_BODY_BYTES`]).
    pub fn new(inner: S, config: Config) -> Self {
        Self {
            inner,
            config,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            canonical_body: false,
        }
    }

    /// Also leave each valid body's canonical JSON form on the request (see
    /// [`ValidationLayer::with_canonical_body`](crate::ValidationLayer::with_canonical_body)).
    pub fn with_canonical_body(mut self, on: bool) -> Self {
        self.canonical_body = on;
        self
    }

    /// Reject bodies larger than `limit` bytes (see
    /// [`ValidationLayer::with_max_body_bytes`](crate::ValidationLayer::with_max_body_bytes)).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for Validation<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = match *req.method() {
            Method::POST => Route::from_path(req.uri().path()),
            _ => None,
        };
        let Some(route) = route else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        let limit = self.max_body_bytes;
        if content_length(req.headers()).is_some_and(|len| len > limit as u64) {
            tracing::debug!(%route, limit, "request rejected: content-length over the body limit");
            return ResponseFuture::failed(Refused::boxed(BodyTooLarge { limit }));
        }
        // The ready service goes into the future; `self` keeps a fresh clone (tower's idiom).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::reading(
            Box::pin(collect_limited(body, limit)),
            parts,
            inner,
            route,
            self.config.level,
            self.canonical_body,
        )
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
