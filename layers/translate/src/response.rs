//! Response translation (non-streamed): an upstream answer is read into one neutral
//! [`Reply`] and written in the client's shape, so each API has one reader and one writer.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::{
    api::Format,
    custom,
    error::TranslateError,
    request::{Plan, JSON_TOOL, REDACTED_PREFIX, SIGNATURE_PREFIX},
    types::{
        chat::{
            AssistantMessage, ChatChoice, ChatCompletion, ChatContent, ChatUsage,
            CompletionTokensDetails, CustomCall, FunctionCall, PromptTokensDetails, ThinkingBlock,
            ToolCall,
        },
        messages::{ContentBlock, MessagesResponse, MessagesUsage},
        responses::{
            InputTokensDetails, OutputContent, OutputItem, OutputTokensDetails, ResponseObject,
            ResponsesUsage, SummaryText,
        },
    },
};

/// Token counts, API-neutral. `input` includes the cache reads and writes (OpenAI's
/// `prompt_tokens` meaning); Anthropic's `input_tokens` excludes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens.
    pub input: u64,
    /// Of which read from the prompt cache.
    pub cache_read: u64,
    /// Of which written to the prompt cache (Anthropic only).
    pub cache_creation: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Of which reasoning, when the upstream says.
    pub reasoning: Option<u64>,
}

impl Usage {
    /// From a chat completions usage.
    pub fn from_chat(u: &ChatUsage) -> Self {
        Usage {
            input: u.prompt_tokens,
            cache_read: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation: 0,
            output: u.completion_tokens,
            reasoning: u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }

    /// From an Anthropic usage.
    pub fn from_messages(u: &MessagesUsage) -> Self {
        let read = u.cache_read_input_tokens.unwrap_or(0);
        let created = u.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input: u.input_tokens + read + created,
            cache_read: read,
            cache_creation: created,
            output: u.output_tokens,
            reasoning: None,
        }
    }

    /// As a chat completions usage.
    pub fn to_chat(self) -> ChatUsage {
        ChatUsage {
            prompt_tokens: self.input,
            completion_tokens: self.output,
            total_tokens: self.input + self.output,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(self.cache_read),
            }),
            completion_tokens_details: self.reasoning.map(|r| CompletionTokensDetails {
                reasoning_tokens: Some(r),
            }),
        }
    }

    /// As an Anthropic usage.
    pub fn to_messages(self) -> MessagesUsage {
        MessagesUsage {
            input_tokens: self
                .input
                .saturating_sub(self.cache_read + self.cache_creation),
            output_tokens: self.output,
            cache_creation_input_tokens: Some(self.cache_creation),
            cache_read_input_tokens: Some(self.cache_read),
        }
    }

    /// As a Responses usage.
    pub fn to_responses(self) -> ResponsesUsage {
        ResponsesUsage {
            input_tokens: self.input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: self.cache_read,
            },
            output_tokens: self.output,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: self.reasoning.unwrap_or(0),
            },
            total_tokens: self.input + self.output,
        }
    }
}

/// Why the model stopped, API-neutral.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopReason {
    /// Done.
    #[default]
    EndTurn,
    /// Out of output tokens.
    MaxTokens,
    /// Waiting for tool results.
    ToolUse,
    /// A stop sequence matched.
    StopSequence,
    /// Refused / content filter.
    Refusal,
    /// A long server-tool turn paused (Anthropic).
    PauseTurn,
}

impl StopReason {
    /// From Anthropic's `stop_reason` (`model_context_window_exceeded` counts as max tokens).
    pub fn from_anthropic(s: &str) -> Self {
        match s {
            "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
            "tool_use" => StopReason::ToolUse,
            "stop_sequence" => StopReason::StopSequence,
            "refusal" => StopReason::Refusal,
            "pause_turn" => StopReason::PauseTurn,
            _ => StopReason::EndTurn,
        }
    }

    /// From chat's `finish_reason`.
    pub fn from_chat(s: &str) -> Self {
        match s {
            "length" => StopReason::MaxTokens,
            "tool_calls" | "function_call" => StopReason::ToolUse,
            "content_filter" => StopReason::Refusal,
            _ => StopReason::EndTurn,
        }
    }

