//! Which API an upstream speaks ([`Api`], from config) and which shape a request is in
//! ([`Format`], from its path).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The API shape an upstream speaks (`upstreams[].api`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Requests go through in the shape the client sent: no translation.
    #[default]
    Any,
    /// OpenAI chat completions only (Ollama, vLLM, llama.cpp, LM Studio, ...):
    /// `/v1/messages` and `/v1/responses` are translated to `/v1/chat/completions`.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages only: `/v1/chat/completions` and `/v1/responses` are translated
    /// to `/v1/messages`.
    Anthropic,
    /// OpenAI chat completions and the Responses API (OpenAI itself, Azure OpenAI, vLLM,
    /// recent Ollama): both go through as sent, with the upstream's own stored responses;
    /// `/v1/messages` is translated to `/v1/chat/completions`.
    #[serde(rename = "openai-responses")]
    OpenAiResponses,
}

impl Api {
    /// Whether requests in `format` reach this upstream as they are (no translation).
    pub fn speaks(self, format: Format) -> bool {
        format.target(self).is_none()
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::Any => "any",
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::OpenAiResponses => "openai-responses",
        })
    }
}

/// The shape of one request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// OpenAI `POST /v1/responses`.
    Responses,
}

impl Format {
    /// The shape of a request to `path` (query excluded), if it is one of the three
    /// translatable endpoints.
    pub fn from_path(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" => Some(Format::ChatCompletions),
            "/v1/messages" => Some(Format::Messages),
            "/v1/responses" => Some(Format::Responses),
            _ => None,
        }
    }

    /// The endpoint path.
    pub fn path(self) -> &'static str {
        match self {
            Format::ChatCompletions => "/v1/chat/completions",
            Format::Messages => "/v1/messages",
            Format::Responses => "/v1/responses",
        }
    }

    /// The format an upstream speaking `api` must be sent, for a client request in `self`;
    /// `None` for no translation (`api = "any"` or the same shape).
    pub fn target(self, api: Api) -> Option<Format> {
        let t = match api {
            Api::Any => return None,
            Api::OpenAi => Format::ChatCompletions,
            Api::Anthropic => Format::Messages,
            Api::OpenAiResponses if self == Format::Responses => return None,
            Api::OpenAiResponses => Format::ChatCompletions,
        };
        (t != self).then_some(t)
    }

    /// Whether errors in this format use Anthropic's shape.
    pub(crate) fn is_anthropic(self) -> bool {
        self == Format::Messages
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::ChatCompletions => "openai chat completions",
            Format::Messages => "anthropic messages",
            Format::Responses => "openai responses",
        })
    }
}
