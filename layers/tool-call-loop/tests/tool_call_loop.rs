//! The tool-call-loop layer against scripted upstreams, in each API shape and mode.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use portcullis_core::error::find_in_chain;
use portcullis_tool_call_loop::{
    Config, Mode, ToolCallLoop, ToolCallLoopBody, ToolCallLoopLayer, X_PORTCULLIS_TOOL_CALL_LOOP,
};
use tower::{service_fn, util::BoxCloneService, Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy)]
enum Shape {
    Chat,
    Responses,
    Messages,
}

impl Shape {
    const ALL: [Shape; 3] = [Shape::Chat, Shape::Responses, Shape::Messages];

    fn path(self) -> &'static str {
        match self {
            Shape::Chat => "/v1/chat/completions",
            Shape::Responses => "/v1/responses",
            Shape::Messages => "/v1/messages",
        }
    }

    /// A whole answer calling `read_file` with `args` (a JSON object text).
    fn json(self, args: &str) -> String {
        let input: serde_json::Value = serde_json::from_str(args).unwrap();
        match self {
            Shape::Chat => serde_json::json!({"choices":[{"index":0,"message":{"role":"assistant","content":null,
                "tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":args}}]},
                "finish_reason":"tool_calls"}]}),
            Shape::Responses => serde_json::json!({"id":"resp_1","output":[{"type":"function_call","id":"fc_1",
                "call_id":"call_1","name":"read_file","arguments":args}]}),
            Shape::Messages => serde_json::json!({"id":"msg_1","content":[{"type":"text","text":"Reading."},
                {"type":"tool_use","id":"toolu_1","name":"read_file","input":input}],"stop_reason":"tool_use"}),
        }
        .to_string()
    }

    /// The same answer as a stream, the arguments cut into two deltas.
    fn stream(self, args: &str) -> String {
        let (a, b) = args.split_at(args.len() / 2);
        let (a, b) = (
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(b).unwrap(),
        );
        let q = serde_json::to_string(args).unwrap();
        match self {
            Shape::Chat => format!(concat!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"read_file\",\"arguments\":\"\"}}}}]}}}}]}}\n\n",
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{a}}}}}]}}}}]}}\n\n",
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{b}}}}}]}}}}]}}\n\n",
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"tool_calls\"}}]}}\n\n",
                "data: [DONE]\n\n"), a = a, b = b),
            Shape::Responses => format!(concat!(
                "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"id\":\"resp_1\"}}}}\n\n",
                "event: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"delta\":{a}}}\n\n",
                "event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{{\"type\":\"function_call\",\"name\":\"read_file\",\"arguments\":{q}}}}}\n\n",
                "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"output\":[]}}}}\n\n"), a = a, q = q),
            Shape::Messages => format!(concat!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"content\":[]}}}}\n\n",
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"read_file\",\"input\":{{}}}}}}\n\n",
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{a}}}}}\n\n",
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{b}}}}}\n\n",
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n",
                "event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"), a = a, b = b),
        }
    }

    fn request_body(self) -> String {
        match self {
            Shape::Chat => r#"{"model":"m","messages":[{"role":"user","content":"fix it"}]}"#,
            Shape::Responses => r#"{"model":"m","input":"fix it"}"#,
            Shape::Messages => {
                r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"fix it"}]}"#
            }
        }
        .to_owned()
    }
}

type Next = Arc<Mutex<(String, String)>>;
type Seen = Arc<Mutex<Vec<String>>>;
type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Bytes>, tower::BoxError>;

