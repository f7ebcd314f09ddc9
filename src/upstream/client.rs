//! The hyper client every upstream call goes through: pooled, HTTP/1.1 and HTTP/2 by ALPN,
//! rustls with webpki + native roots (+ an optional CA file), connect and request timeouts.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use tower::{BoxError, Service};
use tracing::Instrument;

use crate::telemetry::client::{Attempt, AttemptError};

/// The upstream did not send response headers within its `timeout`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {upstream:?} did not answer within {timeout:?}")]
pub struct UpstreamTimeout {
    /// The `[[upstreams]]` name.
    pub upstream: String,
    /// The timeout that passed.
    pub timeout: Duration,
}

/// The upstream could not be reached, or the connection broke before a response arrived.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?} unreachable: {message}")]
pub struct UpstreamConnectError {
    /// The `[[upstreams]]` name.
    pub upstream: String,
    /// What went wrong (connect refused, reset, TLS failure...).
    pub message: String,
    #[source]
    source: Option<BoxError>,
}

/// Install the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    // A second install returns Err: that only means it is already there.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Options for one upstream's client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Upstream name (for errors and logs).
    pub name: String,
    /// Time allowed until the response headers.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Extra roots (PEM file).
    pub ca_file: Option<std::path::PathBuf>,
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A pooled client for one upstream. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: HyperClient,
    name: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl UpstreamClient {
    /// Build the client: TLS roots are webpki's, the system's and `ca_file`'s.
    pub fn new(opts: &ClientOptions) -> Result<Self, String> {
        install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = &opts.ca_file {
            for cert in crate::config::upstreams::read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Self {
            inner,
            name: opts.name.as_str().into(),
            timeout: opts.timeout,
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Service<Request<Body>> for UpstreamClient {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool is always ready: connection limits are per host inside hyper-util.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The client span (a child of the retry attempt's span) and its traceparent on the
        // upstream request; the span stays open until the response body ends.
        let attempt = Attempt::start(&self.name, &mut req);
        let span = attempt.span().clone();
        let fut = self.inner.request(req);
        let name = self.name.clone();
        let timeout = self.timeout;
        Box::pin(
            async move {
                let result = match tokio::time::timeout(timeout, fut).await {
                    Err(_) => Err(AttemptError::Timeout(Box::new(UpstreamTimeout {
                        upstream: name.to_string(),
                        timeout,
                    }))),
                    Ok(Err(e)) => Err(AttemptError::Connect(Box::new(connect_error(&name, e)))),
                    Ok(Ok(mut resp)) => {
                        // Nothing an upstream sends may pose as the gateway's own headers.
                        portcullis_core::headers::sanitize_upstream_response(resp.headers_mut());
                        Ok(resp.map(Body::new))
                    }
                };
                attempt.finish(result)
            }
            .instrument(span),
        )
    }
}

fn connect_error(name: &str, e: hyper_util::client::legacy::Error) -> UpstreamConnectError {
    // hyper-util's Display is terse ("client error (Connect)"): include the root cause.
    let mut message = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    UpstreamConnectError {
        upstream: name.to_string(),
        message,
        source: Some(Box::new(e)),
    }
}
