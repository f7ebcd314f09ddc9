//! [`Retry`]: the service that makes the attempts.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use portcullis_core::{
    body::collect_limited,
    error::find_in_chain,
    headers::{int_value, X_PORTCULLIS_ATTEMPTS},
    Attempts, CircuitOpen,
};
use tower::{retry::budget::Budget, BoxError, Service, ServiceExt};
use tracing::{instrument::Instrumented, Instrument, Span};

use crate::{
    future::ResponseFuture,
    layer::Shared,
    policy::{self, QUOTA_PEEK_BYTES},
    Config, RetryLayer,
};

/// Retries failed calls to the inner service (see the [crate docs](crate) for the rules).
///
/// Clones share one retry budget (it lives in an `Arc`).
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The error [`Retry`] returns: the last attempt's error, and how many attempts were made.
///
/// It is how a failed request reports its [`Attempts`]: an error has no extensions, so the
/// edge finds this with `find_in_chain::<Attempted>` (or calls [`Attempted::attempts`]).
///
/// Displays as the underlying error; [`std::error::Error::source`] is that error, so
/// `find_in_chain` still finds e.g. a [`CircuitOpen`] inside. `attempts` is `0` only when
/// reading the request body failed before any upstream call.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct Attempted {
    /// Upstream attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    #[source]
    pub source: BoxError,
}

impl<S> Retry<S> {
    /// Wrap `inner` with its own retry budget.
    ///
    /// # Panics
    /// If `config` is invalid, like [`RetryLayer::new`]. To share a budget between
    /// services, build them from one [`RetryLayer`].
    pub fn new(inner: S, config: Config) -> Self {
        Self::from_shared(inner, RetryLayer::new(config).shared)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl Attempted {
    /// The attempts made, as the typed outcome a response would carry.
    pub fn attempts(&self) -> Attempts {
        Attempts(self.attempts)
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The first attempt must use the service that poll_ready readied.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(run(self.shared.clone(), inner, req))
    }
}

/// Why the attempt loop waits and tries again.
enum Again {
    Status(StatusCode),
    Error(BoxError),
}

impl fmt::Display for Again {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Again::Status(s) => write!(f, "status {}", s.as_u16()),
            Again::Error(e) => write!(f, "error: {e}"),
        }
    }
}

