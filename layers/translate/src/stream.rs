//! Streams translated event by event: an upstream's SSE events are read into neutral
//! events ([`Ev`]) and written at once in the client's shape. Nothing is collected: the
//! chat and Anthropic writers keep O(1) state (a few counters and ids); the Responses writer
//! must repeat each item's whole text in its `*.done` events and `response.completed`, so it
//! keeps the answer (up to [`RETAIN_CAP`] bytes; past that the repeats are cut short).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::{
    api::Format,
    custom,
    error::{anthropic_kind, openai_kind, ErrorKind, TranslateError},
    request::{Plan, JSON_TOOL, REDACTED_PREFIX, SIGNATURE_PREFIX},
    response::{
        item_id, now, response_extra, response_id, StopReason, UrlCitation, Usage, CITATION_CAP,
    },
    sse::{SseParser, MAX_EVENT_BYTES},
    types::{
        chat::ChatChunk,
        messages::{BlockDelta, ContentBlock, StreamEvent},
    },
};

/// The most answer text a Responses stream keeps for its `*.done` events.
pub const RETAIN_CAP: usize = 16 * 1024 * 1024;

/// A neutral stream event.
#[derive(Debug, Clone, PartialEq)]
enum Ev<'a> {
    Start {
        id: &'a str,
        model: &'a str,
        usage: Option<Usage>,
    },
    Text(&'a str),
    Thinking(&'a str),
    Signature(&'a str),
    Redacted(&'a str),
    /// Tool call number `index` (0, 1, ... in this answer) begins.
    ToolStart {
        index: usize,
        id: &'a str,
        name: &'a str,
    },
    ToolArgs {
        index: usize,
        json: &'a str,
    },
    /// A web source the current text block cites (over the whole block).
    Citation(UrlCitation),
    /// The upstream closed its current block.
    BlockStop,
    Finish {
        stop: StopReason,
        stop_sequence: Option<&'a str>,
        usage: Option<Usage>,
    },
    Error {
        kind: ErrorKind,
        message: &'a str,
        code: Option<&'a str>,
    },
}

/// Translates one SSE stream from the upstream's API to the client's, chunk by chunk.
///
/// ```
/// use portcullis_translate::{Format, Plan, StreamTranslator};
///
/// let mut plan = Plan::new(Format::ChatCompletions, Format::Messages);
/// plan.stream = true;
/// let mut t = StreamTranslator::new(&plan).unwrap();
/// let out = t.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
/// assert!(std::str::from_utf8(&out).unwrap().contains(r#""content":"Hi""#));
/// ```
#[derive(Debug)]
pub struct StreamTranslator {
    sse: SseParser,
    dec: Decoder,
    enc: Encoder,
    out: BytesMut,
}

impl StreamTranslator {
    /// A translator for the response to a request translated with `plan`.
    pub fn new(plan: &Plan) -> Result<Self, TranslateError> {
        let dec = match plan.upstream {
            Format::ChatCompletions => Decoder::Chat(ChatDecoder::default()),
            Format::Messages => Decoder::Anthropic(AnthropicDecoder {
                json_tool: plan.json_tool,
                ..AnthropicDecoder::default()
            }),
            Format::Responses => {
                return Err(TranslateError::unsupported(
                    "stream",
                    plan.client,
                    "no translation from Responses streams",
                ))
            }
        };
        let enc = match plan.client {
            Format::ChatCompletions => Encoder::Chat(ChatEncoder {
                include_usage: plan.include_usage,
                custom_tools: plan.custom_tools.clone(),
                legacy: plan.legacy_functions,
                ..ChatEncoder::default()
            }),
            Format::Messages => Encoder::Anthropic(AnthropicEncoder::default()),
            Format::Responses => Encoder::Responses(Box::new(ResponsesEncoder {
                custom_tools: plan.custom_tools.clone(),
                preset_id: plan.response_id.clone(),
                ..ResponsesEncoder::default()
            })),
        };
        let mut t = StreamTranslator {
            sse: SseParser::default(),
            dec,
            enc,
            out: BytesMut::with_capacity(1024),
        };
        t.set_created(now());
        Ok(t)
    }

    /// Keep the final Responses object (a Responses client's stream) for
    /// [`take_response`](Self::take_response).
    pub fn keep_response(&mut self) {
        if let Encoder::Responses(e) = &mut self.enc {
            e.keep_final = true;
        }
    }

    /// The final Responses object of a stream that completed (or ended incomplete), once,
    /// when [`keep_response`](Self::keep_response) was asked.
    pub fn take_response(&mut self) -> Option<Map<String, Value>> {
        match &mut self.enc {
            Encoder::Responses(e) => e.final_response.take(),
            _ => None,
        }
    }

    /// Use this Unix time for `created` fields (tests compare outputs byte for byte).
    pub fn with_created(mut self, created: u64) -> Self {
        self.set_created(created);
        self
    }

    fn set_created(&mut self, created: u64) {
        match &mut self.enc {
            Encoder::Chat(e) => e.created = created,
            Encoder::Anthropic(_) => {}
            Encoder::Responses(e) => e.created = created,
        }
    }

    /// The client's stream is complete (finished or failed): later input is ignored.
    pub fn is_done(&self) -> bool {
        self.enc.done()
    }

    /// Translate the next piece of the upstream's body.
    pub fn feed(&mut self, input: &[u8]) -> Bytes {
        if !self.enc.done() {
            let Self { sse, dec, enc, out } = self;
            let r = sse.feed(input, &mut |name, data| {
                if !enc.done() {
                    dec.on_event(name, data, enc, out);
                }
            });
            if r.is_err() {
                self.overflow();
            }
        }
        self.out.split().freeze()
    }

    /// The upstream's body ended.
    pub fn finish(&mut self) -> Bytes {
        if !self.enc.done() {
            let Self { sse, dec, enc, out } = self;
            let r = sse.finish(&mut |name, data| {
                if !enc.done() {
                    dec.on_event(name, data, enc, out);
                }
            });
            if r.is_err() {
                self.overflow();
            }
            let Self { dec, enc, out, .. } = self;
            if !enc.done() {
                dec.finish(enc, out);
            }
        }
        self.out.split().freeze()
    }

    /// The upstream's body failed: end the client's stream with an error event.
    pub fn fail(&mut self, message: &str) -> Bytes {
        if !self.enc.done() {
            self.enc.ev(
                Ev::Error {
                    kind: ErrorKind::Server,
                    message,
                    code: Some("upstream_error"),
                },
                &mut self.out,
            );
        }
        self.out.split().freeze()
    }

    fn overflow(&mut self) {
        let msg = format!("the upstream sent an event larger than {MAX_EVENT_BYTES} bytes");
        self.enc.ev(
            Ev::Error {
                kind: ErrorKind::Server,
                message: &msg,
                code: Some("upstream_error"),
            },
            &mut self.out,
        );
    }
}

// === decoders ===

#[derive(Debug)]
enum Decoder {
    Chat(ChatDecoder),
    Anthropic(AnthropicDecoder),
}

impl Decoder {
    fn on_event(&mut self, name: &str, data: &[u8], enc: &mut Encoder, out: &mut BytesMut) {
        match self {
            Decoder::Chat(d) => d.on_event(data, enc, out),
            Decoder::Anthropic(d) => d.on_event(name, data, enc, out),
        }
    }

    fn finish(&mut self, enc: &mut Encoder, out: &mut BytesMut) {
        let ended_early = match self {
            Decoder::Chat(d) => {
                if d.finish.is_some() {
                    d.emit_finish(enc, out);
                    false
                } else {
                    true
                }
            }
            Decoder::Anthropic(_) => true,
        };
        if ended_early {
            enc.ev(
                Ev::Error {
                    kind: ErrorKind::Server,
                    message: "the upstream's stream ended before the answer was complete",
                    code: Some("upstream_error"),
                },
                out,
            );
        }
    }
}

fn unreadable(enc: &mut Encoder, out: &mut BytesMut, e: &serde_json::Error) {
    let msg = format!("the upstream sent an event that could not be read: {e}");
    enc.ev(
        Ev::Error {
            kind: ErrorKind::Server,
            message: &msg,
            code: Some("upstream_error"),
        },
        out,
    );
}

/// Reads OpenAI chat completion chunks.
#[derive(Debug, Default)]
struct ChatDecoder {
    started: bool,
    /// Upstream tool call index, by tool ordinal.
    tools: Vec<u32>,
    finish: Option<StopReason>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
}

impl ChatDecoder {
    fn on_event(&mut self, data: &[u8], enc: &mut Encoder, out: &mut BytesMut) {
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.emit_finish(enc, out);
            return;
        }
        if data.is_empty() {
            return;
        }
        let chunk: ChatChunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => return unreadable(enc, out, &e),
        };
        if let Some(err) = &chunk.error {
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| http::StatusCode::from_u16(c as u16).ok())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            let e = crate::error::parse_error(status, data);
            enc.ev(
                Ev::Error {
                    kind: e.kind,
                    message: &e.message,
                    code: e.code.as_deref(),
                },
                out,
            );
            return;
        }
        if !self.started {
            self.started = true;
            enc.ev(
                Ev::Start {
                    id: &chunk.id,
                    model: &chunk.model,
                    usage: None,
                },
                out,
            );
        }
        if let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) {
            let d = choice.delta;
            if let Some(r) = d.reasoning_content.as_deref().or(d.reasoning.as_deref()) {
                if !r.is_empty() {
                    enc.ev(Ev::Thinking(r), out);
                }
            }
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                enc.ev(Ev::Text(t), out);
            }
            if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
                enc.ev(Ev::Text(t), out);
                self.finish = Some(StopReason::Refusal);
            }
            for tc in d.tool_calls.unwrap_or_default() {
                let (index, new) = match self.tools.iter().position(|&i| i == tc.index) {
                    Some(o) => (o, false),
                    None => {
                        self.tools.push(tc.index);
                        (self.tools.len() - 1, true)
                    }
                };
                let f = tc.function.unwrap_or_default();
                if new {
                    let fallback;
                    let id = match tc.id.as_deref() {
                        Some(id) if !id.is_empty() => id,
                        _ => {
                            fallback = format!("call_{index}");
                            &fallback
                        }
                    };
                    enc.ev(
                        Ev::ToolStart {
                            index,
                            id,
                            name: f.name.as_deref().unwrap_or_default(),
                        },
                        out,
                    );
                }
                if let Some(a) = f.arguments.as_deref().filter(|a| !a.is_empty()) {
                    enc.ev(Ev::ToolArgs { index, json: a }, out);
                }
            }
            if let Some(r) = choice.finish_reason.as_deref() {
                if self.finish != Some(StopReason::Refusal) {
                    self.finish = Some(StopReason::from_chat(r));
                }
                if let Some(Value::String(s)) = choice.stop_reason {
                    if self.finish == Some(StopReason::EndTurn) {
                        self.finish = Some(StopReason::StopSequence);
                        self.stop_sequence = Some(s);
                    }
                }
            }
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(Usage::from_chat(u));
        }
    }

    fn emit_finish(&mut self, enc: &mut Encoder, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            enc.ev(
                Ev::Start {
                    id: "",
                    model: "",
                    usage: None,
                },
                out,
            );
        }
        enc.ev(
            Ev::Finish {
                stop: self.finish.unwrap_or_default(),
                stop_sequence: self.stop_sequence.as_deref(),
                usage: self.usage,
            },
            out,
        );
    }
}

