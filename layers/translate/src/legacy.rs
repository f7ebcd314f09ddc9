//! OpenAI's legacy function calling (`functions`, `function_call`, `role: "function"`),
//! deprecated but still served by OpenAI and still sent by older clients (LangChain's
//! `create_openai_fn_chain`, early agents, hand-written scripts).
//!
//! Before a chat request is translated for Anthropic it is rewritten in the current shape:
//! `functions` become function `tools`, `function_call` becomes `tool_choice`, an assistant
//! message's `function_call` becomes one tool call (id `call_legacy_<message index>`), and a
//! `function` message the `tool` message answering the latest call of that name. A client that
//! sent `functions` gets its answer in the legacy shape too ([`Plan::legacy_functions`]
//! (crate::Plan)): `message.function_call` and `finish_reason: "function_call"` (streamed:
//! `delta.function_call`), one call per turn as OpenAI gave them (parallel calls are off).

use serde_json::{Map, Value};

use crate::{
    api::Format,
    error::TranslateError,
    types::chat::{
        ChatCompletion, ChatContent, ChatMessage, ChatRequest, ChatTool, FunctionCall, FunctionDef,
        ToolCall,
    },
};

/// The id given to the legacy call of assistant message `i`.
fn call_id(i: usize) -> String {
    format!("call_legacy_{i}")
}

/// Rewrite `req`'s legacy function calling in the current shape. Returns whether the client
/// declared `functions` (then it expects legacy answers).
pub fn modernize(req: &mut ChatRequest) -> Result<bool, TranslateError> {
    let invalid = |message: String| TranslateError::InvalidRequest {
        format: Format::ChatCompletions,
        message,
    };
    let declared = match req.extra.remove("functions") {
        None | Some(Value::Null) => false,
        Some(Value::Array(fs)) => {
            let tools = req.tools.get_or_insert_with(Vec::new);
            for (i, f) in fs.into_iter().enumerate() {
                let f: FunctionDef = serde_json::from_value(f)
                    .map_err(|e| invalid(format!("functions[{i}]: {e}")))?;
                tools.push(ChatTool {
                    kind: "function".into(),
                    function: Some(f),
                    extra: Map::new(),
                });
            }
            true
        }
        Some(_) => return Err(invalid("functions: must be an array".into())),
    };
    if let Some(fc) = req.extra.remove("function_call") {
        let choice = match fc {
            Value::String(s) if s == "auto" || s == "none" => Value::String(s),
            Value::Object(o) if o.get("name").is_some_and(Value::is_string) => {
                serde_json::json!({"type": "function", "function": {"name": o["name"]}})
            }
            Value::Null => Value::Null,
            other => return Err(invalid(format!("function_call: {other} is not a choice"))),
        };
        if !choice.is_null() && req.tool_choice.is_none() {
            req.tool_choice = Some(choice);
        }
    }
    if declared {
        req.parallel_tool_calls = Some(false);
    }
    // Calls made so far without an answer: (function name, call id).
    let mut open: Vec<(String, String)> = Vec::new();
    for (i, m) in req.messages.iter_mut().enumerate() {
        match m {
            ChatMessage::Assistant(a) => {
                let Some(fc) = a.extra.remove("function_call") else {
                    continue;
                };
                if fc.is_null() {
                    continue;
                }
                let call: FunctionCall = serde_json::from_value(fc)
                    .map_err(|e| invalid(format!("messages[{i}].function_call: {e}")))?;
                let id = call_id(i);
                open.push((call.name.clone(), id.clone()));
                a.tool_calls.get_or_insert_with(Vec::new).push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: call,
                    custom: None,
                });
            }
            ChatMessage::Function { content, name } => {
                let Some(at) = open.iter().rposition(|(n, _)| n == name) else {
                    return Err(TranslateError::unsupported(
                        format!("messages[{i}]"),
                        Format::Messages,
                        format!(
                            "a function message for {name:?} with no function_call of it before"
                        ),
                    ));
                };
                let (_, id) = open.remove(at);
                *m = ChatMessage::Tool {
                    content: ChatContent::Text(content.take().unwrap_or_default()),
                    tool_call_id: id,
                };
            }
            _ => {}
        }
    }
    Ok(declared)
}

/// Write an answer's tool call as a legacy `function_call` (the first; there is one, as
/// parallel calls were off).
pub fn answer(c: &mut ChatCompletion) {
    for choice in &mut c.choices {
        let Some(calls) = choice.message.tool_calls.take() else {
            continue;
        };
        if let Some(call) = calls.into_iter().next() {
            let f = serde_json::json!({"name": call.function.name, "arguments": call.function.arguments});
            choice.message.extra.insert("function_call".into(), f);
        }
        if choice.finish_reason.as_deref() == Some("tool_calls") {
            choice.finish_reason = Some("function_call".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn legacy_calls_become_tools_and_results_find_their_call() {
        let mut r = req(json!({
            "model": "claude-sonnet-4-5",
            "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
            "function_call": {"name": "get_weather"},
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"role": "function", "name": "get_weather", "content": "18C"},
                {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                {"role": "function", "name": "get_weather", "content": "21C"}
            ]
        }));
        assert!(modernize(&mut r).unwrap());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert_eq!(v["parallel_tool_calls"], false);
        assert!(v.get("functions").is_none() && v.get("function_call").is_none());
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m[1]["tool_calls"][0]["id"], "call_legacy_1");
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "call_legacy_1", "content": "18C"})
        );
        assert_eq!(m[4]["tool_call_id"], "call_legacy_3");
    }

    #[test]
    fn a_function_result_with_no_call_is_refused_naming_it() {
        let mut r = req(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "function", "name": "f", "content": "x"}
        ]}));
        let e = modernize(&mut r).unwrap_err().to_string();
        assert!(e.contains("messages[1]") && e.contains("\"f\""), "{e}");
    }

    #[test]
    fn malformed_legacy_fields_are_400s_naming_them() {
        for (body, field) in [
            (json!({"functions": {"name": "f"}}), "functions"),
            (
                json!({"functions": [{"description": "no name"}]}),
                "functions[0]",
            ),
            (json!({"function_call": 3}), "function_call"),
        ] {
            let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            v.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            let e = modernize(&mut req(v)).unwrap_err();
            assert!(matches!(e, TranslateError::InvalidRequest { .. }), "{e:?}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn answers_go_back_in_the_legacy_shape() {
        let mut c: ChatCompletion = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}}]
        }))
        .unwrap();
        answer(&mut c);
        let v = serde_json::to_value(&c).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(
            m["function_call"],
            json!({"name": "get_weather", "arguments": "{}"})
        );
        assert!(m.get("tool_calls").is_none(), "{m}");
        assert_eq!(v["choices"][0]["finish_reason"], "function_call");
    }
}
