//! The layer against a mock upstream: request rewriting, plain, streamed and error answers,
//! pass-through and refusals.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use portcullis_translate::{Api, TranslateError, TranslateLayer};
use serde_json::{json, Value};
use tower::{service_fn, BoxError, Layer, ServiceExt};

type Seen = Arc<Mutex<Option<(String, http::HeaderMap, Value)>>>;

/// An upstream answering `status`, `content_type`, `body`, remembering the request.
fn upstream(
    status: u16,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> (
    impl tower::Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + 'static,
    Seen,
) {
    let seen: Seen = Arc::default();
    let body: Bytes = body.into();
    let s = seen.clone();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let s = s.clone();
        let body = body.clone();
        async move {
            let (parts, b) = req.into_parts();
            let b = b.collect().await.unwrap().to_bytes();
            let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
            *s.lock().unwrap() = Some((parts.uri.to_string(), parts.headers, v));
            let mut resp = Response::new(Full::new(body));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            resp.headers_mut()
                .insert("content-type", content_type.parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    });
    (svc, seen)
}

fn post(path: &str, body: Value) -> Request<Full<Bytes>> {
    Request::post(format!("https://up.example{path}"))
        .header("content-type", "application/json")
        .header("content-length", "999")
        .header("authorization", "Bearer sk-ant-api03-key")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn body_json<B: Body>(b: B) -> Value
where
    B::Error: std::fmt::Debug,
{
    serde_json::from_slice(&b.collect().await.unwrap().to_bytes()).unwrap()
}

fn fixture(name: &str) -> Bytes {
    Bytes::from(
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
}

#[tokio::test]
async fn chat_client_to_anthropic_upstream() {
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "max_tokens",
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 7}});
    let (up, seen) = upstream(200, "application/json", answer.to_string());
    let svc = TranslateLayer::new(Api::Anthropic).layer(up);
    let resp = svc
        .oneshot(post(
            "/v1/chat/completions?x=1",
            json!({"model": "claude-sonnet-4-5",
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hello"}],
            "max_tokens": 50, "user": "u"}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-portcullis-translated"],
        "openai-chat->anthropic"
    );
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v = body_json(resp.into_body()).await;
    assert_eq!(len, v.to_string().len());
    assert_eq!(v["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 7);

    let (uri, headers, body) = seen.lock().unwrap().take().unwrap();
    assert_eq!(uri, "https://up.example/v1/messages");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["x-api-key"], "sk-ant-api03-key");
    assert_eq!(
        headers["content-length"],
        body.to_string().len().to_string()
    );
    assert_eq!(
        body,
        json!({"model": "claude-sonnet-4-5", "system": "S", "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 50, "metadata": {"user_id": "u"}})
    );
}

#[tokio::test]
async fn anthropic_client_to_openai_upstream_streamed() {
    let (up, seen) = upstream(200, "text/event-stream", fixture("openai_tool_calls.sse"));
    let svc = TranslateLayer::new(Api::OpenAi).layer(up);
    let mut req = post(
        "/v1/messages",
        json!({"model": "qwen3", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "weather?"}]}),
    );
    req.headers_mut().remove("authorization");
    req.headers_mut()
        .insert("x-api-key", "local-key".parse().unwrap());
    req.headers_mut()
        .insert("anthropic-version", "2023-06-01".parse().unwrap());
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains(r#""partial_json":"{\"lo""#));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    let (uri, headers, body) = seen.lock().unwrap().take().unwrap();
    assert_eq!(uri, "https://up.example/v1/chat/completions");
    assert_eq!(headers["authorization"], "Bearer local-key");
    assert!(!headers.contains_key("anthropic-version"));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn responses_client_to_anthropic_upstream_streamed() {
    let (up, seen) = upstream(
        200,
        "text/event-stream; charset=utf-8",
        fixture("anthropic_thinking_tool_use.sse"),
    );
    let svc = TranslateLayer::new(Api::Anthropic).layer(up);
    let resp = svc
        .oneshot(post(
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "input": "weather in SF?",
            "stream": true, "reasoning": {"effort": "low"}, "store": false}),
        ))
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.starts_with("event: response.created\n"));
    assert!(text.contains("event: response.completed\n"));
    let (_, _, body) = seen.lock().unwrap().take().unwrap();
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn upstream_errors_take_the_clients_shape() {
    let (up, _) = upstream(
        529,
        "application/json",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string(),
    );
    let resp = TranslateLayer::new(Api::Anthropic)
        .layer(up)
        .oneshot(post(
            "/v1/chat/completions",
            json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v = body_json(resp.into_body()).await;
    assert_eq!(
        v,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
    );

    let (up, _) = upstream(429, "application/json",
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}).to_string());
    let resp = TranslateLayer::new(Api::OpenAi)
        .layer(up)
        .oneshot(post(
            "/v1/messages",
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v = body_json(resp.into_body()).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "billing_error");

    let (up, _) = upstream(
        402,
        "application/json",
        json!({"type": "error", "error": {"type": "billing_error", "message": "low balance"}})
            .to_string(),
    );
    let resp = TranslateLayer::new(Api::Anthropic)
        .layer(up)
        .oneshot(post("/v1/responses", json!({"model": "c", "input": "x"})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-should-retry"], "false");
}

#[tokio::test]
async fn any_and_same_shape_pass_through_untouched() {
    for (api, path) in [
        (Api::Any, "/v1/chat/completions"),
        (Api::Anthropic, "/v1/messages"),
        (Api::OpenAi, "/v1/chat/completions"),
        (Api::OpenAi, "/v1/embeddings"),
    ] {
        let (up, seen) = upstream(200, "application/json", "{\"raw\":true}");
        let body = json!({"model": "m", "messages": [], "n": 5});
        let resp = TranslateLayer::new(api)
            .layer(up)
            .oneshot(post(path, body.clone()))
            .await
            .unwrap();
        assert!(!resp.headers().contains_key("x-portcullis-translated"));
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "{\"raw\":true}"
        );
        let (uri, headers, got) = seen.lock().unwrap().take().unwrap();
        assert_eq!(uri, format!("https://up.example{path}"));
        assert_eq!(got, body);
        assert_eq!(headers["content-length"], "999", "headers untouched");
    }
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let svc = TranslateLayer::new(Api::Anthropic).layer(mock);
    handle.allow(10);
    let err = svc
        .clone()
        .oneshot(post("/v1/embeddings", json!({"model": "m", "input": "x"})))
        .await
        .unwrap_err();
    let e = portcullis_core::error::find_in_chain::<TranslateError>(&*err).unwrap();
    assert!(matches!(e, TranslateError::UnsupportedPath { .. }), "{e}");
    assert_eq!(e.status(), 404);

    let err = svc
        .clone()
        .oneshot(post(
            "/v1/chat/completions",
            json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "x"}]}),
        ))
        .await
        .unwrap_err();
    let e = portcullis_core::error::find_in_chain::<TranslateError>(&*err).unwrap();
    assert_eq!(e.to_string(), "n cannot be translated to the anthropic messages API: Anthropic gives one choice per request");
    assert_eq!((e.status().as_u16(), e.code()), (400, "invalid_request"));

    // A body of more values than a tree is built of (unknown fields are read as `Value`s):
    // refused before it is read, naming the bound; one value fewer is translated.
    let max = portcullis_core::json_skim::MAX_VALUES;
    let many = |n: usize| {
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "metadata": {"ids": vec![0; n - 7]}})
    };
    // (Bounded: a request that got through would wait for the mock forever.)
    let call = svc
        .clone()
        .oneshot(post("/v1/chat/completions", many(max + 1)));
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("refused, not sent")
        .unwrap_err();
    let e = portcullis_core::error::find_in_chain::<TranslateError>(&*err).unwrap();
    assert!(
        e.to_string().contains("more than 262144 JSON values"),
        "{e}"
    );
    assert_eq!(e.status().as_u16(), 400);
    let (bytes, _) = portcullis_translate::translate_request(
        portcullis_translate::Format::ChatCompletions,
        portcullis_translate::Format::Messages,
        many(max).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["model"],
        "m"
    );

    let err = svc
        .oneshot(post("/v1/chat/completions", json!({"model": 5})))
        .await
        .unwrap_err();
    assert!(matches!(
        portcullis_core::error::find_in_chain::<TranslateError>(&*err),
        Some(TranslateError::InvalidRequest { .. })
    ));
    // Wrapped for the edge, which renders it without knowing this crate.
    let r = portcullis_core::error::find_in_chain::<portcullis_core::error::Refused>(&*err)
        .unwrap()
        .refusal();
    assert_eq!(r.code(), "invalid_request");
    assert!(handle.poll_request().now_or_never_is_none());
}