// A plain function returning an async block, not an `async fn`: an `async fn` keeps its
// arguments twice in its state (as arguments and as the locals they become), and this state
// is boxed and copied for every request. The request is split before the block for the same
// reason: what a block captures stays in its state to the end, so a request captured whole
// would sit there beside the parts each attempt copies.
#[allow(clippy::manual_async_fn)]
fn run<S, B, RB>(
    shared: Arc<Shared>,
    mut svc: S,
    req: Request<B>,
) -> impl Future<Output = Result<Response<RB>, BoxError>>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + From<Bytes>,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes>,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    async move {
        let config = &shared.config;
        shared.budget.deposit();

        let cap = config.max_replay_body_bytes;
        let replayable =
            config.max_attempts > 1 && body.size_hint().upper().is_some_and(|n| n <= cap as u64);
        if !replayable {
            // A body of unknown or too large size is streamed straight through: buffering it
            // could exhaust memory, and a half-read stream cannot be replayed.
            tracing::debug!(
                max_attempts = config.max_attempts,
                "request body is not replayable; sending once"
            );
            let span = tracing::info_span!("upstream_attempt", attempt = 1u32);
            let result = call_in(span, &mut svc, Request::from_parts(parts, body)).await;
            return match result {
                Ok(resp) => Ok(with_attempts(resp, 1)),
                Err(e) => Err(Attempted {
                    attempts: 1,
                    source: e.into(),
                }
                .into()),
            };
        }

        let body = collect_limited(body, cap).await.map_err(|e| Attempted {
            attempts: 0,
            source: e.into(),
        })?;

        // Every attempt sends a copy of the parts and the body; the first one's service was
        // readied by `poll_ready`, later ones wait for it here. Not in one inner block: that
        // would hold the copy twice (captured, and in the call).
        let mut attempt = 1u32;
        loop {
            let last = attempt >= config.max_attempts;
            let span = tracing::info_span!("upstream_attempt", attempt);
            let ready = match attempt {
                1 => Ok(()),
                _ => (svc.ready().instrument(span.clone()).await)
                    .map(drop)
                    .map_err(Into::into),
            };
            let result = match ready {
                Ok(()) => {
                    let req = Request::from_parts(parts.clone(), B::from(body.clone()));
                    call_in(span, &mut svc, req).await.map_err(Into::into)
                }
                Err(e) => Err(e),
            };

            let (wait, why) = match result {
                Ok(resp) => match judge(&shared, resp, attempt) {
                    Verdict::Keep(resp) => return Ok(with_attempts(resp, attempt)),
                    Verdict::Retry(wait, why) => (wait, why),
                    // Boxed: reading a 429's body is the rare path, and its future would
                    // otherwise sit in every request's.
                    Verdict::PeekQuota(resp, wait) => {
                        match Box::pin(peek_quota(resp, wait, attempt)).await {
                            Ok(resp) => return Ok(with_attempts(resp, attempt)),
                            Err(retry) => retry,
                        }
                    }
                },
                Err(err) => {
                    if find_in_chain::<CircuitOpen>(&*err).is_some() {
                        // An open breaker will not close within our backoff; hand the error up
                        // at once so the router can fail over to a fallback model.
                        tracing::debug!(attempt, "circuit open; not retrying");
                        return Err(Attempted {
                            attempts: attempt,
                            source: err,
                        }
                        .into());
                    }
                    if last {
                        return Err(Attempted {
                            attempts: attempt,
                            source: err,
                        }
                        .into());
                    }
                    if !shared.budget.withdraw() {
                        tracing::info!(attempt, error = %err, "retry budget exhausted; not retrying");
                        return Err(Attempted {
                            attempts: attempt,
                            source: err,
                        }
                        .into());
                    }
                    (policy::backoff(config, attempt), Again::Error(err))
                }
            };

            tracing::info!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason = %why,
                "retrying upstream request"
            );
            // Nothing of the failed attempt (body, connection, error) is held across the wait.
            drop(why);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// `svc.call(req)` in the attempt's span: what the call starts (the client span) is the
/// attempt's child, and the call's future runs in the span.
fn call_in<S: Service<R>, R>(span: Span, svc: &mut S, req: R) -> Instrumented<S::Future> {
    let call = span.in_scope(|| svc.call(req));
    call.instrument(span)
}

/// What an attempt's answer calls for.
enum Verdict<RB> {
    /// Return it.
    Keep(Response<RB>),
    /// Drop it and wait this long before the next attempt.
    Retry(Duration, Again),
    /// A 429 to retry after the wait, unless its body says it is billing, not load
    /// ([`peek_quota`]).
    PeekQuota(Response<RB>, Duration),
}

/// Judge an attempt's answer by its head (see [`Verdict`]).
fn judge<RB>(shared: &Shared, resp: Response<RB>, attempt: u32) -> Verdict<RB> {
    let config = &shared.config;
    let status = resp.status();
    if !policy::status_is_retryable(config, status, resp.headers()) {
        return Verdict::Keep(resp);
    }
    if attempt >= config.max_attempts {
        return Verdict::Keep(resp);
    }
    let asked = if config.respect_retry_after {
        policy::parse_retry_after(resp.headers(), SystemTime::now())
    } else {
        None
    };
    if let Some(wait) = asked {
        if wait > config.max_retry_after {
            // The caller is better served by the upstream's own answer (and its Retry-After)
            // than by a gateway that hangs for minutes.
            tracing::info!(
                attempt,
                status = status.as_u16(),
                retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retry-after beyond max_retry_after; returning the response"
            );
            return Verdict::Keep(resp);
        }
    }
    // The budget is asked before a 429 body is read: once a retry is granted, a body too
    // large or too broken to inspect is simply dropped, so no response is ever returned
    // with a half-read body.
    if !shared.budget.withdraw() {
        tracing::info!(
            attempt,
            status = status.as_u16(),
            "retry budget exhausted; not retrying"
        );
        return Verdict::Keep(resp);
    }
    let wait = asked.unwrap_or_else(|| policy::backoff(config, attempt));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Verdict::PeekQuota(resp, wait);
    }
    Verdict::Retry(wait, Again::Status(status))
}

/// A 429 whose body says `insufficient_quota` is billing, not load: returned (its body
/// rebuilt from what was read). Any other is retried after `wait`.
async fn peek_quota<RB>(
    resp: Response<RB>,
    wait: Duration,
    attempt: u32,
) -> Result<Response<RB>, (Duration, Again)>
where
    RB: Body<Data = Bytes> + From<Bytes>,
    RB::Error: Into<BoxError>,
{
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    if let Ok(bytes) = collect_limited(body, QUOTA_PEEK_BYTES).await {
        if policy::is_insufficient_quota(&bytes) {
            tracing::info!(
                attempt,
                "429 insufficient_quota is billing, not load; not retrying"
            );
            return Ok(Response::from_parts(parts, RB::from(bytes)));
        }
    }
    Err((wait, Again::Status(status)))
}

fn with_attempts<RB>(mut resp: Response<RB>, attempts: u32) -> Response<RB> {
    resp.headers_mut()
        .insert(X_PORTCULLIS_ATTEMPTS, int_value(attempts));
    resp.extensions_mut().insert(Attempts(attempts));
    resp
}
