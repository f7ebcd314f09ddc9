//! The dedup/cache middleware: decides per request between bypass, cache hit, leading a
//! shared upstream call, and following one.

use std::{
    collections::{hash_map::Entry, HashMap},
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{FutureExt as _, TryFutureExt as _};
use http::{
    header::{self, HeaderName},
    Extensions, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body::Body;
use portcullis_core::{
    body::{collect_up_to, CollectError, Collected, DEFAULT_MAX_BODY_BYTES},
    headers::{X_PORTCULLIS_ATTEMPTS, X_PORTCULLIS_CACHE},
    meta,
    remote::Unavailable,
    static_key, Attempts, CacheOutcome, CanonicalBody, RequestMeta,
};
use tokio::sync::Notify;
use tower::{BoxError, Service, ServiceExt};
use tracing::Instrument;

use crate::{
    body::Rechain,
    error::{RequestBodyError, ResponseBodyError, SharedCallLost, SharedError},
    future::ResponseFuture,
    key::{self, Key},
    store::{CacheHit, CacheStore, CachedResponse, MemoryStore},
    Config,
};

/// Middleware that lets identical in-flight requests share one upstream call and, with
/// `cache_ttl > 0`, replays completed responses. See the crate docs for the rules.
///
/// Clones share the in-flight map and the cache (they live in an `Arc`), as do all services
/// made by one [`DedupCacheLayer`](crate::DedupCacheLayer).
///
/// Always ready: each request readies a clone of the inner service only when it sends (see
/// "Readiness" in the crate docs).
#[derive(Clone)]
pub struct DedupCache<S> {
    inner: S,
    shared: Arc<Shared>,
    max_body_bytes: usize,
}

impl<S> DedupCache<S> {
    /// Wrap `inner` with its own in-flight map and, if `config.cache_ttl > 0`, its own
    /// in-memory cache; bodies are capped at [`DEFAULT_MAX_BODY_BYTES`].
    pub fn new(inner: S, config: Config) -> Self {
        Self::from_shared(
            inner,
            Arc::new(Shared::new(config, None)),
            DEFAULT_MAX_BODY_BYTES,
        )
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>, max_body_bytes: usize) -> Self {
        Self {
            inner,
            shared,
            max_body_bytes,
        }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for DedupCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupCache")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for DedupCache<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes> + Rechain + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes> + Rechain + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: a request may be answered without the inner service (a hit, a
        // follower), so the inner service's backpressure must not hold it back, and none
        // of its capacity is reserved for a request that may wait. Each request readies a
        // clone of the inner service when, and if, it sends.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let cap = self.max_body_bytes;
        // Never readied (see poll_ready): the request's future readies it to send.
        let inner = self.inner.clone();
        if let Some(reason) = bypass_before_body(&req, &self.shared.config, cap) {
            // Not needed here, nor by anything after this layer.
            req.extensions_mut().remove::<CanonicalBody>();
            return ResponseFuture::new(bypass(inner, req, None, reason));
        }
        ResponseFuture::new(handle(self.shared.clone(), inner, req, cap))
    }
}

// === shared state ===

/// State every clone of the layer and its services shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `None` when `cache_ttl` is zero.
    store: Option<Arc<dyn CacheStore>>,
    /// With a store of the caller's (Redis): the in-process cache used while that store is
    /// [`Unavailable`], so caching goes on per process during an outage.
    local: Option<MemoryStore>,
    /// One entry per shared upstream call in progress; followers subscribe to its outcome.
    /// Keys are blake3 hashes: foldhash (seeded per map) suffices, SipHash costs ~10x.
    in_flight: Mutex<InFlight>,
}

/// The shared upstream calls in progress, by key.
pub(crate) type InFlight = HashMap<Key, Arc<Call>, foldhash::fast::RandomState>;

impl Shared {
    pub(crate) fn new(config: Config, store: Option<Arc<dyn CacheStore>>) -> Self {
        let (store, local) = match (config.caching(), store) {
            (false, _) => (None, None),
            (true, None) => (
                Some(
                    Arc::new(MemoryStore::bounded(config.max_entries, config.max_bytes))
                        as Arc<dyn CacheStore>,
                ),
                None,
            ),
            (true, Some(store)) => (
                Some(store),
                Some(MemoryStore::bounded(config.max_entries, config.max_bytes)),
            ),
        };
        Self {
            config,
            store,
            local,
            in_flight: Mutex::new(InFlight::default()),
        }
    }

    /// The in-process fallback, if `error` says the store could not be reached.
    fn fallback_for(&self, error: &BoxError) -> Option<&MemoryStore> {
        let local = self.local.as_ref()?;
        portcullis_core::error::find_in_chain::<Unavailable>(&**error).map(|_| local)
    }

    pub(crate) fn in_flight(&self) -> MutexGuard<'_, InFlight> {
        // The map is consistent after every statement, so a panic elsewhere leaves it usable.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn cache_get(&self, key: &Key) -> Option<CacheHit> {
        let store = self.store.as_ref()?;
        match store.get(key).await {
            Ok(hit) => hit,
            Err(error) => match self.fallback_for(&error) {
                // The store logs the outage once; this request is served locally.
                Some(local) => local.get(key).await.ok().flatten(),
                None => {
                    tracing::warn!(key = %key.short(), %error, "dedup cache read failed; treating as a miss");
                    None
                }
            },
        }
    }

    async fn cache_put(&self, key: &Key, r: &SharedResponse) {
        let Some(store) = &self.store else { return };
        if !r.cacheable {
            return;
        }
        let mut headers = r.headers.clone();
        // A cookie is meant for one response; replaying it would resurrect stale sessions.
        headers.remove(header::SET_COOKIE);
        let cached = CachedResponse {
            status: r.status,
            headers,
            body: r.body.clone(),
        };
        let ttl = self.config.cache_ttl;
        // Only a write that failed because the store was unavailable needs the response
        // again: keep a copy (bodies are reference-counted) for that case.
        let copy = self.local.is_some().then(|| cached.clone());
        if let Err(error) = store.put(key, cached, ttl).await {
            match (self.fallback_for(&error), copy) {
                (Some(local), Some(cached)) => {
                    let _ = local.put(key, cached, ttl).await;
                }
                _ => tracing::warn!(key = %key.short(), %error, "dedup cache write failed"),
            }
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("local", &self.local)
            .field("in_flight", &self.in_flight().len())
            .finish()
    }
}

/// What a shared upstream call ended with, as every follower sees it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The whole response, ready to be copied to each waiter.
    Ready(Arc<SharedResponse>),
    /// The response could not be shared (an event stream, or bigger than the cap): the
    /// leader got it as a stream; followers make their own calls.
    Streamed,
    /// The inner service failed.
    Failed(SharedError),
}

