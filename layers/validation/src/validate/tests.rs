//! Each rule at each level: a body that breaks one rule must pass below the rule's level and
//! fail from it upwards, naming the field.

use serde_json::{json, Value};

use super::*;

const LEVELS: [Level; 3] = Level::ALL;

fn run(route: Route, level: Level, body: &Value) -> Result<RequestMeta, InvalidRequest> {
    validate(route, level, body.to_string().as_bytes())
}

/// `body` passes at every level.
#[track_caller]
fn valid(route: Route, body: Value) {
    for level in LEVELS {
        if let Err(e) = run(route, level, &body) {
            panic!("{route} at {level} rejected {body}: {e}");
        }
    }
}

/// `body` passes below `from` and fails at `from` and above, at `field`, with a message that
/// contains `message`.
#[track_caller]
fn invalid_from(route: Route, from: Level, body: Value, field: &str, message: &str) {
    for level in LEVELS {
        let result = run(route, level, &body);
        if level < from {
            if let Err(e) = result {
                panic!("{route} at {level} should accept {body}, got: {e}");
            }
        } else {
            let e = match result {
                Ok(_) => panic!("{route} at {level} should reject {body}"),
                Err(e) => e,
            };
            assert_eq!(e.field, field, "{route} at {level}: {e}");
            assert!(
                e.message.contains(message),
                "{route} at {level}: {e:?} should contain {message:?}"
            );
        }
    }
}

/// `base` with top-level `key` set to `value`.
fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn chat_with_messages(messages: Value) -> Value {
    with(chat(), "messages", messages)
}

fn completion() -> Value {
    json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"})
}

fn embedding() -> Value {
    json!({"model": "text-embedding-3-small", "input": "hello"})
}

fn anthropic() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}]
    })
}

fn base(route: Route) -> Value {
    match route {
        Route::ChatCompletions => chat(),
        Route::Completions => completion(),
        Route::Embeddings => embedding(),
        Route::Messages => anthropic(),
    }
}

// === lenient: every route, every level ===

#[test]
fn minimal_bodies_pass_everywhere_and_report_meta() {
    for route in Route::ALL {
        valid(route, base(route));
        let meta = run(route, Level::Strict, &base(route)).unwrap();
        assert_eq!(meta.model.as_deref(), base(route)["model"].as_str());
        assert!(!meta.stream);
    }
    let meta = run(
        Route::ChatCompletions,
        Level::Strict,
        &with(chat(), "stream", json!(true)),
    );
    assert!(meta.unwrap().stream);
}

#[test]
fn body_must_be_a_json_object() {
    for route in Route::ALL {
        for level in LEVELS {
            let e = validate(route, level, b"").unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                ("", "request body is empty; expected a JSON object")
            );
            let e = validate(route, level, b"{\"model\": \"x\",}").unwrap_err();
            assert_eq!(e.field, "");
            assert!(
                e.message.starts_with("request body is not valid JSON: ")
                    && e.message.contains("line 1 column 15"),
                "{e}"
            );
            let e = validate(route, level, b"[1, 2]").unwrap_err();
            assert_eq!(
                e.to_string(),
                "request body must be a JSON object, got an array"
            );
            let e = validate(route, level, b"\"model\"").unwrap_err();
            assert_eq!(
                e.to_string(),
                "request body must be a JSON object, got a string"
            );
        }
    }
}

#[test]
fn model_is_a_non_empty_string_at_every_level() {
    for route in Route::ALL {
        let mut body = base(route);
        body.as_object_mut().unwrap().remove("model");
        invalid_from(route, Level::Lenient, body, "model", "is required");
        invalid_from(
            route,
            Level::Lenient,
            with(base(route), "model", json!(4)),
            "model",
            "must be a string, got a number",
        );
        invalid_from(
            route,
            Level::Lenient,
            with(base(route), "model", json!("")),
            "model",
            "must not be empty",
        );
    }
}

