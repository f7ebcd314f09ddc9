use serde_json::{json, Value};

use super::*;

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn o200k(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as u64
}

/// Text of every kind a prompt holds, with how close the estimate must come to
/// `o200k_base` on it (a fraction of the true count).
fn corpus() -> Vec<(&'static str, String, f64)> {
    let json: Vec<String> = [
        include_str!("../../../tests/corpora/messages/accept/01_claude_code_agent_beta.json"),
        include_str!("../../../tests/corpora/responses/accept/11_codex_stateless_reasoning.json"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vec![
        ("README (prose, tables, TOML)", include_str!("../../../README.md").to_string(), 0.10),
        ("Rust source", include_str!("request.rs").to_string(), 0.10),
        ("Python source", include_str!("../../../tests/sdk/check_sdks.py").to_string(), 0.10),
        ("agent JSON", json.concat(), 0.10),
        ("base64 (signatures, encrypted reasoning, images)", base64_sample(3000), 0.10),
        (
            "German",
            "Die Übersetzung zwischen den Schnittstellen erfolgt vollständig, einschließlich \
             der Werkzeugaufrufe und der gestreamten Antworten. Ein Gateway, das Anfragen \
             ablehnt, die der Anbieter bedient hätte, ist kaputt und nicht streng."
                .repeat(20),
            0.10,
        ),
        (
            "Russian",
            "Шлюз должен пропускать всё, что принимает провайдер: новые поля, роли и \
             потоковые ответы. Ошибки возвращаются в форме того API, на котором говорит клиент."
                .repeat(20),
            0.10,
        ),
        (
            "Chinese",
            "网关必须对真实流量透明：客户端发送的、提供方接受的一切请求都必须通过，包括流式响应和工具调用。"
                .repeat(20),
            0.10,
        ),
        (
            "Japanese",
            "ゲートウェイは、プロバイダーが受け付けるすべてのリクエストを通過させなければなりません。"
                .repeat(20),
            0.10,
        ),
    ]
}

/// `n` bytes of a fixed pseudo-random sequence, base64-encoded.
fn base64_sample(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let bytes: Vec<u8> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) as u8
        })
        .collect();
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let v = c
            .iter()
            .enumerate()
            .fold(0u32, |v, (i, b)| v | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=c.len() {
            out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn text_estimate_tracks_o200k_base() {
    assert_eq!(count_text(""), 0);
    assert_eq!(count_text("hello world"), o200k("hello world"));
    let mut report = String::new();
    let mut worst = Vec::new();
    for (name, text, tolerance) in corpus() {
        let (est, real) = (count_text(&text), o200k(&text));
        let off = est as f64 / real as f64 - 1.0;
        report += &format!(
            "{name}: estimate {est}, o200k_base {real} ({:+.1} %)\n",
            off * 100.0
        );
        if off.abs() > tolerance {
            worst.push(name);
        }
    }
    println!("{report}");
    assert!(
        worst.is_empty(),
        "off by more than allowed on {worst:?}:\n{report}"
    );
}

#[test]
fn one_user_message_is_its_text_plus_framing() {
    let b = body(json!({"model": "m", "messages": [{"role": "user", "content": "hello world"}]}));
    // Reply priming + one message's framing + two tokens of text.
    assert_eq!(
        estimate_input_tokens(Format::Messages, &b).unwrap(),
        REPLY_PRIMING + PER_MESSAGE + o200k("hello world")
    );
}

#[test]
fn system_tools_tool_calls_and_images_all_count() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let n0 = estimate_input_tokens(Format::Messages, &body(base.clone())).unwrap();

    let mut with_system = base.clone();
    with_system["system"] = json!("You are a careful assistant who answers briefly.");
    let n1 = estimate_input_tokens(Format::Messages, &body(with_system)).unwrap();
    assert!(n1 >= n0 + 9, "{n1} vs {n0}");

    let mut with_tools = base.clone();
    with_tools["tools"] = json!([{"name": "read_file", "description": "Read a file from disk",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]);
    let n2 = estimate_input_tokens(Format::Messages, &body(with_tools)).unwrap();
    assert!(n2 >= n0 + PER_TOOL + 10, "{n2} vs {n0}");

    let convo = json!({"model": "m", "messages": [
        {"role": "user", "content": "read it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file",
            "input": {"path": "/etc/hosts"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": "127.0.0.1 localhost"}]},
    ]});
    let n3 = estimate_input_tokens(Format::Messages, &body(convo)).unwrap();
    assert!(
        n3 >= REPLY_PRIMING + 3 * PER_MESSAGE + PER_TOOL + 10,
        "{n3}"
    );

    let image = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    ]}]});
    let n4 = estimate_input_tokens(Format::Messages, &body(image)).unwrap();
    assert_eq!(n4, n0 + ATTACHMENT_TOKENS);
}

