//! The commands layer against scripted upstreams, in each API shape, plain and streamed.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use portcullis_commands::{CommandKind, Commands, CommandsBody, CommandsLayer, Config};
use portcullis_core::RequestMeta;
use portcullis_loop_detection::LoopDetectionOff;
use serde_json::{json, Value};
use tower::{service_fn, util::BoxCloneService, Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq)]
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

    /// A request whose last user message says `text`.
    fn body(self, text: &str, stream: bool) -> Value {
        match self {
            Shape::Chat => json!({"model":"gpt-4o-mini","stream":stream,
                "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":text}]}),
            Shape::Messages => json!({"model":"claude-x","max_tokens":100,"stream":stream,
                "messages":[{"role":"user","content":[{"type":"text","text":text}]}]}),
            Shape::Responses => json!({"model":"gpt-5","stream":stream,
                "input":[{"type":"message","role":"user","content":[{"type":"input_text","text":text}]}]}),
        }
    }
}

/// What the upstream was sent.
#[derive(Debug, Clone)]
struct Seen {
    body: Value,
    meta_model: Option<String>,
    loop_detection_off: bool,
    content_length: Option<usize>,
}

type Svc =
    BoxCloneService<Request<Full<Bytes>>, Response<CommandsBody<Full<Bytes>>>, tower::BoxError>;

fn stack(config: Config) -> (Svc, CommandsLayer, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Seen {
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                meta_model: parts
                    .extensions
                    .get::<RequestMeta>()
                    .and_then(|m| m.model.as_deref().map(str::to_owned)),
                loop_detection_off: parts.extensions.get::<LoopDetectionOff>().is_some(),
                content_length: parts
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok()),
            });
            let resp = Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"upstream\":true}")))
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let layer = CommandsLayer::new(config);
    (BoxCloneService::new(layer.layer(upstream)), layer, seen)
}

fn request(shape: Shape, body: &Value, key: &str, session: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(shape.path()).header("x-api-key", key);
    if let Some(s) = session {
        b = b.header("x-session-id", s);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn send(svc: &Svc, req: Request<Full<Bytes>>) -> (Response<()>, String) {
    let resp = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// `(event name, data)` of each SSE event.
fn events(text: &str) -> Vec<(Option<String>, String)> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.expect("data line"))
        })
        .collect()
}