/// Reads Anthropic Messages events.
#[derive(Debug, Default)]
struct AnthropicDecoder {
    json_tool: bool,
    /// The open block is the JSON-format tool: its input is the answer's text.
    in_json_block: bool,
    /// The open block is one with no client-side equivalent (server tools): skipped.
    skipping: bool,
    tools: usize,
    real_tool: bool,
    usage: Usage,
    stop: Option<StopReason>,
    stop_sequence: Option<String>,
}

impl AnthropicDecoder {
    fn on_event(&mut self, _name: &str, data: &[u8], enc: &mut Encoder, out: &mut BytesMut) {
        let ev: StreamEvent = match serde_json::from_slice(data) {
            Ok(e) => e,
            Err(e) => return unreadable(enc, out, &e),
        };
        match ev {
            StreamEvent::MessageStart { message } => {
                self.usage = Usage::from_messages(&message.usage);
                enc.ev(
                    Ev::Start {
                        id: &message.id,
                        model: &message.model,
                        usage: Some(self.usage),
                    },
                    out,
                );
            }
            StreamEvent::ContentBlockStart { content_block, .. } => {
                self.in_json_block = false;
                self.skipping = false;
                match content_block {
                    ContentBlock::Text { text, extra } => {
                        if !text.is_empty() {
                            enc.ev(Ev::Text(&text), out)
                        }
                        for c in UrlCitation::from_block(&extra) {
                            enc.ev(Ev::Citation(c), out)
                        }
                    }
                    ContentBlock::Thinking { thinking, .. } if !thinking.is_empty() => {
                        enc.ev(Ev::Thinking(&thinking), out)
                    }
                    ContentBlock::Thinking { .. } => {}
                    ContentBlock::RedactedThinking { data } => enc.ev(Ev::Redacted(&data), out),
                    ContentBlock::ToolUse { name, .. } if self.json_tool && name == JSON_TOOL => {
                        self.in_json_block = true;
                    }
                    ContentBlock::ToolUse { id, name, .. } => {
                        self.real_tool = true;
                        self.tools += 1;
                        enc.ev(
                            Ev::ToolStart {
                                index: self.tools - 1,
                                id: &id,
                                name: &name,
                            },
                            out,
                        );
                    }
                    _ => self.skipping = true,
                }
            }
            StreamEvent::ContentBlockDelta { delta, .. } => {
                let empty = match &delta {
                    BlockDelta::TextDelta { text: s }
                    | BlockDelta::ThinkingDelta { thinking: s }
                    | BlockDelta::InputJsonDelta { partial_json: s } => s.is_empty(),
                    _ => false,
                };
                if self.skipping || empty {
                    return;
                }
                match &delta {
                    BlockDelta::TextDelta { text } => enc.ev(Ev::Text(text), out),
                    BlockDelta::ThinkingDelta { thinking } => enc.ev(Ev::Thinking(thinking), out),
                    BlockDelta::SignatureDelta { signature } => {
                        enc.ev(Ev::Signature(signature), out)
                    }
                    BlockDelta::InputJsonDelta { partial_json } if self.in_json_block => {
                        enc.ev(Ev::Text(partial_json), out)
                    }
                    BlockDelta::InputJsonDelta { partial_json } if self.tools > 0 => enc.ev(
                        Ev::ToolArgs {
                            index: self.tools - 1,
                            json: partial_json,
                        },
                        out,
                    ),
                    BlockDelta::CitationsDelta { citation } => {
                        if let Some(c) = UrlCitation::from_anthropic(citation) {
                            enc.ev(Ev::Citation(c), out)
                        }
                    }
                    BlockDelta::InputJsonDelta { .. } | BlockDelta::Other => {}
                }
            }
            StreamEvent::ContentBlockStop { .. } => {
                self.in_json_block = false;
                if !std::mem::take(&mut self.skipping) {
                    enc.ev(Ev::BlockStop, out);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(r) = delta.stop_reason.as_deref() {
                    self.stop = Some(StopReason::from_anthropic(r));
                }
                self.stop_sequence = delta.stop_sequence;
                self.usage.output = usage.output_tokens;
                if let Some(i) = usage.input_tokens {
                    let read = usage
                        .cache_read_input_tokens
                        .unwrap_or(self.usage.cache_read);
                    let created = usage
                        .cache_creation_input_tokens
                        .unwrap_or(self.usage.cache_creation);
                    self.usage.input = self.usage.input.max(i + read + created);
                    self.usage.cache_read = read;
                    self.usage.cache_creation = created;
                }
            }
            StreamEvent::MessageStop => {
                let mut stop = self.stop.unwrap_or_default();
                if stop == StopReason::ToolUse && !self.real_tool {
                    stop = StopReason::EndTurn; // only the JSON-format tool was called
                }
                enc.ev(
                    Ev::Finish {
                        stop,
                        stop_sequence: self.stop_sequence.as_deref(),
                        usage: Some(self.usage),
                    },
                    out,
                );
            }
            StreamEvent::Error { error } => {
                let e = crate::error::parse_error(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::to_vec(
                        &json!({"error": {"type": error.kind, "message": error.message}}),
                    )
                    .unwrap_or_default(),
                );
                enc.ev(
                    Ev::Error {
                        kind: e.kind,
                        message: &error.message,
                        code: Some(&error.kind),
                    },
                    out,
                );
            }
            StreamEvent::Ping | StreamEvent::Other => {}
        }
    }
}

// === encoders ===

#[derive(Debug)]
enum Encoder {
    Chat(ChatEncoder),
    Anthropic(AnthropicEncoder),
    Responses(Box<ResponsesEncoder>),
}

impl Encoder {
    fn done(&self) -> bool {
        match self {
            Encoder::Chat(e) => e.done,
            Encoder::Anthropic(e) => e.done,
            Encoder::Responses(e) => e.done,
        }
    }

