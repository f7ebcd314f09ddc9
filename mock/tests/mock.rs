//! The mock over real sockets, with a plain hyper client (and raw TCP where the wire matters).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use portcullis_mock::{MockResponse, MockUpstream};

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send_with<C>(
    client: &Client<C, Full<Bytes>>,
    method: Method,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        req = req.header("content-type", "application/json");
        Bytes::from(body.to_string())
    };
    client.request(req.body(Full::new(body)).unwrap()).await
}

async fn post(mock: &MockUpstream, path: &str, body: Value) -> Response<Incoming> {
    send_with(
        &client(),
        Method::POST,
        &format!("{}{path}", mock.url()),
        &body,
        &[],
    )
    .await
    .expect("request failed")
}

async fn text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn json_of(resp: Response<Incoming>) -> Value {
    serde_json::from_str(&text(resp).await).unwrap()
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// The `data:` payloads of an SSE text, in order.
fn data_lines(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn default_chat_completion_echoes_model_and_counts_tokens() {
    let mock = MockUpstream::start().await.unwrap();
    let body = chat_body(false);
    let sent_len = body.to_string().len() as u64;
    let resp = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json_of(resp).await;
    assert_eq!(v["id"], "chatcmpl-mock-1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["usage"]["prompt_tokens"], sent_len / 4);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], sent_len / 4 + 3);

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(mock.request_count(), 1);
    assert_eq!(recorded[0].method, Method::POST);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].header("content-type"), Some("application/json"));
    assert_eq!(recorded[0].json().unwrap()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn chat_stream_arrives_as_separate_paced_events() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_chunk_delay(Duration::from_millis(30));
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&mock, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");

    let start = Instant::now();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push((start.elapsed(), data));
        }
    }
    // role, 3 words, finish, usage, [DONE]: each its own frame, 30ms apart.
    assert_eq!(frames.len(), 7, "{frames:?}");
    let first_at = frames[0].0;
    let last_at = frames[frames.len() - 1].0;
    assert!(
        last_at - first_at >= Duration::from_millis(150),
        "first at {first_at:?}, last at {last_at:?}"
    );

    let all: String = frames
        .iter()
        .map(|(_, b)| std::str::from_utf8(b).unwrap())
        .collect();
    assert!(all.ends_with("data: [DONE]\n\n"));
    let chunks: Vec<Value> = data_lines(&all)
        .into_iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from mock");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[5];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(
        mock.streams_cancelled(),
        0,
        "a stream read to its end is not cancelled"
    );
}

