//! [`Api`]: the three LLM API shapes whose requests and answers the layers read (in-chat
//! commands, tool-call loops, loop detection, the gateway's own stream end), told by path.

use bytes::Bytes;

/// Which API a request speaks, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions` (its error events serve completions too).
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

impl Api {
    /// The API of a request path (a prefix before `/v1/...` is allowed, as with prefixed
    /// upstream routers such as Supermemory's); `None` for every other path.
    ///
    /// ```
    /// use portcullis_core::api::Api;
    ///
    /// assert_eq!(Api::from_path("/v1/responses"), Some(Api::Responses));
    /// assert_eq!(Api::from_path("/v3/https://api.anthropic.com/v1/messages"), Some(Api::Messages));
    /// assert_eq!(Api::from_path("/v1/messages/count_tokens"), None);
    /// assert_eq!(Api::from_path("/v1/responses/resp_1"), None);
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

    /// `chat_completions`, `responses` or `messages`: its name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
        }
    }

    /// The one event that ends a stream with an error in this API's shape
    /// ([`crate::sse::error_event`]).
    pub fn error_event(self, code: &str, kind: &str, message: &str) -> Bytes {
        crate::sse::error_event(self, code, kind, message)
    }
}