#[test]
fn lenient_checks_nothing_but_model() {
    let body = json!({"model": "m", "messages": 5, "temperature": 99, "whatever": true});
    for route in Route::ALL {
        assert!(run(route, Level::Lenient, &body).is_ok());
        assert!(run(route, Level::Moderate, &body).is_err());
    }
    // A non-boolean stream is not an error at lenient, and does not count as streaming.
    let meta = run(
        Route::ChatCompletions,
        Level::Lenient,
        &with(chat(), "stream", json!("yes")),
    );
    assert!(!meta.unwrap().stream);
}

// === chat completions ===

#[test]
fn chat_messages_must_be_a_non_empty_array_of_objects() {
    let mut body = chat();
    body.as_object_mut().unwrap().remove("messages");
    let r = Route::ChatCompletions;
    invalid_from(r, Level::Moderate, body, "messages", "is required");
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([])),
        "messages",
        "must not be empty",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!("hi")),
        "messages",
        "must be an array of messages, got a string",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": "a"}, "b"])),
        "messages[1]",
        "must be an object, got a string",
    );
}

#[test]
fn chat_roles_are_known() {
    let r = Route::ChatCompletions;
    let body = chat_with_messages(json!([
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "robot", "content": "r"},
    ]));
    invalid_from(
        r,
        Level::Moderate,
        body.clone(),
        "messages[2].role",
        "unknown role",
    );
    let e = run(r, Level::Moderate, &body).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"messages[2].role: unknown role "robot"; expected one of system, developer, user, assistant, tool"#
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"content": "x"}])),
        "messages[0].role",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": 1, "content": "x"}])),
        "messages[0].role",
        "must be a string, got a number",
    );
    valid(
        r,
        chat_with_messages(json!([
            {"role": "system", "content": "s"},
            {"role": "developer", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": [{"type": "text", "text": "u"}, {"type": "image_url", "image_url": {"url": "https://x"}}], "name": "ann"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "again"},
        ])),
    );
}

#[test]
fn chat_roles_in_errors_are_cut_short() {
    let role = "x".repeat(10_000);
    let e = run(
        Route::ChatCompletions,
        Level::Moderate,
        &chat_with_messages(json!([{"role": role, "content": "c"}])),
    )
    .unwrap_err();
    assert!(e.message.len() < 200, "{}", e.message);
    assert!(
        e.message.contains("\"xxxx") && e.message.contains("..."),
        "{}",
        e.message
    );
}

#[test]
fn chat_content_is_a_string_or_parts_with_a_type() {
    let r = Route::ChatCompletions;
    for role in ["system", "developer", "user", "tool"] {
        invalid_from(
            r,
            Level::Moderate,
            chat_with_messages(json!([{"role": role, "tool_call_id": "c"}])),
            "messages[0].content",
            "is required",
        );
        invalid_from(
            r,
            Level::Moderate,
            chat_with_messages(json!([{"role": role, "content": null, "tool_call_id": "c"}])),
            "messages[0].content",
            "must be a string or an array of content parts, got null",
        );
    }
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": 5}])),
        "messages[0].content",
        "got a number",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(
            json!([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]),
        ),
        "messages[1].content[1].type",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": ["a"]}])),
        "messages[0].content[0]",
        "must be an object",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": [{"type": 1}]}])),
        "messages[0].content[0].type",
        "must be a string",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": "a", "name": 3}])),
        "messages[0].name",
        "must be a string",
    );
}

