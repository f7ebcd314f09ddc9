//! Who is calling: request extensions that identify the caller.
//!
//! Layers that key state on the caller (rate limit, dedup cache) read these; layers that
//! learn the caller's identity (memory routing, the binary's auth) insert them.

use std::{fmt, net::IpAddr, sync::Arc};

use http::{header::AUTHORIZATION, HeaderMap};

/// The memory user id chosen for this request (inserted by the memory-routing layer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub Arc<str>);

impl UserId {
    /// Wrap a user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's IP address (inserted by the server that accepted the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The name of the gateway key a caller presented (`[[keys]] name`), a request extension the
/// gateway's key auth inserts. Logs, spans, metrics, rate limits and the audit line name the
/// key by it; the key itself is never kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// A keyed hash of the caller's API key: safe to keep in memory, logs and cache keys.
///
/// The raw key is never stored; two callers with different keys get different hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(pub [u8; 16]);

impl ApiKeyHash {
    /// Hash a raw key.
    pub fn of(key: &str) -> Self {
        let h = blake3::derive_key("portcullis api key v1", key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        Self(out)
    }

    /// The caller's key from `Authorization: Bearer K` or `x-api-key: K`, hashed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        api_key(headers).map(Self::of)
    }

    /// Hex form, for keys in external stores.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({})", &self.to_hex()[..8])
    }
}

/// The raw API key the caller sent: `Authorization: Bearer K` or `x-api-key: K`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let key = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !key.is_empty() {
            return Some(key);
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(api_key(&h), None);
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(api_key(&h), Some("k2"));
        h.insert(AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(api_key(&h), Some("k1"));
    }

    #[test]
    fn hashes_differ_and_hide_the_key() {
        let a = ApiKeyHash::of("sk-a");
        let b = ApiKeyHash::of("sk-b");
        assert_ne!(a, b);
        assert_eq!(a, ApiKeyHash::of("sk-a"));
        assert!(!format!("{a:?}").contains("sk-a"));
    }
}
