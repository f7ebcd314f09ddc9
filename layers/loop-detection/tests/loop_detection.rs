//! The loop-detection layer against scripted upstreams.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use portcullis_core::error::find_in_chain;
use portcullis_loop_detection::{
    Config, LoopDetected, LoopDetectionLayer, LoopDetectionOff, LoopDetector,
};
use proptest::prelude::*;
use tower::{service_fn, Layer, ServiceExt};

// === a scripted upstream body ===

/// Yields the given frames; records how many were read and whether it was dropped.
struct Script {
    frames: VecDeque<Bytes>,
    read: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Body for Script {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.frames.pop_front();
        if next.is_some() {
            self.read.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

struct Outcome {
    result: Result<(u16, Bytes), tower::BoxError>,
    frames_read: usize,
    upstream_dropped: bool,
}

async fn run_with(
    layer: &LoopDetectionLayer,
    request: Request<Full<Bytes>>,
    status: u16,
    content_type: &str,
    frames: Vec<Bytes>,
) -> Outcome {
    let read = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let body = Script {
        frames: frames.into(),
        read: read.clone(),
        dropped: dropped.clone(),
    };
    let ct = content_type.to_owned();
    let body = std::sync::Mutex::new(Some(body));
    let svc = layer.layer(service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.lock().unwrap().take().unwrap();
        let resp = Response::builder()
            .status(status)
            .header("content-type", ct.as_str())
            .body(body)
            .unwrap();
        async move { Ok::<_, Infallible>(resp) }
    }));
    let result = match svc.oneshot(request).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            Ok((status, bytes))
        }
        Err(e) => Err(e),
    };
    Outcome {
        result,
        frames_read: read.load(Ordering::SeqCst),
        upstream_dropped: dropped.load(Ordering::SeqCst),
    }
}

async fn run(path: &str, content_type: &str, frames: Vec<Bytes>) -> Outcome {
    let layer = LoopDetectionLayer::new(Config::default());
    let req = Request::post(path).body(Full::new(Bytes::new())).unwrap();
    run_with(&layer, req, 200, content_type, frames).await
}

// === stream builders ===

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

    fn event(self, piece: &str) -> String {
        let p = serde_json::to_string(piece).unwrap();
        match self {
            Shape::Chat => format!(
                "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{p}}},\"finish_reason\":null}}]}}\n\n"
            ),
            Shape::Responses => format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":{p}}}\n\n"
            ),
            Shape::Messages => format!(
                "event: content_block_delta\r\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{p}}}}}\r\n\r\n"
            ),
        }
    }

    fn end(self) -> &'static str {
        match self {
            Shape::Chat => "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            Shape::Responses => "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\"}}\n\n",
            Shape::Messages => "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
        }
    }

    /// The whole stream of `text`, cut into deltas of `piece` characters.
    fn stream(self, text: &str, piece: usize) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut s: String = chars
            .chunks(piece.max(1))
            .map(|c| self.event(&c.iter().collect::<String>()))
            .collect();
        s.push_str(self.end());
        s
    }

    fn json(self, text: &str) -> String {
        match self {
            Shape::Chat => serde_json::json!({"id":"c","object":"chat.completion","choices":[
                {"index":0,"message":{"role":"assistant","content":text},"finish_reason":"stop"}]}),
            Shape::Responses => serde_json::json!({"id":"r","object":"response","output":[
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":text}]}]}),
            Shape::Messages => serde_json::json!({"id":"m","type":"message","content":[
                {"type":"text","text":text}]}),
        }
        .to_string()
    }
}

const LINE: &str = "Let me look at the failing test again and run it once more.\n"; // 60 chars

fn frames_of(s: &str) -> Vec<Bytes> {
    vec![Bytes::from(s.to_owned())]
}

/// The error event at the end of a stream, parsed.
fn last_event(body: &[u8]) -> (Option<String>, serde_json::Value) {
    let text = std::str::from_utf8(body).unwrap();
    let event = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap()
        .replace('\r', "");
    let mut name = None;
    let mut data = None;
    for line in event.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_owned());
        }
        if let Some(d) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(d).unwrap());
        }
    }
    (name, data.unwrap())
}

// === streams ===

