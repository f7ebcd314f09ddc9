use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn chat(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn to_msgs(v: Value) -> Value {
    serde_json::to_value(chat_to_messages(chat(v)).unwrap()).unwrap()
}

fn refused(r: Result<impl std::fmt::Debug, TranslateError>, field: &str) {
    match r {
        Err(TranslateError::Unsupported { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected {field} to be refused, got {other:?}"),
    }
}

#[test]
fn chat_to_messages_maps_the_conversation() {
    let out = to_msgs(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"n\":1}"}},
                {"id": "functions.look:2", "type": "function", "function": {"name": "look", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "functions.look:2", "content": [{"type": "text", "text": "a dog"}]},
            {"role": "user", "content": "Thanks"}
        ],
        "max_completion_tokens": 300,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "look", "description": "Look", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}, "strict": true}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "user": "u-42",
        "seed": 7,
        "store": true,
        "metadata": {"k": "v"},
        "service_tier": "auto",
        "x_vendor": {"keep": true}
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "look", "input": {"n": 1}},
                    {"type": "tool_use", "id": "functions_look_2", "name": "look", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                    {"type": "tool_result", "tool_use_id": "functions_look_2", "content": [{"type": "text", "text": "a dog"}]},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "max_tokens": 300,
            "temperature": 1.0,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "tools": [{"name": "look", "description": "Look", "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-42"}
        }),
        "a field Anthropic does not define (x_vendor) is left out: Anthropic refuses it"
    );
}

#[test]
fn defaults_and_reasoning_effort() {
    let out = to_msgs(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
    assert!(out.get("system").is_none() && out.get("thinking").is_none());

    let out = to_msgs(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "high", "temperature": 0.2, "top_p": 0.5}),
    );
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 16384})
    );
    assert_eq!(
        out["max_tokens"],
        4096 + 16384,
        "the budget comes on top of the answer's cap"
    );
    assert!(
        out.get("temperature").is_none(),
        "Anthropic takes only temperature 1 with thinking"
    );
    assert!(out.get("top_p").is_none());

    for (effort, budget) in [
        ("low", Some(1024)),
        ("medium", Some(4096)),
        ("minimal", None),
    ] {
        assert_eq!(thinking_budget(effort).unwrap(), budget);
    }
    refused(
        chat_to_messages(chat(
            json!({"model": "m", "messages": [], "reasoning_effort": "max"}),
        )),
        "reasoning_effort",
    );
}

/// The first users' setup: a chat client, model params in Anthropic's own shape.
#[test]
fn thinking_param_passes_and_turns_off_after_unsigned_tool_use() {
    let mut req = json!({"model": "claude-opus-4-1", "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 4096}, "temperature": 0.7});
    let out = to_msgs(req.clone());
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096})
    );
    assert_eq!(out["max_tokens"], 8192);
    assert!(out.get("temperature").is_none());

    req["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    ]);
    let out = to_msgs(req.clone());
    assert!(out.get("thinking").is_none(), "{out}");
    assert_eq!(out["temperature"], 0.7);

    // ... unless the client sent the signed thinking back.
    req["messages"][1]["thinking_blocks"] =
        json!([{"type": "thinking", "thinking": "hmm", "signature": "sig"}]);
    let out = to_msgs(req);
    assert_eq!(out["thinking"]["type"], "enabled");
    assert_eq!(
        out["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "hmm", "signature": "sig"})
    );
}

#[test]
fn response_formats() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let mut r = base.clone();
    r["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer",
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}});
    let out = to_msgs(r.clone());
    assert_eq!(out["tools"][0]["name"], JSON_TOOL);
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["a"]["type"],
        "string"
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": JSON_TOOL})
    );
    let (_, plan) = translate_request(
        Format::ChatCompletions,
        Format::Messages,
        r.to_string().as_bytes(),
    )
    .unwrap();
    assert!(plan.json_tool);

    r["reasoning_effort"] = json!("low");
    let out = to_msgs(r);
    assert!(
        out.get("tool_choice").is_none(),
        "no forced tool with thinking"
    );
    assert!(out["system"].as_str().unwrap().contains(JSON_TOOL));

    let mut r = base.clone();
    r["response_format"] = json!({"type": "json_object"});
    assert!(to_msgs(r)["system"].as_str().unwrap().contains("JSON"));

    let mut r = base;
    r["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "l", "schema": {"type": "array"}}});
    refused(
        chat_to_messages(chat(r)),
        "response_format.json_schema.schema",
    );
}

