//! The SSE framer is shared: see [`portcullis_core::sse`].

pub(crate) use portcullis_core::sse::*;
