//! The hyper client every upstream call goes through: pooled (the upstream's own origin by
//! [`super::pool`], one pool per serving thread; any other origin by hyper-util's client),
//! HTTP/1.1 and HTTP/2 by ALPN, rustls with webpki + native roots (+ an optional CA file),
//! connect and request timeouts.
//! WebSocket handshakes get a dedicated HTTP/1.1 connection each, with the same roots and
//! timeouts ([`UpstreamClient::send_upgradable`]).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use futures_util::{future::Either, FutureExt as _, TryFutureExt};
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use tower::{BoxError, Service};
use tracing::Instrument;

use super::pool::{Pool, PooledBody};
use crate::telemetry::client::{Attempt, AttemptError, AttemptMetrics};

/// The upstream did not send response headers within its `timeout`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream:?} did not answer within {timeout:?}")]
pub struct UpstreamTimeout {
    /// The `[[upstreams]]` name.
    pub upstream: String,
    /// The timeout that passed.
    pub timeout: Duration,
}

/// The upstream could not be reached, or the connection broke before a response arrived.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?} unreachable: {message}")]
pub struct UpstreamConnectError {
    /// The `[[upstreams]]` name.
    pub upstream: String,
    /// What went wrong (connect refused, reset, TLS failure...).
    pub message: String,
    #[source]
    source: Option<BoxError>,
}

/// Install the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    // A second install returns Err: that only means it is already there.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Options for one upstream's client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Upstream name (for errors and logs).
    pub name: String,
    /// Time allowed until the response headers.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// > 0: time allowed until the first body byte.
    pub first_byte_timeout: Duration,
    /// > 0: longest silence inside a body.
    pub idle_timeout: Duration,
    /// Extra roots (PEM file).
    pub ca_file: Option<std::path::PathBuf>,
    /// Serving threads ([`crate::workers`]), each given a connection pool of its own.
    pub threads: usize,
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled client for one upstream. Cheap to clone: clones share the pool and the rest
/// (one reference count: the retry and the router clone the upstream's stack, and so this,
/// for every request).
#[derive(Clone)]
pub struct UpstreamClient(Arc<Shared>);

struct Shared {
    /// The pool of code off the serving threads (a library user's runtime, health checks).
    inner: HyperClient,
    /// One pool per serving thread: its connections' tasks run on that thread, so a request
    /// and the upstream connection it uses never wake another thread.
    per_thread: Box<[HyperClient]>,
    /// The same for requests to the upstream's own origin, without hyper-util's keyed pool
    /// ([`super::pool`]): the shared one, then one per serving thread.
    origin_pool: Arc<Pool>,
    origin_per_thread: Box<[Arc<Pool>]>,
    name: Arc<str>,
    /// Its attempts' duration histograms, by outcome.
    attempt_metrics: AttemptMetrics,
    timeout: Duration,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    /// Same roots, ALPN `http/1.1` only: an upgrade needs HTTP/1.1 (h2 has no `Upgrade`).
    upgrade: HttpsConnector<HttpConnector>,
    connect_timeout: Duration,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.0.name)
            .field("timeout", &self.0.timeout)
            .finish()
    }
}

