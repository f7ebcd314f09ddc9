//! [`ToolCallLoopLayer`]: builds [`ToolCallLoopDetection`] services that share one session store.

use std::sync::Arc;

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{
    session::{Sessions, DEFAULT_MAX_SESSIONS},
    Config, ToolCallLoopDetection,
};

/// The longest SSE event held back while it is received; larger events pass unread.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Counts identical consecutive tool calls per session (see the [crate docs](crate)).
///
/// The sessions live in an `Arc` inside the layer: cloning the layer, or the services it
/// makes, shares them (and does not start a new count).
#[derive(Debug, Clone)]
pub struct ToolCallLoopLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sessions: Sessions,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_json_bytes: usize,
    pub(crate) max_event_bytes: usize,
}

impl ToolCallLoopLayer {
    /// A layer for `config` with room for [`DEFAULT_MAX_SESSIONS`] sessions. Out-of-range
    /// values are clamped (`max_repeats` and `ttl` to at least 1); use
    /// [`from_config`](Self::from_config) to have them reported instead.
    pub fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                sessions: Sessions::new(&config, DEFAULT_MAX_SESSIONS),
                config,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_json_bytes: DEFAULT_MAX_BODY_BYTES,
                max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            }),
        }
    }

    /// A layer for `config`, or every problem with it.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if problems.is_empty() {
            Ok(Self::new(config.clone()))
        } else {
            Err(problems)
        }
    }

    /// Keep at most `n` sessions (default [`DEFAULT_MAX_SESSIONS`]); past it the least
    /// recently used are forgotten. Starts a new, empty store.
    pub fn with_max_sessions(mut self, n: u64) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        shared.sessions = Sessions::new(&shared.config, n);
        self
    }

    /// Requests up to this size (default [`DEFAULT_MAX_BODY_BYTES`]) can be given the
    /// `chance_then_block` note; a larger one fails with
    /// `portcullis_core::body::CollectError::TooLarge`. Non-streamed answers up to this size
    /// are read and checked; larger ones pass unchecked.
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        shared.max_body_bytes = limit;
        shared.max_json_bytes = limit;
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// How many sessions are kept now.
    pub fn session_count(&self) -> u64 {
        self.shared.sessions.len()
    }
}

impl<S> Layer<S> for ToolCallLoopLayer {
    type Service = ToolCallLoopDetection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ToolCallLoopDetection::from_shared(inner, self.shared.clone())
    }
}