/// One shared upstream call in progress, as its followers see it: its outcome once known.
/// The in-flight map, the leader's [`Publisher`] and each follower hold it; nothing else.
#[derive(Default)]
pub(crate) struct Call {
    state: Mutex<CallState>,
    /// Woken once, when the state leaves `Pending`.
    done: Notify,
}

#[derive(Default)]
enum CallState {
    #[default]
    Pending,
    Done(Outcome),
    /// Ended with nothing for followers: the call was lost (a panic, a runtime shutting
    /// down), or nobody followed it (then nobody can see this).
    Gone,
}

impl Call {
    fn state(&self) -> MutexGuard<'_, CallState> {
        // Each write is one assignment, so a panic elsewhere leaves the state usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for the outcome; `None` if the call ended without one.
    async fn outcome(&self) -> Option<Outcome> {
        loop {
            // Registered before the state is read, so a publish in between still wakes it.
            let mut notified = std::pin::pin!(self.done.notified());
            notified.as_mut().enable();
            match &*self.state() {
                CallState::Pending => {}
                CallState::Done(outcome) => return Some(outcome.clone()),
                CallState::Gone => return None,
            }
            notified.await;
        }
    }
}

/// The leader's hold on its shared call: takes the call out of the in-flight map and tells
/// the followers how it ended. Dropped unpublished (a panic in the call, a runtime dropping
/// the task), it still does both, so no key is ever stuck and no follower waits forever.
struct Publisher {
    shared: Arc<Shared>,
    key: Key,
    call: Arc<Call>,
    in_map: bool,
}

impl Publisher {
    /// Leave the in-flight map: requests from now on start afresh (or hit the cache)
    /// instead of joining a call that is over.
    fn leave_map(&mut self) {
        if !std::mem::take(&mut self.in_map) {
            return;
        }
        let mut map = self.shared.in_flight();
        // Only our own entry: a later call for the same key may have registered since.
        if map
            .get(&self.key)
            .is_some_and(|call| Arc::ptr_eq(call, &self.call))
        {
            map.remove(&self.key);
        }
    }

