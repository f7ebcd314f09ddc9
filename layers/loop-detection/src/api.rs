//! The three API shapes whose answers are watched: where their text is, and how each ends a
//! stream with an error.

use std::borrow::Cow;

use serde::Deserialize;

use crate::scan;

/// Which API a request speaks, decided by its path (one type for every layer that
/// reads the three APIs).
pub use portcullis_core::api::Api;

// === streamed ===

#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChatChoice<'a>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: Option<ChatDelta<'a>>,
}

#[derive(Deserialize)]
struct ChatDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TypedEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Responses API: the text of `response.output_text.delta`.
    #[serde(default, borrow)]
    delta: Option<DeltaField<'a>>,
}

/// `delta` is a string in Responses events and an object in Anthropic ones.
#[derive(Deserialize)]
#[serde(untagged)]
enum DeltaField<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Block {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default, borrow)]
        text: Option<Cow<'a, str>>,
    },
}

/// The answer text in one SSE `data:` payload: `(choice index, text)` pieces, passed to `f`.
/// Payloads that carry no text, or are not the JSON expected, give nothing.
///
/// The cheap scan of [`crate::scan`] reads it (into `texts`, reused between events); where it
/// is not sure, serde decides ([`stream_text_serde`]), with the same result.
pub(crate) fn stream_text(
    api: Api,
    payload: &[u8],
    texts: &mut scan::Texts,
    f: &mut impl FnMut(u32, &str),
) {
    match scan::scan(api, payload, texts) {
        Ok(()) => texts.each(f),
        Err(scan::Unsure) => stream_text_serde(api, payload, f),
    }
}

/// Whether an event of `api` may carry answer text: its text key (`"content"`) or event type
/// (`output_text.delta`, `text_delta`) written out. An event without it gives no text, read
/// either way (a key or type written with `\u` escapes is not looked for).
pub(crate) fn may_hold_text(api: Api, payload: &[u8]) -> bool {
    match api {
        Api::ChatCompletions => portcullis_core::holds!(payload, b"\"content\""),
        Api::Responses => portcullis_core::holds!(payload, b"output_text.delta"),
        Api::Messages => portcullis_core::holds!(payload, b"text_delta"),
    }
}

/// [`stream_text`] with serde alone: typed, borrowed, unknown fields ignored.
pub(crate) fn stream_text_serde(api: Api, payload: &[u8], f: &mut impl FnMut(u32, &str)) {
    // Most events of a stream are text deltas, but the cheap test skips the rest unparsed.
    if !may_hold_text(api, payload) {
        return;
    }
    match api {
        Api::ChatCompletions => {
            if let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(payload) {
                for choice in chunk.choices {
                    if let Some(text) = choice.delta.and_then(|d| d.content) {
                        f(choice.index, &text);
                    }
                }
            }
        }
        Api::Responses | Api::Messages => {
            let Ok(event) = serde_json::from_slice::<TypedEvent<'_>>(payload) else {
                return;
            };
            match (api, &*event.kind, event.delta) {
                (Api::Responses, "response.output_text.delta", Some(DeltaField::Text(t))) => {
                    f(0, &t)
                }
                (
                    Api::Messages,
                    "content_block_delta",
                    Some(DeltaField::Block {
                        kind,
                        text: Some(t),
                    }),
                ) if kind == "text_delta" => f(0, &t),
                _ => {}
            }
        }
    }
}

// === not streamed ===

#[derive(Deserialize)]
struct ChatAnswer {
    #[serde(default)]
    choices: Vec<ChatAnswerChoice>,
}

#[derive(Deserialize)]
struct ChatAnswerChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ResponsesAnswer {
    #[serde(default)]
    output: Vec<OutputItem>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(default)]
    content: Option<Vec<ContentPart>>,
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessagesAnswer {
    #[serde(default)]
    content: Vec<ContentPart>,
}

/// The answer text of a whole JSON response body, as `(choice index, text)` pieces in order.
/// A body that is not the JSON expected gives nothing.
pub(crate) fn json_text(api: Api, body: &[u8], f: &mut impl FnMut(u32, &str)) {
    match api {
        Api::ChatCompletions => {
            // The scan first (no tree, no allocation but the text); serde when it is unsure.
            let mut texts = scan::Texts::default();
            if scan::scan_chat_answer(body, &mut texts).is_ok() {
                texts.each(f);
                return;
            }
            chat_answer_serde(body, f);
        }
        Api::Responses => {
            let Ok(answer) = serde_json::from_slice::<ResponsesAnswer>(body) else {
                return;
            };
            for part in answer.output.into_iter().flat_map(|o| o.content).flatten() {
                if part.kind == "output_text" {
                    if let Some(t) = part.text {
                        f(0, &t);
                    }
                }
            }
        }
        Api::Messages => {
            let Ok(answer) = serde_json::from_slice::<MessagesAnswer>(body) else {
                return;
            };
            for part in answer.content {
                if part.kind == "text" {
                    if let Some(t) = part.text {
                        f(0, &t);
                    }
                }
            }
        }
    }
}

