//! The three API shapes: where the last user message is, and how an assistant answer looks,
//! whole or streamed.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};

/// Which API a request speaks, decided by its path (one type for every layer that
/// reads the three APIs).
pub use portcullis_core::api::Api;

/// The text of the request's last message when that message is the user's: chat completions
/// and Anthropic `messages[-1]` with `"role":"user"` (a string, or its text blocks joined),
/// Responses `input` as a string, or its last item when that is a user message (string
/// content, or its `input_text` parts joined). `None` otherwise: a conversation whose last
/// turn is a tool result or an assistant message is not a command, even if an earlier user
/// message was.
pub(crate) fn last_user_text(api: Api, body: &Value) -> Option<String> {
    let turns = match api {
        Api::ChatCompletions | Api::Messages => body.get("messages")?.as_array()?,
        Api::Responses => match body.get("input")? {
            Value::String(s) => return Some(s.clone()),
            Value::Array(items) => items,
            _ => return None,
        },
    };
    // The last turn, past the instructions a client appends after it (Claude Code sends a
    // `system` message after the user's turn): a user message, or no command.
    let last = turns.iter().rev().find(|t| !is_instruction(t))?;
    let is_message = last
        .get("type")
        .is_none_or(|t| t.as_str() == Some("message"));
    (is_message && last.get("role")?.as_str()? == "user").then_some(())?;
    content_text(last.get("content")?)
}

/// A `system` or `developer` message: an instruction, not a turn.
fn is_instruction(item: &Value) -> bool {
    item.get("type")
        .is_none_or(|t| t.as_str() == Some("message"))
        && matches!(
            item.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        )
}

/// A string, or the last text part of a content array (`text` or `input_text`): what the user
/// typed, after what a client puts before it (Claude Code's `<system-reminder>` blocks).
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .rev()
            .filter(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("text" | "input_text")
                )
            })
            .find_map(|p| p.get("text").and_then(Value::as_str))
            .map(str::to_owned),
        _ => None,
    }
}

/// How to answer: the request's API, its model and whether it asked for a stream.
#[derive(Debug, Clone)]
pub(crate) struct Reply<'a> {
    pub(crate) api: Api,
    pub(crate) model: &'a str,
    pub(crate) stream: bool,
    /// Chat completions `stream_options.include_usage`: a last chunk carries the usage.
    pub(crate) include_usage: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn sse(event: Option<&str>, data: &Value, out: &mut String) {
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

impl Reply<'_> {
    /// The content type and the body of an assistant message saying `text`.
    pub(crate) fn render(&self, text: &str) -> (&'static str, Bytes) {
        let body = if self.stream {
            self.stream_body(text)
        } else {
            self.json_body(text).to_string()
        };
        let ct = if self.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        (ct, Bytes::from(body))
    }

    fn json_body(&self, text: &str) -> Value {
        let model = self.model;
        match self.api {
            Api::ChatCompletions => json!({
                "id": format!("chatcmpl-portcullis-{}", id()),
                "object": "chat.completion",
                "created": now(),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": text, "refusal": null },
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }
            }),
            Api::Messages => json!({
                "id": format!("msg_portcullis_{}", id()),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{ "type": "text", "text": text }],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 }
            }),
            Api::Responses => {
                let item = output_message(&format!("msg_portcullis_{}", id()), text, "completed");
                response_object(
                    &format!("resp_portcullis_{}", id()),
                    model,
                    "completed",
                    vec![item],
                )
            }
        }
    }

    fn stream_body(&self, text: &str) -> String {
        let model = self.model;
        let mut out = String::new();
        match self.api {
            Api::ChatCompletions => {
                let (cid, created) = (format!("chatcmpl-portcullis-{}", id()), now());
                let chunk = |choices: Value, usage: Option<Value>| {
                    let mut c = json!({
                        "id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": choices
                    });
                    if self.include_usage {
                        c["usage"] = usage.unwrap_or(Value::Null);
                    }
                    c
                };
                let first = chunk(
                    json!([{ "index": 0, "delta": { "role": "assistant", "content": text },
                             "logprobs": null, "finish_reason": null }]),
                    None,
                );
                sse(None, &first, &mut out);
                let last = chunk(
                    json!([{ "index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop" }]),
                    None,
                );
                sse(None, &last, &mut out);
                if self.include_usage {
                    let usage = chunk(
                        json!([]),
                        Some(
                            json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }),
                        ),
                    );
                    sse(None, &usage, &mut out);
                }
                out.push_str("data: [DONE]\n\n");
            }
            Api::Messages => {
                let start = json!({ "type": "message_start", "message": {
                    "id": format!("msg_portcullis_{}", id()), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": { "input_tokens": 0, "output_tokens": 0 } } });
                sse(Some("message_start"), &start, &mut out);
                sse(
                    Some("content_block_start"),
                    &json!({ "type": "content_block_start", "index": 0,
                             "content_block": { "type": "text", "text": "" } }),
                    &mut out,
                );
                sse(
                    Some("content_block_delta"),
                    &json!({ "type": "content_block_delta", "index": 0,
                             "delta": { "type": "text_delta", "text": text } }),
                    &mut out,
                );
                sse(
                    Some("content_block_stop"),
                    &json!({ "type": "content_block_stop", "index": 0 }),
                    &mut out,
                );
                sse(
                    Some("message_delta"),
                    &json!({ "type": "message_delta",
                             "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                             "usage": { "output_tokens": 0 } }),
                    &mut out,
                );
                sse(
                    Some("message_stop"),
                    &json!({ "type": "message_stop" }),
                    &mut out,
                );
            }
            Api::Responses => {
                let rid = format!("resp_portcullis_{}", id());
                let mid = format!("msg_portcullis_{}", id());
                let mut seq = 0u64;
                let mut event = |name: &str, mut data: Value, out: &mut String| {
                    data["type"] = json!(name);
                    data["sequence_number"] = json!(seq);
                    seq += 1;
                    sse(Some(name), &data, out);
                };
                let part = |t: &str| json!({ "type": "output_text", "text": t, "annotations": [] });
                event(
                    "response.created",
                    json!({ "response": response_object(&rid, model, "in_progress", vec![]) }),
                    &mut out,
                );
                event(
                    "response.in_progress",
                    json!({ "response": response_object(&rid, model, "in_progress", vec![]) }),
                    &mut out,
                );
                event(
                    "response.output_item.added",
                    json!({ "output_index": 0, "item": { "id": mid, "type": "message",
                            "status": "in_progress", "role": "assistant", "content": [] } }),
                    &mut out,
                );
                event(
                    "response.content_part.added",
                    json!({ "item_id": mid, "output_index": 0, "content_index": 0, "part": part("") }),
                    &mut out,
                );
                event(
                    "response.output_text.delta",
                    json!({ "item_id": mid, "output_index": 0, "content_index": 0,
                            "delta": text, "logprobs": [] }),
                    &mut out,
                );
                event(
                    "response.output_text.done",
                    json!({ "item_id": mid, "output_index": 0, "content_index": 0,
                            "text": text, "logprobs": [] }),
                    &mut out,
                );
                event(
                    "response.content_part.done",
                    json!({ "item_id": mid, "output_index": 0, "content_index": 0, "part": part(text) }),
                    &mut out,
                );
                let item = output_message(&mid, text, "completed");
                event(
                    "response.output_item.done",
                    json!({ "output_index": 0, "item": item.clone() }),
                    &mut out,
                );
                event(
                    "response.completed",
                    json!({ "response": response_object(&rid, model, "completed", vec![item]) }),
                    &mut out,
                );
            }
        }
        out
    }
}

fn output_message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [] }]
    })
}

