//! Who is calling: request extensions that identify the caller.
//!
//! Layers that key state on the caller (rate limit, dedup cache) read these; layers that
//! learn the caller's identity (memory routing, the binary's auth) insert them.

use std::{fmt, net::IpAddr, sync::Arc};

use crate::hash::DeriveKey;
use http::{header::AUTHORIZATION, Extensions, HeaderMap, HeaderName};

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

/// A memory user id bound to the caller's gateway key (`[[keys]] user_id`), inserted by the
/// gateway's auth: the memory-routing layer uses it over the client's headers and patterns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundUserId(pub Arc<str>);

impl BoundUserId {
    /// Wrap a user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
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
        static CONTEXT: DeriveKey = DeriveKey::new("portcullis api key v1");
        // A client sends the same key request after request: its hash is remembered.
        let mut h = CONTEXT.framed();
        h.raw(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize_remembered().as_bytes()[..16]);
        Self(out)
    }

    /// The caller's key from `Authorization: Bearer K` or `x-api-key: K`, hashed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        api_key(headers).map(Self::of)
    }

    /// Hex form, for keys in external stores.
    pub fn to_hex(&self) -> String {
        crate::hash::to_hex(&self.0)
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({})", &self.to_hex()[..8])
    }
}

/// Who a caller is, for state that must never cross callers: the dedup key, per-caller cookie
/// jars.
///
/// A caller is the gateway key that matched (if any) together with **every credential header
/// that goes upstream** ([`is_credential_header`]: `authorization`, `x-api-key`, `api-key`,
/// `x-goog-api-key`, any `*-api-key`), hashed together (blake3, keyed, length-framed, header
/// names sorted). Two callers sharing a gateway key but sending different provider keys are
/// two identities; a caller whose only credential is Azure's `api-key` is told apart by it.
///
/// # Where it comes from
///
/// The gateway's auth inserts it as a request extension, computed with [`CallerId::of`]
/// *before* it removes the header carrying the gateway key (that header never goes upstream,
/// and with `auth = "bearer"` upstreams the provider key is added only after the layers, so
/// from the headers alone every caller of such an upstream would look alike). Layers call [`CallerId::from_parts`], which takes that extension, else derives the
/// identity from the headers alone (a layer used outside the gateway).
///
/// ```
/// use http::HeaderMap;
/// use portcullis_core::{ApiKeyHash, CallerId};
///
/// let h = |k: &str, v: &str| {
///     let mut m = HeaderMap::new();
///     m.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
///     m
/// };
/// let team = ApiKeyHash::of("gateway-key");
/// assert_ne!(
///     CallerId::of(&h("x-api-key", "sk-1"), Some(&team)),
///     CallerId::of(&h("x-api-key", "sk-2"), Some(&team)),
/// );
/// assert_ne!(CallerId::of(&h("api-key", "az-1"), None), CallerId::of(&h("api-key", "az-2"), None));
/// assert_eq!(CallerId::of(&h("api-key", "az-1"), None), CallerId::of(&h("api-key", "az-1"), None));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(pub [u8; 16]);

impl CallerId {
    /// The identity of a caller that sent `headers` and matched `gateway_key` (if any).
    pub fn of(headers: &HeaderMap, gateway_key: Option<&ApiKeyHash>) -> Self {
        static CONTEXT: DeriveKey = DeriveKey::new("portcullis caller id v1");
        let mut h = CONTEXT.framed();
        match gateway_key {
            Some(k) => {
                h.raw(b"k");
                h.raw(&k.0);
            }
            None => {
                h.raw(b"-");
            }
        }
        let mut names: Vec<&HeaderName> =
            headers.keys().filter(|n| is_credential_header(n)).collect();
        names.sort_unstable_by_key(|n| n.as_str());
        h.count(names.len());
        for name in names {
            h.field(name.as_str().as_bytes());
            let values = headers.get_all(name);
            h.count(values.iter().count());
            for v in values {
                h.field(v.as_bytes());
            }
        }
        // A client sends the same credentials request after request: the identity made of
        // them is remembered.
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize_remembered().as_bytes()[..16]);
        Self(out)
    }

    /// The request's [`CallerId`] extension (set by the gateway's auth), else the identity
    /// derived from `headers` with no gateway key.
    pub fn from_parts(headers: &HeaderMap, extensions: &Extensions) -> Self {
        extensions
            .get::<Self>()
            .copied()
            .unwrap_or_else(|| Self::of(headers, None))
    }

    /// Hex form, for keys in external stores and persisted files.
    pub fn to_hex(&self) -> String {
        crate::hash::to_hex(&self.0)
    }

    /// Parse [`to_hex`](Self::to_hex)'s output.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerId({})", &self.to_hex()[..8])
    }
}

