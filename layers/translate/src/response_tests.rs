use serde_json::{json, Value};

use super::*;

fn anthropic(v: Value) -> MessagesResponse {
    serde_json::from_value(v).unwrap()
}

fn openai(v: Value) -> ChatCompletion {
    serde_json::from_value(v).unwrap()
}

#[test]
fn messages_to_chat_response_maps_everything() {
    let m = anthropic(json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "EqQB"},
            {"type": "text", "text": "Checking the weather."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 20}
    }));
    let c = serde_json::to_value(messages_to_chat_response(m, false)).unwrap();
    let msg = &c["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], "Checking the weather.");
    assert_eq!(msg["reasoning_content"], "Let me look.");
    assert_eq!(
        msg["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Let me look.", "signature": "EqQB"}])
    );
    assert_eq!(
        msg["tool_calls"],
        json!([{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(
        c["usage"],
        json!({"prompt_tokens": 105, "completion_tokens": 20, "total_tokens": 125, "prompt_tokens_details": {"cached_tokens": 90}})
    );
}

#[test]
fn stop_reasons() {
    for (anthropic, chat) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        assert_eq!(
            StopReason::from_anthropic(anthropic).chat(),
            chat,
            "{anthropic}"
        );
    }
    for (chat, anthropic) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
    ] {
        assert_eq!(StopReason::from_chat(chat).anthropic(), anthropic, "{chat}");
    }
}

#[test]
fn chat_to_messages_response_maps_everything() {
    let c = openai(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen3:8b",
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
            "content": "Partial", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1]}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107, "prompt_tokens_details": {"cached_tokens": 64}}
    }));
    let m = serde_json::to_value(chat_to_messages_response(c).unwrap()).unwrap();
    assert_eq!(
        m,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "qwen3:8b",
            "content": [
                {"type": "thinking", "thinking": "think", "signature": ""},
                {"type": "text", "text": "Partial"},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1]}}
            ],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 36, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64}})
    );
    let bad = openai(
        json!({"id": "x", "choices": [{"message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}}]}),
    );
    assert!(matches!(
        chat_to_messages_response(bad),
        Err(TranslateError::InvalidUpstream { .. })
    ));
}

#[test]
fn vllm_stop_string_is_a_stop_sequence() {
    let c = openai(
        json!({"id": "x", "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "END",
        "message": {"role": "assistant", "content": "a"}}]}),
    );
    let m = chat_to_messages_response(c).unwrap();
    assert_eq!(m.stop_reason.as_deref(), Some("stop_sequence"));
    assert_eq!(m.stop_sequence.as_deref(), Some("END"));
}

#[test]
fn responses_objects() {
    let c = openai(
        json!({"id": "chatcmpl-9", "created": 5, "model": "llama3", "choices": [{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "Hello", "reasoning_content": "hm",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 2}}}),
    );
    let r = serde_json::to_value(chat_to_responses_response(c).unwrap()).unwrap();
    assert_eq!(r["id"], "resp_chatcmpl-9");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(
        r["output"][0],
        json!({"type": "reasoning", "id": "rs_chatcmpl-9_1", "summary": [{"type": "summary_text", "text": "hm"}]})
    );
    assert_eq!(r["output"][1]["type"], "message");
    assert_eq!(
        r["output"][1]["content"],
        json!([{"type": "output_text", "text": "Hello", "annotations": []}])
    );
    assert_eq!(
        r["output"][2],
        json!({"type": "function_call", "id": "fc_chatcmpl-9_3", "call_id": "call_1", "name": "f", "arguments": "{}", "status": "completed"})
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
               "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 7})
    );
}

/// A Responses client talking to Anthropic keeps its thinking across turns: the signature
/// rides in `encrypted_content` and comes back as a signed thinking block.
#[test]
fn signed_reasoning_round_trips_through_responses() {
    let m = anthropic(json!({"id": "msg_1", "model": "claude", "content": [
        {"type": "thinking", "thinking": "plan", "signature": "SIG=="},
        {"type": "redacted_thinking", "data": "ENC"},
        {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}));
    let r = messages_to_responses_response(m, false);
    let mut input: Vec<Value> = r
        .output
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    input.push(json!({"type": "function_call_output", "call_id": "toolu_1", "output": "a"}));
    let req = crate::responses_to_messages(
        serde_json::from_value(
            json!({"model": "claude", "input": input, "reasoning": {"effort": "low"}}),
        )
        .unwrap(),
    )
    .unwrap();
    let v = serde_json::to_value(&req.messages[0]).unwrap();
    assert_eq!(
        v["content"],
        json!([{"type": "thinking", "thinking": "plan", "signature": "SIG=="},
               {"type": "redacted_thinking", "data": "ENC"},
               {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}])
    );
}

#[test]
fn json_tool_call_is_the_text() {
    let m = anthropic(json!({"id": "msg_1", "model": "claude", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"a": "b"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}));
    let c = serde_json::to_value(messages_to_chat_response(m, true)).unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "{\"a\":\"b\"}");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert!(c["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn translate_response_on_bytes() {
    let mut plan = Plan::new(Format::Messages, Format::ChatCompletions);
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let out: Value = serde_json::from_slice(&translate_response(&plan, body).unwrap()).unwrap();
    assert_eq!(out["content"], json!([{"type": "text", "text": "hi"}]));
    assert_eq!(out["stop_reason"], "end_turn");
    plan.client = Format::Responses;
    let out: Value = serde_json::from_slice(&translate_response(&plan, body).unwrap()).unwrap();
    assert_eq!(out["status"], "completed");
    assert!(matches!(
        translate_response(&plan, b"not json"),
        Err(TranslateError::InvalidUpstream { .. })
    ));
}

/// An answer of more values than a tree is built of is refused, naming the bound; with one
/// value fewer it is translated.
#[test]
fn an_answer_of_too_many_values_is_refused() {
    let plan = Plan::new(Format::Messages, Format::ChatCompletions);
    let max = portcullis_core::json_skim::MAX_VALUES;
    // The answer's own values: id, object, created, model, choices, its item, index, message,
    // role, content, finish_reason, and `logprobs_ids`: 12; the rest its items.
    let answer = |n: usize| {
        format!(
            r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"logprobs_ids":[{}0]}}"#,
            "0,".repeat(n - 13)
        )
    };
    let out = translate_response(&plan, answer(max).as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["content"], json!([{"type": "text", "text": "hi"}]));
    let e = translate_response(&plan, answer(max + 1).as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("more than 262144 JSON values"),
        "{e}"
    );
}

/// Anthropic's web search answer: text blocks, some citing pages. OpenAI clients get
/// `url_citation` annotations over the cited text, indices in characters.
fn cited_answer() -> MessagesResponse {
    anthropic(json!({
        "id": "msg_cite", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "Zürich weather"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Über Zürich: "},
            {"type": "text", "text": "it is sunny today", "citations": [
                {"type": "web_search_result_location", "url": "https://wx.example/zh", "title": "Wetter", "encrypted_index": "Eo8B", "cited_text": "sunny"},
                {"type": "web_search_result_location", "url": "https://news.example/a", "title": "News", "encrypted_index": "Eo8C", "cited_text": "sunny"}
            ]},
            {"type": "text", "text": ", and "},
            {"type": "text", "text": "warm", "citations": [
                {"type": "char_location", "document_index": 0, "document_title": "notes", "start_char_index": 0, "end_char_index": 4, "cited_text": "warm"},
                {"type": "search_result_location", "source": "https://kb.example/w", "title": "KB", "search_result_index": 0, "start_block_index": 0, "end_block_index": 0, "cited_text": "warm"}
            ]},
            {"type": "text", "text": "."}
        ],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20}
    }))
}

