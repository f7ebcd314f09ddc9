//! The usage reader ([`Sniffer`]) on whole answers, as the gateway reads every answer it
//! passes on (the access line's and the audit's tokens and model): the mock upstream's
//! 331-byte chat completion (what `benches/load.sh` measures), a real-shaped OpenAI chat
//! completion with ~2 KB of text, and an Anthropic message.
//!
//! Run with: `cargo bench -p portcullis-core --bench usage`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use portcullis_core::usage::{Sniffer, Usage};

/// `benches/load.sh`'s mock answer, byte for byte.
const MOCK: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello from mock","refusal":null,"role":"assistant"}}],"created":1796565854,"id":"chatcmpl-mock-1","model":"gpt-4o-mini","object":"chat.completion","system_fingerprint":"fp_mock","usage":{"completion_tokens":3,"prompt_tokens":17,"total_tokens":20}}"#;

/// An OpenAI chat completion as the API writes it, with ~2 KB of text (escapes included).
fn openai_long() -> String {
    let text = "The quick brown fox jumps over the lazy dog, then writes some code:\\n```rust\\nfn main() { println!(\\\"hi\\\"); }\\n```\\n".repeat(16);
    format!(
        r#"{{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}","refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}}"#
    )
}

/// An Anthropic message as the API writes it.
const ANTHROPIC: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! How can I help you today? I can read code, explain it, and write more of it."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":25,"service_tier":"standard"}}"#;

fn read(headers: &HeaderMap, body: &[u8]) -> Usage {
    let mut s = Sniffer::for_response(StatusCode::OK, headers).expect("a JSON answer is read");
    s.feed(body);
    s.finish()
}

fn bench(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let long = openai_long();
    let mut g = c.benchmark_group("usage");
    for (name, body) in [
        ("mock_331B", MOCK.as_bytes()),
        ("openai_2KB", long.as_bytes()),
        ("anthropic", ANTHROPIC.as_bytes()),
    ] {
        // Every answer here has its tokens and model: a reader that lost them would be
        // measured doing less.
        let usage = read(&headers, body);
        assert!(
            usage.input_tokens.is_some() && usage.response_model.is_some(),
            "{name}: {usage:?}"
        );
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| read(&headers, std::hint::black_box(body)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