/// The answer's text, checking it is a valid answer of `shape`.
fn answer_text(shape: Shape, stream: bool, body: &str) -> String {
    if !stream {
        let v: Value = serde_json::from_str(body).unwrap();
        return match shape {
            Shape::Chat => {
                assert_eq!(v["object"], "chat.completion");
                assert_eq!(v["choices"][0]["message"]["role"], "assistant");
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
                assert!(v["id"].is_string() && v["created"].is_u64() && v["model"].is_string());
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            Shape::Messages => {
                assert_eq!(
                    (v["type"].as_str(), v["role"].as_str()),
                    (Some("message"), Some("assistant"))
                );
                assert_eq!(v["stop_reason"], "end_turn");
                assert!(
                    v["usage"]["input_tokens"].is_u64() && v["usage"]["output_tokens"].is_u64()
                );
                v["content"][0]["text"].as_str().unwrap().to_owned()
            }
            Shape::Responses => {
                assert_eq!(
                    (v["object"].as_str(), v["status"].as_str()),
                    (Some("response"), Some("completed"))
                );
                for field in [
                    "created_at",
                    "parallel_tool_calls",
                    "tool_choice",
                    "tools",
                    "model",
                ] {
                    assert!(!v[field].is_null(), "{field}");
                }
                assert_eq!(v["output"][0]["type"], "message");
                assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
                v["output"][0]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
    }
    let evs = events(body);
    match shape {
        Shape::Chat => {
            assert_eq!(evs.last().unwrap().1, "[DONE]");
            let chunks: Vec<Value> = evs[..evs.len() - 1]
                .iter()
                .map(|(n, d)| {
                    assert!(n.is_none());
                    serde_json::from_str(d).unwrap()
                })
                .collect();
            assert!(chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"));
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(
                chunks.last().unwrap()["choices"][0]["finish_reason"],
                "stop"
            );
            chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect()
        }
        Shape::Messages => {
            let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
            assert_eq!(
                names,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
            let mut text = String::new();
            for (n, d) in &evs {
                let v: Value = serde_json::from_str(d).unwrap();
                assert_eq!(
                    v["type"].as_str(),
                    n.as_deref(),
                    "the data's type is the event's"
                );
                if let Some(t) = v["delta"]["text"].as_str() {
                    text.push_str(t);
                }
            }
            text
        }
        Shape::Responses => {
            let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
            assert_eq!(
                names,
                [
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_text.delta",
                    "response.output_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                    "response.completed"
                ]
            );
            let mut text = String::new();
            for (i, (n, d)) in evs.iter().enumerate() {
                let v: Value = serde_json::from_str(d).unwrap();
                assert_eq!(v["type"].as_str(), n.as_deref());
                assert_eq!(v["sequence_number"], i, "sequence numbers count up");
                if n.as_deref() == Some("response.output_text.delta") {
                    text.push_str(v["delta"].as_str().unwrap());
                    assert!(v["item_id"].is_string() && v["logprobs"].is_array());
                }
                if n.as_deref() == Some("response.completed") {
                    assert_eq!(v["response"]["status"], "completed");
                    assert_eq!(
                        v["response"]["output"][0]["content"][0]["text"].as_str(),
                        Some(&*text)
                    );
                }
            }
            text
        }
    }
}

#[tokio::test]
async fn each_command_in_each_shape_plain_and_streamed_without_an_upstream_call() {
    for shape in Shape::ALL {
        for stream in [false, true] {
            let (svc, _, seen) = stack(Config::default());
            for (command, kind, says) in [
                (
                    "!/set(model=gpt-4o, temperature=0.2)",
                    "set",
                    "temperature = 0.2",
                ),
                ("  !/show", "show", "model = gpt-4o"),
                ("!/unset(temperature)", "unset", "Removed temperature"),
                ("!/help", "help", "!/set(key=value, ...)"),
                ("!/set(model=", "invalid", "not closed"),
                ("!/frobnicate", "invalid", "unknown command"),
            ] {
                let req = request(shape, &shape.body(command, stream), "sk-a", Some("s1"));
                let (resp, body) = send(&svc, req).await;
                let what = format!("{shape:?} stream={stream} {command}");
                assert_eq!(resp.status(), 200, "{what}");
                assert_eq!(resp.headers()["x-portcullis-command"], kind, "{what}");
                assert_eq!(
                    resp.extensions().get::<CommandKind>().map(|k| k.as_str()),
                    Some(kind)
                );
                let ct = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                assert_eq!(resp.headers()["content-type"], ct, "{what}");
                let text = answer_text(shape, stream, &body);
                assert!(text.contains(says), "{what}: {text}");
            }
            assert!(
                seen.lock().unwrap().is_empty(),
                "the upstream is never called"
            );
        }
    }
}

#[tokio::test]
async fn chat_streams_carry_a_usage_chunk_when_asked() {
    let (svc, _, _) = stack(Config::default());
    let mut body = Shape::Chat.body("!/show", true);
    body["stream_options"] = json!({"include_usage": true});
    let (_, text) = send(&svc, request(Shape::Chat, &body, "k", None)).await;
    let evs = events(&text);
    let usage: Value = serde_json::from_str(&evs[evs.len() - 2].1).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 0);
}

#[tokio::test]
async fn model_override_and_params_merge_on_the_next_request() {
    for shape in Shape::ALL {
        let (svc, _, seen) = stack(Config::default());
        let set = r#"!/set(model=gpt-4o, temperature=0.2, thinking={"type":"enabled","budget_tokens":4096}, tag=blue)"#;
        send(&svc, request(shape, &shape.body(set, false), "sk-a", None)).await;
        let mut body = shape.body("Hello", false);
        body["temperature"] = json!(0.9);
        let (_, answer) = send(&svc, request(shape, &body, "sk-a", None)).await;
        assert_eq!(answer, r#"{"upstream":true}"#);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let sent = &seen[0];
        assert_eq!(sent.body["model"], "gpt-4o", "{shape:?}");
        assert_eq!(
            sent.meta_model.as_deref(),
            Some("gpt-4o"),
            "the router's meta follows"
        );
        assert_eq!(sent.body["temperature"], 0.9, "the client's own value wins");
        assert_eq!(
            sent.body["thinking"],
            json!({"type":"enabled","budget_tokens":4096})
        );
        assert_eq!(sent.body["tag"], "blue", "a non-JSON value is a string");
        assert_eq!(sent.body["stream"], false);
        assert_eq!(sent.content_length, Some(sent.body.to_string().len()));
        assert!(!sent.loop_detection_off);
    }
}

#[tokio::test]
async fn requests_without_a_command_or_settings_go_through_unchanged() {
    let (svc, _, seen) = stack(Config::default());
    let plain = Shape::Chat.body("Hello !/ not at the start", false);
    send(&svc, request(Shape::Chat, &plain, "k", None)).await;
    // A command in an earlier message is not run again.
    let earlier = json!({"model":"m","messages":[{"role":"user","content":"!/show"},
        {"role":"assistant","content":"No settings."},{"role":"user","content":"thanks"}]});
    send(&svc, request(Shape::Chat, &earlier, "k", None)).await;
    // Not JSON, or another path: not ours.
    let raw = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"!/show not json")))
        .unwrap();
    send(&svc, raw).await;
    let embeddings = Request::post("/v1/embeddings")
        .body(Full::new(Bytes::from(
            json!({"model":"e","input":"!/show"}).to_string(),
        )))
        .unwrap();
    send(&svc, embeddings).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "all four reached the upstream");
    assert_eq!(seen[0].body, plain);
    assert_eq!(seen[1].body, earlier);
    assert_eq!(seen[2].body, Value::Null, "sent on as it came");
    assert!(seen
        .iter()
        .all(|s| s.meta_model.is_none() && !s.loop_detection_off));
}

#[tokio::test]
async fn loop_detection_off_sets_the_extension_until_turned_on() {
    let (svc, _, seen) = stack(Config::default());
    let run = |text: &'static str| {
        request(
            Shape::Messages,
            &Shape::Messages.body(text, false),
            "k",
            Some("s"),
        )
    };
    send(&svc, run("!/set(loop_detection=off)")).await;
    send(&svc, run("go on")).await;
    let (resp, _) = send(&svc, run("!/set(loop_detection=on)")).await;
    assert_eq!(resp.headers()["x-portcullis-command"], "set");
    send(&svc, run("go on")).await;
    let (resp, _) = send(&svc, run("!/set(loop_detection=maybe)")).await;
    assert_eq!(resp.headers()["x-portcullis-command"], "invalid");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .map(|s| s.loop_detection_off)
            .collect::<Vec<_>>(),
        [true, false]
    );
    assert!(
        seen.iter().all(|s| s.body["model"] == "claude-x"),
        "nothing else changed"
    );
}

