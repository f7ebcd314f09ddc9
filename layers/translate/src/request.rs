//! Request translation: chat completions <-> Messages, Responses -> chat completions and
//! Responses -> Messages. Pure functions over the serde types; what the target cannot carry
//! is a [`TranslateError::Unsupported`] naming the field, unless the crate docs' table lists
//! it as dropped or mapped on purpose.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::{
    api::Format,
    custom,
    error::TranslateError,
    types::{
        chat::{
            AssistantMessage, ChatContent, ChatMessage, ChatPart, ChatRequest, ChatTool, FileRef,
            FunctionCall, FunctionDef, ImageUrl, JsonSchemaFormat, ResponseFormat, Stop,
            StreamOptions, ThinkingBlock, ToolCall,
        },
        messages::{
            ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, Metadata, Role,
            SystemPrompt, Thinking, Tool, ToolChoice, ToolResultContent,
        },
        responses::{
            InputContent, InputItem, InputPart, ResponsesInput, ResponsesRequest, TextFormat,
        },
    },
};

/// `max_tokens` sent to Anthropic when the client gave no output cap (Anthropic requires
/// one; chat and Responses clients may omit it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Name of the tool that carries a `json_schema` response format to Anthropic.
pub const JSON_TOOL: &str = "json_response";

/// Prefix of a Responses `encrypted_content` that holds an Anthropic thinking signature.
pub const SIGNATURE_PREFIX: &str = "anthropic-signature:";
/// Prefix of a Responses `encrypted_content` that holds Anthropic redacted thinking.
pub const REDACTED_PREFIX: &str = "anthropic-redacted:";

/// The thinking budget for an OpenAI `reasoning_effort` (`None`: thinking off).
///
/// | effort | `budget_tokens` |
/// | --- | --- |
/// | `none`, `minimal` | thinking off |
/// | `low` | 1024 (Anthropic's minimum) |
/// | `medium` | 4096 |
/// | `high` | 16384 |
/// | `xhigh` | 32768 |
pub fn thinking_budget(effort: &str) -> Result<Option<u32>, UnknownEffort> {
    match effort {
        "none" | "minimal" => Ok(None),
        "low" => Ok(Some(1024)),
        "medium" => Ok(Some(4096)),
        "high" => Ok(Some(16384)),
        "xhigh" => Ok(Some(32768)),
        _ => Err(UnknownEffort(effort.to_owned())),
    }
}

/// A `reasoning_effort` this crate has no thinking budget for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reasoning effort {0:?}")]
pub struct UnknownEffort(pub String);

/// The `reasoning_effort` for an Anthropic thinking budget: up to 2048 `low`, up to 8192
/// `medium`, above `high`.
pub fn effort_for_budget(budget: u32) -> &'static str {
    match budget {
        0..=2048 => "low",
        2049..=8192 => "medium",
        _ => "high",
    }
}

/// What the response translation needs to know about the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The client's API.
    pub client: Format,
    /// The upstream's API.
    pub upstream: Format,
    /// The client asked for a stream.
    pub stream: bool,
    /// A chat client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// A `json_schema` response format travels as the [`JSON_TOOL`] tool: its call is the
    /// answer's text.
    pub json_tool: bool,
    /// A token-count request (`count_tokens` / `input_tokens`): the answer is a count.
    pub count: bool,
    /// The Responses client's custom (freeform) tools, sent as one-string functions: their
    /// calls go back as `custom_tool_call` items (see [`crate::custom`]).
    pub custom_tools: Vec<String>,
    /// The chat client declared legacy `functions`: its answers carry `function_call`
    /// (see [`crate::legacy`]).
    pub legacy_functions: bool,
    /// The id a Responses client's answer gets (its items' ids derive from it); `None`:
    /// `resp_` + the upstream's id. The service gives each answer a fresh one: upstream ids
    /// repeat (Ollama draws from a thousand) and stored items are found by id.
    pub response_id: Option<String>,
}

impl Plan {
    /// A plan with no options.
    pub fn new(client: Format, upstream: Format) -> Self {
        Plan {
            client,
            upstream,
            stream: false,
            include_usage: false,
            json_tool: false,
            count: false,
            custom_tools: Vec::new(),
            legacy_functions: false,
            response_id: None,
        }
    }
}

/// The shapes are read into trees (unknown fields as `serde_json::Value`, 32 bytes a value or
/// more): a body of millions of values (a 10 MB one holds five million) is refused before it
/// takes 30 times its size, naming what it was for (`translate`, `count`). No chat a
/// provider serves comes near the bound.
pub(crate) fn refuse_huge(client: Format, body: &[u8], doing: &str) -> Result<(), TranslateError> {
    let max = portcullis_core::json_skim::MAX_VALUES;
    if portcullis_core::json_skim::more_values_than(body, max) {
        return Err(TranslateError::InvalidRequest {
            format: client,
            message: format!("more than {max} JSON values, too many to {doing}"),
        });
    }
    Ok(())
}

/// Translate a request body from `client`'s shape to `upstream`'s.
pub fn translate_request(
    client: Format,
    upstream: Format,
    body: &[u8],
) -> Result<(Bytes, Plan), TranslateError> {
    let invalid = |e: serde_json::Error| TranslateError::InvalidRequest {
        format: client,
        message: e.to_string(),
    };
    let mut plan = Plan::new(client, upstream);
    if client != upstream {
        refuse_huge(client, body, "translate")?;
    }
    let out = match (client, upstream) {
        (Format::ChatCompletions, Format::Messages) => {
            let mut req: ChatRequest = serde_json::from_slice(body).map_err(invalid)?;
            plan.stream = req.stream == Some(true);
            plan.legacy_functions = crate::legacy::modernize(&mut req)?;
            plan.custom_tools = req
                .tools
                .iter()
                .flatten()
                .filter(|t| t.kind == "custom")
                .filter_map(|t| t.extra.get("custom")?.get("name")?.as_str())
                .map(str::to_owned)
                .collect();
            plan.include_usage = req
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
            let out = chat_to_messages(req)?;
            plan.json_tool = uses_json_tool(&out);
            serde_json::to_vec(&out)
        }
        (Format::Messages, Format::ChatCompletions) => {
            let req: MessagesRequest = serde_json::from_slice(body).map_err(invalid)?;
            plan.stream = req.stream == Some(true);
            serde_json::to_vec(&messages_to_chat(req)?)
        }
        (Format::Responses, Format::ChatCompletions) => {
            let req: ResponsesRequest = serde_json::from_slice(body).map_err(invalid)?;
            plan.stream = req.stream == Some(true);
            plan.custom_tools = custom_tool_names(&req);
            serde_json::to_vec(&responses_to_chat(req)?)
        }
        (Format::Responses, Format::Messages) => {
            let req: ResponsesRequest = serde_json::from_slice(body).map_err(invalid)?;
            plan.stream = req.stream == Some(true);
            plan.custom_tools = custom_tool_names(&req);
            let out = responses_to_messages(req)?;
            plan.json_tool = uses_json_tool(&out);
            serde_json::to_vec(&out)
        }
        (c, u) if c == u => return Ok((Bytes::copy_from_slice(body), plan)),
        (_, u) => {
            return Err(TranslateError::unsupported(
                "request",
                u,
                format!("no translation from the {client} API"),
            ))
        }
    };
    let out = out.map_err(|e| TranslateError::InvalidRequest {
        format: client,
        message: e.to_string(),
    })?;
    Ok((Bytes::from(out), plan))
}

