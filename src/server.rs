//! Serving: accept connections within the `[server]` limits, serve until a shutdown signal,
//! then drain in-flight requests (streams included) for up to `server.shutdown_grace`.
//!
//! What is served is a [`Live`] gateway, which a hot reload replaces whole: each request is
//! handed to the gateway current when it arrives, and finishes there.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::{body::Body, extract::ConnectInfo};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto::Builder,
        graceful::{GracefulShutdown, Watcher},
    },
};
use pin_project_lite::pin_project;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::Sleep,
};
use tokio_rustls::TlsAcceptor;

use crate::{config::ServerConfig, error::BodyReadTimeout, stack::Gateway, workers::Workers};

/// The gateway serving now, replaced whole by a hot reload. Cloning shares it.
///
/// # Why swap per request and not restart the listener
/// A new listener would drop the backlog and every idle keep-alive connection. Instead each
/// request takes the gateway current when it arrives (an atomic pointer load, then a
/// reference count); a request, its streamed body or its WebSocket keeps the stack it
/// started on until it ends, and that stack is freed with its last request.
#[derive(Debug, Clone)]
pub struct Live {
    current: Arc<ArcSwap<Gateway>>,
    /// Bumped on every swap, for the tasks that follow the current gateway (cookie autosave).
    swaps: Arc<watch::Sender<u64>>,
}

impl Live {
    /// Serve `gateway` until it is replaced.
    pub fn new(gateway: Gateway) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(gateway)),
            swaps: Arc::new(watch::Sender::new(0)),
        }
    }

    /// The gateway serving now.
    pub fn load(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Serve `gateway` from the next request on; returns the one it replaces (whose
    /// in-flight requests go on).
    pub fn replace(&self, gateway: Gateway) -> Arc<Gateway> {
        let old = self.current.swap(Arc::new(gateway));
        self.swaps.send_modify(|n| *n += 1);
        old
    }

    /// Serve one request of a connection with the gateway live now, on the connection's own
    /// instance of its proxy stack (`held`), made afresh after a reload.
    fn handle(&self, held: &mut Held, req: Request<Body>) -> crate::stack::AppFuture {
        let gateway = self.current.load();
        // The `Weak` keeps the gateway's allocation, so no later gateway can be found at the
        // address of the one the instance was made from.
        if !std::ptr::eq(held.gateway.as_ptr(), Arc::as_ptr(&gateway)) {
            held.gateway = Arc::downgrade(&gateway);
            held.proxy = None;
        }
        gateway.app.handle_held(&mut held.proxy, req)
    }
}

/// A connection's own instance of the live gateway's proxy stack, and the gateway it was made
/// from: requests on the connection are called on it (one clone of the stack per connection
/// and reload, not per request).
#[derive(Default)]
struct Held {
    gateway: std::sync::Weak<Gateway>,
    proxy: crate::stack::HeldProxy,
}

/// The service hyper calls for one connection's requests.
struct ConnectionService {
    live: Live,
    peer: SocketAddr,
    body_timeout: Duration,
    /// hyper calls the service from the connection's task, one call at a time.
    held: std::cell::RefCell<Held>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for ConnectionService {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = PollWhenWoken<crate::stack::AppFuture>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        // Room for what the layers add, in one table instead of four grown in turn.
        portcullis_core::extensions::with_room(&mut parts.extensions);
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = Body::new(Deadline {
            inner: Some(body),
            sleep: tokio::time::sleep(self.body_timeout),
            limit: self.body_timeout,
            ended: false,
            // HTTP/2 drops an unread body with a reset of its own stream, not the connection.
            // (A client that asked `Expect: 100-continue` is not told to send: the answer is
            // written before the lingering read starts, and hyper sends `100 Continue` only
            // before an answer; `tests/gateway.rs` checks.)
            linger: parts.version <= http::Version::HTTP_11,
        });
        let req = Request::from_parts(parts, body);
        PollWhenWoken::new(self.live.handle(&mut self.held.borrow_mut(), req))
    }
}

/// Serve `gateway` on `listener` until `shutdown` resolves, then drain for up to `grace`.
///
/// Connections are served by hyper directly (HTTP/1.1 and HTTP/2, upgrades for WebSockets)
/// with the `[server]` limits: a request head not complete within `header_read_timeout`
/// closes the connection, a body not complete within `body_read_timeout` is answered 408,
/// and at most `max_connections` are served at once (past that, new ones wait in the
/// kernel's backlog). With `server.tls_cert` and `server.tls_key` set, connections are TLS
/// (ALPN `h2` and `http/1.1`) and the handshake too must finish within `header_read_timeout`.
///
/// Returns `true` when every in-flight request finished within the grace period; an error
/// when the TLS files no longer load.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<bool> {
    serve_live(listener, Live::new(gateway), shutdown, grace).await
}