    /// As Anthropic's `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ToolUse => "tool_use",
            StopReason::StopSequence => "stop_sequence",
            StopReason::Refusal => "refusal",
            StopReason::PauseTurn => "pause_turn",
        }
    }

    /// As chat's `finish_reason`: end_turn, stop_sequence and pause_turn -> `stop`,
    /// max_tokens -> `length`, tool_use -> `tool_calls`, refusal -> `content_filter`.
    pub fn chat(self) -> &'static str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
            StopReason::MaxTokens => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::Refusal => "content_filter",
        }
    }

    /// As a Responses `status` and `incomplete_details.reason`.
    pub fn responses(self) -> (&'static str, Option<&'static str>) {
        match self {
            StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
            StopReason::Refusal => ("incomplete", Some("content_filter")),
            _ => ("completed", None),
        }
    }
}

/// One piece of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text.
    Text(String),
    /// Readable reasoning, with Anthropic's signature when it came from Anthropic.
    Thinking {
        /// The text.
        text: String,
        /// The signature.
        signature: Option<String>,
    },
    /// Anthropic's encrypted thinking.
    Redacted(String),
    /// A tool call.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments, JSON text.
        arguments: String,
    },
    /// A web source the text just before it cites (Anthropic's web search citations):
    /// OpenAI's `url_citation` annotation over that text.
    Citation(UrlCitation),
}

/// A cited web page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCitation {
    /// The page.
    pub url: String,
    /// Its title.
    pub title: String,
}

/// The most citations one answer carries to the client; an upstream cannot grow the
/// translation's memory through them.
pub const CITATION_CAP: usize = 1024;