    fn ev(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        match self {
            Encoder::Chat(e) => e.ev(ev, out),
            Encoder::Anthropic(e) => e.ev(ev, out),
            Encoder::Responses(e) => e.ev(ev, out),
        }
    }
}

fn write_data(out: &mut BytesMut, value: &impl Serialize) {
    out.put_slice(b"data: ");
    // Serializing these plain structs cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
    out.put_slice(b"\n\n");
}

fn write_event(out: &mut BytesMut, name: &str, value: &impl Serialize) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    write_data(out, value);
}

/// Writes OpenAI chat completion chunks.
#[derive(Debug, Default)]
struct ChatEncoder {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    done: bool,
    /// The client's custom tools (see [`crate::custom`]).
    custom_tools: Vec<String>,
    /// Custom tool calls under way: tool ordinal, the function arguments so far and their
    /// `input` decoded as they come (see [`custom::InputStream`]).
    custom_open: Vec<(usize, String, custom::InputStream)>,
    /// Web citations of the current text block, sent as annotations over it when it ends.
    cites: Citations,
    /// The client declared legacy `functions`: the call goes as `delta.function_call`.
    legacy: bool,
}

/// Web citations of the text block under way: they cover the whole block, whose end is known
/// only when it closes. Annotation indices count characters, as Python's strings do.
#[derive(Debug, Default)]
struct Citations {
    /// Characters of answer text so far.
    chars: usize,
    /// Where the current block's text began.
    block_start: usize,
    pending: Vec<UrlCitation>,
    /// Citations taken so far; past [`CITATION_CAP`] the rest are dropped.
    taken: usize,
}