#[test]
fn web_citations_become_url_citation_annotations() {
    // "Über Zürich: " is 13 characters (15 bytes): indices count characters.
    let c = serde_json::to_value(messages_to_chat_response(cited_answer(), false)).unwrap();
    let msg = &c["choices"][0]["message"];
    assert_eq!(msg["content"], "Über Zürich: it is sunny today, and warm.");
    assert_eq!(
        msg["annotations"],
        json!([
            {"type": "url_citation", "url_citation": {"start_index": 13, "end_index": 30, "url": "https://wx.example/zh", "title": "Wetter"}},
            {"type": "url_citation", "url_citation": {"start_index": 13, "end_index": 30, "url": "https://news.example/a", "title": "News"}},
            {"type": "url_citation", "url_citation": {"start_index": 36, "end_index": 40, "url": "https://kb.example/w", "title": "KB"}}
        ]),
        "a document citation (char_location) has no OpenAI form and is left out"
    );
    let text: Vec<char> = msg["content"].as_str().unwrap().chars().collect();
    assert_eq!(text[13..30].iter().collect::<String>(), "it is sunny today");

    let r = serde_json::to_value(messages_to_responses_response(cited_answer(), false)).unwrap();
    assert_eq!(r["output"].as_array().unwrap().len(), 1, "{r}");
    let part = &r["output"][0]["content"][0];
    assert_eq!(part["text"], "Über Zürich: it is sunny today, and warm.");
    assert_eq!(
        part["annotations"],
        json!([
            {"type": "url_citation", "start_index": 13, "end_index": 30, "url": "https://wx.example/zh", "title": "Wetter"},
            {"type": "url_citation", "start_index": 13, "end_index": 30, "url": "https://news.example/a", "title": "News"},
            {"type": "url_citation", "start_index": 36, "end_index": 40, "url": "https://kb.example/w", "title": "KB"}
        ])
    );
}

#[test]
fn an_answer_without_citations_has_no_annotations_field() {
    let m = anthropic(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "hi", "citations": null}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 1, "output_tokens": 1}
    }));
    let c = serde_json::to_value(messages_to_chat_response(m, false)).unwrap();
    assert!(
        c["choices"][0]["message"].get("annotations").is_none(),
        "{c}"
    );
}