#[tokio::test]
async fn a_looping_stream_ends_with_one_error_event_in_each_shape() {
    for shape in Shape::ALL {
        let text = format!("Here is my plan.\n{}", LINE.repeat(20));
        // One frame per event: the upstream must be left unread after the loop.
        let stream = shape.stream(&text, 7);
        let sep = if matches!(shape, Shape::Messages) {
            "\r\n\r\n"
        } else {
            "\n\n"
        };
        let frames: Vec<Bytes> = stream
            .split_inclusive(sep)
            .map(|e| Bytes::from(e.to_owned()))
            .collect();
        let total = frames.len();
        let out = run(shape.path(), "text/event-stream", frames).await;
        let (status, body) = out.result.unwrap();
        assert_eq!(status, 200);
        assert!(
            out.frames_read < total / 2,
            "{shape:?}: {} of {total}",
            out.frames_read
        );
        assert!(out.upstream_dropped);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(!text.contains("[DONE]") && !text.contains("message_stop"));
        let (name, data) = last_event(&body);
        match shape {
            Shape::Chat => {
                assert_eq!(name, None);
                assert_eq!(data["error"]["code"], "loop_detected");
                assert_eq!(data["error"]["type"], "api_error");
                assert!(data["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("60-character"));
            }
            Shape::Messages => {
                assert_eq!(name.as_deref(), Some("error"));
                assert_eq!(data["type"], "error");
                assert_eq!(data["error"]["type"], "api_error");
                assert!(data["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("loop detected"));
            }
            Shape::Responses => {
                assert_eq!(name.as_deref(), Some("error"));
                assert_eq!(data["type"], "error");
                assert_eq!(data["code"], "loop_detected");
            }
        }
        // Everything before the error event is whole events of the upstream stream.
        let cut = body.len() - shape_error_len(&body);
        assert!(stream.as_bytes().starts_with(&body[..cut]), "{shape:?}");
    }
}

fn shape_error_len(body: &[u8]) -> usize {
    let text = std::str::from_utf8(body).unwrap();
    // Responses: `response.failed`, then the error event.
    let start = text
        .rfind("event: response.failed")
        .or_else(|| text.rfind("event: error"))
        .or_else(|| text.rfind("data: {\"error\""))
        .unwrap();
    text.len() - start
}

#[tokio::test]
async fn an_honest_stream_passes_through_byte_for_byte() {
    for shape in Shape::ALL {
        let text = "fn main() {\n    println!(\"hi\");\n}\n".repeat(3) + &"}\n".repeat(300);
        let stream = shape.stream(&text, 5);
        let out = run(
            shape.path(),
            "text/event-stream; charset=utf-8",
            frames_of(&stream),
        )
        .await;
        let (_, body) = out.result.unwrap();
        assert_eq!(body, stream.as_bytes(), "{shape:?}");
    }
}

#[tokio::test]
async fn malformed_events_pass_through_unchanged() {
    let garbage = "data: {not json\n\ndata: {\"choices\":\"oops\"}\n\n: comment\n\ndata: [DONE]\n\nno newline at all";
    let out = run(
        "/v1/chat/completions",
        "text/event-stream",
        frames_of(garbage),
    )
    .await;
    assert_eq!(out.result.unwrap().1, garbage.as_bytes());
}

#[tokio::test]
async fn other_paths_off_switch_and_error_statuses_pass_through() {
    let stream = Shape::Chat.stream(&LINE.repeat(10), 9);
    for path in [
        "/v1/completions",
        "/v1/messages/count_tokens",
        "/v1/responses/resp_1",
    ] {
        let out = run(path, "text/event-stream", frames_of(&stream)).await;
        assert_eq!(out.result.unwrap().1, stream.as_bytes(), "{path}");
    }
    let layer = LoopDetectionLayer::new(Config::default());
    let mut req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(LoopDetectionOff);
    let out = run_with(&layer, req, 200, "text/event-stream", frames_of(&stream)).await;
    assert_eq!(out.result.unwrap().1, stream.as_bytes());

    let json = Shape::Chat.json(&LINE.repeat(10));
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let out = run_with(&layer, req, 500, "application/json", frames_of(&json)).await;
    assert_eq!(out.result.unwrap(), (500, Bytes::from(json)));
}

// === not streamed ===

#[tokio::test]
async fn a_looping_json_answer_becomes_loop_detected_in_each_shape() {
    for shape in Shape::ALL {
        let json = shape.json(&format!("Sure.\n{}", LINE.repeat(4)));
        // Split across frames: the whole body is read before deciding.
        let frames = json
            .as_bytes()
            .chunks(17)
            .map(Bytes::copy_from_slice)
            .collect();
        let out = run(shape.path(), "application/json", frames).await;
        let err = out.result.unwrap_err();
        let found = find_in_chain::<LoopDetected>(&*err).unwrap();
        assert_eq!(
            (found.pattern_length, found.repetitions),
            (60, 4),
            "{shape:?}"
        );
        assert_eq!(LoopDetected::CODE, "loop_detected");
    }
}

#[tokio::test]
async fn an_honest_json_answer_passes_unchanged_and_three_copies_are_not_a_loop() {
    for shape in Shape::ALL {
        let json = shape.json(&LINE.repeat(3));
        let frames = json
            .as_bytes()
            .chunks(5)
            .map(Bytes::copy_from_slice)
            .collect();
        let out = run(shape.path(), "application/json", frames).await;
        assert_eq!(out.result.unwrap(), (200, Bytes::from(json)), "{shape:?}");
    }
    let out = run(
        "/v1/chat/completions",
        "application/json",
        frames_of("{\"choices\": 7"),
    )
    .await;
    assert_eq!(out.result.unwrap().1, "{\"choices\": 7");
}

#[tokio::test]
async fn a_json_answer_over_the_cap_passes_unchecked() {
    let layer = LoopDetectionLayer::new(Config::default()).with_max_json_bytes(100);
    let json = Shape::Chat.json(&LINE.repeat(10));
    let frames: Vec<Bytes> = json
        .as_bytes()
        .chunks(30)
        .map(Bytes::copy_from_slice)
        .collect();
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let out = run_with(&layer, req, 200, "application/json", frames).await;
    assert_eq!(out.result.unwrap().1, json.as_bytes());
}

#[tokio::test]
async fn each_chat_choice_is_watched_on_its_own() {
    // Two choices interleaved: together they never repeat, but choice 1 loops.
    let mut stream = String::new();
    for i in 0..12 {
        let a = serde_json::to_string(&format!("unique text number {i} for the first choice, "))
            .unwrap();
        let b = serde_json::to_string(LINE).unwrap();
        stream +=
            &format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{a}}}}}]}}\n\n");
        stream +=
            &format!("data: {{\"choices\":[{{\"index\":1,\"delta\":{{\"content\":{b}}}}}]}}\n\n");
    }
    let out = run(
        "/v1/chat/completions",
        "text/event-stream",
        frames_of(&stream),
    )
    .await;
    let (_, data) = last_event(&out.result.unwrap().1);
    assert_eq!(data["error"]["code"], "loop_detected");
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<Full<Bytes>>, Response<Full<Bytes>>, _>(
            LoopDetectionLayer::new(Config::default()),
        );
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let call = svc.call(
        Request::post("/v1/messages")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/v1/messages");
    send.send_response(Response::new(Full::new(Bytes::from_static(b"ok"))));
    let resp = call.await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}

