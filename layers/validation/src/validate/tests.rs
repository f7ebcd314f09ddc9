//! Each rule at each level: a body that breaks one rule must pass below the rule's level and
//! fail from it upwards, naming the field. (The request corpora in `tests/corpora/` hold the
//! realistic bodies; these are the rules one by one.)

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

/// Each `(key, value, field, message)`: `base` with `key` set to `value` fails from `from`.
#[track_caller]
fn cases(route: Route, from: Level, base: fn() -> Value, cases: &[(&str, Value, &str, &str)]) {
    for (key, value, field, message) in cases {
        invalid_from(
            route,
            from,
            with(base(), key, value.clone()),
            field,
            message,
        );
    }
}

/// `base` with top-level `key` set to `value`.
fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
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

fn response() -> Value {
    json!({"model": "gpt-5", "input": "hello"})
}

fn response_with_input(input: Value) -> Value {
    with(response(), "input", input)
}

fn anthropic() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}]
    })
}

fn count_tokens() -> Value {
    without(anthropic(), "max_tokens")
}

fn base(route: Route) -> Value {
    match route {
        Route::ChatCompletions => chat(),
        Route::Completions => completion(),
        Route::Embeddings => embedding(),
        Route::Responses => response(),
        Route::Messages => anthropic(),
        Route::CountTokens => count_tokens(),
    }
}

// === every route ===

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
        invalid_from(
            route,
            Level::Lenient,
            without(base(route), "model"),
            "model",
            "is required",
        );
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
fn a_responses_prompt_template_may_name_the_model() {
    let r = Route::Responses;
    let body = json!({"prompt": {"id": "pmpt_1", "variables": {"x": "y"}}, "input": "go"});
    valid(r, body.clone());
    assert_eq!(run(r, Level::Strict, &body).unwrap().model, None);
    // Without a prompt (or with a null one) the model is required, and says why.
    let e = run(r, Level::Lenient, &json!({"input": "go", "prompt": null})).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"model: is required (unless a "prompt" template names it)"#
    );
    // Other routes have no such escape.
    invalid_from(
        Route::ChatCompletions,
        Level::Lenient,
        with(without(chat(), "model"), "prompt", json!({"id": "p"})),
        "model",
        "is required",
    );
    // At strict, a template needs its id.
    invalid_from(
        r,
        Level::Strict,
        json!({"prompt": {"version": "2"}}),
        "prompt.id",
        "is required",
    );
}

#[test]
fn lenient_checks_nothing_but_model() {
    let body = json!({"model": "m", "messages": 5, "input": 5, "prompt": 5, "max_tokens": "x", "temperature": "hot", "whatever": true});
    for route in Route::ALL {
        assert!(run(route, Level::Lenient, &body).is_ok(), "{route}");
        assert!(run(route, Level::Moderate, &body).is_err(), "{route}");
    }
    // A non-boolean stream is not an error at lenient, and does not count as streaming.
    let meta = run(
        Route::ChatCompletions,
        Level::Lenient,
        &with(chat(), "stream", json!("yes")),
    );
    assert!(!meta.unwrap().stream);
}

#[test]
fn moderate_lets_new_top_level_fields_through_and_strict_names_them() {
    for route in Route::ALL {
        invalid_from(
            route,
            Level::Strict,
            with(base(route), "brand_new_option", json!({"on": true})),
            "brand_new_option",
            r#"unknown field "brand_new_option""#,
        );
    }
}

// === chat completions ===