impl UrlCitation {
    /// An Anthropic citation that names a web page (`web_search_result_location`, or a
    /// `search_result_location` whose source is a URL). Document citations (`char_location`
    /// and the like) point into the request's documents and have no OpenAI form.
    pub fn from_anthropic(c: &Value) -> Option<Self> {
        let url = match c.get("type")?.as_str()? {
            "web_search_result_location" => c.get("url")?.as_str()?,
            "search_result_location" => c
                .get("source")?
                .as_str()
                .filter(|s| s.starts_with("https://") || s.starts_with("http://"))?,
            _ => return None,
        };
        Some(UrlCitation {
            url: url.to_owned(),
            title: c
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// The web citations of an Anthropic text block (its `citations` field).
    pub fn from_block(extra: &Map<String, Value>) -> impl Iterator<Item = Self> + '_ {
        extra
            .get("citations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Self::from_anthropic)
    }

    /// As a chat completions annotation over characters `start..end` of the content.
    pub fn to_chat(&self, start: usize, end: usize) -> Value {
        json!({"type": "url_citation", "url_citation": {
            "start_index": start, "end_index": end, "url": self.url, "title": self.title}})
    }

    /// As a Responses `output_text` annotation over characters `start..end` of the text.
    pub fn to_responses(&self, start: usize, end: usize) -> Value {
        json!({"type": "url_citation", "start_index": start, "end_index": end,
            "url": self.url, "title": self.title})
    }
}

/// An answer, API-neutral.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The upstream's id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The answer, in order.
    pub parts: Vec<Part>,
    /// Why it ended.
    pub stop: StopReason,
    /// The stop sequence that matched.
    pub stop_sequence: Option<String>,
    /// Tokens.
    pub usage: Usage,
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reply {
    /// Read a chat completion (its first choice).
    pub fn from_chat(c: ChatCompletion) -> Result<Self, TranslateError> {
        let Some(choice) = c.choices.into_iter().next() else {
            return Err(TranslateError::InvalidUpstream {
                format: Format::ChatCompletions,
                message: "no choices".into(),
            });
        };
        let m = choice.message;
        let mut parts = Vec::new();
        match m.thinking_blocks {
            Some(blocks) if !blocks.is_empty() => {
                for b in blocks {
                    parts.push(match b {
                        ThinkingBlock::Thinking {
                            thinking,
                            signature,
                        } => Part::Thinking {
                            text: thinking,
                            signature,
                        },
                        ThinkingBlock::RedactedThinking { data } => Part::Redacted(data),
                    });
                }
            }
            _ => {
                if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
                    parts.push(Part::Thinking {
                        text: r,
                        signature: None,
                    });
                }
            }
        }
        if let Some(text) = m
            .content
            .and_then(|c| c.as_text())
            .filter(|t| !t.is_empty())
        {
            parts.push(Part::Text(text));
        }
        let mut stop = choice
            .finish_reason
            .as_deref()
            .map(StopReason::from_chat)
            .unwrap_or_default();
        if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
            parts.push(Part::Text(r));
            stop = StopReason::Refusal;
        }
        for t in m.tool_calls.unwrap_or_default() {
            parts.push(Part::ToolCall {
                id: t.id,
                name: t.function.name,
                arguments: t.function.arguments,
            });
        }
        // vLLM names the stop string that matched.
        let stop_sequence = match choice.extra.get("stop_reason") {
            Some(Value::String(s)) if stop == StopReason::EndTurn => {
                stop = StopReason::StopSequence;
                Some(s.clone())
            }
            _ => None,
        };
        Ok(Reply {
            id: c.id,
            model: c.model,
            created: c.created,
            parts,
            stop,
            stop_sequence,
            usage: c.usage.as_ref().map(Usage::from_chat).unwrap_or_default(),
        })
    }

    /// Read an Anthropic message. With `json_tool`, a call of [`JSON_TOOL`] is the text.
    pub fn from_messages(m: MessagesResponse, json_tool: bool) -> Self {
        let mut parts = Vec::with_capacity(m.content.len());
        let mut stop = m
            .stop_reason
            .as_deref()
            .map(StopReason::from_anthropic)
            .unwrap_or_default();
        let mut real_tool = false;
        let mut cited = 0;
        for b in m.content {
            match b {
                ContentBlock::Text { text, extra } => {
                    parts.push(Part::Text(text));
                    for c in UrlCitation::from_block(&extra) {
                        if cited < CITATION_CAP {
                            cited += 1;
                            parts.push(Part::Citation(c));
                        }
                    }
                }
                ContentBlock::Thinking {
                    thinking,
                    signature,
                } => parts.push(Part::Thinking {
                    text: thinking,
                    signature: Some(signature).filter(|s| !s.is_empty()),
                }),
                ContentBlock::RedactedThinking { data } => parts.push(Part::Redacted(data)),
                ContentBlock::ToolUse { name, input, .. } if json_tool && name == JSON_TOOL => {
                    parts.push(Part::Text(input.to_string()))
                }
                ContentBlock::ToolUse {
                    id, name, input, ..
                } => {
                    real_tool = true;
                    parts.push(Part::ToolCall {
                        id,
                        name,
                        arguments: input.to_string(),
                    })
                }
                // Server-tool blocks and the like have no client-side equivalent.
                _ => {}
            }
        }
        if stop == StopReason::ToolUse && !real_tool {
            stop = StopReason::EndTurn;
        }
        Reply {
            id: m.id,
            model: m.model,
            created: now(),
            parts,
            stop,
            stop_sequence: m.stop_sequence,
            usage: Usage::from_messages(&m.usage),
        }
    }

    /// As a chat completion. Thinking becomes `reasoning_content` (and, when signed,
    /// `thinking_blocks`, so the client can send it back).
    pub fn to_chat(self) -> ChatCompletion {
        self.to_chat_for(&[])
    }

    /// As a chat completion, the calls of `custom_tools` (the client's custom tools, sent as
    /// one-string functions: see [`crate::custom`]) as `custom` tool calls.
    pub fn to_chat_for(self, custom_tools: &[String]) -> ChatCompletion {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut blocks = Vec::new();
        let mut calls = Vec::new();
        // Characters of `text`, and where the last piece of text began (OpenAI's annotation
        // indices count characters, as Python's strings do).
        let (mut chars, mut last_start) = (0, 0);
        let mut annotations = Vec::new();
        for p in self.parts {
            match p {
                Part::Text(t) => {
                    last_start = chars;
                    chars += t.chars().count();
                    text.push_str(&t);
                }
                Part::Citation(c) => annotations.push(c.to_chat(last_start, chars)),
                Part::Thinking { text: t, signature } => {
                    reasoning.push_str(&t);
                    if signature.is_some() {
                        blocks.push(ThinkingBlock::Thinking {
                            thinking: t,
                            signature,
                        });
                    }
                }
                Part::Redacted(data) => blocks.push(ThinkingBlock::RedactedThinking { data }),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } if custom_tools.contains(&name) => calls.push(ToolCall {
                    id,
                    kind: "custom".into(),
                    custom: Some(CustomCall {
                        input: custom::input_of(&arguments),
                        name,
                    }),
                    function: FunctionCall::default(),
                }),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    custom: None,
                    function: FunctionCall { name, arguments },
                }),
            }
        }
        // OpenAI answers `content: null` beside tool calls.
        let content = if text.is_empty() && !calls.is_empty() {
            None
        } else {
            Some(ChatContent::Text(text))
        };
        let mut extra = Map::new();
        if let Some(s) = &self.stop_sequence {
            extra.insert("stop_reason".into(), Value::String(s.clone()));
        }
        ChatCompletion {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    content,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    refusal: None,
                    reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                    thinking_blocks: (!blocks.is_empty()).then_some(blocks),
                    name: None,
                    extra: {
                        let mut m = Map::from_iter([("role".to_owned(), json!("assistant"))]);
                        if !annotations.is_empty() {
                            m.insert("annotations".into(), Value::Array(annotations));
                        }
                        m
                    },
                },
                finish_reason: Some(self.stop.chat().to_owned()),
                extra,
            }],
            usage: Some(self.usage.to_chat()),
            extra: Map::new(),
        }
    }

    /// As an Anthropic message. Fails on tool arguments that are not JSON (Anthropic's
    /// `input` is an object).
    pub fn to_messages(self) -> Result<MessagesResponse, TranslateError> {
        let mut content = Vec::with_capacity(self.parts.len());
        for p in self.parts {
            content.push(match p {
                Part::Text(t) => ContentBlock::text(t),
                // Anthropic's web citations carry an encrypted index only its search makes.
                Part::Citation(_) => continue,
                Part::Thinking { text, signature } => ContentBlock::Thinking {
                    thinking: text,
                    signature: signature.unwrap_or_default(),
                },
                Part::Redacted(data) => ContentBlock::RedactedThinking { data },
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let input = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&arguments).map_err(|e| {
                            TranslateError::InvalidUpstream {
                                format: Format::ChatCompletions,
                                message: format!(
                                    "tool call {name} has arguments that are not JSON: {e}"
                                ),
                            }
                        })?
                    };
                    ContentBlock::ToolUse {
                        id,
                        name,
                        input,
                        extra: Map::new(),
                    }
                }
            });
        }
        Ok(MessagesResponse {
            id: self.id,
            kind: "message".into(),
            role: "assistant".into(),
            model: self.model,
            content,
            stop_reason: Some(self.stop.anthropic().into()),
            stop_sequence: self.stop_sequence,
            usage: self.usage.to_messages(),
        })
    }

    /// As a Responses object: reasoning items, one message item per run of text, function
    /// call items.
    pub fn to_responses(self) -> ResponseObject {
        self.to_responses_for(&[])
    }

    /// As a Responses object, the calls of `custom_tools` (custom tools sent as one-string
    /// functions, see [`crate::custom`]) as `custom_tool_call` items.
    pub fn to_responses_for(self, custom_tools: &[String]) -> ResponseObject {
        self.to_responses_as(custom_tools, None)
    }

    /// As [`to_responses_for`](Self::to_responses_for), with the response's id (see
    /// [`Plan::response_id`]).
    pub fn to_responses_as(self, custom_tools: &[String], id: Option<&str>) -> ResponseObject {
        let (status, reason) = self.stop.responses();
        let id = id.map_or_else(|| response_id(&self.id), str::to_owned);
        let mut output = Vec::new();
        let mut n = 0usize;
        let mut next_id = |prefix: &str| {
            n += 1;
            item_id(prefix, &id, n)
        };
        // Characters of the open message's text, and where its last piece began.
        let (mut chars, mut last_start) = (0, 0);
        for p in self.parts {
            match p {
                Part::Text(t) => {
                    let n = t.chars().count();
                    match output.last_mut() {
                        Some(OutputItem::Message { content, .. }) => {
                            if let Some(OutputContent::OutputText { text, .. }) = content.last_mut()
                            {
                                text.push_str(&t);
                            }
                            last_start = chars;
                            chars += n;
                        }
                        _ => {
                            (last_start, chars) = (0, n);
                            output.push(OutputItem::Message {
                                id: next_id("msg"),
                                role: "assistant".into(),
                                status: status.into(),
                                content: vec![OutputContent::OutputText {
                                    text: t,
                                    annotations: Vec::new(),
                                }],
                            })
                        }
                    }
                }
                Part::Citation(c) => {
                    if let Some(OutputItem::Message { content, .. }) = output.last_mut() {
                        if let Some(OutputContent::OutputText { annotations, .. }) =
                            content.last_mut()
                        {
                            annotations.push(c.to_responses(last_start, chars));
                        }
                    }
                }
                Part::Thinking { text, signature } => output.push(OutputItem::Reasoning {
                    id: next_id("rs"),
                    summary: vec![SummaryText {
                        kind: "summary_text".into(),
                        text,
                    }],
                    encrypted_content: signature.map(|s| format!("{SIGNATURE_PREFIX}{s}")),
                }),
                Part::Redacted(data) => output.push(OutputItem::Reasoning {
                    id: next_id("rs"),
                    summary: Vec::new(),
                    encrypted_content: Some(format!("{REDACTED_PREFIX}{data}")),
                }),
                Part::ToolCall {
                    id: call_id,
                    name,
                    arguments,
                } if custom_tools.contains(&name) => output.push(OutputItem::CustomToolCall {
                    id: next_id("ctc"),
                    call_id,
                    name,
                    input: custom::input_of(&arguments),
                    status: "completed".into(),
                }),
                Part::ToolCall {
                    id: call_id,
                    name,
                    arguments,
                } => output.push(OutputItem::FunctionCall {
                    id: next_id("fc"),
                    call_id,
                    name,
                    arguments,
                    status: "completed".into(),
                }),
            }
        }
        ResponseObject {
            id,
            object: "response".into(),
            created_at: self.created,
            status: status.into(),
            model: self.model,
            output,
            incomplete_details: reason.map(|r| json!({ "reason": r })),
            error: None,
            usage: Some(self.usage.to_responses()),
            extra: response_extra(),
        }
    }
}