#[test]
fn what_anthropic_cannot_carry_is_refused() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut r = base.clone();
        r[k] = v;
        chat_to_messages(chat(r))
    };
    refused(with("n", json!(3)), "n");
    refused(with("logprobs", json!(true)), "logprobs");
    refused(with("frequency_penalty", json!(0.5)), "frequency_penalty");
    refused(with("logit_bias", json!({"50256": -100})), "logit_bias");
    refused(with("modalities", json!(["text", "audio"])), "modalities");
    // Legacy functions are carried as tools (crate::legacy), not refused.
    let legacy = with("functions", json!([{"name": "f"}])).unwrap();
    assert_eq!(legacy.tools.unwrap()[0].name, "f");
    assert!(with("n", json!(1)).is_ok());
    assert!(with("presence_penalty", json!(0)).is_ok());

    let msgs = |m: Value| {
        let mut r = base.clone();
        r["messages"] = m;
        chat_to_messages(chat(r))
    };
    refused(
        msgs(
            json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]),
        ),
        "messages[0].content[0]",
    );
    refused(
        msgs(
            json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
        ),
        "messages[0].content[0]",
    );
    refused(
        msgs(json!([{"role": "function", "name": "f", "content": "x"}])),
        "messages[0]",
    );
    refused(
        msgs(
            json!([{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]),
        ),
        "messages[0].tool_calls[0].function.arguments",
    );
    let e = with("n", json!(2)).unwrap_err();
    assert!(e.to_string().contains("anthropic messages"), "{e}");
}

#[test]
fn pdf_files_become_documents() {
    let out = to_msgs(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}}]}]}),
    );
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}, "title": "a.pdf"})
    );
}

fn msgs_req(v: Value) -> MessagesRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn messages_to_chat_maps_the_conversation() {
    let out = serde_json::to_value(
        messages_to_chat(msgs_req(json!({
            "model": "qwen3",
            "max_tokens": 1000,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Look"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {"x": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                        {"type": "text", "text": "partial"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}
                    ]},
                    {"type": "text", "text": "and?"}
                ]}
            ],
            "temperature": 0.3,
            "top_k": 40,
            "stop_sequences": ["\n\nHuman:"],
            "stream": true,
            "tools": [{"name": "shot", "description": "Screenshot", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "metadata": {"user_id": "u1"}
        })))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({
            "model": "qwen3",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Look"},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "shot", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: partial"},
                {"role": "user", "content": [
                    {"type": "text", "text": "and?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
                ]}
            ],
            "max_tokens": 1000,
            "temperature": 0.3,
            "stop": ["\n\nHuman:"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "shot", "description": "Screenshot", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "reasoning_effort": "high",
            "user": "u1",
            "top_k": 40
        })
    );
}

#[test]
fn what_chat_upstreams_cannot_carry_is_refused() {
    let doc = msgs_req(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}}]}]}),
    );
    refused(messages_to_chat(doc), "messages[0].content[0]");
    let video = msgs_req(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "video", "source": {"url": "x"}}]}]}),
    );
    refused(messages_to_chat(video), "messages[0].content[1]");
    let mcp =
        msgs_req(json!({"model": "m", "max_tokens": 10, "messages": [], "mcp_servers": [{}]}));
    refused(messages_to_chat(mcp), "mcp_servers");
}

