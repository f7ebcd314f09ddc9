//! The connections of one upstream on one serving thread: HTTP/1.1 connections kept idle on a
//! stack (the last one back is the first out: warm, least likely to have been closed), one
//! HTTP/2 connection shared by every request; ALPN decides which a connection is. An HTTP/2
//! connection's task runs where it was made (the serving thread). An HTTP/1.1 connection has
//! no task: the request using it drives it (writes the request, reads the answer) from its own
//! task. While it sits idle nobody drives it: a close that came meanwhile is read by the next
//! request's first drive, which gets its request back unsent and tries another connection.
//!
//! Why no task for HTTP/1.1: with one, every chunk of an answer is a hand-over between two
//! tasks (the connection's decodes it, the request's forwards it), and on a serving thread
//! they take turns, so every chunk goes to the client in a write of its own. Driven from the
//! request's task, the chunks that arrived together are read together and leave in one write,
//! and a request wakes one task instead of two.
//!
//! Why not hyper-util's `Client` pool alone: it keys its pool by scheme and authority, hashed
//! (SipHash, byte by byte) three times per request, and takes and gives back every connection
//! through that map and its locks: 5.2k of the gateway's 140k instructions per JSON request
//! (callgrind), the pass-through's too. An upstream's pool on one thread has one origin and
//! needs no key: a take and a give-back are a lock nobody else holds and a `Vec` push or pop.
//! Requests for any other origin (a library user's own URIs through
//! [`super::UpstreamClient`]) keep going through hyper-util's client.
//!
//! What it keeps of hyper-util's behavior: a request that a reused connection closed before
//! it started is sent again on another connection (the upstream's keep-alive ended while the
//! connection sat idle: the request was never seen, so this is safe for any method); a fresh
//! HTTP/1.1 connection is used only once it is ready; an HTTP/1.1 request gets the origin form
//! and a `Host` header; idle connections are dropped after [`IDLE_TIMEOUT`] and beyond
//! [`MAX_IDLE`], and a connection the upstream closed while it sat idle is let go (its socket
//! freed) within [`SWEEP_EVERY`] even when no request comes: a pool with idle connections has
//! one sweeping task, which ends when none is left idle (hyper-util's pool has one too, as
//! every connection has its own task there).
//! An upstream that negotiated HTTP/2 gets one connection: while one request opens it, the
//! others wait for it (as hyper-util's pool does); only the very first requests, before any
//! connection said which protocol it speaks, each open their own (the first HTTP/2 one is
//! kept, the others end with their requests).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{
    header,
    uri::{Authority, Scheme},
    HeaderValue, Request, Response, Uri, Version,
};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::connect::{Connection, HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::{
    sync::{futures::Notified, Notify},
    time::Instant,
};
use tower::{BoxError, ServiceExt};

/// Idle HTTP/1.1 connections kept per upstream and thread (as hyper-util's
/// `pool_max_idle_per_host` was set).
pub const MAX_IDLE: usize = 256;

/// How long an HTTP/1.1 connection may sit idle before it is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a pool's idle HTTP/1.1 connections are looked at while they sit idle: one the
/// upstream closed meanwhile is let go, one past [`IDLE_TIMEOUT`] is closed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One upstream's connections on one serving thread (or off them: one shared pool).
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// The scheme and authority of the first request: the pool's only origin.
    origin: OnceLock<(Scheme, Authority)>,
    state: Mutex<State>,
    /// Woken when a request opening the HTTP/2 connection is done (with or without one).
    h2_opened: Notify,
    /// Connections opened, for tests and `Debug`.
    opened: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Pool")
            .field("idle", &state.idle.len())
            .field("h2", &state.h2.is_some())
            .field("opened", &self.opened.load(Ordering::Relaxed))
            .finish()
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Idle>,
    h2: Option<http2::SendRequest<Body>>,
    /// The last connection opened negotiated HTTP/2: a request finding none open opens one
    /// while the others wait for it (as hyper-util's pool does), instead of each its own.
    speaks_h2: bool,
    /// A request is opening the HTTP/2 connection.
    opening_h2: bool,
    /// A task sweeps the idle connections (see [`sweep`]).
    sweeping: bool,
}

