//! [`AuditSlot`] and [`AuditRecordLayer`]: request facts that layers inside the audit layer
//! learn (the key name, the memory user id, the model asked), carried back to its line.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{Extensions, Request};
use portcullis_core::{RequestMeta, UserId};
use tower::{Layer, Service};

use crate::KeyName;

/// A request extension the audit layer inserts: the layers inside it fill it in (with
/// [`AuditRecordLayer`]) so the audit line knows what only they learn. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Recorded>>);

/// What was recorded of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    pub(crate) key: Option<Arc<str>>,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) model: Option<Arc<str>>,
}

impl AuditSlot {
    /// Record the [`KeyName`], [`UserId`] and [`RequestMeta`] model found in `extensions`
    /// (each only if present: what was recorded earlier is kept otherwise).
    pub fn record(&self, extensions: &Extensions) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = extensions.get::<KeyName>() {
            r.key = Some(k.0.clone());
        }
        if let Some(u) = extensions.get::<UserId>() {
            r.user_id = Some(u.0.clone());
        }
        if let Some(m) = extensions
            .get::<RequestMeta>()
            .and_then(|m| m.model.clone())
        {
            r.model = Some(m);
        }
    }

    pub(crate) fn get(&self) -> Recorded {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Copies the [`KeyName`], [`UserId`] and [`RequestMeta`] extensions of each request into the
/// audit layer's [`AuditSlot`]. Stack it **inside** the layers that insert them (after the
/// key auth, validation and memory routing), while the audit layer itself sits outside, by
/// the access log: the audit line then has the key, user and model even for requests the
/// layers in between refused. Without an [`AuditSlot`] (no audit layer outside) it does
/// nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditRecordLayer;

impl<S> Layer<S> for AuditRecordLayer {
    type Service = AuditRecord<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditRecord { inner }
    }
}

/// See [`AuditRecordLayer`].
#[derive(Debug, Clone)]
pub struct AuditRecord<S> {
    inner: S,
}

impl<S> AuditRecord<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for AuditRecord<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(slot) = req.extensions().get::<AuditSlot>() {
            slot.record(req.extensions());
        }
        self.inner.call(req)
    }
}
