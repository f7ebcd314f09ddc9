//! Stream translation cost per event: a 1,000-event stream in each direction, fed in
//! network-sized chunks (target: under 2 µs per event); and the token estimate the layer
//! answers `count_tokens` with for chat upstreams, per byte of text.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_translate::{Format, Plan, StreamTranslator};

const EVENTS: usize = 1000;

/// An Anthropic stream of ~1,000 events: start, a text block of text deltas, a tool block of
/// argument deltas, stop.
fn anthropic_stream() -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for i in 0..EVENTS - 8 {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word {i} of the \\\"answer\\\"\\n\"}}}}\n\n"
        ));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n\
         event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
         event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
         event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":900}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    s.into_bytes()
}

/// An OpenAI chat stream of ~1,000 chunks, usage chunk and [DONE] included.
fn chat_stream() -> Vec<u8> {
    let head = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,";
    let mut s = format!("data: {head}\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n");
    for i in 0..EVENTS - 5 {
        s.push_str(&format!(
            "data: {head}\"delta\":{{\"content\":\"word {i} of the \\\"answer\\\"\\n\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str(&format!("data: {head}\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{\\\"a\\\":1}}\"}}}}]}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"));
    s.push_str(&format!("data: {head}\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}}],\"usage\":null}}\n\n"));
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":900,\"total_tokens\":1000}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    let anthropic = anthropic_stream();
    let chat = chat_stream();
    let mut g = c.benchmark_group("stream_1000_events");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for (name, upstream, client, input) in [
        (
            "anthropic_to_chat",
            Format::Messages,
            Format::ChatCompletions,
            &anthropic,
        ),
        (
            "anthropic_to_responses",
            Format::Messages,
            Format::Responses,
            &anthropic,
        ),
        (
            "chat_to_anthropic",
            Format::ChatCompletions,
            Format::Messages,
            &chat,
        ),
        (
            "chat_to_responses",
            Format::ChatCompletions,
            Format::Responses,
            &chat,
        ),
    ] {
        let mut plan = Plan::new(client, upstream);
        plan.stream = true;
        plan.include_usage = true;
        g.bench_with_input(BenchmarkId::from_parameter(name), input, |b, input| {
            b.iter(|| {
                let mut t = StreamTranslator::new(&plan).unwrap();
                let mut n = 0;
                // Network-sized pieces, cut anywhere.
                for chunk in input.chunks(1400) {
                    n += t.feed(chunk).len();
                }
                n += t.finish().len();
                assert!(t.is_done());
                n
            })
        });
    }
    g.finish();
}

/// `count_tokens` for a chat upstream: the estimate over a Claude Code-sized conversation
/// (this crate's own README and sources as the turns' text, about 200 KB).
fn count(c: &mut Criterion) {
    let text = [
        include_str!("../README.md"),
        include_str!("../src/request.rs"),
        include_str!("../src/stream.rs"),
        include_str!("../src/response.rs"),
    ];
    let messages: Vec<_> = text
        .iter()
        .flat_map(|t| {
            [
                serde_json::json!({"role": "user", "content": t}),
                serde_json::json!({"role": "assistant", "content": "ok"}),
            ]
        })
        .collect();
    let body =
        serde_json::to_vec(&serde_json::json!({"model": "m", "messages": messages})).unwrap();
    let mut g = c.benchmark_group("count_tokens_estimate");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("messages_200kb", |b| {
        b.iter(|| {
            portcullis_translate::count::estimate_input_tokens(Format::Messages, &body).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, count);
criterion_main!(benches);
