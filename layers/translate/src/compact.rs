//! Compaction of a Responses conversation, for an upstream the gateway translates for.
//!
//! OpenAI compacts a long conversation into a `compaction` item (opaque, encrypted for its
//! models) that stands for everything but the user's messages. Codex asks for it on its own
//! OpenAI provider (a gateway set as `openai_base_url`) whatever the model, in one of two
//! forms: an ordinary `POST /v1/responses` whose last input item is `{"type":
//! "compaction_trigger"}`, answered with exactly one `compaction` output item (what Codex
//! 0.171 sends), or the older `POST /v1/responses/compact`, answered with the compacted list
//! of items in one JSON body. To a translated upstream either would be a 400 or a 404, and
//! the session could not go on.
//!
//! Here the model itself writes the compaction: the conversation goes to the upstream as an
//! ordinary request (translated like any other, `tool_choice: "none"`, unstreamed, nothing
//! stored) with one more user message asking for a summary to continue from, and the
//! summary comes back as a `compaction` item whose `encrypted_content` is the summary behind
//! a marker ([`ITEM_PREFIX`]); a streamed request is answered at once and kept alive while
//! the model writes ([`Compacting`]). When that item comes back in a later request's input, the
//! request translator turns it into a user message holding the summary ([`carried`]); a
//! `compaction` item of OpenAI's own (from a session that moved from an OpenAI model) cannot
//! be read by another model and is left out.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::{api::Format, error::TranslateError};

/// The request for the summary, as the last user message of the conversation.
const PROMPT: &str = "The conversation above is about to be compacted: everything before this \
message will be replaced by what you write now, and work will continue from it. Write that \
summary for whoever continues the task (you, without the earlier turns): the user's goal and \
constraints, what has been done so far (files read and changed, commands run and what they \
showed), decisions taken and why, what is still open or failing, and the precise next steps. \
Keep every name, path, value and error message needed to go on; leave out what is not. Do \
not call tools; answer with the summary only.";

/// The first line of the summary when it goes back to a model.
const SUMMARY_HEAD: &str = "Summary of the earlier part of this conversation, written when \
its context was compacted (the turns it covers are no longer in the history):";

/// How a `compaction` item made here begins (`encrypted_content`): the summary follows.
pub(crate) const ITEM_PREFIX: &str = "portcullis-summary-v1:";

/// The body-signal form's marker, as it appears in a body (a cheap test before parsing).
pub(crate) const TRIGGER: &[u8] = b"\"compaction_trigger\"";

fn invalid(message: impl Into<String>) -> TranslateError {
    TranslateError::InvalidRequest {
        format: Format::Responses,
        message: message.into(),
    }
}

fn bad_answer(message: &str) -> TranslateError {
    TranslateError::InvalidUpstream {
        format: Format::Responses,
        message: message.to_owned(),
    }
}

/// What a compaction request becomes.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The Responses request asking the model for the summary.
    pub(crate) body: Bytes,
    /// The user messages of the conversation, as sent (the compacted history keeps them).
    pub(crate) kept: Vec<Value>,
    /// Whether the client asked for a stream.
    pub(crate) stream: bool,
    /// The model the client named.
    pub(crate) model: String,
}

/// A body-signal compaction request (a Responses request whose last input item is a
/// `compaction_trigger`) as the request for the summary; `None` for any other request.
pub(crate) fn trigger_request(body: &[u8]) -> Result<Option<Ask>, TranslateError> {
    if memchr::memmem::find(body, TRIGGER).is_none() {
        return Ok(None);
    }
    let req: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let last_is_trigger = req
        .get("input")
        .and_then(Value::as_array)
        .and_then(|items| items.last())
        .and_then(|item| item.get("type"))
        .and_then(Value::as_str)
        == Some("compaction_trigger");
    if !last_is_trigger {
        return Ok(None);
    }
    summary_request(req).map(Some)
}

/// The `POST /v1/responses/compact` request `body` as the request for the summary.
pub(crate) fn compact_request(body: &[u8]) -> Result<Ask, TranslateError> {
    let req: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    summary_request(req)
}