    /// Out of the map, whether any follower holds the call (none can join any more).
    fn followed(&self) -> bool {
        Arc::strong_count(&self.call) > 1
    }

    fn finish(&mut self, state: CallState) {
        self.leave_map();
        *self.call.state() = state;
        self.call.done.notify_waiters();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Only `finish` moves the state on, and it leaves the map first.
        let pending = matches!(*self.call.state(), CallState::Pending);
        if pending {
            self.finish(CallState::Gone);
        }
    }
}

/// What the leader's own client gets from the call it led.
enum Led<RB> {
    /// The response as a stream (it could not be shared).
    Stream(Response<RB>),
    /// The whole response, no follower waiting for it: nothing copied.
    Whole(SharedResponse),
    /// The whole response, shared with followers.
    Shared(Arc<SharedResponse>),
}

/// A completed response every waiter gets a copy of.
#[derive(Clone)]
pub(crate) struct SharedResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
    /// 2xx, within the cap and not `no-store`.
    cacheable: bool,
}

impl SharedResponse {
    /// A waiter's copy.
    fn to_response<RB: From<Bytes>>(&self, outcome: CacheOutcome) -> Response<RB> {
        self.clone().into_response(outcome)
    }

    /// The response itself, for the last holder: nothing copied.
    fn into_response<RB: From<Bytes>>(self, outcome: CacheOutcome) -> Response<RB> {
        let mut resp = Response::new(RB::from(self.body));
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        *resp.extensions_mut() = self.extensions;
        mark(&mut resp, outcome);
        resp
    }
}

// === the request path ===

/// Tell the client and the layers outside what was done: the `x-portcullis-cache` header and
/// the [`CacheOutcome`] extension.
fn mark<RB>(resp: &mut Response<RB>, outcome: CacheOutcome) {
    resp.headers_mut()
        .insert(X_PORTCULLIS_CACHE, outcome.header_value());
    resp.extensions_mut().insert(outcome);
}

/// The dedup outcome counter (label `outcome`).
const CACHE_METRIC: &str = "portcullis_cache_total";

fn record(outcome: CacheOutcome, key: Option<&Key>, reason: &'static str) {
    // Formatted only when the event is enabled.
    tracing::debug!(
        cache = outcome.as_str(),
        key = key.map(|k| tracing::field::display(k.short())),
        reason,
        "dedup cache decision"
    );
    // Keys made at compile time: no label vector or hashing per request.
    portcullis_core::counter::increment(match outcome {
        CacheOutcome::Miss => static_key!(CACHE_METRIC, "outcome" => "miss"),
        CacheOutcome::Hit => static_key!(CACHE_METRIC, "outcome" => "hit"),
        CacheOutcome::Coalesced => static_key!(CACHE_METRIC, "outcome" => "coalesced"),
        CacheOutcome::Bypass => static_key!(CACHE_METRIC, "outcome" => "bypass"),
    });
}

/// A body read failure as the error it was, not wrapped in the collector's own.
fn read_error(e: CollectError) -> BoxError {
    match e {
        CollectError::Read(e) => e,
        other => other.into(),
    }
}

