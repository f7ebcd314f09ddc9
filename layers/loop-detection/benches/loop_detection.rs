//! Streaming throughput of a realistic chat-completions SSE stream (3 000 chunks of ~20
//! characters) through the loop-detection layer ("on"), against the same stream passed
//! through untouched ("off"): the ratio of the two is the layer's overhead.
//!
//! Run with: `cargo bench -p portcullis-loop-detection`

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use portcullis_loop_detection::{Config, LoopDetectionLayer};
use tower::{service_fn, Layer, ServiceExt};

/// The upstream body: one event per frame, as upstreams send them.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A chat-completions answer streamed as OpenAI does: 3 000 chunks of about 20 characters of
/// text each (~60 000 characters of prose with code), every chunk the full
/// `chat.completion.chunk` envelope.
fn stream() -> Vec<Bytes> {
    let words = [
        "The ",
        "function ",
        "reads ",
        "the ",
        "config ",
        "file, ",
        "then ",
        "checks ",
        "each ",
        "value: ",
        "`max_",
        "attempts` ",
        "must ",
        "be ",
        "at ",
        "least ",
        "one.\n",
        "```rust\n",
        "fn ",
        "main() ",
        "{\n",
        "    let ",
        "x ",
        "= ",
        "42;\n",
        "}\n",
        "```\n",
        "\"quoted\" ",
    ];
    let mut frames = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000u32 {
        let mut delta = String::new();
        while delta.chars().count() < 20 {
            let r = next();
            delta.push_str(words[(r % words.len() as u64) as usize]);
            if r % 13 == 0 {
                delta.push_str(&format!("{i} "));
            }
        }
        let token = serde_json::to_string(&delta).unwrap();
        frames.push(Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{token}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        )));
    }
    frames.push(Bytes::from_static(b"data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"));
    frames
}

fn upstream(
    frames: Vec<Bytes>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<Frames>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Frames>, Infallible>>,
> + Clone {
    service_fn(move |_req: Request<()>| {
        std::future::ready(Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(Frames(frames.clone().into()))
            .unwrap()))
    })
}

fn request() -> Request<()> {
    Request::post("/v1/chat/completions").body(()).unwrap()
}

fn bench(c: &mut Criterion) {
    let frames = stream();
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sse_stream");
    // Elements: SSE events, so criterion prints events per second for both, and the
    // difference of the two times divided by the events is the layer's cost per event.
    group.throughput(Throughput::Elements(frames.len() as u64));
    eprintln!("{} events, {bytes} bytes", frames.len());

    let plain = upstream(frames.clone());
    group.bench_function("passthrough", |b| {
        b.to_async(&rt).iter(|| {
            let svc = plain.clone();
            async move {
                let resp = svc.oneshot(request()).await.unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            }
        })
    });

    let watched = LoopDetectionLayer::new(Config::default()).layer(upstream(frames));
    group.bench_function("loop_detection", |b| {
        b.to_async(&rt).iter(|| {
            let svc = watched.clone();
            async move {
                let resp = svc.oneshot(request()).await.unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