fn summary_request(mut req: Map<String, Value>) -> Result<Ask, TranslateError> {
    let mut input = match req.remove("input") {
        Some(Value::Array(items)) => items,
        Some(Value::String(text)) => vec![json!({"role": "user", "content": text})],
        Some(_) => return Err(invalid("input: must be a string or an array of items")),
        None => return Err(invalid("input: missing")),
    };
    input.retain(|i| i.get("type").and_then(Value::as_str) != Some("compaction_trigger"));
    let kept = input
        .iter()
        .filter(|i| is_user_message(i))
        .map(as_message_item)
        .collect();
    input.push(json!({"type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": PROMPT}]}));
    req.insert("input".into(), Value::Array(input));
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // One plain answer, kept nowhere: the summary is what comes back.
    req.insert("stream".into(), Value::Bool(false));
    req.insert("store".into(), Value::Bool(false));
    req.remove("stream_options");
    // (A `previous_response_id` left here is resolved by the layer's store.)
    if req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        // Offered (a history with calls needs their definitions), never called.
        req.insert("tool_choice".into(), Value::String("none".into()));
    }
    // Not a format of the client's choosing: the summary is prose.
    if let Some(Value::Object(text)) = req.get_mut("text") {
        text.remove("format");
    }
    Ok(Ask {
        body: Bytes::from(Value::Object(req).to_string()),
        kept,
        stream,
        model,
    })
}

/// A message item of the user's (`{"role": "user", ...}`, with or without `"type":
/// "message"`).
fn is_user_message(item: &Value) -> bool {
    item.get("role").and_then(Value::as_str) == Some("user")
        && item
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "message")
}

/// A user message as OpenAI lists one: a `message` item, its text as an `input_text` part.
fn as_message_item(message: &Value) -> Value {
    let mut item = message.clone();
    item["type"] = json!("message");
    if let Some(Value::String(text)) = item.get("content") {
        item["content"] = json!([{"type": "input_text", "text": text}]);
    }
    item
}

/// The summary a `compaction` item's `encrypted_content` carries, if the item was made here;
/// as the text a model reads in its place.
pub(crate) fn carried(encrypted_content: Option<&str>) -> Option<String> {
    let summary = encrypted_content?.strip_prefix(ITEM_PREFIX)?;
    Some(format!("{SUMMARY_HEAD}\n\n{summary}"))
}

/// The (translated) Responses `answer`, parsed, and the model's summary in it.
fn parse_summary(answer: &[u8]) -> Result<(Value, String), TranslateError> {
    let answer: Value = serde_json::from_slice(answer).map_err(|_| bad_answer("not JSON"))?;
    let summary: String = answer
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_answer("no output"))?
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect();
    if summary.trim().is_empty() {
        return Err(bad_answer("the model wrote no summary"));
    }
    Ok((answer, summary))
}

/// The id of the compaction made by the response `id` (`resp_x` -> `cmp_x`).
fn compaction_id(id: &str) -> String {
    format!("cmp_{}", id.strip_prefix("resp_").unwrap_or(id))
}

/// The `compaction` item holding `summary`, named after the response `id`.
fn item(summary: &str, id: &str) -> Value {
    json!({"type": "compaction", "id": compaction_id(id),
           "encrypted_content": format!("{ITEM_PREFIX}{summary}")})
}

/// The unstreamed answer to a body-signal compaction request, from the upstream's
/// (translated, unstreamed) Responses `answer`: the response with one `compaction` output
/// item.
pub(crate) fn trigger_answer(answer: &[u8]) -> Result<Bytes, TranslateError> {
    let (mut response, summary) = parse_summary(answer)?;
    let id = response
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("resp_");
    response["output"] = json!([item(&summary, id)]);
    response["status"] = json!("completed");
    Ok(Bytes::from(response.to_string()))
}

/// How often a streamed compaction tells the client it is still at work while the model
/// writes the summary (`response.compaction.compacting`, as OpenAI sends while it samples
/// one): a slow model (a local one summarising a long session) takes minutes, and a client
/// ends a stream silent for longer than its idle timeout (Codex: 5 minutes).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(10);

/// What the summary request came to: the upstream's translated Responses answer (2xx), or
/// the error code and message to end the stream with.
pub(crate) type Summary = Pin<Box<dyn Future<Output = Result<Bytes, (String, String)>> + Send>>;