fn custom_tool_names(req: &ResponsesRequest) -> Vec<String> {
    req.tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "custom")
        .filter_map(|t| t.name.clone())
        .collect()
}

fn uses_json_tool(req: &MessagesRequest) -> bool {
    req.tools
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t.name == JSON_TOOL))
}

/// Tool call ids must match `^[a-zA-Z0-9_-]+$` at Anthropic; other servers make freer ones
/// (`functions.get_weather:0`). The same id maps the same way in the call and its result.
fn tool_id(id: &str) -> String {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return id.to_owned();
    }
    let mut s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push_str("call_");
    }
    s
}

/// `data:<media type>;base64,<data>` -> (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn image_block(url: &str, field: &str) -> Result<ContentBlock, TranslateError> {
    let source = if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url).ok_or_else(|| {
            TranslateError::unsupported(field, Format::Messages, "only base64 data URLs")
        })?;
        ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }
    } else if url.starts_with("http://") || url.starts_with("https://") {
        ImageSource::Url {
            url: url.to_owned(),
        }
    } else {
        return Err(TranslateError::unsupported(
            field,
            Format::Messages,
            "images must be http(s) or data URLs",
        ));
    };
    Ok(ContentBlock::Image {
        source,
        extra: Map::new(),
    })
}

/// A tool the target cannot call (a provider's hosted or server tool, a namespace of tools):
/// left out of the translated request, so the model is not offered it, instead of failing
/// the request. Agents send such tools on every request (Codex a `web_search` and a
/// `namespace`); refusing them would make every turn fail.
fn left_out(dropped: &mut Vec<String>, index: usize, kind: &str) {
    dropped.push(format!("tools[{index}] ({kind})"));
}

fn report_left_out(dropped: &[String], target: Format) {
    if !dropped.is_empty() {
        tracing::info!(
            target_api = %target,
            tools = %dropped.join(", "),
            "tools the upstream's API cannot call were left out of the translated request"
        );
    }
}

fn refuse_keys(
    extra: &Map<String, Value>,
    keys: &[(&str, &str)],
    target: Format,
) -> Result<(), TranslateError> {
    for (k, why) in keys {
        match extra.get(*k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => return Err(TranslateError::unsupported(*k, target, *why)),
        }
    }
    Ok(())
}

// === chat completions -> Messages ===

