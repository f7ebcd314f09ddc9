//! Header names every portcullis layer agrees on.

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// Name of the upstream that answered.
pub const X_PORTCULLIS_UPSTREAM: HeaderName = HeaderName::from_static("x-portcullis-upstream");
/// Number of upstream attempts made for this request.
pub const X_PORTCULLIS_ATTEMPTS: HeaderName = HeaderName::from_static("x-portcullis-attempts");
/// Cache outcome: `miss`, `hit`, `coalesced` or `bypass`.
pub const X_PORTCULLIS_CACHE: HeaderName = HeaderName::from_static("x-portcullis-cache");
/// Machine-readable code of an error the gateway made itself.
pub const X_PORTCULLIS_ERROR: HeaderName = HeaderName::from_static("x-portcullis-error");
/// Request id, kept from the client or generated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `v` marked never to be indexed by HTTP/2's header compression (HPACK's "never indexed"
/// literal, `HeaderValue::set_sensitive`), for values new on every message (request ids, a
/// `traceparent`): an entry for one in the connection's table never serves another message,
/// and each insertion evicts the stable entries (content type, the gateway's constant
/// headers) that keep the next message's other headers at a byte or two each. HTTP/1 ignores
/// the mark; `Debug` of the value prints `Sensitive`.
///
/// ```
/// let v = portcullis_core::headers::never_indexed(http::HeaderValue::from_static("42"));
/// assert!(v.is_sensitive());
/// assert_eq!(v, "42");
/// ```
pub fn never_indexed(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// `n` as a header value, as `HeaderValue::from(n)` writes it; below 100 without an
/// allocation (a static value): attempts, seconds to wait, small limits.
///
/// ```
/// use portcullis_core::headers::int_value;
///
/// for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
///     assert_eq!(int_value(n), http::HeaderValue::from(n));
/// }
/// ```
pub fn int_value(n: impl Into<u64>) -> HeaderValue {
    /// "00", "01", ... "99", back to back.
    const PAIRS: &str = {
        const BYTES: [u8; 200] = {
            let mut b = [0u8; 200];
            let mut i = 0;
            while i < 100 {
                b[2 * i] = b'0' + (i / 10) as u8;
                b[2 * i + 1] = b'0' + (i % 10) as u8;
                i += 1;
            }
            b
        };
        match std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("digits are UTF-8"),
        }
    };
    let n = n.into();
    match usize::try_from(n) {
        Ok(i @ 0..=9) => HeaderValue::from_static(&PAIRS[2 * i + 1..2 * i + 2]),
        Ok(i @ 10..=99) => HeaderValue::from_static(&PAIRS[2 * i..2 * i + 2]),
        _ => HeaderValue::from(n),
    }
}

/// Whether `value` starts with `prefix`, ASCII case ignored (media types, token lists), with no
/// lower-cased copy.
pub fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The `Content-Type` value from its first non-blank byte: what [`starts_with_ignore_case`]
/// compares media types against. The bytes as they are (not checked to be visible ASCII
/// first: every caller compares an ASCII prefix, which a value with other bytes after it still
/// has or has not, and the check cost each of the ~4 lookups per request a walk of the value).
pub fn content_type(headers: &HeaderMap) -> Option<&[u8]> {
    Some(
        headers
            .get(header::CONTENT_TYPE)?
            .as_bytes()
            .trim_ascii_start(),
    )
}

/// A response body a layer can read as it passes: a successful answer, not compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadableBody {
    /// `text/event-stream`.
    Sse,
    /// `application/json`.
    Json,
}

impl ReadableBody {
    /// What the answer with this status and these headers is, or `None` for anything a layer
    /// reading answers leaves alone: an error status, a `Content-Encoding` other than
    /// `identity`, another or no media type.
    pub fn of(status: http::StatusCode, headers: &HeaderMap) -> Option<Self> {
        if !status.is_success() {
            return None;
        }
        if headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
        {
            return None;
        }
        let ct = content_type(headers)?;
        if starts_with_ignore_case(ct, b"text/event-stream") {
            Some(Self::Sse)
        } else if starts_with_ignore_case(ct, b"application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }
}

/// Headers whose values are secrets: never logged, never put in spans.
pub fn is_sensitive(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization" | "proxy-authorization" | "x-api-key" | "cookie" | "set-cookie"
    ) || n.ends_with("-api-key")
}

/// Remove the headers that describe one connection, not the message (RFC 9110 7.6.1): those
/// named in `Connection`, and `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
///
/// A proxy strips them before forwarding; a cache strips them before replaying a response on
/// another connection.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (and without `Connection`, nothing else is named hop-by-hop):
    // one pass over the names says so, instead of a hashed removal per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
}

