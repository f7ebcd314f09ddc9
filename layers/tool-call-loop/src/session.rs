//! Sessions: whose tool calls are counted together, and what each session has done lately.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Extensions, HeaderMap};
use moka::{ops::compute::Op, sync::Cache};
pub use portcullis_core::identity::{SessionKey, X_SESSION_ID};
use tokio::time::Instant;

use crate::{
    calls::{fingerprint, Fingerprint, ToolCall},
    Config, Mode,
};

/// The number of sessions kept by default; the least recently used go first past it.
pub const DEFAULT_MAX_SESSIONS: u64 = 100_000;

/// The session of a request: [`portcullis_core::identity::session_key`] for this layer.
pub fn session_key(headers: &HeaderMap, extensions: &Extensions) -> SessionKey {
    portcullis_core::identity::session_key(LAYER, headers, extensions)
}

/// This layer's name in its session keys.
pub(crate) const LAYER: &str = "tool-call-loop";

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a loop (or not yet).
    Allow,
    /// A loop, let through: `warn`, or the chance of `chance_then_block`.
    LetThrough {
        header: &'static str,
        tool: Arc<str>,
        repeats: u32,
    },
    /// A loop, refused.
    Block { tool: Arc<str>, repeats: u32 },
}

/// A note owed to a session's next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) tool: Arc<str>,
    pub(crate) repeats: u32,
}

#[derive(Debug, Clone)]
struct Session {
    last: Fingerprint,
    tool: Arc<str>,
    count: u32,
    at: Instant,
    /// `chance_then_block`: the note was owed (or given) for this streak.
    chance_given: bool,
    note: Option<Note>,
    /// A streamed answer was let through as a loop: its header goes on the next response.
    header: Option<&'static str>,
}