// === properties ===

/// Source code full of short repeated lines, broken up by unique ones.
fn code() -> impl Strategy<Value = String> {
    let short = prop::sample::select(vec![
        "}",
        "",
        "    }",
        "{",
        "    return x;",
        "        i += 1;",
        "    return Ok(());",
        "else {",
        "        break;",
        "#[test]",
        "    // TODO",
    ]);
    let line = prop_oneof![
        (short.clone(), 1..40usize).prop_map(|(l, n)| format!("{l}\n").repeat(n)),
        short.prop_map(|l| format!("{l}\n")),
        (any::<u32>(), any::<u16>()).prop_map(|(a, b)| format!("    let v{a} = compute({b});\n")),
    ];
    prop::collection::vec(line, 1..200).prop_map(|v| v.concat())
}

fn config() -> impl Strategy<Value = Config> {
    prop_oneof![
        Just(Config::default()),
        (5..80usize, 0..120usize, 2..7usize).prop_map(|(min, extra, reps)| Config {
            min_pattern_length: min,
            max_pattern_length: min + extra,
            min_repetitions: reps,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_false_positive_on_code_with_short_repeated_lines(text in code()) {
        let mut d = LoopDetector::new(&Config::default());
        prop_assert_eq!(d.push_str(&text), None);
    }

    #[test]
    fn detected_exactly_at_the_threshold(
        config in config(),
        prefix in "[0-9 ]{0,300}",
        len_pick in any::<prop::sample::Index>(),
        seed in prop::collection::vec(0u8..26, 600),
    ) {
        let len = config.min_pattern_length
            + len_pick.index(config.max_pattern_length - config.min_pattern_length + 1);
        let pattern: String = seed[..len].iter().map(|&b| char::from(b'a' + b)).collect();
        let mut d = LoopDetector::new(&config);
        // Digits and spaces repeat easily at a short pattern length: a prefix that is itself a
        // loop under this config ("8    8    " at 5 x 2) is found there, and a detection stays.
        prop_assume!(d.push_str(&prefix).is_none());
        prop_assert_eq!(d.push_str(&pattern.repeat(config.min_repetitions - 1)), None);
        let (head, last) = pattern.split_at(len - 1);
        prop_assert_eq!(d.push_str(head), None);
        let found = d.push_str(last);
        prop_assert!(found.is_some());
        let found = found.unwrap();
        prop_assert_eq!(found.pattern_length, len);
        prop_assert_eq!(found.at_char, (prefix.len() + len * config.min_repetitions) as u64);
    }

    #[test]
    fn the_decision_does_not_depend_on_chunking(
        shape in prop::sample::select(Shape::ALL.to_vec()),
        looping in any::<bool>(),
        text in code(),
        piece in 1..40usize,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let text = if looping { format!("{}{}", &text[..text.len().min(200)], LINE.repeat(5)) } else { text };
        let stream = shape.stream(&text, piece);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut frames = Vec::new();
        let mut at = 0;
        for p in points {
            frames.push(Bytes::copy_from_slice(&stream.as_bytes()[at..p]));
            at = p;
        }
        frames.push(Bytes::copy_from_slice(&stream.as_bytes()[at..]));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let whole = rt.block_on(run(shape.path(), "text/event-stream", frames_of(&stream)));
        let split = rt.block_on(run(shape.path(), "text/event-stream", frames));
        let whole = whole.result.unwrap().1;
        prop_assert_eq!(&whole, &split.result.unwrap().1);
        prop_assert_eq!(looping, whole.ends_with(b"}\n\n") && std::str::from_utf8(&whole).unwrap().contains("loop detected"));
    }
}
