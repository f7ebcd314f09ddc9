//! [`CookieJar`]: one upstream's cookies, RFC 6265 matching, bounded size.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cookie_store::{Cookie, CookieError, CookieStore, StoreAction};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::persist::PersistError;

/// How many cookies a jar holds unless told otherwise.
pub const DEFAULT_MAX_COOKIES: usize = 1000;

/// (domain, path, name): how `cookie_store` files a cookie, and so how we find it again.
type Key = (String, String, String);

fn key_of(cookie: &Cookie<'_>) -> Key {
    (
        String::from(&cookie.domain),
        String::from(&cookie.path),
        cookie.name().to_owned(),
    )
}

/// The cookies one upstream has set, matched to requests by RFC 6265 domain, path and
/// `Secure` rules (via `cookie_store`).
///
/// A `CookieJar` is a cheap handle: clones share one store behind an `Arc<RwLock<..>>`, so the
/// layer, the health endpoint and the persistence task all see the same cookies. Give each
/// upstream its own jar: cookies never leave the upstream that set them.
///
/// Session cookies (no `Expires`/`Max-Age`) live as long as the jar. The jar holds at most
/// `max_cookies`; past that it drops expired cookies first, then the ones set longest ago.
///
/// `Debug` prints counts only: cookie values are secrets.
#[derive(Clone)]
pub struct CookieJar {
    inner: Arc<RwLock<Inner>>,
}

struct Inner {
    store: CookieStore,
    /// When each cookie was last set (a sequence number), for "evict the oldest".
    /// `cookie_store` keeps no timestamps of its own.
    set_at: HashMap<Key, u64>,
    next_seq: u64,
    max_cookies: usize,
    generation: u64,
}

impl Inner {
    fn touch(&mut self, key: Key) {
        self.set_at.insert(key, self.next_seq);
        self.next_seq += 1;
    }

    fn remove(&mut self, key: &Key) {
        self.store.remove(&key.0, &key.1, &key.2);
        self.set_at.remove(key);
    }

    /// Enforce `max_cookies`; returns how many cookies were dropped.
    fn enforce_bound(&mut self) -> usize {
        let total = self.store.iter_any().count();
        if total <= self.max_cookies {
            return 0;
        }
        let expired: Vec<Key> = self
            .store
            .iter_any()
            .filter(|c| c.is_expired())
            .map(key_of)
            .collect();
        let mut dropped = expired.len();
        for key in &expired {
            self.remove(key);
        }
        let total = total - dropped;
        if total > self.max_cookies {
            let mut by_age: Vec<(u64, Key)> = self
                .store
                .iter_any()
                .map(|c| {
                    let key = key_of(c);
                    (self.set_at.get(&key).copied().unwrap_or(0), key)
                })
                .collect();
            by_age.sort_unstable();
            let excess = total - self.max_cookies;
            for (_, key) in by_age.into_iter().take(excess) {
                self.remove(&key);
            }
            dropped += excess;
        }
        dropped
    }

    fn unexpired(&self) -> usize {
        self.store.iter_unexpired().count()
    }

    /// Unexpired cookies, oldest first, so a reload keeps the eviction order.
    fn snapshot(&self) -> Vec<Cookie<'static>> {
        let mut cookies: Vec<(u64, &Cookie<'static>)> = self
            .store
            .iter_unexpired()
            .map(|c| (self.set_at.get(&key_of(c)).copied().unwrap_or(0), c))
            .collect();
        cookies.sort_by_key(|(seq, _)| *seq);
        cookies.into_iter().map(|(_, c)| c.clone()).collect()
    }
}

impl Default for CookieJar {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.read();
        f.debug_struct("CookieJar")
            .field("cookies", &inner.unexpired())
            .field("max_cookies", &inner.max_cookies)
            .finish()
    }
}

impl CookieJar {
    /// An empty jar holding at most [`DEFAULT_MAX_COOKIES`].
    pub fn new() -> Self {
        Self::with_max_cookies(DEFAULT_MAX_COOKIES)
    }

    /// An empty jar holding at most `max_cookies`.
    pub fn with_max_cookies(max_cookies: usize) -> Self {
        Self::from_cookies(Vec::new(), max_cookies)
    }

    fn from_cookies(cookies: Vec<Cookie<'static>>, max_cookies: usize) -> Self {
        let mut inner = Inner {
            store: CookieStore::default(),
            set_at: HashMap::new(),
            next_seq: 0,
            max_cookies,
            generation: 0,
        };
        let keys: Vec<Key> = cookies
            .iter()
            .filter(|c| !c.is_expired())
            .map(key_of)
            .collect();
        let loaded = CookieStore::from_cookies(
            cookies.into_iter().map(Ok::<_, std::convert::Infallible>),
            false,
        );
        inner.store = match loaded {
            Ok(store) => store,
            Err(never) => match never {},
        };
        for key in keys {
            inner.touch(key);
        }
        inner.enforce_bound();
        Self {
            inner: Arc::new(RwLock::new(inner)),
        }
    }

    // A panic elsewhere while holding the lock cannot leave the store half-updated in a way
    // that matters more than losing the jar, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The bound on the number of cookies.
    pub fn max_cookies(&self) -> usize {
        self.read().max_cookies
    }