#[test]
fn claude_code_count_tokens_bodies_are_read() {
    // What Claude Code sends: no max_tokens, a system-role message, tools, thinking, MCP.
    let b = body(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "be brief"},
        ],
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
        "context_management": {"edits": []},
    }));
    let n = estimate_input_tokens(Format::Messages, &b).unwrap();
    assert!(n > 20, "{n}");
}

#[test]
fn responses_input_tokens_are_estimated() {
    let b = body(json!({"model": "gpt-5", "instructions": "Be terse.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello world"}]}]}));
    let n = estimate_input_tokens(Format::Responses, &b).unwrap();
    // instructions (a system message) + the user message.
    assert_eq!(
        n,
        REPLY_PRIMING + 2 * PER_MESSAGE + count_text("Be terse.") + 2
    );
}

#[test]
fn bad_bodies_are_invalid_requests() {
    for b in [&b"not json"[..], b"[1]", br#"{"model":"m"}"#] {
        let e = estimate_input_tokens(Format::Messages, b).unwrap_err();
        assert!(matches!(e, TranslateError::InvalidRequest { .. }), "{e:?}");
    }
}

#[test]
fn answers_are_in_the_clients_shape() {
    let a: Value = serde_json::from_slice(&input_tokens_body(Format::Messages, 7)).unwrap();
    assert_eq!(a, json!({"input_tokens": 7}));
    let r: Value = serde_json::from_slice(&input_tokens_body(Format::Responses, 7)).unwrap();
    assert_eq!(
        r,
        json!({"object": "response.input_tokens", "input_tokens": 7})
    );
}

#[test]
fn responses_count_becomes_anthropic_count_tokens() {
    let b = body(
        json!({"model": "claude-sonnet-4-5", "instructions": "Be terse.",
        "input": "hi", "max_output_tokens": 100, "temperature": 0.2, "stream": true,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}),
    );
    let out: Value =
        serde_json::from_slice(&count_request(Format::Responses, Format::Messages, &b).unwrap())
            .unwrap();
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(out["messages"][0]["role"], "user");
    assert_eq!(out["system"], "Be terse.");
    assert_eq!(out["tools"][0]["name"], "f");
    for k in ["max_tokens", "temperature", "stream"] {
        assert!(out.get(k).is_none(), "{k} left in {out}");
    }
    assert!(count_request(Format::Messages, Format::ChatCompletions, &b).is_err());

    let ans = count_response(
        Format::Responses,
        Format::Messages,
        br#"{"input_tokens":42}"#,
    );
    let ans: Value = serde_json::from_slice(&ans.unwrap()).unwrap();
    assert_eq!(
        ans,
        json!({"object": "response.input_tokens", "input_tokens": 42})
    );
    let e = count_response(Format::Responses, Format::Messages, br#"{"tokens":42}"#).unwrap_err();
    assert!(matches!(e, TranslateError::InvalidUpstream { .. }), "{e:?}");
}

#[test]
fn count_paths() {
    assert_eq!(
        Format::from_count_path("/v1/messages/count_tokens"),
        Some(Format::Messages)
    );
    assert_eq!(
        Format::from_count_path("/v1/responses/input_tokens/"),
        Some(Format::Responses)
    );
    assert_eq!(Format::from_count_path("/v1/messages"), None);
    assert_eq!(Format::ChatCompletions.count_path(), None);
}