/// Whether `name` is a credential header that goes upstream: `authorization`, `x-api-key`,
/// `api-key` (Azure), `x-goog-api-key`, or any other `*-api-key`.
pub fn is_credential_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization" || n == "api-key" || n.ends_with("-api-key")
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

/// `x-session-id`: names a conversation for the layers that keep per-session state
/// (in-chat commands, tool-call loop detection).
pub const X_SESSION_ID: http::HeaderName = http::HeaderName::from_static("x-session-id");

/// A session of per-session state: see [`session_key`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 16]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = crate::hash::to_hex(&self.0[..4]);
        write!(f, "SessionKey({hex})")
    }
}

/// The session of a request: first the caller (the [`CallerId`] extension the gateway's auth
/// inserts; else an [`ApiKeyHash`] extension; else the request's credential headers, hashed
/// as [`CallerId::of`] does), so two callers never share a session; then, within that caller, the
/// `x-session-id` header if present and not empty, else the memory user id ([`UserId`];
/// absent: one session per caller). An `x-session-id` is scoped by the caller: one caller
/// sending another's session id reaches its own session of that name.
///
/// `layer` names the layer keeping the state, so two layers never share keys.
pub fn session_key(layer: &str, headers: &HeaderMap, extensions: &http::Extensions) -> SessionKey {
    SessionSource::of(headers, extensions).key(layer)
}

/// What a request's [`session_key`] is made of, taken from the request without hashing: a
/// layer that needs the key only sometimes (after the response, and only when it has state to
/// look up) keeps this while the request goes on, and hashes it when it must.
#[derive(Debug, Clone)]
pub struct SessionSource {
    /// `c` (a [`CallerId`]), `k` (an [`ApiKeyHash`]) or `h` (the credential headers).
    caller: (u8, [u8; 16]),
    /// `s` and the `x-session-id`, or `u` and the memory user id, or `-`.
    within: Within,
}

#[derive(Debug, Clone)]
enum Within {
    Session(http::HeaderValue),
    User(Arc<str>),
    Caller,
}

impl SessionSource {
    /// The parts of the session of a request with these headers and extensions.
    pub fn of(headers: &HeaderMap, extensions: &http::Extensions) -> Self {
        let caller = match (extensions.get::<CallerId>(), extensions.get::<ApiKeyHash>()) {
            (Some(c), _) => (b'c', c.0),
            // Used alone, a layer takes an identity extension its own auth inserted as the
            // caller.
            (None, Some(k)) => (b'k', k.0),
            (None, None) => (b'h', CallerId::of(headers, None).0),
        };
        let within = match headers.get(X_SESSION_ID).filter(|v| !v.is_empty()) {
            Some(sid) => Within::Session(sid.clone()),
            None => match extensions.get::<UserId>() {
                Some(u) => Within::User(u.0.clone()),
                None => Within::Caller,
            },
        };
        Self { caller, within }
    }

    /// The session key for the layer named `layer` (see [`session_key`]).
    pub fn key(&self, layer: &str) -> SessionKey {
        // v2: one-byte tags and fixed-size ids unframed, so a key with a short user id is one
        // 64-byte block (one compression, not two). Keys live in memory only.
        static CONTEXT: DeriveKey = DeriveKey::new("portcullis session v2");
        let mut h = CONTEXT.framed();
        h.field(layer.as_bytes());
        h.raw(&[self.caller.0]);
        h.raw(&self.caller.1);
        match &self.within {
            Within::Session(sid) => {
                h.raw(b"s");
                h.field(sid.as_bytes());
            }
            Within::User(u) => {
                h.raw(b"u");
                h.field(u.as_bytes());
            }
            Within::Caller => h.raw(b"-"),
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        SessionKey(out)
    }
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn session_keys_keep_callers_sessions_and_layers_apart() {
        let key = |layer: &str, caller: u8, sid: Option<&str>, user: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(sid) = sid {
                h.insert(X_SESSION_ID, sid.parse().unwrap());
            }
            let mut e = http::Extensions::new();
            e.insert(CallerId([caller; 16]));
            if let Some(u) = user {
                e.insert(UserId::new(u));
            }
            session_key(layer, &h, &e)
        };
        let base = key("commands", 1, None, Some("alice"));
        assert_eq!(base, key("commands", 1, None, Some("alice")));
        for other in [
            key("tool-call-loop", 1, None, Some("alice")),
            key("commands", 2, None, Some("alice")),
            key("commands", 1, None, Some("bob")),
            key("commands", 1, None, None),
            // The same text as a session id and as a user id: two sessions.
            key("commands", 1, Some("alice"), None),
            key("commands", 1, Some("alice"), Some("alice")),
        ] {
            assert_ne!(base, other);
        }
        // An x-session-id is scoped by the caller, and wins over the user id.
        assert_ne!(
            key("commands", 1, Some("s"), None),
            key("commands", 2, Some("s"), None)
        );
        assert_eq!(
            key("commands", 1, Some("s"), None),
            key("commands", 1, Some("s"), Some("u"))
        );
        // A caller known by its API key only, or by nothing, is still told apart.
        let mut e = http::Extensions::new();
        e.insert(ApiKeyHash([1; 16]));
        let by_api_key = session_key("commands", &HeaderMap::new(), &e);
        let by_headers = session_key("commands", &HeaderMap::new(), &http::Extensions::new());
        assert_ne!(by_api_key, by_headers);
        assert_ne!(by_api_key, key("commands", 1, None, None));
    }

