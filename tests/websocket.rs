//! WebSocket upgrades on `/v1/responses` and `/v1/realtime`, end to end: a tokio-tungstenite
//! client, the gateway on a real socket, the mock upstream's echo.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis_mock::{MockResponse, MockUpstream};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        client::IntoClientRequest,
        handshake::client::{Request, Response},
        protocol::{frame::coding::CloseCode, CloseFrame},
        Error as WsError, Message,
    },
    MaybeTlsStream, WebSocketStream,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn request(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut req = format!("ws://{}{}", gw.addr, path)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

async fn open(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (Socket, Response) {
    tokio::time::timeout(
        Duration::from_secs(10),
        connect_async(request(gw, path, headers)),
    )
    .await
    .expect("handshake in time")
    .unwrap_or_else(|e| panic!("handshake through the gateway failed: {e}"))
}

/// The HTTP answer (status, body) of a handshake the gateway or the upstream refused, sent
/// with a plain HTTP client so that the whole body is read.
async fn refused(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    h.extend_from_slice(headers);
    let r = send(http::Method::GET, &gw.url(path), bytes::Bytes::new(), &h).await;
    assert_ne!(r.status, 101, "expected a refusal");
    (r.status.as_u16(), r.text())
}

async fn next(ws: &mut Socket) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message or the end in time")
}

#[tokio::test]
async fn text_and_binary_echo_both_ways_and_the_client_close_propagates() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    for path in [
        "/v1/responses",
        "/v1/realtime?model=gpt-4o-realtime-preview",
    ] {
        let (mut ws, resp) = open(&gw, path, &[]).await;
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers()
                .get("x-portcullis-upstream")
                .and_then(|v| v.to_str().ok()),
            Some("mock")
        );

        ws.send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap().unwrap(),
            Message::text(r#"{"type":"response.create"}"#)
        );
        let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        ws.send(Message::binary(blob.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::binary(blob));

        // The client's close reaches the upstream, whose answering close comes back.
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
        match next(&mut ws).await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("expected the upstream's close, got {other:?}"),
        }
        assert!(
            next(&mut ws).await.is_none(),
            "the socket ends after the close"
        );
    }
    let handshakes: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.is_websocket())
        .collect();
    assert_eq!(handshakes.len(), 2);

    // Counted in /metrics while nothing is open any more.
    let metrics = get(&gw.url("/metrics"), &[]).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_websocket_total{upstream=\"mock\"}")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_websocket_connections")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upstream_that_goes_away_ends_the_clients_socket() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    let (mut ws, _) = open(&gw, "/v1/realtime", &[]).await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("hi"));
    // The mock's shutdown drops its end of the socket.
    drop(mock);
    match next(&mut ws).await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(m)) => panic!("expected the end of the socket, got {m:?}"),
    }
}

#[tokio::test]
async fn the_handshake_reaches_the_upstream_as_prepared_for_http() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "up"
base_url = "{}/prefix"
auth = "bearer"
api_key = "sk-upstream"
headers = {{ "x-extra" = "extra-value" }}

[[models]]
name = "*"
upstream = "up"

