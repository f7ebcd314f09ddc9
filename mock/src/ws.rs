//! The WebSocket echo on `.../v1/responses` and `.../v1/realtime`.
//!
//! The handshake is answered here (101 with `Sec-WebSocket-Accept`), then hyper hands the raw
//! connection over and tokio-tungstenite speaks the protocol: text and binary messages come
//! back as they were sent, pings are answered, and a close is answered with a close.

use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use axum::body::Body;
use axum::response::Response;

use super::server::ConnCtx;

/// Paths (matched on the suffix) where a WebSocket upgrade is accepted.
const SOCKET_PATHS: [&str; 2] = ["/v1/responses", "/v1/realtime"];

/// Whether the request asks for a WebSocket on one of the socket routes.
pub(crate) fn is_upgrade(parts: &Parts) -> bool {
    let wants_ws = parts
        .headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_upgrade = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants_ws
        && connection_upgrade
        && parts.method == Method::GET
        && SOCKET_PATHS.iter().any(|p| parts.uri.path().ends_with(p))
}

/// Answers the handshake and starts the echo once hyper hands the connection over. `None` if
/// the connection cannot be upgraded (HTTP/2, where hyper offers no `OnUpgrade`): the caller
/// then answers as for any other request.
pub(crate) fn accept(
    parts: &mut Parts,
    headers: &[(HeaderName, HeaderValue)],
    conn: Option<ConnCtx>,
) -> Option<Response> {
    let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
        return Some(bad_request("missing Sec-WebSocket-Key"));
    };
    if parts
        .headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Some(bad_request("Sec-WebSocket-Version must be 13"));
    }
    let on_upgrade = parts.extensions.remove::<OnUpgrade>()?;
    let accept = derive_accept_key(key.as_bytes());
    // A client that offers subprotocols (OpenAI's realtime API does) expects one picked.
    let protocol = parts
        .headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .and_then(|p| HeaderValue::from_str(p).ok());
    let token = conn.map_or_else(CancellationToken::new, |c| c.token.clone());
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "mock upstream: websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(ws, token).await;
    });

    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    for (name, value) in headers {
        h.append(name.clone(), value.clone());
    }
    Some(resp)
}

/// Sends every text and binary message back until the client closes (tungstenite answers the
/// close frame itself) or the mock shuts down.
async fn echo<S>(mut ws: WebSocketStream<S>, token: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = token.cancelled() => return,
        };
        let back = match msg {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            // Pings are answered and closes acknowledged inside tungstenite; the next read
            // flushes them and then ends the stream.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::trace!(error = %e, "mock upstream: websocket ended with an error");
                return;
            }
            None => return,
        };
        if ws.send(back).await.is_err() {
            return;
        }
    }
}

fn bad_request(why: &str) -> Response {
    let mut resp = Response::new(Body::from(format!(
        "{{\"error\":{{\"message\":\"mock upstream: bad websocket handshake: {why}\",\"type\":\"invalid_request_error\",\"code\":null}}}}"
    )));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