/// Translate a chat completions request to a Messages request (legacy function calling
/// rewritten first, see [`crate::legacy`]).
pub fn chat_to_messages(mut req: ChatRequest) -> Result<MessagesRequest, TranslateError> {
    const T: Format = Format::Messages;
    crate::legacy::modernize(&mut req)?;
    let ChatRequest {
        model,
        messages,
        max_tokens,
        max_completion_tokens,
        temperature,
        top_p,
        stop,
        stream,
        stream_options: _,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        reasoning_effort,
        n,
        logprobs,
        top_logprobs,
        user,
        seed: _,
        frequency_penalty,
        presence_penalty,
        logit_bias,
        modalities,
        audio,
        mut extra,
    } = req;
    if n.is_some_and(|n| n > 1) {
        return Err(TranslateError::unsupported(
            "n",
            T,
            "Anthropic gives one choice per request",
        ));
    }
    if logprobs == Some(true) || top_logprobs.is_some_and(|n| n > 0) {
        return Err(TranslateError::unsupported(
            "logprobs",
            T,
            "Anthropic gives no log probabilities",
        ));
    }
    for (name, v) in [
        ("frequency_penalty", frequency_penalty),
        ("presence_penalty", presence_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(TranslateError::unsupported(
                name,
                T,
                "Anthropic has no repetition penalties",
            ));
        }
    }
    if logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(TranslateError::unsupported(
            "logit_bias",
            T,
            "Anthropic has no token biases",
        ));
    }
    if audio.is_some()
        || modalities
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m != "text"))
    {
        return Err(TranslateError::unsupported(
            "modalities",
            T,
            "Anthropic answers only in text",
        ));
    }
    // Dropped on purpose (see the crate docs' table).
    for k in [
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "verbosity",
        "prediction",
    ] {
        extra.remove(k);
    }
    let safety_id = match extra.remove("safety_identifier") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };

    let mut system: Vec<ContentBlock> = Vec::new();
    let mut turns: Vec<(Role, Vec<ContentBlock>)> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        match m {
            ChatMessage::Other(map) => {
                return Err(unknown_kind(
                    &map,
                    ("role", "role", "role"),
                    format!("messages[{i}]"),
                    Format::ChatCompletions,
                    T,
                    &[
                        "system",
                        "developer",
                        "user",
                        "assistant",
                        "tool",
                        "function",
                    ],
                ))
            }
            ChatMessage::System { content, .. } | ChatMessage::Developer { content, .. } => {
                let text = content.as_text().ok_or_else(|| {
                    TranslateError::unsupported(
                        format!("messages[{i}].content"),
                        T,
                        "system messages carry only text",
                    )
                })?;
                if !text.is_empty() {
                    system.push(ContentBlock::text(text));
                }
            }
            ChatMessage::User { content, .. } => {
                let blocks = user_blocks(content, &format!("messages[{i}].content"))?;
                push_turn(&mut turns, Role::User, blocks);
            }
            ChatMessage::Assistant(a) => {
                let blocks = assistant_blocks(a, i)?;
                push_turn(&mut turns, Role::Assistant, blocks);
            }
            ChatMessage::Tool {
                content,
                tool_call_id,
            } => {
                let field = format!("messages[{i}].content");
                let content = match content {
                    ChatContent::Text(s) => ToolResultContent::Text(s),
                    parts => ToolResultContent::Blocks(user_blocks(parts, &field)?),
                };
                let block = ContentBlock::ToolResult {
                    tool_use_id: tool_id(&tool_call_id),
                    content: Some(content),
                    is_error: None,
                    extra: Map::new(),
                };
                push_turn(&mut turns, Role::User, vec![block]);
            }
            // `legacy::modernize` made each a tool message or refused it; a caller of the
            // types alone gets the same refusal.
            ChatMessage::Function { .. } => {
                return Err(TranslateError::unsupported(
                    format!("messages[{i}]"),
                    T,
                    "a function message with no function_call before it",
                ))
            }
        }
    }

    // Thinking: an explicit Anthropic `thinking` (a client extension, or model params merged
    // in upstream's shape) wins over `reasoning_effort`.
    let mut thinking = match extra.remove("thinking") {
        Some(v) => Some(serde_json::from_value::<Thinking>(v).map_err(|e| {
            TranslateError::InvalidRequest {
                format: Format::ChatCompletions,
                message: format!("thinking: {e}"),
            }
        })?),
        None => match reasoning_effort.as_deref() {
            Some(effort) => thinking_budget(effort)
                .map_err(|e| TranslateError::unsupported("reasoning_effort", T, e.to_string()))?
                .map(|budget_tokens| Thinking::Enabled { budget_tokens }),
            None => None,
        },
    };
    // A chat client cannot send the thinking blocks back: Anthropic refuses a thinking request
    // whose last assistant turn used a tool without them, so thinking is off for that turn.
    if matches!(
        thinking,
        Some(Thinking::Enabled { .. } | Thinking::Adaptive)
    ) {
        if let Some((_, last)) = turns.iter().rev().find(|(r, _)| *r == Role::Assistant) {
            let uses_tool = last
                .iter()
                .any(|b| matches!(b, ContentBlock::ToolUse { .. }));
            let thought = last.iter().any(|b| {
                matches!(
                    b,
                    ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. }
                )
            });
            if uses_tool && !thought {
                thinking = None;
            }
        }
    }
    let thinking_on = matches!(
        thinking,
        Some(Thinking::Enabled { .. } | Thinking::Adaptive)
    );

    let mut max_tokens = max_completion_tokens
        .or(max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(Thinking::Enabled { budget_tokens }) = thinking {
        if max_tokens <= budget_tokens {
            max_tokens = max_tokens.saturating_add(budget_tokens);
        }
    }
    // Anthropic takes 0..1 and, with thinking, only temperature 1 and top_p >= 0.95.
    let temperature = temperature
        .map(|t| t.clamp(0.0, 1.0))
        .filter(|t| !thinking_on || *t == 1.0);
    let top_p = top_p.filter(|p| !thinking_on || *p >= 0.95);

    // `allowed_tools`: the model may call only these, in `mode`; Anthropic says it by the
    // tools it is sent.
    let (tool_choice, allowed) = match tool_choice {
        Some(Value::Object(o))
            if o.get("type").and_then(Value::as_str) == Some("allowed_tools") =>
        {
            let a = o.get("allowed_tools").unwrap_or(&Value::Null);
            let names: Vec<String> = a
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    t.pointer("/function/name")
                        .or_else(|| t.pointer("/custom/name"))
                        .or_else(|| t.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            (a.get("mode").cloned(), Some(names))
        }
        other => (other, None),
    };
    let mut out_tools: Vec<Tool> = Vec::new();
    for (k, t) in tools.unwrap_or_default().into_iter().enumerate() {
        if let Some(names) = &allowed {
            let name = t.function.as_ref().map(|f| f.name.as_str()).or_else(|| {
                t.extra
                    .get("custom")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
            });
            if !name.is_some_and(|n| names.iter().any(|a| a == n)) {
                continue;
            }
        }
        match (t.kind.as_str(), t.function) {
            ("custom", _) => {
                let c = t.extra.get("custom").unwrap_or(&Value::Null);
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    return Err(TranslateError::InvalidRequest {
                        format: Format::ChatCompletions,
                        message: format!("tools[{k}].custom.name: a custom tool needs a name"),
                    });
                }
                let description = c.get("description").and_then(Value::as_str);
                let format = c.get("format").map(custom::flat_format);
                let f = custom::function_for(
                    name.to_owned(),
                    description.map(str::to_owned),
                    format.as_ref(),
                );
                if let Some(f) = f.function {
                    out_tools.push(Tool {
                        name: f.name,
                        description: f.description,
                        input_schema: f.parameters,
                        kind: None,
                        extra: Map::new(),
                    });
                }
            }
            ("function", Some(f)) => out_tools.push(Tool {
                name: f.name,
                description: f.description,
                input_schema: Some(
                    f.parameters
                        .unwrap_or_else(|| json!({"type":"object","properties":{}})),
                ),
                kind: None,
                extra: Map::new(),
            }),
            (kind, _) => {
                return Err(TranslateError::unsupported(
                    format!("tools[{k}]"),
                    T,
                    format!("{kind} tools"),
                ))
            }
        }
    }
    // `web_search_options`: the client asks for a web search; Anthropic runs its own.
    if let Some(opts) = extra.remove("web_search_options") {
        out_tools.push(web_search_tool(&opts));
    }
    let client_has_tools = !out_tools.is_empty();
    let mut choice = match tool_choice {
        None => None,
        Some(v) => Some(chat_choice_to_anthropic(&v)?),
    };
    if parallel_tool_calls == Some(false) && client_has_tools {
        choice = Some(
            match choice.unwrap_or(ToolChoice::Auto {
                disable_parallel_tool_use: None,
            }) {
                ToolChoice::Auto { .. } => ToolChoice::Auto {
                    disable_parallel_tool_use: Some(true),
                },
                ToolChoice::Any { .. } => ToolChoice::Any {
                    disable_parallel_tool_use: Some(true),
                },
                ToolChoice::Tool { name, .. } => ToolChoice::Tool {
                    name,
                    disable_parallel_tool_use: Some(true),
                },
                ToolChoice::None => ToolChoice::None,
            },
        );
    }
    match response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            system.push(ContentBlock::text(
                "Respond with one JSON object and nothing else.",
            ));
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema
                .schema
                .unwrap_or_else(|| json!({"type":"object"}));
            if schema
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "object")
            {
                return Err(TranslateError::unsupported(
                    "response_format.json_schema.schema",
                    T,
                    "the schema's root must be an object (it travels as a tool's input)",
                ));
            }
            out_tools.push(Tool {
                name: JSON_TOOL.into(),
                description: Some(json_schema.description.unwrap_or_else(|| {
                    format!(
                        "Give the answer ({}) as this tool's input.",
                        json_schema.name
                    )
                })),
                input_schema: Some(schema),
                kind: None,
                extra: Map::new(),
            });
            if client_has_tools || thinking_on {
                // Anthropic refuses a forced tool with thinking on, and forcing it would
                // stop the client's own tools from being called.
                system.push(ContentBlock::text(format!(
                    "Give your final answer by calling the {JSON_TOOL} tool."
                )));
            } else {
                choice = Some(ToolChoice::Tool {
                    name: JSON_TOOL.into(),
                    disable_parallel_tool_use: None,
                });
            }
        }
    }
    if out_tools.is_empty() {
        choice = None; // Anthropic wants no tool_choice without tools
    }
    let top_k = match extra.remove("top_k") {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
        _ => None,
    };
    let system = match system.len() {
        0 => None,
        1 => match system.pop() {
            Some(ContentBlock::Text { text, extra }) if extra.is_empty() => {
                Some(SystemPrompt::Text(text))
            }
            Some(b) => Some(SystemPrompt::Blocks(vec![b])),
            None => None,
        },
        _ => Some(SystemPrompt::Blocks(system)),
    };
    Ok(MessagesRequest {
        model,
        messages: turns
            .into_iter()
            .map(|(role, blocks)| Message {
                role,
                content: compact(blocks),
            })
            .collect(),
        max_tokens,
        system,
        temperature,
        top_p,
        top_k,
        stop_sequences: stop
            .map(|s| {
                s.into_vec()
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty()),
        stream: stream.filter(|s| *s),
        tools: (!out_tools.is_empty()).then_some(out_tools),
        tool_choice: choice,
        thinking,
        metadata: user.or(safety_id).map(|u| Metadata {
            user_id: Some(u),
            extra: Map::new(),
        }),
        extra: anthropic_fields(extra),
    })
}

