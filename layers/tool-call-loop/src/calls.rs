//! The tool calls of an answer: read from whole JSON answers or assembled from stream events,
//! in the three API shapes, with their arguments in canonical form.

use std::{borrow::Cow, fmt::Write as _};

use portcullis_core::holds;
use serde::Deserialize;
use serde_json::Value;

use crate::Api;

/// Calls per answer kept; more are not told apart (bounded memory per answer).
const MAX_CALLS: usize = 64;
/// Argument bytes per answer assembled from a stream; past it the answer is not recorded.
const MAX_ARGUMENT_BYTES: usize = 1024 * 1024;

/// One tool call: the tool's name and its arguments in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolCall {
    /// The tool (function) name.
    pub name: String,
    /// [`canonical_arguments`] of what the model sent.
    pub arguments: String,
}

impl ToolCall {
    /// A call of `name` with the raw `arguments` text (canonicalised here).
    pub fn new(name: impl Into<String>, arguments: &str) -> Self {
        Self {
            name: name.into(),
            arguments: canonical_arguments(arguments),
        }
    }

    fn from_value(name: impl Into<String>, arguments: &Value) -> Self {
        let mut out = String::new();
        write_canonical(&mut out, arguments);
        Self {
            name: name.into(),
            arguments: out,
        }
    }
}

/// The canonical form of tool-call arguments: the JSON parsed and written again with object
/// keys sorted and no whitespace, so `{"b":1, "a":2}` and `{"a":2,"b":1}` are the same call.
/// Text that is not JSON is kept as it is, without surrounding whitespace; empty text is `{}`
/// (what a call without arguments streams as).
///
/// ```
/// use portcullis_tool_call_loop::canonical_arguments;
///
/// assert_eq!(canonical_arguments(r#"{ "path": "a.rs", "opts": {"z": 1, "a": [true, null]} }"#),
///            r#"{"opts":{"a":[true,null],"z":1},"path":"a.rs"}"#);
/// assert_eq!(canonical_arguments(" not json "), "not json");
/// assert_eq!(canonical_arguments(""), "{}");
/// ```
pub fn canonical_arguments(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return "{}".to_owned();
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => {
            let mut out = String::with_capacity(raw.len());
            write_canonical(&mut out, &v);
            out
        }
        Err(_) => raw.to_owned(),
    }
}

/// Sorted explicitly: `serde_json`'s map order depends on a cargo feature another crate in the
/// build may turn on.
fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}", Value::String(k.clone()));
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// What identifies an answer's tool calls: a hash of every call, in order.
pub(crate) type Fingerprint = [u8; 16];