/// The streamed answer to a body-signal compaction: `response.created` and
/// `response.in_progress` at once, `response.compaction.compacting` every [`KEEPALIVE`] while
/// the model writes, then the `compaction` item (`output_item.added`, `output_item.done`) and
/// `response.completed`; or, if the summary failed, `response.failed` and the error event.
pub(crate) struct Compacting {
    head: Option<Bytes>,
    summary: Summary,
    tick: tokio::time::Interval,
    response: Value,
    item_id: String,
    seq: u64,
    done: bool,
}

impl std::fmt::Debug for Compacting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compacting")
            .field("item_id", &self.item_id)
            .field("seq", &self.seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Compacting {
    /// The stream of the response `id` for `model`, its summary to come from `summary`.
    pub(crate) fn new(id: &str, model: &str, summary: Summary) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = json!({"id": id, "object": "response", "created_at": created_at,
            "status": "in_progress", "model": model, "output": [], "error": null,
            "usage": null});
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        // A reader that was away gets one event, not one per tick it missed.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut this = Compacting {
            head: None,
            summary,
            tick,
            item_id: compaction_id(id),
            response,
            seq: 0,
            done: false,
        };
        let mut head = String::new();
        let started = json!({"response": this.response});
        this.event(&mut head, "response.created", started.clone());
        this.event(&mut head, "response.in_progress", started);
        this.head = Some(Bytes::from(head));
        this
    }

    fn event(&mut self, out: &mut String, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    /// The events of the end: the item and the completed response, or the failure.
    fn end(&mut self, summary: Result<Bytes, (String, String)>) -> Bytes {
        let mut out = String::new();
        let answer = summary.and_then(|answer| {
            parse_summary(&answer).map_err(|e| ("upstream_error".to_owned(), e.to_string()))
        });
        match answer {
            Ok((answer, text)) => {
                // Named as the `compacting` events named it.
                let item = item(&text, self.response["id"].as_str().unwrap_or("resp_"));
                let added = json!({"output_index": 0, "item": item});
                self.event(&mut out, "response.output_item.added", added.clone());
                self.event(&mut out, "response.output_item.done", added);
                let mut done = self.response.clone();
                done["status"] = json!("completed");
                done["output"] = json!([item]);
                done["usage"] = answer.get("usage").cloned().unwrap_or(Value::Null);
                self.event(&mut out, "response.completed", json!({"response": done}));
            }
            Err((code, message)) => {
                let mut failed = self.response.clone();
                failed["status"] = json!("failed");
                failed["error"] = json!({"code": code, "message": message});
                self.event(&mut out, "response.failed", json!({"response": failed}));
                self.event(
                    &mut out,
                    "error",
                    json!({"code": code, "message": message, "param": null}),
                );
            }
        }
        Bytes::from(out)
    }

    /// The next piece of the stream.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(head));
        }
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(summary) = self.summary.as_mut().poll(cx) {
            self.done = true;
            return Poll::Ready(Some(self.end(summary)));
        }
        if self.tick.poll_tick(cx).is_ready() {
            let mut out = String::new();
            let data = json!({"item_id": self.item_id, "output_index": 0});
            self.event(&mut out, "response.compaction.compacting", data);
            return Poll::Ready(Some(Bytes::from(out)));
        }
        Poll::Pending
    }

    /// Whether the stream has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.done && self.head.is_none()
    }
}