/// Top-level Messages fields an OpenAI-shaped request may carry through (as `extra_body`)
/// besides those mapped above.
const ANTHROPIC_FIELDS: [&str; 5] = [
    "container",
    "mcp_servers",
    "context_management",
    "output_format",
    "output_config",
];

/// What of a chat request's unknown fields goes on to Anthropic: its own fields only.
/// Anthropic refuses any field it does not know, and OpenAI keeps adding request metadata
/// (Codex sends `client_metadata` on every Responses request), so an unknown field is an
/// OpenAI one here: left out, said at debug level.
fn anthropic_fields(mut extra: Map<String, Value>) -> Map<String, Value> {
    extra.retain(|k, _| {
        let keep = ANTHROPIC_FIELDS.contains(&k.as_str());
        if !keep {
            tracing::debug!(field = %k, "a field Anthropic does not take was left out");
        }
        keep
    });
    extra
}

/// One text block without extras is sent as a plain string.
fn compact(mut blocks: Vec<ContentBlock>) -> MessageContent {
    if blocks.len() == 1 {
        if let ContentBlock::Text { extra, .. } = &blocks[0] {
            if extra.is_empty() {
                if let Some(ContentBlock::Text { text, .. }) = blocks.pop() {
                    return MessageContent::Text(text);
                }
            }
        }
    }
    MessageContent::Blocks(blocks)
}

fn push_turn(turns: &mut Vec<(Role, Vec<ContentBlock>)>, role: Role, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        // Anthropic alternates roles: consecutive tool results (and a user message after
        // them) are one user turn.
        Some((r, b)) if *r == role => b.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn user_blocks(content: ChatContent, field: &str) -> Result<Vec<ContentBlock>, TranslateError> {
    const T: Format = Format::Messages;
    let parts = match content {
        ChatContent::Text(s) if s.is_empty() => return Ok(Vec::new()),
        ChatContent::Text(s) => return Ok(vec![ContentBlock::text(s)]),
        ChatContent::Parts(p) => p,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        let f = format!("{field}[{j}]");
        match p {
            ChatPart::Text { text } | ChatPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(ContentBlock::text(text));
                }
            }
            ChatPart::ImageUrl { image_url } => out.push(image_block(&image_url.url, &f)?),
            ChatPart::InputAudio { .. } => {
                return Err(TranslateError::unsupported(f, T, "Anthropic takes no audio"))
            }
            ChatPart::Other(map) => {
                return Err(unknown_kind(
                    &map,
                    ("type", "type", "content parts of type"),
                    f,
                    Format::ChatCompletions,
                    T,
                    &["text", "image_url", "input_audio", "file", "refusal"],
                ))
            }
            ChatPart::File { file } => match file.file_data.as_deref().and_then(parse_data_url) {
                Some((media_type, data)) => {
                    let mut extra = Map::new();
                    if let Some(name) = file.filename {
                        extra.insert("title".into(), Value::String(name));
                    }
                    out.push(ContentBlock::Document {
                        source: json!({"type":"base64","media_type":media_type,"data":data}),
                        extra,
                    });
                }
                None => {
                    return Err(TranslateError::unsupported(
                        f,
                        T,
                        "files must be inline base64 data (an OpenAI file id means nothing to Anthropic)",
                    ))
                }
            },
        }
    }
    Ok(out)
}

fn assistant_blocks(a: AssistantMessage, i: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    const T: Format = Format::Messages;
    refuse_keys(&a.extra, &[("audio", "audio answers")], T)?;
    let mut out = Vec::new();
    // Thinking comes first in an Anthropic turn, and only signed blocks are accepted.
    for b in a.thinking_blocks.unwrap_or_default() {
        match b {
            ThinkingBlock::Thinking {
                thinking,
                signature: Some(signature),
            } => out.push(ContentBlock::Thinking {
                thinking,
                signature,
            }),
            ThinkingBlock::Thinking {
                signature: None, ..
            } => {}
            ThinkingBlock::RedactedThinking { data } => {
                out.push(ContentBlock::RedactedThinking { data })
            }
        }
    }
    let text = match a.content {
        None => None,
        Some(c) => Some(c.as_text().ok_or_else(|| {
            TranslateError::unsupported(
                format!("messages[{i}].content"),
                T,
                "assistant messages carry only text",
            )
        })?),
    };
    if let Some(t) = text.or(a.refusal).filter(|t| !t.is_empty()) {
        out.push(ContentBlock::text(t));
    }
    for (k, c) in a.tool_calls.unwrap_or_default().into_iter().enumerate() {
        if let Some(custom) = c.custom {
            // A custom tool's call: the function it is sent as, called with its input.
            out.push(ContentBlock::ToolUse {
                id: tool_id(&c.id),
                name: custom.name,
                input: json!({ custom::INPUT: custom.input }),
                extra: Map::new(),
            });
            continue;
        }
        let args = c.function.arguments.trim();
        let input = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(args).map_err(|e| {
                TranslateError::unsupported(
                    format!("messages[{i}].tool_calls[{k}].function.arguments"),
                    T,
                    format!("arguments are not JSON ({e})"),
                )
            })?
        };
        out.push(ContentBlock::ToolUse {
            id: tool_id(&c.id),
            name: c.function.name,
            input,
            extra: Map::new(),
        });
    }
    Ok(out)
}

fn chat_choice_to_anthropic(v: &Value) -> Result<ToolChoice, TranslateError> {
    let bad = || TranslateError::unsupported("tool_choice", Format::Messages, format!("{v}"));
    Ok(match v {
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto {
                disable_parallel_tool_use: None,
            },
            "none" => ToolChoice::None,
            "required" => ToolChoice::Any {
                disable_parallel_tool_use: None,
            },
            _ => return Err(bad()),
        },
        Value::Object(o)
            if matches!(
                o.get("type").and_then(Value::as_str),
                Some("function" | "custom")
            ) =>
        {
            let name = o
                .get("function")
                .or_else(|| o.get("custom"))
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use: None,
            }
        }
        _ => return Err(bad()),
    })
}

// === Messages -> chat completions ===

/// The text of system blocks (`field`: where they are, for the error), joined by blank lines;
/// only text blocks say anything a chat system message can carry.
fn system_text(blocks: Vec<ContentBlock>, field: &str) -> Result<String, TranslateError> {
    let mut texts = Vec::new();
    for (k, b) in blocks.into_iter().enumerate() {
        match b {
            ContentBlock::Text { text, .. } => texts.push(text),
            _ => {
                return Err(TranslateError::unsupported(
                    format!("{field}[{k}]"),
                    Format::ChatCompletions,
                    "system blocks must be text",
                ))
            }
        }
    }
    Ok(texts.join("\n\n"))
}