[[models]]
name = "realtime-alias"
upstream = "up"
model = "gpt-4o-realtime-preview-2024-12-17"
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let (mut ws, resp) = open(
        &gw,
        "/v1/realtime?model=realtime-alias&foo=a%2Fb",
        &[
            ("authorization", "Bearer client-key"),
            (
                "sec-websocket-protocol",
                "realtime, openai-beta.realtime-v1",
            ),
            ("openai-beta", "realtime=v1"),
            ("x-memory-user-id", "alice"),
            ("cookie", "gateway=only"),
        ],
    )
    .await;
    // The upstream's pick of the offered subprotocols comes back.
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("realtime")
    );
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("ping"));
    ws.close(None).await.unwrap();

    let hs = mock.last_request().unwrap();
    assert!(hs.is_websocket());
    assert_eq!(hs.method, http::Method::GET);
    // Base path prefix, path, the query kept, the model rewritten like a body's.
    assert_eq!(
        hs.path,
        "/prefix/v1/realtime?model=gpt-4o-realtime-preview-2024-12-17&foo=a%2Fb"
    );
    assert_eq!(hs.header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(hs.header("x-extra"), Some("extra-value"));
    assert_eq!(hs.header("openai-beta"), Some("realtime=v1"));
    assert_eq!(hs.header("x-sm-user-id"), Some("alice"));
    assert_eq!(hs.header("x-memory-user-id"), None);
    assert_eq!(hs.header("cookie"), None);
    assert_eq!(
        hs.header("host"),
        Some(mock.url().trim_start_matches("http://"))
    );
    assert!(hs
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(hs.header("sec-websocket-version"), Some("13"));
    assert!(hs
        .header("sec-websocket-key")
        .is_some_and(|k| k.len() == 24));
    assert_eq!(
        hs.header("sec-websocket-protocol"),
        Some("realtime, openai-beta.realtime-v1")
    );
}

#[tokio::test]
async fn gateway_keys_guard_the_handshake() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(
        &mock.url(),
        "[server]\napi_keys = [\"gw-key\"]",
    ))
    .await;
    let (status, body) = refused(&gw, "/v1/realtime", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("API key"), "{body}");
    let (status, _) = refused(&gw, "/v1/responses", &[("x-api-key", "wrong")]).await;
    assert_eq!(status, 401);
    assert_eq!(mock.request_count(), 0);

    let (mut ws, _) = open(&gw, "/v1/responses", &[("authorization", "Bearer gw-key")]).await;
    ws.send(Message::text("in")).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("in"));
}