#[tokio::test]
async fn a_stream_dropped_by_the_client_is_counted_as_cancelled() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_chunk_delay(Duration::from_millis(20));
    let resp = post(&mock, "/v1/chat/completions", chat_body(true)).await;
    let mut body = resp.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(2);
    while mock.streams_cancelled() == 0 {
        assert!(Instant::now() < deadline, "the mock never noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.streams_cancelled(), 1);
}

#[tokio::test]
async fn anthropic_message_and_stream_on_a_prefixed_path() {
    let mock = MockUpstream::start().await.unwrap();
    let req = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "hi"}]});
    let v = json_of(post(&mock, "/v1/messages", req.clone()).await).await;
    assert_eq!(v["id"], "msg_mock_1");
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-3-5-haiku-latest");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from mock"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 3);

    let mut streaming = req;
    streaming["stream"] = json!(true);
    let resp = post(
        &mock,
        "/v3/https://api.anthropic.com/v1/messages",
        streaming,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let sse = text(resp).await;
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = data_lines(&sse)
        .into_iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        data[0]["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(data[6]["usage"]["output_tokens"], 3);
    assert_eq!(
        mock.requests()[1].path,
        "/v3/https://api.anthropic.com/v1/messages"
    );
}

#[tokio::test]
async fn other_openai_routes_and_unknown_paths() {
    let mock = MockUpstream::start().await.unwrap();
    let v = json_of(
        post(
            &mock,
            "/v1/embeddings",
            json!({"model": "e", "input": ["a", "b", "c"]}),
        )
        .await,
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

    let v = json_of(
        post(
            &mock,
            "/v1/completions",
            json!({"model": "i", "prompt": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from mock");

    let resp = send_with(
        &client(),
        Method::GET,
        &format!("{}/v1/models", mock.url()),
        &Value::Null,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(json_of(resp).await["object"], "list");

    let resp = post(&mock, "/v1/nope", json!({})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(json_of(resp).await["error"]["message"].is_string());
}

#[tokio::test]
async fn queued_responses_are_served_in_order_then_the_default() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::status(429).retry_after("2"));
    mock.push_n(2, MockResponse::status(500));
    mock.push(MockResponse::json(201, json!({"custom": true})).header("x-extra", "1"));

    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(
        json_of(resp).await,
        json!({"error": {"message": "mock error", "type": "server_error", "code": null}})
    );
    for _ in 0..2 {
        let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
        assert_eq!(resp.status(), 500);
    }
    let resp = post(&mock, "/v1/messages", json!({"model": "claude"})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-extra"], "1");
    assert_eq!(json_of(resp).await, json!({"custom": true}));
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.request_count(), 5);
}

#[tokio::test]
async fn set_default_replaces_builtin_until_unset() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(Some(
        MockResponse::status(503)
            .set_cookie("a=1")
            .set_cookie("b=2"),
    ));
    for _ in 0..2 {
        let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
        assert_eq!(resp.status(), 503);
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
    mock.push(MockResponse::ok().content("queued wins"));
    let v = json_of(post(&mock, "/v1/chat/completions", chat_body(false)).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "queued wins");
    mock.set_default(None);
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn reset_closes_the_connection_with_rst() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::ok().reset());
    let mut tcp = TcpStream::connect(mock.addr()).await.unwrap();
    let body = chat_body(false).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let err = tcp
        .read_to_end(&mut buf)
        .await
        .expect_err("expected a reset, got a clean close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(
        buf.is_empty(),
        "got bytes: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // The hyper client sees an error too, and the next request is fine.
    mock.push(MockResponse::ok().reset());
    let c = client();
    let url = format!("{}/v1/chat/completions", mock.url());
    assert!(send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .is_err());
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn abort_after_cuts_a_stream_midway() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::ok().abort_after(2));
    let resp = post(&mock, "/v1/chat/completions", chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended cleanly after {got} frames"),
        }
    };
    assert_eq!(got, 2, "{err}");

    // A plain body: the headers arrive, then the connection drops.
    mock.push(MockResponse::json(200, json!({"x": 1})).abort_after(0));
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn delay_and_hang() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::ok().delay(Duration::from_millis(100)));
    let start = Instant::now();
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(100));

    mock.push(MockResponse::ok().hang());
    let pending = tokio::time::timeout(
        Duration::from_millis(200),
        post(&mock, "/v1/chat/completions", chat_body(false)),
    )
    .await;
    assert!(pending.is_err(), "a hanging request was answered");
    // The hanging request was still recorded.
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn cloudflare_cookie_mode_challenges_until_the_cookie_is_sent() {
    let mock = MockUpstream::start().await.unwrap();
    mock.require_cookie("cf_clearance", "abc123");
    mock.push(MockResponse::status(418));
    let c = client();
    let url = format!("{}/v1/chat/completions", mock.url());

    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.headers().contains_key("cf-ray"));
    assert_eq!(
        resp.headers()["set-cookie"],
        "cf_clearance=abc123; Path=/; HttpOnly"
    );
    let page = text(resp).await;
    assert!(page.contains("error code: 1200"), "{page}");
    assert!(page.contains("Error 1200"));

    let wrong = [("cookie", "cf_clearance=nope")];
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &wrong)
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);

    // With the cookie: the queue (untouched by the challenges), then the default.
    let right = [("cookie", "other=1; cf_clearance=abc123")];
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &right)
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &right)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    mock.clear();
    assert_eq!(mock.request_count(), 0);
    assert!(mock.requests().is_empty());
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "clear ends cookie mode");
}