impl UpstreamClient {
    /// Build the client: TLS roots are webpki's, the system's and `ca_file`'s.
    pub fn new(opts: &ClientOptions) -> Result<Self, String> {
        install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = &opts.ca_file {
            for cert in crate::config::upstreams::read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let mut http1_only = tls.clone();
        http1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
        let upgrade = HttpsConnector::from((http.clone(), http1_only));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let inner = builder.build(https.clone());
        let per_thread = (0..opts.threads)
            .map(|_| builder.build(https.clone()))
            .collect();
        let origin_pool = Arc::new(Pool::new(https.clone()));
        let origin_per_thread = (0..opts.threads)
            .map(|_| Arc::new(Pool::new(https.clone())))
            .collect();
        Ok(Self(Arc::new(Shared {
            inner,
            per_thread,
            origin_pool,
            origin_per_thread,
            name: opts.name.as_str().into(),
            attempt_metrics: AttemptMetrics::new(opts.name.as_str().into()),
            timeout: opts.timeout,
            first_byte_timeout: opts.first_byte_timeout,
            idle_timeout: opts.idle_timeout,
            upgrade,
            connect_timeout: opts.connect_timeout,
        })))
    }

    /// The pool of the serving thread this runs on, or the shared one off them.
    fn pool(&self) -> &HyperClient {
        this_thread(&self.0.per_thread, &self.0.inner)
    }

    /// The origin pool of the serving thread this runs on, or the shared one off them.
    fn origin_pool(&self) -> &Arc<Pool> {
        this_thread(&self.0.origin_per_thread, &self.0.origin_pool)
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Send `req` (absolute URI) on a new HTTP/1.1 connection of its own, outside the pool,
    /// so that a `101 Switching Protocols` answer can take the connection over
    /// (`hyper::upgrade::on` on the response). Connecting (TCP and TLS) is bounded by
    /// `connect_timeout`, the answer's head by `timeout`.
    pub async fn send_upgradable(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, BoxError> {
        let target = req.uri().clone();
        let connecting = tower::ServiceExt::oneshot(self.0.upgrade.clone(), target.clone());
        let io = match tokio::time::timeout(self.0.connect_timeout, connecting).await {
            Err(_) => {
                return Err(Box::new(UpstreamConnectError {
                    upstream: self.0.name.to_string(),
                    message: format!("connect timed out after {:?}", self.0.connect_timeout),
                    source: None,
                }))
            }
            Ok(Err(e)) => {
                return Err(Box::new(UpstreamConnectError {
                    upstream: self.0.name.to_string(),
                    message: chain_message(&*e),
                    source: Some(e),
                }))
            }
            Ok(Ok(io)) => io,
        };
        let broken = |e: hyper::Error| -> BoxError {
            Box::new(UpstreamConnectError {
                upstream: self.0.name.to_string(),
                message: chain_message(&e),
                source: Some(Box::new(e)),
            })
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(io)
            .await
            .map_err(broken)?;
        // The connection task lives as long as the upgraded stream (or the plain answer's body).
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended with an error");
            }
        });
        // On a connection of its own the request line takes the origin form.
        *req.uri_mut() = target
            .path_and_query()
            .map_or_else(|| "/".parse(), |pq| pq.as_str().parse())?;
        match tokio::time::timeout(self.0.timeout, sender.send_request(req)).await {
            Err(_) => Err(Box::new(UpstreamTimeout {
                upstream: self.0.name.to_string(),
                timeout: self.0.timeout,
            })),
            Ok(Err(e)) => Err(broken(e)),
            Ok(Ok(mut resp)) => {
                // Nothing an upstream sends may pose as the gateway's own headers.
                portcullis_core::headers::sanitize_upstream_response(resp.headers_mut());
                Ok(resp)
            }
        }
    }
}

/// The serving thread's own of `per_thread`, or `shared` off the serving threads.
fn this_thread<'a, T>(per_thread: &'a [T], shared: &'a T) -> &'a T {
    crate::workers::current()
        .and_then(|i| per_thread.get(i))
        .unwrap_or(shared)
}

/// An error and its causes on one line (hyper's own Display is terse).
pub(crate) fn chain_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    message
}

/// How an attempt's request goes: on the serving thread's own pool (its future made when the
/// attempt runs), or through hyper-util's client (another origin; a WebSocket's own path).
// The large variant is the common one: boxing it would cost every request an allocation.
#[allow(clippy::large_enum_variant)]
enum Sending {
    Pooled(Arc<Pool>, Request<Body>),
    Other(Pin<Box<dyn Future<Output = Result<Response<PooledBody>, BoxError>> + Send>>),
}

