//! Health of a remote state store (Redis): every call bounded, a back-off after a failure,
//! and one log line when the store goes and one when it is back.
//!
//! The rate-limit and dedup-cache layers keep their shared state in Redis and must behave
//! the same way when it goes away: answer from their local state within a bound, not wait
//! for reconnects. [`RemoteHealth::call`] is that policy, written once, around any future.
//!
//! # Why a wrapper over a future, not over a Redis connection
//! The policy needs nothing from Redis: a deadline, a clock and a flag. Keeping it generic
//! keeps `portcullis-core` free of the `redis` dependency (a layer used without Redis does
//! not compile it) and lets a test drive it with plain futures and a paused clock. Each store
//! crate wraps its own commands; [`Guarded`] carries one connection together with one
//! `RemoteHealth`, so every store built on that connection shares the outage state and the
//! gateway logs each transition once, not once per layer.
//!
//! # Behaviour
//! - Each call runs under [`call_timeout`](RemoteHealth::call_timeout) (default
//!   [`DEFAULT_CALL_TIMEOUT`], 50 ms). A timeout or an error marks the store down.
//! - While down, calls are not made at all ([`Unavailable::BackingOff`], no latency) except
//!   one probe per [`backoff`](RemoteHealth::backoff) (default [`DEFAULT_BACKOFF`], 1 s).
//!   A probe that succeeds marks the store up again.
//! - Going down and coming back are each logged once, at `warn`, with the store's name.
//!   Concurrent calls that fail together produce one line: a failure only counts if no
//!   transition happened since its call started.

use std::{
    fmt,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tower::BoxError;

/// The default bound on one call to a remote store.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// The default time a store that failed is left alone before one call probes it again.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// A call to a remote store that did not give an answer: the caller uses its local state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The store failed recently and is not being asked until its next probe.
    #[error("{store} is unavailable (backing off after a failure)")]
    BackingOff {
        /// The store's name.
        store: Arc<str>,
    },
    /// The store did not answer within the bound.
    #[error("{store} did not answer within {after:?}")]
    TimedOut {
        /// The store's name.
        store: Arc<str>,
        /// The bound that passed.
        after: Duration,
    },
    /// The store answered with an error (or the connection failed).
    #[error("{store} failed: {source}")]
    Failed {
        /// The store's name.
        store: Arc<str>,
        /// The store client's error.
        source: BoxError,
    },
}

/// Whether a remote store answers, shared by every clone: bounds each call, backs off after
/// a failure and logs one line per transition (see the [module docs](self)).
///
/// Cloning shares the up/down state; [`with_call_timeout`](Self::with_call_timeout) and
/// [`with_backoff`](Self::with_backoff) change only the handle they are called on, so two
/// stores on one connection can have different bounds and still one outage state.
#[derive(Clone)]
pub struct RemoteHealth {
    name: Arc<str>,
    call_timeout: Duration,
    backoff: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    up: bool,
    /// Bumped on every transition: a call's result only moves the state if none happened
    /// since the call started.
    epoch: u64,
    /// While down: no call before this instant, then one probe.
    next_probe: Instant,
    down_since: Instant,
    outages: u64,
    recoveries: u64,
}

/// What [`RemoteHealth::admit`] gave a call: the epoch it started in, and whether it is the
/// probe of a store that is down.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u64,
    probe: bool,
}

impl RemoteHealth {
    /// A store called `name` in log lines (e.g. `redis at 127.0.0.1:6379`; never put
    /// credentials in it), assumed up until a call fails, with the default bound and back-off.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        let now = Instant::now();
        Self {
            name: name.into(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            state: Arc::new(Mutex::new(State {
                up: true,
                epoch: 0,
                next_probe: now,
                down_since: now,
                outages: 0,
                recoveries: 0,
            })),
        }
    }

    /// Bound each call made through this handle by `timeout` (at least 1 ms).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// After a failure seen through this handle, leave the store alone for `backoff`.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The store's name, as logged.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound on one call.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// How long a failed store is left alone before a probe.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Whether the store answered its last counted call (true before any call).
    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// How many times the store went down (each logged once).
    pub fn outages(&self) -> u64 {
        self.lock().outages
    }

    /// How many times it came back (each logged once).
    pub fn recoveries(&self) -> u64 {
        self.lock().recoveries
    }

