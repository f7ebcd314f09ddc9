//! The limiter: GCRA buckets keyed by [`RateKey`], in memory or in Redis.
//!
//! # Why GCRA
//! The generic cell rate algorithm keeps one timestamp per key (the "theoretical arrival
//! time", TAT) instead of a counter and a refill time: a bucket is 8 bytes plus its key,
//! a check is one compare-and-swap, and the answer to "when may I retry?" falls out exactly.
//! With emission interval `T = 60s / requests_per_minute` and capacity `burst`, a request at
//! `now` costing `n` is allowed when `TAT + (n - 1)·T - (burst - 1)·T <= now`, and then
//! `TAT = max(TAT, now) + n·T`. The bucket is full again at `TAT`.
//!
//! # Costs, and a tokens-per-minute budget next
//! [`Limiter::check`] takes a `cost`; the request limit charges 1. A tokens-per-minute budget
//! is a second [`Limiter`] on the same backend and keys whose [`Quota`] counts tokens
//! (`requests_per_minute` = tokens per minute, `burst` = the most tokens at once): check it
//! with the prompt's estimated tokens before the call, then charge the completion's tokens
//! after the response. Only that after-the-fact charge is new (it must succeed even over
//! budget, leaving a debt): one flag in the Redis script, and a custom governor state store
//! for memory. Keys, headers, queueing and the layer stay as they are.

use std::{
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use governor::{
    clock::Clock, middleware::StateInformationMiddleware, state::keyed::DefaultKeyedStateStore,
};

use crate::{redis::RedisLimiter, Quota, RateKey};

/// The outcome of one [`Limiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The request may proceed (its cost was charged).
    pub allowed: bool,
    /// The bucket's capacity (the configured burst).
    pub limit: u32,
    /// Requests that may still be sent at once after this one.
    pub remaining: u32,
    /// How long until the bucket is full again (for the memory backend, rounded up to a whole
    /// emission interval after an allowed request).
    pub reset_after: Duration,
    /// When not allowed: how long until this request would be. Zero when allowed.
    pub retry_after: Duration,
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// In this process: each replica has its own budgets.
    #[default]
    Memory,
    /// In Redis: replicas sharing the Redis share the budgets.
    Redis(crate::RedisStore),
}

impl Backend {
    /// A limiter for `quota` with its state in this backend.
    pub fn limiter(&self, quota: Quota) -> Limiter {
        match self {
            Backend::Memory => Limiter::Memory(MemoryLimiter::new(quota)),
            Backend::Redis(store) => Limiter::Redis(RedisLimiter::new(store.clone(), quota)),
        }
    }
}

/// A keyed GCRA limiter with its state in memory or in Redis.
///
/// Cloning shares the state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Limiter {
    /// State in this process.
    Memory(MemoryLimiter),
    /// State in Redis, shared by every replica that uses it.
    Redis(RedisLimiter),
}

impl Limiter {
    /// Charge `cost` (at least 1, at most the burst) to `key`'s bucket if it has room.
    ///
    /// A cost larger than the burst could never pass, so it is clamped: it empties the bucket.
    pub async fn check(&self, key: &RateKey, cost: u32) -> Decision {
        match self {
            Limiter::Memory(m) => m.check(key, cost),
            Limiter::Redis(r) => r.check(key, cost).await,
        }
    }

    /// The rate and burst this limiter enforces.
    pub fn quota(&self) -> Quota {
        match self {
            Limiter::Memory(m) => m.quota(),
            Limiter::Redis(r) => r.quota(),
        }
    }

    /// The in-memory limiter, if that is the backend.
    pub fn as_memory(&self) -> Option<&MemoryLimiter> {
        match self {
            Limiter::Memory(m) => Some(m),
            Limiter::Redis(_) => None,
        }
    }
}

// === impl MemoryLimiter ===

/// governor's clock on tokio's time, so `tokio::time::pause()` drives the limiter in tests.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    // governor implements its `Reference` for `Duration`: time since the clock was made.
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Governor = governor::RateLimiter<
    RateKey,
    DefaultKeyedStateStore<RateKey>,
    TokioClock,
    StateInformationMiddleware,
>;