#[test]
fn documents_search_results_and_server_tool_history_reach_chat() {
    let req = msgs_req(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [
            {"type": "document", "title": "Notes", "context": "trusted",
             "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."}},
            {"type": "document", "title": "r.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "search_result", "source": "https://docs.example/api", "title": "API",
             "content": [{"type": "text", "text": "Port 8764."}]},
            {"type": "text", "text": "Which port?"}
        ]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "8764."}
        ]},
        {"role": "user", "content": "thanks"}
    ]}));
    let out = serde_json::to_value(messages_to_chat(req).unwrap()).unwrap();
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "Notes\ntrusted\nThe sky is blue."},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "r.pdf"}},
            {"type": "text", "text": "API\nhttps://docs.example/api\nPort 8764."},
            {"type": "text", "text": "Which port?"}
        ])
    );
    // What Anthropic's servers ran is left out; the answer built on it stays.
    assert_eq!(
        out["messages"][1],
        json!({"role": "assistant", "content": "8764."})
    );
    // A block of a known type with a field missing is the client's error, not a new type.
    let bad = msgs_req(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text"}]}]}));
    let e = messages_to_chat(bad).unwrap_err();
    assert!(
        matches!(&e, TranslateError::InvalidRequest { message, .. } if message.contains("messages[0].content[0]")),
        "{e:?}"
    );
}

#[test]
fn a_system_message_within_the_conversation_stays_in_place_for_chat() {
    // Claude Code 2.1 sends one after the user's turn (the agent types it may start).
    let req = msgs_req(
        json!({"model": "m", "max_tokens": 10, "system": "You are Claude Code.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "system", "content": "Available agent types: ..."}
        ]}),
    );
    let out = serde_json::to_value(messages_to_chat(req).unwrap()).unwrap();
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "You are Claude Code."},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Available agent types: ..."}
        ])
    );
    let image = msgs_req(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "system",
        "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}),
    );
    refused(messages_to_chat(image), "messages[0].content[0]");
}

#[test]
fn what_only_anthropic_runs_is_left_out_for_chat_upstreams() {
    // As Claude Code sends every request: context management, beside its own tools; a
    // server tool is offered by other clients. Neither can a chat upstream run; the
    // conversation and the client's own tools go on.
    let req = msgs_req(json!({"model": "m", "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "tools": [
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "Bash", "description": "Run", "input_schema": {"type": "object"}}
    ]}));
    let out = serde_json::to_value(messages_to_chat(req).unwrap()).unwrap();
    assert!(out.get("context_management").is_none(), "{out}");
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bash"]);
}

fn resp_req(v: Value) -> ResponsesRequest {
    serde_json::from_value(v).unwrap()
}

#[test]
fn responses_to_chat_maps_items() {
    let out = serde_json::to_value(
        responses_to_chat(resp_req(json!({
            "model": "llama3",
            "instructions": "You are Codex.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "fix it"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}], "encrypted_content": "gAAA"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running."}]},
                {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "a b"}
            ],
            "tools": [{"type": "function", "name": "shell", "description": "Run", "parameters": {"type": "object"}, "strict": false}],
            "tool_choice": {"type": "function", "name": "shell"},
            "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "reasoning": {"effort": "low", "summary": "auto"},
            "max_output_tokens": 500,
            "stream": true,
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "parallel_tool_calls": true,
            "prompt_cache_key": "k"
        })))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({
            "model": "llama3",
            "messages": [
                {"role": "system", "content": "You are Codex."},
                {"role": "user", "content": [
                    {"type": "text", "text": "fix it"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
                ]},
                {"role": "assistant", "content": "Running.", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\":\"ls\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "a b"}
            ],
            "max_tokens": 500,
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "shell", "description": "Run", "parameters": {"type": "object"}, "strict": false}}],
            "tool_choice": {"type": "function", "function": {"name": "shell"}},
            "parallel_tool_calls": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low"
        })
    );
}

