//! Provider-key rotation (`upstreams[].api_keys`): several keys of one upstream used in turn;
//! a key the provider answered 429, 401 or 403 rests (its `Retry-After`, else 60 s) while the
//! others serve.
//!
//! The key is chosen per attempt, innermost in the upstream's stack (just before the client):
//! a retry after a 429 goes out with the next key, and every attempt's status is fed back to
//! the key it used. Logs and spans name the key's index (`key = 1`), never the key.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};
use tracing::Instrument;

use crate::config::{AuthMode, Secret};

/// How long a key answered 429/401/403 without a `Retry-After` rests.
pub const DEFAULT_REST: Duration = Duration::from_secs(60);

/// One upstream's provider keys and which of them rest. Cloning shares the state.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Ring>,
}

/// Reads how long a refused key should rest from the provider's answer.
pub type ParseRetryAfter = fn(&http::HeaderMap, SystemTime) -> Option<Duration>;

struct Ring {
    upstream: Arc<str>,
    parse_retry_after: ParseRetryAfter,
    header: HeaderName,
    keys: Vec<HeaderValue>,
    state: Mutex<RingState>,
}

struct RingState {
    /// The key to try first next time (round robin).
    next: usize,
    /// Per key: resting until then.
    resting_until: Vec<Option<Instant>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("KeyRing")
            .field("upstream", &self.inner.upstream)
            .field("keys", &self.inner.keys.len())
            .field("resting", &self.resting())
            .finish()
    }
}

impl KeyRing {
    /// The ring for `keys` (resolved secrets), sent as `auth` says (`bearer`: `Authorization:
    /// Bearer K`; `x-api-key`: `x-api-key: K`).
    pub fn new(upstream: &str, auth: AuthMode, keys: &[Secret]) -> Result<Self, String> {
        let (header, prefix) = match auth {
            AuthMode::Bearer => (http::header::AUTHORIZATION, "Bearer "),
            AuthMode::XApiKey => (HeaderName::from_static("x-api-key"), ""),
            other => {
                return Err(format!(
                    "api_keys needs auth = \"bearer\" or \"x-api-key\" (got {:?})",
                    other.as_str()
                ))
            }
        };
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut v = HeaderValue::from_str(&format!("{prefix}{}", k.expose()))
                    .map_err(|_| format!("api_keys[{i}] is not a valid header value"))?;
                v.set_sensitive(true);
                Ok(v)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let n = keys.len();
        Ok(Self {
            inner: Arc::new(Ring {
                upstream: upstream.into(),
                parse_retry_after: retry_after_secs,
                header,
                keys,
                state: Mutex::new(RingState {
                    next: 0,
                    resting_until: vec![None; n],
                }),
            }),
        })
    }

