//! The routes later gateway tests lean on: the Responses API (plain, streamed, and its
//! `{id}` routes), Anthropic `count_tokens`, the streaming upload sink and the WebSocket echo.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_mock::{MockResponse, MockUpstream, UPLOAD_RECORD_PREFIX};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn call(
    mock: &MockUpstream,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", mock.url()));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn json_call(mock: &MockUpstream, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, text) = call(mock, method, path, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn responses_body(stream: bool) -> Value {
    json!({"model": "gpt-4.1-mini", "input": "Say hello", "instructions": "Be brief", "stream": stream})
}

// === Responses API ===

#[tokio::test]
async fn responses_plain_is_a_completed_response_with_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let body = responses_body(false);
    let input = (body.to_string().len() / 4) as u64;
    let v = json_call(&mock, Method::POST, "/v1/responses", Some(body)).await;
    assert_eq!(v["id"], "resp_mock_1");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4.1-mini");
    assert_eq!(v["instructions"], "Be brief");
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], "Hello from mock");
    assert_eq!(item["content"][0]["annotations"], json!([]));
    assert_eq!(
        v["usage"],
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + 3,
        })
    );
}

#[tokio::test]
async fn responses_stream_is_the_real_event_sequence() {
    let mock = MockUpstream::start().await.unwrap();
    let (status, sse) = call(
        &mock,
        Method::POST,
        "/v1/responses",
        Some(responses_body(true)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Each event is `event: TYPE` then `data: {..., "type": TYPE, "sequence_number": n}`.
    let mut events = Vec::new();
    for block in sse.split("\n\n").filter(|b| !b.is_empty()) {
        let mut lines = block.lines();
        let kind = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], kind, "{block}");
        events.push(data);
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (n, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], n, "{e}");
    }
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["output"], json!([]));
    assert_eq!(events[2]["item"]["status"], "in_progress");
    let item_id = events[2]["item"]["id"].as_str().unwrap();
    let text: String = events[4..7]
        .iter()
        .inspect(|e| assert_eq!(e["item_id"], item_id))
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from mock");
    assert_eq!(events[7]["text"], "Hello from mock");
    assert_eq!(events[8]["part"]["text"], "Hello from mock");
    assert_eq!(events[9]["item"]["status"], "completed");
    let done = &events[10]["response"];
    assert_eq!(done["id"], "resp_mock_1");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello from mock");
    assert_eq!(done["usage"]["output_tokens"], 3);
    assert_eq!(
        done["usage"]["total_tokens"],
        done["usage"]["input_tokens"].as_u64().unwrap() + 3
    );
}

#[tokio::test]
async fn response_id_routes() {
    let mock = MockUpstream::start().await.unwrap();
    let v = json_call(&mock, Method::GET, "/v1/responses/resp_abc", None).await;
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("resp_abc"), Some("response"))
    );
    assert_eq!(v["status"], "completed");

    let v = json_call(&mock, Method::DELETE, "/v1/responses/resp_abc", None).await;
    assert_eq!(
        v,
        json!({"id": "resp_abc", "object": "response.deleted", "deleted": true})
    );

    let v = json_call(
        &mock,
        Method::GET,
        "/v1/responses/resp_abc/input_items?limit=5",
        None,
    )
    .await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["type"], "message");
    assert_eq!(v["data"][0]["role"], "user");
    assert_eq!(v["first_id"], v["data"][0]["id"]);
    assert_eq!(v["has_more"], false);

    let v = json_call(&mock, Method::POST, "/v1/responses/resp_abc/cancel", None).await;
    assert_eq!(
        (v["id"].as_str(), v["status"].as_str()),
        (Some("resp_abc"), Some("cancelled"))
    );

    let v = json_call(
        &mock,
        Method::POST,
        "/v1/responses/input_tokens",
        Some(json!({"model": "m", "input": "x"})),
    )
    .await;
    assert_eq!(v["object"], "response.input_tokens");
    assert!(v["input_tokens"].as_u64().unwrap() >= 1);

    let (status, _) = call(&mock, Method::PUT, "/v1/responses/resp_abc", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        mock.requests()[2].path,
        "/v1/responses/resp_abc/input_items?limit=5"
    );
}