/// How often idle buckets are dropped from a [`MemoryLimiter`].
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Keyed GCRA buckets in this process (governor's keyed `RateLimiter` on a `DashMap`).
///
/// Memory stays bounded however many distinct keys arrive: a bucket that has refilled is
/// indistinguishable from a missing one, so a background task drops those every prune
/// interval (see [`MemoryLimiter::prune`]). A key that sent one request lives about two
/// emission intervals plus one prune interval; at most `keys/second × that` buckets of
/// roughly 40 bytes each are held. The task holds only a `Weak` reference and ends when the
/// limiter is dropped; it starts with the first check made inside a tokio runtime.
///
/// Cloning shares the buckets.
#[derive(Clone)]
pub struct MemoryLimiter {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    governor: Governor,
    quota: Quota,
    prune_interval: Duration,
    pruner_started: AtomicBool,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("quota", &self.inner.quota)
            .field("keys", &self.len())
            .field("prune_interval", &self.inner.prune_interval)
            .finish()
    }
}

impl MemoryLimiter {
    /// Buckets for `quota`, pruned every [`DEFAULT_PRUNE_INTERVAL`].
    pub fn new(quota: Quota) -> Self {
        Self::with_prune_interval(quota, DEFAULT_PRUNE_INTERVAL)
    }

    /// Buckets for `quota`, pruned every `prune_interval` (at least 1ms).
    pub fn with_prune_interval(quota: Quota, prune_interval: Duration) -> Self {
        let gq = governor::Quota::with_period(quota.emission_interval())
            .expect("emission interval is at least 1ns")
            .allow_burst(NonZeroU32::new(quota.capacity()).expect("capacity is at least 1"));
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let governor: Governor =
            governor::RateLimiter::new(gq, DefaultKeyedStateStore::default(), clock);
        Self {
            inner: Arc::new(MemoryInner {
                governor,
                quota,
                prune_interval: prune_interval.max(Duration::from_millis(1)),
                pruner_started: AtomicBool::new(false),
            }),
        }
    }

    /// The rate and burst enforced.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// Charge `cost` (clamped to `1..=burst`) to `key`'s bucket if it has room.
    pub fn check(&self, key: &RateKey, cost: u32) -> Decision {
        self.ensure_pruner();
        let quota = self.inner.quota;
        let t = quota.emission_interval();
        let limit = quota.capacity();
        let n = cost.clamp(1, limit);
        let cost_nz = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.inner.governor.check_key_n(key, cost_nz) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    // governor does not expose the new TAT; `remaining` is it rounded down to
                    // whole intervals, so this is exact or at most one interval late.
                    reset_after: t * (limit - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Ok(Err(not_until)) => {
                let now = self.inner.governor.clock().now();
                let retry_after = not_until.wait_time_from(now);
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    // Conforming at `TAT + (n-1)T - (burst-1)T` means full at `TAT`.
                    reset_after: retry_after + t * (limit - n),
                    retry_after,
                }
            }
            // Unreachable: `n` is clamped to the capacity.
            Err(_) => Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: t * limit,
                retry_after: t * limit,
            },
        }
    }

    /// Drop every bucket that has refilled (it is the same as a missing one) and release the
    /// memory they held. Runs on its own every prune interval; public for tests and for
    /// callers that want to prune at a moment of their choosing.
    pub fn prune(&self) {
        self.inner.prune();
    }

    /// Buckets currently held.
    pub fn len(&self) -> usize {
        self.inner.governor.len()
    }

    /// No buckets are held.
    pub fn is_empty(&self) -> bool {
        self.inner.governor.is_empty()
    }

    /// Start the pruning task once, from inside a runtime (the limiter may be built before
    /// one exists, e.g. while the binary validates its config).
    fn ensure_pruner(&self) {
        if self.inner.pruner_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.pruner_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.prune_interval;
        handle.spawn(prune_loop(weak, every));
    }
}

impl MemoryInner {
    fn prune(&self) {
        let before = self.governor.len();
        self.governor.retain_recent();
        self.governor.shrink_to_fit();
        tracing::debug!(
            before,
            after = self.governor.len(),
            "rate limiter pruned idle keys"
        );
    }
}