#[test]
fn chat_assistant_content_may_be_null_only_beside_a_tool_call() {
    let r = Route::ChatCompletions;
    let call =
        json!([{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
    valid(
        r,
        chat_with_messages(json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": call},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "tool_calls": call},
            {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "assistant", "content": null, "refusal": "no"},
            {"role": "assistant", "audio": {"id": "audio_1"}},
        ])),
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "assistant", "content": null}])),
        "messages[0].content",
        "got null",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "assistant"}])),
        "messages[0].content",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(
            json!([{"role": "assistant", "content": null, "tool_calls": {"id": "x"}}]),
        ),
        "messages[0].tool_calls",
        "must be an array of objects, got an object",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "assistant", "content": null, "tool_calls": ["x"]}])),
        "messages[0].tool_calls[0]",
        "must be an object",
    );
}

#[test]
fn chat_tool_call_id_is_typed_at_moderate_and_required_at_strict() {
    let r = Route::ChatCompletions;
    invalid_from(
        r,
        Level::Strict,
        chat_with_messages(json!([{"role": "tool", "content": "x"}])),
        "messages[0].tool_call_id",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "tool", "content": "x", "tool_call_id": 7}])),
        "messages[0].tool_call_id",
        "must be a string",
    );
}

#[test]
fn chat_deprecated_function_role_needs_a_name() {
    let r = Route::ChatCompletions;
    valid(
        r,
        chat_with_messages(json!([{"role": "function", "name": "f", "content": "42"}])),
    );
    valid(
        r,
        chat_with_messages(json!([{"role": "function", "name": "f", "content": null}])),
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "function", "content": "42"}])),
        "messages[0].name",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "function", "name": "f", "content": [1]}])),
        "messages[0].content",
        "must be a string",
    );
}

#[test]
fn chat_numbers_are_in_range() {
    let r = Route::ChatCompletions;
    let cases: &[(&str, Value, &str)] = &[
        (
            "temperature",
            json!(2.01),
            "must be between 0 and 2, got 2.01",
        ),
        ("temperature", json!(-0.5), "between 0 and 2"),
        (
            "temperature",
            json!("0.7"),
            "must be a number, got a string",
        ),
        ("top_p", json!(1.5), "must be between 0 and 1, got 1.5"),
        ("presence_penalty", json!(-2.5), "between -2 and 2"),
        ("frequency_penalty", json!(3), "between -2 and 2"),
        ("n", json!(0), "must be between 1 and 128, got 0"),
        ("n", json!(129), "between 1 and 128"),
        ("n", json!(1.5), "must be an integer, got 1.5"),
        ("max_tokens", json!(0), "must be >= 1, got 0"),
        ("max_tokens", json!(100.0), "must be an integer, got 100.0"),
        (
            "max_tokens",
            json!("100"),
            "must be an integer, got a string",
        ),
        ("max_completion_tokens", json!(-1), "must be >= 1"),
        ("top_logprobs", json!(21), "between 0 and 20"),
        ("seed", json!(1.5), "must be an integer"),
    ];
    for (key, value, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(chat(), key, value.clone()),
            key,
            message,
        );
    }
    let mut body = chat();
    for (key, value) in [
        ("temperature", json!(0)),
        ("top_p", json!(1)),
        ("presence_penalty", json!(-2)),
        ("frequency_penalty", json!(2.0)),
        ("n", json!(128)),
        ("max_tokens", json!(1)),
        ("max_completion_tokens", json!(4096)),
        ("top_logprobs", json!(0)),
        ("seed", json!(-42)),
    ] {
        body = with(body, key, value);
    }
    valid(r, body);
}

