//! [`ClientRequest`]: tells the attempts of one client request apart from separate requests.

use std::fmt;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use http::Request;

/// One client request, shared by every upstream attempt made for it.
///
/// Insert it into the request's extensions *outside* the retry layer (the gateway does so at
/// its edge with [`ClientRequest::mark`]). A retry layer clones the request's extensions into
/// each attempt, so every attempt carries a clone of the same `ClientRequest`, and the
/// breaker counts the request once however many attempts it took: an upstream that answered
/// 503 to two requests retried three times each has failed two requests, not six.
///
/// A request without one (the breaker used on its own, without retry) counts as a request of
/// its own, which is what it is there.
///
/// # Why a shared token and not a request id
///
/// `x-request-id` comes from the client, who could make unrelated requests look like one; a
/// token minted by the gateway cannot be forged, and the per-breaker marks it holds live
/// exactly as long as the request, so the breaker keeps no map that needs evicting.
#[derive(Clone, Default)]
pub struct ClientRequest(Arc<Marks>);

#[derive(Default)]
struct Marks {
    /// Per breaker that counted this request: (breaker id, breaker epoch, failed).
    marks: Mutex<Vec<(u64, u64, bool)>>,
}

impl ClientRequest {
    /// A new client request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give `req` a `ClientRequest` unless it has one: use as
    /// `ServiceBuilder::new().map_request(ClientRequest::mark)` outside the retry layer.
    pub fn mark<B>(mut req: Request<B>) -> Request<B> {
        if req.extensions().get::<Self>().is_none() {
            req.extensions_mut().insert(Self::new());
        }
        req
    }

    /// Whether `self` and `other` stand for the same client request.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Record this request's latest outcome at breaker `breaker` in phase `epoch`; returns the
    /// outcome (`failed`) recorded before in that same phase, if any.
    pub(crate) fn swap_mark(&self, breaker: u64, epoch: u64, failed: bool) -> Option<bool> {
        let mut marks = self.0.marks.lock().unwrap_or_else(|e| e.into_inner());
        match marks.iter_mut().find(|(id, _, _)| *id == breaker) {
            Some(mark) => {
                let prior = (mark.1 == epoch).then_some(mark.2);
                *mark = (breaker, epoch, failed);
                prior
            }
            None => {
                marks.push((breaker, epoch, failed));
                None
            }
        }
    }
}

impl fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientRequest")
            .field(&Arc::as_ptr(&self.0))
            .finish()
    }
}

/// A process-unique id for each breaker, so one request's marks at several breakers (a
/// fallback to another upstream) stay apart.
pub(crate) fn next_breaker_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
