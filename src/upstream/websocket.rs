//! WebSocket upgrades on `/v1/responses` and `/v1/realtime`, proxied to an upstream.
//!
//! The handshake goes to the upstream of the `model` query parameter (resolved like a body's
//! model: exact, `prefix*`, `*`), else to the `*` model's upstream, on a dedicated HTTP/1.1
//! connection ([`UpstreamClient::send_upgradable`]) with the upstream's URL, credentials and
//! extra headers as for HTTP. The upstream's `101` goes back to the client; once both sides
//! have switched protocols the bytes are copied both ways until either side closes. Any other
//! answer goes back as a normal HTTP response.
//!
//! # When the gateway answers `426 Upgrade Required`
//!
//! A socket on `/v1/responses` whose requests the gateway would have to translate (its model
//! is served by an upstream with `api = "openai"` or `"anthropic"`), or whose model it cannot know (no
//! `model` in the query, as Codex connects: the model comes in the first message) while some
//! upstream is translated or no `*` model takes it, is answered `426` with an error saying so:
//! the Responses API's clients then send the same request over HTTP (Codex falls back to
//! HTTPS at once on a 426, where a 404 costs it several retries and a 400 fails the turn),
//! and over HTTP the body's model routes it, translated where needed. So is a `/v1/responses`
//! handshake the upstream answered 404, 405 or 501 (a server with no Responses sockets: vLLM,
//! Ollama, llama.cpp, Anthropic). `/v1/realtime` has no HTTP form and keeps its 404 and the
//! upstream's answers.
//!
//! # Why bytes and not frames
//!
//! The gateway has nothing to do inside a socket: copying the raw bytes keeps pings, close
//! frames and any negotiated extension (`permessage-deflate`) end to end between the client
//! and the upstream, and needs no WebSocket implementation in the gateway.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::Body;
use futures_util::future::Either;
use http::{
    header::{
        CONNECTION, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_VERSION, UPGRADE,
    },
    HeaderValue, Method, Request, Response, StatusCode,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portcullis_core::{
    error::{Refusal, Refused},
    headers::{int_value, X_PORTCULLIS_ATTEMPTS, X_PORTCULLIS_UPSTREAM, X_REQUEST_ID},
    RouteInfo, UserId,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::{util::BoxCloneSyncService, BoxError, Layer, Service, ServiceExt};

use super::{router::RoutedError, ModelRouter, UpstreamClient};

/// The paths where a WebSocket handshake is proxied.
pub const SOCKET_PATHS: [&str; 2] = ["/v1/responses", "/v1/realtime"];

/// Whether `req` is a WebSocket handshake (`GET`, `Connection: upgrade`, `Upgrade: websocket`)
/// on one of [`SOCKET_PATHS`].
pub fn is_handshake<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let websocket = h
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection_upgrade = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    websocket
        && connection_upgrade
        && req.method() == Method::GET
        && SOCKET_PATHS.contains(&req.uri().path())
}

// === impl WebSocketLayer ===

/// The socket stack as the app holds it: the edge below makes it infallible.
pub type SocketService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Sends WebSocket handshakes on [`SOCKET_PATHS`] to a socket stack and every other request to
/// the inner service (the app's routes), so that a path can carry both plain HTTP (`POST
/// /v1/responses`) and sockets whatever its routes are. Cloning shares the socket stack.
#[derive(Clone)]
pub struct WebSocketLayer {
    sockets: SocketService,
}

impl fmt::Debug for WebSocketLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketLayer").finish_non_exhaustive()
    }
}

impl WebSocketLayer {
    /// Handshakes go to `sockets`.
    pub fn new(sockets: SocketService) -> Self {
        Self { sockets }
    }
}

impl<S> Layer<S> for WebSocketLayer {
    type Service = WebSocket<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WebSocket {
            inner,
            sockets: self.sockets.clone(),
        }
    }
}

/// See [`WebSocketLayer`].
#[derive(Clone)]
pub struct WebSocket<S> {
    inner: S,
    sockets: SocketService,
}

impl<S: fmt::Debug> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for WebSocket<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<tower::util::Oneshot<SocketService, Request<Body>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_handshake(&req) {
            Either::Left(self.sockets.clone().oneshot(req))
        } else {
            Either::Right(self.inner.call(req))
        }
    }
}

// === impl WebSocketProxy ===

/// Why a handshake was answered by the gateway itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SocketRefused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal for SocketRefused {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn code(&self) -> &'static str {
        self.code
    }
}

/// The innermost service of the socket stack: picks the upstream, makes the upstream
/// handshake and, on `101`, splices the two connections. Cloning shares the tables.
#[derive(Clone)]
pub struct WebSocketProxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    router: ModelRouter,
    clients: HashMap<String, UpstreamClient>,
    /// The upstreams the Responses API is translated for: a socket to them is refused with
    /// `426`.
    translated: HashSet<String>,
}