#[test]
fn what_responses_cannot_send_is_refused() {
    let with = |extra: Value| {
        let mut r = json!({"model": "m", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        responses_to_chat(resp_req(r))
    };
    refused(
        with(json!({"previous_response_id": "resp_1"})),
        "previous_response_id",
    );
    refused(with(json!({"conversation": "conv_1"})), "conversation");
    refused(with(json!({"background": true})), "background");
    refused(
        with(json!({"input": [{"type": "item_reference", "id": "x"}]})),
        "input[0]",
    );
    // A file by URL: chat's file parts take data or an id only.
    refused(
        with(
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.example/a.pdf"}]}]}),
        ),
        "input[0].content[0]",
    );
    assert!(with(json!({"background": false, "store": true})).is_ok());
    // A cap on hosted tools, which the target does not run: dropped, not refused.
    let capped = with(json!({"max_tool_calls": 40})).unwrap();
    assert!(!serde_json::to_string(&capped)
        .unwrap()
        .contains("max_tool_calls"));
}

#[test]
fn responses_files_become_chat_file_parts() {
    let input = json!([{"role": "user", "content": [
        {"type": "input_text", "text": "compare"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVB", "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-abc"}
    ]}]);
    let chat = serde_json::to_value(
        responses_to_chat(resp_req(json!({"model": "m", "input": input}))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type": "text", "text": "compare"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVB", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_id": "file-abc"}}
        ])
    );
    // To Anthropic an OpenAI file id means nothing.
    refused(
        responses_to_messages(resp_req(json!({"model": "m", "input": input}))),
        "input[0].content[2]",
    );
}

#[test]
fn openai_only_fields_never_reach_anthropic() {
    // Codex's request metadata, a field OpenAI may add tomorrow, and Anthropic's own
    // `top_k` sent as an extra.
    let out = serde_json::to_value(
        responses_to_messages(resp_req(json!({"model": "m", "input": "hi",
            "client_metadata": {"session_id": "s"}, "prompt_cache_retention": "24h",
            "top_k": 5})))
        .unwrap(),
    )
    .unwrap();
    assert!(out.get("client_metadata").is_none(), "{out}");
    assert!(out.get("prompt_cache_retention").is_none(), "{out}");
    let chat = serde_json::to_value(
        responses_to_chat(resp_req(json!({"model": "m", "input": "hi",
            "client_metadata": {"session_id": "s"}})))
        .unwrap(),
    )
    .unwrap();
    assert!(chat.get("client_metadata").is_none(), "{chat}");
    assert_eq!(out["top_k"], 5, "{out}");
    let out = to_msgs(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}], "brand_new": 1}),
    );
    assert!(out.get("brand_new").is_none(), "{out}");
    assert_eq!(out["mcp_servers"][0]["name"], "x", "{out}");
}

#[test]
fn tools_only_openai_runs_are_left_out_of_translated_responses_requests() {
    // Codex's tools, as it sends them: functions, a namespace of functions (sub-agents) and
    // the hosted web search. The functions go on, to either upstream; the rest is left out.
    let tools = json!([
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": false},
        {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
         "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]},
        {"type": "web_search", "external_web_access": false},
        {"type": "function", "name": "view_image", "parameters": {"type": "object"}}
    ]);
    let req = || resp_req(json!({"model": "m", "input": "hi", "tools": tools.clone()}));
    let chat = serde_json::to_value(responses_to_chat(req()).unwrap()).unwrap();
    let names: Vec<&str> = chat["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exec_command", "view_image"]);
    let msgs = serde_json::to_value(responses_to_messages(req()).unwrap()).unwrap();
    let names: Vec<&str> = msgs["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exec_command", "view_image"]);
}

#[test]
fn chat_web_search_options_become_anthropics_web_search() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "news?"}],
        "web_search_options": {"search_context_size": "high",
            "user_location": {"type": "approximate", "approximate": {"country": "GB", "city": "London"}}}
    }))
    .unwrap();
    let out = serde_json::to_value(chat_to_messages(req).unwrap()).unwrap();
    assert_eq!(
        out["tools"],
        json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5,
                "user_location": {"type": "approximate", "country": "GB", "city": "London"}}])
    );
    assert!(out.get("web_search_options").is_none(), "{out}");
}

