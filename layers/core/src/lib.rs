//! Types the portcullis layers share: caller identity, the shared error types, header names,
//! a size-capped body collector, the request-meta peek, model-name patterns, typed outcomes,
//! the remote state store's health (bounded calls, back-off) and the service accessor macro.
//!
//! Layers depend on this crate instead of on each other, so each layer stays usable alone:
//! the memory-routing layer *writes* a [`UserId`] extension and the rate-limit and dedup
//! layers *read* it, without either crate knowing the other exists.

pub mod api;
pub mod body;
pub mod canonical;
pub mod counter;
pub mod error;
pub mod extensions;
pub mod future;
pub mod hash;
pub mod headers;
pub mod identity;
pub mod json_escape;
pub mod json_skim;
pub mod lines;
mod macros;
pub mod meta;
pub mod outcome;
pub mod pattern;
pub mod remote;
pub mod rfc3339;
pub mod sse;
pub mod usage;

pub use canonical::CanonicalBody;
pub use error::CircuitOpen;
pub use identity::{ApiKeyHash, BoundUserId, CallerId, ClientIp, KeyName, UserId};
#[doc(hidden)]
pub use memchr as __memchr;
pub use meta::RequestMeta;
#[doc(hidden)]
pub use metrics as __metrics;
pub use outcome::{Attempts, BreakerState, CacheOutcome, ErrorCode, RateLimitOutcome, RouteInfo};
pub use pattern::{ModelPattern, PatternSet};

/// One problem found in a layer's configuration: the key (relative to the layer's own config
/// section, e.g. `patterns[3].pattern`) and what is wrong with it.
///
/// The binary prefixes the section name (`memory_routing.patterns[3].pattern`) so
/// `portcullis check` can report every problem with its full key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path relative to the layer's section.
    pub path: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigProblem {}