#[tokio::test]
async fn cloudflare_page_builder() {
    let mock = MockUpstream::start().await.unwrap();
    mock.push(MockResponse::cloudflare(403, 1020));
    mock.push(MockResponse::html(502, "<html>bad gateway</html>"));
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["server"], "cloudflare");
    let ray = resp.headers()["cf-ray"].to_str().unwrap().to_owned();
    let page = text(resp).await;
    assert!(page.contains("Error 1020") && page.contains(&ray));
    let resp = post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(text(resp).await, "<html>bad gateway</html>");
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_recording(false);
    post(&mock, "/v1/chat/completions", chat_body(false)).await;
    assert_eq!(mock.request_count(), 1);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn tls_serves_h2_and_http1_to_a_client_trusting_the_cert() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = key.cert.pem();
    let mock = MockUpstream::start_tls(&cert_pem, &key.signing_key.serialize_pem())
        .await
        .unwrap();
    assert!(mock.url().starts_with("https://localhost:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls_config = tls.clone();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!("{}/v1/chat/completions", mock.url());
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2, "ALPN should pick h2");
    assert_eq!(json_of(resp).await["model"], "gpt-4o-mini");

    let http1 = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_only()
        .enable_http1()
        .build();
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(http1);
    let resp = send_with(&c, Method::POST, &url, &chat_body(false), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);

    let bad = MockUpstream::start_tls("not a pem", "nor this").await;
    assert_eq!(bad.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

// === tool calls ===

async fn post_with(
    mock: &MockUpstream,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    send_with(
        &client(),
        Method::POST,
        &format!("{}{path}", mock.url()),
        &body,
        headers,
    )
    .await
    .expect("request failed")
}

/// The calls of a streamed answer in any of the three shapes, put back together from the
/// deltas: `(name, arguments)` in order.
fn streamed_calls(path: &str, sse: &str) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for d in data_lines(sse) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        match path {
            "/v1/chat/completions" => {
                for tc in v["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = tc["index"].as_u64().unwrap() as usize;
                    if let Some(name) = tc["function"]["name"].as_str() {
                        assert_eq!(i, calls.len(), "calls open in order");
                        calls.push((name.to_owned(), String::new()));
                    }
                    calls[i].1 += tc["function"]["arguments"].as_str().unwrap();
                }
            }
            "/v1/messages" => match v["type"].as_str().unwrap() {
                "content_block_start" => {
                    assert_eq!(v["content_block"]["type"], "tool_use");
                    let name = v["content_block"]["name"].as_str().unwrap();
                    calls.push((name.to_owned(), String::new()));
                }
                "content_block_delta" => {
                    let i = v["index"].as_u64().unwrap() as usize;
                    assert_eq!(v["delta"]["type"], "input_json_delta");
                    calls[i].1 += v["delta"]["partial_json"].as_str().unwrap();
                }
                _ => {}
            },
            _ => match v["type"].as_str().unwrap() {
                "response.output_item.added" => {
                    assert_eq!(v["item"]["arguments"], "");
                    let name = v["item"]["name"].as_str().unwrap();
                    calls.push((name.to_owned(), String::new()));
                }
                "response.function_call_arguments.delta" => {
                    let i = v["output_index"].as_u64().unwrap() as usize;
                    calls[i].1 += v["delta"].as_str().unwrap();
                }
                "response.output_item.done" => {
                    let i = v["output_index"].as_u64().unwrap() as usize;
                    assert_eq!(v["item"]["arguments"].as_str().unwrap(), calls[i].1);
                    assert_eq!(v["item"]["status"], "completed");
                }
                _ => {}
            },
        }
    }
    calls
}

fn api_body(path: &str, stream: bool) -> Value {
    let mut b = json!({"model": "m", "stream": stream});
    if path == "/v1/responses" {
        b["input"] = json!("read it");
    } else {
        b["max_tokens"] = json!(64);
        b["messages"] = json!([{"role": "user", "content": "read it"}]);
    }
    b
}