async fn prune_loop(weak: Weak<MemoryInner>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate
    loop {
        interval.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // Retaining walks every shard: millions of keys take milliseconds, which must not
        // stall a runtime worker.
        if tokio::task::spawn_blocking(move || inner.prune())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: RateKey = RateKey([7; 16]);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_deny_with_exact_retry_after() {
        // 60/min: T = 1s, burst 3.
        let l = MemoryLimiter::new(Quota::new(60, 3));
        for expected_remaining in [2, 1, 0] {
            let d = l.check(&K, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.limit, 3);
            assert_eq!(d.reset_after, secs(3.0 - expected_remaining as f64));
        }
        let d = l.check(&K, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, secs(1.0));
        assert_eq!(d.reset_after, secs(3.0));

        tokio::time::advance(secs(0.25)).await;
        let d = l.check(&K, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, secs(0.75));
        assert_eq!(d.reset_after, secs(2.75));
    }

    #[tokio::test(start_paused = true)]
    async fn refills_one_per_emission_interval() {
        // 6/min: T = 10s, burst 2.
        let l = MemoryLimiter::new(Quota::new(6, 2));
        assert!(l.check(&K, 1).allowed);
        assert!(l.check(&K, 1).allowed);
        assert!(!l.check(&K, 1).allowed);
        tokio::time::advance(secs(9.999)).await;
        assert!(!l.check(&K, 1).allowed);
        tokio::time::advance(secs(0.001)).await;
        let d = l.check(&K, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!l.check(&K, 1).allowed);
        // After the full burst's worth of time the bucket is full again.
        tokio::time::advance(secs(20.0)).await;
        assert_eq!(l.check(&K, 1).remaining, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cost_is_charged_and_clamped() {
        let l = MemoryLimiter::new(Quota::new(60, 10));
        let d = l.check(&K, 4);
        assert!(d.allowed);
        assert_eq!(d.remaining, 6);
        let d = l.check(&K, 7);
        assert!(!d.allowed);
        // 7 cells need 7 free: 1 more must drain, i.e. 1s.
        assert_eq!(d.retry_after, secs(1.0));
        // Larger than the burst: empties a full bucket rather than failing forever.
        let other = RateKey([8; 16]);
        let d = l.check(&other, 1_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, secs(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn prune_drops_refilled_keys_only() {
        let l = MemoryLimiter::new(Quota::new(60, 5));
        for i in 100..200u8 {
            assert!(l.check(&RateKey([i; 16]), 1).allowed);
        }
        tokio::time::advance(secs(30.0)).await;
        for _ in 0..5 {
            assert!(l.check(&K, 1).allowed);
        }
        assert_eq!(l.len(), 101);
        l.prune();
        assert_eq!(l.len(), 1, "only the busy key is kept");
        assert!(
            !l.check(&K, 1).allowed,
            "pruning did not forget a used bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_pruner_runs_and_stops_with_the_limiter() {
        let l = MemoryLimiter::with_prune_interval(Quota::new(60, 1), secs(5.0));
        for i in 0..50u8 {
            l.check(&RateKey([i; 16]), 1);
        }
        assert_eq!(l.len(), 50);
        // Step time so the interval task and the blocking prune both get to run.
        for _ in 0..20 {
            tokio::time::advance(secs(1.0)).await;
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            if l.is_empty() {
                break;
            }
            tokio::time::sleep(secs(1.0)).await;
        }
        assert!(l.is_empty());
        let weak = Arc::downgrade(&l.inner);
        drop(l);
        // A prune already running on the blocking pool holds the limiter until it returns
        // (real time, not tokio's): give it a moment, then nothing may keep it alive.
        for _ in 0..2_000 {
            if weak.strong_count() == 0 {
                break;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            weak.upgrade().is_none(),
            "the pruner holds no strong reference"
        );
    }

    proptest::proptest! {
        /// Over any arrival pattern, what the limiter lets through in a window never exceeds
        /// burst + window / T, and with arrivals spaced >= T nothing is ever refused.
        #[test]
        fn never_more_than_burst_plus_rate(
            rpm in 1u32..600,
            burst in 1u32..20,
            gaps_ms in proptest::collection::vec(0u64..3_000, 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let q = Quota::new(rpm, burst);
                let t = q.emission_interval();
                let l = MemoryLimiter::new(q);
                let start = tokio::time::Instant::now();
                let mut allowed = 0u64;
                for gap in &gaps_ms {
                    tokio::time::advance(Duration::from_millis(*gap)).await;
                    let d = l.check(&K, 1);
                    if d.allowed {
                        allowed += 1;
                    } else {
                        proptest::prop_assert!(d.retry_after > Duration::ZERO);
                        proptest::prop_assert!(d.retry_after <= t);
                    }
                    proptest::prop_assert!(d.remaining < burst);
                }
                let elapsed = start.elapsed();
                let bound = u64::from(burst) + (elapsed.as_nanos() / t.as_nanos()) as u64;
                proptest::prop_assert!(allowed <= bound, "{allowed} > {bound}");
                Ok(())
            })?;
        }
    }
}
