//! [`CookieSession`]: the service.

use std::task::{Context, Poll};

use http::header::{COOKIE, HOST};
use http::{HeaderMap, HeaderValue, Request, Response};
use tower::{BoxError, Service};
use url::Url;

use crate::future::ResponseFuture;
use portcullis_core::CallerId;

use crate::Jars;

/// Sends the jar's matching cookies with each request and stores every `Set-Cookie` of
/// each response, failed ones included.
///
/// With [`Jars::Caller`] the jar is the caller's: the request's
/// [`CallerId`] extension (the gateway's auth sets it), else the identity derived from the
/// request's credential headers (see [`CallerId::from_parts`]). Inside a gateway that adds
/// its own provider key to upstream requests, the extension must be there, or every caller
/// would look alike.
///
/// The request URI should be absolute (`https://host/path`), as a proxy's upstream requests
/// are; a relative one falls back to the `Host` header over `http`, and a request with
/// neither passes through untouched. Cookies the request already carries are kept, the
/// jar's are appended. Responses are passed on unchanged, `Set-Cookie` headers included.
#[derive(Clone, Debug)]
pub struct CookieSession<S> {
    inner: S,
    jars: Jars,
}

impl<S> CookieSession<S> {
    /// Wrap `inner`, keeping the session in `jars` (a [`CookieJar`](crate::CookieJar) or
    /// [`CallerJars`](crate::CallerJars)).
    pub fn new(inner: S, jars: impl Into<Jars>) -> Self {
        Self {
            inner,
            jars: jars.into(),
        }
    }

    /// The jars.
    pub fn jars(&self) -> &Jars {
        &self.jars
    }

    portcullis_core::define_inner_service_accessors!();
}

/// Where a request goes, kept to make the URL cookies are matched against only when there is
/// something to match (a jar with cookies, a response with `Set-Cookie`): most calls have
/// neither, and parsing a URL costs more than the rest of the layer.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    uri: http::Uri,
    /// The `Host` header, for a relative URI.
    host: Option<HeaderValue>,
}

impl Target {
    /// `None` when the request has neither an absolute URI nor a `Host` header.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Self> {
        let uri = req.uri();
        let host = match (uri.scheme(), uri.authority()) {
            (Some(_), Some(_)) => None,
            _ => Some(req.headers().get(HOST)?.clone()),
        };
        Some(Self {
            uri: uri.clone(),
            host,
        })
    }

    /// The URL cookies are matched against, if one can be made.
    pub(crate) fn url(&self) -> Option<Url> {
        let uri = &self.uri;
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let text = match (uri.scheme_str(), uri.authority(), &self.host) {
            (Some(scheme), Some(authority), _) => format!("{scheme}://{authority}{path}"),
            (_, _, Some(host)) => format!("http://{}{path}", host.to_str().ok()?),
            _ => return None,
        };
        Url::parse(&text).ok()
    }
}

/// Append `ours` to the request's own cookies, as one `Cookie` header.
fn add_cookies(headers: &mut HeaderMap, ours: HeaderValue) {
    let mut existing = headers.get_all(COOKIE).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(COOKIE, ours);
        return;
    }
    let mut merged = Vec::new();
    for value in existing.chain(std::iter::once(&ours)) {
        let value = value.as_bytes();
        if value.is_empty() {
            continue;
        }
        if !merged.is_empty() {
            merged.extend_from_slice(b"; ");
        }
        merged.extend_from_slice(value);
    }
    // Joining valid header values with "; " cannot make an invalid one.
    if let Ok(merged) = HeaderValue::from_bytes(&merged) {
        headers.insert(COOKIE, merged);
    }
}

impl<S, B, RB> Service<Request<B>> for CookieSession<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(target) = Target::of(&req) else {
            tracing::debug!("request has no absolute URI nor Host header; cookies not handled");
            return ResponseFuture::new(self.inner.call(req), None);
        };
        let jar = self
            .jars
            .jar_for(|| CallerId::from_parts(req.headers(), req.extensions()));
        // An empty jar has nothing to send: no URL to make until a response sets a cookie.
        let url = if jar.holds_any() { target.url() } else { None };
        if let Some(url) = &url {
            if let Some((cookies, count)) = jar.request_cookies(url) {
                tracing::debug!(
                    host = url.host_str(),
                    cookies = count,
                    "sending jar cookies"
                );
                add_cookies(req.headers_mut(), cookies);
            }
        }
        ResponseFuture::new(self.inner.call(req), Some((jar, url.ok_or(target))))
    }
}
