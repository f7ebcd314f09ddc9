//! Accept loop, per-connection serving (plain or TLS) and the request handler.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::response::{
    Action, BodyKind, MockResponse, ToolCallSpec, MOCK_ERROR_BODY, TOOL_CALL_HEADER,
};
use super::routes::{default_reply, Call, Reply, ReplyBody, Route, DEFAULT_CONTENT};
use super::{ws, RecordedRequest, Shared, UPLOAD_RECORD_PREFIX};

/// Per-connection handle given to the handler (as a request extension) so a scripted
/// [`MockResponse::reset`] can tear down the connection it arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtx {
    pub(crate) token: CancellationToken,
    rst: Arc<AtomicBool>,
}

impl ConnCtx {
    fn reset(&self) {
        self.rst.store(true, Ordering::Release);
        self.token.cancel();
    }
}

/// A TCP stream that can be closed with RST instead of FIN.
///
/// Linger 0 must only be set when the reset is wanted: on a normal close it would throw
/// away response bytes still in the kernel's send buffer.
#[derive(Debug)]
struct ResettableStream {
    inner: TcpStream,
    rst: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.rst.load(Ordering::Acquire) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections until `shutdown` fires; each connection runs in its own task and
/// is dropped (not drained) on shutdown, so hanging requests end with the mock.
pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let router = Router::new().fallback(handle).with_state(shared);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "mock upstream: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        // Small responses must not wait for Nagle (this is a latency baseline).
        let _ = stream.set_nodelay(true);
        let ctx = ConnCtx {
            token: shutdown.child_token(),
            rst: Arc::new(AtomicBool::new(false)),
        };
        let io = ResettableStream {
            inner: stream,
            rst: ctx.rst.clone(),
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(io, router, ctx).await,
                Some(acceptor) => {
                    let accepted = tokio::select! {
                        r = acceptor.accept(io) => r,
                        () = ctx.token.cancelled() => return,
                    };
                    match accepted {
                        Ok(tls_stream) => serve_connection(tls_stream, router, ctx).await,
                        Err(e) => {
                            tracing::debug!(error = %e, "mock upstream: TLS handshake failed")
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router, ctx: ConnCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let token = ctx.token.clone();
    let svc = router.map_request(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ctx.clone());
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // With upgrades: the WebSocket echo takes the connection over after its 101.
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::trace!(error = %e, "mock upstream: connection ended with an error");
        },
        // Reset or shutdown: dropping the connection closes the socket (with RST on reset).
        () = token.cancelled() => {}
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let conn = parts.extensions.get::<ConnCtx>().cloned();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let route = Route::of(&parts.method, parts.uri.path(), content_type.as_deref())
        .spoken(shared.only.load(std::sync::atomic::Ordering::Relaxed));
    // Uploads go through the byte-counting sink, never into memory whole.
    let read = if route.is_upload() {
        sink(body).await
    } else {
        axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| (b.len() as u64, b))
    };
    let (body_len, body) = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::debug!(error = %e, "mock upstream: could not read the request body");
            return respond(
                &shared,
                Reply::json(
                    http::StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": {"message": "mock upstream: unreadable body", "type": "invalid_request_error", "code": null}}),
                ),
                &[],
                Duration::ZERO,
                None,
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
        .to_owned();
    let path = path.as_str();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    shared.count.fetch_add(1, Ordering::Relaxed);
    if shared.recording.load(Ordering::Relaxed) {
        let recorded = RecordedRequest {
            method: parts.method.clone(),
            path: path.to_owned(),
            headers: parts.headers.clone(),
            body: body.clone(),
            body_len,
        };
        shared.lock_recorded().push(recorded);
    }

    let (scripted, source) = shared.next_response(&parts.headers);
    tracing::debug!(method = %parts.method, path, seq, source, "mock upstream: request");
    let scripted = scripted.unwrap_or_else(MockResponse::ok);

    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    match scripted.action {
        Action::Respond => {}
        Action::Reset => {
            if let Some(conn) = conn {
                conn.reset();
            }
            // The connection task drops this future along with the connection.
            return std::future::pending().await;
        }
        Action::Hang => return std::future::pending().await,
    }

    // A WebSocket handshake on a socket route gets the echo, unless a script says otherwise
    // (e.g. `MockResponse::status(401)` refuses the upgrade).
    if ws::is_upgrade(&parts) && matches!(scripted.body, BodyKind::RouteDefault) {
        if let Some(resp) = ws::accept(&mut parts, &scripted.headers, conn) {
            return resp;
        }
    }

    let content = scripted.content.as_deref().unwrap_or(DEFAULT_CONTENT);
    // Tool calls: the script's own, else the request's `x-mock-tool-call` headers, unless the
    // request answers a call (its last turn is a tool's result): an agent's loop then ends
    // with the model's text, as it does with a real model.
    let tool_calls = if scripted.tool_calls.is_empty() {
        match requested_tool_calls(&parts.headers, &body) {
            Ok(calls) => calls,
            Err(message) => {
                return respond(
                    &shared,
                    Reply::json(
                        http::StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": "mock_script"}}),
                    ),
                    &[],
                    Duration::ZERO,
                    None,
                );
            }
        }
    } else {
        scripted.tool_calls.clone()
    };
    let mut reply = match &scripted.body {
        BodyKind::RouteDefault => default_reply(&Call {
            route,
            method: &parts.method,
            path,
            body: &body,
            seq,
            content,
            body_len,
            content_type: content_type.as_deref(),
            tool_calls: &tool_calls,
        }),
        BodyKind::MockError => Reply {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            content_type: HeaderValue::from_static("application/json"),
            body: ReplyBody::Full(Bytes::from_static(MOCK_ERROR_BODY.as_bytes())),
        },
        BodyKind::Empty => Reply {
            status: http::StatusCode::NO_CONTENT,
            content_type: HeaderValue::from_static("application/json"),
            body: ReplyBody::Full(Bytes::new()),
        },
        BodyKind::Full { content_type, body } => Reply {
            status: http::StatusCode::OK,
            content_type: content_type.clone(),
            body: ReplyBody::Full(body.clone()),
        },
        BodyKind::Events(events) => Reply {
            status: http::StatusCode::OK,
            content_type: HeaderValue::from_static("text/event-stream"),
            body: ReplyBody::Events(events.to_vec()),
        },
    };
    if let Some(status) = scripted.status {
        reply.status = status;
    }
    let gap = scripted.chunk_delay.unwrap_or_else(|| shared.chunk_delay());
    respond(&shared, reply, &scripted.headers, gap, scripted.abort_after)
}

/// Reads a body frame by frame, counting its bytes and keeping only the first
/// [`UPLOAD_RECORD_PREFIX`] of them: a large upload is never held in memory.
/// The calls the request scripts with [`TOOL_CALL_HEADER`] headers, in order.
fn requested_tool_calls(
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<ToolCallSpec>, String> {
    if !headers.contains_key(TOOL_CALL_HEADER) || ends_with_tool_result(body) {
        return Ok(Vec::new());
    }
    headers
        .get_all(TOOL_CALL_HEADER)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("{TOOL_CALL_HEADER}: not visible ASCII"))
                .and_then(ToolCallSpec::parse)
        })
        .collect()
}

/// Whether a model request's last turn is a tool's result: a chat `tool` (or legacy
/// `function`) message, an Anthropic user message holding a `tool_result` block, a Responses
/// `*_call_output` input item.
fn ends_with_tool_result(body: &[u8]) -> bool {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let last = match (body.get("messages"), body.get("input")) {
        (Some(serde_json::Value::Array(turns)), _) | (_, Some(serde_json::Value::Array(turns))) => {
            turns.last()
        }
        _ => None,
    };
    let Some(last) = last else {
        return false;
    };
    let role = last.get("role").and_then(serde_json::Value::as_str);
    let kind = last.get("type").and_then(serde_json::Value::as_str);
    matches!(role, Some("tool" | "function"))
        || kind.is_some_and(|k| k.ends_with("_call_output"))
        || last
            .get("content")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|blocks| {
                blocks.iter().any(|b| {
                    b.get("type").and_then(serde_json::Value::as_str) == Some("tool_result")
                })
            })
}

