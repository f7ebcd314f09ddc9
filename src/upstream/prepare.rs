//! Turning a client's request into the request an upstream receives: absolute URL under the
//! upstream's base (path prefix kept), credentials per `auth`, extra headers, and no
//! hop-by-hop or gateway-only headers.

use http::{
    header::{self, HeaderName, HeaderValue},
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, Uri,
};

use crate::config::{AuthMode, UpstreamConfig};

/// One upstream's request template.
#[derive(Clone)]
pub struct Upstream {
    /// Name from config (shared: every response's route record names it).
    pub name: std::sync::Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash ("" or "/v3/https://api.anthropic.com").
    prefix: String,
    auth: AuthMode,
    credential: Option<HeaderValue>,
    extra: Vec<(HeaderName, HeaderValue)>,
    host: HeaderValue,
    /// `name` as the `x-portcullis-upstream` value, made once (`None`: not a header value).
    pub name_header: Option<HeaderValue>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field(
                "base",
                &format_args!("{}://{}{}", self.scheme, self.authority, self.prefix),
            )
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// Headers the gateway consumes itself or recomputes (hop-by-hop ones are stripped too;
/// `Host` is replaced).
static DROPPED: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    // The gateway reads bodies (errors, usage); upstreams must answer uncompressed.
    header::ACCEPT_ENCODING,
    // The client's cookies are for the gateway; upstream cookies come from the jar.
    header::COOKIE,
];

/// Anthropic's key header (named once: a name given as text is parsed at each use).
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

impl Upstream {
    /// Build from config (validated: base_url parses, secrets resolved).
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Self, String> {
        let url = url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url: {e}"))?;
        let scheme: Scheme = url
            .scheme()
            .parse()
            .map_err(|e| format!("base_url scheme: {e}"))?;
        let host = url.host_str().ok_or("base_url has no host")?;
        let authority_str = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let authority: Authority = authority_str
            .parse()
            .map_err(|e| format!("base_url host: {e}"))?;
        // url::Url normalises "https://x/v3/https://y" paths; take the raw path from the input
        // so Supermemory-style prefixes survive exactly.
        let raw = cfg.base_url.as_str();
        let after_scheme = raw.split_once("://").map(|(_, r)| r).unwrap_or(raw);
        let prefix = after_scheme
            .find('/')
            .map(|i| &after_scheme[i..])
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        let auth = cfg.auth_mode();
        let credential = match (auth, &cfg.api_key) {
            (AuthMode::Bearer, Some(k)) => Some(sensitive(&format!("Bearer {}", k.expose()))?),
            (AuthMode::XApiKey, Some(k)) => Some(sensitive(k.expose())?),
            _ => None,
        };
        let mut extra = Vec::new();
        for (name, value) in &cfg.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: invalid header name"))?;
            let mut v = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("headers.{name}: invalid header value"))?;
            if portcullis_core::headers::is_sensitive(&n) || value.env_name().is_some() {
                v.set_sensitive(true);
            }
            extra.push((n, v));
        }
        let host = HeaderValue::from_str(&authority_str).map_err(|e| format!("host: {e}"))?;
        Ok(Self {
            name_header: HeaderValue::from_str(&cfg.name).ok(),
            name: cfg.name.as_str().into(),
            scheme,
            authority,
            prefix,
            auth,
            credential,
            extra,
            host,
        })
    }

    /// The full upstream URI for a client path such as `/v1/chat/completions?x=1`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let mut joined = String::with_capacity(self.prefix.len() + path_and_query.len());
        joined.push_str(&self.prefix);
        joined.push_str(path_and_query);
        self.uri_with(PathAndQuery::try_from(joined)?)
    }

    /// [`Self::uri_for`] of a client request's parsed path and query: without a prefix, the
    /// client's (shared, not parsed again).
    pub fn uri_of(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        match path_and_query {
            Some(pq) if self.prefix.is_empty() => self.uri_with(pq.clone()),
            pq => self.uri_for(pq.map_or("/", PathAndQuery::as_str)),
        }
    }

    fn uri_with(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }

    /// Rewrite the client's headers for this upstream, in place.
    pub fn prepare_headers(&self, headers: &mut HeaderMap) {
        portcullis_core::headers::strip_hop_by_hop(headers);
        // One pass over the names says which of these are there: a removal of an absent
        // name still hashes it.
        let mut dropped = [false; 3];
        let mut ours = false;
        for name in headers.keys() {
            match DROPPED.iter().position(|d| d == name) {
                Some(i) => dropped[i] = true,
                None => ours |= name.as_str().starts_with("x-portcullis-"),
            }
        }
        for (name, _) in DROPPED.iter().zip(dropped).filter(|(_, there)| *there) {
            headers.remove(name);
        }
        if ours {
            headers.retain_gateway_only();
        }
        match self.auth {
            AuthMode::Passthrough => {}
            AuthMode::None => {
                headers.remove(header::AUTHORIZATION);
                headers.remove(X_API_KEY);
            }
            AuthMode::Bearer => {
                headers.remove(X_API_KEY);
                if let Some(c) = &self.credential {
                    headers.insert(header::AUTHORIZATION, c.clone());
                }
            }
            AuthMode::XApiKey => {
                headers.remove(header::AUTHORIZATION);
                if let Some(c) = &self.credential {
                    headers.insert(X_API_KEY, c.clone());
                }
            }
        }
        for (n, v) in &self.extra {
            headers.insert(n.clone(), v.clone());
        }
        headers.insert(header::HOST, self.host.clone());
    }
}

