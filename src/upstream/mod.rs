//! Talking to upstreams: the pooled HTTPS client, request preparation (URL, auth, headers),
//! the model router with its fallbacks, and the pass-through of every other `/v1/*` path, and the WebSocket proxy.

pub mod balance;
pub mod client;
pub mod health;
pub mod keys;
pub mod passthrough;
pub mod pool;
pub mod prepare;
pub mod router;
pub mod stream_end;
pub mod websocket;

pub use client::{UpstreamClient, UpstreamConnectError, UpstreamTimeout};
pub use prepare::Upstream;
pub use router::{ModelNotFound, ModelRouter, UpstreamHtml};