#[tokio::test]
async fn two_sessions_never_share_state() {
    let (svc, _, seen) = stack(Config::default());
    let chat = |text: &str, key: &str, sid: Option<&str>| {
        request(Shape::Chat, &Shape::Chat.body(text, false), key, sid)
    };
    send(&svc, chat("!/set(model=a-model)", "sk-a", Some("s1"))).await;
    // Another session id of the same caller, the same session id of another caller, and the
    // caller without a session id: none sees it.
    for (key, sid) in [("sk-a", Some("s2")), ("sk-b", Some("s1")), ("sk-a", None)] {
        let (_, text) = send(&svc, chat("!/show", key, sid)).await;
        assert!(text.contains("no settings"), "{key} {sid:?}: {text}");
        send(&svc, chat("hi", key, sid)).await;
    }
    send(&svc, chat("hi", "sk-a", Some("s1"))).await;
    let models: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        models,
        ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "a-model"]
    );
    // And an unset in one session leaves the other alone.
    send(&svc, chat("!/set(model=b-model)", "sk-b", Some("s1"))).await;
    send(&svc, chat("!/unset(*)", "sk-a", Some("s1"))).await;
    let (_, text) = send(&svc, chat("!/show", "sk-b", Some("s1"))).await;
    assert!(text.contains("model = b-model"), "{text}");
}

#[tokio::test]
async fn sessions_are_bounded() {
    let (svc, layer, _) = stack(Config {
        max_sessions: 10,
        ..Config::default()
    });
    for i in 0..200 {
        let req = request(
            Shape::Chat,
            &Shape::Chat.body("!/set(x=1)", false),
            "k",
            Some(&format!("s{i}")),
        );
        send(&svc, req).await;
    }
    assert!(layer.session_count() <= 10, "{}", layer.session_count());
    assert!(layer.session_count() >= 1);
}