    #[test]
    fn caller_id_covers_every_credential_header() {
        let gw = ApiKeyHash::of("gw");
        let base = CallerId::of(&headers(&[("authorization", "Bearer gw")]), Some(&gw));
        // Same gateway key, different provider key in x-api-key: another caller (issue 14).
        for extra in [
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "anthropic-api-key",
        ] {
            let a = CallerId::of(
                &headers(&[("authorization", "Bearer gw"), (extra, "p1")]),
                Some(&gw),
            );
            let b = CallerId::of(
                &headers(&[("authorization", "Bearer gw"), (extra, "p2")]),
                Some(&gw),
            );
            assert_ne!(a, b, "{extra}");
            assert_ne!(a, base, "{extra}");
        }
        // Headers that are not credentials do not matter; header order does not either.
        let a = CallerId::of(&headers(&[("x-api-key", "k"), ("api-key", "a")]), None);
        let b = CallerId::of(
            &headers(&[("api-key", "a"), ("user-agent", "x"), ("x-api-key", "k")]),
            None,
        );
        assert_eq!(a, b);
        // The gateway key is part of it.
        let h = headers(&[("x-api-key", "k")]);
        assert_ne!(CallerId::of(&h, None), CallerId::of(&h, Some(&gw)));
        assert_ne!(
            CallerId::of(&h, Some(&ApiKeyHash::of("other"))),
            CallerId::of(&h, Some(&gw))
        );
        // Framing: a value cannot spill into the next header.
        assert_ne!(
            CallerId::of(&headers(&[("a-api-key", "xb-api-key")]), None),
            CallerId::of(&headers(&[("a-api-key", "x"), ("b-api-key", "")]), None),
        );
    }

    #[test]
    fn caller_id_extension_wins_and_hex_round_trips() {
        let h = headers(&[("x-api-key", "k")]);
        let mut ext = Extensions::new();
        assert_eq!(CallerId::from_parts(&h, &ext), CallerId::of(&h, None));
        let set = CallerId::of(&h, Some(&ApiKeyHash::of("gw")));
        ext.insert(set);
        assert_eq!(CallerId::from_parts(&h, &ext), set);
        assert_eq!(CallerId::from_hex(&set.to_hex()), Some(set));
        assert_eq!(CallerId::from_hex("zz"), None);
        assert!(!format!("{set:?}").contains(&set.to_hex()));
        assert!(!is_credential_header(&HeaderName::from_static(
            "x-api-keys"
        )));
        assert!(is_credential_header(&HeaderName::from_static(
            "x-goog-api-key"
        )));
    }

    #[test]
    fn hashes_differ_and_hide_the_key() {
        let a = ApiKeyHash::of("sk-a");
        let b = ApiKeyHash::of("sk-b");
        assert_ne!(a, b);
        assert_eq!(a, ApiKeyHash::of("sk-a"));
        assert!(!format!("{a:?}").contains("sk-a"));
    }

    /// A key's hash is blake3's derive-key hash of the key, as it always was (rate-limit keys
    /// in Redis and the audit's key ids outlive a release): the same for a short key asked
    /// twice (the second answer remembered), for another key in between, and for a key too
    /// long to remember.
    #[test]
    fn a_key_hash_is_the_derive_key_hash_of_the_key_whether_remembered_or_not() {
        let plain = |key: &str| {
            let h = blake3::Hasher::new_derive_key("portcullis api key v1")
                .update(key.as_bytes())
                .finalize();
            ApiKeyHash(h.as_bytes()[..16].try_into().unwrap())
        };
        let long = format!("sk-{}", "x".repeat(400));
        for key in [
            "sk-a",
            "sk-a",
            "sk-b",
            "sk-a",
            long.as_str(),
            long.as_str(),
            "",
        ] {
            assert_eq!(ApiKeyHash::of(key), plain(key), "{}", key.len());
        }
    }
}