impl Service<Request<Body>> for UpstreamClient {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool is always ready: connection limits are per host inside hyper-util.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The client span (a child of the retry attempt's span) and its traceparent on the
        // upstream request; the span stays open until the response body ends.
        let attempt = Attempt::start(&self.0.attempt_metrics, &mut req);
        let span = attempt.span().clone();
        let pool = self.origin_pool();
        let send = match pool.serves(req.uri()) {
            true => Sending::Pooled(pool.clone(), req),
            // Boxed: hyper-util's request future is 3 KB, which every request's future
            // would carry (and copy) otherwise.
            false => Sending::Other(Box::pin(
                self.pool()
                    .request(req)
                    .map_ok(|r| r.map(PooledBody::plain))
                    .err_into::<BoxError>(),
            )),
        };
        let name = self.0.name.clone();
        let timeout = self.0.timeout;
        let first_byte = self.0.first_byte_timeout;
        let idle = self.0.idle_timeout;
        // The first byte's deadline, from now (and the name for its error); the clock is read
        // only when there is one.
        let first_byte_wait = (!first_byte.is_zero())
            .then(|| (tokio::time::Instant::now() + first_byte, name.clone()));
        // The status line is a response byte too: `first_byte_timeout` bounds it.
        let head_timeout = match first_byte.is_zero() {
            true => timeout,
            false => timeout.min(first_byte),
        };
        // Chained, not one async block: a block keeps what it captures (the request) to its
        // end, beside the send future that carries it; and the send future (with its timer)
        // is made when first polled, inside the timeout, so neither is held twice. The
        // state is boxed and copied for every attempt.
        let head = futures_util::future::lazy(move |_| {
            let sending = match send {
                Sending::Pooled(pool, req) => Either::Left(pool.send(req).err_into::<BoxError>()),
                Sending::Other(fut) => Either::Right(fut),
            };
            tokio::time::timeout(head_timeout, sending)
        })
        .flatten()
        .map(move |result| match result {
            Err(_) => Err(AttemptError::Timeout(Box::new(UpstreamTimeout {
                upstream: name.to_string(),
                timeout: head_timeout,
            }))),
            Ok(Err(e)) => Err(AttemptError::Connect(Box::new(connect_error(&name, e)))),
            Ok(Ok(mut resp)) => {
                // Room for what the layers add on the way back.
                portcullis_core::extensions::with_room(resp.extensions_mut());
                // Nothing an upstream sends may pose as the gateway's own headers.
                portcullis_core::headers::sanitize_upstream_response(resp.headers_mut());
                Ok(match idle.is_zero() {
                    true => resp.map(Body::new),
                    false => resp.map(|b| Body::new(IdleBody::new(b, idle, name))),
                })
            }
        });
        let answered = head.then(move |result| match (result, first_byte_wait) {
            // Boxed: `first_byte_timeout` is opt-in, and its wait would otherwise widen every
            // attempt's state.
            (Ok(resp), Some((deadline, name))) => Either::Left(Box::pin(first_byte_within(
                resp, deadline, name, first_byte,
            ))),
            (result, _) => Either::Right(std::future::ready(result)),
        });
        Box::pin(
            answered
                .map(move |result| attempt.finish(result))
                .instrument(span),
        )
    }
}

/// Wait for the first body frame until `deadline`: none by then is a timeout (retried and
/// failed over like one, since nothing reached the client yet); the frame is put back in
/// front of the rest of the body.
async fn first_byte_within(
    resp: Response<Body>,
    deadline: tokio::time::Instant,
    name: Arc<str>,
    limit: Duration,
) -> Result<Response<Body>, AttemptError> {
    use http_body_util::BodyExt;
    let (parts, mut body) = resp.into_parts();
    match tokio::time::timeout_at(deadline, body.frame()).await {
        Err(_) => Err(AttemptError::Timeout(Box::new(UpstreamTimeout {
            upstream: name.to_string(),
            timeout: limit,
        }))),
        Ok(None) => Ok(Response::from_parts(parts, Body::empty())),
        Ok(Some(Err(e))) => Err(AttemptError::Connect(Box::new(UpstreamConnectError {
            upstream: name.to_string(),
            message: format!("the body failed before its first byte: {e}"),
            source: Some(Box::new(e)),
        }))),
        Ok(Some(Ok(frame))) => {
            let first = futures_util::stream::once(async move { Ok::<_, axum::Error>(frame) });
            let rest = http_body_util::BodyStream::new(body);
            use futures_util::StreamExt;
            Ok(Response::from_parts(
                parts,
                Body::new(http_body_util::StreamBody::new(first.chain(rest))),
            ))
        }
    }
}

/// The upstream's body went silent for `idle_timeout`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream:?} sent nothing for {idle:?} (idle_timeout)")]
pub struct UpstreamIdle {
    /// The `[[upstreams]]` name.
    pub upstream: String,
    /// The timeout that passed.
    pub idle: Duration,
}

pin_project_lite::pin_project! {
    /// A response body that fails with [`UpstreamIdle`] when no frame arrives for `idle`.
    struct IdleBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        // Set `idle` after the last frame it knew of; moved on when it fires (see `poll_frame`).
        sleep: Pin<Box<tokio::time::Sleep>>,
        last_frame: tokio::time::Instant,
        upstream: Arc<str>,
    }
}