trait RetainGatewayOnly {
    fn retain_gateway_only(&mut self);
}

impl RetainGatewayOnly for HeaderMap {
    /// Drop `x-portcullis-*` request headers: they are the gateway's, not the upstream's.
    fn retain_gateway_only(&mut self) {
        let ours: Vec<HeaderName> = self
            .keys()
            .filter(|k| k.as_str().starts_with("x-portcullis-"))
            .cloned()
            .collect();
        for k in ours {
            self.remove(k);
        }
    }
}

fn sensitive(v: &str) -> Result<HeaderValue, String> {
    let mut h =
        HeaderValue::from_str(v).map_err(|_| "api_key is not a valid header value".to_string())?;
    h.set_sensitive(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg(base: &str, auth: Option<AuthMode>, key: Option<&str>) -> UpstreamConfig {
        UpstreamConfig {
            name: "u".into(),
            base_url: base.into(),
            api_key: key.map(Secret::literal),
            api_keys: Vec::new(),
            health_check: Default::default(),
            auth,
            headers: [("x-extra".to_string(), Secret::literal("1"))].into(),
            timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            cookies: true,
            ca_file: String::new(),
            api: Default::default(),
            first_byte_timeout: std::time::Duration::ZERO,
            idle_timeout: std::time::Duration::ZERO,
            cookie_scope: Default::default(),
        }
    }

    #[test]
    fn path_prefix_is_kept_exactly() {
        let u = Upstream::from_config(&cfg(
            "https://api.supermemory.ai/v3/https://api.anthropic.com",
            None,
            None,
        ))
        .unwrap();
        assert_eq!(
            u.uri_for("/v1/messages").unwrap().to_string(),
            "https://api.supermemory.ai/v3/https://api.anthropic.com/v1/messages"
        );
        let u = Upstream::from_config(&cfg("http://127.0.0.1:9000/", None, None)).unwrap();
        assert_eq!(
            u.uri_for("/v1/chat/completions?a=1").unwrap().to_string(),
            "http://127.0.0.1:9000/v1/chat/completions?a=1"
        );
    }

    #[test]
    fn a_parsed_client_path_gets_the_same_uri() {
        let pq = PathAndQuery::from_static("/v1/chat/completions?a=1");
        for base in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/",
            "https://api.supermemory.ai/v3/https://api.anthropic.com",
        ] {
            let u = Upstream::from_config(&cfg(base, None, None)).unwrap();
            assert_eq!(
                u.uri_of(Some(&pq)).unwrap(),
                u.uri_for(pq.as_str()).unwrap(),
                "{base}"
            );
            assert_eq!(u.uri_of(None).unwrap(), u.uri_for("/").unwrap(), "{base}");
        }
    }

    #[test]
    fn recomputed_and_gateway_headers_go_and_host_is_replaced() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, "gateway.local".parse().unwrap());
        h.append(header::HOST, "again.local".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        h.insert(header::ACCEPT_ENCODING, "gzip, br".parse().unwrap());
        h.insert("x-portcullis-a", "1".parse().unwrap());
        h.insert("x-portcullis-b", "2".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        Upstream::from_config(&cfg("https://x:8443", None, None))
            .unwrap()
            .prepare_headers(&mut h);
        let host: Vec<_> = h.get_all(header::HOST).iter().collect();
        assert_eq!(host, ["x:8443"]);
        for gone in [
            "content-length",
            "accept-encoding",
            "x-portcullis-a",
            "x-portcullis-b",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn auth_modes() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer client".parse().unwrap());
        h.insert("connection", "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("cookie", "a=b".parse().unwrap());
        h.insert("x-portcullis-debug", "1".parse().unwrap());
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());

        let mut a = h.clone();
        Upstream::from_config(&cfg("https://x", Some(AuthMode::Passthrough), None))
            .unwrap()
            .prepare_headers(&mut a);
        assert_eq!(a[header::AUTHORIZATION], "Bearer client");
        assert!(a.get("x-hop").is_none() && a.get("cookie").is_none());
        assert!(a.get("x-portcullis-debug").is_none());
        assert_eq!(a["anthropic-version"], "2023-06-01");
        assert_eq!(a["x-extra"], "1");
        assert_eq!(a[header::HOST], "x");

        let mut b = h.clone();
        Upstream::from_config(&cfg("https://x", None, Some("sk-up")))
            .unwrap()
            .prepare_headers(&mut b);
        assert_eq!(b[header::AUTHORIZATION], "Bearer sk-up");
        assert!(b[header::AUTHORIZATION].is_sensitive());

        let mut c = h.clone();
        Upstream::from_config(&cfg("https://x", Some(AuthMode::XApiKey), Some("sk-ant")))
            .unwrap()
            .prepare_headers(&mut c);
        assert!(c.get(header::AUTHORIZATION).is_none());
        assert_eq!(c["x-api-key"], "sk-ant");

        let mut d = h;
        Upstream::from_config(&cfg("https://x", Some(AuthMode::None), None))
            .unwrap()
            .prepare_headers(&mut d);
        assert!(d.get(header::AUTHORIZATION).is_none());
    }
}
