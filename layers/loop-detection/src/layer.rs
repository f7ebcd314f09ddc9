//! [`LoopDetectionLayer`]: builds [`LoopDetection`] services.

use std::sync::Arc;

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{Config, LoopDetection};

/// The longest SSE event held back while it is received (see the crate docs): larger events
/// are passed on unread.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Watches answers for text that repeats itself (see the [crate docs](crate)).
///
/// The settings live in an `Arc`: cloning the layer, or the services it makes, shares them.
/// Each answer gets its own detector; nothing is kept between requests.
#[derive(Debug, Clone)]
pub struct LoopDetectionLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) max_json_bytes: usize,
    pub(crate) max_event_bytes: usize,
}

impl LoopDetectionLayer {
    /// A layer for `config`. Out-of-range values are clamped; use
    /// [`from_config`](Self::from_config) to have them reported instead.
    pub fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: Arc::new(config),
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

    /// Non-streamed JSON answers up to this size (default
    /// [`DEFAULT_MAX_BODY_BYTES`], 10 MiB) are read whole and checked; larger ones pass
    /// through unchecked.
    pub fn with_max_json_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_json_bytes = limit;
        self
    }

    /// SSE events up to this size (default [`DEFAULT_MAX_EVENT_BYTES`], 1 MiB) are held back
    /// until complete and read; larger ones pass through unread.
    pub fn with_max_event_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_event_bytes = limit;
        self
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl<S> Layer<S> for LoopDetectionLayer {
    type Service = LoopDetection<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoopDetection::from_shared(inner, self.shared.clone())
    }
}