/// The hop-by-hop headers of RFC 9110 section 7.6.1 (and the legacy `keep-alive`,
/// `proxy-connection`): what [`strip_hop_by_hop`] looks for and removes.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One of [`HOP_BY_HOP`], by its text: one length-and-bytes match per name, where comparing
/// it with each of the nine names costs nine comparisons (every header of every message is
/// looked at).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether `name` is one of the gateway's own `x-portcullis-*` headers.
pub fn is_gateway_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-portcullis-")
}

/// Make an upstream's response headers safe to pass on: hop-by-hop headers go
/// ([`strip_hop_by_hop`]), and so does every `x-portcullis-*` header, which only the gateway
/// may set (an upstream's `x-portcullis-cache: hit` or `x-portcullis-attempts` must not reach
/// the client, the access log or the metrics).
pub fn sanitize_upstream_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if headers.keys().any(is_gateway_header) {
        let ours: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_gateway_header(n))
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn readable_bodies_by_status_encoding_and_media_type_in_any_case() {
        use super::ReadableBody;
        use http::{HeaderMap, HeaderValue, StatusCode};
        let of = |status: u16, pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.insert(*n, HeaderValue::from_str(v).unwrap());
            }
            ReadableBody::of(StatusCode::from_u16(status).unwrap(), &h)
        };
        let json = [("content-type", "Application/JSON; charset=utf-8")];
        assert_eq!(of(200, &json), Some(ReadableBody::Json));
        assert_eq!(
            of(200, &[("content-type", "  application/json")]),
            Some(ReadableBody::Json)
        );
        assert_eq!(
            of(200, &[("content-type", "TEXT/EVENT-STREAM")]),
            Some(ReadableBody::Sse)
        );
        assert_eq!(of(429, &json), None);
        assert_eq!(of(302, &json), None);
        let gzip = [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ];
        assert_eq!(of(200, &gzip), None);
        let identity = [
            ("content-type", "application/json"),
            ("content-encoding", "Identity"),
        ];
        assert_eq!(of(200, &identity), Some(ReadableBody::Json));
        for other in [
            "application/js",
            "text/",
            "",
            "text/plain",
            "application/x-ndjson",
        ] {
            assert_eq!(of(200, &[("content-type", other)]), None, "{other:?}");
        }
        assert_eq!(of(200, &[]), None);
        // The media type is read from the bytes as they are: a parameter with a byte that is
        // not visible ASCII (obs-text, which a header may carry) does not hide it.
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_bytes(b"application/json; name=\"caf\xe9\"").unwrap(),
        );
        assert_eq!(
            ReadableBody::of(StatusCode::OK, &h),
            Some(ReadableBody::Json)
        );
        assert!(super::starts_with_ignore_case(b"Text/HTML", b"text/html"));
        assert!(!super::starts_with_ignore_case(b"text/htm", b"text/html"));
    }

    #[test]
    fn small_and_large_integers_are_written_as_http_writes_them() {
        for n in (0u64..=1_000).chain([u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(super::int_value(n), http::HeaderValue::from(n), "{n}");
        }
        assert_eq!(super::int_value(3u32), "3");
    }

    #[test]
    fn an_upstreams_gateway_and_hop_by_hop_headers_go() {
        use http::HeaderValue;
        let mut h = HeaderMap::new();
        h.insert("x-portcullis-cache", HeaderValue::from_static("hit"));
        h.insert(
            "x-portcullis-attempts",
            HeaderValue::from_static("4294967295"),
        );
        h.insert("connection", HeaderValue::from_static("x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("x-request-id", HeaderValue::from_static("kept"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        sanitize_upstream_response(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }

    use super::*;

    #[test]
    fn each_hop_by_hop_header_alone_is_stripped() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
            h.insert("content-type", "application/json".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} stays: {h:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn sensitive_headers() {
        for h in [
            "authorization",
            "x-api-key",
            "x-supermemory-api-key",
            "cookie",
            "set-cookie",
        ] {
            assert!(is_sensitive(&HeaderName::from_static(h)), "{h}");
        }
        for h in ["content-type", "x-sm-user-id", "user-agent"] {
            assert!(!is_sensitive(&HeaderName::from_static(h)), "{h}");
        }
    }
}
