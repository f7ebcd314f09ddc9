//! [`KeyName`]: which gateway key a request came with.

use std::{fmt, sync::Arc};

/// The name of the gateway key (`[[keys]] name`) the request authenticated with: a request
/// extension **inserted by the gateway's key auth**, read by the audit line and the usage
/// table. Absent (no gateway key matched, or keys are not configured): the line's `key` is
/// `null`. It is a configured name, never the key itself.
///
/// ```
/// use portcullis_audit::KeyName;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(KeyName::new("team-a"));
/// assert_eq!(request.extensions().get::<KeyName>().unwrap().as_str(), "team-a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(pub Arc<str>);

impl KeyName {
    /// Wrap a key name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