/// The texts of a whole chat completion, read with serde alone (content as a string or as
/// content parts).
pub(crate) fn chat_answer_serde(body: &[u8], f: &mut impl FnMut(u32, &str)) {
    let Ok(answer) = serde_json::from_slice::<ChatAnswer>(body) else {
        return;
    };
    for choice in answer.choices {
        match choice.message.and_then(|m| m.content) {
            Some(serde_json::Value::String(s)) => f(choice.index, &s),
            // Content parts (some compatible servers answer with them).
            Some(serde_json::Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                        f(choice.index, t);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(api: Api, payload: &str) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        stream_text(
            api,
            payload.as_bytes(),
            &mut scan::Texts::default(),
            &mut |i, t| v.push((i, t.to_owned())),
        );
        let mut w = Vec::new();
        stream_text_serde(api, payload.as_bytes(), &mut |i, t| {
            w.push((i, t.to_owned()))
        });
        assert_eq!(v, w, "{payload}");
        v
    }

    #[test]
    fn stream_text_of_each_api() {
        assert_eq!(
            texts(
                Api::ChatCompletions,
                r#"{"choices":[{"index":1,"delta":{"content":"a\"b"}}]}"#
            ),
            [(1, "a\"b".to_owned())]
        );
        assert!(texts(
            Api::ChatCompletions,
            r#"{"choices":[{"delta":{"content":null}}]}"#
        )
        .is_empty());
        assert_eq!(
            texts(
                Api::Responses,
                r#"{"type":"response.output_text.delta","item_id":"m","delta":"hi"}"#
            ),
            [(0, "hi".to_owned())]
        );
        assert!(texts(
            Api::Responses,
            r#"{"type":"response.function_call_arguments.delta","delta":"output_text.delta"}"#
        )
        .is_empty());
        assert_eq!(
            texts(
                Api::Messages,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"yo"}}"#
            ),
            [(0, "yo".to_owned())]
        );
        assert!(texts(
            Api::Messages,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"text_delta"}}"#
        )
        .is_empty());
        assert!(texts(Api::Messages, "not json text_delta").is_empty());
    }

    #[test]
    fn json_text_of_each_api() {
        let mut v = Vec::new();
        json_text(
            Api::Responses,
            br#"{"output":[{"type":"reasoning","summary":[]},{"type":"message","content":[{"type":"output_text","text":"a"},{"type":"refusal","refusal":"x"}]}]}"#,
            &mut |i, t| v.push((i, t.to_owned())),
        );
        json_text(
            Api::Messages,
            br#"{"content":[{"type":"text","text":"b"},{"type":"tool_use","name":"t","input":{}}]}"#,
            &mut |i, t| v.push((i, t.to_owned())),
        );
        json_text(
            Api::ChatCompletions,
            br#"{"choices":[{"index":0,"message":{"content":"c"}},{"index":1,"message":{"content":null}}]}"#,
            &mut |i, t| v.push((i, t.to_owned())),
        );
        json_text(Api::ChatCompletions, b"{oops", &mut |i, t| {
            v.push((i, t.to_owned()))
        });
        assert_eq!(v, [(0, "a".into()), (0, "b".into()), (0, "c".into())]);
    }

    #[test]
    fn error_events_are_the_interface_shapes() {
        let chat = Api::ChatCompletions.error_event("loop_detected", "api_error", "m");
        assert!(chat.starts_with(b"data: {") && chat.ends_with(b"}\n\n"));
        let json: serde_json::Value = serde_json::from_slice(&chat[6..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error":{"message":"m","type":"api_error","code":"loop_detected"}})
        );
        let msgs = Api::Messages.error_event("loop_detected", "api_error", "m");
        assert!(msgs.starts_with(b"event: error\ndata: {\""));
        // Responses: `response.failed`, then the error event, last.
        let resp = Api::Responses.error_event("loop_detected", "api_error", "m");
        assert!(resp.starts_with(b"event: response.failed\n"));
        let last = std::str::from_utf8(&resp)
            .unwrap()
            .trim_end()
            .rsplit("\n\n")
            .next();
        let json: serde_json::Value = serde_json::from_str(
            last.and_then(|e| e.strip_prefix("event: error\ndata: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "loop_detected");
    }
}
