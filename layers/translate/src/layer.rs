//! [`TranslateLayer`]: wraps services in [`Translate`].

use portcullis_core::{body::DEFAULT_MAX_BODY_BYTES, ConfigProblem};
use tower::Layer;

use crate::{store::ResponseStore, Api, Config, Translate};

/// Layer that wraps an upstream service speaking [`Api`] in [`Translate`].
///
/// Its one piece of shared state is the [`ResponseStore`] (the Responses API's stored
/// answers, see [`crate::store`]): cloning the layer, or the services it makes, shares it.
#[derive(Debug, Clone)]
pub struct TranslateLayer {
    pub(crate) api: Api,
    pub(crate) max_body_bytes: usize,
    pub(crate) store: ResponseStore,
}

impl TranslateLayer {
    /// A layer for an upstream speaking `api`.
    pub fn new(api: Api) -> Self {
        TranslateLayer {
            api,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            store: ResponseStore::default(),
        }
    }

    /// Keep the Responses API's stored answers in `store` (default: a store of this layer's
    /// own, [`StoreConfig`](crate::StoreConfig)'s defaults). The gateway gives every upstream
    /// the same one, so a reference resolves whichever upstream serves the next turn.
    pub fn with_store(mut self, store: ResponseStore) -> Self {
        self.store = store;
        self
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
        Translate::new(inner, self.api)
            .with_max_body_bytes(self.max_body_bytes)
            .with_store(self.store.clone())
    }
}