/// A service whose upstream answers with `next` (set per call) and records request bodies.
fn service(layer: &ToolCallLoopLayer) -> (Svc, Next, Seen) {
    let next = Arc::new(Mutex::new((String::new(), String::new())));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (n, s) = (next.clone(), seen.clone());
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        let (n, s) = (n.clone(), s.clone());
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            s.lock()
                .unwrap()
                .push(String::from_utf8(body.to_vec()).unwrap());
            let (ct, text) = n.lock().unwrap().clone();
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", ct)
                    .body(Full::new(Bytes::from(text)))
                    .unwrap(),
            )
        }
    });
    let svc = layer.layer(upstream).and_then(
        |resp: Response<ToolCallLoopBody<Full<Bytes>>>| async move {
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok(Response::from_parts(parts, bytes))
        },
    );
    (BoxCloneService::new(svc), next, seen)
}

fn request(shape: Shape, session: &str) -> Request<Full<Bytes>> {
    Request::post(shape.path())
        .header("authorization", "Bearer sk-test")
        .header("x-session-id", session)
        .body(Full::new(Bytes::from(shape.request_body())))
        .unwrap()
}

fn config(mode: Mode) -> Config {
    Config {
        max_repeats: 2,
        mode,
        ..Config::default()
    }
}

async fn call(
    svc: &mut Svc,
    req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, tower::BoxError> {
    svc.ready().await?.call(req).await
}

#[tokio::test]
async fn block_refuses_the_answer_that_repeats_in_each_shape() {
    for shape in Shape::ALL {
        let layer = ToolCallLoopLayer::new(config(Mode::Block));
        let (mut svc, next, _) = service(&layer);
        *next.lock().unwrap() = (
            "application/json".into(),
            shape.json(r#"{"path":"a.rs","lines":[1,2]}"#),
        );
        for _ in 0..2 {
            let resp = call(&mut svc, request(shape, "s")).await.unwrap();
            assert!(resp.headers().get(X_PORTCULLIS_TOOL_CALL_LOOP).is_none());
        }
        // Another session is counted apart.
        call(&mut svc, request(shape, "other")).await.unwrap();
        // The same call with its keys in another order is the same call.
        *next.lock().unwrap() = (
            "application/json".into(),
            shape.json(r#"{ "lines": [1, 2], "path": "a.rs" }"#),
        );
        let err = call(&mut svc, request(shape, "s")).await.unwrap_err();
        let looped = find_in_chain::<ToolCallLoop>(&*err).expect("a ToolCallLoop");
        assert_eq!(
            (looped.tool.as_str(), looped.repeats),
            ("read_file", 3),
            "{shape:?}"
        );
        assert_eq!(ToolCallLoop::CODE, "tool_call_loop");
        // Different arguments: a new streak.
        *next.lock().unwrap() = ("application/json".into(), shape.json(r#"{"path":"b.rs"}"#));
        call(&mut svc, request(shape, "s")).await.unwrap();
    }
}

#[tokio::test]
async fn block_ends_a_stream_with_an_error_event_in_each_shape() {
    for shape in Shape::ALL {
        let layer = ToolCallLoopLayer::new(config(Mode::Block));
        let (mut svc, next, _) = service(&layer);
        let stream = shape.stream(r#"{"path":"src/lib.rs"}"#);
        *next.lock().unwrap() = ("text/event-stream".into(), stream.clone());
        for _ in 0..2 {
            let resp = call(&mut svc, request(shape, "s")).await.unwrap();
            assert_eq!(
                resp.body(),
                stream.as_bytes(),
                "{shape:?}: passes unchanged"
            );
        }
        let resp = call(&mut svc, request(shape, "s")).await.unwrap();
        let body = std::str::from_utf8(resp.body()).unwrap();
        let (before, error) = body.split_at(
            body.rfind("\n\n")
                .map_or(0, |i| body[..i].rfind("\n\n").map_or(0, |j| j + 2)),
        );
        // Responses: `response.failed` comes before the error event.
        let before = before
            .rfind("event: response.failed")
            .map_or(before, |i| &before[..i]);
        assert!(
            stream.starts_with(before),
            "{shape:?}: whole events, then the error"
        );
        assert!(
            !body.contains("[DONE]")
                && !body.contains("message_stop")
                && !body.contains("response.completed")
        );
        let data: serde_json::Value = serde_json::from_str(
            error
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        match shape {
            Shape::Chat => assert_eq!(data["error"]["code"], "tool_call_loop"),
            Shape::Responses => {
                assert!(error.starts_with("event: error\n"));
                assert!(body.contains("event: response.failed\n"), "{body}");
                assert_eq!(data["code"], "tool_call_loop");
            }
            Shape::Messages => {
                assert!(error.starts_with("event: error\n"));
                assert_eq!(data["error"]["type"], "invalid_request_error");
                assert!(data["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("read_file"));
            }
        }
    }
}

#[tokio::test]
async fn warn_lets_the_loop_through_with_a_header() {
    let layer = ToolCallLoopLayer::new(config(Mode::Warn));
    let (mut svc, next, _) = service(&layer);
    let answer = Shape::Chat.json(r#"{"path":"a"}"#);
    *next.lock().unwrap() = ("application/json".into(), answer.clone());
    for i in 1..=4 {
        let resp = call(&mut svc, request(Shape::Chat, "s")).await.unwrap();
        assert_eq!(resp.body(), answer.as_bytes());
        let h = resp.headers().get(X_PORTCULLIS_TOOL_CALL_LOOP);
        assert_eq!(h.is_some(), i > 2, "{i}");
        if let Some(h) = h {
            assert_eq!(h, "warn");
        }
    }
    // A stream's headers leave before its calls are known: the header comes on the next
    // response of the session.
    let stream = Shape::Chat.stream(r#"{"path":"a"}"#);
    *next.lock().unwrap() = ("text/event-stream".into(), stream.clone());
    let resp = call(&mut svc, request(Shape::Chat, "s")).await.unwrap();
    assert_eq!(resp.body(), stream.as_bytes());
    let resp = call(&mut svc, request(Shape::Chat, "s")).await.unwrap();
    assert_eq!(resp.headers()[X_PORTCULLIS_TOOL_CALL_LOOP], "warn");
}

#[tokio::test]
async fn chance_then_block_notes_the_next_request_then_blocks_in_each_shape() {
    for shape in Shape::ALL {
        let layer = ToolCallLoopLayer::new(config(Mode::ChanceThenBlock));
        let (mut svc, next, seen) = service(&layer);
        *next.lock().unwrap() = ("application/json".into(), shape.json(r#"{"path":"a"}"#));
        call(&mut svc, request(shape, "s")).await.unwrap();
        call(&mut svc, request(shape, "s")).await.unwrap();
        let resp = call(&mut svc, request(shape, "s")).await.unwrap();
        assert_eq!(resp.headers()[X_PORTCULLIS_TOOL_CALL_LOOP], "chance");
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|b| !b.contains("Note from the gateway")));
        // The next request carries the note, in its own shape, and the answer repeats: blocked.
        let err = call(&mut svc, request(shape, "s")).await.unwrap_err();
        assert_eq!(find_in_chain::<ToolCallLoop>(&*err).unwrap().repeats, 4);
        let sent: serde_json::Value =
            serde_json::from_str(seen.lock().unwrap().last().unwrap()).unwrap();
        let note = match shape {
            Shape::Chat => sent["messages"][1]["content"].clone(),
            Shape::Responses => sent["input"][1]["content"].clone(),
            Shape::Messages => sent["messages"][0]["content"][1]["text"].clone(),
        };
        let note = note.as_str().unwrap();
        assert!(
            note.contains("read_file") && note.contains("same arguments"),
            "{shape:?}: {sent}"
        );
        // Only once.
        call(&mut svc, request(shape, "s")).await.unwrap_err();
        assert!(!seen
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .contains("Note from the gateway"));
    }
}

#[tokio::test]
async fn chance_then_block_after_a_streamed_loop_and_a_changed_course() {
    let layer = ToolCallLoopLayer::new(config(Mode::ChanceThenBlock));
    let (mut svc, next, seen) = service(&layer);
    *next.lock().unwrap() = (
        "text/event-stream".into(),
        Shape::Messages.stream(r#"{"path":"a"}"#),
    );
    for _ in 0..3 {
        call(&mut svc, request(Shape::Messages, "s")).await.unwrap();
    }
    // The model takes the hint.
    *next.lock().unwrap() = (
        "application/json".into(),
        Shape::Messages.json(r#"{"path":"b"}"#),
    );
    let resp = call(&mut svc, request(Shape::Messages, "s")).await.unwrap();
    assert_eq!(resp.headers()[X_PORTCULLIS_TOOL_CALL_LOOP], "chance");
    assert!(seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .contains("Note from the gateway"));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn text_answers_other_paths_errors_and_garbage_pass_and_reset() {
    let layer = ToolCallLoopLayer::new(config(Mode::Block));
    let (mut svc, next, _) = service(&layer);
    let call_answer = Shape::Chat.json(r#"{"path":"a"}"#);
    let text_answer =
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"done"}}]}"#;
    for (ct, body) in [
        ("application/json", call_answer.as_str()),
        ("application/json", call_answer.as_str()),
        ("application/json", text_answer),
        ("application/json", call_answer.as_str()),
        ("application/json", "{not json"),
        ("text/event-stream", "data: {oops\n\ndata: [DONE]\n\n"),
        ("application/json", call_answer.as_str()),
    ] {
        *next.lock().unwrap() = (ct.into(), body.into());
        let resp = call(&mut svc, request(Shape::Chat, "s")).await.unwrap();
        assert_eq!(resp.body(), body.as_bytes());
    }
    *next.lock().unwrap() = ("application/json".into(), call_answer.clone());
    for _ in 0..5 {
        let req = Request::post("/v1/embeddings")
            .body(Full::new(Bytes::new()))
            .unwrap();
        call(&mut svc, req).await.unwrap();
    }
    assert_eq!(layer.session_count(), 1);
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<Full<Bytes>>, Response<Full<Bytes>>, _>(
            ToolCallLoopLayer::new(Config::default()),
        );
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    // The call runs when polled (the layer may first read the request body).
    let fut = tokio::spawn(svc.call(request(Shape::Chat, "s")));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/v1/chat/completions");
    send.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
    let resp = fut.await.unwrap().unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}

/// A body that yields each piece as a frame of its own, as an upstream's chunks arrive.
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

type Frames = Arc<Mutex<Vec<String>>>;

/// A service whose upstream streams `frames` (set per call), one frame each.
fn framed_service(layer: &ToolCallLoopLayer) -> (Svc, Frames) {
    let frames: Frames = Arc::new(Mutex::new(Vec::new()));
    let f = frames.clone();
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let pieces = f.lock().unwrap().iter().cloned().map(Bytes::from).collect();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Pieces(pieces))
                    .unwrap(),
            )
        }
    });
    let svc =
        layer
            .layer(upstream)
            .and_then(|resp: Response<ToolCallLoopBody<Pieces>>| async move {
                let (parts, body) = resp.into_parts();
                let bytes = body.collect().await?.to_bytes();
                Ok(Response::from_parts(parts, bytes))
            });
    (BoxCloneService::new(svc), frames)
}

impl Shape {
    /// One text event of a streamed answer: nothing the layer reacts to.
    fn text_event(self, text: &str) -> String {
        let t = serde_json::to_string(text).unwrap();
        match self {
            Shape::Chat => format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{t}}}}}]}}\n\n"),
            Shape::Responses => format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":{t}}}\n\n"),
            Shape::Messages => format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{t}}}}}\n\n"),
        }
    }
}

