//! [`RetryLayer`]: wraps services in [`Retry`].

use std::{fmt, sync::Arc};

use portcullis_core::ConfigProblem;
use tower::{retry::budget::TpsBudget, Layer};

use crate::{Config, Retry};

/// Layer that wraps a service in [`Retry`].
///
/// The retry budget lives in an `Arc` inside the layer: cloning this layer, or any service
/// it made, does not create a new budget. Every request through any of them deposits into,
/// and every retry withdraws from, the same budget.
#[derive(Clone)]
pub struct RetryLayer {
    pub(crate) shared: Arc<Shared>,
}

/// What every clone of the layer and its services shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) budget: TpsBudget,
}

impl RetryLayer {
    /// A layer with this config.
    ///
    /// # Panics
    /// If `config` is invalid (see [`Config::validate`]); use [`RetryLayer::from_config`]
    /// for configs that come from users.
    pub fn new(config: Config) -> Self {
        match Self::from_config(&config) {
            Ok(layer) => layer,
            Err(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                panic!("invalid retry config: {}", list.join("; "))
            }
        }
    }

    /// A layer with this config, or every problem the config has.
    pub fn from_config(config: &Config) -> Result<Self, Vec<ConfigProblem>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let b = &config.budget;
        Ok(Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                budget: TpsBudget::new(b.ttl, b.min_per_sec, b.retry_percent),
            }),
        })
    }

    /// The config this layer runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl Default for RetryLayer {
    /// A layer with [`Config::default`].
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, self.shared.clone())
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .field("budget", &self.shared.budget)
            .finish()
    }
}
