//! The Redis backend: the same GCRA in a Lua script, so replicas share budgets.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use portcullis_core::remote::{Guarded, RemoteHealth};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Decision, MemoryLimiter, Quota, RateKey};

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

/// How long one (re)connection attempt may take. Requests never wait for it longer than the
/// call bound: a reconnect runs in the background and the next probe picks it up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection's own response timeout: only a backstop, so that calls the health's bound
/// gave up on do not pile up on a hung connection. It must not be shorter than any call
/// bound ([`RedisStore::with_call_timeout`]), which is what cuts requests.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(1);

/// The connection settings that keep every call bounded: one attempt per (re)connect (the
/// [`RemoteHealth`] back-off paces the attempts, not the client's retry loop, which would hold
/// each command for seconds) and a backstop response timeout.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_BACKSTOP))
}

/// A Redis connection (auto-reconnecting), the [`RemoteHealth`] its calls go through, and the
/// key prefix buckets are stored under.
///
/// Every call is bounded by the health's call timeout (default
/// [`DEFAULT_CALL_TIMEOUT`](portcullis_core::remote::DEFAULT_CALL_TIMEOUT), 50 ms); after a
/// failure Redis is left alone for the back-off (default 1 s) and the limiter uses its local
/// buckets meanwhile (see [`RedisLimiter`]).
///
/// Cloning shares the connection and the health.
#[derive(Clone, Debug)]
pub struct RedisStore {
    conn: ConnectionManager,
    health: RemoteHealth,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379`) now, failing if Redis cannot be
    /// reached. Once connected, the connection reconnects by itself.
    ///
    /// To start without Redis, use [`lazy`](Self::lazy).
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let health = RemoteHealth::new(store_name(&client));
        let conn = ConnectionManager::new_with_config(client, manager_config()).await?;
        Ok(Self::new(Guarded::new(conn, health)))
    }

    /// A store for `url` that connects on first use (and in the background after a drop), so
    /// it can be made while Redis is down. Fails only on a malformed URL. Must be called
    /// within a tokio runtime.
    pub fn lazy(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let health = RemoteHealth::new(store_name(&client));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config())?;
        Ok(Self::new(Guarded::new(conn, health)))
    }

    /// Use an existing connection, with keys under [`DEFAULT_PREFIX`].
    ///
    /// Pass a [`Guarded`] connection to share its [`RemoteHealth`] with other stores (one
    /// outage state, one log line per transition); a bare [`ConnectionManager`] gets a health
    /// of its own. Configure the connection with no retries of its own and a response timeout
    /// no shorter than the call bound (see [`connect`](Self::connect)), or reconnects and the
    /// connection's own timeout decide instead of the bound.
    pub fn new(conn: impl Into<Guarded<ConnectionManager>>) -> Self {
        let (conn, health) = conn.into().into_parts();
        Self {
            conn,
            health,
            prefix: DEFAULT_PREFIX.into(),
        }
    }

    /// Bound each call to Redis by `timeout` instead of 50 ms; past it the check is answered
    /// by the local buckets.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.health = self.health.with_call_timeout(timeout);
        self
    }

    /// After a failure, leave Redis alone for `backoff` instead of 1 s before probing again.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.health = self.health.with_backoff(backoff);
        self
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

    /// Whether Redis answers, and how often it went away.
    pub fn health(&self) -> &RemoteHealth {
        &self.health
    }

    /// The Redis key of `key`'s bucket.
    pub fn key_name(&self, key: &RateKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }
}

/// `redis at HOST:PORT`: the address only, never the URL (it may hold a password).
fn store_name(client: &redis::Client) -> String {
    format!("redis at {}", client.get_connection_info().addr())
}

/// Keyed GCRA buckets in Redis: one `EVALSHA` per check, with local buckets to fall back on.
///
/// # Why fall back to local buckets, not fail open
/// If Redis cannot answer within the bound (down, slow, erroring), the check is made against
/// in-memory buckets of the same quota instead: limits still hold, per replica, and the
/// request pays at most the bound (nothing while Redis is backing off). Letting everything
/// through would turn a Redis outage into an upstream bill; refusing everything would take
/// the gateway down with Redis. The local buckets start full when Redis goes away, so a
/// caller may get one extra burst per replica at the start of an outage; they are not merged
/// back into Redis when it returns. The outage and the recovery are logged once each, by the
/// store's [`RemoteHealth`].
///
/// Cloning shares the connection and the local buckets.
#[derive(Clone, Debug)]
pub struct RedisLimiter {
    store: RedisStore,
    quota: Quota,
    local: MemoryLimiter,
}

impl RedisLimiter {
    /// Buckets for `quota` in `store`.
    pub fn new(store: RedisStore, quota: Quota) -> Self {
        Self {
            store,
            quota,
            local: MemoryLimiter::new(quota),
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

    /// The in-memory buckets used while Redis is unavailable.
    pub fn local(&self) -> &MemoryLimiter {
        &self.local
    }

    /// Charge `cost` (clamped to `1..=burst`) to `key`'s bucket if it has room: in Redis, or
    /// in the local buckets if Redis does not answer within the bound.
    pub async fn check(&self, key: &RateKey, cost: u32) -> Decision {
        let limit = self.quota.capacity();
        let n = cost.clamp(1, limit);
        let t_us = self.quota.emission_interval().as_nanos() as f64 / 1000.0;
        let tau_us = t_us * f64::from(limit - 1);
        let redis_key = self.store.key_name(key);
        let invoke = || {
            let mut conn = self.store.conn.clone();
            let mut script = GCRA.key(&redis_key);
            script.arg(t_us).arg(tau_us).arg(n);
            async move { script.invoke_async::<(i64, i64, i64, i64)>(&mut conn).await }
        };
        let reply = self
            .store
            .health
            .call(async {
                match invoke().await {
                    // The connection was found dead (Redis restarted, or this is the failed
                    // reconnect of an earlier outage): the manager has just started a new one,
                    // which usually answers well within the bound, so Redis is back at the
                    // first probe. Refused, the script never ran; dropped mid-call, it may
                    // have (a check charged twice at worst).
                    Err(e) if e.is_connection_refusal() || e.is_connection_dropped() => {
                        invoke().await
                    }
                    other => other,
                }
            })
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
            Err(unavailable) => {
                tracing::trace!(error = %unavailable, "rate limit checked locally");
                self.local.check(key, cost)
            }
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