/// A Responses API `response` object with every field the official SDK requires.
fn response_object(id: &str, model: &str, status: &str, output: Vec<Value>) -> Value {
    let done = status == "completed";
    json!({
        "id": id,
        "object": "response",
        "created_at": now(),
        "status": status,
        "completed_at": if done { json!(now()) } else { Value::Null },
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "temperature": null,
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "usage": if done {
            json!({ "input_tokens": 0, "input_tokens_details": { "cached_tokens": 0, "cache_write_tokens": 0 },
                    "output_tokens": 0, "output_tokens_details": { "reasoning_tokens": 0 },
                    "total_tokens": 0 })
        } else {
            Value::Null
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_user_message_in_each_shape() {
        let chat = json!({"messages":[{"role":"system","content":"s"},{"role":"user","content":"!/show"}]});
        assert_eq!(
            last_user_text(Api::ChatCompletions, &chat).as_deref(),
            Some("!/show")
        );
        let parts = json!({"messages":[{"role":"user","content":[{"type":"text","text":"!/help"},{"type":"image_url","image_url":{"url":"x"}}]}]});
        assert_eq!(
            last_user_text(Api::ChatCompletions, &parts).as_deref(),
            Some("!/help")
        );
        let tool_last =
            json!({"messages":[{"role":"user","content":"!/show"},{"role":"tool","content":"r"}]});
        assert_eq!(last_user_text(Api::ChatCompletions, &tool_last), None);
        let blocks =
            json!({"messages":[{"role":"user","content":[{"type":"text","text":"!/show"}]}]});
        assert_eq!(
            last_user_text(Api::Messages, &blocks).as_deref(),
            Some("!/show")
        );
        let tool_result = json!({"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"!/show"}]}]});
        assert_eq!(last_user_text(Api::Messages, &tool_result), None);
        assert_eq!(
            last_user_text(Api::Responses, &json!({"input":"!/show"})).as_deref(),
            Some("!/show")
        );
        let items =
            json!({"input":[{"role":"user","content":[{"type":"input_text","text":"!/show"}]}]});
        assert_eq!(
            last_user_text(Api::Responses, &items).as_deref(),
            Some("!/show")
        );
        let call = json!({"input":[{"role":"user","content":"!/show"},{"type":"function_call_output","call_id":"c","output":"x"}]});
        assert_eq!(last_user_text(Api::Responses, &call), None);
        assert_eq!(last_user_text(Api::Responses, &json!({"input": 5})), None);
        assert_eq!(last_user_text(Api::Messages, &json!([1])), None);
    }

    #[test]
    fn finds_what_the_user_typed_in_agents_requests() {
        // Claude Code 2.1: reminders before the prompt in the user's turn, and a system
        // message after it.
        let claude = json!({"messages":[{"role":"user","content":[
            {"type":"text","text":"<system-reminder>context</system-reminder>"},
            {"type":"text","text":"!/set(model=x)"}]},
            {"role":"system","content":"Available agent types: ..."}]});
        assert_eq!(
            last_user_text(Api::Messages, &claude).as_deref(),
            Some("!/set(model=x)")
        );
        // Codex: developer messages and the environment first, the prompt last.
        let codex = json!({"input":[
            {"type":"message","role":"developer","content":[{"type":"input_text","text":"d"}]},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context/>"}]},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"!/show"}]}]});
        assert_eq!(
            last_user_text(Api::Responses, &codex).as_deref(),
            Some("!/show")
        );
        // An instruction after an assistant turn does not make that a user's.
        let answered = json!({"messages":[{"role":"user","content":"!/show"},
            {"role":"assistant","content":"ok"},{"role":"developer","content":"d"}]});
        assert_eq!(last_user_text(Api::ChatCompletions, &answered), None);
    }
}