/// The sessions: bounded in number, each forgotten `ttl` after its last answer.
#[derive(Clone)]
pub(crate) struct Sessions {
    cache: Cache<SessionKey, Session, foldhash::fast::RandomState>,
    max_repeats: u32,
    ttl: Duration,
    mode: Mode,
    /// Set (for good) before the first session is stored: until then there is no streak to
    /// end and no note owed, and a request needs no session key to know it.
    used: Arc<AtomicBool>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.cache.entry_count())
            .field("max_repeats", &self.max_repeats)
            .field("ttl", &self.ttl)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(config: &Config, max_sessions: u64) -> Self {
        let ttl = config.ttl.max(Duration::from_millis(1));
        Self {
            // Idle expiry reclaims memory; the `at` check below is what decides "within ttl"
            // (it follows tokio's clock, so tests can pause time).
            cache: Cache::builder()
                .max_capacity(max_sessions)
                .time_to_idle(ttl)
                // Keys are blake3 hashes: foldhash (seeded per cache) suffices, SipHash costs ~10x.
                .build_with_hasher(foldhash::fast::RandomState::default()),
            max_repeats: config.max_repeats.max(1),
            ttl,
            mode: config.mode,
            used: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether any session may be stored (`false`: none ever was, so [`Self::take_pending`]
    /// and an answer without calls have nothing to do for any key).
    pub(crate) fn any(&self) -> bool {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// An answer of the session made `calls` (none: an answer without tool calls, which ends
    /// any streak).
    pub(crate) fn record(&self, key: SessionKey, calls: &[ToolCall], streamed: bool) -> Verdict {
        let now = Instant::now();
        let Some(first) = calls.first() else {
            self.cache.invalidate(&key);
            return Verdict::Allow;
        };
        let fp = fingerprint(calls);
        let mut verdict = Verdict::Allow;
        // Before the session can be seen: a request that finds `any` false comes before this.
        self.used.store(true, Ordering::Release);
        self.cache.entry(key).and_compute_with(|old| {
            let old = old
                .map(|e| e.into_value())
                .filter(|s| now.saturating_duration_since(s.at) <= self.ttl);
            let mut s = match old {
                Some(mut s) if s.last == fp => {
                    s.count = s.count.saturating_add(1);
                    s
                }
                _ => Session {
                    last: fp,
                    tool: Arc::from(first.name.as_str()),
                    count: 1,
                    at: now,
                    chance_given: false,
                    note: None,
                    header: None,
                },
            };
            s.at = now;
            if s.count > self.max_repeats {
                let (tool, repeats) = (s.tool.clone(), s.count);
                verdict = match self.mode {
                    Mode::Block => Verdict::Block { tool, repeats },
                    Mode::ChanceThenBlock if s.chance_given => Verdict::Block { tool, repeats },
                    Mode::ChanceThenBlock => {
                        s.chance_given = true;
                        s.note = Some(Note {
                            tool: tool.clone(),
                            repeats,
                        });
                        Verdict::LetThrough {
                            header: "chance",
                            tool,
                            repeats,
                        }
                    }
                    Mode::Warn => Verdict::LetThrough {
                        header: "warn",
                        tool,
                        repeats,
                    },
                };
                if let (Verdict::LetThrough { header, .. }, true) = (&verdict, streamed) {
                    s.header = Some(header);
                }
            }
            Op::Put(s)
        });
        verdict
    }

    /// What the session's next request is owed: a note for the model, a header for the
    /// client. Both are given once.
    pub(crate) fn take_pending(&self, key: SessionKey) -> (Option<Note>, Option<&'static str>) {
        let owed = self
            .cache
            .get(&key)
            .is_some_and(|s| s.note.is_some() || s.header.is_some());
        if !owed {
            return (None, None);
        }
        let mut taken = (None, None);
        self.cache.entry(key).and_compute_with(|old| match old {
            Some(e) => {
                let mut s = e.into_value();
                taken = (s.note.take(), s.header.take());
                Op::Put(s)
            }
            None => Op::Nop,
        });
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use portcullis_core::{ApiKeyHash, UserId};

    fn key(n: u8) -> SessionKey {
        SessionKey([n; 16])
    }

    fn sessions(mode: Mode) -> Sessions {
        Sessions::new(
            &Config {
                max_repeats: 2,
                mode,
                ..Config::default()
            },
            100,
        )
    }

    #[tokio::test]
    async fn no_session_is_stored_until_an_answer_has_calls() {
        let s = sessions(Mode::Block);
        assert!(!s.any());
        assert_eq!(s.record(key(1), &[], false), Verdict::Allow);
        assert_eq!(s.take_pending(key(1)), (None, None));
        assert!(!s.any(), "an answer without calls stores nothing");
        s.record(key(1), &[ToolCall::new("read", "{}")], true);
        assert!(s.any() && s.clone().any(), "stored, for every clone");
    }

    #[tokio::test]
    async fn counts_identical_consecutive_calls_per_session() {
        let s = sessions(Mode::Block);
        let read = [ToolCall::new("read", r#"{"p":"a"}"#)];
        let other = [ToolCall::new("read", r#"{"p":"b"}"#)];
        assert_eq!(s.record(key(1), &read, false), Verdict::Allow);
        assert_eq!(s.record(key(1), &read, false), Verdict::Allow);
        assert_eq!(
            s.record(key(2), &read, false),
            Verdict::Allow,
            "another session"
        );
        assert!(matches!(
            s.record(key(1), &read, false),
            Verdict::Block { repeats: 3, .. }
        ));
        assert_eq!(
            s.record(key(1), &other, false),
            Verdict::Allow,
            "a different call resets"
        );
        assert_eq!(s.record(key(1), &other, false), Verdict::Allow);
        assert_eq!(
            s.record(key(1), &[], false),
            Verdict::Allow,
            "text ends a streak"
        );
        assert_eq!(s.record(key(1), &other, false), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_streak_is_forgotten_after_ttl() {
        let s = sessions(Mode::Block);
        let read = [ToolCall::new("read", "{}")];
        s.record(key(1), &read, false);
        s.record(key(1), &read, false);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(s.record(key(1), &read, false), Verdict::Allow);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(s.record(key(1), &read, false), Verdict::Allow);
        assert!(matches!(
            s.record(key(1), &read, false),
            Verdict::Block { .. }
        ));
    }

    #[tokio::test]
    async fn chance_then_block_owes_one_note_then_blocks() {
        let s = sessions(Mode::ChanceThenBlock);
        let read = [ToolCall::new("read", "{}")];
        s.record(key(1), &read, false);
        s.record(key(1), &read, false);
        assert_eq!(s.take_pending(key(1)), (None, None));
        assert!(matches!(
            s.record(key(1), &read, true),
            Verdict::LetThrough {
                header: "chance",
                repeats: 3,
                ..
            }
        ));
        let (note, header) = s.take_pending(key(1));
        assert_eq!(note.unwrap().repeats, 3);
        assert_eq!(header, Some("chance"));
        assert_eq!(s.take_pending(key(1)), (None, None), "given once");
        assert!(matches!(
            s.record(key(1), &read, false),
            Verdict::Block { repeats: 4, .. }
        ));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new(&Config::default(), 50);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        for i in 0..5000u32 {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_le_bytes());
            s.record(SessionKey(k), &[ToolCall::new("t", "{}")], false);
        }
        assert!(s.len() <= 50, "{}", s.len());
    }

    #[test]
    fn keys_scope_session_ids_by_caller_and_fall_back_to_the_user_id() {
        let k = |h: &[(&str, &str)], user: Option<&str>, ext_key: Option<&str>| {
            let mut r = http::Request::new(());
            for (n, v) in h {
                r.headers_mut().append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            if let Some(u) = user {
                r.extensions_mut().insert(UserId::new(u));
            }
            if let Some(e) = ext_key {
                r.extensions_mut().insert(ApiKeyHash::of(e));
            }
            session_key(r.headers(), r.extensions())
        };
        let base = k(
            &[("authorization", "Bearer a"), ("x-session-id", "s")],
            None,
            None,
        );
        assert_ne!(
            base,
            k(
                &[("authorization", "Bearer b"), ("x-session-id", "s")],
                None,
                None
            )
        );
        assert_ne!(
            base,
            k(
                &[("authorization", "Bearer a"), ("x-session-id", "t")],
                None,
                None
            )
        );
        assert_eq!(
            base,
            k(
                &[
                    ("authorization", "Bearer a"),
                    ("x-session-id", "s"),
                    ("user-agent", "x")
                ],
                Some("u"),
                None
            )
        );
        assert_ne!(
            k(&[("x-api-key", "a")], Some("alice"), None),
            k(&[("x-api-key", "a")], Some("bob"), None)
        );
        assert_ne!(
            k(
                &[("x-api-key", "a"), ("anthropic-api-key", "p1")],
                None,
                None
            ),
            k(
                &[("x-api-key", "a"), ("anthropic-api-key", "p2")],
                None,
                None
            )
        );
        assert_eq!(
            k(&[("x-api-key", "a")], None, Some("gw")),
            k(&[("x-api-key", "b")], None, Some("gw")),
            "the identity extension wins over headers"
        );
    }
}
