//! Talking to upstreams: the pooled HTTPS client, request preparation (URL, auth, headers)
//! and the model router with its fallbacks.

pub mod client;
pub mod prepare;
pub mod router;

pub use client::{UpstreamClient, UpstreamConnectError, UpstreamTimeout};
pub use prepare::Upstream;
pub use router::{ModelNotFound, ModelRouter, UpstreamHtml};
