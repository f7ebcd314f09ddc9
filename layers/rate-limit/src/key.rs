//! Rate-limit keys: who a request is charged to, as a small fixed-size hash.

use std::{fmt, net::IpAddr, sync::LazyLock};

use http::Request;
use portcullis_core::{ApiKeyHash, ClientIp, UserId};

use crate::KeyKind;

/// Whose budget a request is charged to: a 16-byte hash, never a raw API key or user id.
///
/// Fixed-size keys keep every bucket the same small size in memory (whatever the callers send)
/// and give Redis short, uniform key names. The hash is unkeyed so every replica derives the
/// same key for the same caller (needed for shared Redis budgets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey(pub [u8; 16]);

impl RateKey {
    /// The key of a caller identified by `bytes` within `kind` (`"api_key"`, `"ip"`, ...).
    ///
    /// The kind is part of the hash so an IP and a user id that happen to have the same
    /// spelling never share a bucket.
    pub fn derive(kind: &str, bytes: &[u8]) -> Self {
        // Keyed with a key derived once, instead of `new_derive_key` per call, which would
        // hash the context string again on every request.
        static KEY: LazyLock<[u8; 32]> =
            LazyLock::new(|| blake3::derive_key("portcullis rate-limit key v1", b""));
        let mut h = blake3::Hasher::new_keyed(&KEY);
        h.update(&(kind.len() as u64).to_le_bytes());
        h.update(kind.as_bytes());
        h.update(bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Self(out)
    }

    /// The one bucket shared by every caller.
    pub fn global() -> Self {
        Self::derive("global", b"")
    }

    /// The key of this caller's budget for one model (per-model limits).
    pub fn for_model(&self, model: &str) -> Self {
        let mut bytes = Vec::with_capacity(16 + model.len());
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(model.as_bytes());
        Self::derive("model", &bytes)
    }

    /// The key a request is charged to under `kind` (see [`KeyKind`] for the fallbacks).
    ///
    /// For `api_key` it is the caller's [`ApiKeyHash`] itself.
    pub fn from_request<B>(kind: KeyKind, req: &Request<B>) -> Self {
        match kind {
            // The caller's `ApiKeyHash` is already a 16-byte hash of the key: it is used as is
            // (hashing it again would cost a request ~200ns for nothing).
            // A gateway key matched by the gateway's auth (an `ApiKeyHash` extension: its
            // header is gone by now) wins; else the key the request itself carries.
            KeyKind::ApiKey => match req
                .extensions()
                .get::<ApiKeyHash>()
                .copied()
                .or_else(|| ApiKeyHash::from_headers(req.headers()))
            {
                Some(hash) => Self(hash.0),
                None => match req.extensions().get::<ClientIp>() {
                    Some(ClientIp(ip)) => Self::from_ip(*ip),
                    None => Self::derive("anonymous", b""),
                },
            },
            KeyKind::UserId => {
                let user = req
                    .extensions()
                    .get::<UserId>()
                    .map_or("default", UserId::as_str);
                Self::derive("user_id", user.as_bytes())
            }
            KeyKind::Ip => match req.extensions().get::<ClientIp>() {
                Some(ClientIp(ip)) => Self::from_ip(*ip),
                None => Self::derive("ip", b"unknown"),
            },
            KeyKind::Global => Self::global(),
        }
    }

    fn from_ip(ip: IpAddr) -> Self {
        // One spelling per address: an IPv4 client seen over an IPv6 socket is the same client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => Self::derive("ip", &v4.octets()),
            IpAddr::V6(v6) => Self::derive("ip", &v6.octets()),
        }
    }

    /// Hex form, for keys in external stores.
    pub fn to_hex(&self) -> String {
        portcullis_core::hash::to_hex(&self.0)
    }
}

impl fmt::Debug for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateKey({})", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> http::request::Builder {
        Request::builder().uri("/v1/chat/completions")
    }

    #[test]
    fn api_key_is_hashed_and_falls_back_to_ip_then_anonymous() {
        let a = req()
            .header("authorization", "Bearer sk-a")
            .body(())
            .unwrap();
        let a2 = req().header("x-api-key", "sk-a").body(()).unwrap();
        let b = req()
            .header("authorization", "Bearer sk-b")
            .body(())
            .unwrap();
        let ka = RateKey::from_request(KeyKind::ApiKey, &a);
        assert_eq!(ka, RateKey::from_request(KeyKind::ApiKey, &a2));
        assert_ne!(ka, RateKey::from_request(KeyKind::ApiKey, &b));
        assert!(!format!("{ka:?}").contains("sk-a"));
        assert!(!ka.to_hex().contains(&hex(b"sk-a")));

        let mut ip = req().body(()).unwrap();
        ip.extensions_mut()
            .insert(ClientIp("10.0.0.1".parse().unwrap()));
        let kip = RateKey::from_request(KeyKind::ApiKey, &ip);
        assert_eq!(kip, RateKey::from_request(KeyKind::Ip, &ip));
        let anon = RateKey::from_request(KeyKind::ApiKey, &req().body(()).unwrap());
        assert_ne!(kip, anon);
        assert_ne!(ka, anon);
    }

    #[test]
    fn user_id_ip_and_global() {
        let mut r = req().body(()).unwrap();
        let default = RateKey::from_request(KeyKind::UserId, &r);
        r.extensions_mut().insert(UserId::new("alice"));
        let alice = RateKey::from_request(KeyKind::UserId, &r);
        assert_ne!(default, alice);
        r.extensions_mut().insert(UserId::new("default"));
        assert_eq!(default, RateKey::from_request(KeyKind::UserId, &r));

        let unknown = RateKey::from_request(KeyKind::Ip, &r);
        r.extensions_mut()
            .insert(ClientIp("::ffff:10.0.0.1".parse().unwrap()));
        let mapped = RateKey::from_request(KeyKind::Ip, &r);
        assert_ne!(unknown, mapped);
        r.extensions_mut()
            .insert(ClientIp("10.0.0.1".parse().unwrap()));
        assert_eq!(mapped, RateKey::from_request(KeyKind::Ip, &r));

        assert_eq!(
            RateKey::from_request(KeyKind::Global, &r),
            RateKey::global()
        );
    }

    #[test]
    fn kinds_and_models_are_separate_namespaces() {
        assert_ne!(
            RateKey::derive("ip", b"x"),
            RateKey::derive("user_id", b"x")
        );
        let k = RateKey::derive("user_id", b"x");
        assert_ne!(k.for_model("a"), k.for_model("b"));
        assert_ne!(
            k.for_model("a"),
            RateKey::derive("user_id", b"y").for_model("a")
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }
}