/// Translate a Messages request to a chat completions request.
pub fn messages_to_chat(req: MessagesRequest) -> Result<ChatRequest, TranslateError> {
    const T: Format = Format::ChatCompletions;
    let MessagesRequest {
        model,
        messages,
        max_tokens,
        system,
        temperature,
        top_p,
        top_k,
        stop_sequences,
        stream,
        tools,
        tool_choice,
        thinking,
        metadata,
        mut extra,
    } = req;
    refuse_keys(
        &extra,
        &[
            ("container", "Anthropic code-execution containers"),
            ("mcp_servers", "Anthropic's MCP connector"),
        ],
        T,
    )?;
    let mut dropped_blocks: Vec<String> = Vec::new();
    extra.remove("service_tier");
    // Structured outputs: `output_config.format` (and the beta's `output_format`) is the
    // chat `response_format` a local model's server constrains its answer with.
    let response_format = structured_output(&mut extra)?;
    // Anthropic's server-side editing of the context (clearing old thinking or tool results,
    // as Claude Code asks on every request), the rest of `output_config` (its effort control,
    // also sent by Claude Code; the thinking budget already sets `reasoning_effort`) and its
    // inference region: Anthropic's own knobs, not part of the conversation. A chat upstream
    // gets the conversation as sent; OpenAI's own API would refuse the fields.
    for k in ["context_management", "output_config", "inference_geo"] {
        extra.remove(k);
    }
    let mut out: Vec<ChatMessage> = Vec::new();
    match system {
        None => {}
        Some(SystemPrompt::Text(s)) => out.push(ChatMessage::System {
            content: ChatContent::Text(s),
            name: None,
        }),
        Some(SystemPrompt::Blocks(blocks)) => out.push(ChatMessage::System {
            content: ChatContent::Text(system_text(blocks, "system")?),
            name: None,
        }),
    }
    for (i, m) in messages.into_iter().enumerate() {
        let blocks = m.content.into_blocks();
        match m.role {
            // In place: a chat conversation takes system messages anywhere.
            Role::System => out.push(ChatMessage::System {
                content: ChatContent::Text(system_text(blocks, &format!("messages[{i}].content"))?),
                name: None,
            }),
            Role::User => {
                let mut parts: Vec<ChatPart> = Vec::new();
                let mut late_images: Vec<ChatPart> = Vec::new();
                for (j, b) in blocks.into_iter().enumerate() {
                    let f = format!("messages[{i}].content[{j}]");
                    match b {
                        ContentBlock::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                            ..
                        } => {
                            let mut text = String::new();
                            if is_error == Some(true) {
                                text.push_str("Error: ");
                            }
                            match content {
                                None => {}
                                Some(ToolResultContent::Text(s)) => text.push_str(&s),
                                Some(ToolResultContent::Blocks(bs)) => {
                                    for (k, b) in bs.into_iter().enumerate() {
                                        match b {
                                            ContentBlock::Text { text: t, .. } => {
                                                if !text.is_empty() && !text.ends_with(' ') {
                                                    text.push('\n');
                                                }
                                                text.push_str(&t);
                                            }
                                            // Chat tool messages carry only text: images
                                            // follow in a user message.
                                            ContentBlock::Image { source, .. } => late_images.push(
                                                image_part(source, &format!("{f}.content[{k}]"))?,
                                            ),
                                            ContentBlock::Other(map) => {
                                                let f = format!("{f}.content[{k}]");
                                                if let Some(t) =
                                                    other_block(map, &f, &mut dropped_blocks)?
                                                {
                                                    if !text.is_empty() && !text.ends_with('\n') {
                                                        text.push('\n');
                                                    }
                                                    text.push_str(&t);
                                                }
                                            }
                                            _ => {
                                                return Err(TranslateError::unsupported(
                                                    format!("{f}.content[{k}]"),
                                                    T,
                                                    "tool results carry text and images only",
                                                ))
                                            }
                                        }
                                    }
                                }
                            }
                            out.push(ChatMessage::Tool {
                                content: ChatContent::Text(text),
                                tool_call_id: tool_use_id,
                            });
                        }
                        ContentBlock::Text { text, .. } => parts.push(ChatPart::Text { text }),
                        ContentBlock::Image { source, .. } => parts.push(image_part(source, &f)?),
                        ContentBlock::Document { source, extra } => {
                            parts.push(document_part(&source, &extra, &f)?)
                        }
                        ContentBlock::Other(map) => {
                            if let Some(text) = other_block(map, &f, &mut dropped_blocks)? {
                                parts.push(ChatPart::Text { text });
                            }
                        }
                        _ => {
                            return Err(TranslateError::unsupported(
                                f,
                                T,
                                "this block in a user turn",
                            ))
                        }
                    }
                }
                parts.extend(late_images);
                if !parts.is_empty() {
                    let content = match parts.as_slice() {
                        [ChatPart::Text { .. }] => match parts.pop() {
                            Some(ChatPart::Text { text }) => ChatContent::Text(text),
                            _ => unreachable!("matched a single text part"),
                        },
                        _ => ChatContent::Parts(parts),
                    };
                    out.push(ChatMessage::User {
                        content,
                        name: None,
                    });
                }
            }
            Role::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (j, b) in blocks.into_iter().enumerate() {
                    match b {
                        ContentBlock::Text { text: t, .. } => text.push_str(&t),
                        ContentBlock::ToolUse {
                            id, name, input, ..
                        } => calls.push(ToolCall {
                            id,
                            kind: "function".into(),
                            custom: None,
                            function: FunctionCall {
                                name,
                                arguments: input.to_string(),
                            },
                        }),
                        // Chat requests cannot carry reasoning back: dropped (table).
                        ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
                        ContentBlock::Other(map) => {
                            let f = format!("messages[{i}].content[{j}]");
                            if let Some(t) = other_block(map, &f, &mut dropped_blocks)? {
                                text.push_str(&t);
                            }
                        }
                        _ => {
                            return Err(TranslateError::unsupported(
                                format!("messages[{i}].content[{j}]"),
                                T,
                                "this block in an assistant turn",
                            ))
                        }
                    }
                }
                if text.is_empty() && calls.is_empty() {
                    continue;
                }
                out.push(ChatMessage::Assistant(AssistantMessage {
                    content: (!text.is_empty()).then_some(ChatContent::Text(text)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..AssistantMessage::default()
                }));
            }
        }
    }
    if !dropped_blocks.is_empty() {
        tracing::info!(
            target_api = %T,
            blocks = %dropped_blocks.join(", "),
            "server-side tool blocks in the history were left out of the translated request"
        );
    }
    let mut out_tools = Vec::new();
    let mut dropped = Vec::new();
    for (k, t) in tools.unwrap_or_default().into_iter().enumerate() {
        match t.kind.as_deref() {
            None | Some("custom") if t.name.is_empty() => {
                return Err(TranslateError::InvalidRequest {
                    format: Format::Messages,
                    message: format!("tools[{k}]: a client tool needs a name"),
                })
            }
            None | Some("custom") => out_tools.push(ChatTool {
                kind: "function".into(),
                function: Some(FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema,
                    strict: None,
                }),
                extra: Map::new(),
            }),
            Some(kind) => left_out(&mut dropped, k, kind),
        }
    }
    report_left_out(&dropped, T);
    let mut parallel = None;
    let choice = tool_choice.map(|c| match c {
        ToolChoice::Auto {
            disable_parallel_tool_use: d,
        } => {
            parallel = d.map(|d| !d);
            json!("auto")
        }
        ToolChoice::Any {
            disable_parallel_tool_use: d,
        } => {
            parallel = d.map(|d| !d);
            json!("required")
        }
        ToolChoice::Tool {
            name,
            disable_parallel_tool_use: d,
        } => {
            parallel = d.map(|d| !d);
            json!({"type":"function","function":{"name":name}})
        }
        ToolChoice::None => json!("none"),
    });
    if let Some(k) = top_k {
        // vLLM, llama.cpp and LM Studio read `top_k`; OpenAI itself refuses it.
        extra.insert("top_k".into(), Value::from(k));
    }
    let reasoning_effort = match thinking {
        Some(Thinking::Enabled { budget_tokens }) => {
            Some(effort_for_budget(budget_tokens).to_owned())
        }
        Some(Thinking::Adaptive) => Some("medium".to_owned()),
        _ => None,
    };
    let streaming = stream == Some(true);
    Ok(ChatRequest {
        model,
        messages: out,
        max_tokens: Some(max_tokens),
        temperature,
        top_p,
        stop: stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        stream: streaming.then_some(true),
        // Anthropic clients always get usage: ask for it.
        stream_options: streaming.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        tools: (!out_tools.is_empty()).then_some(out_tools),
        tool_choice: choice,
        parallel_tool_calls: parallel,
        reasoning_effort,
        response_format,
        user: metadata.and_then(|m| m.user_id),
        extra,
        ..ChatRequest::default()
    })
}