/// What a request does for a connection.
enum Next {
    /// Send on this one.
    Use(Tx),
    /// Open one (`true`: the HTTP/2 connection the others wait for).
    Open(bool),
    /// Wait for the request opening the HTTP/2 connection, then look again.
    WaitForH2,
}

/// Held by the request opening the HTTP/2 connection: however it ends (opened, failed,
/// or the request dropped), the waiting requests look again.
struct OpeningH2<'a>(&'a Pool);

impl Drop for OpeningH2<'_> {
    fn drop(&mut self) {
        self.0.lock().opening_h2 = false;
        self.0.h2_opened.notify_waiters();
    }
}

struct Idle {
    h1: H1,
    since: Instant,
}

impl Idle {
    /// Idle for [`IDLE_TIMEOUT`] or longer at `now`: to be dropped.
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= IDLE_TIMEOUT
    }
}

/// Every [`SWEEP_EVERY`], the pool's idle connections: closed and expired ones go. Ends when
/// none is left idle (the next one given back starts another) or the pool is gone.
async fn sweep(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut state = pool.lock();
        let now = Instant::now();
        state.idle.retain_mut(|idle| {
            if idle.expired(now) {
                return false;
            }
            // Reads what came meanwhile: a close ends the connection.
            idle.h1.drive_idle();
            idle.h1.open()
        });
        if state.idle.is_empty() {
            state.sweeping = false;
            return;
        }
    }
}

/// What the connector gives: TCP, with or without TLS.
type Io = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// An HTTP/1.1 connection: its sender and the connection itself, which has no task of its
/// own and is driven by whoever uses it (see the module's doc).
struct H1 {
    tx: http1::SendRequest<Body>,
    /// `None` once it ended. Boxed: the connection's state is kilobytes, and a pooled
    /// connection moves in and out of the idle stack and into a request's body.
    conn: Option<Box<http1::Connection<Io, Body>>>,
}

impl H1 {
    /// Let the connection do what it can now (write, read, close), waking `cx` when it can
    /// do more. `true`: it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let Poll::Ready(ended) = Pin::new(&mut **conn).poll(cx) else {
            return false;
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
        }
        self.conn = None;
        true
    }

    /// An HTTP/1.1 connection over `io`, ready for a request.
    async fn handshake(io: Io) -> Result<Self, hyper::Error> {
        let (tx, conn) = http1::Builder::new().handshake(io).await?;
        let mut h1 = H1 {
            tx,
            conn: Some(Box::new(conn)),
        };
        // Ready once the connection has been driven (and an error once it ended).
        std::future::poll_fn(|cx| {
            h1.drive(cx);
            h1.tx.poll_ready(cx)
        })
        .await?;
        Ok(h1)
    }

    /// Drive an idle connection (one still finishing its last answer) without a waker, as
    /// nobody waits on it.
    fn drive_idle(&mut self) {
        self.drive(&mut Context::from_waker(std::task::Waker::noop()));
    }

    /// Neither ended nor closed: worth keeping.
    fn open(&self) -> bool {
        self.conn.is_some() && !self.tx.is_closed()
    }
}

/// A connection to send one request on.
enum Tx {
    H1(H1),
    H2(http2::SendRequest<Body>),
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// TCP or TLS connect, or the HTTP handshake, failed.
    #[error("could not connect")]
    Connect(#[source] BoxError),
    /// The connection failed while the request was sent or its answer awaited.
    #[error("the connection failed")]
    Send(#[source] hyper::Error),
}

impl Pool {
    /// An empty pool connecting with `connector`.
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            origin: OnceLock::new(),
            state: Mutex::new(State::default()),
            h2_opened: Notify::new(),
            opened: AtomicUsize::new(0),
        }
    }

