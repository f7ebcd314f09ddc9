//! The future returned by [`Retry`](crate::Retry).

/// Response future of [`Retry`](crate::Retry): resolves to the first response that is not
/// retried, or to an [`Attempted`](crate::Attempted) error.
///
/// Boxed: an attempt loop that buffers bodies and sleeps between attempts is clearer as
/// `async` code than as a hand-written state machine.
pub type ResponseFuture<RB> = portcullis_core::future::BoxResponseFuture<RB>;