/// A fresh Responses id: [`KEPT_ID_PREFIX`] and 128 random bits in hex.
pub fn fresh_response_id() -> String {
    format!("{KEPT_ID_PREFIX}{:032x}", rand::random::<u128>())
}

/// How the ids of the Responses the gateway translates begin: `resp_` as OpenAI's, then `pc`,
/// which OpenAI's (hex) never have, so a model-less `GET /v1/responses/{id}` is known for one
/// of the gateway's own and sent to a translating upstream (see [`crate::store`]).
pub const KEPT_ID_PREFIX: &str = "resp_pc";

/// Fields every response object has that translation cannot know better.
pub(crate) fn response_extra() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("parallel_tool_calls".into(), Value::Bool(true));
    m.insert("tool_choice".into(), json!("auto"));
    m.insert("tools".into(), json!([]));
    m
}

pub(crate) fn response_id(upstream: &str) -> String {
    if upstream.starts_with("resp_") {
        upstream.to_owned()
    } else {
        format!("resp_{upstream}")
    }
}

pub(crate) fn item_id(prefix: &str, response_id: &str, n: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{n}")
}

/// Translate a chat completion to an Anthropic message.
pub fn chat_to_messages_response(c: ChatCompletion) -> Result<MessagesResponse, TranslateError> {
    Reply::from_chat(c)?.to_messages()
}

