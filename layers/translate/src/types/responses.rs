//! OpenAI Responses API: `POST /v1/responses` requests and responses. Its stream events are
//! only ever written by this crate (no upstream is translated *from* Responses), so they are
//! built in [`crate::stream`] rather than typed here.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A Responses request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// Model name (absent when a stored `prompt` names it, which translation refuses).
    #[serde(default)]
    pub model: String,
    /// A string (one user message) or items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ResponsesInput>,
    /// System instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Output cap, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ResponsesTool>>,
    /// `"auto"`, `"none"`, `"required"`, `{"type":"function","name":..}`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Several tool calls per turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `{format, verbosity}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    /// `{effort, summary}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    /// Stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Keep the response server-side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Continue a stored response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// End-user id (deprecated for `safety_identifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Everything else, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    /// One user message.
    Text(String),
    /// Items.
    Items(Vec<InputItem>),
}

/// An input item. A message may come without `"type"`; it is read as one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputItem {
    /// A message.
    Message {
        /// `user`, `assistant`, `system`, `developer`.
        role: String,
        /// A string or parts.
        content: InputContent,
        /// Everything else (`id`, `status`).
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An earlier tool call by the model.
    FunctionCall {
        /// Links the call and its output.
        call_id: String,
        /// Function name.
        name: String,
        /// Arguments, JSON text.
        #[serde(default)]
        arguments: String,
        /// Everything else (`id`, `status`).
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A tool call's result.
    FunctionCallOutput {
        /// The call.
        call_id: String,
        /// A string or parts.
        output: InputContent,
        /// Everything else.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An earlier call of a custom (freeform) tool by the model.
    CustomToolCall {
        /// Links the call and its output.
        call_id: String,
        /// Tool name.
        name: String,
        /// The free-text input.
        #[serde(default)]
        input: String,
        /// Everything else (`id`).
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A custom tool call's result.
    CustomToolCallOutput {
        /// The call.
        call_id: String,
        /// A string or parts.
        output: InputContent,
        /// Everything else.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// Earlier reasoning.
    Reasoning {
        /// Summary parts `{type:"summary_text", text}`.
        #[serde(default)]
        summary: Vec<SummaryText>,
        /// Opaque reasoning state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
        /// Everything else (`id`, `content`).
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// Any other item type (`item_reference`, `web_search_call`, `computer_call`, ...).
    #[serde(untagged)]
    Other(Map<String, Value>),
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = Map::<String, Value>::deserialize(d)?;
        let kind = match map.get("type") {
            Some(Value::String(s)) => s.clone(),
            None if map.contains_key("role") => "message".to_owned(),
            _ => return Ok(InputItem::Other(map)),
        };
        let take_str = |map: &mut Map<String, Value>, k: &str| -> Result<String, D::Error> {
            match map.remove(k) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(D::Error::custom(format!("`{k}` must be a string"))),
                None => Err(D::Error::missing_field_owned(k)),
            }
        };
        let content = |v: Option<Value>, k: &str| -> Result<InputContent, D::Error> {
            let v = v.ok_or_else(|| D::Error::missing_field_owned(k))?;
            InputContent::deserialize(v).map_err(D::Error::custom)
        };
        Ok(match kind.as_str() {
            "message" => {
                map.remove("type");
                let role = take_str(&mut map, "role")?;
                let c = content(map.remove("content"), "content")?;
                InputItem::Message {
                    role,
                    content: c,
                    extra: map,
                }
            }
            "function_call" => {
                map.remove("type");
                let call_id = take_str(&mut map, "call_id")?;
                let name = take_str(&mut map, "name")?;
                let arguments = take_str(&mut map, "arguments").unwrap_or_default();
                InputItem::FunctionCall {
                    call_id,
                    name,
                    arguments,
                    extra: map,
                }
            }
            "function_call_output" => {
                map.remove("type");
                let call_id = take_str(&mut map, "call_id")?;
                let output = content(map.remove("output"), "output")?;
                InputItem::FunctionCallOutput {
                    call_id,
                    output,
                    extra: map,
                }
            }
            "custom_tool_call" => {
                map.remove("type");
                let call_id = take_str(&mut map, "call_id")?;
                let name = take_str(&mut map, "name")?;
                let input = take_str(&mut map, "input").unwrap_or_default();
                InputItem::CustomToolCall {
                    call_id,
                    name,
                    input,
                    extra: map,
                }
            }
            "custom_tool_call_output" => {
                map.remove("type");
                let call_id = take_str(&mut map, "call_id")?;
                let output = content(map.remove("output"), "output")?;
                InputItem::CustomToolCallOutput {
                    call_id,
                    output,
                    extra: map,
                }
            }
            "reasoning" => {
                map.remove("type");
                let summary = match map.remove("summary") {
                    Some(v) => Vec::<SummaryText>::deserialize(v).map_err(D::Error::custom)?,
                    None => Vec::new(),
                };
                let encrypted_content = match map.remove("encrypted_content") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                };
                InputItem::Reasoning {
                    summary,
                    encrypted_content,
                    extra: map,
                }
            }
            _ => InputItem::Other(map),
        })
    }
}

trait MissingOwned {
    fn missing_field_owned(k: &str) -> Self;
}

impl<E: serde::de::Error> MissingOwned for E {
    fn missing_field_owned(k: &str) -> Self {
        E::custom(format!("missing field `{k}`"))
    }
}

/// A message's content or a tool output: a string or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputContent {
    /// Text.
    Text(String),
    /// Parts.
    Parts(Vec<InputPart>),
}

/// A content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputPart {
    /// Text from the user.
    InputText {
        /// The text.
        text: String,
    },
    /// An image.
    InputImage {
        /// URL or data URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_url: Option<String>,
        /// An uploaded file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        /// `auto`, `low`, `high`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A file.
    InputFile {
        /// Data URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_data: Option<String>,
        /// Uploaded file id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        /// URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
        /// Name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// Text the model wrote (assistant history).
    OutputText {
        /// The text.
        text: String,
        /// Citations.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        annotations: Vec<Value>,
    },
    /// A refusal (assistant history).
    Refusal {
        /// The text.
        refusal: String,
    },
    /// Audio input.
    InputAudio {
        /// `{data, format}`.
        input_audio: Value,
    },
    /// A part of a type newer than this crate (or a known type with a malformed field).
    #[serde(untagged)]
    Other(Map<String, Value>),
}

/// `summary` entry of a reasoning item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryText {
    /// `summary_text`.
    #[serde(rename = "type", default = "summary_text")]
    pub kind: String,
    /// The text.
    pub text: String,
}

fn summary_text() -> String {
    "summary_text".into()
}

/// A tool definition. `function` and `custom` tools can be translated (see
/// [`crate::custom`]); the others (`web_search`, `file_search`, `computer_use_preview`,
/// `mcp`, ...) run inside OpenAI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesTool {
    /// `function`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Other tool kinds' fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low`, `medium`, `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

/// `text.format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema (flat, unlike chat's `json_schema` wrapper).
    JsonSchema {
        /// Name.
        name: String,
        /// The schema.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Value>,
        /// What it is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Strict adherence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// `reasoning`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningConfig {
    /// `minimal`, `low`, `medium`, `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// `auto`, `concise`, `detailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A response object (non-streamed answer, and inside `response.*` stream events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// `resp_..`.
    pub id: String,
    /// `response`.
    #[serde(default = "response_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: u64,
    /// `completed`, `incomplete`, `in_progress`, `failed`.
    pub status: String,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Output items.
    #[serde(default)]
    pub output: Vec<OutputItem>,
    /// Why it is incomplete: `{reason: "max_output_tokens" | "content_filter"}`.
    #[serde(default)]
    pub incomplete_details: Option<Value>,
    /// Failure.
    #[serde(default)]
    pub error: Option<Value>,
    /// Tokens.
    #[serde(default)]
    pub usage: Option<ResponsesUsage>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn response_object() -> String {
    "response".into()
}

/// An output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// A message.
    Message {
        /// `msg_..`.
        id: String,
        /// `assistant`.
        role: String,
        /// `completed`, `incomplete`.
        status: String,
        /// `output_text` / `refusal` parts.
        content: Vec<OutputContent>,
    },
    /// A tool call.
    FunctionCall {
        /// `fc_..`.
        id: String,
        /// Links the call and its output.
        call_id: String,
        /// Function name.
        name: String,
        /// Arguments, JSON text.
        arguments: String,
        /// `completed`.
        status: String,
    },
    /// A call of a custom (freeform) tool.
    CustomToolCall {
        /// `ctc_..`.
        id: String,
        /// Links the call and its output.
        call_id: String,
        /// Tool name.
        name: String,
        /// The free-text input.
        input: String,
        /// `completed`.
        status: String,
    },
    /// Reasoning.
    Reasoning {
        /// `rs_..`.
        id: String,
        /// Summary parts.
        summary: Vec<SummaryText>,
        /// Opaque state to send back (here: the Anthropic signature, prefixed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
    },
}

/// A message item's content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    /// Text.
    OutputText {
        /// The text.
        text: String,
        /// Citations.
        #[serde(default)]
        annotations: Vec<Value>,
    },
    /// A refusal.
    Refusal {
        /// The text.
        refusal: String,
    },
}

/// Responses usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesUsage {
    /// Input tokens, cached included.
    pub input_tokens: u64,
    /// `{cached_tokens}`.
    pub input_tokens_details: InputTokensDetails,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// `{reasoning_tokens}`.
    pub output_tokens_details: OutputTokensDetails,
    /// Sum.
    pub total_tokens: u64,
}

/// `input_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Served from cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `output_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Spent reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}