#[tokio::test]
async fn count_tokens_uses_the_messages_rule() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "claude-sonnet-4-5",
                      "messages": [{"role": "user", "content": "hello there"}]});
    let counted = json_call(
        &mock,
        Method::POST,
        "/v1/messages/count_tokens",
        Some(body.clone()),
    )
    .await;
    let message = json_call(&mock, Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(
        counted,
        json!({"input_tokens": message["usage"]["input_tokens"]})
    );
    let (status, text) = call(&mock, Method::POST, "/v1/messages/count_tokens", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("\"type\":\"error\""),
        "Anthropic error shape: {text}"
    );
    // What only generation takes is refused there, as Anthropic refuses it.
    let generation = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hello there"}]});
    let (status, text) = call(
        &mock,
        Method::POST,
        "/v1/messages/count_tokens",
        Some(generation),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("max_tokens: Extra inputs are not permitted"),
        "{text}"
    );
}

// === Upload sink ===

#[tokio::test]
async fn uploads_are_counted_frame_by_frame_and_recorded_as_a_prefix() {
    let mock = MockUpstream::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    // 16 MiB in 1 MiB frames, sent chunked (no content-length): the sink must not need it.
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let frames = futures_util::stream::iter(
        (0..16).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let ct = "multipart/form-data; boundary=----mock";
    let req = Request::post(format!("{}/v1/files", mock.url()))
        .header("content-type", ct)
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["object"], "file");
    assert_eq!(v["bytes"], 16 << 20);
    assert_eq!(v["content_type"], ct);
    assert_eq!(v["id"], "file-mock-1");

    let rec = mock.last_request().unwrap();
    assert_eq!(rec.body_len, 16 << 20);
    assert_eq!(rec.body.len(), UPLOAD_RECORD_PREFIX);

    // Audio answers with text as well; an unknown path with a binary body goes to the sink too.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for (path, ct, object) in [
        (
            "/v1/audio/transcriptions",
            "multipart/form-data; boundary=b",
            "audio.transcription",
        ),
        (
            "/v1/uploads/upload_1/parts",
            "multipart/form-data; boundary=b",
            "upload.part",
        ),
        ("/v1/images/edits", "application/octet-stream", "upload"),
    ] {
        let req = Request::post(format!("{}{path}", mock.url()))
            .header("content-type", ct)
            .body(Full::new(Bytes::from_static(b"12345")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let v: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            (v["object"].as_str(), v["bytes"].as_u64()),
            (Some(object), Some(5)),
            "{path}"
        );
    }
    let rec = mock.last_request().unwrap();
    assert_eq!((rec.body_len, rec.body.as_ref()), (5, &b"12345"[..]));
}

// === WebSocket echo ===

#[tokio::test]
async fn websocket_echo_on_responses_and_realtime_records_the_handshake() {
    let mock = MockUpstream::start().await.unwrap();
    for path in ["/v1/responses", "/v1/realtime?model=gpt-realtime"] {
        let url = format!("{}{path}", mock.url().replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer sk-ws".parse().unwrap());
        req.headers_mut()
            .insert("sec-websocket-protocol", "realtime, other".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime");

        ws.send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(r#"{"type":"response.create"}"#)
        );
        ws.send(Message::binary(vec![0_u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0_u8, 1, 2, 255])
        );

        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap();
        assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");

        let rec = mock.last_request().unwrap();
        assert!(rec.is_websocket());
        assert_eq!(rec.method, Method::GET);
        assert_eq!(rec.path, path);
        assert_eq!(rec.header("authorization"), Some("Bearer sk-ws"));
        assert_eq!(rec.body_len, 0);
    }
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn a_scripted_status_refuses_the_upgrade() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::status(401));
    let url = format!("{}/v1/realtime", mock.url().replace("http://", "ws://"));
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    // The queue is spent: the next handshake gets the echo.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
}

#[tokio::test]
async fn a_plain_get_on_a_socket_route_is_not_an_upgrade() {
    let mock = MockUpstream::start().await.unwrap();
    let (status, _) = call(&mock, Method::GET, "/v1/responses", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(&mock, Method::GET, "/v1/realtime", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