    /// Whether `uri` (absolute) is this pool's origin: the first request's scheme and
    /// authority, which it takes on. `false`: send it another way.
    pub fn serves(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return false;
        };
        let (s, a) = self
            .origin
            .get_or_init(|| (scheme.clone(), authority.clone()));
        // An upstream's URIs share its authority's bytes: the same pointer is the same
        // origin without comparing the text.
        s == scheme && (std::ptr::eq(a.as_str(), authority.as_str()) || a == authority)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves a list of connections, still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection ready for a request, or what to do instead. `waiter` is registered (so
    /// that no wake-up is missed) when the answer is to wait.
    fn checkout(&self, waiter: Pin<&mut Notified<'_>>) -> Next {
        let mut state = self.lock();
        if let Some(h2) = &state.h2 {
            // HTTP/2 queues streams beyond the upstream's concurrency itself: only a closed
            // connection is no use.
            if !h2.is_closed() {
                return Next::Use(Tx::H2(h2.clone()));
            }
            state.h2 = None;
        }
        if state.opening_h2 {
            waiter.enable();
            return Next::WaitForH2;
        }
        let now = Instant::now();
        // From the top: the most recently used first. A connection still finishing its last
        // answer (given back before it was ready) stays for later; closed and expired ones go.
        let mut i = state.idle.len();
        while i > 0 {
            i -= 1;
            let idle = &mut state.idle[i];
            if idle.expired(now) {
                state.idle.remove(i);
                continue;
            }
            // Most are ready as they came back, and are not driven here: one the upstream
            // closed meanwhile ends as soon as it is driven, giving the request back, which
            // goes to another (see `send`). One still finishing its last answer is driven
            // on, and stays for later if it is not done yet.
            if !idle.h1.tx.is_ready() {
                idle.h1.drive_idle();
            }
            if !idle.h1.open() {
                state.idle.remove(i);
            } else if idle.h1.tx.is_ready() {
                return Next::Use(Tx::H1(state.idle.remove(i).h1));
            }
        }
        let h2 = state.speaks_h2;
        state.opening_h2 = h2;
        Next::Open(h2)
    }

    /// Give an HTTP/1.1 connection back after its answer (which drove it to its end: no need
    /// to drive it again to see whether it is still open).
    fn checkin(self: &Arc<Self>, h1: H1) {
        if !h1.open() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        // The bottom of the stack is the longest idle: drop it when full or expired.
        if state.idle.len() >= MAX_IDLE || state.idle.first().is_some_and(|i| i.expired(now)) {
            state.idle.remove(0);
        }
        state.idle.push(Idle { h1, since: now });
        if !state.sweeping {
            // Outside a runtime (a body dropped after its thread stopped) nothing sweeps; the
            // next checkout still drops what is closed or expired.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.sweeping = true;
                runtime.spawn(sweep(Arc::downgrade(self)));
            }
        }
    }

    /// Open a connection to `uri`'s origin: HTTP/2 when TLS negotiated it, else HTTP/1.1.
    async fn connect(&self, uri: &Uri) -> Result<Tx, PoolError> {
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(PoolError::Connect)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let handshake = |e: hyper::Error| PoolError::Connect(Box::new(e));
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            let mut state = self.lock();
            state.speaks_h2 = true;
            // Another request may have opened one meanwhile: the first stays shared.
            if state.h2.as_ref().is_none_or(|h| h.is_closed()) {
                state.h2 = Some(tx.clone());
            }
            return Ok(Tx::H2(tx));
        }
        self.lock().speaks_h2 = false;
        Ok(Tx::H1(H1::handshake(io).await.map_err(handshake)?))
    }

    /// Send `req` (absolute URI, of this pool's origin: see [`Self::serves`]) on a pooled
    /// connection or a new one.
    pub fn send(
        self: Arc<Self>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<PooledBody>, PoolError>> + Send {
        self.send_first_on(None, req)
    }

    /// [`Self::send`], trying `first` (a pooled connection) before any other.
    #[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice
    fn send_first_on(
        self: Arc<Self>,
        mut first: Option<Tx>,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<PooledBody>, PoolError>> {
        async move {
            loop {
                let waiter = self.h2_opened.notified();
                let mut waiter = std::pin::pin!(waiter);
                let next = match first.take() {
                    Some(tx) => Next::Use(tx),
                    None => self.checkout(waiter.as_mut()),
                };
                let (tx, reused) = match next {
                    Next::Use(tx) => (tx, true),
                    Next::WaitForH2 => {
                        waiter.await;
                        continue;
                    }
                    Next::Open(h2) => {
                        let _opening = h2.then(|| OpeningH2(&self));
                        // Boxed: connecting (TLS, the HTTP/2 handshake) needs kilobytes of state
                        // that a request on a pooled connection would otherwise carry and copy.
                        (Box::pin(self.connect(req.uri())).await?, false)
                    }
                };
                // The answer, or the error and (when it was never sent) the request back.
                let failed = match tx {
                    Tx::H2(mut tx) => match tx.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(PooledBody::plain)),
                        Err(mut e) => {
                            // A connection that gave a request back is going away: the next
                            // request (this one again, too) opens another instead of looping on it.
                            self.lock().h2 = None;
                            (e.take_message(), e.into_error())
                        }
                    },
                    Tx::H1(mut h1) => {
                        into_origin_form(&mut req);
                        let sending = h1.tx.try_send_request(req);
                        let mut sending = std::pin::pin!(sending);
                        // The connection writes the request and reads the answer's head here.
                        let sent = std::future::poll_fn(|cx| {
                            if let Poll::Ready(sent) = sending.as_mut().poll(cx) {
                                return Poll::Ready(sent);
                            }
                            h1.drive(cx);
                            sending.as_mut().poll(cx)
                        })
                        .await;
                        match sent {
                            // The body drives the connection on, and gives it back at its end.
                            Ok(resp) => {
                                let back = Some((h1, self.clone()));
                                return Ok(resp.map(|inner| PooledBody { inner, back }));
                            }
                            Err(mut e) => {
                                let unsent = e.take_message().map(|mut r| {
                                    *r.uri_mut() = self.absolute(r.uri());
                                    r
                                });
                                (unsent, e.into_error())
                            }
                        }
                    }
                };
                match failed {
                    // The connection closed before the request started (an upstream's keep-alive
                    // ended while it sat idle): another connection gets it.
                    (Some(unsent), _) if reused => req = unsent,
                    (_, e) => return Err(PoolError::Send(e)),
                }
            }
        }
    }
}