#[tokio::test]
async fn tool_calls_in_each_api_shape_plain_and_streamed() {
    let mock = MockUpstream::start().await.unwrap();
    let read = json!({"path": "src/main.rs", "lines": [1, 40]});
    let ls = json!({"dir": "."});
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        // Scripted by the test: two parallel calls.
        mock.push(
            MockResponse::ok()
                .tool_call("read_file", read.clone())
                .tool_call("ls", ls.clone()),
        );
        let v = json_of(post(&mock, path, api_body(path, false)).await).await;
        let (calls, stop): (Vec<(Value, Value)>, Value) = match path {
            "/v1/chat/completions" => {
                let m = &v["choices"][0]["message"];
                assert_eq!(m["content"], Value::Null);
                let calls = m["tool_calls"].as_array().unwrap();
                assert!(calls.iter().all(|c| c["type"] == "function"
                    && c["id"].as_str().unwrap().starts_with("call_mock_")));
                (
                    calls
                        .iter()
                        .map(|c| {
                            let args = c["function"]["arguments"].as_str().unwrap();
                            (
                                c["function"]["name"].clone(),
                                serde_json::from_str(args).unwrap(),
                            )
                        })
                        .collect(),
                    v["choices"][0]["finish_reason"].clone(),
                )
            }
            "/v1/messages" => (
                v["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        assert_eq!(b["type"], "tool_use");
                        (b["name"].clone(), b["input"].clone())
                    })
                    .collect(),
                v["stop_reason"].clone(),
            ),
            _ => (
                v["output"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| {
                        assert_eq!(o["type"], "function_call");
                        let args = o["arguments"].as_str().unwrap();
                        (o["name"].clone(), serde_json::from_str(args).unwrap())
                    })
                    .collect(),
                v["status"].clone(),
            ),
        };
        assert_eq!(
            calls,
            [
                (json!("read_file"), read.clone()),
                (json!("ls"), ls.clone())
            ],
            "{path}: {v}"
        );
        let want_stop = match path {
            "/v1/chat/completions" => "tool_calls",
            "/v1/messages" => "tool_use",
            _ => "completed",
        };
        assert_eq!(stop, want_stop, "{path}");

        // Scripted by the request: the header, streamed.
        let resp = post_with(
            &mock,
            path,
            api_body(path, true),
            &[(
                "x-mock-tool-call",
                r#"read_file {"path": "src/main.rs", "lines": [1, 40]}"#,
            )],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let sse = text(resp).await;
        let calls = streamed_calls(path, &sse);
        assert_eq!(calls.len(), 1, "{path}: {sse}");
        assert_eq!(calls[0].0, "read_file");
        assert_eq!(serde_json::from_str::<Value>(&calls[0].1).unwrap(), read);
        // The arguments really come in several deltas.
        let deltas = sse.matches("arguments\":\"").count()
            + sse.matches("partial_json").count()
            + sse.matches("function_call_arguments.delta").count();
        assert!(deltas >= 4, "{path}: {sse}");
    }
}

/// A request answering a call (its last turn a tool's result) gets text even with the
/// header: an agent that sends the header on every request stops after one call.
#[tokio::test]
async fn the_tool_call_header_is_not_obeyed_by_a_request_answering_a_call() {
    let mock = MockUpstream::start().await.unwrap();
    let call = [("x-mock-tool-call", r#"read_file {"path": "a"}"#)];
    let results = [
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [
                {"role": "user", "content": "read a"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                  "function": {"name": "read_file", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "text of a"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "m", "max_tokens": 64, "messages": [
                {"role": "user", "content": "read a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "text of a"}]}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "m", "input": [
                {"role": "user", "content": "read a"},
                {"type": "function_call", "call_id": "c1", "name": "read_file", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "text of a"}]}),
        ),
    ];
    for (path, body) in results {
        let v = json_of(post_with(&mock, path, body, &call).await).await;
        let text = v.to_string();
        assert!(!text.contains("read_file"), "{path}: {v}");
        assert!(text.contains("Hello from mock"), "{path}: {v}");
        // The user's turn last: the call.
        let v = json_of(post_with(&mock, path, api_body(path, false), &call).await).await;
        assert!(v.to_string().contains("read_file"), "{path}: {v}");
    }
}

#[tokio::test]
async fn a_bad_tool_call_header_is_a_400_that_says_why() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = post_with(
        &mock,
        "/v1/chat/completions",
        chat_body(false),
        &[("x-mock-tool-call", "read_file [1, 2]")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_of(resp).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{v}"
    );
    // Without arguments the call has `{}`; other routes ignore the header.
    let v = json_of(
        post_with(
            &mock,
            "/v1/chat/completions",
            chat_body(false),
            &[("x-mock-tool-call", "ls")],
        )
        .await,
    )
    .await;
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    let v = json_of(
        post_with(
            &mock,
            "/v1/embeddings",
            json!({"model": "e", "input": "x"}),
            &[("x-mock-tool-call", "ls")],
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "list");
}