#[tokio::test(start_paused = true)]
async fn settings_are_forgotten_after_the_session_ttl() {
    let (svc, _, seen) = stack(Config {
        session_ttl: Duration::from_secs(60),
        ..Config::default()
    });
    let chat = |text: &str| request(Shape::Chat, &Shape::Chat.body(text, false), "k", None);
    send(&svc, chat("!/set(model=big)")).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    send(&svc, chat("one")).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    send(&svc, chat("two")).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    send(&svc, chat("three")).await;
    let models: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["big", "big", "gpt-4o-mini"]);
}

#[tokio::test]
async fn refused_values_and_limits_change_nothing() {
    let (svc, _, _) = stack(Config {
        max_params: 2,
        ..Config::default()
    });
    let chat = |text: &str| request(Shape::Chat, &Shape::Chat.body(text, false), "k", None);
    for bad in [
        "!/set(messages=[])",
        "!/set(model={\"a\":1})",
        "!/set(a=1, b=2, c=3)",
        &format!("!/set(a=\"{}\")", "x".repeat(20_000)),
    ] {
        let (resp, text) = send(&svc, chat(bad)).await;
        assert_eq!(
            resp.headers()["x-portcullis-command"],
            "invalid",
            "{bad:.40}"
        );
        assert!(text.contains("Nothing was changed"), "{text}");
    }
    let (_, text) = send(&svc, chat("!/show")).await;
    assert!(text.contains("no settings"), "all or nothing: {text}");
}

#[tokio::test]
async fn the_inner_service_is_readied_only_when_forwarding() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    handle.allow(0);
    let mut svc: Commands<_> = CommandsLayer::new(Config::default()).layer(mock);
    // Ready although the inner service is not: a command needs no capacity from it.
    tokio_test::assert_ready_ok!(tokio_test::task::spawn(()).enter(|cx, _| svc.poll_ready(cx)));
    let cmd = request(Shape::Chat, &Shape::Chat.body("!/help", false), "k", None);
    let resp = svc.call(cmd).await.unwrap();
    assert_eq!(resp.headers()["x-portcullis-command"], "help");

    let fwd = request(Shape::Chat, &Shape::Chat.body("hi", false), "k", None);
    let mut pending = tokio_test::task::spawn(svc.call(fwd));
    tokio_test::assert_pending!(pending.poll());
    handle.allow(1);
    assert!(
        pending.is_woken(),
        "the inner service's readiness wakes the forwarded call"
    );
    tokio_test::assert_pending!(pending.poll()); // readied and called; awaiting the answer
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/v1/chat/completions");
    send.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
    let resp = pending.await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}

/// A body of more values than a layer builds a tree of is sent on unread (a
/// `serde_json::Value` of five million values is ~300 MB): its command is not run.
#[tokio::test]
async fn a_body_of_too_many_values_is_sent_on_unread() {
    let max = portcullis_core::json_skim::MAX_VALUES;
    let (svc, _, seen) = stack(Config::default());
    for n in [1000, max + 1] {
        let mut body = Shape::Chat.body("!/show", false);
        body["metadata"] = Value::Array(vec![json!(0); n]);
        let (_, answer) = send(&svc, request(Shape::Chat, &body, "k", None)).await;
        let upstream = answer == r#"{"upstream":true}"#;
        assert_eq!(
            upstream,
            n > max,
            "{n} values: {}",
            &answer[..answer.len().min(80)]
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// An upstream that counts its own clones.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(self.0.clone())
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
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"up")))))
    }
}

#[tokio::test]
async fn a_body_in_memory_is_decided_at_once_and_sent_on_without_a_copy_of_the_stack_below() {
    // The body is in memory (as the validation layer before this one leaves it): the request
    // is decided in `call` and sent on through the service itself, not a clone of it (a clone
    // of every layer below, with its reference counts, was the price of each request).
    let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = || clones.load(std::sync::atomic::Ordering::Relaxed);
    let mut svc = CommandsLayer::new(Config::default()).layer(Counted(clones.clone()));
    let chat = |text: &str| request(Shape::Chat, &Shape::Chat.body(text, false), "k", None);
    for (req, upstream) in [
        (chat("hi"), true),
        (chat("!/help"), false),
        (
            Request::get("/v1/models")
                .body(Full::new(Bytes::new()))
                .unwrap(),
            true,
        ),
    ] {
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body == "up", upstream);
    }
    assert_eq!(count(), 0);
}