impl Citations {
    fn text(&mut self, t: &str) {
        self.chars += t.chars().count();
    }

    fn add(&mut self, c: UrlCitation) {
        if self.taken < CITATION_CAP {
            self.taken += 1;
            self.pending.push(c);
        }
    }

    /// The block ended: its citations with the range they cover.
    fn block_end(&mut self) -> (Vec<UrlCitation>, usize, usize) {
        let range = (self.block_start, self.chars);
        self.block_start = self.chars;
        (std::mem::take(&mut self.pending), range.0, range.1)
    }

    /// A new item starts (Responses): its text counts from zero.
    fn reset_text(&mut self) {
        self.chars = 0;
        self.block_start = 0;
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<crate::types::chat::ChatUsage>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolOut<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FnOut<'a>>,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<FnOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom: Option<CustomOut<'a>>,
}

#[derive(Serialize)]
struct CustomOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    input: &'a str,
}

#[derive(Serialize)]
struct FnOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OpenAiErrorOut<'a> {
    error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

impl ChatEncoder {
    /// The custom tool calls under way end: the input of any whose arguments could not be
    /// streamed goes now, whole, in one delta.
    fn flush_custom(&mut self, out: &mut BytesMut) {
        for (index, args, stream) in std::mem::take(&mut self.custom_open) {
            if !stream.streamed() {
                self.custom_input(out, index, &custom::input_of(&args));
            }
        }
    }

    /// A chunk carrying a piece of custom tool call `index`'s input.
    fn custom_input(&self, out: &mut BytesMut, index: usize, input: &str) {
        self.tool_chunk(
            out,
            ToolOut {
                index,
                id: None,
                kind: None,
                function: None,
                custom: Some(CustomOut { name: None, input }),
            },
        );
    }

    /// The current text block ended: its web citations, as annotations over it.
    fn flush_citations(&mut self, out: &mut BytesMut) {
        let (cites, start, end) = self.cites.block_end();
        if !cites.is_empty() {
            let annotations = cites.iter().map(|c| c.to_chat(start, end)).collect();
            self.chunk(
                out,
                DeltaOut {
                    annotations: Some(annotations),
                    ..DeltaOut::default()
                },
                None,
            );
        }
    }

