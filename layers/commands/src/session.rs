//! Sessions: whose settings a command changes, and the settings each session holds.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use http::{Extensions, HeaderMap};
use moka::{ops::compute::Op, sync::Cache};
pub use portcullis_core::identity::{SessionKey, X_SESSION_ID};
use serde_json::Value;
use tokio::time::Instant;

/// The session of a request: [`portcullis_core::identity::session_key`] for this layer.
pub fn session_key(headers: &HeaderMap, extensions: &Extensions) -> SessionKey {
    portcullis_core::identity::session_key("commands", headers, extensions)
}

/// What `!/set` stored for a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    /// `model`: later requests are sent as this model.
    pub(crate) model: Option<Arc<str>>,
    /// `loop_detection=off`.
    pub(crate) loop_detection_off: bool,
    /// Every other key: body params merged into later requests (the client's own win).
    pub(crate) params: BTreeMap<String, Value>,
}

impl Settings {
    pub(crate) fn is_empty(&self) -> bool {
        self.model.is_none() && !self.loop_detection_off && self.params.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    settings: Arc<Settings>,
    /// Last request of the session: it is forgotten `ttl` after. Kept behind a lock so a
    /// read can refresh it without rewriting the entry.
    seen: Mutex<Instant>,
}

/// The sessions: bounded in number, each forgotten `ttl` after its last request.
#[derive(Clone)]
pub(crate) struct Sessions {
    cache: Cache<SessionKey, Arc<Entry>, foldhash::fast::RandomState>,
    ttl: Duration,
    /// Set (for good) before the first settings are stored: until then no session has any,
    /// and a request needs no session key to know it.
    used: Arc<AtomicBool>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.cache.entry_count())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(max_sessions: u64, ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            // moka's idle expiry reclaims memory; the `seen` check decides "within ttl" (it
            // follows tokio's clock, so tests can pause time).
            cache: Cache::builder()
                .max_capacity(max_sessions.max(1))
                .time_to_idle(ttl)
                // Keys are blake3 hashes: foldhash (seeded per cache) suffices, SipHash costs ~10x.
                .build_with_hasher(foldhash::fast::RandomState::default()),
            ttl,
            used: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether any session may hold settings (`false`: none ever has, so [`Self::get`]
    /// would find nothing for any key).
    pub(crate) fn any(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// The session's settings (refreshing its idle timer), if it has any.
    pub(crate) fn get(&self, key: SessionKey) -> Option<Arc<Settings>> {
        let entry = self.cache.get(&key)?;
        let now = Instant::now();
        let mut seen = entry.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(*seen) > self.ttl {
            drop(seen);
            self.cache.invalidate(&key);
            return None;
        }
        *seen = now;
        Some(entry.settings.clone())
    }

    /// Change the session's settings with `f` (on an empty set if it has none, or they
    /// expired). `f` returns `Err` to change nothing. Empty settings remove the session.
    pub(crate) fn update<T, E>(
        &self,
        key: SessionKey,
        f: impl FnOnce(&mut Settings) -> Result<T, E>,
    ) -> Result<T, E> {
        let now = Instant::now();
        let mut f = Some(f);
        let mut result = None;
        self.cache.entry(key).and_compute_with(|old| {
            let Some(f) = f.take() else {
                return Op::Nop;
            };
            let mut settings = old
                .map(|e| e.into_value())
                .filter(|e| {
                    let seen = *e.seen.lock().unwrap_or_else(|p| p.into_inner());
                    now.saturating_duration_since(seen) <= self.ttl
                })
                .map(|e| (*e.settings).clone())
                .unwrap_or_default();
            let r = f(&mut settings);
            let op = match &r {
                Err(_) => Op::Nop,
                Ok(_) if settings.is_empty() => Op::Remove,
                Ok(_) => {
                    // Before the entry can be seen: a request that finds `any` false
                    // comes before this update.
                    self.used.store(true, Ordering::Release);
                    Op::Put(Arc::new(Entry {
                        settings: Arc::new(settings),
                        seen: Mutex::new(now),
                    }))
                }
            };
            result = Some(r);
            op
        });
        match (result, f) {
            (Some(r), _) => r,
            // Not reached: `and_compute_with` calls the closure once.
            (None, Some(f)) => f(&mut Settings::default()),
            (None, None) => unreachable!("the closure that took `f` set `result`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settings_expire_after_ttl_without_a_request() {
        let s = Sessions::new(10, Duration::from_secs(60));
        let k = SessionKey([1; 16]);
        s.update::<_, ()>(k, |st| {
            st.loop_detection_off = true;
            Ok(())
        })
        .unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(s.get(k).is_some(), "a request refreshes the session");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(s.get(k).is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(s.get(k).is_none(), "forgotten after ttl idle");
    }

    #[test]
    fn a_refused_update_changes_nothing_and_empty_settings_go() {
        let s = Sessions::new(10, Duration::from_secs(60));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let k = SessionKey([2; 16]);
        let r: Result<(), &str> = s.update(k, |st| {
            st.model = Some("x".into());
            Err("no")
        });
        assert!(r.is_err());
        assert!(s.get(k).is_none());
        assert!(!s.any(), "nothing stored yet: no key needed");
        s.update::<_, ()>(k, |st| {
            st.params.clear();
            Ok(())
        })
        .unwrap();
        assert!(!s.any(), "empty settings are not stored");
        s.update::<_, ()>(k, |st| {
            st.model = Some("x".into());
            Ok(())
        })
        .unwrap();
        assert!(s.any());
        assert!(s.clone().any(), "clones share it");
        assert_eq!(s.get(k).unwrap().model.as_deref(), Some("x"));
        s.update::<_, ()>(k, |st| {
            st.model = None;
            Ok(())
        })
        .unwrap();
        assert!(s.get(k).is_none());
        assert_eq!(s.len(), 0);
    }
}
