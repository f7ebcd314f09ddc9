//! [`CookieSessionLayer`]: wraps a service in a [`CookieSession`].

use tower::Layer;

use crate::{CookieSession, Jars};

/// Wraps services in a [`CookieSession`] backed by one upstream's [`Jars`]: one
/// [`CookieJar`](crate::CookieJar) for every caller, or one per caller
/// ([`CallerJars`](crate::CallerJars)).
///
/// The jars are shared, not copied: every clone of this layer and every service it makes
/// read and write the same cookies. Build one layer (and one set of jars) per upstream.
#[derive(Clone, Debug)]
pub struct CookieSessionLayer {
    jars: Jars,
}

impl CookieSessionLayer {
    /// A layer that keeps the session in `jars` (a [`CookieJar`](crate::CookieJar) or
    /// [`CallerJars`](crate::CallerJars)).
    pub fn new(jars: impl Into<Jars>) -> Self {
        Self { jars: jars.into() }
    }

    /// The jars (a handle sharing their contents).
    pub fn jars(&self) -> &Jars {
        &self.jars
    }
}

impl<S> Layer<S> for CookieSessionLayer {
    type Service = CookieSession<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CookieSession::new(inner, self.jars.clone())
    }
}
