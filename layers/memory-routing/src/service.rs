//! [`MemoryRouting`]: the service that stamps each request with its memory user id.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::Request;
use portcullis_core::{headers::is_sensitive, BoundUserId};
use tower::Service;

use crate::{Decision, MemoryRouter};

/// Decides each request's memory user id (a [`BoundUserId`] extension, set by the gateway for
/// a key with a `user_id`, wins), sets it in the upstream header, removes the client header,
/// and inserts the [`Decision`] and a [`portcullis_core::UserId`] as request
/// extensions. Built by [`MemoryRoutingLayer`](crate::MemoryRoutingLayer).
///
/// Works on any `http::Request<B>` and never reads the body. It adds no failure mode and no
/// await point, so errors and the future are the inner service's own.
#[derive(Debug, Clone)]
pub struct MemoryRouting<S> {
    inner: S,
    router: Arc<MemoryRouter>,
}

impl<S> MemoryRouting<S> {
    /// Wrap `inner`, deciding with `router` (shared, not copied).
    pub fn new(inner: S, router: Arc<MemoryRouter>) -> Self {
        Self { inner, router }
    }

    portcullis_core::define_inner_service_accessors!();

    /// The shared router.
    pub fn router(&self) -> &Arc<MemoryRouter> {
        &self.router
    }
}

impl<S, B> Service<Request<B>> for MemoryRouting<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let decision = self
            .router
            .decide_for(req.headers(), req.extensions().get::<BoundUserId>());
        log_decision(&self.router, &decision, &req);
        // The key made at compile time: no label vector or hashing per request.
        portcullis_core::counter::increment(decision.source_and_key().1);
        self.router.apply(&decision, req.headers_mut());
        let ext = req.extensions_mut();
        ext.insert(decision.user_id());
        ext.insert(decision);
        self.inner.call(req)
    }
}

fn log_decision<B>(router: &MemoryRouter, d: &Decision, req: &Request<B>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    if d.is_default && !router.config().patterns.is_empty() {
        // "Why did I get the default id?" is the question users ask: show what the patterns
        // saw, except headers holding secrets.
        let seen: Vec<String> = router
            .pattern_headers()
            .map(|h| {
                if is_sensitive(h) {
                    format!("{h}=<redacted>")
                } else {
                    let vals: Vec<_> = req
                        .headers()
                        .get_all(h)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    format!("{h}={vals:?}")
                }
            })
            .collect();
        tracing::debug!(
            user_id = %d.user_id,
            source = d.source(),
            headers = %seen.join(" "),
            "memory routing: no pattern matched, using the default user id"
        );
    } else {
        tracing::debug!(
            user_id = %d.user_id,
            source = d.source(),
            pattern_index = d.pattern_index,
            "memory routing decision"
        );
    }
}