/// Translate a chat completion to a Responses object.
pub fn chat_to_responses_response(c: ChatCompletion) -> Result<ResponseObject, TranslateError> {
    Ok(Reply::from_chat(c)?.to_responses())
}

/// Translate an Anthropic message to a chat completion (`json_tool`: see [`Plan::json_tool`]).
pub fn messages_to_chat_response(m: MessagesResponse, json_tool: bool) -> ChatCompletion {
    Reply::from_messages(m, json_tool).to_chat()
}

/// Translate an Anthropic message to a Responses object.
pub fn messages_to_responses_response(m: MessagesResponse, json_tool: bool) -> ResponseObject {
    Reply::from_messages(m, json_tool).to_responses()
}

/// Translate a successful non-streamed response body as `plan` says.
pub fn translate_response(plan: &Plan, body: &[u8]) -> Result<Bytes, TranslateError> {
    let invalid = |e: serde_json::Error| TranslateError::InvalidUpstream {
        format: plan.upstream,
        message: e.to_string(),
    };
    // Unknown fields ride along as `Value`s: an answer of millions of values (no model writes
    // one) is refused before it takes 30 times its size.
    let max = portcullis_core::json_skim::MAX_VALUES;
    if plan.upstream != Format::Responses && portcullis_core::json_skim::more_values_than(body, max)
    {
        return Err(TranslateError::InvalidUpstream {
            format: plan.upstream,
            message: format!("more than {max} JSON values, too many to translate"),
        });
    }
    let reply = match plan.upstream {
        Format::ChatCompletions => {
            Reply::from_chat(serde_json::from_slice(body).map_err(invalid)?)?
        }
        Format::Messages => Reply::from_messages(
            serde_json::from_slice(body).map_err(invalid)?,
            plan.json_tool,
        ),
        Format::Responses => return Ok(Bytes::copy_from_slice(body)),
    };
    let out = match plan.client {
        Format::ChatCompletions => {
            let mut c = reply.to_chat_for(&plan.custom_tools);
            if plan.legacy_functions {
                crate::legacy::answer(&mut c);
            }
            serde_json::to_vec(&c)
        }
        Format::Messages => serde_json::to_vec(&reply.to_messages()?),
        Format::Responses => serde_json::to_vec(
            &reply.to_responses_as(&plan.custom_tools, plan.response_id.as_deref()),
        ),
    };
    out.map(Bytes::from).map_err(invalid)
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