#[test]
fn chat_messages_must_be_an_array_of_objects() {
    let r = Route::ChatCompletions;
    invalid_from(
        r,
        Level::Moderate,
        without(chat(), "messages"),
        "messages",
        "is required",
    );
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
fn chat_roles_are_strings_at_moderate_and_known_at_strict() {
    let r = Route::ChatCompletions;
    let body = chat_with_messages(json!([
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "robot", "content": "r"},
    ]));
    invalid_from(
        r,
        Level::Strict,
        body.clone(),
        "messages[2].role",
        "unknown role",
    );
    let e = run(r, Level::Strict, &body).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"messages[2].role: unknown role "robot"; expected one of system, developer, user, assistant, tool, function"#
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
fn roles_in_errors_are_cut_short() {
    let role = "x".repeat(10_000);
    let e = run(
        Route::ChatCompletions,
        Level::Strict,
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
            Level::Strict,
            chat_with_messages(json!([{"role": role, "tool_call_id": "c"}])),
            "messages[0].content",
            "is required",
        );
    }
    invalid_from(
        r,
        Level::Strict,
        chat_with_messages(json!([{"role": "user", "content": null}])),
        "messages[0].content",
        "must be set, got null",
    );
    invalid_from(
        r,
        Level::Moderate,
        chat_with_messages(json!([{"role": "user", "content": 5}])),
        "messages[0].content",
        "must be a string or an array of content parts, got a number",
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
        Level::Strict,
        chat_with_messages(json!([{"role": "user", "content": [{"type": "video_url"}]}])),
        "messages[0].content[0].type",
        r#"unknown content part type "video_url""#,
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
fn chat_assistant_content_may_be_left_out_beside_a_tool_call() {
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
        Level::Strict,
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
fn chat_deprecated_function_role_needs_a_name_at_strict() {
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
        Level::Strict,
        chat_with_messages(json!([{"role": "function", "content": "42"}])),
        "messages[0].name",
        "is required",
    );
    invalid_from(
        r,
        Level::Strict,
        chat_with_messages(
            json!([{"role": "function", "name": "f", "content": [{"type": "text"}]}]),
        ),
        "messages[0].content",
        "must be a string",
    );
}

#[test]
fn chat_numbers_are_typed_at_moderate_and_ranged_at_strict() {
    let r = Route::ChatCompletions;
    cases(
        r,
        Level::Strict,
        chat,
        &[
            (
                "temperature",
                json!(2.01),
                "temperature",
                "must be between 0 and 2, got 2.01",
            ),
            ("temperature", json!(-0.5), "temperature", "between 0 and 2"),
            (
                "top_p",
                json!(1.5),
                "top_p",
                "must be between 0 and 1, got 1.5",
            ),
            (
                "presence_penalty",
                json!(-2.5),
                "presence_penalty",
                "between -2 and 2",
            ),
            (
                "frequency_penalty",
                json!(3),
                "frequency_penalty",
                "between -2 and 2",
            ),
            ("n", json!(0), "n", "must be between 1 and 128, got 0"),
            ("n", json!(129), "n", "between 1 and 128"),
            ("n", json!(1.5), "n", "must be an integer, got 1.5"),
            ("max_tokens", json!(0), "max_tokens", "must be >= 1, got 0"),
            (
                "max_tokens",
                json!(100.0),
                "max_tokens",
                "must be an integer, got 100.0",
            ),
            (
                "max_completion_tokens",
                json!(-1),
                "max_completion_tokens",
                "must be >= 1",
            ),
            (
                "top_logprobs",
                json!(21),
                "top_logprobs",
                "between 0 and 20",
            ),
            ("seed", json!(1.5), "seed", "must be an integer"),
        ],
    );
    cases(
        r,
        Level::Moderate,
        chat,
        &[
            (
                "temperature",
                json!("0.7"),
                "temperature",
                "must be a number, got a string",
            ),
            (
                "temperature",
                json!({}),
                "temperature",
                "must be a number, got an object",
            ),
            (
                "max_tokens",
                json!("100"),
                "max_tokens",
                "must be an integer, got a string",
            ),
            ("n", json!(true), "n", "must be an integer, got a boolean"),
        ],
    );
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
    cases(
        r,
        Level::Moderate,
        chat,
        &[
            (
                "stream",
                json!("yes"),
                "stream",
                "must be a boolean, got a string",
            ),
            ("logprobs", json!(1), "logprobs", "must be a boolean"),
            (
                "parallel_tool_calls",
                json!("no"),
                "parallel_tool_calls",
                "must be a boolean",
            ),
            ("store", json!(0), "store", "must be a boolean"),
            (
                "stop",
                json!(5),
                "stop",
                "must be a string or an array of strings, got a number",
            ),
            (
                "stop",
                json!(["a", 1]),
                "stop[1]",
                "must be a string, got a number",
            ),
            (
                "tools",
                json!({"type": "function"}),
                "tools",
                "must be an array of objects",
            ),
            ("tools", json!([1]), "tools[0]", "must be an object"),
            (
                "functions",
                json!("f"),
                "functions",
                "must be an array of objects",
            ),
            (
                "tool_choice",
                json!(1),
                "tool_choice",
                "must be a string or an object",
            ),
            (
                "function_call",
                json!([]),
                "function_call",
                "must be a string or an object",
            ),
            (
                "response_format",
                json!("json"),
                "response_format",
                "must be an object",
            ),
            (
                "response_format",
                json!({}),
                "response_format.type",
                "is required",
            ),
            (
                "stream_options",
                json!(true),
                "stream_options",
                "must be an object",
            ),
            ("metadata", json!([]), "metadata", "must be an object"),
            ("logit_bias", json!(1), "logit_bias", "must be an object"),
            ("prediction", json!("x"), "prediction", "must be an object"),
            ("user", json!(1), "user", "must be a string"),
            (
                "reasoning_effort",
                json!(1),
                "reasoning_effort",
                "must be a string",
            ),
            (
                "modalities",
                json!("text"),
                "modalities",
                "must be an array of strings",
            ),
            (
                "modalities",
                json!(["text", 1]),
                "modalities[1]",
                "must be a string",
            ),
        ],
    );
}

#[test]
fn chat_known_values_are_checked_at_strict_only() {
    let r = Route::ChatCompletions;
    cases(
        r,
        Level::Strict,
        chat,
        &[
            (
                "reasoning_effort",
                json!("ultra"),
                "reasoning_effort",
                r#"unknown reasoning effort "ultra""#,
            ),
            (
                "service_tier",
                json!("platinum"),
                "service_tier",
                "unknown service tier",
            ),
            (
                "verbosity",
                json!("chatty"),
                "verbosity",
                "unknown verbosity",
            ),
            (
                "modalities",
                json!(["text", "video"]),
                "modalities[1]",
                "unknown modality",
            ),
            (
                "tool_choice",
                json!("sometimes"),
                "tool_choice",
                "unknown tool choice",
            ),
            (
                "tools",
                json!([{"type": "plugin"}]),
                "tools[0].type",
                r#"unknown type "plugin"; expected one of function, custom"#,
            ),
            (
                "tools",
                json!([{"function": {"name": "f"}}]),
                "tools[0].type",
                "is required",
            ),
            (
                "response_format",
                json!({"type": "yaml"}),
                "response_format.type",
                "unknown response format type",
            ),
            (
                "response_format",
                json!({"type": "json_schema"}),
                "response_format.json_schema",
                "is required",
            ),
        ],
    );
    valid(
        r,
        with(
            with(chat(), "reasoning_effort", json!("xhigh")),
            "service_tier",
            json!("priority"),
        ),
    );
}

// === completions ===

#[test]
fn completions_prompt_is_text_or_tokens() {
    let r = Route::Completions;
    // The API defaults a missing prompt; the SDK's own type allows null.
    invalid_from(
        r,
        Level::Strict,
        without(completion(), "prompt"),
        "prompt",
        "is required",
    );
    valid(r, with(completion(), "prompt", json!(null)));
    for prompt in [
        json!(""),
        json!(["a", ""]),
        json!([1, 2, 3]),
        json!([[1, 2], [3]]),
        json!([]),
    ] {
        valid(r, with(completion(), "prompt", prompt));
    }
    let moderate: &[(Value, &str, &str)] = &[
        (
            json!(5),
            "prompt",
            "must be a string or an array of strings or tokens, got a number",
        ),
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
    for (prompt, field, message) in moderate {
        invalid_from(
            r,
            Level::Moderate,
            with(completion(), "prompt", prompt.clone()),
            field,
            message,
        );
    }
    let strict: &[(Value, &str, &str)] = &[
        (
            json!([-1]),
            "prompt[0]",
            "must be a token (an integer >= 0), got -1",
        ),
        (json!([1.5]), "prompt[0]", "got 1.5"),
    ];
    for (prompt, field, message) in strict {
        invalid_from(
            r,
            Level::Strict,
            with(completion(), "prompt", prompt.clone()),
            field,
            message,
        );
    }
}

#[test]
fn completions_fields_are_typed_and_ranged() {
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
    cases(
        r,
        Level::Strict,
        completion,
        &[
            ("max_tokens", json!(-1), "max_tokens", "must be >= 0"),
            ("best_of", json!(21), "best_of", "between 0 and 20"),
            ("logprobs", json!(6), "logprobs", "between 0 and 5"),
            ("temperature", json!(2.5), "temperature", "between 0 and 2"),
            ("n", json!(0), "n", "between 1 and 128"),
        ],
    );
    cases(
        r,
        Level::Moderate,
        completion,
        &[
            ("logprobs", json!(true), "logprobs", "must be an integer"),
            ("echo", json!("x"), "echo", "must be a boolean"),
            ("suffix", json!(1), "suffix", "must be a string"),
            (
                "stop",
                json!({}),
                "stop",
                "must be a string or an array of strings",
            ),
            (
                "stream_options",
                json!(1),
                "stream_options",
                "must be an object",
            ),
        ],
    );
}

// === embeddings ===

#[test]
fn embeddings_input_is_required_and_non_empty_at_strict() {
    let r = Route::Embeddings;
    invalid_from(
        r,
        Level::Moderate,
        without(embedding(), "input"),
        "input",
        "is required",
    );
    for input in [
        json!("a"),
        json!(["a", "b"]),
        json!([1, 2]),
        json!([[1], [2, 3]]),
    ] {
        valid(r, with(embedding(), "input", input));
    }
    let strict: &[(Value, &str, &str)] = &[
        (json!(""), "input", "must not be empty"),
        (json!([]), "input", "must not be empty"),
        (json!(["a", ""]), "input[1]", "must not be empty"),
        (json!([[1], []]), "input[1]", "must not be empty"),
        (json!([[1, -2]]), "input[0][1]", "must be a token"),
    ];
    for (input, field, message) in strict {
        invalid_from(
            r,
            Level::Strict,
            with(embedding(), "input", input.clone()),
            field,
            message,
        );
    }
    let moderate: &[(Value, &str, &str)] = &[
        (json!(null), "input", "got null"),
        (json!({"text": "a"}), "input", "got an object"),
        (
            json!(["a", ["b"]]),
            "input[1]",
            "must be a string like the first item, got an array",
        ),
    ];
    for (input, field, message) in moderate {
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
    cases(
        r,
        Level::Strict,
        embedding,
        &[
            (
                "encoding_format",
                json!("hex"),
                "encoding_format",
                r#"unknown encoding format "hex"; expected one of float, base64"#,
            ),
            ("dimensions", json!(0), "dimensions", "must be >= 1"),
        ],
    );
    cases(
        r,
        Level::Moderate,
        embedding,
        &[
            (
                "encoding_format",
                json!(1),
                "encoding_format",
                "must be a string",
            ),
            (
                "dimensions",
                json!("256"),
                "dimensions",
                "must be an integer, got a string",
            ),
            ("user", json!(false), "user", "must be a string"),
        ],
    );
}

// === responses ===

#[test]
fn responses_input_is_optional_text_or_items() {
    let r = Route::Responses;
    valid(
        r,
        json!({"model": "gpt-5", "previous_response_id": "resp_1"}),
    );
    valid(
        r,
        response_with_input(json!([
            {"role": "developer", "content": "d"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "u"}, {"type": "input_image", "image_url": "https://x"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {"type": "item_reference", "id": "msg_1"},
            {"id": "fc_2"},
        ])),
    );
    invalid_from(
        r,
        Level::Moderate,
        response_with_input(json!(5)),
        "input",
        "must be a string or an array of input items, got a number",
    );
    invalid_from(
        r,
        Level::Moderate,
        response_with_input(json!([{"role": "user", "content": {"type": "input_text"}}])),
        "input[0].content",
        "must be a string or an array of content parts, got an object",
    );
    invalid_from(
        r,
        Level::Moderate,
        response_with_input(json!([{"type": "function_call_output", "call_id": "c", "output": 1}])),
        "input[0].output",
        "must be a string or an array",
    );
}

#[test]
fn responses_new_item_types_and_roles_pass_moderate_only() {
    let r = Route::Responses;
    invalid_from(
        r,
        Level::Strict,
        response_with_input(json!([{"type": "hologram", "data": 1}])),
        "input[0].type",
        r#"unknown item type "hologram""#,
    );
    invalid_from(
        r,
        Level::Strict,
        response_with_input(json!([{"role": "tool", "content": "x"}])),
        "input[0].role",
        "unknown role",
    );
    invalid_from(
        r,
        Level::Strict,
        response_with_input(json!([{"role": "user", "content": [{"type": "input_video"}]}])),
        "input[0].content[0].type",
        "unknown content part type",
    );
    invalid_from(
        r,
        Level::Strict,
        response_with_input(json!([{"content": "no role, no type, no id"}])),
        "input[0].id",
        "is required",
    );
    invalid_from(
        r,
        Level::Strict,
        response_with_input(json!([{"type": "function_call_output", "output": "x"}])),
        "input[0].call_id",
        "is required",
    );
    invalid_from(
        r,
        Level::Strict,
        with(response(), "tools", json!([{"type": "teleport"}])),
        "tools[0].type",
        "unknown type",
    );
}

#[test]
fn responses_options_are_checked() {
    let r = Route::Responses;
    cases(
        r,
        Level::Moderate,
        response,
        &[
            (
                "text",
                json!("json"),
                "text",
                "must be an object, got a string",
            ),
            (
                "text",
                json!({"format": "json"}),
                "text.format",
                "must be an object",
            ),
            (
                "text",
                json!({"format": {"type": 1}}),
                "text.format.type",
                "must be a string",
            ),
            (
                "text",
                json!({"format": {"type": "json_schema", "name": "n", "schema": "s"}}),
                "text.format.schema",
                "must be an object",
            ),
            (
                "reasoning",
                json!({"effort": 1}),
                "reasoning.effort",
                "must be a string",
            ),
            ("tools", json!([1]), "tools[0]", "must be an object"),
            (
                "tool_choice",
                json!(1),
                "tool_choice",
                "must be a string or an object",
            ),
            ("include", json!([1]), "include[0]", "must be a string"),
            (
                "conversation",
                json!(1),
                "conversation",
                "must be a string or an object",
            ),
            (
                "context_management",
                json!({}),
                "context_management",
                "must be an array of objects",
            ),
            (
                "background",
                json!("yes"),
                "background",
                "must be a boolean",
            ),
            (
                "max_output_tokens",
                json!("1"),
                "max_output_tokens",
                "must be an integer",
            ),
            (
                "instructions",
                json!({}),
                "instructions",
                // (strict says "must be a string")
                "must be a string",
            ),
        ],
    );
    cases(
        r,
        Level::Strict,
        response,
        &[
            (
                "text",
                json!({"format": {"type": "json_schema", "schema": {}}}),
                "text.format.name",
                "is required",
            ),
            (
                "text",
                json!({"format": {"type": "xml"}}),
                "text.format.type",
                "unknown format type",
            ),
            (
                "reasoning",
                json!({"effort": "extreme"}),
                "reasoning.effort",
                "unknown reasoning effort",
            ),
            (
                "truncation",
                json!("sometimes"),
                "truncation",
                "unknown truncation",
            ),
            ("temperature", json!(3), "temperature", "between 0 and 2"),
            (
                "instructions",
                json!([{"role": "system", "content": "x"}]),
                "instructions",
                "must be a string, got an array",
            ),
        ],
    );
}

// === Anthropic messages and count_tokens ===

#[test]
fn anthropic_max_tokens_is_required_on_messages_only() {
    let r = Route::Messages;
    invalid_from(
        r,
        Level::Moderate,
        without(anthropic(), "max_tokens"),
        "max_tokens",
        "is required",
    );
    invalid_from(
        r,
        Level::Strict,
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
    // count_tokens takes the same body without it, and strict does not know it there.
    valid(Route::CountTokens, count_tokens());
    invalid_from(
        Route::CountTokens,
        Level::Strict,
        anthropic(),
        "max_tokens",
        r#"unknown field "max_tokens""#,
    );
}

#[test]
fn anthropic_system_entries_in_messages_pass_every_level() {
    // The issue: an agent sends `system` entries inside `messages`; the current API takes them.
    for r in [Route::Messages, Route::CountTokens] {
        valid(
            r,
            with(
                base(r),
                "messages",
                json!([
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "Hello"},
                    {"role": "system", "content": [{"type": "text", "text": "Now German."}]},
                ]),
            ),
        );
    }
}

#[test]
fn anthropic_messages_have_roles_and_content_blocks() {
    for r in [Route::Messages, Route::CountTokens] {
        let msgs = |m: Value| with(base(r), "messages", m);
        invalid_from(
            r,
            Level::Moderate,
            msgs(json!([])),
            "messages",
            "must not be empty",
        );
        invalid_from(
            r,
            Level::Strict,
            msgs(json!([{"role": "tool", "content": "s"}])),
            "messages[0].role",
            r#"unknown role "tool"; expected one of user, assistant, system"#,
        );
        invalid_from(
            r,
            Level::Strict,
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
        invalid_from(
            r,
            Level::Strict,
            msgs(json!([{"role": "user", "content": [{"type": "hologram"}]}])),
            "messages[0].content[0].type",
            r#"unknown block type "hologram""#,
        );
        invalid_from(
            r,
            Level::Moderate,
            msgs(
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": 5}]}]}]),
            ),
            "messages[0].content[0].content[0].type",
            "must be a string",
        );
        invalid_from(
            r,
            Level::Strict,
            msgs(json!([{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}])),
            "messages[0].content[0].tool_use_id",
            "is required",
        );
        invalid_from(
            r,
            Level::Strict,
            msgs(json!([{"role": "user", "content": [{"type": "image"}]}])),
            "messages[0].content[0].source",
            "is required",
        );
        valid(
            r,
            msgs(json!([
                {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "add", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "tool_use", "id": "t1", "name": "calc", "input": {}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "4"}]}]},
                {"role": "assistant", "content": "The answer is"}
            ])),
        );
    }
}

#[test]
fn anthropic_options_are_checked() {
    let r = Route::Messages;
    cases(
        r,
        Level::Strict,
        anthropic,
        &[
            (
                "temperature",
                json!(1.5),
                "temperature",
                "must be between 0 and 1, got 1.5",
            ),
            ("top_p", json!(-0.1), "top_p", "between 0 and 1"),
            ("top_k", json!(-1), "top_k", "must be >= 0"),
            ("top_k", json!(0.5), "top_k", "must be an integer"),
            (
                "system",
                json!([{"type": "image"}]),
                "system[0].type",
                r#"unknown system block type "image""#,
            ),
            (
                "tool_choice",
                json!({"type": "sometimes"}),
                "tool_choice.type",
                "unknown tool choice",
            ),
            (
                "thinking",
                json!({"type": "eager"}),
                "thinking.type",
                "unknown thinking type",
            ),
            (
                "tools",
                json!([{"type": "teleport_20990101", "name": "t"}]),
                "tools[0].type",
                "unknown type",
            ),
            (
                "mcp_servers",
                json!([{"url": "https://x", "name": "x"}]),
                "mcp_servers[0].type",
                "is required",
            ),
            (
                "service_tier",
                json!("gold"),
                "service_tier",
                "unknown service tier",
            ),
        ],
    );
    cases(
        r,
        Level::Moderate,
        anthropic,
        &[
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
                "must be a string or an array of text blocks",
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
                json!({"type": 1}),
                "thinking.type",
                "must be a string",
            ),
            (
                "thinking",
                json!({"budget_tokens": 1024}),
                "thinking.type",
                "is required",
            ),
            ("service_tier", json!(1), "service_tier", "must be a string"),
            (
                "context_management",
                json!([]),
                "context_management",
                "must be an object",
            ),
            (
                "container",
                json!(1),
                "container",
                "must be a string or an object",
            ),
            (
                "cache_control",
                json!("ephemeral"),
                "cache_control",
                "must be an object",
            ),
        ],
    );
    // Custom tools may leave out their type.
    valid(
        r,
        json!({
            "model": "claude-opus-4-1", "max_tokens": 2048,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 1, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "stream": true, "metadata": {"user_id": "u"},
            "tools": [{"name": "calc", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "service_tier": "auto", "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "container": {"id": "c", "skills": []}, "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]
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
    invalid_from(
        Route::Responses,
        Level::Strict,
        with(response(), "messages", json!([])),
        "messages",
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
    // The known-field lists include what the rules check, and the must-haves of the APIs.
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
                "prompt_cache_key",
                "verbosity",
            ][..],
        ),
        (
            Route::Responses,
            &[
                "input",
                "instructions",
                "tools",
                "tool_choice",
                "text",
                "reasoning",
                "previous_response_id",
                "store",
                "stream",
                "include",
                "prompt",
                "prompt_cache_key",
                "background",
                "conversation",
                "truncation",
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
                "context_management",
                "output_config",
                "output_format",
                "cache_control",
            ][..],
        ),
        (
            Route::CountTokens,
            &[
                "system",
                "thinking",
                "tools",
                "tool_choice",
                "mcp_servers",
                "context_management",
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
        // null passes every rule for optional fields, so each known field can be tried on its
        // own at strict.
        for field in known_fields(route) {
            if ["model", "messages", "max_tokens", "input", "prompt"].contains(field) {
                continue;
            }
            let body = with(base(route), field, Value::Null);
            if let Err(e) = run(route, Level::Strict, &body) {
                panic!("{route} {field}: {e}");
            }
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

/// A body of more values than a tree holds is checked as `lenient` checks it at every level
/// (its rules unchecked, no canonical form), instead of a tree ~27 times its size; only a
/// `model` or `stream` that holds the values is refused.
#[test]
fn too_many_values_for_a_tree_are_checked_as_lenient() {
    let many = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
    let over = json::MAX_VALUES + 1;
    // Wrong where moderate looks (`metadata` is an object), but past the budget: lenient.
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"metadata":{}}}"#,
        many(over)
    );
    for level in LEVELS {
        let (meta, canonical) = check(Route::ChatCompletions, level, body.as_bytes(), true)
            .unwrap_or_else(|e| panic!("{level}: {e}"));
        assert_eq!(meta.model.as_deref(), Some("m"));
        assert_eq!(canonical, None);
    }
    // Under the budget the same mistake is the moderate rule's.
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"metadata":{}}}"#,
        many(1000)
    );
    let e = validate(Route::ChatCompletions, Level::Moderate, body.as_bytes()).unwrap_err();
    assert_eq!(e.field, "metadata");
    // A completion's prompt of token ids past the budget: its model and stream flag read.
    let body = format!(
        r#"{{"model":"gpt-3.5-turbo-instruct","prompt":{},"stream":true}}"#,
        many(over)
    );
    let meta = validate(Route::Completions, Level::Strict, body.as_bytes()).unwrap();
    assert_eq!(meta.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    assert!(meta.stream);
    // Still JSON that is checked: a mistake after the budget ran out is found by the second walk.
    let body = format!(
        r#"{{"model":"m","messages":[],"x":{},"y":[1,]}}"#,
        many(over)
    );
    let e = validate(Route::ChatCompletions, Level::Moderate, body.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    // An array of them at the top: no object, as under the budget.
    let e = validate(
        Route::ChatCompletions,
        Level::Lenient,
        many(over).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "request body must be a JSON object, got an array"
    );
    // The values in `model` itself: refused, saying why.
    let body = format!(r#"{{"model":{},"messages":[]}}"#, many(over));
    for level in LEVELS {
        let e = validate(Route::ChatCompletions, level, body.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 262144 values"), "{e}");
    }
}
