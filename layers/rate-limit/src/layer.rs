//! [`RateLimitLayer`]: builds [`RateLimit`] services that share one set of buckets.

use std::{sync::Arc, time::Duration};

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, pattern::PatternSet, ConfigProblem};
use tower::Layer;

use crate::{Backend, Config, KeyKind, Limiter, Quota, RateLimit};

/// Limits requests per caller with GCRA (see the crate docs).
///
/// The buckets live in an `Arc` inside the layer: cloning the layer, or the services it
/// makes, does not create new budgets.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) limiter: Limiter,
    pub(crate) key: KeyKind,
    pub(crate) queue_timeout: Duration,
    pub(crate) backend: Backend,
    pub(crate) models: PatternSet<ModelLimit>,
    pub(crate) max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelLimit {
    /// The pattern as written: the model budget's key.
    pub(crate) pattern: Arc<str>,
    pub(crate) limiter: Limiter,
}

impl RateLimitLayer {
    /// Charge each request to its `key` in `limiter`; no queueing, no per-model limits.
    pub fn new(limiter: Limiter, key: KeyKind) -> Self {
        let backend = match &limiter {
            Limiter::Redis(r) => Backend::Redis(r.store().clone()),
            Limiter::Memory(_) => Backend::Memory,
        };
        Self {
            shared: Arc::new(Shared {
                limiter,
                key,
                queue_timeout: Duration::ZERO,
                backend,
                models: PatternSet::new(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            }),
        }
    }

    /// A layer for `config` with its buckets in this process.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        Self::from_config_with_backend(config, Backend::Memory)
    }

    /// A layer for `config` with its buckets in `backend` (`[state] backend = "redis"`:
    /// [`Backend::Redis`] with a [`RedisStore`](crate::RedisStore) for `state.redis_url`).
    pub fn from_config_with_backend(
        config: &Config,
        backend: Backend,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let limiter = backend.limiter(config.quota());
        let mut layer = Self::new(limiter, config.key).with_queue_timeout(config.queue_timeout);
        Arc::make_mut(&mut layer.shared).backend = backend;
        Ok(layer)
    }

    /// `> 0`: a request over the limit waits up to this long for its slot instead of failing.
    pub fn with_queue_timeout(mut self, queue_timeout: Duration) -> Self {
        Arc::make_mut(&mut self.shared).queue_timeout = queue_timeout;
        self
    }

    /// Also hold requests for `model` to `quota`, per caller (same key as the main limit),
    /// in the same backend. Both limits must let a request through.
    ///
    /// `model` is matched like `[[models]] name`: an exact name wins, then the longest
    /// `prefix*` pattern, then `*`. All models matching one pattern share its budget. The
    /// model is read from the `RequestMeta` extension, or else from the JSON body's `model`
    /// (read up to [`with_max_body_bytes`](Self::with_max_body_bytes), then passed on
    /// unchanged); a request without one is held only to the main limit.
    ///
    /// Values below 1 in `quota` are treated as 1: validate it with [`Quota::validate`].
    pub fn with_model_limit(mut self, model: impl Into<Arc<str>>, quota: Quota) -> Self {
        let shared = Arc::make_mut(&mut self.shared);
        let pattern = model.into();
        let limiter = shared.backend.limiter(quota);
        shared.models.insert(
            &*pattern,
            ModelLimit {
                pattern: pattern.clone(),
                limiter,
            },
        );
        self
    }

    /// Like [`with_model_limit`](Self::with_model_limit), with a limiter made elsewhere: one
    /// from [`Backend::limiter`], or the one an earlier layer used, so that a layer rebuilt
    /// for a changed configuration keeps the model's buckets (clones of a limiter share them).
    pub fn with_model_limiter(mut self, model: impl Into<Arc<str>>, limiter: Limiter) -> Self {
        let pattern = model.into();
        Arc::make_mut(&mut self.shared).models.insert(
            &*pattern,
            ModelLimit {
                pattern: pattern.clone(),
                limiter,
            },
        );
        self
    }

    /// Cap on a body read to find its model (default
    /// [`portcullis_core::body::DEFAULT_MAX_BODY_BYTES`]); a larger
    /// body fails with `portcullis_core::body::CollectError::TooLarge`.
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_body_bytes = limit;
        self
    }

    /// The main limiter (e.g. to inspect a memory limiter's size).
    pub fn limiter(&self) -> &Limiter {
        &self.shared.limiter
    }

    /// The limiter a request for `model` is also held to, if any.
    pub fn model_limiter(&self, model: &str) -> Option<&Limiter> {
        self.shared.model_limit(model).map(|m| &m.limiter)
    }
}

impl Shared {
    pub(crate) fn model_limit(&self, model: &str) -> Option<&ModelLimit> {
        self.models.lookup(model)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_shared(inner, self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn from_config_reports_every_problem() {
        let bad = Config {
            requests_per_minute: 0,
            burst: 0,
            ..Config::default()
        };
        let problems = RateLimitLayer::from_config(&bad).unwrap_err();
        assert_eq!(problems.len(), 2);
        let ok = RateLimitLayer::from_config(&Config::default()).unwrap();
        assert_eq!(ok.limiter().quota(), Quota::new(60, 10));
    }

    #[test]
    fn model_patterns_exact_then_longest_prefix_then_star() {
        let layer = RateLimitLayer::new(
            Limiter::Memory(crate::MemoryLimiter::new(Quota::default())),
            KeyKind::Global,
        )
        .with_model_limit("*", Quota::new(1, 1))
        .with_model_limit("claude-*", Quota::new(2, 1))
        .with_model_limit("claude-3-*", Quota::new(3, 1))
        .with_model_limit("claude-3-opus", Quota::new(4, 1))
        .with_model_limit("claude-3-opus", Quota::new(5, 1));
        let rpm = |m: &str| {
            layer
                .model_limiter(m)
                .map(|l| l.quota().requests_per_minute)
        };
        assert_eq!(
            rpm("claude-3-opus"),
            Some(5),
            "exact, and the later setting wins"
        );
        assert_eq!(rpm("claude-3-haiku"), Some(3));
        assert_eq!(rpm("claude-2"), Some(2));
        assert_eq!(rpm("gpt-4o"), Some(1));
        let no_star = RateLimitLayer::new(
            Limiter::Memory(crate::MemoryLimiter::new(Quota::default())),
            KeyKind::Global,
        )
        .with_model_limit("gpt-4o", Quota::new(1, 1));
        assert!(no_star.model_limiter("gpt-4o-mini").is_none());
    }

    #[tokio::test]
    async fn a_model_limiter_handed_over_keeps_its_buckets() {
        let backend = Backend::Memory;
        let limiter = backend.limiter(Quota::new(60, 1));
        let key = crate::RateKey::global();
        assert!(limiter.check(&key, 1).await.allowed);
        let layer = RateLimitLayer::new(backend.limiter(Quota::default()), KeyKind::Global)
            .with_model_limiter("gpt-4o", limiter.clone());
        let handed = layer.model_limiter("gpt-4o").expect("model limit");
        assert!(
            !handed.check(&key, 1).await.allowed,
            "the bucket emptied before the hand-over is still empty"
        );
    }
}