    /// Run `call` within the bound, unless the store is backing off (then `call` is dropped
    /// unpolled and the answer is immediate). Any error or a timeout marks the store down.
    ///
    /// Build `call` lazily (an `async` block): nothing should happen before it is polled.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, Unavailable>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        let Some(ticket) = self.admit() else {
            return Err(Unavailable::BackingOff {
                store: self.name.clone(),
            });
        };
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(value)) => {
                self.succeeded(ticket);
                Ok(value)
            }
            Ok(Err(error)) => {
                let error = error.into();
                self.failed(ticket, &*error);
                Err(Unavailable::Failed {
                    store: self.name.clone(),
                    source: error,
                })
            }
            Err(_elapsed) => {
                let error = Unavailable::TimedOut {
                    store: self.name.clone(),
                    after: self.call_timeout,
                };
                self.failed(ticket, &error);
                Err(error)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Option<Ticket> {
        let mut s = self.lock();
        if s.up {
            return Some(Ticket {
                epoch: s.epoch,
                probe: false,
            });
        }
        let now = Instant::now();
        if now < s.next_probe {
            return None;
        }
        // Claim the probe: other calls keep backing off until this one has answered (or, if
        // it is dropped unfinished, until the next back-off has passed).
        s.next_probe = now + self.backoff;
        Some(Ticket {
            epoch: s.epoch,
            probe: true,
        })
    }

    fn succeeded(&self, ticket: Ticket) {
        let mut s = self.lock();
        if s.up || !ticket.probe || ticket.epoch != s.epoch {
            return;
        }
        s.up = true;
        s.epoch += 1;
        s.recoveries += 1;
        let down_for = s.down_since.elapsed();
        drop(s);
        tracing::warn!(
            store = %self.name,
            ?down_for,
            "remote state store reachable again: limits and cache are shared again"
        );
    }

    fn failed(&self, ticket: Ticket, error: &(dyn std::error::Error + 'static)) {
        let mut s = self.lock();
        let now = Instant::now();
        if !s.up {
            if ticket.probe {
                s.next_probe = now + self.backoff;
                drop(s);
                tracing::debug!(store = %self.name, %error, "remote state store still unreachable");
            }
            return;
        }
        if ticket.epoch != s.epoch {
            return;
        }
        s.up = false;
        s.epoch += 1;
        s.outages += 1;
        s.down_since = now;
        s.next_probe = now + self.backoff;
        drop(s);
        tracing::warn!(
            store = %self.name,
            %error,
            backoff = ?self.backoff,
            "remote state store unreachable: using local state (limits per replica, cache per \
             process) until it answers again"
        );
    }
}

impl fmt::Debug for RemoteHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHealth")
            .field("name", &self.name)
            .field("call_timeout", &self.call_timeout)
            .field("backoff", &self.backoff)
            .field("up", &self.is_up())
            .finish()
    }
}

/// A connection to a remote store together with the [`RemoteHealth`] its calls go through.
///
/// Give clones of one `Guarded` to every store that uses the connection: they share the
/// outage state, so an outage is noticed (and logged) once. A bare connection converts into
/// a `Guarded` with a health of its own, named `state store`.
#[derive(Clone, Debug)]
pub struct Guarded<C> {
    conn: C,
    health: RemoteHealth,
}

impl<C> Guarded<C> {
    /// `conn`, with its calls going through `health`.
    pub fn new(conn: C, health: RemoteHealth) -> Self {
        Self { conn, health }
    }

    /// The connection.
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The health its calls go through.
    pub fn health(&self) -> &RemoteHealth {
        &self.health
    }

    /// Change this handle's health (e.g. its bound), see [`RemoteHealth::with_call_timeout`].
    pub fn map_health(mut self, f: impl FnOnce(RemoteHealth) -> RemoteHealth) -> Self {
        self.health = f(self.health);
        self
    }

    /// The connection and the health.
    pub fn into_parts(self) -> (C, RemoteHealth) {
        (self.conn, self.health)
    }
}

