//! The note `chance_then_block` adds to a looping session's next request.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::{session::Note, Api};

/// What the model is told.
pub(crate) fn text(note: &Note) -> String {
    format!(
        "Note from the gateway: you have called the tool `{}` {} times in a row with exactly the same arguments, \
         and repeating it is not making progress. Do not make this call again with the same arguments: \
         try something else (a different tool, different arguments, or answer with what you have).",
        note.tool, note.repeats
    )
}

/// The request body with `note` appended as a user message in `api`'s shape; `None` when the
/// body is not the JSON object expected (it is then sent unchanged).
///
/// - chat completions: a `{"role":"user","content":NOTE}` message at the end of `messages`;
/// - messages: a text block at the end of the last message if it is the user's (where the
///   tool results are, which must stay first), else a new user message;
/// - responses: a user `message` item at the end of `input` (a string `input` becomes a list).
pub(crate) fn append(api: Api, body: &[u8], note: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    match api {
        Api::ChatCompletions => {
            obj.get_mut("messages")?
                .as_array_mut()?
                .push(json!({ "role": "user", "content": note }));
        }
        Api::Messages => {
            let messages = obj.get_mut("messages")?.as_array_mut()?;
            let block = json!({ "type": "text", "text": note });
            let last_user = messages
                .last_mut()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"));
            match last_user.and_then(|m| m.get_mut("content")) {
                Some(Value::Array(blocks)) => blocks.push(block),
                Some(content @ Value::String(_)) => {
                    let text = content.take();
                    *content = json!([{ "type": "text", "text": text }, block]);
                }
                _ => messages.push(json!({ "role": "user", "content": [block] })),
            }
        }
        Api::Responses => {
            let item = json!({ "type": "message", "role": "user", "content": note });
            match obj.get_mut("input") {
                Some(Value::Array(items)) => items.push(item),
                Some(input @ Value::String(_)) => {
                    let text = input.take();
                    *input = json!([{ "type": "message", "role": "user", "content": text }, item]);
                }
                Some(_) => return None,
                None => {
                    obj.insert("input".to_owned(), json!([item]));
                }
            }
        }
    }
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(api: Api, body: Value) -> Value {
        serde_json::from_slice(&append(api, body.to_string().as_bytes(), "N").unwrap()).unwrap()
    }

    #[test]
    fn each_shape_gets_a_user_message() {
        let chat = added(
            Api::ChatCompletions,
            json!({"model":"m","messages":[{"role":"tool","tool_call_id":"c","content":"x"}]}),
        );
        assert_eq!(chat["messages"][1], json!({"role":"user","content":"N"}));

        let tool_result = json!({"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"x"}]}]});
        let m = added(Api::Messages, tool_result);
        assert_eq!(m["messages"].as_array().unwrap().len(), 1);
        assert_eq!(
            m["messages"][0]["content"][1],
            json!({"type":"text","text":"N"})
        );
        let m = added(
            Api::Messages,
            json!({"messages":[{"role":"user","content":"hi"}]}),
        );
        assert_eq!(
            m["messages"][0]["content"],
            json!([{"type":"text","text":"hi"},{"type":"text","text":"N"}])
        );
        let m = added(
            Api::Messages,
            json!({"messages":[{"role":"assistant","content":"x"}]}),
        );
        assert_eq!(m["messages"][1]["role"], "user");

        let r = added(
            Api::Responses,
            json!({"input":[{"type":"function_call_output","call_id":"c","output":"x"}]}),
        );
        assert_eq!(
            r["input"][1],
            json!({"type":"message","role":"user","content":"N"})
        );
        let r = added(Api::Responses, json!({"input":"hi"}));
        assert_eq!(r["input"][0]["content"], "hi");
        assert_eq!(r["input"][1]["content"], "N");
        let r = added(Api::Responses, json!({"previous_response_id":"resp_1"}));
        assert_eq!(r["input"][0]["content"], "N");

        assert!(append(Api::ChatCompletions, b"not json", "N").is_none());
        assert!(append(Api::ChatCompletions, b"{}", "N").is_none());
    }
}
