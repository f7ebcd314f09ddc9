//! Per-upstream cookie sessions as a tower layer: every `Set-Cookie` an upstream sends, on
//! any response, failed ones included, goes out again on every later request to it, retries
//! included.
//!
//! # Why
//!
//! A provider behind Cloudflare may answer `503` with an HTML "error code 1200" page and a
//! `cf_clearance` / `__cf_bm` cookie. A proxy that drops that cookie between the failed
//! attempt and its retry never gets through. Stack [`CookieSessionLayer`] *inside* the retry
//! layer so each attempt sees the cookies the previous one received.
//!
//! - One [`CookieJar`] per upstream: cookies never leave the upstream that set them, and
//!   within a jar RFC 6265 domain, path and `Secure` matching applies (`cookie_store`).
//! - [`CookieScope`]: that jar is shared by every caller (`upstream`, what Cloudflare's
//!   clearance needs), or each caller identity ([`portcullis_core::CallerId`]) gets its own
//!   ([`CallerJars`], `caller`): then a session cookie an upstream set for one caller never
//!   goes out on another's request. Per-caller jars are bounded in number (least recently
//!   used evicted).
//! - Session cookies live as long as the process; [`persist`] saves all jars (session
//!   cookies included) to one file atomically (a fresh temp file, created exclusively with
//!   mode 0600, then renamed) and loads them at start.
//! - A jar is bounded ([`CookieJar::with_max_cookies`], 1000 by default): expired cookies
//!   are dropped first, then the oldest.
//! - Logs and `Debug` output show cookie counts, never values.
//!
//! # Example
//!
//! ```
//! use http::{header, Request, Response, StatusCode};
//! use portcullis_cookie_session::{CookieJar, CookieSessionLayer};
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let jar = CookieJar::new();
//! let upstream = service_fn(|req: Request<String>| async move {
//!     let mut res = Response::new(String::new());
//!     if req.headers().get(header::COOKIE).is_none() {
//!         // The bot check: no clearance cookie yet, so 503 and a cookie.
//!         *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!         res.headers_mut().insert(
//!             header::SET_COOKIE,
//!             "cf_clearance=abc; Path=/; Domain=.example.com; HttpOnly; Secure".parse()?,
//!         );
//!     }
//!     Ok::<_, BoxError>(res)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(CookieSessionLayer::new(jar.clone()))
//!     .service(upstream);
//!
//! let req = || Request::post("https://api.example.com/v1/chat/completions").body(String::new());
//! let first = svc.clone().oneshot(req()?).await?;
//! assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(jar.len(), 1);
//!
//! let retry = svc.clone().oneshot(req()?).await?;
//! assert_eq!(retry.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

mod config;
pub mod future;
mod jar;
mod layer;
pub mod persist;
mod scope;
mod service;

pub use config::Config;
pub use jar::{CookieJar, DEFAULT_MAX_COOKIES};
pub use layer::CookieSessionLayer;
pub use persist::PersistError;
pub use scope::{CallerJars, CookieScope, Jars, DEFAULT_MAX_CALLERS};
pub use service::CookieSession;