/// One upstream as the socket proxy sees it.
#[derive(Debug, Clone)]
pub struct SocketUpstream {
    /// The upstream's name.
    pub name: String,
    /// Its client (TLS roots, timeouts).
    pub client: UpstreamClient,
    /// Whether Responses requests to it are translated (`api = "openai"` or `"anthropic"`).
    pub translated: bool,
}

impl fmt::Debug for WebSocketProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketProxy")
            .field("upstreams", &self.inner.clients.len())
            .finish()
    }
}

impl WebSocketProxy {
    /// Route with `router`'s models; connect with each upstream's own client (its TLS roots
    /// and timeouts), by upstream name.
    pub fn new(router: ModelRouter, upstreams: impl IntoIterator<Item = SocketUpstream>) -> Self {
        let mut clients = HashMap::new();
        let mut translated = HashSet::new();
        for u in upstreams {
            if u.translated {
                translated.insert(u.name.clone());
            }
            clients.insert(u.name, u.client);
        }
        Self {
            inner: Arc::new(ProxyInner {
                router,
                clients,
                translated,
            }),
        }
    }
}

impl Service<Request<Body>> for WebSocketProxy {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        Box::pin(proxy(self.inner.clone(), req))
    }
}

/// The `model` query parameter, percent-decoded.
pub(super) fn query_model(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "model")
        .map(|(_, v)| v.into_owned())
}

