//! Talking to upstreams: the pooled HTTPS client, request preparation (URL, auth, headers),
//! the model router with its fallbacks, and the WebSocket proxy.

pub mod client;
pub mod prepare;
pub mod router;
pub mod websocket;

pub use client::{UpstreamClient, UpstreamConnectError, UpstreamTimeout};
pub use prepare::Upstream;
pub use router::{ModelNotFound, ModelRouter, UpstreamHtml};