/// The chat `response_format` for a Messages request's structured output:
/// `output_config.format` (`{type: json_schema, schema}`), or the beta's top-level
/// `output_format` (taken out of `extra`: a chat upstream does not know it).
fn structured_output(
    extra: &mut Map<String, Value>,
) -> Result<Option<ResponseFormat>, TranslateError> {
    let beta = extra.remove("output_format");
    let (field, format) = match extra.get("output_config").and_then(|c| c.get("format")) {
        Some(f) if !f.is_null() => ("output_config.format", f.clone()),
        _ => match beta {
            Some(f) if !f.is_null() => ("output_format", f),
            _ => return Ok(None),
        },
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {}
        other => {
            return Err(TranslateError::unsupported(
                field,
                Format::ChatCompletions,
                format!("output formats of type {other:?}"),
            ))
        }
    }
    let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
        return Err(TranslateError::InvalidRequest {
            format: Format::Messages,
            message: format!("{field}.schema: a JSON schema object is required"),
        });
    };
    Ok(Some(ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "output".into(),
            schema: Some(schema.clone()),
            description: None,
            // Not `strict`: OpenAI's strict mode refuses schemas with optional properties,
            // which Anthropic takes; vLLM and llama.cpp constrain to the schema either way.
            strict: None,
        },
    }))
}

/// Anthropic's web search server tool for a chat request's `web_search_options`: its
/// `user_location` carried (`approximate`, flattened: city, region, country, timezone), the
/// `search_context_size` as the searches allowed (`low` 1, `medium` or none 3, `high` 5).
fn web_search_tool(opts: &Value) -> Tool {
    let mut extra = Map::new();
    if let Some(Value::Object(at)) = opts.pointer("/user_location/approximate") {
        let mut loc = Map::new();
        loc.insert("type".into(), json!("approximate"));
        for k in ["city", "region", "country", "timezone"] {
            if let Some(v) = at.get(k).filter(|v| v.is_string()) {
                loc.insert(k.into(), v.clone());
            }
        }
        extra.insert("user_location".into(), Value::Object(loc));
    }
    let uses = match opts.get("search_context_size").and_then(Value::as_str) {
        Some("low") => 1,
        Some("high") => 5,
        _ => 3,
    };
    extra.insert("max_uses".into(), json!(uses));
    Tool {
        name: "web_search".into(),
        description: None,
        input_schema: None,
        kind: Some("web_search_20250305".into()),
        extra,
    }
}

/// A Messages `document` block as a chat part: a text document (`text` or `content`
/// source) as a text part headed by its title and context; an inline PDF (`base64`) as a
/// `file` part (OpenAI's chat API reads PDFs; a server that does not refuses it itself);
/// documents by URL or Anthropic file id are refused (chat takes inline files only).
fn document_part(
    source: &Value,
    extra: &Map<String, Value>,
    field: &str,
) -> Result<ChatPart, TranslateError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let title = extra.get("title").and_then(Value::as_str);
    let context = extra.get("context").and_then(Value::as_str);
    let head = || {
        let mut text = String::new();
        for line in [title, context].into_iter().flatten() {
            text.push_str(line);
            text.push('\n');
        }
        text
    };
    match source.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ChatPart::Text {
            text: head() + &s(source, "data").unwrap_or_default(),
        }),
        Some("content") => {
            let mut text = head();
            let blocks = source.get("content").and_then(Value::as_array);
            for (k, b) in blocks.into_iter().flatten().enumerate() {
                match s(b, "text") {
                    Some(t) => {
                        if k > 0 {
                            text.push('\n');
                        }
                        text.push_str(&t);
                    }
                    None => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.source.content[{k}]"),
                            Format::ChatCompletions,
                            "only text in a document's content",
                        ))
                    }
                }
            }
            Ok(ChatPart::Text { text })
        }
        Some("base64") => {
            let media = s(source, "media_type").unwrap_or_else(|| "application/pdf".into());
            let data = s(source, "data").unwrap_or_default();
            Ok(ChatPart::File {
                file: FileRef {
                    file_data: Some(format!("data:{media};base64,{data}")),
                    file_id: None,
                    filename: Some(title.unwrap_or("document.pdf").to_owned()),
                },
            })
        }
        _ => Err(TranslateError::unsupported(
            field,
            Format::ChatCompletions,
            "documents by URL or Anthropic file id (chat completions takes inline files only)",
        )),
    }
}

/// The error for an element read as `Other`: `key` (`type`, `role`) names one of `typed`,
/// which this crate reads, so a field of it is missing or mistyped (400 in the client's
/// API: "a `kind` `one` with ..."); else the element is newer than this crate or of a kind
/// `target` lacks, refused naming it ("`kinds` `kind`").
fn unknown_kind(
    map: &Map<String, Value>,
    (key, one, kinds): (&str, &str, &str),
    field: String,
    client: Format,
    target: Format,
    typed: &[&str],
) -> TranslateError {
    match map.get(key) {
        Some(Value::String(kind)) if typed.contains(&kind.as_str()) => {
            TranslateError::InvalidRequest {
                format: client,
                message: format!("{field}: a {kind} {one} with a missing or mistyped field"),
            }
        }
        Some(Value::String(kind)) => {
            TranslateError::unsupported(field, target, format!("{kinds} {kind:?}"))
        }
        _ => TranslateError::InvalidRequest {
            format: client,
            message: format!("{field}: no string {key}"),
        },
    }
}