impl<B> IdleBody<B> {
    /// `inner`, failing once no frame has come for `idle`, counted from now.
    fn new(inner: B, idle: Duration, upstream: Arc<str>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            last_frame: now,
            upstream,
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            // Only noted: moving the timer in the timer wheel for every frame (a stream's
            // every event) costs a lock and a re-insertion; it moves when it fires.
            *this.last_frame = tokio::time::Instant::now();
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        loop {
            match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let due = *this.last_frame + *this.idle;
                    if due > this.sleep.deadline() {
                        // A frame came since the timer was set: silent for less than `idle`.
                        this.sleep.as_mut().reset(due);
                        continue;
                    }
                    return Poll::Ready(Some(Err(Box::new(UpstreamIdle {
                        upstream: this.upstream.to_string(),
                        idle: *this.idle,
                    }))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn connect_error(name: &str, e: BoxError) -> UpstreamConnectError {
    // hyper's and hyper-util's Display are terse ("client error (Connect)"): include the
    // root cause.
    UpstreamConnectError {
        upstream: name.to_string(),
        message: chain_message(&*e),
        source: Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One frame after each gap (in ms), numbered from 0.
    fn trickle(gaps: Vec<u64>) -> impl http_body::Body<Data = Bytes, Error = BoxError> {
        let frames =
            futures_util::stream::iter(gaps.into_iter().enumerate()).then(|(i, gap)| async move {
                tokio::time::sleep(Duration::from_millis(gap)).await;
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(i.to_string())))
            });
        StreamBody::new(frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_sending_outlives_its_idle_timeout() {
        // Ten frames 40 ms apart: 400 ms in all, against an idle timeout of 100 ms.
        let start = tokio::time::Instant::now();
        let body = IdleBody::new(
            trickle(vec![40; 10]),
            Duration::from_millis(100),
            "up".into(),
        );
        let all = body.collect().await.expect("never silent for 100 ms");
        assert_eq!(all.to_bytes(), "0123456789");
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_body_idle_after_its_last_frame() {
        // Frames at 40 and 80 ms, then none for 10 s: idle from 80 ms, ended at 180 ms.
        let start = tokio::time::Instant::now();
        let body = IdleBody::new(
            trickle(vec![40, 40, 10_000]),
            Duration::from_millis(100),
            "up".into(),
        );
        let err = body.collect().await.expect_err("silent for 100 ms");
        let idle = err.downcast_ref::<UpstreamIdle>().expect("an idle timeout");
        assert_eq!(idle.idle, Duration::from_millis(100));
        assert_eq!(start.elapsed(), Duration::from_millis(180));
    }

    /// A keep-alive HTTP/1.1 upstream answering `ok`, counting the connections it accepts.
    fn counting_upstream(rt: &tokio::runtime::Runtime) -> (String, Arc<AtomicUsize>) {
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
                );
            }
        });
        (format!("http://{addr}/"), accepted)
    }

    /// GET `url` through `client`: answered `ok`.
    async fn get_ok(client: &UpstreamClient, url: &str) {
        let req = Request::get(url).body(Body::empty()).expect("request");
        let resp = tower::ServiceExt::oneshot(client.clone(), req)
            .await
            .expect("answered");
        let body = resp.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }

    #[test]
    fn each_serving_thread_has_upstream_connections_of_its_own() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (url, accepted) = counting_upstream(&rt);
        let client = UpstreamClient::new(&ClientOptions {
            name: "up".into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            ca_file: None,
            threads: 2,
        })
        .expect("client");
        let workers = crate::workers::Workers::start(2).expect("threads");
        // Three requests one after another on each thread, the second thread's after the
        // first's: one shared pool would serve all six on one connection. Both tasks are
        // open before either sends, so they run on different threads.
        let (go, go_first) = tokio::sync::oneshot::channel::<()>();
        let (first_done, go_second) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        for (start, done) in [(go_first, Some(first_done)), (go_second, None)] {
            let client = client.clone();
            let tx = tx.clone();
            let url = url.clone();
            workers.spawn(move || async move {
                let _ = start.await;
                for _ in 0..3 {
                    get_ok(&client, &url).await;
                }
                if let Some(d) = done {
                    let _ = d.send(());
                }
                let _ = tx.send(crate::workers::current());
            });
        }
        let _ = go.send(());
        let mut ran: Vec<_> = (0..2)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("requests ran")
            })
            .collect();
        ran.sort();
        assert_eq!(ran, vec![Some(0), Some(1)]);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "one connection per thread"
        );
        // Off the serving threads: the shared pool, a third connection.
        rt.block_on(get_ok(&client, &url));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