#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice
fn handle<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<B>,
    cap: usize,
) -> impl Future<Output = Result<Response<RB>, BoxError>>
where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes> + Rechain + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes> + Rechain + Send + 'static,
    RB::Error: Into<BoxError>,
{
    // Split here, not in the block: what the block captures stays in its state to the end,
    // so a request captured whole would sit there beside its parts. For the same reason the
    // rare paths (a bypass, no coalescing) are boxed: their futures would otherwise widen
    // every request's state, which is boxed and copied whole.
    let (mut parts, body) = req.into_parts();
    // The validation layer's canonical form of this body, if it left one: the body is then
    // not walked a second time. Taken off the request (and dropped with the key made) so
    // that nothing after this layer carries it.
    let canonical = parts.extensions.remove::<CanonicalBody>();
    async move {
        let cfg = &shared.config;
        // Boxed: `collect_up_to` hands back the unread rest, so it needs a body it can unpin.
        let collected = collect_up_to(Box::pin(body), cap)
            .await
            .map_err(|e| RequestBodyError(read_error(e)))?;
        let body = match collected {
            Collected::Complete(body) => body,
            partial => {
                // Not for this body, nor held for the rest of its call.
                drop(canonical);
                // Sent on unbuffered: the bytes read so far, then the rest as it arrives.
                let req = Request::from_parts(parts, B::rechain(partial.into_body()));
                let reason = "request body over max_body_bytes";
                return Box::pin(bypass(inner, req, None, reason)).await;
            }
        };

        let key = key::dedup_key_of(&parts, &body, canonical);
        // A `RequestMeta` saying "not streaming" was checked before the body was read. Without
        // one, the body is peeked, and what it says kept for the layers after this one.
        if parts.extensions.get::<RequestMeta>().is_none() {
            if let Some(m) = meta::parse(&body) {
                let stream = m.stream;
                parts.extensions.insert(m);
                if stream {
                    let req = Request::from_parts(parts, B::from(body));
                    return Box::pin(bypass(inner, req, Some(&key), "streaming request")).await;
                }
            }
        }

        if let Some(hit) = shared.cache_get(&key).await {
            record(CacheOutcome::Hit, Some(&key), "fresh cache entry");
            return Ok(hit_response(hit));
        }

        if !cfg.coalesce {
            record(CacheOutcome::Miss, Some(&key), "not cached");
            let req = Request::from_parts(parts, B::from(body));
            return Box::pin(async move {
                match fetch(inner, req, cap).await? {
                    Fetched::Complete(r) => {
                        shared.cache_put(&key, &r).await;
                        Ok(r.into_response(CacheOutcome::Miss))
                    }
                    Fetched::Streamed(mut resp) => {
                        mark(&mut resp, CacheOutcome::Miss);
                        Ok(resp)
                    }
                }
            })
            .await;
        }

        let role = match shared.in_flight().entry(key) {
            Entry::Occupied(e) => Role::Follower(e.get().clone()),
            Entry::Vacant(e) => {
                let call = Arc::new(Call::default());
                e.insert(call.clone());
                Role::Leader(call)
            }
        };

        match role {
            Role::Leader(call) => {
                record(CacheOutcome::Miss, Some(&key), "leads a shared call");
                // Made at once, so the entry goes however the call ends.
                let publisher = Publisher {
                    shared: shared.clone(),
                    key,
                    call,
                    in_map: true,
                };
                let req = Request::from_parts(parts, B::from(body));
                // Run here, in this request's task (no task spawned, no hand-over between
                // tasks); if this client disconnects first, the rest of the call is spawned and
                // goes on for the followers.
                let led = DetachOnDrop::new(lead(shared.clone(), inner, req, cap, publisher)).await;
                match led {
                    Some(Ok(Led::Stream(mut resp))) => {
                        mark(&mut resp, CacheOutcome::Miss);
                        Ok(resp)
                    }
                    Some(Ok(Led::Whole(r))) => Ok(r.into_response(CacheOutcome::Miss)),
                    Some(Ok(Led::Shared(r))) => Ok(r.to_response(CacheOutcome::Miss)),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(SharedCallLost.into()),
                }
            }
            Role::Follower(call) => match call.outcome().await {
                Some(Outcome::Ready(r)) => {
                    record(
                        CacheOutcome::Coalesced,
                        Some(&key),
                        "shared the leader's call",
                    );
                    Ok(r.to_response(CacheOutcome::Coalesced))
                }
                Some(Outcome::Streamed) => {
                    let req = Request::from_parts(parts, B::from(body));
                    let reason = "leader's response could not be shared";
                    Box::pin(bypass(inner, req, Some(&key), reason)).await
                }
                Some(Outcome::Failed(e)) => {
                    record(
                        CacheOutcome::Coalesced,
                        Some(&key),
                        "shared the leader's error",
                    );
                    Err(e.into())
                }
                None => Err(SharedCallLost.into()),
            },
        }
    }
}

/// A call that runs inline while it is polled, and is spawned to finish on its own (in the
/// span it was made in) if it is dropped first: the client it was running for went away,
/// and followers still wait for it. `None`: the call panicked.
struct DetachOnDrop<T: Send + 'static> {
    call: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    span: tracing::Span,
}

impl<T: Send + 'static> DetachOnDrop<T> {
    fn new(call: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            call: Some(Box::pin(call)),
            span: tracing::Span::current(),
        }
    }
}

