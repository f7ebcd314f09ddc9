//! The Redis backend: the same GCRA in a Lua script, so replicas share budgets.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, LazyLock,
    },
    time::Duration,
};

use redis::aio::ConnectionManager;

use crate::{Decision, Quota, RateKey};

/// Key prefix of the buckets in Redis: `portcullis:rl:<32 hex digits>`.
pub const DEFAULT_PREFIX: &str = "portcullis:rl:";

/// GCRA, the same math as governor (see the `limiter` module docs), in microseconds.
///
/// The time is Redis's own (`TIME`), so replicas whose clocks disagree still agree on the
/// buckets. The TAT is stored as an integer string with a `PX` expiry at the moment the
/// bucket is full again: an expired key is exactly a full bucket, so Redis never holds idle
/// keys. Lua numbers are doubles, exact for integer microseconds since the epoch (< 2^53).
const GCRA_LUA: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil then tat = now end
local extra = t * (n - 1)
local earliest = tat + extra - tau
if now < earliest then
  return {0, math.ceil(earliest - now), 0, math.ceil(math.max(tat - now, 0))}
end
local new_tat = math.max(tat, now) + t + extra
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
local remaining = math.floor(math.min(now + tau + t - new_tat, tau + t) / t)
return {1, 0, remaining, math.ceil(new_tat - now)}
";

static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_LUA));

/// A Redis connection (auto-reconnecting) and the key prefix buckets are stored under.
///
/// Cloning shares the connection.
#[derive(Clone, Debug)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379`).
    ///
    /// Fails if Redis cannot be reached now; once connected, the connection reconnects by
    /// itself and checks made while Redis is down are let through (see [`RedisLimiter`]).
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self::new(ConnectionManager::new(client).await?))
    }

    /// Use an existing connection, with keys under [`DEFAULT_PREFIX`].
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: DEFAULT_PREFIX.into(),
        }
    }

    /// Store buckets under `prefix` instead (several gateways on one Redis, tests).
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix buckets are stored under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `key`'s bucket.
    pub fn key_name(&self, key: &RateKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }
}

/// Keyed GCRA buckets in Redis: one `EVALSHA` per check.
///
/// # Why fail open
/// If Redis cannot answer (down, timed out after the connection's response timeout), the
/// request is let through and a warning is logged (at most one every 10 seconds): a rate
/// limiter must not take the gateway down with it.
///
/// Cloning shares the connection.
#[derive(Clone, Debug)]
pub struct RedisLimiter {
    store: RedisStore,
    quota: Quota,
    last_warn: Arc<AtomicU64>,
}

impl RedisLimiter {
    /// Buckets for `quota` in `store`.
    pub fn new(store: RedisStore, quota: Quota) -> Self {
        Self {
            store,
            quota,
            last_warn: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The rate and burst enforced.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Where the buckets are kept.
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Charge `cost` (clamped to `1..=burst`) to `key`'s bucket if it has room.
    pub async fn check(&self, key: &RateKey, cost: u32) -> Decision {
        let limit = self.quota.capacity();
        let n = cost.clamp(1, limit);
        let t_us = self.quota.emission_interval().as_nanos() as f64 / 1000.0;
        let tau_us = t_us * f64::from(limit - 1);
        let mut conn = self.store.conn.clone();
        let reply: redis::RedisResult<(i64, i64, i64, i64)> = GCRA
            .key(self.store.key_name(key))
            .arg(t_us)
            .arg(tau_us)
            .arg(n)
            .invoke_async(&mut conn)
            .await;
        match reply {
            Ok((allowed, retry_us, remaining, reset_us)) => Decision {
                allowed: allowed == 1,
                limit,
                remaining: u32::try_from(remaining.max(0)).unwrap_or(0).min(limit),
                reset_after: micros(reset_us),
                retry_after: if allowed == 1 {
                    Duration::ZERO
                } else {
                    micros(retry_us).max(Duration::from_micros(1))
                },
            },
            Err(err) => {
                self.warn_fail_open(&err);
                Decision {
                    allowed: true,
                    limit,
                    remaining: limit,
                    reset_after: Duration::ZERO,
                    retry_after: Duration::ZERO,
                }
            }
        }
    }

    fn warn_fail_open(&self, err: &redis::RedisError) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warn.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %err, "rate limit store unavailable; letting requests through");
        } else {
            tracing::debug!(error = %err, "rate limit store unavailable; request let through");
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
