//! Property tests: the validator never panics, agrees with serde_json on what is JSON, and its
//! levels nest (whatever a stricter level accepts, a looser one accepts).

use proptest::{prelude::*, sample::select};
use serde_json::{json, Value};

use portcullis_validation::{validate, InvalidRequest, Level, Route};

/// Keys and strings that steer generated values into the validator's rules.
const VOCAB: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "name",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "audio",
    "refusal",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stop",
    "input",
    "prompt",
    "tools",
    "tool_choice",
    "response_format",
    "stop_sequences",
    "thinking",
    "encoding_format",
    "float",
    "base64",
    "dimensions",
    "seed",
    "logprobs",
    "best_of",
    "modalities",
    "prompt",
    "instructions",
    "input_text",
    "function_call_output",
    "reasoning",
    "encrypted_content",
    "thinking",
    "tool_result",
    "tool_use",
    "cache_control",
];

fn route() -> impl Strategy<Value = Route> {
    select(Route::ALL.to_vec())
}

fn level() -> impl Strategy<Value = Level> {
    select(Level::ALL.to_vec())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(VOCAB).prop_map(String::from),
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..300).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (-3.0f64..3.0).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn base(route: Route) -> Value {
    match route {
        Route::ChatCompletions => json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]}),
        Route::Completions => json!({"model": "gpt-3.5-turbo-instruct", "prompt": "p"}),
        Route::Embeddings => json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        Route::Responses => json!({"model": "gpt-5", "input": [
            {"role": "developer", "content": "d"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call_output", "call_id": "c", "output": "o"},
        ]}),
        Route::Messages => json!({"model": "claude-x", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
        ]}),
        Route::CountTokens => json!({"model": "claude-x", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]}),
    }
}

/// A valid request with one top-level field, or one field of one message, replaced.
fn near_valid() -> impl Strategy<Value = (Route, Value)> {
    (
        route(),
        any::<bool>(),
        text(),
        json_value(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(route, in_message, key, value, i)| {
            let mut body = base(route);
            let list = if route == Route::Responses {
                "input"
            } else {
                "messages"
            };
            match body.get_mut(list).and_then(Value::as_array_mut) {
                Some(msgs) if in_message => {
                    let n = msgs.len();
                    msgs[i.index(n)][key] = value;
                }
                _ => body[key] = value,
            }
            (route, body)
        })
}

/// Every level's verdict on `body`, checking that they nest.
fn check_levels(route: Route, body: &[u8]) -> Vec<Result<(), InvalidRequest>> {
    let verdicts: Vec<_> = Level::ALL
        .iter()
        .map(|&level| validate(route, level, body).map(|_| ()))
        .collect();
    for pair in verdicts.windows(2) {
        assert!(
            !(pair[0].is_err() && pair[1].is_ok()),
            "a stricter level accepted what a looser one rejected: {pair:?}"
        );
    }
    verdicts
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs for proptest to store regressions beside.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), route in route()) {
        for verdict in check_levels(route, &bytes) {
            // Random bytes are almost never a JSON object with a model; if rejected, it is
            // the body as a whole or a field that is named.
            if let Err(e) = verdict {
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn truncated_requests_are_invalid_json(route in route(), level in level(), cut in any::<prop::sample::Index>()) {
        let body = base(route).to_string();
        let cut = cut.index(body.len());
        let e = validate(route, level, &body.as_bytes()[..cut]).unwrap_err();
        prop_assert_eq!(e.field.as_str(), "");
        prop_assert!(
            e.message.starts_with("request body is not valid JSON") || e.message.starts_with("request body is empty"),
            "{}", e
        );
    }

    #[test]
    fn arbitrary_json_never_panics_and_agrees_with_serde_json(value in json_value(), route in route()) {
        let body = value.to_string();
        let verdicts = check_levels(route, body.as_bytes());
        // serde_json produced it, so it is JSON: no syntax error may be reported.
        for v in &verdicts {
            if let Err(e) = v {
                prop_assert!(!e.message.contains("not valid JSON"), "{}", e);
                prop_assert_eq!(e.field.is_empty(), !value.is_object(), "{}", e);
            }
        }
        if verdicts[0].is_ok() {
            let meta = validate(route, Level::Lenient, body.as_bytes()).unwrap();
            // A Responses request may leave the model to its prompt template.
            prop_assert_eq!(meta.model.as_deref(), value["model"].as_str());
            if meta.model.is_none() {
                prop_assert_eq!(route, Route::Responses);
            }
            prop_assert_eq!(meta.stream, value["stream"] == Value::Bool(true));
        }
    }

    #[test]
    fn near_valid_requests_never_panic_and_errors_name_a_field_present((route, body) in near_valid()) {
        let bytes = body.to_string();
        for verdict in check_levels(route, bytes.as_bytes()) {
            if let Err(e) = verdict {
                // The field path starts with a key of the body (cut short if it is long), or
                // with a required field it lacks.
                let names = |k: &str| {
                    let bracketed = format!("[{}]", serde_json::to_string(k).unwrap());
                    e.field.starts_with(k)
                        || e.field.starts_with(&bracketed)
                        || e.field.strip_suffix("...").is_some_and(|cut| k.starts_with(cut))
                        || e.field.strip_suffix("...]").is_some_and(|cut| bracketed.starts_with(cut))
                };
                prop_assert!(!e.field.is_empty(), "{}", e);
                let required = ["model", "messages", "max_tokens", "prompt", "input"];
                // (strict requires `prompt` on completions; `input` is required on embeddings)
                prop_assert!(
                    body.as_object().unwrap().keys().any(|k| names(k)) || required.iter().any(|k| names(k)),
                    "{} in {}", e, body
                );
            }
        }
    }
}
