//! Gateway access control: `server.api_keys` for proxied routes, `server.admin_key` for
//! `/admin/*`.

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Body;
use futures_util::future::{Either, Ready};
use http::{Request, Response};
use portcullis_core::{identity::api_key, ApiKeyHash};
use tower::{BoxError, Layer, Service};

use crate::error::Unauthorized;

/// Requires one of the configured keys (`Authorization: Bearer K` or `x-api-key: K`).
///
/// Keys are kept only as hashes, so a heap dump or a `Debug` print does not reveal them.
/// An empty key list lets every caller through. Cloning shares the key set.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: Arc<Vec<ApiKeyHash>>,
}

impl AuthLayer {
    /// Accept these keys (none: accept everyone).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            keys: Arc::new(keys.into_iter().map(ApiKeyHash::of).collect()),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: Arc<Vec<ApiKeyHash>>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Either<
        futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>,
        Ready<Result<Response<Body>, BoxError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        if !self.keys.is_empty() {
            let ok = api_key(req.headers())
                .map(ApiKeyHash::of)
                .is_some_and(|h| self.keys.contains(&h));
            if !ok {
                let msg = if api_key(req.headers()).is_some() {
                    "invalid API key"
                } else {
                    "missing API key: send Authorization: Bearer <key> or x-api-key: <key>"
                };
                return Either::Right(futures_util::future::ready(Err(
                    Box::new(Unauthorized(msg)) as BoxError,
                )));
            }
        }
        Either::Left(
            self.inner
                .call(req)
                .map_err(Into::into as fn(S::Error) -> BoxError),
        )
    }
}

/// Whether `headers` carry one of `keys` (an empty set lets everyone in).
pub fn check_key(keys: &[ApiKeyHash], headers: &http::HeaderMap) -> Result<(), Unauthorized> {
    if keys.is_empty() {
        return Ok(());
    }
    match api_key(headers) {
        Some(k) if keys.contains(&ApiKeyHash::of(k)) => Ok(()),
        Some(_) => Err(Unauthorized("invalid API key")),
        None => Err(Unauthorized(
            "missing API key: send Authorization: Bearer <key> or x-api-key: <key>",
        )),
    }
}

/// Whether a caller may use `/admin/*`: with an admin key, it must be presented as a bearer
/// token; without one, only loopback clients are let in.
pub fn admin_allowed(admin_key: &str, headers: &http::HeaderMap, peer: Option<SocketAddr>) -> bool {
    if admin_key.is_empty() {
        return peer.is_some_and(|p| p.ip().is_loopback());
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compare hashes: equal-length digests make the comparison time independent of where
    // the strings differ.
    presented.is_some_and(|p| blake3::hash(p.as_bytes()) == blake3::hash(admin_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_guard() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let none = http::HeaderMap::new();
        assert!(admin_allowed("", &none, Some(lo)));
        assert!(!admin_allowed("", &none, Some(remote)));
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(admin_allowed("s3cret", &h, Some(remote)));
        assert!(!admin_allowed("other", &h, Some(lo)));
        assert!(!admin_allowed("s3cret", &none, Some(lo)));
    }
}