    /// Read `Retry-After` with `parse` (the retry layer's, which also knows HTTP dates and
    /// `retry-after-ms`) instead of the default, which reads whole seconds only.
    pub fn with_retry_after_parser(mut self, parse: ParseRetryAfter) -> Self {
        if let Some(ring) = Arc::get_mut(&mut self.inner) {
            ring.parse_retry_after = parse;
        }
        self
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys rest now.
    pub fn resting(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .resting_until
            .iter()
            .filter(|u| u.is_some_and(|u| u > now))
            .count()
    }

    /// The key for the next attempt: the next one in turn that is not resting; when all
    /// rest, the one whose rest ends first.
    pub fn choose(&self) -> usize {
        let now = Instant::now();
        let mut s = self.lock();
        let n = s.resting_until.len();
        for k in 0..n {
            let i = (s.next + k) % n;
            if s.resting_until[i].is_none_or(|u| u <= now) {
                s.resting_until[i] = None;
                s.next = (i + 1) % n;
                return i;
            }
        }
        let i = (0..n)
            .min_by_key(|&i| s.resting_until[i])
            .unwrap_or_default();
        tracing::debug!(upstream = %self.inner.upstream, key = i, "every provider key rests; trying the one that recovers first");
        i
    }

    /// Feed back the answer the key at `index` got.
    pub fn report(&self, index: usize, status: StatusCode, headers: &http::HeaderMap) {
        if !matches!(status.as_u16(), 429 | 401 | 403) {
            return;
        }
        let rest =
            (self.inner.parse_retry_after)(headers, SystemTime::now()).unwrap_or(DEFAULT_REST);
        tracing::warn!(
            upstream = %self.inner.upstream,
            key = index,
            status = status.as_u16(),
            rest_secs = rest.as_secs(),
            "provider key resting"
        );
        let mut s = self.lock();
        if let Some(slot) = s.resting_until.get_mut(index) {
            *slot = Some(Instant::now() + rest);
        }
    }
}

/// `Retry-After: N` in whole seconds.
fn retry_after_secs(headers: &http::HeaderMap, _now: SystemTime) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Puts a [`KeyRing`]'s key on every request and feeds the answer back.
#[derive(Debug, Clone)]
pub struct KeyRotationLayer {
    ring: KeyRing,
}

impl KeyRotationLayer {
    /// The layer for `ring`; every service it makes shares the ring.
    pub fn new(ring: KeyRing) -> Self {
        Self { ring }
    }
}

impl<S> Layer<S> for KeyRotationLayer {
    type Service = KeyRotation<S>;
    fn layer(&self, inner: S) -> KeyRotation<S> {
        KeyRotation {
            ring: self.ring.clone(),
            inner,
        }
    }
}

/// See [`KeyRotationLayer`].
#[derive(Debug, Clone)]
pub struct KeyRotation<S> {
    ring: KeyRing,
    inner: S,
}

impl<S> Service<Request<Body>> for KeyRotation<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let index = self.ring.choose();
        let ring = self.ring.clone();
        req.headers_mut()
            .insert(ring.inner.header.clone(), ring.inner.keys[index].clone());
        let span =
            tracing::debug_span!("provider_key", upstream = %ring.inner.upstream, key = index);
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let resp = fut.await.map_err(Into::into)?;
                ring.report(index, resp.status(), resp.headers());
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        let keys: Vec<Secret> = (0..n).map(|i| Secret::literal(format!("sk-{i}"))).collect();
        KeyRing::new("u", AuthMode::Bearer, &keys).unwrap()
    }

    fn retry_after(secs: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, secs.parse().unwrap());
        h
    }

    #[tokio::test(start_paused = true)]
    async fn keys_take_turns() {
        let r = ring(3);
        let picks: Vec<usize> = (0..6).map(|_| r.choose()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_answered_429_rests_until_its_retry_after_ends() {
        let r = ring(2);
        assert_eq!(r.choose(), 0);
        r.report(0, StatusCode::TOO_MANY_REQUESTS, &retry_after("10"));
        assert_eq!(r.resting(), 1);
        for _ in 0..5 {
            assert_eq!(r.choose(), 1, "key 0 rests");
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(r.choose(), 1, "still resting after 9 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(r.resting(), 0);
        let picks: Vec<usize> = (0..2).map(|_| r.choose()).collect();
        assert!(picks.contains(&0), "back in turn: {picks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_a_refused_key_rests_a_minute() {
        let r = ring(2);
        r.report(1, StatusCode::UNAUTHORIZED, &http::HeaderMap::new());
        r.report(0, StatusCode::OK, &http::HeaderMap::new());
        assert_eq!(r.resting(), 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!((0..3).map(|_| r.choose()).collect::<Vec<_>>(), [0, 0, 0]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(r.resting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_rest_the_first_to_recover_is_tried() {
        let r = ring(3);
        r.report(0, StatusCode::TOO_MANY_REQUESTS, &retry_after("30"));
        r.report(1, StatusCode::FORBIDDEN, &retry_after("5"));
        r.report(2, StatusCode::TOO_MANY_REQUESTS, &retry_after("20"));
        assert_eq!(r.resting(), 3);
        assert_eq!(r.choose(), 1);
        assert_eq!(r.choose(), 1);
    }

    #[test]
    fn debug_never_shows_a_key() {
        let r = ring(2);
        let s = format!("{r:?}");
        assert!(!s.contains("sk-"), "{s}");
    }
}