impl<C> From<C> for Guarded<C> {
    fn from(conn: C) -> Self {
        Self::new(conn, RemoteHealth::new("state store"))
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;

    fn ok() -> std::future::Ready<Result<u8, BoxError>> {
        std::future::ready(Ok(1))
    }

    fn err() -> std::future::Ready<Result<u8, BoxError>> {
        std::future::ready(Err("connection refused".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_is_cut_at_the_bound_then_skipped_until_the_probe() {
        let h = RemoteHealth::new("test").with_call_timeout(Duration::from_millis(50));
        let start = Instant::now();
        // The outer timeout only turns a missing bound into a failure instead of a hang.
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            h.call(pending::<Result<u8, BoxError>>()),
        )
        .await
        .expect("the call was not bounded");
        assert!(matches!(r, Err(Unavailable::TimedOut { .. })), "{r:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert!(!h.is_up());

        // During the back-off the call is not even polled, and costs nothing.
        let start = Instant::now();
        let polled = std::sync::atomic::AtomicBool::new(false);
        let r = h
            .call(async {
                polled.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok::<u8, BoxError>(1)
            })
            .await;
        assert!(matches!(r, Err(Unavailable::BackingOff { .. })));
        assert!(!polled.into_inner(), "polled while backing off");
        assert_eq!(start.elapsed(), Duration::ZERO);

        // After the back-off, one probe; it succeeds and the store is up again.
        tokio::time::advance(DEFAULT_BACKOFF).await;
        assert_eq!(h.call(ok()).await.unwrap(), 1);
        assert!(h.is_up());
        assert_eq!((h.outages(), h.recoveries()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_backoff_and_a_failed_probe_backs_off_again() {
        let h = RemoteHealth::new("test");
        assert!(h.call(err()).await.is_err());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(matches!(
            h.call(ok()).await,
            Err(Unavailable::BackingOff { .. })
        ));
        tokio::time::advance(Duration::from_millis(1)).await;
        // The probe is claimed by the first caller; a concurrent caller still backs off.
        let probe = h.call(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<u8, BoxError>("still down".into())
        });
        let other = async {
            tokio::task::yield_now().await;
            h.call(ok()).await
        };
        let (probe, other) = tokio::join!(probe, other);
        assert!(matches!(probe, Err(Unavailable::Failed { .. })));
        assert!(matches!(other, Err(Unavailable::BackingOff { .. })));
        // The failed probe starts a new back-off from its own end.
        tokio::time::advance(Duration::from_millis(995)).await;
        assert!(matches!(
            h.call(ok()).await,
            Err(Unavailable::BackingOff { .. })
        ));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(h.call(ok()).await.is_ok());
        assert_eq!((h.outages(), h.recoveries()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_failing_together_count_as_one_outage() {
        let h = RemoteHealth::new("test");
        let slow_fail = || async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err::<u8, BoxError>("reset".into())
        };
        let results = futures_util::future::join_all((0..5).map(|_| h.call(slow_fail()))).await;
        assert!(results.iter().all(Result::is_err));
        assert_eq!(h.outages(), 1);
        // A call that started while up and succeeds late does not end the outage: only a
        // probe does.
        let h2 = RemoteHealth::new("test");
        let late_ok = h2.call(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<u8, BoxError>(1)
        });
        let fail = h2.call(err());
        let (late_ok, fail) = tokio::join!(late_ok, fail);
        assert!(late_ok.is_ok() && fail.is_err());
        assert!(!h2.is_up());
        assert_eq!((h2.outages(), h2.recoveries()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_state_but_not_the_bound() {
        let a = RemoteHealth::new("test");
        let b = a.clone().with_call_timeout(Duration::from_millis(200));
        assert_eq!(a.call_timeout(), DEFAULT_CALL_TIMEOUT);
        assert_eq!(b.call_timeout(), Duration::from_millis(200));
        assert!(a.call(err()).await.is_err());
        assert!(!b.is_up());
        assert!(matches!(
            b.call(ok()).await,
            Err(Unavailable::BackingOff { .. })
        ));
        let g: Guarded<u8> = 7.into();
        assert_eq!(*g.conn(), 7);
        assert_eq!(g.health().name(), "state store");
    }

    /// The transitions are logged once each, however many calls fail.
    #[test]
    fn one_warning_per_transition() {
        use std::io::Write;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            // Other tests, on other threads and without this subscriber, hit the same two
            // callsites. One whose first use began before this subscriber existed can keep
            // the interest it computed then ("never") and drop this test's line: seen once in
            // a loop of ~20 runs (not again in 320). Asking every callsite again, once this
            // subscriber exists and again before the second line, closes that window.
            tracing::callsite::rebuild_interest_cache();
            rt.block_on(async {
                let h = RemoteHealth::new("redis at 127.0.0.1:1");
                for _ in 0..3 {
                    for _ in 0..10 {
                        let _ = h.call(err()).await;
                    }
                    tokio::time::advance(DEFAULT_BACKOFF).await;
                    let _ = h.call(err()).await; // a failed probe: no new line
                }
                tokio::time::advance(DEFAULT_BACKOFF).await;
                tracing::callsite::rebuild_interest_cache();
                for _ in 0..10 {
                    assert!(h.call(ok()).await.is_ok());
                }
            });
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("WARN") && lines[0].contains("unreachable"));
        assert!(lines[0].contains("redis at 127.0.0.1:1"));
        assert!(lines[1].contains("WARN") && lines[1].contains("reachable again"));
    }
}
