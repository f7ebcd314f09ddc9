//! Gateway access control: gateway keys (`[[keys]]` with their policy, `server.api_keys`
//! without one) for the proxied routes and the guarded endpoints, `server.admin_key` for
//! `/admin/*`.
//!
//! [`AuthLayer`] runs before any body is read: it finds the key the caller presented, removes
//! the header that carried it (so `auth = "passthrough"` never sends the gateway's key
//! upstream), and names the caller for every layer below ([`KeyName`], its [`ApiKeyHash`]).
//! [`KeyPolicyLayer`] runs after validation, when the model is known: the key's `models`,
//! `rate_limit` and `max_concurrency`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use futures_util::{
    future::{BoxFuture, Either, Ready},
    FutureExt as _, TryFutureExt as _,
};
use http::{header::AUTHORIZATION, HeaderMap, HeaderName, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use portcullis_core::{
    error::{Refusal, Refused},
    pattern::{ModelPattern, PatternSet},
    ApiKeyHash, BoundUserId, CallerId, KeyName, RequestMeta,
};
use portcullis_rate_limit::{MemoryLimiter, RateKey, RateLimited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer, Service};

use crate::{config::Config, error::Unauthorized};

/// One gateway key and its policy.
#[derive(Debug)]
pub struct KeyEntry {
    /// `[[keys]] name` (for `server.api_keys`, `api_keys[i]`).
    pub name: Arc<str>,
    /// The memory user id the key binds, if any.
    pub user_id: Option<Arc<str>>,
    /// The models it may use; `None`: every model.
    models: Option<PatternSet<()>>,
    /// Its own rate limit.
    limiter: Option<MemoryLimiter>,
    /// Its in-flight cap.
    in_flight: Option<Arc<Semaphore>>,
    max_concurrency: u32,
}

/// The gateway keys, by hash (never in clear). Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_hash: Arc<HashMap<ApiKeyHash, Arc<KeyEntry>>>,
}

/// The key a request was let in with (a request extension [`AuthLayer`] inserts).
#[derive(Debug, Clone)]
pub struct MatchedKey(pub Arc<KeyEntry>);

impl Keys {
    /// The keys of `[[keys]]` and `server.api_keys` (resolved secrets).
    pub fn from_config(config: &Config) -> Self {
        Self::from_config_carrying(config, &Keys::default())
    }

    /// Like [`from_config`](Self::from_config), for a reload: a key of `prev` with the same
    /// name keeps its rate-limit bucket while its `rate_limit` is unchanged, and its
    /// in-flight count while its `max_concurrency` is (requests running on the old stack
    /// still hold their slots).
    pub fn from_config_carrying(config: &Config, prev: &Keys) -> Self {
        let before = |name: &str| prev.by_hash.values().find(|e| &*e.name == name);
        let mut by_hash = HashMap::new();
        for (i, k) in config.server.api_keys.iter().enumerate() {
            by_hash.insert(
                ApiKeyHash::of(k.expose()),
                Arc::new(KeyEntry {
                    name: format!("api_keys[{i}]").into(),
                    user_id: None,
                    models: None,
                    limiter: None,
                    in_flight: None,
                    max_concurrency: 0,
                }),
            );
        }
        for k in &config.keys {
            let models = (!k.models.is_empty()).then(|| {
                k.models
                    .iter()
                    .map(|m| (ModelPattern::parse(m), ()))
                    .collect()
            });
            by_hash.insert(
                ApiKeyHash::of(k.key.expose()),
                Arc::new(KeyEntry {
                    name: k.name.as_str().into(),
                    user_id: k.user_id.as_deref().map(Arc::from),
                    models,
                    limiter: k.rate_limit.map(|q| {
                        before(&k.name)
                            .and_then(|e| e.limiter.clone())
                            .filter(|l| l.quota() == q)
                            .unwrap_or_else(|| MemoryLimiter::new(q))
                    }),
                    in_flight: (k.max_concurrency > 0).then(|| {
                        before(&k.name)
                            .filter(|e| e.max_concurrency == k.max_concurrency)
                            .and_then(|e| e.in_flight.clone())
                            .unwrap_or_else(|| Arc::new(Semaphore::new(k.max_concurrency as usize)))
                    }),
                    max_concurrency: k.max_concurrency,
                }),
            );
        }
        Self {
            by_hash: Arc::new(by_hash),
        }
    }

