//! [`TranslateLayer`]: wraps services in [`Translate`].

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{Api, Config, Translate};

/// Layer that wraps an upstream service speaking [`Api`] in [`Translate`].
///
/// It holds no shared state: cloning it, or the services it makes, is cheap.
#[derive(Debug, Clone, Copy)]
pub struct TranslateLayer {
    pub(crate) api: Api,
    pub(crate) max_body_bytes: usize,
}

impl TranslateLayer {
    /// A layer for an upstream speaking `api`.
    pub fn new(api: Api) -> Self {
        TranslateLayer {
            api,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// A layer with this config, or every problem the config has.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self::new(config.api))
    }

    /// The most request body read for translation (default 10 MiB, the gateway's
    /// `server.max_body_bytes`); larger bodies fail with
    /// [`CollectError::TooLarge`](portcullis_core::body::CollectError).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The upstream's API.
    pub fn api(&self) -> Api {
        self.api
    }
}

impl<S> Layer<S> for TranslateLayer {
    type Service = Translate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Translate::new(inner, self.api).with_max_body_bytes(self.max_body_bytes)
    }
}
