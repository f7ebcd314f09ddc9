//! Macros for writing layers.

/// Define `get_ref`, `get_mut` and `into_inner` for a service struct whose wrapped service
/// is the field `inner` of the type parameter `S` (or the one named), as tower-http does.
///
/// Use it inside the struct's inherent `impl` block:
///
/// ```
/// pub struct Logged<S> {
///     inner: S,
///     label: &'static str,
/// }
///
/// impl<S> Logged<S> {
///     portcullis_core::define_inner_service_accessors!();
/// }
///
/// let mut svc = Logged { inner: 1u8, label: "x" };
/// *svc.get_mut() += 1;
/// assert_eq!(*svc.get_ref(), 2);
/// assert_eq!(svc.into_inner(), 2);
/// ```
#[macro_export]
macro_rules! define_inner_service_accessors {
    () => {
        $crate::define_inner_service_accessors!(S);
    };
    ($svc:ident) => {
        /// The inner service.
        pub fn get_ref(&self) -> &$svc {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut $svc {
            &mut self.inner
        }

        /// Unwrap the inner service.
        pub fn into_inner(self) -> $svc {
            self.inner
        }
    };
}

/// Whether the bytes `$haystack` hold the literal `$needle`, with a substring searcher
/// (`memchr::memmem::Finder`) built once per call site: a layer searches every answer or SSE
/// line for its markers, and building a searcher costs more than a search with it.
///
/// ```
/// let line = br#"data: {"choices":[{"delta":{"tool_calls":[]}}]}"#;
/// assert!(portcullis_core::holds!(line, b"\"tool_calls\""));
/// assert!(!portcullis_core::holds!(line, b"\"usage\""));
/// ```
#[macro_export]
macro_rules! holds {
    ($haystack:expr, $needle:literal) => {{
        static FINDER: ::std::sync::LazyLock<$crate::__memchr::memmem::Finder<'static>> =
            ::std::sync::LazyLock::new(|| $crate::__memchr::memmem::Finder::new($needle));
        FINDER.find($haystack).is_some()
    }};
}