    /// No keys configured: everyone is let in.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The key in `headers` (`Authorization: Bearer K`, else `x-api-key: K`) and the header
    /// that carried it.
    pub fn find(&self, headers: &HeaderMap) -> Result<(Arc<KeyEntry>, HeaderName), Unauthorized> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .unwrap_or(v)
                    .trim()
            });
        let x_api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        // Either header may carry it: with `auth = "passthrough"` an Anthropic client sends
        // the gateway key in one and its provider key in the other.
        for (presented, header) in [
            (bearer, AUTHORIZATION),
            (x_api_key, HeaderName::from_static("x-api-key")),
        ] {
            if let Some(k) = presented.filter(|k| !k.is_empty()) {
                if let Some(e) = self.by_hash.get(&ApiKeyHash::of(k)) {
                    return Ok((e.clone(), header));
                }
            }
        }
        Err(Unauthorized(
            if bearer.or(x_api_key).is_some_and(|k| !k.is_empty()) {
                "invalid API key"
            } else {
                "missing API key: send Authorization: Bearer <key> or x-api-key: <key>"
            },
        ))
    }

    /// Whether `headers` carry a valid key (always, when there are none).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        if self.is_empty() {
            return Ok(());
        }
        self.find(headers).map(|_| ())
    }
}

// === AuthLayer ===

/// Requires a gateway key when any is configured; see the module docs. Cloning shares the
/// key table.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: Keys,
}

impl AuthLayer {
    /// Let in the callers presenting one of `keys` (none: everyone).
    pub fn new(keys: Keys) -> Self {
        Self { keys }
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
    keys: Keys,
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        if self.keys.is_empty() {
            // The caller's identity (dedup key, per-caller cookie jars): every credential
            // header that goes upstream, hashed together.
            let caller = CallerId::of(req.headers(), None);
            req.extensions_mut().insert(caller);
        } else {
            match self.keys.find(req.headers()) {
                Ok((entry, header)) => {
                    // The identity includes the gateway key, so it is taken before the header
                    // that carries the key goes.
                    let gateway_key = req
                        .headers()
                        .get(&header)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| {
                            ApiKeyHash::of(
                                v.trim().strip_prefix("Bearer ").unwrap_or(v.trim()).trim(),
                            )
                        });
                    let caller = CallerId::of(req.headers(), gateway_key.as_ref());
                    // The gateway's key is for the gateway: it never goes upstream.
                    req.headers_mut().remove(header);
                    req.extensions_mut().insert(caller);
                    // A key's user_id wins over every client header (memory routing).
                    if let Some(user) = &entry.user_id {
                        req.extensions_mut().insert(BoundUserId::new(user.clone()));
                    }
                    let ext = req.extensions_mut();
                    ext.insert(KeyName(entry.name.clone()));
                    // The caller's identity for rate limits keyed on `api_key`: the key's
                    // name, stable across replicas and key rotation.
                    ext.insert(ApiKeyHash::of(&format!(
                        "portcullis key name {}",
                        entry.name
                    )));
                    ext.insert(MatchedKey(entry));
                }
                Err(e) => {
                    return Either::Right(futures_util::future::ready(
                        Err(Box::new(e) as BoxError),
                    ));
                }
            }
        }
        Either::Left(
            self.inner
                .call(req)
                .map_err(Into::into as fn(S::Error) -> BoxError),
        )
    }
}

// === KeyPolicyLayer ===

/// The key may not use this model: `403 model_not_allowed`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("key {key:?} may not use model {model:?}")]
pub struct ModelNotAllowed {
    /// The key's name.
    pub key: Arc<str>,
    /// The model asked for.
    pub model: String,
}

impl Refusal for ModelNotAllowed {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::FORBIDDEN
    }
    fn code(&self) -> &'static str {
        "model_not_allowed"
    }
}

/// The key already has `max_concurrency` requests in flight: `429 rate_limited`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("key {key:?} already has {max} requests in flight (its max_concurrency)")]
pub struct TooManyInFlight {
    /// The key's name.
    pub key: Arc<str>,
    /// Its cap.
    pub max: u32,
}

impl Refusal for TooManyInFlight {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "rate_limited"
    }
    fn headers(&self) -> HeaderMap {
        portcullis_core::error::retry_after_header(std::time::Duration::from_secs(1))
    }
}

/// A matched key's policy, once the model is known (after validation): its `models`, its
/// own `rate_limit`, its `max_concurrency` (held until the response body ends).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyPolicyLayer;