async fn sink(mut body: Body) -> Result<(u64, Bytes), axum::Error> {
    let mut len = 0_u64;
    let mut prefix = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            let room = UPLOAD_RECORD_PREFIX.saturating_sub(prefix.len());
            prefix.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    Ok((len, prefix.freeze()))
}

/// Turns a reply into the HTTP response: scripted headers win over the mock's own, streams
/// are paced by `gap`, and `abort_after` cuts the body short.
fn respond(
    shared: &Arc<Shared>,
    reply: Reply,
    headers: &[(http::HeaderName, HeaderValue)],
    gap: Duration,
    abort_after: Option<usize>,
) -> Response {
    let streaming = matches!(reply.body, ReplyBody::Events(_));
    let body = match (reply.body, abort_after) {
        (ReplyBody::Full(bytes), None) => Body::from(bytes),
        (ReplyBody::Full(bytes), Some(n)) => paced(shared, vec![bytes], Duration::ZERO, Some(n)),
        (ReplyBody::Events(events), abort) => paced(shared, events, gap, abort),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, reply.content_type);
    if streaming {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    for (i, (name, _)) in headers.iter().enumerate() {
        // A name's first scripted value replaces the mock's own; later ones add to it.
        if !headers[..i].iter().any(|(n, _)| n == name) {
            h.remove(name);
        }
    }
    for (name, value) in headers {
        h.append(name.clone(), value.clone());
    }
    resp
}

/// A real streamed body: each piece is its own frame, `gap` apart, cut after `abort_after`.
/// A body dropped before its end (the client went away) is counted in `shared`.
fn paced(
    shared: &Arc<Shared>,
    pieces: Vec<Bytes>,
    gap: Duration,
    abort_after: Option<usize>,
) -> Body {
    struct State {
        pieces: std::vec::IntoIter<Bytes>,
        sent: usize,
        done: bool,
        shared: Arc<Shared>,
    }
    impl State {
        // A method, not a field write before `return`: rustc's unused-assignment lint does
        // not see that `Drop` reads the flag.
        fn finish(&mut self) {
            self.done = true;
        }
    }
    impl Drop for State {
        fn drop(&mut self) {
            if !self.done {
                self.shared
                    .streams_cancelled
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let state = State {
        pieces: pieces.into_iter(),
        sent: 0,
        done: false,
        shared: shared.clone(),
    };
    Body::from_stream(stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        if abort_after == Some(s.sent) {
            // Hyper flushes what it buffered only when the body is pending: without a pause
            // the error would discard the pieces (and headers) "sent" before the cut.
            if s.sent > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            } else {
                tokio::task::yield_now().await;
            }
            s.finish();
            let err = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock upstream: stream aborted",
            );
            return Some((Err(err), s));
        }
        let Some(piece) = s.pieces.next() else {
            s.finish();
            return None;
        };
        if s.sent > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        s.sent += 1;
        Some((Ok::<_, io::Error>(piece), s))
    }))
}
