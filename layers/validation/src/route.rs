//! Which API a request path belongs to.

use std::fmt;

/// An LLM API endpoint whose request body this layer knows how to check. Each has its own
/// schema: see the crate docs for what each [`Level`](crate::Level) checks on each route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/completions` (OpenAI, legacy).
    Completions,
    /// `POST /v1/embeddings` (OpenAI).
    Embeddings,
    /// `POST /v1/responses` (OpenAI Responses API).
    Responses,
    /// `POST /v1/messages` (Anthropic; `?beta=true` and beta fields included).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic): like [`Route::Messages`], without
    /// `max_tokens`.
    CountTokens,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 6] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Responses,
        Route::Messages,
        Route::CountTokens,
    ];

    /// The route for an exact request path (no query string), if it is one this layer checks.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/v1/chat/completions" => Route::ChatCompletions,
            "/v1/completions" => Route::Completions,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/responses" => Route::Responses,
            "/v1/messages" => Route::Messages,
            "/v1/messages/count_tokens" => Route::CountTokens,
            _ => return None,
        })
    }

    /// The request path of this route.
    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Responses => "/v1/responses",
            Route::Messages => "/v1/messages",
            Route::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// A short snake_case name (`chat_completions`, `count_tokens`...), as used for the
    /// request corpora's folders.
    pub fn name(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Messages => "messages",
            Route::CountTokens => "count_tokens",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_others_are_unknown() {
        for r in Route::ALL {
            assert_eq!(Route::from_path(r.path()), Some(r));
        }
        for p in [
            "/v1/models",
            "/health",
            "/v1/chat/completions/",
            "/v1/messages/count_tokens/",
            "/v1/responses/resp_123",
            "/v1/responses/resp_123/input_items",
            "/v1/messages/batches",
            "",
        ] {
            assert_eq!(Route::from_path(p), None, "{p}");
        }
        assert_eq!(
            Route::from_path("/v1/messages/count_tokens"),
            Some(Route::CountTokens)
        );
        assert_eq!(Route::from_path("/v1/responses"), Some(Route::Responses));
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<_> = Route::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Route::ALL.len());
    }
}