#[test]
fn chat_other_fields_have_their_types() {
    let r = Route::ChatCompletions;
    let cases: &[(&str, Value, &str)] = &[
        ("stream", json!("yes"), "must be a boolean, got a string"),
        ("logprobs", json!(1), "must be a boolean"),
        ("parallel_tool_calls", json!("no"), "must be a boolean"),
        ("store", json!(0), "must be a boolean"),
        (
            "stop",
            json!(5),
            "must be a string or an array of strings, got a number",
        ),
        (
            "tools",
            json!({"type": "function"}),
            "must be an array of objects",
        ),
        ("functions", json!("f"), "must be an array of objects"),
        ("tool_choice", json!(1), "must be a string or an object"),
        ("function_call", json!([]), "must be a string or an object"),
        ("response_format", json!("json"), "must be an object"),
        ("stream_options", json!(true), "must be an object"),
        ("metadata", json!([]), "must be an object"),
        ("logit_bias", json!(1), "must be an object"),
        ("user", json!(1), "must be a string"),
        ("reasoning_effort", json!(1), "must be a string"),
        ("modalities", json!("text"), "must be an array of strings"),
    ];
    for (key, value, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(chat(), key, value.clone()),
            key,
            message,
        );
    }
    invalid_from(
        r,
        Level::Moderate,
        with(chat(), "stop", json!(["a", 1])),
        "stop[1]",
        "must be a string, got a number",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(chat(), "tools", json!([1])),
        "tools[0]",
        "must be an object",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(chat(), "response_format", json!({})),
        "response_format.type",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(chat(), "modalities", json!(["text", 1])),
        "modalities[1]",
        "must be a string",
    );
}

#[test]
fn chat_realistic_request_with_nulls_passes_strict() {
    valid(
        Route::ChatCompletions,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What's in this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
            ],
            "temperature": null, "top_p": null, "n": 1, "stream": true,
            "stream_options": {"include_usage": true}, "stop": ["\n\n"],
            "max_completion_tokens": 512, "presence_penalty": 0, "frequency_penalty": 0,
            "logit_bias": null, "logprobs": false, "top_logprobs": null, "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto", "parallel_tool_calls": true,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "seed": 7, "service_tier": "auto", "store": false, "metadata": {"k": "v"},
            "reasoning_effort": "low", "modalities": ["text"], "prediction": null,
            "audio": null, "web_search_options": {}, "verbosity": "low",
            "prompt_cache_key": "k", "safety_identifier": "s"
        }),
    );
}

// === completions ===

#[test]
fn completions_prompt_is_text_or_tokens() {
    let r = Route::Completions;
    let mut body = completion();
    body.as_object_mut().unwrap().remove("prompt");
    invalid_from(r, Level::Moderate, body, "prompt", "is required");
    for prompt in [
        json!(""),
        json!(["a", "b"]),
        json!([1, 2, 3]),
        json!([[1, 2], [3]]),
        json!([]),
    ] {
        valid(r, with(completion(), "prompt", prompt));
    }
    let cases: &[(Value, &str, &str)] = &[
        (
            json!(5),
            "prompt",
            "must be a string or an array of strings or tokens, got a number",
        ),
        (json!(null), "prompt", "got null"),
        (
            json!([true]),
            "prompt[0]",
            "must be a string, a token (integer) or an array of tokens",
        ),
        (
            json!(["a", 1]),
            "prompt[1]",
            "must be a string like the first item, got a number",
        ),
        (
            json!([1, "a"]),
            "prompt[1]",
            "must be a token (integer) like the first item",
        ),
        (
            json!([-1]),
            "prompt[0]",
            "must be a token (an integer >= 0), got -1",
        ),
        (json!([1.5]), "prompt[0]", "got 1.5"),
        (
            json!([[1], [2, "x"]]),
            "prompt[1][1]",
            "must be a token (integer), got a string",
        ),
        (
            json!([[1], 2]),
            "prompt[1]",
            "must be an array of tokens like the first item",
        ),
    ];
    for (prompt, field, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(completion(), "prompt", prompt.clone()),
            field,
            message,
        );
    }
}