/// Streams arrive in pieces: text events first (passed whole, unread, while nothing in them
/// is a call or an end), then a call's events, some cut mid-event. The calls are still
/// counted and the third is blocked; a text-only stream in pieces still ends the streak.
#[tokio::test]
async fn streams_in_pieces_are_watched_after_their_text() {
    for shape in Shape::ALL {
        let layer = ToolCallLoopLayer::new(config(Mode::Block));
        let (mut svc, frames) = framed_service(&layer);
        let text: Vec<String> = ["Let me ", "look at ", "the file."]
            .iter()
            .map(|t| shape.text_event(t))
            .collect();
        let call_stream = shape.stream(r#"{"path":"src/lib.rs"}"#);
        let mut with_call = text.clone();
        // The call's events one per frame (the first whole: only its marker says to read
        // it), the second cut in two.
        for (i, event) in call_stream.split_inclusive("\n\n").enumerate() {
            if i == 1 {
                let (a, b) = event.split_at(event.len() / 2);
                with_call.extend([a.to_owned(), b.to_owned()]);
            } else {
                with_call.push(event.to_owned());
            }
        }
        let whole: String = with_call.concat();
        // Two answers with the call, a text-only one, two more: no streak of three.
        let mut text_only = text.clone();
        if let Shape::Chat = shape {
            text_only.push("data: [DONE]\n\n".to_owned());
        }
        for (pieces, label) in [
            (&with_call, "call"),
            (&with_call, "call"),
            (&text_only, "text"),
            (&with_call, "call"),
            (&with_call, "call"),
        ] {
            *frames.lock().unwrap() = pieces.clone();
            let resp = call(&mut svc, request(shape, "s")).await.unwrap();
            assert_eq!(
                resp.body(),
                pieces.concat().as_bytes(),
                "{shape:?} {label}: passes unchanged"
            );
        }
        // The third call in a row: the answer ends with the error event instead.
        *frames.lock().unwrap() = with_call.clone();
        let resp = call(&mut svc, request(shape, "s")).await.unwrap();
        let body = std::str::from_utf8(resp.body()).unwrap();
        assert_ne!(body, whole, "{shape:?}: blocked");
        assert!(body.contains("tool call loop"), "{shape:?}: {body}");
        assert!(
            body.starts_with(&text.concat()),
            "{shape:?}: the text went out"
        );
    }
}

/// An upstream that counts its own clones.
struct Counted {
    clones: Arc<std::sync::atomic::AtomicUsize>,
    answer: String,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            clones: self.clones.clone(),
            answer: self.answer.clone(),
        }
    }
}