    /// Change the bound (e.g. on jars returned by [`persist::load_all`](crate::persist::load_all)),
    /// evicting at once if the jar is over it.
    pub fn set_max_cookies(&self, max_cookies: usize) {
        let mut inner = self.write();
        inner.max_cookies = max_cookies;
        if inner.enforce_bound() > 0 {
            inner.generation += 1;
        }
    }

    /// Number of unexpired cookies (for `/health/upstreams` and logs).
    pub fn len(&self) -> usize {
        self.read().unexpired()
    }

    /// Whether the jar holds any cookie, expired ones included (cheap: no URL, no count).
    pub fn holds_any(&self) -> bool {
        self.read().store.iter_any().next().is_some()
    }

    /// No unexpired cookies.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A counter that moves whenever the jar's contents change (to save only when needed).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The `Cookie` header value to send to `url`: every unexpired cookie whose domain, path
    /// and `Secure` flag match it, longest path first. `None` if nothing matches.
    pub fn cookie_header_for(&self, url: &Url) -> Option<HeaderValue> {
        self.request_cookies(url).map(|(value, _)| value)
    }

    /// Like [`cookie_header_for`](Self::cookie_header_for), also counting the cookies.
    pub(crate) fn request_cookies(&self, url: &Url) -> Option<(HeaderValue, usize)> {
        let inner = self.read();
        let mut matches = inner.store.matches(url);
        if matches.is_empty() {
            return None;
        }
        // RFC 6265 5.4: longer paths first; the name breaks ties so the order is stable.
        matches.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.name().cmp(b.name()))
        });
        let mut header = String::new();
        for cookie in &matches {
            if !header.is_empty() {
                header.push_str("; ");
            }
            header.push_str(cookie.name());
            header.push('=');
            header.push_str(cookie.value());
        }
        match HeaderValue::from_str(&header) {
            Ok(value) => Some((value, matches.len())),
            Err(_) => {
                tracing::debug!(
                    host = url.host_str(),
                    "jar cookies do not form a valid header; not sent"
                );
                None
            }
        }
    }

    /// Store every `Set-Cookie` of a response received from `url`, whatever its status.
    /// Invalid ones (unparsable, wrong domain, non-ASCII) are skipped with a debug log that
    /// never shows a value. A cookie that arrives already expired deletes its namesake.
    /// Returns how many cookies were stored or deleted.
    pub fn store_response_cookies(&self, url: &Url, headers: &HeaderMap) -> usize {
        let mut values = headers.get_all(SET_COOKIE).iter().peekable();
        if values.peek().is_none() {
            return 0;
        }
        let host = url.host_str();
        let mut inner = self.write();
        let mut changed = 0;
        for value in values {
            let Ok(text) = value.to_str() else {
                tracing::debug!(
                    host,
                    "ignoring a Set-Cookie header that is not visible ASCII"
                );
                continue;
            };
            let cookie = match Cookie::parse(text, url) {
                Ok(cookie) => cookie.into_owned(),
                Err(error) => {
                    tracing::debug!(host, %error, "ignoring an invalid Set-Cookie header");
                    continue;
                }
            };
            let key = key_of(&cookie);
            match inner.store.insert(cookie, url) {
                Ok(StoreAction::Inserted | StoreAction::UpdatedExisting) => {
                    inner.touch(key);
                    changed += 1;
                }
                Ok(StoreAction::ExpiredExisting) => {
                    inner.remove(&key);
                    changed += 1;
                }
                // An expired cookie for a name we do not have: nothing to delete.
                Err(CookieError::Expired) => {}
                Err(error) => {
                    tracing::debug!(host, name = %key.2, %error, "ignoring a Set-Cookie header");
                }
            }
        }
        if changed > 0 {
            let evicted = inner.enforce_bound();
            inner.generation += 1;
            tracing::debug!(
                host,
                changed,
                evicted,
                cookies = inner.unexpired(),
                "cookie jar updated"
            );
        }
        changed
    }

    /// Drop every cookie.
    pub fn clear(&self) {
        let mut inner = self.write();
        inner.store.clear();
        inner.set_at.clear();
        inner.generation += 1;
    }

    /// The unexpired cookies, session cookies included, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Cookie<'static>> {
        self.read().snapshot()
    }

    pub(crate) fn from_snapshot(cookies: Vec<Cookie<'static>>) -> Self {
        // The default bound; the loader's caller sets its own with `set_max_cookies`.
        Self::from_cookies(cookies, DEFAULT_MAX_COOKIES)
    }

    /// Write the unexpired cookies, session cookies included (unlike `cookie_store`'s
    /// `save_json`), as a JSON array, oldest first.
    pub fn save_json<W: Write>(&self, writer: W) -> Result<(), PersistError> {
        serde_json::to_writer_pretty(writer, &self.snapshot()).map_err(PersistError::encode)
    }

    /// Read a jar written by [`save_json`](Self::save_json), dropping cookies that have
    /// expired since. The jar gets the default bound; see [`set_max_cookies`](Self::set_max_cookies).
    pub fn load_json<R: Read>(reader: R) -> Result<Self, PersistError> {
        let cookies: Vec<Cookie<'static>> =
            serde_json::from_reader(reader).map_err(|e| PersistError::decode(None, &e))?;
        Ok(Self::from_snapshot(cookies))
    }
}