impl Pool {
    /// An origin-form URI (the path and query) on this pool's origin again: an unsent request
    /// goes back to the loop as it came, and another connection may be HTTP/2. Made only then,
    /// so the request that goes through keeps no copy of its absolute URI.
    fn absolute(&self, origin_form: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        if let Some((scheme, authority)) = self.origin.get() {
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
        }
        parts.path_and_query = origin_form.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| origin_form.clone())
    }
}

/// HTTP/1.1 to an origin server: the path and query only, the authority in `Host`.
fn into_origin_form(req: &mut Request<Body>) {
    if !req.headers().contains_key(header::HOST) {
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let origin = req
        .uri()
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    *req.uri_mut() = origin;
    *req.version_mut() = Version::HTTP_11;
}

pin_project_lite::pin_project! {
    /// An upstream's response body. Over HTTP/1.1 it drives its connection as it is read,
    /// and gives the connection back to its pool when it ends (or is dropped at its end); a
    /// body dropped before its end closes the connection, which still carries the rest.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        back: Option<(H1, Arc<Pool>)>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if http_body::Body::is_end_stream(&*this.inner) {
                give_back(this.back);
            }
        }
    }
}

/// The connection a body holds, back to its pool (once: it is taken).
fn give_back(back: &mut Option<(H1, Arc<Pool>)>) {
    if let Some((h1, pool)) = back.take() {
        pool.checkin(h1);
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("gives_back", &self.back.is_some())
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    /// `inner`, with no connection to give back.
    pub fn plain(inner: Incoming) -> Self {
        Self { inner, back: None }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let mut frame = this.inner.as_mut().poll_frame(cx);
        if frame.is_pending() {
            // Nothing read yet: the connection reads on (here, in this task), and what it
            // read is looked for again.
            if let Some((h1, _)) = this.back.as_mut() {
                h1.drive(cx);
                frame = this.inner.poll_frame(cx);
            }
        }
        if let Poll::Ready(None) = frame {
            give_back(this.back);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    /// How the test upstream answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `ok`, whole, keeping the connection.
        Whole,
        /// `ok`, then closing the connection after each answer (keep-alive off).
        Close,
        /// Three frames 20 ms apart (the head comes before the body is done).
        Streamed,
        /// Three chunks (`a`, `b`, `c`) in one write, with the head.
        Chunked,
    }

    /// An HTTP/1.1 upstream on a free port: its URL and how many connections it accepted.
    async fn upstream(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let host = req.headers().get(header::HOST).cloned();
                    let origin_form = req.uri().authority().is_none();
                    let body = match answer {
                        Answer::Streamed => {
                            let frames = futures_util::stream::unfold(0, |i| async move {
                                (i < 3).then_some(())?;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Some((
                                    Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                                        Bytes::from("ok"),
                                    )),
                                    i + 1,
                                ))
                            });
                            BodyExt::boxed(StreamBody::new(frames))
                        }
                        Answer::Chunked => BodyExt::boxed(StreamBody::new(
                            futures_util::stream::iter(["a", "b", "c"].map(|c| {
                                Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                                    Bytes::from(c),
                                ))
                            })),
                        )),
                        _ => BodyExt::boxed(Full::new(Bytes::from_static(b"ok"))),
                    };
                    let mut resp = Response::new(body);
                    // What the request looked like on the wire, for the tests to check.
                    if let Some(h) = host {
                        resp.headers_mut().insert("x-host", h);
                    }
                    resp.headers_mut().insert(
                        "x-origin-form",
                        HeaderValue::from_static(if origin_form { "yes" } else { "no" }),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(!matches!(answer, Answer::Close))
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn pool() -> Arc<Pool> {
        super::super::client::install_crypto_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Arc::new(Pool::new(https))
    }

    /// GET `url` through `pool`, read the whole body: its text and the response headers.
    async fn get(pool: &Arc<Pool>, url: &str) -> (String, http::HeaderMap) {
        let req = Request::get(url).body(Body::empty()).expect("request");
        assert!(pool.serves(req.uri()), "{url} is the pool's origin");
        let resp = pool.clone().send(req).await.expect("answered");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (String::from_utf8_lossy(&bytes).into_owned(), parts.headers)
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (url, accepted) = upstream(Answer::Whole).await;
        let pool = pool();
        for _ in 0..5 {
            let (text, headers) = get(&pool, &format!("{url}/v1/models?x=1")).await;
            assert_eq!(text, "ok");
            // HTTP/1.1 to an origin server: the origin form, the authority in Host.
            assert_eq!(headers["x-origin-form"], "yes");
            assert_eq!(headers["x-host"], url.trim_start_matches("http://"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_no_more_connections_than_run_at_once() {
        let (url, accepted) = upstream(Answer::Whole).await;
        let pool = pool();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        assert_eq!(get(&pool, &url).await.0, "ok");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("requests ran");
        }
        let n = accepted.load(Ordering::SeqCst);
        assert!(n <= 8, "{n} connections for 8 at a time");
    }

    /// Connections the upstream accepted for `n` requests one after another, each answered
    /// `text`.
    async fn connections_for(answer: Answer, n: usize, text: &str) -> usize {
        let (url, accepted) = upstream(answer).await;
        let pool = pool();
        for _ in 0..n {
            assert_eq!(get(&pool, &url).await.0, text);
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_streamed_answer_gives_its_connection_back_when_its_body_ends() {
        assert_eq!(connections_for(Answer::Streamed, 3, "okokok").await, 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_does_not_lend_its_busy_connection() {
        let (url, _) = upstream(Answer::Streamed).await;
        let pool = pool();
        let req = Request::get(&url).body(Body::empty()).expect("request");
        assert!(pool.serves(req.uri()));
        let resp = pool.clone().send(req).await.expect("answered");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "ok");
        drop(body);
        // The next requests get whole answers, on that connection once it is done or on
        // another: never one still carrying the dropped answer's rest.
        for _ in 0..3 {
            assert_eq!(get(&pool, &url).await.0, "okokok");
        }
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        assert_eq!(connections_for(Answer::Close, 4, "ok").await, 4);
    }

    #[tokio::test]
    async fn a_request_its_pooled_connection_never_started_is_sent_again() {
        let (url, accepted) = upstream(Answer::Whole).await;
        let pool = pool();
        assert!(pool.serves(&url.parse().expect("uri")));
        // A pooled connection, ready for a request, that ends before it writes the one it
        // is given (the upstream closed it while it sat idle, and nobody had read that yet).
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .expect("connect");
        let io = hyper_rustls::MaybeHttpsStream::Http(hyper_util::rt::TokioIo::new(tcp));
        let mut h1 = H1::handshake(io).await.expect("ready");
        h1.conn = None;
        let req = Request::get(format!("{url}/x"))
            .body(Body::empty())
            .expect("request");
        let resp = pool
            .clone()
            .send_first_on(Some(Tx::H1(h1)), req)
            .await
            .expect("sent again on a new connection");
        let (parts, body) = resp.into_parts();
        assert_eq!(body.collect().await.expect("body").to_bytes(), "ok");
        // The absolute URI again, made the origin form again on the new connection.
        assert_eq!(parts.headers["x-origin-form"], "yes");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_upstream_closed_while_idle_goes_on_another() {
        // An upstream that answers one request per connection, keep-alive and all, then
        // closes the connection once it sits idle (its keep-alive timeout, early).
        let (url, accepted) = closing_upstream(Duration::from_millis(10)).await;
        let pool = pool();
        assert_eq!(get(&pool, &url).await.0, "ok");
        // The close arrives while the connection sits in the pool, ready.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&pool, &url).await.0, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// An upstream that answers one request per connection, then closes the connection once
    /// it has sat idle for `close_after` (a keep-alive timeout); its URL and how many
    /// connections it accepted.
    async fn closing_upstream(close_after: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(close_after).await;
                drop(tcp);
            }
        });
        (url, accepted)
    }

    fn idle_count(pool: &Pool) -> usize {
        pool.lock().idle.len()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_the_upstream_closed_is_let_go_without_another_request() {
        let (url, _) = closing_upstream(Duration::from_secs(1)).await;
        let pool = pool();
        assert_eq!(get(&pool, &url).await.0, "ok");
        assert_eq!(idle_count(&pool), 1);
        // The upstream closes it after a second; the sweep reads the close.
        tokio::time::sleep(SWEEP_EVERY + Duration::from_secs(1)).await;
        assert_eq!(idle_count(&pool), 0, "closed connection still pooled");
        assert!(!pool.lock().sweeping, "the sweep ends with nothing idle");
        // The next connection given back is swept again.
        assert_eq!(get(&pool, &url).await.0, "ok");
        assert!(pool.lock().sweeping);
        tokio::time::sleep(SWEEP_EVERY + Duration::from_secs(1)).await;
        assert_eq!(idle_count(&pool), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_past_its_time_is_closed_without_another_request() {
        let (url, _) = upstream(Answer::Whole).await;
        let pool = pool();
        assert_eq!(get(&pool, &url).await.0, "ok");
        tokio::time::sleep(IDLE_TIMEOUT - SWEEP_EVERY).await;
        assert_eq!(idle_count(&pool), 1, "kept while within its time");
        tokio::time::sleep(SWEEP_EVERY * 2).await;
        assert_eq!(idle_count(&pool), 0, "expired connection still pooled");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_ends_with_its_pool() {
        let (url, _) = upstream(Answer::Whole).await;
        let pool = pool();
        assert_eq!(get(&pool, &url).await.0, "ok");
        let weak = Arc::downgrade(&pool);
        drop(pool);
        // The sweeping task held no strong reference: the pool (and its connection) is gone.
        assert!(weak.upgrade().is_none());
        // The sweep wakes to a pool that is gone, and ends (no panic on an empty `Weak`).
        tokio::time::sleep(SWEEP_EVERY * 2).await;
    }

    #[tokio::test]
    async fn an_answer_that_arrived_whole_is_read_in_one_go() {
        // Three chunks already there when the head is read: the body has them all without
        // waiting on another task (a connection with a task of its own hands them over one
        // at a time, each after a turn of that task).
        let (url, _) = upstream(Answer::Chunked).await;
        let pool = pool();
        let req = Request::get(&url).body(Body::empty()).expect("request");
        assert!(pool.serves(req.uri()));
        let resp = pool.clone().send(req).await.expect("answered");
        let mut body = std::pin::pin!(resp.into_body());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut got = Vec::new();
        // Polled without ever returning to the runtime: no other task runs meanwhile.
        for _ in 0..10 {
            match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
                Poll::Ready(Some(frame)) => {
                    got.extend_from_slice(&frame.expect("frame").into_data().expect("data"))
                }
                Poll::Ready(None) => break,
                Poll::Pending => {}
            }
        }
        assert_eq!(got, b"abc");
    }

    #[tokio::test]
    async fn a_fresh_connection_that_fails_is_an_error_not_a_loop() {
        // An upstream that closes every connection as soon as it has read a request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
            }
        });
        let pool = pool();
        let req = Request::get(&url).body(Body::empty()).expect("request");
        assert!(pool.serves(req.uri()));
        let err = pool.send(req).await.expect_err("no answer");
        assert!(matches!(err, PoolError::Send(_)), "{err:?}");
    }

    /// A TLS mock upstream offering HTTP/2 by ALPN, and a pool trusting its certificate.
    async fn http2_upstream() -> (portcullis_mock::MockUpstream, Arc<Pool>) {
        let ck =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let mock = portcullis_mock::MockUpstream::start_tls(
            &ck.cert.pem(),
            &ck.signing_key.serialize_pem(),
        )
        .await
        .expect("mock");
        super::super::client::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).expect("root");
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = Arc::new(Pool::new(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .enable_http2()
                .build(),
        ));
        (mock, pool)
    }

    #[tokio::test]
    async fn an_upstream_that_negotiates_http2_gets_one_shared_connection() {
        let (mock, pool) = http2_upstream().await;
        let url = format!("{}/v1/models", mock.url());
        // Two at once, then one more: every one on the HTTP/2 connection kept.
        let (a, b) = tokio::join!(get(&pool, &url), get(&pool, &url));
        assert!(a.0.contains("data") && b.0.contains("data"), "{a:?}");
        let kept = pool.lock().h2.clone().expect("an HTTP/2 connection kept");
        assert!(get(&pool, &url).await.0.contains("data"));
        assert_eq!(mock.request_count(), 3);
        let state = pool.lock();
        assert!(state.idle.is_empty(), "no HTTP/1.1 connection");
        // The same connection: its sender still open, and the one in the pool.
        assert!(!kept.is_closed());
        assert!(state.h2.as_ref().is_some_and(|h| !h.is_closed()));
    }

    #[tokio::test]
    async fn once_an_upstream_speaks_http2_one_request_opens_the_connection_for_all() {
        let (mock, pool) = http2_upstream().await;
        let url = format!("{}/v1/models", mock.url());
        assert!(get(&pool, &url).await.0.contains("data"));
        assert_eq!(pool.opened.load(Ordering::Relaxed), 1);
        // The connection is gone (as after the upstream's GOAWAY): four requests at once
        // open one new connection between them.
        pool.lock().h2 = None;
        let answers = futures_util::future::join_all((0..4).map(|_| get(&pool, &url))).await;
        assert!(answers.iter().all(|(text, _)| text.contains("data")));
        assert_eq!(pool.opened.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn requests_waiting_for_an_http2_connection_that_fails_open_their_own() {
        let (mock, pool) = http2_upstream().await;
        let url = format!("{}/v1/models", mock.url());
        assert!(get(&pool, &url).await.0.contains("data"));
        pool.lock().h2 = None;
        // The request opening the connection goes away before it is open (its client left):
        // the others do not wait for it forever.
        let req = Request::get(&url).body(Body::empty()).expect("request");
        let mut opening = Box::pin(pool.clone().send(req));
        assert!(futures_util::poll!(opening.as_mut()).is_pending());
        assert!(pool.lock().opening_h2);
        let waiting = tokio::spawn({
            let pool = pool.clone();
            let url = url.clone();
            async move { get(&pool, &url).await.0 }
        });
        tokio::task::yield_now().await;
        drop(opening);
        let text = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("not left waiting")
            .expect("ran");
        assert!(text.contains("data"));
    }

    #[tokio::test]
    async fn another_origin_is_not_this_pools() {
        let pool = pool();
        let a: Uri = "http://127.0.0.1:1/x".parse().expect("uri");
        let b: Uri = "http://127.0.0.1:2/x".parse().expect("uri");
        let relative: Uri = "/x".parse().expect("uri");
        assert!(!pool.serves(&relative));
        assert!(pool.serves(&a));
        assert!(pool.serves(&a));
        assert!(!pool.serves(&b));
        assert!(!pool.serves(&"https://127.0.0.1:1/x".parse().expect("uri")));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_cause() {
        // A port nobody listens on: bind one, then free it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let pool = pool();
        let req = Request::get(format!("http://{addr}/"))
            .body(Body::empty())
            .expect("request");
        assert!(pool.serves(req.uri()));
        let err = pool.send(req).await.expect_err("refused");
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        let message = super::super::client::chain_message(&err);
        assert!(message.contains("refused"), "{message}");
    }
}