impl Service<Request<Full<Bytes>>> for Counted {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(self.answer.clone())))
            .unwrap()))
    }
}

#[tokio::test]
async fn a_request_goes_to_the_readied_service_without_a_copy_of_the_stack_below() {
    // Every request is called on the service poll_ready readied, at once: the stack below is
    // not cloned for it (a clone per request per layer, and the reference counts of every
    // layer below, was the price). Only a request that must wait first, here for the note
    // chance_then_block adds to its body, takes the readied service and leaves a clone.
    let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = || clones.load(std::sync::atomic::Ordering::Relaxed);
    let upstream = Counted {
        clones: clones.clone(),
        answer: Shape::Chat.json(r#"{"path":"a"}"#),
    };
    let mut svc = ToolCallLoopLayer::new(config(Mode::ChanceThenBlock)).layer(upstream);
    let mut results = Vec::new();
    for i in 1..=4 {
        let result = svc
            .ready()
            .await
            .unwrap()
            .call(request(Shape::Chat, "s"))
            .await;
        // The fourth carries the note: read first, so it takes the readied service with it.
        assert_eq!(count(), usize::from(i == 4), "request {i}");
        results.push(result);
    }
    let err = results.pop().unwrap().unwrap_err();
    assert_eq!(
        results.pop().unwrap().unwrap().headers()[X_PORTCULLIS_TOOL_CALL_LOOP],
        "chance"
    );
    assert!(find_in_chain::<ToolCallLoop>(&*err).is_some());
    assert_eq!(count(), 1);
}