pub(crate) fn fingerprint(calls: &[ToolCall]) -> Fingerprint {
    static CONTEXT: portcullis_core::hash::DeriveKey =
        portcullis_core::hash::DeriveKey::new("portcullis tool-call-loop calls v1");
    let mut h = CONTEXT.framed();
    for c in calls {
        h.field(c.name.as_bytes());
        h.field(c.arguments.as_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

// === whole answers ===

/// The tool calls of a whole JSON answer, in order (none: an answer without tool calls).
/// `None` when the body is not the JSON answer expected: nothing is recorded for it.
pub(crate) fn json_calls(api: Api, body: &[u8]) -> Option<Vec<ToolCall>> {
    match plainly_without_calls(api, body) {
        Some(none) => none,
        None => parsed_calls(api, body),
    }
}

/// [`json_calls`] by parsing the whole answer; not an answer of more values than a tree is
/// built of (`json_skim::MAX_VALUES`: a `Value` of a 10 MB answer of `0,0,0,…` is ~300 MB),
/// which no model writes: nothing is recorded for it.
fn parsed_calls(api: Api, body: &[u8]) -> Option<Vec<ToolCall>> {
    let max = portcullis_core::json_skim::MAX_VALUES;
    if portcullis_core::json_skim::more_values_than(body, max) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut calls = Vec::new();
    match api {
        Api::ChatCompletions => {
            for choice in v.get("choices")?.as_array()? {
                let tool_calls = choice
                    .get("message")
                    .and_then(|m| m.get("tool_calls"))
                    .and_then(Value::as_array);
                for tc in tool_calls.into_iter().flatten() {
                    let f = tc.get("function");
                    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
                    let args = f.and_then(|f| f.get("arguments"));
                    if let Some(name) = name {
                        calls.push(match args {
                            Some(Value::String(s)) => ToolCall::new(name, s),
                            Some(other) => ToolCall::from_value(name, other),
                            None => ToolCall::new(name, ""),
                        });
                    }
                }
            }
        }
        Api::Responses => {
            for item in v.get("output")?.as_array()? {
                if let Some(call) = responses_item(item) {
                    calls.push(call);
                }
            }
        }
        Api::Messages => {
            for block in v.get("content")?.as_array()? {
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    if let Some(name) = block.get("name").and_then(Value::as_str) {
                        let input = block.get("input").cloned().unwrap_or(Value::Null);
                        calls.push(ToolCall::from_value(name, &input));
                    }
                }
            }
        }
    }
    calls.truncate(MAX_CALLS);
    Some(calls)
}

/// Most answers carry no tool call, and parsing each whole into a `Value` to learn that cost
/// more than the rest of the layer: an answer whose bytes hold none of the API's tool-call
/// markers (and no `\u` escape that could spell one) and that has the answer's list is an
/// answer without calls. `None`: parse it.
fn plainly_without_calls(api: Api, body: &[u8]) -> Option<Option<Vec<ToolCall>>> {
    if holds!(body, b"\\u") {
        return None;
    }
    // The API's tool-call markers first, then the answer's list.
    let plain = match api {
        Api::ChatCompletions => {
            !holds!(body, b"\"tool_calls\"")
                && !holds!(body, b"\"function_call\"")
                && holds!(body, b"\"choices\"")
        }
        Api::Responses => {
            !holds!(body, b"\"function_call\"")
                && !holds!(body, b"\"custom_tool_call\"")
                && holds!(body, b"\"output\"")
        }
        Api::Messages => !holds!(body, b"\"tool_use\"") && holds!(body, b"\"content\""),
    };
    if !plain {
        return None;
    }
    // Still a JSON answer (not an error object that happens to name the list).
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    (*first == b'{').then_some(Some(Vec::new()))
}

/// A Responses API output item that is a tool call: `function_call` (`arguments` text) or
/// `custom_tool_call` (`input` text).
fn responses_item(item: &Value) -> Option<ToolCall> {
    let kind = item.get("type")?.as_str()?;
    let field = match kind {
        "function_call" => "arguments",
        "custom_tool_call" => "input",
        _ => return None,
    };
    let name = item.get("name")?.as_str()?;
    Some(ToolCall::new(
        name,
        item.get(field).and_then(Value::as_str).unwrap_or(""),
    ))
}

// === streams ===

/// Tool calls assembled from the events of one streamed answer.
#[derive(Debug)]
pub(crate) struct StreamCalls {
    api: Api,
    /// `(choice, index or block index)` -> name and argument text so far, in arrival order.
    parts: Vec<Part>,
    /// Finished calls (Responses items).
    done: Vec<ToolCall>,
    bytes: usize,
    /// Too much to hold: the answer is not recorded.
    over: bool,
}

#[derive(Debug)]
struct Part {
    key: (u32, u32),
    name: String,
    arguments: String,
    /// Anthropic: the `input` of `content_block_start`, used when no delta follows.
    start_input: Option<Value>,
}

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
    tool_calls: Option<Vec<ChatToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ChatToolDelta<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    function: Option<ChatFunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct ChatFunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// What a stream event meant for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Nothing that ends the answer.
    More,
    /// The answer is complete (`[DONE]`, `response.completed`, `message_stop`).
    End,
}

impl StreamCalls {
    /// Whether anything in `events` (whole events) is something [`line`](Self::line) reacts
    /// to: a call's marker or the answer's end, written as `line` looks for them. Events
    /// without any are [`Event::More`] and add no call, read or not. (A Messages event's type
    /// is read by serde, which would also read `message_stop` written with `\u` escapes: any
    /// escape of that kind counts.)
    pub(crate) fn may_react(api: Api, events: &[u8]) -> bool {
        match api {
            Api::ChatCompletions => holds!(events, b"\"tool_calls\"") || holds!(events, b"[DONE]"),
            Api::Responses => {
                holds!(events, b"response.completed")
                    || holds!(events, b"response.output_item.done")
            }
            Api::Messages => {
                holds!(events, b"message_stop")
                    || holds!(events, b"\"tool_use\"")
                    || holds!(events, b"input_json_delta")
                    || holds!(events, b"\\u")
            }
        }
    }

    pub(crate) fn new(api: Api) -> Self {
        Self {
            api,
            parts: Vec::new(),
            done: Vec::new(),
            bytes: 0,
            over: false,
        }
    }

    /// One SSE line (without its line ending).
    pub(crate) fn line(&mut self, line: &[u8]) -> Event {
        if self.api == Api::Responses && line == b"event: response.completed" {
            return Event::End;
        }
        let Some(payload) = crate::sse::data_payload(line) else {
            return Event::More;
        };
        match self.api {
            Api::ChatCompletions => self.chat(payload),
            Api::Responses => self.responses(payload),
            Api::Messages => self.messages(payload),
        }
    }

    fn chat(&mut self, payload: &[u8]) -> Event {
        if payload.trim_ascii() == b"[DONE]" {
            return Event::End;
        }
        if !holds!(payload, b"\"tool_calls\"") {
            return Event::More;
        }
        let Ok(chunk) = serde_json::from_slice::<ChatChunk<'_>>(payload) else {
            return Event::More;
        };
        for choice in chunk.choices {
            for tc in choice
                .delta
                .and_then(|d| d.tool_calls)
                .into_iter()
                .flatten()
            {
                let f = tc.function;
                let (name, args) = f.map_or((None, None), |f| (f.name, f.arguments));
                self.add(
                    (choice.index, tc.index),
                    name.as_deref(),
                    args.as_deref(),
                    None,
                );
            }
        }
        Event::More
    }

    fn responses(&mut self, payload: &[u8]) -> Event {
        if holds!(payload, b"\"response.completed\"") {
            // Only the start is looked at: this event carries the whole response.
            if let Ok(kind) = event_type(payload) {
                if kind == "response.completed" {
                    return Event::End;
                }
            }
        }
        if !holds!(payload, b"response.output_item.done") {
            return Event::More;
        }
        #[derive(Deserialize)]
        struct ItemDone {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            item: Option<Value>,
        }
        if let Ok(ev) = serde_json::from_slice::<ItemDone>(payload) {
            if ev.kind == "response.output_item.done" {
                if let Some(call) = ev.item.as_ref().and_then(responses_item) {
                    self.bytes += call.arguments.len();
                    if self.done.len() < MAX_CALLS {
                        self.done.push(call);
                    }
                }
            }
        }
        Event::More
    }

    fn messages(&mut self, payload: &[u8]) -> Event {
        let Ok(kind) = event_type(payload) else {
            return Event::More;
        };
        match kind.as_str() {
            "message_stop" => Event::End,
            "content_block_start" if holds!(payload, b"\"tool_use\"") => {
                #[derive(Deserialize)]
                struct Start {
                    #[serde(default)]
                    index: u32,
                    content_block: Value,
                }
                if let Ok(s) = serde_json::from_slice::<Start>(payload) {
                    let b = &s.content_block;
                    if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                        let name = b.get("name").and_then(Value::as_str);
                        self.add((0, s.index), name, None, b.get("input").cloned());
                    }
                }
                Event::More
            }
            "content_block_delta" if holds!(payload, b"input_json_delta") => {
                #[derive(Deserialize)]
                struct Delta<'a> {
                    #[serde(default)]
                    index: u32,
                    #[serde(borrow)]
                    delta: JsonDelta<'a>,
                }
                #[derive(Deserialize)]
                struct JsonDelta<'a> {
                    #[serde(rename = "type", borrow)]
                    kind: Cow<'a, str>,
                    #[serde(default, borrow)]
                    partial_json: Option<Cow<'a, str>>,
                }
                if let Ok(d) = serde_json::from_slice::<Delta<'_>>(payload) {
                    if d.delta.kind == "input_json_delta" {
                        // Only blocks that started as tool_use are assembled.
                        if self.parts.iter().any(|p| p.key == (0, d.index)) {
                            self.add((0, d.index), None, d.delta.partial_json.as_deref(), None);
                        }
                    }
                }
                Event::More
            }
            _ => Event::More,
        }
    }

    fn add(
        &mut self,
        key: (u32, u32),
        name: Option<&str>,
        args: Option<&str>,
        start: Option<Value>,
    ) {
        let added = name.map_or(0, str::len) + args.map_or(0, str::len);
        self.bytes += added;
        if self.bytes > MAX_ARGUMENT_BYTES {
            self.over = true;
            self.parts.clear();
            return;
        }
        if self.over {
            return;
        }
        let i = match self.parts.iter().position(|p| p.key == key) {
            Some(i) => i,
            None if self.parts.len() < MAX_CALLS => {
                self.parts.push(Part {
                    key,
                    name: String::new(),
                    arguments: String::new(),
                    start_input: None,
                });
                self.parts.len() - 1
            }
            None => return,
        };
        let part = &mut self.parts[i];
        if let Some(n) = name {
            part.name.push_str(n);
        }
        if let Some(a) = args {
            part.arguments.push_str(a);
        }
        if start.is_some() {
            part.start_input = start;
        }
    }

    /// The answer's calls, or `None` if they could not all be held.
    pub(crate) fn finish(&mut self) -> Option<Vec<ToolCall>> {
        if self.over || self.bytes > MAX_ARGUMENT_BYTES {
            return None;
        }
        let mut calls = std::mem::take(&mut self.done);
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.key);
        for p in parts {
            if p.name.is_empty() {
                continue;
            }
            calls.push(match (&p.start_input, p.arguments.trim().is_empty()) {
                (Some(input), true) => ToolCall::from_value(p.name, input),
                _ => ToolCall::new(p.name, &p.arguments),
            });
        }
        calls.truncate(MAX_CALLS);
        Some(calls)
    }
}