#[test]
fn completions_numbers_are_in_range() {
    let r = Route::Completions;
    valid(
        r,
        with(
            with(
                with(completion(), "max_tokens", json!(0)),
                "echo",
                json!(true),
            ),
            "logprobs",
            json!(5),
        ),
    );
    let cases: &[(&str, Value, &str)] = &[
        ("max_tokens", json!(-1), "must be >= 0"),
        ("best_of", json!(21), "between 0 and 20"),
        ("logprobs", json!(6), "between 0 and 5"),
        ("logprobs", json!(true), "must be an integer"),
        ("temperature", json!(2.5), "between 0 and 2"),
        ("n", json!(0), "between 1 and 128"),
        ("echo", json!("x"), "must be a boolean"),
        ("suffix", json!(1), "must be a string"),
        ("stop", json!({}), "must be a string or an array of strings"),
    ];
    for (key, value, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(completion(), key, value.clone()),
            key,
            message,
        );
    }
}

// === embeddings ===

#[test]
fn embeddings_input_is_present_and_non_empty() {
    let r = Route::Embeddings;
    let mut body = embedding();
    body.as_object_mut().unwrap().remove("input");
    invalid_from(r, Level::Moderate, body, "input", "is required");
    for input in [
        json!("a"),
        json!(["a", "b"]),
        json!([1, 2]),
        json!([[1], [2, 3]]),
    ] {
        valid(r, with(embedding(), "input", input));
    }
    let cases: &[(Value, &str, &str)] = &[
        (json!(""), "input", "must not be empty"),
        (json!([]), "input", "must not be empty"),
        (json!(["a", ""]), "input[1]", "must not be empty"),
        (json!([[1], []]), "input[1]", "must not be empty"),
        (json!({"text": "a"}), "input", "got an object"),
        (
            json!(["a", ["b"]]),
            "input[1]",
            "must be a string like the first item, got an array",
        ),
        (json!([[1, -2]]), "input[0][1]", "must be a token"),
    ];
    for (input, field, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(embedding(), "input", input.clone()),
            field,
            message,
        );
    }
}

#[test]
fn embeddings_options_are_checked() {
    let r = Route::Embeddings;
    valid(
        r,
        with(
            with(embedding(), "encoding_format", json!("base64")),
            "dimensions",
            json!(256),
        ),
    );
    invalid_from(
        r,
        Level::Moderate,
        with(embedding(), "encoding_format", json!("hex")),
        "encoding_format",
        r#"unknown encoding format "hex"; expected one of float, base64"#,
    );
    invalid_from(
        r,
        Level::Moderate,
        with(embedding(), "dimensions", json!(0)),
        "dimensions",
        "must be >= 1",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(embedding(), "user", json!(false)),
        "user",
        "must be a string",
    );
}

// === Anthropic messages ===

#[test]
fn anthropic_max_tokens_is_a_required_positive_integer() {
    let r = Route::Messages;
    let mut body = anthropic();
    body.as_object_mut().unwrap().remove("max_tokens");
    invalid_from(r, Level::Moderate, body, "max_tokens", "is required");
    invalid_from(
        r,
        Level::Moderate,
        with(anthropic(), "max_tokens", json!(0)),
        "max_tokens",
        "must be >= 1, got 0",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(anthropic(), "max_tokens", json!("1024")),
        "max_tokens",
        "must be an integer, got a string",
    );
    invalid_from(
        r,
        Level::Moderate,
        with(anthropic(), "max_tokens", json!(null)),
        "max_tokens",
        "must be an integer, got null",
    );
}