/// Block types this crate types: one of them read as [`ContentBlock::Other`] lacks or
/// mistypes a field.
const TYPED_BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

/// What a Messages block of a type the chat API lacks becomes there: a `search_result`'s
/// text (title, source, content); nothing for what Anthropic's own servers ran (server and
/// MCP tool calls and their results in the history, `container_upload`), noted in
/// `dropped`; a refusal naming the block and its type otherwise.
fn other_block(
    map: Map<String, Value>,
    field: &str,
    dropped: &mut Vec<String>,
) -> Result<Option<String>, TranslateError> {
    let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
    if kind == "search_result" {
        let s = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
        let mut text = [s("title"), s("source")]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        for b in map
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                text.push('\n');
                text.push_str(t);
            }
        }
        return Ok(Some(text));
    }
    if kind == "server_tool_use"
        || kind == "mcp_tool_use"
        || kind == "container_upload"
        || kind.ends_with("_tool_result")
    {
        dropped.push(format!("{field} ({kind})"));
        return Ok(None);
    }
    Err(unknown_kind(
        &map,
        ("type", "block", "content blocks of type"),
        field.to_owned(),
        Format::Messages,
        Format::ChatCompletions,
        TYPED_BLOCKS,
    ))
}

fn image_part(source: ImageSource, field: &str) -> Result<ChatPart, TranslateError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url,
        ImageSource::File { .. } => {
            return Err(TranslateError::unsupported(
                field,
                Format::ChatCompletions,
                "Anthropic file ids mean nothing to other upstreams",
            ))
        }
    };
    Ok(ChatPart::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    })
}

// === Responses -> chat completions / Messages ===

/// Translate a Responses request to a chat completions request.
pub fn responses_to_chat(req: ResponsesRequest) -> Result<ChatRequest, TranslateError> {
    responses_to_chat_for(req, Format::ChatCompletions)
}

/// Translate a Responses request to a Messages request (through chat completions, keeping
/// what only Anthropic can take: signed reasoning, files).
pub fn responses_to_messages(req: ResponsesRequest) -> Result<MessagesRequest, TranslateError> {
    chat_to_messages(responses_to_chat_for(req, Format::Messages)?)
}

fn responses_to_chat_for(req: ResponsesRequest, t: Format) -> Result<ChatRequest, TranslateError> {
    let to_anthropic = t == Format::Messages;
    let ResponsesRequest {
        model,
        input,
        instructions,
        max_output_tokens,
        temperature,
        top_p,
        tools,
        tool_choice,
        parallel_tool_calls,
        text,
        reasoning,
        stream,
        store: _,
        previous_response_id,
        user,
        mut extra,
    } = req;
    if previous_response_id.is_some() {
        return Err(TranslateError::unsupported(
            "previous_response_id",
            t,
            "the gateway keeps no responses here ([translation] store_max_bytes = 0); send \
             the whole conversation",
        ));
    }
    refuse_keys(
        &extra,
        &[
            ("conversation", "the gateway stores no conversations"),
            ("background", "background responses need OpenAI's storage"),
            ("prompt", "stored prompt templates live at OpenAI"),
            ("top_logprobs", "log probabilities"),
        ],
        t,
    )?;
    for k in [
        // A cap on built-in (hosted) tool calls: the target runs none.
        "max_tool_calls",
        "include",
        "truncation",
        "metadata",
        // Codex's session and turn ids, on every request: the Responses API's own metadata.
        "client_metadata",
        "service_tier",
        "prompt_cache_key",
        "stream_options",
    ] {
        extra.remove(k);
    }
    if let Some(Value::String(s)) = extra.remove("safety_identifier") {
        if user.is_none() {
            extra.insert("user".into(), Value::String(s));
        }
    }
    let user = user.or_else(|| match extra.remove("user") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    });

    let mut msgs: Vec<ChatMessage> = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        msgs.push(ChatMessage::System {
            content: ChatContent::Text(i),
            name: None,
        });
    }
    let items = match input {
        None => Vec::new(),
        Some(ResponsesInput::Text(s)) => {
            msgs.push(ChatMessage::User {
                content: ChatContent::Text(s),
                name: None,
            });
            Vec::new()
        }
        Some(ResponsesInput::Items(items)) => items,
    };
    let mut pending_thinking: Vec<ThinkingBlock> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("input[{i}]");
        match item {
            InputItem::Message { role, content, .. } => match role.as_str() {
                "system" | "developer" => {
                    let text = input_text(content, &field, t)?;
                    msgs.push(ChatMessage::System {
                        content: ChatContent::Text(text),
                        name: None,
                    });
                }
                "user" => msgs.push(ChatMessage::User {
                    content: input_parts(content, &field, t)?,
                    name: None,
                }),
                "assistant" => {
                    let text = input_text(content, &field, t)?;
                    let a = assistant_slot(&mut msgs, &mut pending_thinking);
                    match &mut a.content {
                        Some(ChatContent::Text(s)) => s.push_str(&text),
                        _ => a.content = Some(ChatContent::Text(text)),
                    }
                }
                other => {
                    return Err(TranslateError::unsupported(
                        format!("{field}.role"),
                        t,
                        format!("role {other:?}"),
                    ))
                }
            },
            InputItem::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let a = assistant_slot(&mut msgs, &mut pending_thinking);
                push_call(a, call_id, name, arguments);
            }
            InputItem::CustomToolCall {
                call_id,
                name,
                input,
                ..
            } => {
                let a = assistant_slot(&mut msgs, &mut pending_thinking);
                push_call(a, call_id, name, custom::arguments_for(&input));
            }
            InputItem::FunctionCallOutput {
                call_id, output, ..
            }
            | InputItem::CustomToolCallOutput {
                call_id, output, ..
            } => {
                let content = match output {
                    InputContent::Text(s) => ChatContent::Text(s),
                    parts if to_anthropic => input_parts(parts, &format!("{field}.output"), t)?,
                    parts => ChatContent::Text(input_text(parts, &format!("{field}.output"), t)?),
                };
                msgs.push(ChatMessage::Tool {
                    content,
                    tool_call_id: call_id,
                });
            }
            InputItem::Reasoning {
                summary,
                encrypted_content,
                ..
            } => {
                // Only reasoning that came from Anthropic through this gateway can go back
                // (its signature rides in encrypted_content); other reasoning is dropped.
                if !to_anthropic {
                    continue;
                }
                let text: String = summary
                    .into_iter()
                    .map(|s| s.text)
                    .collect::<Vec<_>>()
                    .join("\n\n");
                match encrypted_content.as_deref() {
                    Some(e) if e.starts_with(SIGNATURE_PREFIX) => {
                        pending_thinking.push(ThinkingBlock::Thinking {
                            thinking: text,
                            signature: Some(e[SIGNATURE_PREFIX.len()..].to_owned()),
                        })
                    }
                    Some(e) if e.starts_with(REDACTED_PREFIX) => {
                        pending_thinking.push(ThinkingBlock::RedactedThinking {
                            data: e[REDACTED_PREFIX.len()..].to_owned(),
                        })
                    }
                    _ => {}
                }
            }
            // A compaction made here goes up as the summary it holds; OpenAI's own (a
            // session that moved from an OpenAI model) is encrypted for its models: left out.
            InputItem::Other(map)
                if map.get("type").and_then(Value::as_str) == Some("compaction") =>
            {
                let summary = map.get("encrypted_content").and_then(Value::as_str);
                if let Some(text) = crate::compact::carried(summary) {
                    msgs.push(ChatMessage::User {
                        content: ChatContent::Text(text),
                        name: None,
                    });
                }
            }
            InputItem::Other(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("(none)");
                return Err(TranslateError::unsupported(
                    field,
                    t,
                    format!("input items of type {kind:?}"),
                ));
            }
        }
    }
    let mut out_tools = Vec::new();
    let mut dropped = Vec::new();
    for (k, tool) in tools.unwrap_or_default().into_iter().enumerate() {
        match (tool.kind.as_str(), tool.name) {
            ("function", Some(name)) => out_tools.push(ChatTool {
                kind: "function".into(),
                function: Some(FunctionDef {
                    name,
                    description: tool.description,
                    parameters: tool.parameters,
                    strict: tool.strict,
                }),
                extra: Map::new(),
            }),
            ("custom", Some(name)) => out_tools.push(custom::function_for(
                name,
                tool.description,
                tool.extra.get("format"),
            )),
            (kind, _) => left_out(&mut dropped, k, kind),
        }
    }
    report_left_out(&dropped, t);
    let tool_choice = match tool_choice {
        None => None,
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Some(Value::String(s))
        }
        Some(Value::Object(o))
            if matches!(
                o.get("type").and_then(Value::as_str),
                Some("function" | "custom")
            ) =>
        {
            let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
            Some(json!({"type":"function","function":{"name":name}}))
        }
        // `allowed_tools`: the model may call only these, in `mode` (`auto` / `required`):
        // the others stay out of the request, which the other APIs express by omission.
        Some(Value::Object(o))
            if o.get("type").and_then(Value::as_str) == Some("allowed_tools")
                && matches!(
                    o.get("mode").and_then(Value::as_str),
                    Some("auto" | "required")
                ) =>
        {
            let allowed: Vec<&str> = o
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect();
            out_tools.retain(|t| {
                t.function
                    .as_ref()
                    .is_some_and(|f| allowed.contains(&f.name.as_str()))
            });
            o.get("mode").cloned()
        }
        Some(v) => {
            return Err(TranslateError::unsupported(
                "tool_choice",
                t,
                format!("{v}"),
            ))
        }
    };
    let response_format = match text.and_then(|t| t.format) {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(TextFormat::JsonSchema {
            name,
            schema,
            description,
            strict,
        }) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name,
                schema,
                description,
                strict,
            },
        }),
    };
    let streaming = stream == Some(true);
    Ok(ChatRequest {
        model,
        messages: msgs,
        max_tokens: max_output_tokens,
        temperature,
        top_p,
        stream: streaming.then_some(true),
        stream_options: (streaming && !to_anthropic).then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        tools: (!out_tools.is_empty()).then_some(out_tools),
        tool_choice,
        parallel_tool_calls,
        response_format,
        reasoning_effort: reasoning.and_then(|r| r.effort),
        user,
        extra,
        ..ChatRequest::default()
    })
}