/// The `type` of an event payload, read without parsing the rest into values.
fn event_type(payload: &[u8]) -> Result<String, serde_json::Error> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Typed>(payload).map(|t| t.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_arguments_sorts_keys_at_every_depth_and_keeps_values() {
        let a = canonical_arguments(r#"{"b": {"y": 1, "x": [ {"k": 2, "j": 1} ]}, "a": "é\n"}"#);
        assert_eq!(a, r#"{"a":"é\n","b":{"x":[{"j":1,"k":2}],"y":1}}"#);
        assert_eq!(a, canonical_arguments(&a), "idempotent");
        assert_ne!(
            canonical_arguments(r#"{"a":1}"#),
            canonical_arguments(r#"{"a":"1"}"#)
        );
        assert_eq!(canonical_arguments("[1, 2]"), "[1,2]");
        assert_eq!(
            canonical_arguments("{\"a\": 1.50}"),
            canonical_arguments("{\"a\":1.50}")
        );
    }

    /// The quick look never decides differently from the full parse.
    #[test]
    fn the_quick_look_agrees_with_the_parse() {
        let bodies: &[(Api, &[u8])] = &[
            (Api::ChatCompletions, br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#),
            (Api::ChatCompletions, br#"{"choices":[{"message":{"content":"say \"tool_calls\""}}]}"#),
            (Api::ChatCompletions, br#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#),
            (Api::ChatCompletions, br#"{"choices":[{"message":{"tool\u005fcalls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#),
            (Api::ChatCompletions, br#"{"error":{"message":"no choices"}}"#),
            (Api::ChatCompletions, br#"["choices"]"#),
            (Api::Responses, br#"{"output":[{"type":"message","content":[]}]}"#),
            (Api::Responses, br#"{"output":[{"type":"function_call","name":"f","arguments":"{}"}]}"#),
            (Api::Messages, br#"{"content":[{"type":"text","text":"x"}]}"#),
            (Api::Messages, br#"{"content":[{"type":"tool_use","name":"f","input":{}}]}"#),
        ];
        for (api, body) in bodies {
            if let Some(quick) = plainly_without_calls(*api, body) {
                assert_eq!(
                    quick,
                    parsed_calls(*api, body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
            assert_eq!(json_calls(*api, body), parsed_calls(*api, body));
        }
        // The escape-spelled key is parsed, and its call found.
        assert_eq!(
            json_calls(Api::ChatCompletions, bodies[3].1).unwrap().len(),
            1
        );
        assert!(plainly_without_calls(Api::ChatCompletions, bodies[0].1).is_some());
        assert!(plainly_without_calls(Api::ChatCompletions, bodies[4].1).is_none());
        assert_eq!(json_calls(Api::ChatCompletions, bodies[5].1), None);
    }

    /// An answer of more values than a tree is built of is not parsed: no calls recorded. One
    /// value fewer, and its call is found.
    #[test]
    fn an_answer_of_too_many_values_is_not_parsed() {
        let max = portcullis_core::json_skim::MAX_VALUES;
        // Members and items: choices, its item, message, tool_calls, its item, and the call's
        // id, type, function, name, arguments: 10; the rest in `ids`, with its own member.
        let answer = |n: usize| {
            format!(
                r#"{{"choices":[{{"message":{{"tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}}}}],"ids":[{}0]}}"#,
                "0,".repeat(n - 12)
            )
        };
        let calls = json_calls(Api::ChatCompletions, answer(max).as_bytes());
        assert_eq!(calls.map(|c| c.len()), Some(1));
        assert_eq!(
            json_calls(Api::ChatCompletions, answer(max + 1).as_bytes()),
            None
        );
    }

    #[test]
    fn whole_answers_in_each_shape() {
        let chat = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
            {"id":"call_1","type":"function","function":{"name":"read","arguments":"{\"path\": \"a\", \"n\": 1}"}}]}}]}"#;
        assert_eq!(
            json_calls(Api::ChatCompletions, chat).unwrap(),
            [ToolCall::new("read", r#"{"n":1,"path":"a"}"#)]
        );
        let responses = br#"{"output":[{"type":"reasoning"},{"type":"function_call","call_id":"c","name":"read","arguments":"{\"path\":\"a\",\"n\":1}"}]}"#;
        assert_eq!(
            json_calls(Api::Responses, responses).unwrap(),
            [ToolCall::new("read", r#"{"n":1,"path":"a"}"#)]
        );
        let messages = br#"{"content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t","name":"read","input":{"path":"a","n":1}}]}"#;
        assert_eq!(
            json_calls(Api::Messages, messages).unwrap(),
            [ToolCall::new("read", r#"{"n":1,"path":"a"}"#)]
        );
        assert_eq!(json_calls(Api::Messages, br#"{"content":[]}"#).unwrap(), []);
        assert!(json_calls(Api::Messages, b"{oops").is_none());
        assert!(json_calls(Api::ChatCompletions, br#"{"error":{}}"#).is_none());
    }

    fn stream(api: Api, lines: &[&str]) -> (Option<Vec<ToolCall>>, bool) {
        let mut s = StreamCalls::new(api);
        let mut ended = false;
        for l in lines {
            ended |= s.line(l.as_bytes()) == Event::End;
        }
        (s.finish(), ended)
    }

    #[test]
    fn streamed_answers_in_each_shape() {
        let want = vec![
            ToolCall::new("read", r#"{"path":"a"}"#),
            ToolCall::new("ls", "{}"),
        ];
        let chat = stream(
            Api::ChatCompletions,
            &[
                r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"read","arguments":""}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"pa"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"ls","arguments":""}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\": \"a\"}"}}]}}]}"#,
                r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                "data: [DONE]",
            ],
        );
        assert_eq!(chat, (Some(want.clone()), true));
        let responses = stream(
            Api::Responses,
            &[
                r#"data: {"type":"response.function_call_arguments.delta","delta":"{\"pa"}"#,
                r#"data: {"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","name":"read","arguments":"{\"path\":\"a\"}"}}"#,
                r#"data: {"type":"response.output_item.done","output_index":1,"item":{"type":"function_call","name":"ls","arguments":""}}"#,
                "event: response.completed",
            ],
        );
        assert_eq!(responses, (Some(want.clone()), true));
        let messages = stream(
            Api::Messages,
            &[
                r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"input_json_delta"}}"#,
                r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"read","input":{}}}"#,
                r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"path\":"}}"#,
                r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"a\"}"}}"#,
                r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"u","name":"ls","input":{}}}"#,
                r#"data: {"type":"message_stop"}"#,
            ],
        );
        assert_eq!(messages, (Some(want), true));
        let garbage = stream(
            Api::Messages,
            &["data: {not json", "data: [DONE]", ": ping"],
        );
        assert_eq!(garbage, (Some(vec![]), false));
    }
}
