//! Whose cookies a jar holds: [`CookieScope`], [`CallerJars`] (one jar per caller) and
//! [`Jars`] (what a [`CookieSession`](crate::CookieSession) keeps its cookies in).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cookie_store::Cookie;
use portcullis_core::CallerId;
use serde::{Deserialize, Serialize};

use crate::CookieJar;

/// How many callers' jars one upstream keeps unless told otherwise.
pub const DEFAULT_MAX_CALLERS: usize = 1000;

/// Whose cookies an upstream's jar holds (`upstreams[].cookie_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieScope {
    /// One jar shared by every caller: what Cloudflare's clearance needs (one client, the
    /// gateway, passed the challenge). A session cookie the upstream sets for one caller goes
    /// out on every caller's requests.
    #[default]
    Upstream,
    /// One jar per caller identity ([`CallerId`]): an upstream's session cookies stay with
    /// the caller they were set for.
    Caller,
}

impl CookieScope {
    /// `upstream` or `caller`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Caller => "caller",
        }
    }
}

/// One upstream's jars, one per caller identity ([`CallerId`]), for `cookie_scope = "caller"`.
///
/// At most `max_callers` jars are kept; making one more evicts the jar used least recently
/// (its cookies are forgotten). Each jar holds at most `max_cookies`. Clones share the jars.
/// `Debug` prints counts only.
#[derive(Clone)]
pub struct CallerJars {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    jars: HashMap<CallerId, Slot>,
    max_callers: usize,
    max_cookies: usize,
    next_use: u64,
    /// Moves when a jar is added or evicted; an evicted jar's own generation is added too,
    /// so [`CallerJars::generation`] (this plus every jar's generation) never moves back.
    generation: u64,
}

struct Slot {
    jar: CookieJar,
    last_used: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }

    /// Evict least recently used jars until at most `max_callers - room` remain.
    fn make_room(&mut self, room: usize) {
        let keep = self.max_callers.saturating_sub(room);
        while self.jars.len() > keep {
            let Some(oldest) = self
                .jars
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            let gone = self.jars.remove(&oldest).map_or(0, |s| s.jar.generation());
            self.generation = self.generation.wrapping_add(gone).wrapping_add(1);
            tracing::debug!(
                callers = self.jars.len(),
                "evicted the least recently used caller's cookie jar"
            );
        }
    }
}

impl fmt::Debug for CallerJars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("CallerJars")
            .field("callers", &inner.jars.len())
            .field("max_callers", &inner.max_callers)
            .field("max_cookies", &inner.max_cookies)
            .finish()
    }
}

impl Default for CallerJars {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CALLERS, crate::DEFAULT_MAX_COOKIES)
    }
}

