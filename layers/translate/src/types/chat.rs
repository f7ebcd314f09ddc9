//! OpenAI chat completions: `POST /v1/chat/completions` requests, responses and stream chunks.
//!
//! Fields this crate reads or writes are typed; everything else a request or response may
//! carry is kept in `extra` so it survives a round trip through these types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A chat completions request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Legacy output cap (still what most local servers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output cap, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ChatTool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","function":{"name":..}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether several tool calls may come in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `{"type":"text"|"json_object"|"json_schema", "json_schema":{..}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// `minimal`, `low`, `medium`, `high` (reasoning models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many top log probabilities per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Best-effort determinism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Frequency penalty, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Presence penalty, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Token id -> bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Output modalities (`["text","audio"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    /// Audio output parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
    /// Everything else, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message of the conversation, by role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    /// Instructions.
    System {
        /// Text or text parts.
        content: ChatContent,
        /// Participant name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Instructions (newer name for `system`).
    Developer {
        /// Text or text parts.
        content: ChatContent,
        /// Participant name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The user's turn.
    User {
        /// Text or parts (text, images, audio, files).
        content: ChatContent,
        /// Participant name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The model's earlier turn.
    Assistant(AssistantMessage),
    /// A tool's result.
    Tool {
        /// The result.
        content: ChatContent,
        /// The call it answers.
        tool_call_id: String,
    },
    /// Legacy function result (deprecated by OpenAI).
    Function {
        /// The result.
        #[serde(default)]
        content: Option<String>,
        /// The function.
        name: String,
    },
    /// A message of a role newer than this crate (`ipython`, ...), or of a known role with a
    /// malformed field.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

/// An assistant message, in a request or a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Text (a response always gives a string or null).
    #[serde(default)]
    pub content: Option<ChatContent>,
    /// Tool calls made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Reasoning text (DeepSeek, vLLM, llama.cpp; `reasoning` from Ollama is read too).
    #[serde(default, alias = "reasoning", skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Anthropic thinking blocks with their signatures (LiteLLM's extension), so a client
    /// can send them back and a thinking model keeps its reasoning across tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    /// Participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Legacy `function_call` and anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An Anthropic thinking block carried in a chat message (`thinking_blocks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    /// Readable thinking.
    Thinking {
        /// The text.
        #[serde(default)]
        thinking: String,
        /// Anthropic's signature.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Encrypted thinking.
    RedactedThinking {
        /// Opaque data.
        data: String,
    },
}

/// Message content: a string or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ChatPart>),
}

impl ChatContent {
    /// The text parts joined, or `None` if there is a non-text part.
    pub fn as_text(&self) -> Option<String> {
        match self {
            ChatContent::Text(s) => Some(s.clone()),
            ChatContent::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        ChatPart::Text { text } => out.push_str(text),
                        ChatPart::Refusal { refusal } => out.push_str(refusal),
                        _ => return None,
                    }
                }
                Some(out)
            }
        }
    }
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL (http(s) or `data:` URL).
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// Audio input.
    InputAudio {
        /// `{data, format}`.
        input_audio: Value,
    },
    /// A file (`file_data` data URL, or `file_id`).
    File {
        /// `{file_data?, file_id?, filename?}`.
        file: FileRef,
    },
    /// A refusal (assistant history).
    Refusal {
        /// The text.
        refusal: String,
    },
    /// A part of a type newer than this crate (or a known type with a malformed field).
    #[serde(untagged)]
    Other(Map<String, Value>),
}

/// `image_url` of a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https://..` or `data:image/png;base64,..`.
    pub url: String,
    /// `auto`, `low`, `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `file` of a part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// `data:application/pdf;base64,..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// An uploaded file's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// `function`, or `custom` (a custom tool's call: `custom` set, `function` empty).
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// What was called (a `function` call).
    #[serde(default, skip_serializing_if = "FunctionCall::is_empty")]
    pub function: FunctionCall,
    /// A custom (freeform) tool's call: its name and free-text input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomCall>,
}

/// A custom tool's call (`tool_calls[].custom`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomCall {
    /// Tool name.
    pub name: String,
    /// The free-text input.
    #[serde(default)]
    pub input: String,
}

fn function_type() -> String {
    "function".into()
}

/// The function of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments, a JSON text.
    #[serde(default)]
    pub arguments: String,
}

impl FunctionCall {
    /// No name and no arguments: the empty `function` of a custom tool's call.
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.arguments.is_empty()
    }
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTool {
    /// `function` (or `custom`, which no other API has).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function, for `function` tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    /// Other tool kinds' fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function tool's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Structured-outputs strictness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// `{name, schema, description?, strict?}`.
        json_schema: JsonSchemaFormat,
    },
}

/// A named JSON schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// Name.
    pub name: String,
    /// The schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Strict schema adherence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A chat completion (non-streamed response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-..`.
    pub id: String,
    /// `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ChatUsage>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".into()
}

/// One choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Index.
    #[serde(default)]
    pub index: u32,
    /// The message.
    pub message: AssistantMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`, `function_call`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Everything else (`logprobs`, vLLM's `stop_reason`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Usage of a chat completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatUsage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// `{cached_tokens}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// `{reasoning_tokens}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Served from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

/// `completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Spent reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// One streamed chunk (`chat.completion.chunk`). Unknown fields are ignored: a stream is
/// translated field by field, nothing of it is passed through whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Same for every chunk of a stream.
    #[serde(default)]
    pub id: String,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Deltas (empty in the final usage chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage (final chunk, with `stream_options.include_usage`).
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    /// A mid-stream error (`data: {"error":{..}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// A chunk's choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Index.
    #[serde(default)]
    pub index: u32,
    /// What is new.
    #[serde(default)]
    pub delta: ChunkDelta,
    /// Set on the last content chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// vLLM: the stop string that matched (a string), or a token id.
    #[serde(default)]
    pub stop_reason: Option<Value>,
}

/// A chunk's delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// `assistant` on the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// Text.
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text (vLLM, DeepSeek, llama.cpp).
    #[serde(default)]
    pub reasoning_content: Option<String>,
    /// Reasoning text (Ollama, newer vLLM).
    #[serde(default)]
    pub reasoning: Option<String>,
    /// Refusal text.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool call pieces.
    #[serde(default)]
    pub tool_calls: Option<Vec<ChunkToolCall>>,
}

/// A piece of a streamed tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkToolCall {
    /// Which call of the turn.
    #[serde(default)]
    pub index: u32,
    /// Set on the call's first piece.
    #[serde(default)]
    pub id: Option<String>,
    /// Name and argument text.
    #[serde(default)]
    pub function: Option<ChunkFunction>,
}

/// A piece of a streamed function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkFunction {
    /// Set on the first piece.
    #[serde(default)]
    pub name: Option<String>,
    /// A piece of the argument text.
    #[serde(default)]
    pub arguments: Option<String>,
}
