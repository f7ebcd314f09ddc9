//! The response future of [`DedupCache`](crate::DedupCache).

/// Response future of [`DedupCache`](crate::DedupCache).
///
/// Boxed: the request path reads the body, awaits the cache and the in-flight map, and may
/// spawn the shared call. Dropping it does not cancel a shared call that other requests are
/// waiting on.
pub type ResponseFuture<RB> = portcullis_core::future::BoxResponseFuture<RB>;