/// `path?query` with the `model` parameter's value replaced by `model` (other parameters are
/// kept byte for byte).
fn with_model(path: &str, query: Option<&str>, model: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let Some(model) = model else {
        return format!("{path}?{query}");
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let is_model = url::form_urlencoded::parse(key.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == "model");
            if is_model {
                let v: String = url::form_urlencoded::byte_serialize(model.as_bytes()).collect();
                format!("{key}={v}")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

async fn proxy(inner: Arc<ProxyInner>, mut req: Request<Body>) -> Result<Response<Body>, BoxError> {
    let Some(client_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        // HTTP/2 (and HTTP/1.0) connections cannot switch protocols.
        return Err(Refused::boxed(SocketRefused {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: "a WebSocket upgrade needs an HTTP/1.1 connection".into(),
        }));
    };
    let (parts, _) = req.into_parts();
    let requested = query_model(parts.uri.query());
    let route = match &requested {
        Some(m) => inner.router.resolve(m),
        // No model named: the catch-all's upstream (`*` is matched by `*` alone).
        None => inner.router.resolve("*").filter(|r| r.name == "*"),
    };
    // The Responses API over HTTP instead (module docs): a model the gateway translates for,
    // or one it cannot know while it might.
    if parts.uri.path() == "/v1/responses" {
        let why = match (&requested, &route) {
            (Some(m), Some(r)) if inner.translated.contains(&r.upstream) => Some(format!(
                "model {m:?} is served by upstream {:?}, whose API the gateway translates to: \
                 send the request over HTTP (POST /v1/responses)",
                r.upstream
            )),
            (None, _) if !inner.translated.is_empty() => Some(
                "this gateway translates some models' requests and a socket with no model in \
                 its query (?model=...) cannot be routed by the model of its messages: send the \
                 request over HTTP (POST /v1/responses)"
                    .to_owned(),
            ),
            (None, None) => Some(
                "no model in the query (?model=...) and no \"*\" model to take it: send the \
                 request over HTTP (POST /v1/responses), whose body names the model"
                    .to_owned(),
            ),
            _ => None,
        };
        if let Some(message) = why {
            return Err(Refused::boxed(SocketRefused {
                status: StatusCode::UPGRADE_REQUIRED,
                code: "websocket_unavailable",
                message,
            }));
        }
    }
    let not_found = |message: String| {
        Refused::boxed(SocketRefused {
            status: StatusCode::NOT_FOUND,
            code: "model_not_found",
            message,
        })
    };
    let Some(route) = route else {
        return Err(not_found(match &requested {
            Some(m) => format!(
                "model {m:?} is not configured; configured models: {}",
                inner.router.model_names().join(", ")
            ),
            None => "no model in the query (?model=...) and no \"*\" model to take it".into(),
        }));
    };
    let (Some((upstream, _)), Some(client)) = (
        inner.router.upstream(&route.upstream),
        inner.clients.get(&route.upstream),
    ) else {
        return Err(not_found(format!("no upstream named {:?}", route.upstream)));
    };

    let user_id = parts.extensions.get::<UserId>().map(|u| u.0.clone());
    let route_info = RouteInfo {
        model: requested.as_deref().unwrap_or("").into(),
        entry: Some(route.name.as_str().into()),
        upstream: upstream.name.clone(),
        attempts: 1,
        user_id: user_id.clone(),
    };
    let path_and_query = with_model(
        parts.uri.path(),
        parts.uri.query(),
        route.model.as_deref().filter(|_| requested.is_some()),
    );
    let mut headers = parts.headers.clone();
    upstream.prepare_headers(&mut headers);
    // The handshake's own headers: hop-by-hop ones were stripped above, the rest are put back
    // as the client sent them (a key, a version, the offered subprotocols and extensions).
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    for name in [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_EXTENSIONS,
    ] {
        headers.remove(&name);
        for v in parts.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let mut upstream_req = Request::builder()
        .method(Method::GET)
        .uri(upstream.uri_for(&path_and_query)?)
        .body(Body::empty())?;
    *upstream_req.headers_mut() = headers;

    let routed = |source: BoxError| -> BoxError {
        Box::new(RoutedError {
            route: route_info.clone(),
            source,
        })
    };
    tracing::debug!(upstream = %upstream.name, model = ?requested, "websocket handshake");
    let mut answer = client.send_upgradable(upstream_req).await.map_err(routed)?;
    let status = answer.status();
    let upstream_upgrade = (status == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| answer.extensions_mut().remove::<OnUpgrade>())
        .flatten();
    if upstream_upgrade.is_none() && parts.uri.path() == "/v1/responses" && no_sockets(status) {
        // An upstream with no Responses sockets (a local server, Anthropic): told as the
        // gateway's own 426 above, so that the client goes on over HTTP at once.
        return Err(routed(Refused::boxed(SocketRefused {
            status: StatusCode::UPGRADE_REQUIRED,
            code: "websocket_unavailable",
            message: format!(
                "upstream {:?} takes no WebSocket on /v1/responses (it answered the handshake \
                 {}): send the request over HTTP (POST /v1/responses)",
                upstream.name,
                status.as_u16()
            ),
        })));
    }
    let mut resp = answer.map(Body::new);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&upstream.name) {
        h.insert(X_PORTCULLIS_UPSTREAM, v);
    }
    h.insert(X_PORTCULLIS_ATTEMPTS, int_value(1u32));
    resp.extensions_mut().insert(route_info);
    let Some(upstream_upgrade) = upstream_upgrade else {
        // A refusal (401, 403, 404...) or an upstream that does not speak WebSocket on this
        // path: its answer is the client's.
        tracing::debug!(upstream = %upstream.name, %status, "upstream did not switch protocols");
        return Ok(resp);
    };
    // The upstream's Connection/Upgrade were stripped as hop-by-hop; this hop switches too.
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));

    let socket = Socket {
        upstream: upstream.name.to_string(),
        model: requested,
        user_id: user_id.map(|u| u.to_string()),
        request_id: parts
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    tokio::spawn(splice(client_upgrade, upstream_upgrade, socket));
    Ok(resp)
}

/// The statuses with which a server says it has no WebSocket at a path: not found, the
/// method (`GET`) not allowed there, or upgrades not implemented.
fn no_sockets(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
    )
}

/// What the end-of-socket log line names.
#[derive(Debug)]
struct Socket {
    upstream: String,
    model: Option<String>,
    user_id: Option<String>,
    request_id: Option<String>,
}

/// Counts one open socket in `portcullis_websocket_connections` for as long as it lives, even
/// if the task is dropped (runtime shut down).
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        metrics::gauge!("portcullis_websocket_connections").increment(1.0);
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("portcullis_websocket_connections").decrement(1.0);
    }
}

/// After one side has ended and the other's write was shut down, how long the other side has
/// to close in turn before the gateway drops it (a client that never closes its end after the
/// close handshake must not hold a task forever).
const LINGER: Duration = Duration::from_secs(10);

/// Waits for both sides to switch protocols, then copies bytes both ways until both directions
/// have ended (a side's EOF is passed on as a write shutdown, so a close handshake completes).
async fn splice(client: OnUpgrade, upstream: OnUpgrade, socket: Socket) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(upstream = %socket.upstream, error = %e, "websocket upgrade failed");
            return;
        }
    };
    let started = Instant::now();
    let _open = OpenSocket::new();
    metrics::counter!("portcullis_websocket_total", "upstream" => socket.upstream.clone())
        .increment(1);
    let mut client = Side::new(TokioIo::new(client), LINGER);
    let mut upstream = Side::new(TokioIo::new(upstream), LINGER);
    let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    let error = result.err().map(|e| e.to_string());
    tracing::info!(
        target: "portcullis::websocket",
        upstream = %socket.upstream,
        model = socket.model.as_deref().unwrap_or(""),
        user_id = socket.user_id.as_deref().unwrap_or(""),
        request_id = socket.request_id.as_deref().unwrap_or(""),
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_from_client = client.read,
        bytes_from_upstream = upstream.read,
        error = error.as_deref().unwrap_or(""),
        "websocket closed"
    );
}