/// A function call on an assistant message (custom tool calls travel as functions too).
fn push_call(a: &mut AssistantMessage, id: String, name: String, arguments: String) {
    a.tool_calls.get_or_insert_with(Vec::new).push(ToolCall {
        id,
        kind: "function".into(),
        custom: None,
        function: FunctionCall { name, arguments },
    });
}

/// The assistant message the next output item belongs to: the last one, unless reasoning
/// came in between (reasoning opens a new turn's thinking).
fn assistant_slot<'a>(
    msgs: &'a mut Vec<ChatMessage>,
    pending: &mut Vec<ThinkingBlock>,
) -> &'a mut AssistantMessage {
    let reuse = pending.is_empty() && matches!(msgs.last(), Some(ChatMessage::Assistant(_)));
    if !reuse {
        msgs.push(ChatMessage::Assistant(AssistantMessage {
            thinking_blocks: (!pending.is_empty()).then(|| std::mem::take(pending)),
            ..AssistantMessage::default()
        }));
    }
    match msgs.last_mut() {
        Some(ChatMessage::Assistant(a)) => a,
        _ => unreachable!("an assistant message was just ensured"),
    }
}

fn input_text(content: InputContent, field: &str, t: Format) -> Result<String, TranslateError> {
    match content {
        InputContent::Text(s) => Ok(s),
        InputContent::Parts(parts) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                match p {
                    InputPart::InputText { text }
                    | InputPart::OutputText { text, .. }
                    | InputPart::Refusal { refusal: text } => out.push_str(&text),
                    _ => {
                        return Err(TranslateError::unsupported(
                            format!("{field}.content[{j}]"),
                            t,
                            "only text is possible here",
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn input_parts(
    content: InputContent,
    field: &str,
    t: Format,
) -> Result<ChatContent, TranslateError> {
    let parts = match content {
        InputContent::Text(s) => return Ok(ChatContent::Text(s)),
        InputContent::Parts(p) => p,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        let f = format!("{field}.content[{j}]");
        out.push(match p {
            InputPart::Other(map) => {
                return Err(unknown_kind(
                    &map,
                    ("type", "type", "content parts of type"),
                    f,
                    Format::Responses,
                    t,
                    &[
                        "input_text",
                        "input_image",
                        "input_file",
                        "output_text",
                        "refusal",
                        "input_audio",
                    ],
                ))
            }
            InputPart::InputText { text }
            | InputPart::OutputText { text, .. }
            | InputPart::Refusal { refusal: text } => ChatPart::Text { text },
            InputPart::InputImage {
                image_url: Some(url),
                detail,
                ..
            } => ChatPart::ImageUrl {
                image_url: ImageUrl { url, detail },
            },
            InputPart::InputImage { .. } => {
                return Err(TranslateError::unsupported(
                    f,
                    t,
                    "images by OpenAI file id",
                ))
            }
            // Chat's `file` part takes inline data (OpenAI reads PDFs from it; to Anthropic
            // it becomes a document) and, to a chat upstream only, an OpenAI file id.
            InputPart::InputFile {
                file_data: Some(data),
                filename,
                ..
            } => ChatPart::File {
                file: FileRef {
                    file_data: Some(data),
                    file_id: None,
                    filename,
                },
            },
            InputPart::InputFile {
                file_id: Some(id),
                filename,
                ..
            } if t == Format::ChatCompletions => ChatPart::File {
                file: FileRef {
                    file_data: None,
                    file_id: Some(id),
                    filename,
                },
            },
            InputPart::InputFile { .. } => {
                return Err(TranslateError::unsupported(
                    f,
                    t,
                    "files by URL, or by OpenAI file id to Anthropic (send file_data)",
                ))
            }
            InputPart::InputAudio { .. } => {
                return Err(TranslateError::unsupported(f, t, "audio input"))
            }
        });
    }
    Ok(ChatContent::Parts(out))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
