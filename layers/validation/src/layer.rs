//! [`ValidationLayer`]: wraps a service in [`Validation`].

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{Config, Validation};

/// Checks LLM API request bodies before they reach the inner service.
///
/// The layer holds no shared state: it is only configuration, so clones are cheap and
/// independent.
#[derive(Clone, Debug)]
pub struct ValidationLayer {
    config: Config,
    max_body_bytes: usize,
    canonical_body: bool,
}

impl Default for ValidationLayer {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl ValidationLayer {
    /// A layer with this configuration (not checked; see [`ValidationLayer::from_config`]) and
    /// the default body cap, [`DEFAULT_MAX_BODY_BYTES`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            canonical_body: false,
        }
    }

    /// A layer with this configuration, or every problem with it.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if problems.is_empty() {
            Ok(Self::new(config.clone()))
        } else {
            Err(problems)
        }
    }

    /// Reject bodies larger than `limit` bytes with [`BodyTooLarge`](crate::BodyTooLarge)
    /// (the gateway passes `server.max_body_bytes`). Default: [`DEFAULT_MAX_BODY_BYTES`].
    /// With 0, every checked request with a non-empty body is rejected.
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Also leave each valid body's canonical JSON form on the request, as a
    /// [`CanonicalBody`](portcullis_core::CanonicalBody), for a dedup cache further in
    /// (`portcullis_dedup_cache` takes it instead of walking the body again). Written from
    /// the tree the check built, so only at `moderate` and `strict`, and not for a request
    /// that streams (the dedup cache passes those by). Default: off.
    pub fn with_canonical_body(mut self, on: bool) -> Self {
        self.canonical_body = on;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The body cap in use.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
}

impl<S> Layer<S> for ValidationLayer {
    type Service = Validation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validation::new(inner, self.config.clone())
            .with_max_body_bytes(self.max_body_bytes)
            .with_canonical_body(self.canonical_body)
    }
}