#[test]
fn chat_allowed_tools_send_only_those_tools() {
    let tool = |n: &str| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object"}}});
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [tool("a"), tool("b"), tool("c")],
        "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
            "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "c"}}]}}
    }))
    .unwrap();
    let out = serde_json::to_value(chat_to_messages(req).unwrap()).unwrap();
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(out["tool_choice"]["type"], "any");
}

#[test]
fn custom_tools_and_their_calls_become_one_string_functions() {
    let req = || {
        resp_req(json!({
            "model": "m",
            "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files",
                       "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}}],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
            "input": [
                {"role": "user", "content": "add a.txt"},
                {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch",
                 "input": "*** Begin Patch\n*** End Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"}
            ]
        }))
    };
    let chat = serde_json::to_value(responses_to_chat(req()).unwrap()).unwrap();
    let f = &chat["tools"][0]["function"];
    assert_eq!(f["name"], "apply_patch");
    assert_eq!(f["parameters"]["required"], json!(["input"]));
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "apply_patch"}})
    );
    let call = &chat["messages"][1]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"input": "*** Begin Patch\n*** End Patch"}));
    assert_eq!(
        chat["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "Done!"})
    );

    let msgs = serde_json::to_value(responses_to_messages(req()).unwrap()).unwrap();
    assert_eq!(
        msgs["tools"][0]["input_schema"]["properties"]["input"]["type"],
        "string"
    );
    assert_eq!(
        msgs["tool_choice"],
        json!({"type": "tool", "name": "apply_patch"})
    );
    let use_block = &msgs["messages"][1]["content"][0];
    assert_eq!(use_block["type"], "tool_use");
    assert_eq!(
        use_block["input"],
        json!({"input": "*** Begin Patch\n*** End Patch"})
    );
    let (_, plan) = translate_request(
        Format::Responses,
        Format::Messages,
        &serde_json::to_vec(&req()).unwrap(),
    )
    .unwrap();
    assert_eq!(plan.custom_tools, ["apply_patch"]);
}

#[test]
fn responses_to_messages_keeps_signed_reasoning_and_files() {
    let out = serde_json::to_value(
        responses_to_messages(resp_req(json!({
            "model": "claude-sonnet-4-5",
            "input": [
                {"role": "user", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,JVB", "filename": "r.pdf"}]},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}], "encrypted_content": format!("{SIGNATURE_PREFIX}SIG")},
                {"type": "function_call", "call_id": "toolu_9", "name": "read", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "toolu_9", "output": "done"}
            ],
            "reasoning": {"effort": "medium"}
        })))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(out["messages"][0]["content"][0]["type"], "document");
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "plan", "signature": "SIG"},
               {"type": "tool_use", "id": "toolu_9", "name": "read", "input": {}}])
    );
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096}),
        "kept: the thinking went back"
    );
    assert_eq!(out["messages"][2]["content"][0]["type"], "tool_result");
}

// === round trips ===

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?\"\\\\\n]{1,20}"
}

fn id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]{1,12}"
}

/// One exchange: a user text, then an assistant answer (text, tool calls or both), then
/// results for its tool calls.
fn exchange() -> impl Strategy<Value = Vec<ChatMessage>> {
    (
        text(),
        proptest::option::of(text()),
        proptest::collection::vec((id(), "[a-z_]{1,8}", text(), text()), 0..3),
    )
        .prop_filter("an assistant turn says something", |(_, t, calls)| {
            t.is_some() || !calls.is_empty()
        })
        .prop_map(|(u, a, calls)| {
            let mut out = vec![ChatMessage::User {
                content: ChatContent::Text(u),
                name: None,
            }];
            let mut seen = std::collections::HashSet::new();
            let calls: Vec<_> = calls
                .into_iter()
                .filter(|c| seen.insert(c.0.clone()))
                .collect();
            out.push(ChatMessage::Assistant(AssistantMessage {
                content: a.map(ChatContent::Text),
                tool_calls: (!calls.is_empty()).then(|| {
                    calls
                        .iter()
                        .map(|(id, name, arg, _)| ToolCall {
                            id: id.clone(),
                            kind: "function".into(),
                            custom: None,
                            function: FunctionCall {
                                name: name.clone(),
                                arguments: json!({ "q": arg }).to_string(),
                            },
                        })
                        .collect()
                }),
                ..AssistantMessage::default()
            }));
            for (id, _, _, result) in calls {
                out.push(ChatMessage::Tool {
                    content: ChatContent::Text(result),
                    tool_call_id: id,
                });
            }
            out
        })
}