trait NowOrNever {
    fn now_or_never_is_none(self) -> bool;
}

impl<T> NowOrNever for Poll<Option<T>> {
    fn now_or_never_is_none(self) -> bool {
        !matches!(self, Poll::Ready(Some(_)))
    }
}

#[tokio::test]
async fn poll_ready_and_request_through_tower_test_mock() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut svc = TranslateLayer::new(Api::OpenAi).layer(mock);
    handle.allow(0);
    assert!(
        tokio_test_poll_ready(&mut svc).is_pending(),
        "readiness comes from the upstream"
    );
    handle.allow(1);
    let fut = tokio::spawn(svc.oneshot(post(
        "/v1/messages",
        json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}),
    )));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/v1/chat/completions");
    let mut resp = Response::new(Full::new(Bytes::from(
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
    )));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    send.send_response(resp);
    let resp = fut.await.unwrap().unwrap();
    let v = body_json(resp.into_body()).await;
    assert_eq!(v["content"][0]["text"], "yo");
    assert_eq!(v["usage"]["input_tokens"], 2);
}

fn tokio_test_poll_ready<S: tower::Service<Request<Full<Bytes>>>>(
    svc: &mut S,
) -> Poll<Result<(), S::Error>> {
    let waker = futures_noop_waker();
    let mut cx = Context::from_waker(&waker);
    svc.poll_ready(&mut cx)
}

fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

/// A body that yields some bytes, then fails.
struct Failing(Vec<Bytes>);

impl Body for Failing {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(match self.0.pop() {
            Some(b) => Ok(Frame::data(b)),
            None => Err("connection reset by peer".into()),
        }))
    }
}

#[tokio::test]
async fn a_failing_upstream_body_ends_with_the_clients_error_event() {
    let up = service_fn(|_req: Request<Full<Bytes>>| async {
        let mut resp = Response::new(Failing(vec![Bytes::from_static(
            b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        )]));
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        Ok::<_, Infallible>(resp)
    });
    let resp = TranslateLayer::new(Api::OpenAi)
        .layer(up)
        .oneshot(post(
            "/v1/messages",
            json!({"model": "m", "max_tokens": 5, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains(r#""text":"Hel""#));
    assert!(text.ends_with("\n\n"));
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: {"), "{last}");
    assert!(last.contains("connection reset by peer"));
}

/// Responses answers get fresh ids even when the upstream repeats its own (Ollama draws from a
/// thousand), and are kept, plain or streamed, so a later `item_reference` or
/// `previous_response_id` finds the answer it means.
#[tokio::test]
async fn responses_answers_are_kept_under_fresh_ids() {
    let store = portcullis_translate::ResponseStore::default();
    let chat = |text: &str| {
        json!({"id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "llama",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        .to_string()
    };
    let ask = |input: Value| post("/v1/responses", json!({"model": "llama", "input": input}));
    let layer = TranslateLayer::new(Api::OpenAi).with_store(store.clone());

    let (up, _) = upstream(200, "application/json", chat("first"));
    let first = body_json(
        layer
            .layer(up)
            .oneshot(ask(json!("hi")))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    // Streamed, the same upstream id.
    let (up, _) = upstream(200, "text/event-stream", fixture("openai_text.sse"));
    let req = post(
        "/v1/responses",
        json!({"model": "llama", "input": "hi", "stream": true}),
    );
    let streamed = layer.layer(up).oneshot(req).await.unwrap();
    let text = String::from_utf8(
        streamed
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let completed: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|v| v["type"] == "response.completed")
        .expect("completed")["response"]
        .clone();
    let (up, _) = upstream(200, "application/json", chat("second"));
    let second = body_json(
        layer
            .layer(up)
            .oneshot(ask(json!("hi")))
            .await
            .unwrap()
            .into_body(),
    )
    .await;
    let ids = [&first["id"], &completed["id"], &second["id"]];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert!(first["id"].as_str().unwrap().starts_with("resp_"));

    // The first answer by reference, the streamed one by previous_response_id.
    let first_msg = first["output"][0]["id"].clone();
    let (up, seen) = upstream(200, "application/json", chat("third"));
    let resp = layer
        .layer(up)
        .oneshot(ask(json!([{"type": "item_reference", "id": first_msg},
                             {"role": "user", "content": "more"}])))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, _, sent) = seen.lock().unwrap().take().unwrap();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "assistant", "content": "first"})
    );
    let (up, seen) = upstream(200, "application/json", chat("fourth"));
    let req = post(
        "/v1/responses",
        json!({"model": "llama", "input": "more", "previous_response_id": completed["id"]}),
    );
    assert_eq!(layer.layer(up).oneshot(req).await.unwrap().status(), 200);
    let (_, _, sent) = seen.lock().unwrap().take().unwrap();
    let streamed_text = completed["output"][0]["content"][0]["text"].clone();
    assert_eq!(sent["messages"][1]["content"], streamed_text, "{sent}");
    assert_eq!(sent["messages"][2]["content"], "more");

    // Read back, listed, deleted: by its caller only.
    let get = |path: String, method: http::Method, key: &str| {
        Request::builder()
            .method(method)
            .uri(format!("https://up.example{path}"))
            .header("authorization", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mine = "Bearer sk-ant-api03-key";
    let id = second["id"].as_str().unwrap().to_owned();
    let (up, seen) = upstream(200, "application/json", chat("unused"));
    let svc = layer.layer(up);
    let r = svc
        .clone()
        .oneshot(get(format!("/v1/responses/{id}"), http::Method::GET, mine))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r.into_body()).await, second);
    let r = svc
        .clone()
        .oneshot(get(
            format!("/v1/responses/{id}/input_items"),
            http::Method::GET,
            mine,
        ))
        .await
        .unwrap();
    let list = body_json(r.into_body()).await;
    assert_eq!(list["object"], "list");
    // An id made for the item the client sent without one, from the response's id.
    let base = id.strip_prefix("resp_").unwrap();
    assert_eq!(
        list["data"],
        json!([{"type": "message", "role": "user", "id": format!("msg_{base}_in0"),
                "content": [{"type": "input_text", "text": "hi"}]}])
    );
    let r = svc
        .clone()
        .oneshot(get(
            format!("/v1/responses/{id}"),
            http::Method::GET,
            "Bearer sk-other",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(body_json(r.into_body()).await["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&id));
    let r = svc
        .clone()
        .oneshot(get(
            format!("/v1/responses/{id}"),
            http::Method::DELETE,
            mine,
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r.into_body()).await["deleted"], true);
    let r = svc
        .clone()
        .oneshot(get(format!("/v1/responses/{id}"), http::Method::GET, mine))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "deleted");
    assert!(seen.lock().unwrap().is_none(), "none of it went upstream");

    // Another caller's key: the same reference is unknown.
    let (up, _) = upstream(200, "application/json", chat("x"));
    let mut req = ask(json!([{"type": "item_reference", "id": first_msg}]));
    req.headers_mut()
        .insert("authorization", "Bearer sk-other".parse().unwrap());
    let e = layer.layer(up).oneshot(req).await.unwrap_err();
    assert!(e.to_string().contains("no stored item"), "{e}");
}
