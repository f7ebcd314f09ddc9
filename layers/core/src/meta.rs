//! What a request asks for, read once from its JSON body.

use std::sync::Arc;

/// Facts about an LLM request that several layers need, inserted as a request extension by
/// whichever layer parses the body first (the validation layer in the default stack).
///
/// Layers that find it absent parse the body themselves, so each still works alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The `model` field, if the body had one.
    pub model: Option<Arc<str>>,
    /// `"stream": true` in the body.
    pub stream: bool,
}
