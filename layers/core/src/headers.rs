//! Header names every portcullis layer agrees on.

use http::HeaderName;

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

/// Headers whose values are secrets: never logged, never put in spans.
pub fn is_sensitive(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization" | "proxy-authorization" | "x-api-key" | "cookie" | "set-cookie"
    ) || n.ends_with("-api-key")
}

#[cfg(test)]
mod tests {
    use super::*;

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