/// One side of a spliced socket: counts the bytes read from it (kept after an error, unlike
/// `copy_bidirectional`'s totals), and once its write half is shut down (the other side
/// ended) reads as ended after `linger`, whether or not the peer has closed.
struct Side<T> {
    inner: T,
    read: u64,
    linger: Duration,
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Side<T> {
    fn new(inner: T, linger: Duration) -> Self {
        Self {
            inner,
            read: 0,
            linger,
            closing: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Side<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.closing.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                // Nothing read: the copy takes it for the end of this side.
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Side<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.is_none() {
            let linger = self.linger;
            self.closing = Some(Box::pin(tokio::time::sleep(linger)));
            // A read of this side may already be waiting on the peer alone: poll it again so
            // that it waits on the deadline too.
            cx.waker().wake_by_ref();
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(method: Method, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn handshakes_are_told_from_plain_requests() {
        assert!(is_handshake(&handshake(
            Method::GET,
            "/v1/realtime?model=x"
        )));
        assert!(is_handshake(&handshake(Method::GET, "/v1/responses")));
        assert!(!is_handshake(&handshake(Method::POST, "/v1/responses")));
        assert!(!is_handshake(&handshake(
            Method::GET,
            "/v1/responses/resp_1"
        )));
        assert!(!is_handshake(&handshake(
            Method::GET,
            "/v1/chat/completions"
        )));
        let plain = Request::get("/v1/realtime").body(Body::empty()).unwrap();
        assert!(!is_handshake(&plain));
    }

    #[test]
    fn the_model_parameter_is_read_and_rewritten() {
        assert_eq!(
            query_model(Some("a=1&model=gpt-4o%20x")),
            Some("gpt-4o x".into())
        );
        assert_eq!(query_model(Some("a=1")), None);
        assert_eq!(query_model(None), None);
        assert_eq!(
            with_model("/v1/realtime", Some("a=%2F&model=alias&b"), Some("gpt 4")),
            "/v1/realtime?a=%2F&model=gpt+4&b"
        );
        assert_eq!(
            with_model("/v1/realtime", Some("model=m"), None),
            "/v1/realtime?model=m"
        );
        assert_eq!(with_model("/v1/realtime", None, Some("x")), "/v1/realtime");
    }

    /// The layer sits on the whole app: a handshake reaches the sockets even on a path whose
    /// route takes only POST (the proxied `/v1/responses`), and plain requests do not.
    #[tokio::test]
    async fn the_layer_takes_handshakes_before_method_routing() {
        use axum::routing::post;
        let sockets: SocketService =
            BoxCloneSyncService::new(tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .body(Body::empty())
                        .unwrap(),
                )
            }));
        let app = axum::Router::new()
            .route("/v1/responses", post(|| async { "post" }))
            .layer(WebSocketLayer::new(sockets));
        let status = |req: Request<Body>| {
            let app = app.clone();
            async move { app.oneshot(req).await.unwrap().status() }
        };
        assert_eq!(
            status(handshake(Method::GET, "/v1/responses")).await,
            StatusCode::SWITCHING_PROTOCOLS
        );
        assert_eq!(
            status(handshake(Method::GET, "/v1/realtime")).await,
            StatusCode::SWITCHING_PROTOCOLS
        );
        let post = Request::post("/v1/responses").body(Body::empty()).unwrap();
        assert_eq!(status(post).await, StatusCode::OK);
        let get = Request::get("/v1/responses").body(Body::empty()).unwrap();
        assert_eq!(status(get).await, StatusCode::METHOD_NOT_ALLOWED);
    }

    /// Bytes are counted each way; after the other side ends, a peer that never closes is
    /// let go after the linger.
    #[tokio::test(start_paused = true)]
    async fn a_side_that_never_closes_is_let_go_after_the_linger() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client_io, mut client_peer) = tokio::io::duplex(1024);
        let (upstream_io, mut upstream_peer) = tokio::io::duplex(1024);
        let mut client = Side::new(client_io, Duration::from_secs(10));
        let mut upstream = Side::new(upstream_io, Duration::from_secs(10));
        let copy = tokio::spawn(async move {
            let r = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            (r.is_ok(), client.read, upstream.read)
        });
        client_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_peer.write_all(b"bye").await.unwrap();
        // The upstream closes; the client never does.
        drop(upstream_peer);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!copy.is_finished(), "the client has the linger to close");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(copy.await.unwrap(), (true, 5, 3));
    }
}
