//! The three API shapes whose answers are watched, and how each ends a stream with an error.

use bytes::Bytes;
use portcullis_core::sse::{error_event, StreamApi};

/// Which API a request speaks, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/chat/completions`: `tool_calls`.
    ChatCompletions,
    /// `POST /v1/responses`: `function_call` output items.
    Responses,
    /// `POST /v1/messages`: `tool_use` content blocks.
    Messages,
}

impl Api {
    /// The API of a request path (a prefix before `/v1/...` is allowed); `None` for every
    /// other path, which passes through unwatched.
    ///
    /// ```
    /// use portcullis_tool_call_loop::Api;
    ///
    /// assert_eq!(Api::from_path("/v1/responses"), Some(Api::Responses));
    /// assert_eq!(Api::from_path("/v1/embeddings"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/v1/chat/completions") {
            Some(Self::ChatCompletions)
        } else if path.ends_with("/v1/responses") {
            Some(Self::Responses)
        } else if path.ends_with("/v1/messages") {
            Some(Self::Messages)
        } else {
            None
        }
    }

    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
        }
    }

    /// The one event that ends a stream with an error in this API's shape (interface.md
    /// "Streams"; [`portcullis_core::sse::error_event`]).
    pub(crate) fn error_event(self, code: &str, kind: &str, message: &str) -> Bytes {
        let api = match self {
            Self::ChatCompletions => StreamApi::ChatCompletions,
            Self::Messages => StreamApi::Messages,
            Self::Responses => StreamApi::Responses,
        };
        error_event(api, code, kind, message)
    }
}
