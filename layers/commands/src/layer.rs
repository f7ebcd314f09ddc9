//! [`CommandsLayer`]: builds [`Commands`] services that share one session store.

use std::sync::Arc;

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{session::Sessions, Commands, Config};

/// Answers in-chat commands and applies each session's settings (see the [crate docs](crate)).
///
/// The sessions live in an `Arc` inside the layer: cloning the layer, or the services it
/// makes, shares them (a clone does not start with empty sessions).
#[derive(Debug, Clone)]
pub struct CommandsLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sessions: Sessions,
    pub(crate) max_body_bytes: usize,
    /// Searchers for the prefix, built once (building one costs more than a search).
    pub(crate) look: crate::service::PrefixLook,
}

impl CommandsLayer {
    /// A layer for `config`. Out-of-range values are clamped (`max_sessions` and
    /// `session_ttl` to at least 1); use [`from_config`](Self::from_config) to have them
    /// reported instead.
    pub fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                sessions: Sessions::new(config.max_sessions, config.session_ttl),
                look: crate::service::PrefixLook::new(&config.prefix),
                config,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
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

    /// Request bodies on the three chat paths are read up to this size (default
    /// [`DEFAULT_MAX_BODY_BYTES`], 10 MiB); a larger one fails with
    /// `portcullis_core::body::CollectError::TooLarge` (the gateway's edge answers 413).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_body_bytes = limit;
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// How many sessions hold settings now.
    pub fn session_count(&self) -> u64 {
        self.shared.sessions.len()
    }
}

impl<S> Layer<S> for CommandsLayer {
    type Service = Commands<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Commands::from_shared(inner, self.shared.clone())
    }
}