    /// A chunk carrying one tool call's delta.
    fn tool_chunk(&self, out: &mut BytesMut, tool: ToolOut<'_>) {
        self.chunk(
            out,
            DeltaOut {
                tool_calls: Some([tool]),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn chunk(&self, out: &mut BytesMut, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        write_data(
            out,
            &ChunkOut {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &[ChoiceOut {
                    index: 0,
                    delta,
                    finish_reason,
                }],
                usage: None,
            },
        );
    }

    fn ev(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match ev {
            Ev::Start { id, model, .. } => {
                self.id.clear();
                if !id.starts_with("chatcmpl") {
                    self.id.push_str("chatcmpl-");
                }
                self.id.push_str(id);
                self.model = model.to_owned();
                self.chunk(
                    out,
                    DeltaOut {
                        role: Some("assistant"),
                        content: Some(""),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            Ev::Text(t) => {
                self.cites.text(t);
                self.chunk(
                    out,
                    DeltaOut {
                        content: Some(t),
                        ..DeltaOut::default()
                    },
                    None,
                )
            }
            Ev::Thinking(t) => self.chunk(
                out,
                DeltaOut {
                    reasoning_content: Some(t),
                    ..DeltaOut::default()
                },
                None,
            ),
            // Signatures and redacted thinking have no place in a chat stream.
            Ev::Signature(_) | Ev::Redacted(_) => {}
            Ev::Citation(c) => self.cites.add(c),
            Ev::BlockStop => {
                self.flush_citations(out);
                self.flush_custom(out)
            }
            // Legacy function calling: one call, as `function_call` (parallel calls were off).
            Ev::ToolStart { index, name, .. } | Ev::ToolArgs { index, json: name }
                if self.legacy =>
            {
                if index == 0 {
                    let (name, arguments) = match ev {
                        Ev::ToolStart { .. } => (Some(name), ""),
                        _ => (None, name),
                    };
                    self.chunk(
                        out,
                        DeltaOut {
                            function_call: Some(FnOut { name, arguments }),
                            ..DeltaOut::default()
                        },
                        None,
                    )
                }
            }
            Ev::ToolStart { index, id, name } => {
                self.flush_custom(out);
                let custom = self.custom_tools.iter().any(|c| c == name);
                if custom {
                    self.custom_open
                        .push((index, String::new(), custom::InputStream::default()));
                }
                self.tool_chunk(
                    out,
                    ToolOut {
                        index,
                        id: Some(id),
                        kind: Some(if custom { "custom" } else { "function" }),
                        function: (!custom).then_some(FnOut {
                            name: Some(name),
                            arguments: "",
                        }),
                        custom: custom.then_some(CustomOut {
                            name: Some(name),
                            input: "",
                        }),
                    },
                )
            }
            Ev::ToolArgs { index, json } => {
                if let Some((_, args, stream)) =
                    self.custom_open.iter_mut().find(|(i, ..)| *i == index)
                {
                    if args.len() + json.len() <= RETAIN_CAP {
                        args.push_str(json);
                    }
                    let piece = stream.push(json);
                    if !piece.is_empty() {
                        self.custom_input(out, index, &piece);
                    }
                    return;
                }
                self.tool_chunk(
                    out,
                    ToolOut {
                        index,
                        id: None,
                        kind: None,
                        function: Some(FnOut {
                            name: None,
                            arguments: json,
                        }),
                        custom: None,
                    },
                )
            }
            Ev::Finish { stop, usage, .. } => {
                self.flush_citations(out);
                self.flush_custom(out);
                let finish = match stop.chat() {
                    "tool_calls" if self.legacy => "function_call",
                    f => f,
                };
                self.chunk(out, DeltaOut::default(), Some(finish));
                if self.include_usage {
                    write_data(
                        out,
                        &ChunkOut {
                            id: &self.id,
                            object: "chat.completion.chunk",
                            created: self.created,
                            model: &self.model,
                            choices: &[],
                            usage: Some(usage.unwrap_or_default().to_chat()),
                        },
                    );
                }
                out.put_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Ev::Error {
                kind,
                message,
                code,
            } => {
                // interface.md: the error, then the stream closes without [DONE].
                write_data(
                    out,
                    &OpenAiErrorOut {
                        error: OpenAiErrorBody {
                            message,
                            kind: openai_kind(kind).1,
                            code,
                        },
                    },
                );
                self.done = true;
            }
        }
    }
}

/// Writes Anthropic Messages events.
#[derive(Debug, Default)]
struct AnthropicEncoder {
    started: bool,
    done: bool,
    next_index: u32,
    open: Open,
    /// Block index of each tool call, by tool ordinal.
    tool_blocks: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Open {
    #[default]
    None,
    Text(u32),
    Thinking(u32),
    Tool(u32),
}

#[derive(Serialize)]
struct BlockDeltaOut<D: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: D,
}

#[derive(Serialize)]
struct TypedText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
}

impl<'a> TypedText<'a> {
    fn new(kind: &'static str) -> Self {
        TypedText {
            kind,
            text: None,
            thinking: None,
            signature: None,
            partial_json: None,
        }
    }
}

impl AnthropicEncoder {
    fn close(&mut self, out: &mut BytesMut) {
        let index = match self.open {
            Open::None => return,
            Open::Text(i) | Open::Thinking(i) | Open::Tool(i) => i,
        };
        write_event(
            out,
            "content_block_stop",
            &json!({"type":"content_block_stop","index":index}),
        );
        self.open = Open::None;
    }

    fn open_block(&mut self, out: &mut BytesMut, block: Value) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        write_event(
            out,
            "content_block_start",
            &json!({"type":"content_block_start","index":index,"content_block":block}),
        );
        index
    }

    fn delta(out: &mut BytesMut, index: u32, delta: TypedText<'_>) {
        write_event(
            out,
            "content_block_delta",
            &BlockDeltaOut {
                kind: "content_block_delta",
                index,
                delta,
            },
        );
    }

    fn start(&mut self, out: &mut BytesMut, id: &str, model: &str, usage: Option<Usage>) {
        self.started = true;
        let u = usage.unwrap_or_default().to_messages();
        let id = if id.starts_with("msg_") || id.is_empty() {
            id.to_owned()
        } else {
            format!("msg_{id}")
        };
        write_event(
            out,
            "message_start",
            &json!({"type":"message_start","message":{
                "id": id, "type":"message", "role":"assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": u,
            }}),
        );
    }

    fn ev(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if !self.started && !matches!(ev, Ev::Start { .. } | Ev::Error { .. }) {
            self.start(out, "", "", None);
        }
        match ev {
            Ev::Start { id, model, usage } => self.start(out, id, model, usage),
            Ev::Text(t) => {
                let i = match self.open {
                    Open::Text(i) => i,
                    _ => {
                        let i = self.open_block(out, json!({"type":"text","text":""}));
                        self.open = Open::Text(i);
                        i
                    }
                };
                let mut d = TypedText::new("text_delta");
                d.text = Some(t);
                Self::delta(out, i, d);
            }
            Ev::Thinking(t) | Ev::Signature(t) => {
                let i = match self.open {
                    Open::Thinking(i) => i,
                    _ => {
                        let i = self.open_block(
                            out,
                            json!({"type":"thinking","thinking":"","signature":""}),
                        );
                        self.open = Open::Thinking(i);
                        i
                    }
                };
                let d = if let Ev::Thinking(_) = ev {
                    let mut d = TypedText::new("thinking_delta");
                    d.thinking = Some(t);
                    d
                } else {
                    let mut d = TypedText::new("signature_delta");
                    d.signature = Some(t);
                    d
                };
                Self::delta(out, i, d);
            }
            Ev::Redacted(data) => {
                let i = self.open_block(out, json!({"type":"redacted_thinking","data":data}));
                self.open = Open::Thinking(i);
                self.close(out);
            }
            Ev::ToolStart { index, id, name } => {
                let i = self.open_block(
                    out,
                    json!({"type":"tool_use","id":id,"name":name,"input":{}}),
                );
                self.open = Open::Tool(i);
                if self.tool_blocks.len() <= index {
                    self.tool_blocks.resize(index + 1, i);
                }
                self.tool_blocks[index] = i;
            }
            Ev::ToolArgs { index, json } => {
                // Arguments of an earlier call (interleaved upstream) go to its own block:
                // SDKs accumulate deltas by index.
                let Some(&i) = self.tool_blocks.get(index) else {
                    return;
                };
                let mut d = TypedText::new("input_json_delta");
                d.partial_json = Some(json);
                Self::delta(out, i, d);
            }
            // Anthropic's web citations carry an encrypted index only its search makes.
            Ev::Citation(_) => {}
            Ev::BlockStop => self.close(out),
            Ev::Finish {
                stop,
                stop_sequence,
                usage,
            } => {
                self.close(out);
                let u = usage.unwrap_or_default().to_messages();
                write_event(
                    out,
                    "message_delta",
                    &json!({"type":"message_delta",
                        "delta":{"stop_reason":stop.anthropic(),"stop_sequence":stop_sequence},
                        "usage": u}),
                );
                write_event(out, "message_stop", &json!({"type":"message_stop"}));
                self.done = true;
            }
            Ev::Error { kind, message, .. } => {
                write_event(
                    out,
                    "error",
                    &json!({"type":"error","error":{"type":anthropic_kind(kind).1,"message":message}}),
                );
                self.done = true;
            }
        }
    }
}

/// Writes Responses API events.
#[derive(Debug, Default)]
struct ResponsesEncoder {
    created: u64,
    seq: u64,
    id: String,
    model: String,
    started: bool,
    done: bool,
    items: Vec<Item>,
    open: Option<usize>,
    /// Item index of each tool call, by tool ordinal.
    tool_items: Vec<usize>,
    retained: usize,
    /// The client's custom tools (see [`crate::custom`]): their calls are
    /// `custom_tool_call` items, their input sent whole when the call ends.
    custom_tools: Vec<String>,
    /// Web citations of the open message's current text block.
    cites: Citations,
    /// The response's id when the plan set one ([`Plan::response_id`]).
    preset_id: Option<String>,
    /// Keep the final response object for [`StreamTranslator::take_response`].
    keep_final: bool,
    final_response: Option<Map<String, Value>>,
}

#[derive(Debug)]
struct Item {
    kind: ItemKind,
    id: String,
    /// Text, summary or arguments.
    text: String,
    signature: Option<String>,
    /// A message's `url_citation` annotations.
    annotations: Vec<Value>,
    /// A custom tool call's input, decoded as its arguments come.
    input: custom::InputStream,
    closed: bool,
}

#[derive(Debug)]
enum ItemKind {
    Message,
    Reasoning,
    Redacted(String),
    Tool {
        call_id: String,
        name: String,
    },
    /// A custom tool's call; `text` holds the function arguments it came as.
    Custom {
        call_id: String,
        name: String,
    },
}

#[derive(Serialize)]
struct ResponsesDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<u32>,
    delta: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[u8; 0]>,
}

impl Item {
    fn json(&self, status: &str) -> Value {
        match &self.kind {
            ItemKind::Message => {
                json!({"type":"message","id":self.id,"status":status,"role":"assistant",
                "content":[{"type":"output_text","text":self.text,"annotations":self.annotations}]})
            }
            ItemKind::Reasoning => {
                let mut v = json!({"type":"reasoning","id":self.id,
                    "summary":[{"type":"summary_text","text":self.text}]});
                if let Some(s) = &self.signature {
                    v["encrypted_content"] = Value::String(format!("{SIGNATURE_PREFIX}{s}"));
                }
                v
            }
            ItemKind::Redacted(data) => json!({"type":"reasoning","id":self.id,"summary":[],
                "encrypted_content": format!("{REDACTED_PREFIX}{data}")}),
            ItemKind::Tool { call_id, name } => json!({"type":"function_call","id":self.id,
                "call_id":call_id,"name":name,"arguments":self.text,"status":status}),
            ItemKind::Custom { call_id, name } => json!({"type":"custom_tool_call",
                "id":self.id,"call_id":call_id,"name":name,
                "input":custom::input_of(&self.text),"status":status}),
        }
    }

    fn added_json(&self) -> Value {
        match &self.kind {
            ItemKind::Message => json!({"type":"message","id":self.id,"status":"in_progress",
                "role":"assistant","content":[]}),
            ItemKind::Reasoning => json!({"type":"reasoning","id":self.id,"summary":[]}),
            ItemKind::Redacted(_) => self.json("completed"),
            ItemKind::Tool { call_id, name } => json!({"type":"function_call","id":self.id,
                "call_id":call_id,"name":name,"arguments":"","status":"in_progress"}),
            ItemKind::Custom { call_id, name } => json!({"type":"custom_tool_call",
                "id":self.id,"call_id":call_id,"name":name,"input":"","status":"in_progress"}),
        }
    }
}

impl ResponsesEncoder {
    fn emit(&mut self, out: &mut BytesMut, kind: &str, mut v: Value) {
        v["type"] = Value::String(kind.to_owned());
        v["sequence_number"] = Value::from(self.seq);
        self.seq += 1;
        write_event(out, kind, &v);
    }

    fn response(&self, status: &str, usage: Option<Usage>, incomplete: Option<&str>) -> Value {
        let output: Vec<Value> = match status {
            "in_progress" => Vec::new(),
            // The items a failed answer had begun were cut short.
            "failed" => self.items.iter().map(|i| i.json("incomplete")).collect(),
            _ => self.items.iter().map(|i| i.json("completed")).collect(),
        };
        let mut v = json!({"id":self.id,"object":"response","created_at":self.created,
            "status":status,"model":self.model,"output":output,"error":null,
            "incomplete_details": incomplete.map(|r| json!({"reason": r})),
            "usage": usage.map(Usage::to_responses)});
        if let Value::Object(m) = &mut v {
            m.extend(response_extra());
        }
        v
    }

    fn start(&mut self, out: &mut BytesMut, id: &str, model: &str) {
        self.started = true;
        self.id = match self.preset_id.take() {
            Some(preset) => preset,
            None => response_id(if id.is_empty() { "gateway" } else { id }),
        };
        self.model = model.to_owned();
        let r = self.response("in_progress", None, None);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn add_item(&mut self, out: &mut BytesMut, kind: ItemKind) -> usize {
        self.close(out);
        let prefix = match kind {
            ItemKind::Message => "msg",
            ItemKind::Reasoning | ItemKind::Redacted(_) => "rs",
            ItemKind::Tool { .. } => "fc",
            ItemKind::Custom { .. } => "ctc",
        };
        let idx = self.items.len();
        let item = Item {
            id: item_id(prefix, &self.id, idx),
            kind,
            text: String::new(),
            signature: None,
            annotations: Vec::new(),
            input: custom::InputStream::default(),
            closed: false,
        };
        let added = item.added_json();
        self.items.push(item);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": idx, "item": added}),
        );
        let id = self.items[idx].id.clone();
        match self.items[idx].kind {
            ItemKind::Message => self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": idx, "content_index": 0,
                    "part": {"type":"output_text","text":"","annotations":[]}}),
            ),
            ItemKind::Reasoning => self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": idx, "summary_index": 0,
                    "part": {"type":"summary_text","text":""}}),
            ),
            _ => {}
        }
        self.open = Some(idx);
        idx
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(idx) = self.open.take() {
            self.close_item(out, idx);
        }
    }

    fn close_item(&mut self, out: &mut BytesMut, idx: usize) {
        if self.items[idx].closed {
            return;
        }
        self.items[idx].closed = true;
        if matches!(self.items[idx].kind, ItemKind::Message) {
            self.flush_citations(out, idx);
        }
        let item = &self.items[idx];
        let (id, text) = (item.id.clone(), item.text.clone());
        let done = item.json("completed");
        match item.kind {
            ItemKind::Message => {
                let annotations = item.annotations.clone();
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": idx, "content_index": 0,
                        "part": {"type":"output_text","text":text,"annotations":annotations}}),
                );
            }
            ItemKind::Reasoning => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": idx, "summary_index": 0,
                        "part": {"type":"summary_text","text":text}}),
                );
            }
            ItemKind::Tool { .. } => self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": idx, "arguments": text}),
            ),
            ItemKind::Custom { .. } => {
                // The input is a string inside the function's JSON arguments: streamed as it
                // came unless the arguments had another shape; then it goes now, whole.
                let input = custom::input_of(&text);
                if !input.is_empty() && !item.input.streamed() {
                    self.emit(
                        out,
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": id, "output_index": idx, "delta": input}),
                    );
                }
                self.emit(
                    out,
                    "response.custom_tool_call_input.done",
                    json!({"item_id": id, "output_index": idx, "input": input}),
                );
            }
            ItemKind::Redacted(_) => {}
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": idx, "item": done}),
        );
    }

    /// The message `idx`'s current text block ended: its web citations as annotations.
    fn flush_citations(&mut self, out: &mut BytesMut, idx: usize) {
        let (cites, start, end) = self.cites.block_end();
        for c in cites {
            let annotation = c.to_responses(start, end);
            let item = &mut self.items[idx];
            let annotation_index = item.annotations.len();
            item.annotations.push(annotation.clone());
            let item_id = item.id.clone();
            self.emit(
                out,
                "response.output_text.annotation.added",
                json!({"item_id": item_id, "output_index": idx, "content_index": 0,
                    "annotation_index": annotation_index, "annotation": annotation}),
            );
        }
    }

    fn retain(&mut self, idx: usize, s: &str) {
        if self.retained + s.len() <= RETAIN_CAP {
            self.retained += s.len();
            self.items[idx].text.push_str(s);
        }
    }

    fn delta(&mut self, out: &mut BytesMut, kind: &'static str, idx: usize, delta: &str) {
        let item = &self.items[idx];
        let (content_index, summary_index, logprobs) = match item.kind {
            ItemKind::Message => (Some(0), None, Some([])),
            ItemKind::Reasoning => (None, Some(0), None),
            _ => (None, None, None),
        };
        write_event(
            out,
            kind,
            &ResponsesDelta {
                kind,
                sequence_number: self.seq,
                item_id: &item.id,
                output_index: idx,
                content_index,
                summary_index,
                delta,
                logprobs,
            },
        );
        self.seq += 1;
        self.retain(idx, delta);
    }

    fn ev(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if !self.started && !matches!(ev, Ev::Start { .. } | Ev::Error { .. }) {
            self.start(out, "", "");
        }
        match ev {
            Ev::Start { id, model, .. } => self.start(out, id, model),
            Ev::Text(t) => {
                let idx = match self.open {
                    Some(i) if matches!(self.items[i].kind, ItemKind::Message) => i,
                    _ => {
                        self.cites.reset_text();
                        self.add_item(out, ItemKind::Message)
                    }
                };
                self.cites.text(t);
                self.delta(out, "response.output_text.delta", idx, t);
            }
            Ev::Citation(c) => self.cites.add(c),
            Ev::Thinking(t) => {
                let idx = match self.open {
                    Some(i) if matches!(self.items[i].kind, ItemKind::Reasoning) => i,
                    _ => self.add_item(out, ItemKind::Reasoning),
                };
                self.delta(out, "response.reasoning_summary_text.delta", idx, t);
            }
            Ev::Signature(s) => {
                if let Some(i) = self
                    .open
                    .filter(|&i| matches!(self.items[i].kind, ItemKind::Reasoning))
                {
                    self.items[i]
                        .signature
                        .get_or_insert_with(String::new)
                        .push_str(s);
                }
            }
            Ev::Redacted(data) => {
                let idx = self.add_item(out, ItemKind::Redacted(data.to_owned()));
                self.open = None;
                self.close_item(out, idx);
            }
            Ev::ToolStart { index, id, name } => {
                let (call_id, name) = (id.to_owned(), name.to_owned());
                let kind = if self.custom_tools.contains(&name) {
                    ItemKind::Custom { call_id, name }
                } else {
                    ItemKind::Tool { call_id, name }
                };
                let idx = self.add_item(out, kind);
                if self.tool_items.len() <= index {
                    self.tool_items.resize(index + 1, idx);
                }
                self.tool_items[index] = idx;
            }
            Ev::ToolArgs { index, json } => match self.tool_items.get(index) {
                Some(&idx) if matches!(self.items[idx].kind, ItemKind::Custom { .. }) => {
                    self.retain(idx, json);
                    let piece = self.items[idx].input.push(json);
                    if !piece.is_empty() {
                        let id = self.items[idx].id.clone();
                        self.emit(
                            out,
                            "response.custom_tool_call_input.delta",
                            json!({"item_id": id, "output_index": idx, "delta": piece}),
                        );
                    }
                }
                Some(&idx) => self.delta(out, "response.function_call_arguments.delta", idx, json),
                None => {}
            },
            // Text blocks in a row make one message (as OpenAI answers, and as a whole
            // answer is translated): the block's end only bounds its citations.
            Ev::BlockStop => match self.open {
                Some(i) if matches!(self.items[i].kind, ItemKind::Message) => {
                    self.flush_citations(out, i)
                }
                _ => {
                    self.cites.block_end();
                    self.close(out)
                }
            },
            Ev::Finish { stop, usage, .. } => {
                self.close(out);
                for idx in 0..self.items.len() {
                    self.close_item(out, idx);
                }
                let (status, reason) = stop.responses();
                let r = self.response(status, Some(usage.unwrap_or_default()), reason);
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                if self.keep_final {
                    if let Value::Object(m) = &r {
                        self.final_response = Some(m.clone());
                    }
                }
                self.emit(out, kind, json!({ "response": r }));
                self.done = true;
            }
            Ev::Error {
                kind,
                message,
                code,
            } => {
                let code = code.unwrap_or(openai_kind(kind).1);
                // As OpenAI ends a failed response: `response.failed` with the reason (what
                // Codex reports), then the error event, last (`portcullis_core::sse`).
                let mut failed = self.response("failed", None, None);
                failed["error"] = json!({"code": code, "message": message});
                self.emit(out, "response.failed", json!({ "response": failed }));
                self.emit(
                    out,
                    "error",
                    json!({"code": code, "message": message, "param": null}),
                );
                self.done = true;
            }
        }
    }
}