impl<T: Send + 'static> Future for DetachOnDrop<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(None);
        };
        // A panic in the call (an upstream service's bug) ends the call, as it ended the
        // spawned task it once ran in: its publisher leaves the map, and the leader and its
        // followers learn the call was lost, instead of the panic taking this request's
        // connection down.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));
        let out = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => Some(out),
            Err(_) => None,
        };
        self.call = None;
        Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for DetachOnDrop<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // Outside a runtime (a test dropping it at the end) the call ends here: its
            // publisher leaves the map and followers learn the call was lost.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let span = std::mem::replace(&mut self.span, tracing::Span::none());
                rt.spawn(
                    async move {
                        // Nobody is left to read the leader's share.
                        let _ = call.await;
                    }
                    .instrument(span),
                );
            }
        }
    }
}

enum Role {
    Leader(Arc<Call>),
    Follower(Arc<Call>),
}

/// The leader's upstream call: fetched, cached, published to the followers; what the
/// leader's own client gets is returned.
fn lead<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<B>,
    cap: usize,
    mut publisher: Publisher,
) -> impl Future<Output = Result<Led<RB>, SharedError>>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Rechain,
    RB::Error: Into<BoxError>,
{
    // Chained, not awaited in one block: a block would keep the request it captured beside
    // the call (see `handle`), or a captured call twice (captured, and as the awaited call).
    fetch(inner, req, cap).then(move |fetched| async move {
        if let (Ok(Fetched::Complete(r)), true) = (&fetched, shared.store.is_some()) {
            // Stored before anyone is answered, so a client that repeats its request after
            // getting the answer finds it in the cache. Boxed: the store's future would
            // otherwise widen every leader's state, cached or not.
            Box::pin(shared.cache_put(&publisher.key, r)).await;
        }
        // Out of the map, nobody can join any more. If no follower holds the call, the leader
        // takes a whole response as it is (its headers and extensions not copied); else every
        // waiter gets a copy.
        publisher.leave_map();
        match fetched {
            Ok(Fetched::Complete(r)) if !publisher.followed() => {
                publisher.finish(CallState::Gone);
                Ok(Led::Whole(r))
            }
            Ok(Fetched::Complete(r)) => {
                let r = Arc::new(r);
                publisher.finish(CallState::Done(Outcome::Ready(r.clone())));
                Ok(Led::Shared(r))
            }
            Ok(Fetched::Streamed(resp)) => {
                publisher.finish(CallState::Done(Outcome::Streamed));
                Ok(Led::Stream(resp))
            }
            Err(e) => {
                let e = SharedError::new(Arc::from(e));
                publisher.finish(CallState::Done(Outcome::Failed(e.clone())));
                Err(e)
            }
        }
    })
}

/// Pass the request straight to the inner service, readied only now.
async fn bypass<S, B, RB>(
    inner: S,
    req: Request<B>,
    key: Option<&Key>,
    reason: &'static str,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    record(CacheOutcome::Bypass, key, reason);
    let mut resp = inner.oneshot(req).await.map_err(Into::into)?;
    mark(&mut resp, CacheOutcome::Bypass);
    Ok(resp)
}

/// Why a request must bypass the layer, judged from its head alone.
fn bypass_before_body<B: Body>(req: &Request<B>, cfg: &Config, cap: usize) -> Option<&'static str> {
    if !cfg.coalesce && !cfg.caching() {
        return Some("coalescing and caching both off");
    }
    if req.method() != Method::POST && req.method() != Method::GET {
        return Some("method is not GET or POST");
    }
    if asks_no_cache(req.headers()) {
        return Some("request says no-cache or no-store");
    }
    if req
        .extensions()
        .get::<RequestMeta>()
        .is_some_and(|m| m.stream)
    {
        return Some("streaming request");
    }
    if known_larger_than(req.headers(), req.body(), cap) {
        return Some("request body over max_body_bytes");
    }
    None
}

/// `Cache-Control: no-cache` / `no-store`, or HTTP/1.0's `Pragma: no-cache`.
fn asks_no_cache(headers: &HeaderMap) -> bool {
    let has = |name: HeaderName, wanted: &[&str]| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.split('=').next().unwrap_or("").trim())
            .any(|d| wanted.iter().any(|w| d.eq_ignore_ascii_case(w)))
    };
    has(header::CACHE_CONTROL, &["no-cache", "no-store"]) || has(header::PRAGMA, &["no-cache"])
}

fn response_says_no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
}