#[test]
fn anthropic_messages_have_user_or_assistant_roles_and_content() {
    let r = Route::Messages;
    let msgs = |m: Value| with(anthropic(), "messages", m);
    invalid_from(
        r,
        Level::Moderate,
        msgs(json!([])),
        "messages",
        "must not be empty",
    );
    let e = run(
        r,
        Level::Moderate,
        &msgs(json!([{"role": "system", "content": "s"}])),
    )
    .unwrap_err();
    assert_eq!(e.field, "messages[0].role");
    assert!(e.message.contains("top-level \"system\" field"), "{e}");
    invalid_from(
        r,
        Level::Moderate,
        msgs(json!([{"role": "tool", "content": "s"}])),
        "messages[0].role",
        r#"unknown role "tool"; expected one of user, assistant"#,
    );
    invalid_from(
        r,
        Level::Moderate,
        msgs(json!([{"role": "user"}])),
        "messages[0].content",
        "is required",
    );
    invalid_from(
        r,
        Level::Moderate,
        msgs(json!([{"role": "user", "content": 1}])),
        "messages[0].content",
        "must be a string or an array of content blocks",
    );
    invalid_from(
        r,
        Level::Moderate,
        msgs(json!([{"role": "user", "content": [{"text": "x"}]}])),
        "messages[0].content[0].type",
        "is required",
    );
    valid(
        r,
        msgs(json!([
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "calc", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "4"}]},
            {"role": "assistant", "content": "The answer is"}
        ])),
    );
}