#[tokio::test]
async fn the_model_query_picks_the_upstream() {
    let default = MockUpstream::start().await.unwrap();
    let realtime = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "default"
base_url = "{}"

[[upstreams]]
name = "realtime"
base_url = "{}"

[[models]]
name = "*"
upstream = "default"

[[models]]
name = "gpt-realtime*"
upstream = "realtime"
"#,
        default.url(),
        realtime.url()
    );
    let gw = TestGateway::start(&toml).await;
    let (_ws, resp) = open(&gw, "/v1/realtime?model=gpt-realtime-mini", &[]).await;
    assert_eq!(
        resp.headers()
            .get("x-portcullis-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("realtime")
    );
    assert_eq!(realtime.request_count(), 1);
    assert_eq!(default.request_count(), 0);
    // No model: the `*` model's upstream.
    let (_ws, _) = open(&gw, "/v1/responses", &[]).await;
    let (_ws, _) = open(&gw, "/v1/realtime?model=gpt-4o", &[]).await;
    assert_eq!(default.request_count(), 2);
    assert_eq!(realtime.request_count(), 1);

    // Without a `*` model, a handshake naming no model (or an unknown one) has nowhere to go.
    let toml = format!(
        "[[upstreams]]\nname = \"realtime\"\nbase_url = \"{}\"\n\n[[models]]\nname = \"gpt-realtime*\"\nupstream = \"realtime\"\n",
        realtime.url()
    );
    let gw = TestGateway::start(&toml).await;
    let (status, body) = refused(&gw, "/v1/realtime", &[]).await;
    assert_eq!(status, 404, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found", "{body}");
    let (status, body) = refused(&gw, "/v1/realtime?model=llama", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("llama"), "{body}");
    assert_eq!(realtime.request_count(), 1);
}

/// A Responses socket the gateway would have to translate, or could not route by its model,
/// is a `426` (the client sends the request over HTTP instead); what it can route goes
/// through as before, and `/v1/realtime` keeps its 404.
#[tokio::test]
async fn responses_sockets_that_would_need_translation_are_told_to_use_http() {
    let mock = MockUpstream::start().await.unwrap();
    let url = mock.url();
    let with_star = format!(
        r#"[[upstreams]]
name = "openai"
base_url = "{url}"
[[upstreams]]
name = "anthropic"
base_url = "{url}"
api = "anthropic"
[[models]]
name = "claude-*"
upstream = "anthropic"
[[models]]
name = "*"
upstream = "openai"
"#
    );
    let gw = TestGateway::start(&with_star).await;
    let told = |status: u16, body: &str| {
        assert_eq!(status, 426, "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "websocket_unavailable", "{body}");
        assert!(body.contains("POST /v1/responses"), "{body}");
    };
    // A translated model, and no model at all (Codex's socket: the model comes in its first
    // message, which might be a translated one).
    let (status, body) = refused(&gw, "/v1/responses?model=claude-sonnet-4-5", &[]).await;
    told(status, &body);
    assert!(body.contains("anthropic"), "{body}");
    let (status, body) = refused(&gw, "/v1/responses", &[]).await;
    told(status, &body);
    // A model of an upstream of any API: the socket as before.
    let (_ws, resp) = open(&gw, "/v1/responses?model=gpt-5", &[]).await;
    assert_eq!(resp.status(), 101);
    assert_eq!(
        mock.request_count(),
        1,
        "only the routable socket went upstream"
    );

    // No translation anywhere: a model-less socket goes to `*`; with no `*`, a 426 too.
    let plain = format!("[[upstreams]]\nname = \"openai\"\nbase_url = \"{url}\"\n[[models]]\nname = \"*\"\nupstream = \"openai\"\n");
    let gw = TestGateway::start(&plain).await;
    let (_ws, resp) = open(&gw, "/v1/responses", &[]).await;
    assert_eq!(resp.status(), 101);
    let no_star = format!("[[upstreams]]\nname = \"openai\"\nbase_url = \"{url}\"\n[[models]]\nname = \"gpt-*\"\nupstream = \"openai\"\n");
    let gw = TestGateway::start(&no_star).await;
    let (status, body) = refused(&gw, "/v1/responses", &[]).await;
    told(status, &body);
    let (status, _) = refused(&gw, "/v1/realtime", &[]).await;
    assert_eq!(status, 404);

    // An upstream of both OpenAI APIs takes the Responses API as sent: its sockets too.
    let both = format!("[[upstreams]]\nname = \"openai\"\nbase_url = \"{url}\"\napi = \"openai-responses\"\n[[models]]\nname = \"*\"\nupstream = \"openai\"\n");
    let gw = TestGateway::start(&both).await;
    let (_ws, resp) = open(&gw, "/v1/responses", &[]).await;
    assert_eq!(resp.status(), 101);
    let (_ws, resp) = open(&gw, "/v1/responses?model=gpt-5", &[]).await;
    assert_eq!(resp.status(), 101);
}

#[tokio::test]
async fn an_upstream_refusing_the_upgrade_answers_with_its_status() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    mock.push(MockResponse::status(401));
    let (status, _) = refused(&gw, "/v1/realtime?model=gpt-4o", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(mock.request_count(), 1);
    // The next handshake is let through again.
    let (_ws, resp) = open(&gw, "/v1/realtime?model=gpt-4o", &[]).await;
    assert_eq!(resp.status(), 101);
}

/// An upstream with no WebSocket on `/v1/responses` (a local server, Anthropic) answers the
/// handshake 404, 405 or 501: the client is told 426 to use HTTP, which Codex does at once
/// (on a 404 it retries the socket with backoff first). Its other refusals stay its own, and
/// so do `/v1/realtime`'s.
#[tokio::test]
async fn an_upstream_without_responses_sockets_is_a_426() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    for code in [404, 405, 501] {
        mock.push(MockResponse::status(code));
        let (status, body) = refused(&gw, "/v1/responses", &[]).await;
        assert_eq!(status, 426, "upstream {code}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "websocket_unavailable", "{body}");
        assert!(body.contains("POST /v1/responses"), "{body}");
        assert!(body.contains(&code.to_string()), "{body}");
    }
    mock.push(MockResponse::status(401));
    let (status, _) = refused(&gw, "/v1/responses?model=gpt-5", &[]).await;
    assert_eq!(status, 401);
    mock.push(MockResponse::status(404));
    let (status, _) = refused(&gw, "/v1/realtime?model=gpt-4o", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(mock.request_count(), 5);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = TestGateway::start(&mock_config(&format!("http://127.0.0.1:{port}"), "")).await;
    let (status, body) = refused(&gw, "/v1/realtime", &[]).await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test]
async fn plain_requests_on_the_socket_paths_are_not_sockets() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), "")).await;
    // A plain GET is not taken for a handshake: whatever the routes say applies.
    let r = get(&gw.url("/v1/realtime"), &[]).await;
    assert_ne!(r.status, 101);
    assert!(mock.requests().iter().all(|r| !r.is_websocket()));
}
