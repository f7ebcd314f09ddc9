//! [`Audit`]: the service that audits each request.

use std::{
    fmt,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use http::{Request, Response};
use http_body::Body;
use portcullis_core::headers::X_REQUEST_ID;
use tower::Service;

use crate::{
    body::{AuditRequestBody, Capture},
    future::ResponseFuture,
    layer::Shared,
    line::{header_id, Started},
    AuditBody, AuditSlot,
};

/// Audits each request of the inner service (see the [crate docs](crate)).
///
/// Clones share the writer and usage table (an `Arc`).
#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Audit<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Audit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Audit<S>
where
    S: Service<Request<AuditRequestBody<ReqB>>, Response = Response<ResB>>,
    ResB: Body,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let slot = AuditSlot::default();
        // Facts already known (the layer used alone, or stacked inside the layers that
        // insert them); `AuditRecordLayer` adds the ones learnt further in.
        slot.record(&parts.extensions);
        parts.extensions.insert(slot.clone());
        let request_body = self
            .shared
            .include_bodies
            .then(|| Arc::new(Mutex::new(Capture::new(self.shared.max_body_bytes))));
        let started = Started {
            time: SystemTime::now(),
            start: Instant::now(),
            method: parts.method.clone(),
            // The path only: a query string may carry a key (`?key=` of some providers).
            path: parts.uri.path().into(),
            request_id: header_id(&parts.headers, &X_REQUEST_ID),
            session: header_id(&parts.headers, &portcullis_core::identity::X_SESSION_ID),
            slot,
            request_body: request_body.clone(),
            shared: self.shared.clone(),
            // An outer observer (the gateway's access log) reads the usage scanned here.
            usage_share: parts
                .extensions
                .get::<portcullis_core::usage::UsageShare>()
                .inspect(|s| s.claim())
                .cloned(),
        };
        let req = Request::from_parts(parts, AuditRequestBody::new(body, request_body));
        ResponseFuture::new(self.inner.call(req), started)
    }
}
