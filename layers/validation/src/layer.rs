//! [`ValidationLayer`]: wraps a service in [`Validation`].

use portcullis_core::ConfigProblem;
use tower::Layer;

use crate::{Config, Validation};

/// Checks LLM API request bodies before they reach the inner service.
///
/// The layer holds no shared state: it is only configuration, so clones are cheap and
/// independent.
#[derive(Clone, Debug, Default)]
pub struct ValidationLayer {
    config: Config,
}

impl ValidationLayer {
    /// A layer with this configuration (not checked; see [`ValidationLayer::from_config`]).
    pub fn new(config: Config) -> Self {
        Self { config }
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

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<S> Layer<S> for ValidationLayer {
    type Service = Validation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validation::new(inner, self.config.clone())
    }
}