fn known_larger_than<T: Body>(headers: &HeaderMap, body: &T, cap: usize) -> bool {
    let cap = cap as u64;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    body.size_hint().lower() > cap || declared.is_some_and(|n| n > cap)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

// === the upstream call ===

enum Fetched<RB> {
    Complete(SharedResponse),
    Streamed(Response<RB>),
}

/// Ready the inner service, call it, and buffer its response if it can be shared.
fn fetch<S, B, RB>(
    inner: S,
    req: Request<B>,
    cap: usize,
) -> impl Future<Output = Result<Fetched<RB>, BoxError>>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Rechain,
    RB::Error: Into<BoxError>,
{
    // The call, then the body: chained, so that the state holds one at a time (an async block
    // awaiting the call would keep the service and request twice: captured, then in the call).
    inner
        .oneshot(req)
        .map_err(Into::into)
        .and_then(move |resp| async move {
            if is_event_stream(resp.headers())
                || known_larger_than(resp.headers(), resp.body(), cap)
            {
                return Ok(Fetched::Streamed(resp));
            }
            let (parts, body) = resp.into_parts();
            let bytes = match collect_up_to(Box::pin(body), cap)
                .await
                .map_err(|e| ResponseBodyError(read_error(e)))?
            {
                Collected::Complete(bytes) => bytes,
                // Over the cap: handed on as a stream (what was read, then the rest), not buffered,
                // so it cannot be shared; see "Responses that cannot be shared" in the crate docs.
                partial => {
                    let body = RB::rechain(partial.into_body());
                    return Ok(Fetched::Streamed(Response::from_parts(parts, body)));
                }
            };
            let mut headers = parts.headers;
            // A copy served on another connection must not carry the leader's connection headers.
            portcullis_core::headers::strip_hop_by_hop(&mut headers);
            let cacheable = parts.status.is_success() && !response_says_no_store(&headers);
            Ok(Fetched::Complete(SharedResponse {
                status: parts.status,
                version: parts.version,
                headers,
                extensions: parts.extensions,
                body: bytes,
                cacheable,
            }))
        })
}

fn hit_response<RB: From<Bytes>>(hit: CacheHit) -> Response<RB> {
    let CacheHit { response, age } = hit;
    let mut resp = Response::new(RB::from(response.body));
    *resp.status_mut() = response.status;
    *resp.headers_mut() = response.headers;
    resp.headers_mut().insert(
        header::AGE,
        portcullis_core::headers::int_value(age.as_secs()),
    );
    if resp.headers().contains_key(X_PORTCULLIS_ATTEMPTS) {
        // Nobody called the upstream for this answer.
        resp.headers_mut()
            .insert(X_PORTCULLIS_ATTEMPTS, HeaderValue::from_static("0"));
    }
    resp.extensions_mut().insert(Attempts(0));
    mark(&mut resp, CacheOutcome::Hit);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cache_directives() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(asks_no_cache(&h(&[("cache-control", "no-cache")])));
        assert!(asks_no_cache(&h(&[(
            "cache-control",
            "max-age=0, No-Store"
        )])));
        assert!(asks_no_cache(&h(&[
            ("cache-control", "max-age=0"),
            ("cache-control", "no-cache")
        ])));
        assert!(asks_no_cache(&h(&[("pragma", "no-cache")])));
        assert!(asks_no_cache(&h(&[(
            "cache-control",
            "no-cache=\"set-cookie\""
        )])));
        assert!(!asks_no_cache(&h(&[(
            "cache-control",
            "max-age=60, private"
        )])));
        assert!(!asks_no_cache(&h(&[])));
        assert!(!asks_no_cache(&h(&[("x-no-cache", "no-cache")])));
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut m = HeaderMap::new();
        m.insert(
            "connection",
            HeaderValue::from_static("close, x-conn-thing"),
        );
        m.insert("x-conn-thing", HeaderValue::from_static("1"));
        m.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        m.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        m.insert("content-type", HeaderValue::from_static("application/json"));
        m.insert("set-cookie", HeaderValue::from_static("a=b"));
        portcullis_core::headers::strip_hop_by_hop(&mut m);
        let left: Vec<_> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "set-cookie"]);
    }

    #[test]
    fn event_stream_detection() {
        let mut m = HeaderMap::new();
        assert!(!is_event_stream(&m));
        m.insert(
            "content-type",
            HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
        );
        assert!(is_event_stream(&m));
        m.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(!is_event_stream(&m));
    }
}
