//! [`MemoryRoutingLayer`]: wraps services in [`MemoryRouting`].

use std::sync::Arc;

use portcullis_core::ConfigProblem;
use tower::Layer;

use crate::{Config, MemoryRouter, MemoryRouting};

/// Gives every request a memory user id (see the [crate docs](crate)).
///
/// The compiled patterns live in an `Arc<MemoryRouter>`: cloning this layer, or the services
/// it makes, does not recompile or copy them.
#[derive(Debug, Clone)]
pub struct MemoryRoutingLayer {
    router: Arc<MemoryRouter>,
}

impl MemoryRoutingLayer {
    /// A layer deciding with `router`.
    pub fn new(router: Arc<MemoryRouter>) -> Self {
        Self { router }
    }

    /// Compile `config` into a layer; fails with every problem in it.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        MemoryRouter::new(config).map(|r| Self::new(Arc::new(r)))
    }

    /// The shared router, e.g. to answer `GET /memory-routing/info` with the same decision.
    pub fn router(&self) -> &Arc<MemoryRouter> {
        &self.router
    }
}

impl<S> Layer<S> for MemoryRoutingLayer {
    type Service = MemoryRouting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MemoryRouting::new(inner, self.router.clone())
    }
}
