//! [`DedupCacheLayer`]: builds [`DedupCache`] services that share one in-flight map and cache.

use std::{fmt, sync::Arc};

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{service::Shared, store::CacheStore, Config, DedupCache};

/// Layer that wraps services in [`DedupCache`].
///
/// Cloning this layer does not create a new in-flight map or cache: every clone, and every
/// service it makes, shares them. Make a second layer for a separate one.
#[derive(Clone)]
pub struct DedupCacheLayer {
    shared: Arc<Shared>,
    max_body_bytes: usize,
}

impl DedupCacheLayer {
    /// A layer with `config`; if `cache_ttl > 0`, responses are cached in memory (a
    /// [`MemoryStore`](crate::MemoryStore) of `max_entries`). The config is used as given:
    /// see [`from_config`](Self::from_config) to validate it first.
    pub fn new(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, None)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// A layer that keeps cached responses in `store` (e.g. a
    /// [`RedisStore`](crate::RedisStore) shared by several replicas). Coalescing of
    /// in-flight requests stays in this process. The store is not used if `cache_ttl` is 0.
    ///
    /// While the store fails with [`Unavailable`](portcullis_core::remote::Unavailable) in its
    /// error chain (Redis down or slower than its bound), responses are cached in and replayed
    /// from an in-process [`MemoryStore`](crate::MemoryStore) of `max_entries` instead; once
    /// the store answers again it is used again (entries cached locally meanwhile are not
    /// copied into it).
    pub fn with_store(config: Config, store: Arc<dyn CacheStore>) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, Some(store))),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Request and response bodies larger than `limit` bytes are not deduplicated or cached:
    /// such a request goes straight through (`bypass`). Default
    /// [`DEFAULT_MAX_BODY_BYTES`] (the gateway's `server.max_body_bytes` default).
    ///
    /// # Panics
    /// If `limit` is 0.
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        assert!(limit > 0, "max_body_bytes must be >= 1");
        self.max_body_bytes = limit;
        self
    }

    /// The body cap in force.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Validate `config` (every problem, with its key) and build an in-memory layer.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if problems.is_empty() {
            Ok(Self::new(config.clone()))
        } else {
            Err(problems)
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Number of shared upstream calls in progress right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight().len()
    }
}

impl fmt::Debug for DedupCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupCacheLayer")
            .field("shared", &self.shared)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl<S> Layer<S> for DedupCacheLayer {
    type Service = DedupCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DedupCache::from_shared(inner, self.shared.clone(), self.max_body_bytes)
    }
}