impl CallerJars {
    /// No jars yet; at most `max_callers` jars (at least 1) of at most `max_cookies` each.
    pub fn new(max_callers: usize, max_cookies: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                jars: HashMap::new(),
                max_callers: max_callers.max(1),
                max_cookies,
                next_use: 0,
                generation: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The jar of `caller`, made (evicting the least recently used if full) if it has none.
    pub fn jar_for(&self, caller: CallerId) -> CookieJar {
        let mut inner = self.lock();
        let now = inner.tick();
        if let Some(slot) = inner.jars.get_mut(&caller) {
            slot.last_used = now;
            return slot.jar.clone();
        }
        inner.make_room(1);
        let jar = CookieJar::with_max_cookies(inner.max_cookies);
        inner.jars.insert(
            caller,
            Slot {
                jar: jar.clone(),
                last_used: now,
            },
        );
        inner.generation += 1;
        jar
    }

    /// The jar of `caller` if it has one (does not count as a use).
    pub fn get(&self, caller: &CallerId) -> Option<CookieJar> {
        self.lock().jars.get(caller).map(|s| s.jar.clone())
    }

    /// Number of callers with a jar.
    pub fn callers(&self) -> usize {
        self.lock().jars.len()
    }

    /// Unexpired cookies over all callers' jars (for `/health/upstreams`).
    pub fn len(&self) -> usize {
        self.jars().iter().map(|(_, j)| j.len()).sum()
    }

    /// No unexpired cookies in any caller's jar.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on the number of jars.
    pub fn max_callers(&self) -> usize {
        self.lock().max_callers
    }

    /// Change the bounds (e.g. on jars loaded from a file), evicting at once if over them.
    pub fn set_limits(&self, max_callers: usize, max_cookies: usize) {
        let mut inner = self.lock();
        inner.max_callers = max_callers.max(1);
        inner.max_cookies = max_cookies;
        inner.make_room(0);
        for slot in inner.jars.values() {
            slot.jar.set_max_cookies(max_cookies);
        }
    }

    /// A counter that moves whenever any jar is added, evicted or changed.
    pub fn generation(&self) -> u64 {
        let inner = self.lock();
        inner
            .jars
            .values()
            .fold(inner.generation, |g, s| g.wrapping_add(s.jar.generation()))
    }

    /// Drop every caller's jar.
    pub fn clear(&self) {
        let mut inner = self.lock();
        let gone = inner
            .jars
            .values()
            .fold(0u64, |g, s| g.wrapping_add(s.jar.generation()));
        inner.jars.clear();
        inner.generation = inner.generation.wrapping_add(gone).wrapping_add(1);
    }

    /// The jars, least recently used first.
    pub(crate) fn jars(&self) -> Vec<(CallerId, CookieJar)> {
        let inner = self.lock();
        let mut jars: Vec<(u64, CallerId, CookieJar)> = inner
            .jars
            .iter()
            .map(|(id, s)| (s.last_used, *id, s.jar.clone()))
            .collect();
        jars.sort_by_key(|(used, _, _)| *used);
        jars.into_iter().map(|(_, id, jar)| (id, jar)).collect()
    }

    /// Jars from a file, least recently used first.
    pub(crate) fn from_snapshot(jars: Vec<(CallerId, Vec<Cookie<'static>>)>) -> Self {
        let this = Self::default();
        {
            let mut inner = this.lock();
            for (id, cookies) in jars {
                let now = inner.tick();
                inner.jars.insert(
                    id,
                    Slot {
                        jar: CookieJar::from_snapshot(cookies),
                        last_used: now,
                    },
                );
            }
            inner.make_room(0);
        }
        this
    }
}

/// Where a [`CookieSession`](crate::CookieSession) keeps its cookies: one jar for everyone
/// (`cookie_scope = "upstream"`) or one per caller (`"caller"`). Clones share the jars.
#[derive(Clone, Debug)]
pub enum Jars {
    /// One jar shared by every caller.
    Upstream(CookieJar),
    /// One jar per caller identity.
    Caller(CallerJars),
}

impl From<CookieJar> for Jars {
    fn from(jar: CookieJar) -> Self {
        Self::Upstream(jar)
    }
}

impl From<CallerJars> for Jars {
    fn from(jars: CallerJars) -> Self {
        Self::Caller(jars)
    }
}

impl Jars {
    /// Empty jars of `scope`, bounded by `config` (`max_cookies`, `max_callers`).
    pub fn new(scope: CookieScope, config: &crate::Config) -> Self {
        match scope {
            CookieScope::Upstream => Self::Upstream(config.new_jar()),
            CookieScope::Caller => {
                Self::Caller(CallerJars::new(config.max_callers, config.max_cookies))
            }
        }
    }

    /// The jars an upstream of `scope` starts with: `loaded` (from [`persist::load`], for this
    /// upstream) bounded by `config`, or empty jars when nothing was saved. Jars saved under
    /// the other scope are not reused: a caller's session cookies must not become everyone's
    /// (`caller` to `upstream`), and a shared jar belongs to no one caller (the other way).
    ///
    /// [`persist::load`]: crate::persist::load
    pub fn restore(scope: CookieScope, loaded: Option<Jars>, config: &crate::Config) -> Self {
        match loaded {
            Some(Self::Upstream(jar)) if scope == CookieScope::Upstream => {
                jar.set_max_cookies(config.max_cookies);
                Self::Upstream(jar)
            }
            Some(Self::Caller(jars)) if scope == CookieScope::Caller => {
                jars.set_limits(config.max_callers, config.max_cookies);
                Self::Caller(jars)
            }
            Some(other) => {
                tracing::warn!(
                    saved = other.scope().as_str(),
                    now = scope.as_str(),
                    cookies = other.len(),
                    "cookie_scope changed since the jars were saved: starting with empty jars"
                );
                Self::new(scope, config)
            }
            None => Self::new(scope, config),
        }
    }

    /// The shared jar (`cookie_scope = "upstream"`), if these are not per caller.
    pub fn shared(&self) -> Option<&CookieJar> {
        match self {
            Self::Upstream(jar) => Some(jar),
            Self::Caller(_) => None,
        }
    }

    /// The scope these jars are for.
    pub fn scope(&self) -> CookieScope {
        match self {
            Self::Upstream(_) => CookieScope::Upstream,
            Self::Caller(_) => CookieScope::Caller,
        }
    }

    /// The jar a request of `caller` uses.
    pub fn jar_for(&self, caller: impl FnOnce() -> CallerId) -> CookieJar {
        match self {
            Self::Upstream(jar) => jar.clone(),
            Self::Caller(jars) => jars.jar_for(caller()),
        }
    }

    /// Unexpired cookies in all the jars (for `/health/upstreams`).
    pub fn len(&self) -> usize {
        match self {
            Self::Upstream(jar) => jar.len(),
            Self::Caller(jars) => jars.len(),
        }
    }

    /// No unexpired cookies.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A counter that moves whenever the contents change (to save only when needed).
    pub fn generation(&self) -> u64 {
        match self {
            Self::Upstream(jar) => jar.generation(),
            Self::Caller(jars) => jars.generation(),
        }
    }
}
