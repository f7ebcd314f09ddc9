//! [`LoopDetection`]: the service that watches answers.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{BoxError, Service};

use crate::{
    future::ResponseFuture, layer::Shared, Api, Config, LoopDetectionBody, LoopDetectionLayer,
    LoopDetectionOff,
};

/// Watches the answers of the inner service for text that repeats itself (see the
/// [crate docs](crate)).
///
/// Clones share the settings (an `Arc`); every answer is watched on its own.
#[derive(Clone)]
pub struct LoopDetection<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> LoopDetection<S> {
    /// Wrap `inner` with the settings of `config` (clamped where out of range, see
    /// [`LoopDetectionLayer::new`]).
    pub fn new(inner: S, config: Config) -> Self {
        Self::from_shared(inner, LoopDetectionLayer::new(config).shared)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for LoopDetection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopDetection")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for LoopDetection<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<LoopDetectionBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let api = if req.extensions().get::<LoopDetectionOff>().is_some() {
            None
        } else {
            Api::from_path(req.uri().path())
        };
        let watch = api.map(|api| (api, self.shared.clone()));
        ResponseFuture::new(self.inner.call(req), watch)
    }
}
