//! Which API a request path belongs to.

use std::fmt;

/// An LLM API endpoint whose request body this layer knows how to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/completions` (OpenAI, legacy).
    Completions,
    /// `POST /v1/embeddings` (OpenAI).
    Embeddings,
    /// `POST /v1/messages` (Anthropic).
    Messages,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 4] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Messages,
    ];

    /// The route for an exact request path (no query string), if it is one this layer checks.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/v1/chat/completions" => Route::ChatCompletions,
            "/v1/completions" => Route::Completions,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/messages" => Route::Messages,
            _ => return None,
        })
    }

    /// The request path of this route.
    pub fn path(self) -> &'static str {
        match self {
            Route::ChatCompletions => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Embeddings => "/v1/embeddings",
            Route::Messages => "/v1/messages",
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
            "/v1/messages/count_tokens",
            "",
        ] {
            assert_eq!(Route::from_path(p), None, "{p}");
        }
    }
}