fn conversation() -> impl Strategy<Value = ChatRequest> {
    (
        proptest::option::of(text()),
        proptest::collection::vec(exchange(), 1..4),
        text(),
        1u32..10_000,
    )
        .prop_map(|(system, exchanges, last, max)| {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(ChatMessage::System {
                    content: ChatContent::Text(s),
                    name: None,
                });
            }
            messages.extend(exchanges.into_iter().flatten());
            messages.push(ChatMessage::User {
                content: ChatContent::Text(last),
                name: None,
            });
            ChatRequest {
                model: "m".into(),
                messages,
                max_tokens: Some(max),
                ..ChatRequest::default()
            }
        })
}

proptest! {
    /// chat -> Messages -> chat gives the same conversation back.
    #[test]
    fn chat_round_trips_through_messages(req in conversation()) {
        let there = chat_to_messages(req.clone()).unwrap();
        // And it survives the wire.
        let wire: MessagesRequest = serde_json::from_slice(&serde_json::to_vec(&there).unwrap()).unwrap();
        prop_assert_eq!(&wire, &there);
        let back = messages_to_chat(wire).unwrap();
        prop_assert_eq!(back.messages, req.messages);
        prop_assert_eq!(back.max_tokens, req.max_tokens);
    }

    /// Messages -> chat -> Messages gives the same request back.
    #[test]
    fn messages_round_trip_through_chat(req in conversation()) {
        let msgs = chat_to_messages(req).unwrap();
        let back = chat_to_messages(messages_to_chat(msgs.clone()).unwrap()).unwrap();
        prop_assert_eq!(back, msgs);
    }

    /// No request body makes translation panic.
    #[test]
    fn arbitrary_json_never_panics(body in "\\PC{0,200}") {
        for (c, u) in [(Format::ChatCompletions, Format::Messages), (Format::Messages, Format::ChatCompletions),
                       (Format::Responses, Format::ChatCompletions), (Format::Responses, Format::Messages)] {
            let _ = translate_request(c, u, body.as_bytes());
        }
    }
}

/// Anthropic's structured outputs (`output_config.format`; the beta's `output_format`) reach a
/// chat upstream as its `response_format`, the rest of `output_config` (effort) left out.
#[test]
fn structured_outputs_become_the_chat_response_format() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    let base = |extra: Value| {
        let mut v = json!({"model": "m", "max_tokens": 64,
                           "messages": [{"role": "user", "content": "a city"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        messages_to_chat(msgs_req(v))
    };
    for extra in [
        json!({"output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}}}),
        json!({"output_format": {"type": "json_schema", "schema": schema}}),
    ] {
        let out = serde_json::to_value(base(extra.clone()).unwrap()).unwrap();
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
            "{extra}"
        );
        assert!(out.get("output_config").is_none() && out.get("output_format").is_none());
    }
    // Effort alone: no response format.
    let out =
        serde_json::to_value(base(json!({"output_config": {"effort": "high"}})).unwrap()).unwrap();
    assert!(out.get("response_format").is_none(), "{out}");
    refused(
        base(json!({"output_config": {"format": {"type": "yaml"}}})),
        "output_config.format",
    );
    let e = base(json!({"output_format": {"type": "json_schema"}})).unwrap_err();
    assert!(
        matches!(e, TranslateError::InvalidRequest { .. })
            && e.to_string().contains("output_format.schema"),
        "{e}"
    );
}
