//! [`CircuitBreakerLayer`]: wraps a service in a [`CircuitBreaker`].

use std::sync::Arc;

use portcullis_core::ConfigProblem;
use tower::Layer;

use crate::state::{BreakerHandle, Shared};
use crate::{CircuitBreaker, Config};

/// Wraps services in a [`CircuitBreaker`] guarding one upstream.
///
/// The breaker's state lives in an `Arc` inside the layer: cloning the layer, or wrapping
/// several services with it, does **not** create a new breaker. Build one layer per
/// upstream.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A closed breaker named `name` (the upstream's name, used in errors, logs and metrics).
    ///
    /// `config` is taken as is; use [`from_config`](Self::from_config) to validate it first.
    pub fn new(name: impl Into<String>, config: Config) -> Self {
        let name: String = name.into();
        Self {
            shared: Shared::new(Arc::from(name), config),
        }
    }

    /// Like [`new`](Self::new), after checking `config`; every problem is reported.
    pub fn from_config(
        name: impl Into<String>,
        config: &Config,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if problems.is_empty() {
            Ok(Self::new(name, config.clone()))
        } else {
            Err(problems)
        }
    }

    /// A handle on this breaker's state (for `/health/upstreams` and the admin reset).
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_shared(inner, Arc::clone(&self.shared))
    }
}
