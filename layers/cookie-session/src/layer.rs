//! [`CookieSessionLayer`]: wraps a service in a [`CookieSession`].

use tower::Layer;

use crate::{CookieJar, CookieSession};

/// Wraps services in a [`CookieSession`] backed by one [`CookieJar`].
///
/// The jar is shared, not copied: every clone of this layer and every service it makes
/// read and write the same cookies. Build one layer (and one jar) per upstream.
#[derive(Clone, Debug)]
pub struct CookieSessionLayer {
    jar: CookieJar,
}

impl CookieSessionLayer {
    /// A layer that keeps the session in `jar`.
    pub fn new(jar: CookieJar) -> Self {
        Self { jar }
    }

    /// The jar (a handle sharing its contents).
    pub fn jar(&self) -> &CookieJar {
        &self.jar
    }
}

impl<S> Layer<S> for CookieSessionLayer {
    type Service = CookieSession<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CookieSession::new(inner, self.jar.clone())
    }
}
