//! Serde types of the three API shapes, tolerant of fields they do not know: request and
//! response types keep them in `extra` (so they pass through), stream types ignore them.
//!
//! Written from the official SDKs' type definitions (`openai-python` `types/chat`,
//! `types/responses`; `anthropic-sdk-python` `types`), reduced to what translation needs.

pub mod chat;
pub mod messages;
pub mod responses;