/// [`serve`] whatever gateway `live` holds when each request arrives (see [`Live`]). The
/// `[server]` limits are those of the gateway live at start: they need a restart to change.
pub async fn serve_live(
    listener: TcpListener,
    live: Live,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<bool> {
    serve_on(listener, live, shutdown, grace, None).await
}

/// [`serve_live`] with each connection served by one of `threads` serving threads of its
/// own (see [`crate::workers`]; `0` is one per CPU core) instead of the caller's runtime:
/// what `portcullis serve` does with `server.threads`. The threads stop when this returns.
pub async fn serve_threads(
    listener: TcpListener,
    live: Live,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    threads: usize,
) -> std::io::Result<bool> {
    let workers = Workers::start(crate::workers::resolve(threads))?;
    tracing::info!(threads = workers.len(), "serving threads started");
    serve_on(listener, live, shutdown, grace, Some(workers)).await
}

/// What every connection is served with.
struct Serving {
    live: Live,
    builders: Builders,
    tls: Option<TlsAcceptor>,
    body_timeout: Duration,
    handshake_timeout: Duration,
}

/// [`serve_live`] (connections on the caller's runtime) and [`serve_threads`] (on `workers`).
async fn serve_on(
    listener: TcpListener,
    live: Live,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    workers: Option<Workers>,
) -> std::io::Result<bool> {
    let server_cfg = live.load().state.config.server.clone();
    let tls = tls_acceptor(&server_cfg)?;
    let autosave = tokio::spawn(autosave_live(live.clone()));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server_cfg.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let serving = Arc::new(Serving {
        live: live.clone(),
        builders: Builders::new(builder),
        tls,
        body_timeout: server_cfg.body_read_timeout,
        handshake_timeout: server_cfg.header_read_timeout,
    });
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(server_cfg.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: past `max_connections`, connections wait in the backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Streams are many small writes (one SSE event each): without TCP_NODELAY, Nagle's
        // algorithm and the client's delayed ACKs hold each event back for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        // Taken now, before a shutdown can begin: a connection still in its TLS handshake
        // when the signal comes is then shut down gracefully as soon as it is served, and
        // the drain waits for it (at most `header_read_timeout` longer).
        let watcher = graceful.watcher();
        let serving = serving.clone();
        match &workers {
            None => {
                tokio::spawn(connection(serving, tcp, peer, watcher, slot));
            }
            Some(workers) => {
                // Off this runtime's reactor; the serving thread registers it with its own.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::debug!(client = %peer, error = %e, "connection lost at accept");
                        continue;
                    }
                };
                workers.spawn(move || async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => connection(serving, tcp, peer, watcher, slot).await,
                        Err(e) => {
                            tracing::warn!(client = %peer, error = %e, "cannot serve a connection");
                        }
                    }
                });
            }
        }
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
    drop(listener);
    let drained = tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "shutdown grace period passed; dropping in-flight requests");
            false
        }
    };
    autosave.abort();
    let _ = autosave.await;
    // Joins the serving threads: off this runtime's own threads, so its tasks go on.
    if let Some(workers) = workers {
        let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    }
    let gateway = live.load();
    // The last audit lines reach the file before the process goes.
    gateway.audit.flush().await;
    if let Some(p) = &gateway.cookie_persist {
        match p.save() {
            Ok(()) => tracing::info!(path = %p.path.display(), "cookie jars saved"),
            Err(e) => {
                tracing::warn!(path = %p.path.display(), error = %e, "saving cookie jars failed")
            }
        }
    }
    Ok(drained)
}