/// The code and message of an upstream's error answer (translated to the Responses shape,
/// `{"error": {"code", "message"}}`), for the stream's end.
pub(crate) fn error_of(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v["error"][k].as_str().map(str::to_owned);
    (
        text("code")
            .or_else(|| text("type"))
            .unwrap_or_else(|| "upstream_error".to_owned()),
        text("message").unwrap_or_else(|| {
            format!(
                "the summary failed: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        }),
    )
}

/// The answer to `POST /v1/responses/compact`, from the upstream's (translated) Responses
/// `answer`: the kept user messages, then the `compaction` item.
pub(crate) fn compact_answer(answer: &[u8], kept: Vec<Value>) -> Result<Bytes, TranslateError> {
    let (answer, summary) = parse_summary(answer)?;
    let id = answer.get("id").and_then(Value::as_str).unwrap_or("resp_");
    let mut output = kept;
    output.push(item(&summary, id));
    let body = json!({
        "id": compaction_id(id),
        "object": "response.compaction",
        "created_at": answer.get("created_at").cloned().unwrap_or(Value::Null),
        "output": output,
        "usage": answer.get("usage").cloned().unwrap_or(Value::Null),
    });
    Ok(Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Value {
        json!({
            "model": "claude-sonnet-4-5", "instructions": "be brief", "stream": true,
            "tools": [{"type": "function", "name": "shell", "parameters": {}}],
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "input": [
                {"type": "message", "role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]},
                {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"role": "user", "content": "and test it"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
                {"type": "compaction_trigger"},
            ],
        })
    }

    #[test]
    fn a_trigger_becomes_the_ask_for_a_summary() {
        let body = conversation();
        let ask = trigger_request(body.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert!(ask.stream);
        let req: Value = serde_json::from_slice(&ask.body).unwrap();
        assert_eq!(
            (&req["stream"], &req["store"]),
            (&json!(false), &json!(false))
        );
        assert_eq!(req["tool_choice"], "none");
        assert_eq!(req["instructions"], "be brief");
        assert_eq!(req["text"], json!({"verbosity": "low"}));
        let input = req["input"].as_array().unwrap();
        assert_eq!(input.len(), 7, "the trigger replaced by the ask");
        assert_eq!(input[..6], body["input"].as_array().unwrap()[..6]);
        assert_eq!(input[6]["role"], "user");
        assert!(input[6]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("compacted"));
        let and_test = json!({"role": "user", "type": "message",
                              "content": [{"type": "input_text", "text": "and test it"}]});
        assert_eq!(ask.kept, vec![body["input"][1].clone(), and_test]);

        // Not a compaction: no trigger, or one that is not the last item.
        let plain = json!({"model": "m", "input": "compaction_trigger"});
        assert!(trigger_request(plain.to_string().as_bytes())
            .unwrap()
            .is_none());
        let mut early = body.clone();
        early["input"].as_array_mut().unwrap().swap(5, 6);
        assert!(trigger_request(early.to_string().as_bytes())
            .unwrap()
            .is_none());
        assert!(trigger_request(b"{\"type\": \"compaction_trigger\"").is_err());
    }

    #[test]
    fn the_compact_endpoints_request_is_the_same_ask() {
        let ask = compact_request(br#"{"model": "m", "input": "hi"}"#).unwrap();
        let hi = json!({"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "hi"}]});
        assert_eq!(ask.kept, vec![hi]);
        assert!(!ask.stream);
        let req: Value = serde_json::from_slice(&ask.body).unwrap();
        assert!(req.get("tool_choice").is_none());
        // A chain stays for the store to put first.
        let ask = compact_request(
            br#"{"model": "m", "input": "hi", "previous_response_id": "resp_pc1"}"#,
        )
        .unwrap();
        let req: Value = serde_json::from_slice(&ask.body).unwrap();
        assert_eq!(req["previous_response_id"], "resp_pc1");
        for bad in [
            &b"[1]"[..],
            b"{\"model\": \"m\"}",
            b"{\"model\": \"m\", \"input\": 3}",
            b"{",
        ] {
            assert!(matches!(
                compact_request(bad),
                Err(TranslateError::InvalidRequest { .. })
            ));
        }
    }

    fn answer() -> Value {
        json!({"id": "resp_pc1", "object": "response", "created_at": 7, "status": "completed",
            "model": "claude-sonnet-4-5", "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Goal: fix it. "},
                {"type": "output_text", "text": "Next: run the tests."}]}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}})
    }

    #[test]
    fn the_summary_comes_back_as_one_compaction_item_and_goes_up_as_text() {
        let body = trigger_answer(answer().to_string().as_bytes()).unwrap();
        let response: Value = serde_json::from_slice(&body).unwrap();
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 1);
        assert_eq!(output[0]["type"], "compaction");
        assert_eq!(output[0]["id"], "cmp_pc1");
        assert_eq!(response["usage"]["total_tokens"], 15);
        let text = carried(output[0]["encrypted_content"].as_str()).unwrap();
        assert!(text.starts_with(SUMMARY_HEAD), "{text}");
        assert!(
            text.ends_with("Goal: fix it. Next: run the tests."),
            "{text}"
        );
        // OpenAI's own items are not ours to read.
        assert_eq!(carried(Some("gAAAAABo...")), None);
        assert_eq!(carried(None), None);
        let empty = json!({"output": [{"type": "message", "content": []}]});
        assert!(matches!(
            trigger_answer(empty.to_string().as_bytes()),
            Err(TranslateError::InvalidUpstream { .. })
        ));
    }

    /// The events of one piece of a [`Compacting`] stream.
    fn events(piece: &Bytes) -> Vec<Value> {
        std::str::from_utf8(piece)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    /// The next piece, polled once as a body's reader would (`None`: nothing yet).
    async fn next(stream: &mut Compacting) -> Option<Option<Bytes>> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match stream.poll_next(cx) {
                Poll::Ready(p) => Some(p),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_compaction_says_it_is_at_work_until_the_summary_comes() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Bytes, (String, String)>>();
        let summary: Summary = Box::pin(async move { rx.await.unwrap() });
        let mut stream = Compacting::new("resp_pc9", "claude-sonnet-4-5", summary);
        let head = events(&next(&mut stream).await.unwrap().unwrap());
        assert_eq!(kinds(&head), ["response.created", "response.in_progress"]);
        assert_eq!(head[0]["response"]["id"], "resp_pc9");
        assert_eq!(head[0]["response"]["model"], "claude-sonnet-4-5");
        assert!(
            next(&mut stream).await.is_none(),
            "nothing until the first tick"
        );
        // While the model writes: one `compacting` event every KEEPALIVE.
        for seq in [2, 3] {
            tokio::time::advance(KEEPALIVE).await;
            let tick = events(&next(&mut stream).await.unwrap().unwrap());
            assert_eq!(kinds(&tick), ["response.compaction.compacting"]);
            assert_eq!(
                (&tick[0]["item_id"], &tick[0]["sequence_number"]),
                (&json!("cmp_pc9"), &json!(seq))
            );
        }
        tx.send(Ok(Bytes::from(answer().to_string()))).unwrap();
        let end = events(&next(&mut stream).await.unwrap().unwrap());
        assert_eq!(
            kinds(&end),
            [
                "response.output_item.added",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(end[1]["item"]["type"], "compaction");
        assert_eq!(end[1]["item"]["id"], "cmp_pc9");
        assert!(carried(end[1]["item"]["encrypted_content"].as_str())
            .unwrap()
            .ends_with("run the tests."));
        assert_eq!(end[2]["response"]["output"][0], end[1]["item"]);
        assert_eq!(
            (&end[2]["response"]["status"], &end[2]["sequence_number"]),
            (&json!("completed"), &json!(6))
        );
        assert_eq!(end[2]["response"]["usage"]["total_tokens"], 15);
        assert_eq!(next(&mut stream).await, Some(None));
        assert!(stream.is_done());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_summary_ends_the_stream_with_the_reason() {
        let summary: Summary = Box::pin(async {
            Err((
                "context_length_exceeded".to_owned(),
                "prompt is too long".to_owned(),
            ))
        });
        let mut stream = Compacting::new("resp_pc8", "local-qwen", summary);
        next(&mut stream).await.unwrap().unwrap();
        let end = events(&next(&mut stream).await.unwrap().unwrap());
        assert_eq!(kinds(&end), ["response.failed", "error"]);
        assert_eq!(
            end[0]["response"]["error"]["code"],
            "context_length_exceeded"
        );
        assert_eq!(
            (&end[1]["code"], &end[1]["message"]),
            (
                &json!("context_length_exceeded"),
                &json!("prompt is too long")
            )
        );
        // An upstream error body gives its code and message.
        let body =
            br#"{"error": {"message": "too long", "type": "invalid_request_error", "code": null}}"#;
        assert_eq!(
            error_of(body),
            ("invalid_request_error".to_owned(), "too long".to_owned())
        );
        assert_eq!(error_of(b"<html>").0, "upstream_error");
    }

    #[test]
    fn the_compact_endpoint_answers_the_kept_messages_and_the_item() {
        let kept = vec![json!({"role": "user", "content": "fix it"})];
        let out: Value = serde_json::from_slice(
            &compact_answer(answer().to_string().as_bytes(), kept.clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(out["object"], "response.compaction");
        assert_eq!(out["id"], "cmp_pc1");
        let output = out["output"].as_array().unwrap();
        assert_eq!(output[0], kept[0]);
        assert_eq!(output[1]["type"], "compaction");
        assert!(carried(output[1]["encrypted_content"].as_str())
            .unwrap()
            .ends_with("run the tests."));
    }
}