impl<S> Layer<S> for KeyPolicyLayer {
    type Service = KeyPolicy<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KeyPolicy { inner }
    }
}

/// See [`KeyPolicyLayer`].
#[derive(Debug, Clone)]
pub struct KeyPolicy<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for KeyPolicy<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    /// Requests without a gateway key (no `[[keys]]`, the common case) go on in the inner
    /// future itself, not boxed: a box, a copy of the inner future into it and a dynamic
    /// call per poll saved on each of them.
    type Future = Either<
        futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>,
        BoxFuture<'static, Result<Response<Body>, BoxError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(MatchedKey(key)) = req.extensions().get::<MatchedKey>().cloned() else {
            return Either::Left(self.inner.call(req).map_err(Into::into as fn(_) -> _));
        };
        Either::Right(self.call_keyed(key, req))
    }
}

impl<S> KeyPolicy<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    fn call_keyed(
        &mut self,
        key: Arc<KeyEntry>,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
        // Combinators, not async blocks: a block would keep what it awaits twice in its state
        // (captured, then awaited), and every request's boxed future is copied whole.
        if let Err(e) = admit(&key, &req) {
            return Box::pin(async move { Err(e) });
        }
        let permit = match &key.in_flight {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let e = Refused::boxed(TooManyInFlight {
                        key: key.name.clone(),
                        max: key.max_concurrency,
                    });
                    return Box::pin(async move { Err(e) });
                }
            },
        };
        // Called here, on the service `poll_ready` readied: nothing waits before the call, so
        // no clone of the stack below is needed to carry into the future.
        Box::pin(self.inner.call(req).map(move |resp| {
            let resp = resp.map_err(Into::into)?;
            Ok(match permit {
                None => resp,
                // The slot is the key's until the answer (a stream included) has ended.
                Some(permit) => resp.map(|inner| {
                    Body::new(HoldPermit {
                        inner,
                        _permit: permit,
                    })
                }),
            })
        }))
    }
}

fn admit(key: &KeyEntry, req: &Request<Body>) -> Result<(), BoxError> {
    if let Some(models) = &key.models {
        let model = req
            .extensions()
            .get::<RequestMeta>()
            .and_then(|m| m.model.as_deref())
            .unwrap_or("");
        if models.lookup(model).is_none() {
            return Err(Refused::boxed(ModelNotAllowed {
                key: key.name.clone(),
                model: model.chars().take(200).collect(),
            }));
        }
    }
    if let Some(limiter) = &key.limiter {
        let d = limiter.check(&RateKey::derive("gateway key", key.name.as_bytes()), 1);
        if !d.allowed {
            return Err(Refused::boxed(RateLimited::from_decision(&d)));
        }
    }
    Ok(())
}

pin_project! {
    /// A response body holding the key's in-flight slot until it ends or is dropped.
    struct HoldPermit {
        #[pin]
        inner: Body,
        _permit: OwnedSemaphorePermit,
    }
}

impl HttpBody for HoldPermit {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client IP for rate limits keyed on it: the peer's, or, when the peer is one of
/// `server.trusted_proxies`, the last address in `X-Forwarded-For` that is not itself a
/// trusted proxy (earlier entries are the client's word, not the proxies').
pub fn client_ip_of(
    peer: std::net::IpAddr,
    headers: &http::HeaderMap,
    trusted: &[(std::net::IpAddr, u8)],
) -> std::net::IpAddr {
    let is_trusted =
        |ip: std::net::IpAddr| trusted.iter().any(|(net, len)| in_cidr(ip, *net, *len));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
}

fn in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, len: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
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

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = [
            ("127.0.0.1".parse().unwrap(), 32),
            ("10.0.0.0".parse().unwrap(), 8),
        ];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        // The last hop that is not a trusted proxy is the client.
        assert_eq!(
            client_ip_of(lo, &h, &trusted),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // From an untrusted peer the header is the client's word: ignored.
        let other: std::net::IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip_of(other, &h, &trusted), other);
        // Behind a local proxy, a remote client is no longer loopback to the admin rule.
        let peer = SocketAddr::new(client_ip_of(lo, &h, &trusted), 1);
        assert!(!admin_allowed("", &HeaderMap::new(), Some(peer)));
        // Without trusted proxies nothing changes.
        assert_eq!(client_ip_of(lo, &h, &[]), lo);
    }
}