/// Serve one accepted connection until it closes; its `slot` is given back then.
async fn connection(
    serving: Arc<Serving>,
    tcp: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    slot: OwnedSemaphorePermit,
) {
    let svc = ConnectionService {
        live: serving.live.clone(),
        peer,
        body_timeout: serving.body_timeout,
        held: std::cell::RefCell::default(),
    };
    match &serving.tls {
        None => {
            let conn = serving
                .builders
                .auto
                .serve_connection_with_upgrades(TokioIo::new(tcp), svc);
            let _ = watcher.watch(conn).await;
        }
        Some(acceptor) => {
            // The handshake runs in the connection's own task, so a slow client never
            // holds up the accept loop; it holds its slot, and no longer than the timeout.
            let handshake = acceptor.accept(tcp);
            let tls = match tokio::time::timeout(serving.handshake_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = serving.builders.for_alpn(tls.get_ref().1.alpn_protocol());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let _ = watcher.watch(conn).await;
        }
    }
    drop(slot);
}

/// The TLS acceptor for `server.tls_cert` / `server.tls_key`, or `None` for plain TCP.
fn tls_acceptor(cfg: &ServerConfig) -> std::io::Result<Option<TlsAcceptor>> {
    let mut tls = match cfg.tls_config() {
        Ok(Some(tls)) => tls,
        Ok(None) => return Ok(None),
        // Checked at load; the files changed since.
        Err(problems) => {
            let msg = problems
                .iter()
                .map(|p| format!("server.{p}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
    };
    // h2 first: a client offering both gets HTTP/2 (one connection, many streams).
    tls.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    tracing::info!(
        cert = %cfg.tls_cert,
        alpn = "h2, http/1.1",
        "TLS on: clients connect with https://"
    );
    Ok(Some(TlsAcceptor::from(Arc::new(tls))))
}

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One connection builder per protocol a TLS client may have agreed on, with the same
/// settings: after ALPN there is nothing left to guess.
struct Builders {
    /// Plain TCP, or TLS without ALPN: HTTP/1.1, or HTTP/2 by its preface.
    auto: Builder<TokioExecutor>,
    /// ALPN `h2`.
    h2: Builder<TokioExecutor>,
    /// ALPN `http/1.1`.
    http1: Builder<TokioExecutor>,
}

impl Builders {
    fn new(auto: Builder<TokioExecutor>) -> Self {
        Self {
            h2: auto.clone().http2_only(),
            http1: auto.clone().http1_only(),
            auto,
        }
    }

    fn for_alpn(&self, alpn: Option<&[u8]>) -> &Builder<TokioExecutor> {
        match alpn {
            Some(ALPN_H2) => &self.h2,
            Some(ALPN_HTTP11) => &self.http1,
            _ => &self.auto,
        }
    }
}

/// Save the live gateway's cookie jars as they change (`cookies.persist_path`), following
/// reloads: a swap stops the old autosave (the final save is [`serve_live`]'s).
async fn autosave_live(live: Live) {
    /// Stops the autosave it holds when dropped: at the next swap, or when this task is.
    struct Stop(JoinHandle<()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut swaps = live.swaps.subscribe();
    loop {
        let _saving = live
            .load()
            .cookie_persist
            .as_ref()
            .map(|p| Stop(p.spawn_autosave()));
        if swaps.changed().await.is_err() {
            return;
        }
    }
}

pin_project! {
    /// A request body that fails with [`BodyReadTimeout`] if it has not ended by its deadline
    /// (a trickled body holds a connection and its buffer no longer than that).
    ///
    /// Dropped unread (an answer before the whole body: a 413 for a body over the cap, a 401,
    /// a 429), an HTTP/1.1 body is read on and dropped for a while ([`linger`]).
    struct Deadline {
        inner: Option<hyper::body::Incoming>,
        #[pin]
        sleep: Sleep,
        limit: Duration,
        ended: bool,
        linger: bool,
    }

    impl PinnedDrop for Deadline {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(rest) = this.inner.take() else {
                return;
            };
            if *this.linger && !*this.ended && !rest.is_end_stream() {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(linger(rest));
                }
            }
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            // An error ends the body too: nothing more will come to read.
            *this.ended = !matches!(frame, Some(Ok(_)));
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                // A client this slow is not waited for again.
                *this.inner = None;
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout { limit: *this.limit }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// How much of a request body left unread is read and dropped after the answer, at most.
const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// For how long, at most.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Read and drop the rest of a request body the answer did not need, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`]: a client still sending when the answer is written
/// keeps its connection long enough to read it, where closing the connection with the body
/// unread resets it under the client's next write and the answer is lost (nginx's
/// `lingering_close`, for the same reason).
async fn linger<B>(mut body: B)
where
    B: HttpBody + Unpin,
{
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut left = LINGER_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, bytes::Buf::remaining);
            if n >= left {
                return;
            }
            left -= n;
        }
    })
    .await;
}

pin_project! {
    /// A request's future, polled only when something it waits on has woken it (or the
    /// first time).
    ///
    /// hyper polls the future of a connection's request each time the connection's task
    /// runs, and the task also runs for hyper's own reasons: taking a chunk of an HTTP/1.1
    /// request body from hyper's body channel wakes the channel's sender (the connection's
    /// dispatcher, in that task) at once. Each such run walked the whole stack of the layers'
    /// futures down to the upstream connection, to find nothing to do (one in three of an
    /// HTTP/1.1 JSON request's polls). Here the future gets a waker of its own, and a run
    /// that it did not cause passes it by, as `FuturesUnordered` does for each future it
    /// holds. What the future waits on (sockets, timers, channels) registers that waker, so
    /// no wake-up of its own is lost.
    struct PollWhenWoken<F> {
        #[pin]
        inner: F,
        woken: Arc<Woken>,
        waker: Waker,
    }
}

/// Whether a [`PollWhenWoken`]'s future was woken since its last poll, and the task to wake.
struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> PollWhenWoken<F> {
    fn new(inner: F) -> Self {
        let woken = Arc::new(Woken {
            // The first poll is the one that starts it.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl<F: Future> Future for PollWhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task first, then the flag: a wake in between is seen now, one after it wakes
        // the task registered here.
        this.woken.task.register(cx.waker());
        if !this.woken.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

/// Raise the soft limit on open files to the hard limit (a gateway holds two sockets per
/// request in flight) and log the figure.
pub fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wake-ups (a connection's task).
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// `inner`, with its polls counted.
    fn counted<F: Future + Unpin>(inner: F) -> (Arc<Count>, impl Future<Output = F::Output>) {
        let polls = Arc::new(Count::default());
        (polls.clone(), counted_by(polls, inner))
    }

    /// `inner`, with its polls counted in `polls`.
    fn counted_by<F: Future + Unpin>(
        polls: Arc<Count>,
        mut inner: F,
    ) -> impl Future<Output = F::Output> {
        std::future::poll_fn(move |cx| {
            polls.0.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut inner).poll(cx)
        })
    }

    #[test]
    fn a_request_future_is_polled_only_when_something_it_waits_on_woke_it() {
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let (polls, fut) = counted(answered);
        let mut fut = std::pin::pin!(PollWhenWoken::new(fut));
        let task = Arc::new(Count::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        // The first poll starts it.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1);
        // The task runs again for the connection's own reasons: the future is passed by.
        for _ in 0..3 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1, "polled without having been woken");
        assert_eq!(task.get(), 0);
        // What it waits on wakes the task, and the task's next run polls it.
        answer.send(()).expect("waiting");
        assert_eq!(task.get(), 1);
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn a_wake_up_during_its_poll_or_for_a_moved_task_is_not_lost() {
        // A future that wakes itself once as it returns Pending (as `yield_now` does).
        let mut yielded = false;
        let (polls, fut) = counted(std::future::poll_fn(move |cx| {
            if std::mem::replace(&mut yielded, true) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        let mut fut = std::pin::pin!(PollWhenWoken::new(fut));
        let first = Arc::new(Count::default());
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(first.clone())))
            .is_pending());
        assert_eq!(
            first.get(),
            1,
            "the task is woken for the poll it asked for"
        );
        // The next run comes with another task's waker (an HTTP/2 stream's task, say): the
        // future is polled, as it was woken.
        let second = Arc::new(Count::default());
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(second.clone())))
            .is_ready());
        assert_eq!(polls.get(), 2);

        // A future left waiting under one task's waker and woken after the task changed
        // wakes the task that polled it last.
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let (_, fut) = counted(answered);
        let mut fut = std::pin::pin!(PollWhenWoken::new(fut));
        let (old, new) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(old.clone())))
            .is_pending());
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&Waker::from(new.clone())))
            .is_pending());
        answer.send(()).expect("waiting");
        assert_eq!((old.get(), new.get()), (0, 1));
    }

    #[tokio::test]
    async fn hypers_own_wake_up_for_a_read_body_does_not_poll_the_request_future() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner_polls = Arc::new(Count::default());
        let outer_polls = Arc::new(Count::default());
        let (read, body_read) = tokio::sync::oneshot::channel::<(usize, usize)>();
        let (go, going) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(std::sync::Mutex::new(Some((read, going))));
        let (inner, outer) = (inner_polls.clone(), outer_polls.clone());
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (read, going) = state.lock().expect("state").take().expect("one request");
                let counts = (inner.clone(), outer.clone());
                // Reads the whole body, says how often it and hyper's future around it were
                // polled by then, and waits.
                let handler = Box::pin(async move {
                    let body = req.into_body().collect().await.expect("body").to_bytes();
                    let _ = read.send((counts.0.get(), counts.1.get()));
                    let _ = going.await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(body),
                    ))
                });
                let handler = counted_by(inner.clone(), handler);
                counted_by(outer.clone(), Box::pin(PollWhenWoken::new(handler)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .expect("request");
        let (polls_when_read, outer_when_read) = body_read.await.expect("the body was read");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // hyper's dispatcher ran again (its body channel woke it as the body was taken) and
        // polled what it holds; the request's future, waiting on nothing that woke, was not.
        assert!(
            outer_polls.get() > outer_when_read,
            "hyper no longer wakes the connection when a body is read: \
             PollWhenWoken may not be needed any more"
        );
        assert_eq!(
            inner_polls.get(),
            polls_when_read,
            "polled for hyper's wake-up"
        );
        go.send(()).expect("waiting");
        let mut answer = vec![0u8; 1024];
        let n = client.read(&mut answer).await.expect("answer");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }

    /// A client's upload, one frame at a time, and the sender that feeds it.
    fn upload() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        http_body_util::StreamBody<
            impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let data = rx.recv().await?;
            Some((Ok(Frame::data(data)), rx))
        });
        (tx, http_body_util::StreamBody::new(Box::pin(frames)))
    }

    #[tokio::test]
    async fn an_unread_body_is_read_on_up_to_its_byte_bound() {
        let (tx, body) = upload();
        let lingering = tokio::spawn(linger(body));
        let mib = Bytes::from(vec![b'x'; 1024 * 1024]);
        // Read on, not cut off: every frame below the bound is taken.
        for _ in 0..LINGER_BYTES / mib.len() - 1 {
            tx.send(mib.clone()).await.expect("read on");
        }
        // The frame that reaches the bound is the last one read.
        tx.send(mib.clone()).await.expect("read on");
        // At once, not at the time bound.
        tokio::time::timeout(LINGER_TIME / 4, lingering)
            .await
            .expect("ends at the byte bound")
            .expect("linger ends");
        assert!(tx.send(mib).await.is_err(), "no more read after the bound");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_body_is_read_on_up_to_its_time_bound() {
        let (tx, body) = upload();
        let lingering = tokio::spawn(linger(body));
        tx.send(Bytes::from_static(b"more")).await.expect("read on");
        tokio::time::advance(LINGER_TIME - Duration::from_millis(1)).await;
        tx.send(Bytes::from_static(b"more")).await.expect("read on");
        // Paused time moves on by itself once every task waits: the timeout fires.
        lingering.await.expect("linger ends");
        assert!(tx.send(Bytes::from_static(b"late")).await.is_err());
    }
}