#[test]
fn anthropic_options_are_checked() {
    let r = Route::Messages;
    let cases: &[(&str, Value, &str, &str)] = &[
        (
            "temperature",
            json!(1.5),
            "temperature",
            "must be between 0 and 1, got 1.5",
        ),
        ("top_p", json!(-0.1), "top_p", "between 0 and 1"),
        ("top_k", json!(-1), "top_k", "must be >= 0"),
        ("top_k", json!(0.5), "top_k", "must be an integer"),
        ("stream", json!(1), "stream", "must be a boolean"),
        (
            "stop_sequences",
            json!("END"),
            "stop_sequences",
            "must be an array of strings",
        ),
        (
            "stop_sequences",
            json!(["END", 2]),
            "stop_sequences[1]",
            "must be a string",
        ),
        (
            "system",
            json!(5),
            "system",
            "must be a string or an array of content blocks",
        ),
        (
            "system",
            json!([{"text": "x"}]),
            "system[0].type",
            "is required",
        ),
        ("tools", json!({}), "tools", "must be an array of objects"),
        (
            "tool_choice",
            json!("auto"),
            "tool_choice",
            "must be an object",
        ),
        ("metadata", json!("u"), "metadata", "must be an object"),
        (
            "thinking",
            json!({"budget_tokens": 1024}),
            "thinking.type",
            "is required",
        ),
        ("service_tier", json!(1), "service_tier", "must be a string"),
    ];
    for (key, value, field, message) in cases {
        invalid_from(
            r,
            Level::Moderate,
            with(anthropic(), key, value.clone()),
            field,
            message,
        );
    }
    valid(
        r,
        json!({
            "model": "claude-opus-4-1", "max_tokens": 2048,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "stream": true, "metadata": {"user_id": "u"},
            "tools": [{"name": "calc", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "service_tier": "auto"
        }),
    );
}

// === strict ===

#[test]
fn strict_rejects_unknown_top_level_fields_naming_them() {
    for route in Route::ALL {
        invalid_from(
            route,
            Level::Strict,
            with(base(route), "foo", json!(1)),
            "foo",
            r#"unknown field "foo""#,
        );
        let e = run(
            route,
            Level::Strict,
            &with(with(base(route), "foo", json!(1)), "bar", json!(2)),
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("unknown fields ")
                && e.message.contains("\"foo\"")
                && e.message.contains("\"bar\""),
            "{e}"
        );
    }
    // Fields of the other API are unknown.
    invalid_from(
        Route::ChatCompletions,
        Level::Strict,
        with(chat(), "top_k", json!(5)),
        "top_k",
        r#"unknown field "top_k""#,
    );
    invalid_from(
        Route::Messages,
        Level::Strict,
        with(anthropic(), "n", json!(1)),
        "n",
        r#"unknown field "n""#,
    );
    invalid_from(
        Route::Embeddings,
        Level::Strict,
        with(embedding(), "stream", json!(false)),
        "stream",
        "unknown field",
    );
    // Unknown keys inside messages are not checked.
    valid(
        Route::ChatCompletions,
        chat_with_messages(json!([{"role": "user", "content": "x", "x-extra": 1}])),
    );
}

#[test]
fn strict_names_odd_keys_unambiguously() {
    invalid_from(
        Route::ChatCompletions,
        Level::Strict,
        with(chat(), "", json!(1)),
        r#"[""]"#,
        r#"unknown field """#,
    );
    invalid_from(
        Route::ChatCompletions,
        Level::Strict,
        with(chat(), "a.b", json!(1)),
        r#"["a.b"]"#,
        r#"unknown field "a.b""#,
    );
}

#[test]
fn strict_names_at_most_ten_unknown_fields() {
    let mut body = chat();
    for i in 0..25 {
        body[format!("f{i:02}")] = json!(i);
    }
    let e = run(Route::ChatCompletions, Level::Strict, &body).unwrap_err();
    assert_eq!(e.field, "f00");
    assert!(e.message.ends_with("and 15 more"), "{e}");
    assert!(
        e.message.contains("\"f09\"") && !e.message.contains("\"f10\""),
        "{e}"
    );
}

#[test]
fn strict_rejects_duplicate_keys() {
    let body =
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"model":"gpt-4o-mini"}"#;
    let e = validate(Route::ChatCompletions, Level::Strict, body).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("model", r#"duplicate field "model""#)
    );
    // Below strict, the last one wins, as in most upstream parsers.
    let meta = validate(Route::ChatCompletions, Level::Moderate, body).unwrap();
    assert_eq!(meta.model.as_deref(), Some("gpt-4o-mini"));
}

#[test]
fn every_known_field_is_accepted_by_strict() {
    // The known-field lists include what the rules check, and the must-haves of both APIs.
    for (route, must) in [
        (
            Route::ChatCompletions,
            &[
                "tools",
                "tool_choice",
                "response_format",
                "seed",
                "user",
                "metadata",
                "stop",
                "logprobs",
                "top_logprobs",
                "logit_bias",
                "parallel_tool_calls",
                "service_tier",
                "stream_options",
                "modalities",
                "audio",
                "prediction",
                "reasoning_effort",
                "store",
                "max_completion_tokens",
            ][..],
        ),
        (
            Route::Messages,
            &[
                "stop_sequences",
                "system",
                "thinking",
                "top_k",
                "tools",
                "tool_choice",
                "metadata",
                "service_tier",
                "container",
                "mcp_servers",
            ][..],
        ),
        (
            Route::Embeddings,
            &["dimensions", "encoding_format", "user"][..],
        ),
        (
            Route::Completions,
            &["prompt", "suffix", "echo", "best_of"][..],
        ),
    ] {
        for field in must {
            assert!(known_fields(route).contains(field), "{route} {field}");
        }
        // null passes every moderate rule for optional fields, so each known field can be
        // tried on its own at strict.
        for field in known_fields(route) {
            if ["model", "messages", "max_tokens", "input", "prompt"].contains(field) {
                continue;
            }
            let body = with(base(route), field, Value::Null);
            assert!(run(route, Level::Strict, &body).is_ok(), "{route} {field}");
        }
    }
}

#[test]
fn quoted_cuts_long_values_on_char_boundaries() {
    assert_eq!(quoted("abc"), "\"abc\"");
    let long = "é".repeat(100);
    let q = quoted(&long);
    assert!(
        q.ends_with("\"...") && q.chars().filter(|c| *c == 'é').count() == 64,
        "{q}"
    );
    assert_eq!(key_path(&"k".repeat(65)), format!("{}...", "k".repeat(64)));
    assert_eq!(key_path("foo_bar-1"), "foo_bar-1");
    assert_eq!(key_path(""), r#"[""]"#);
    assert_eq!(key_path("a.b"), r#"["a.b"]"#);
    assert_eq!(key_path("x\n"), r#"["x\n"]"#);
    assert_eq!(quoted("\u{1}"), r#""\u0001""#);
}
