//! The rate-limit layer against a mock upstream, with paused tokio time (and against a real
//! `redis-server` that each Redis test starts for itself, for the shared backend).

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header::RETRY_AFTER, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_core::{error::find_in_chain, ClientIp, RateLimitOutcome, RequestMeta, UserId};
use portcullis_mock::RedisServer;
use portcullis_rate_limit::{
    Backend, Config, KeyKind, Limiter, MemoryLimiter, Quota, RateKey, RateLimitLayer, RateLimited,
    RedisLimiter, RedisStore,
};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
           + Send
           + 'static {
        let calls = self.calls.clone();
        tower::service_fn(move |req: Request<Body>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Echo the body, so tests see it arrives unchanged after a model lookup.
                let meta = req.extensions().get::<RequestMeta>().cloned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut resp = Response::new(Full::new(body));
                if let Some(model) = meta.and_then(|m| m.model) {
                    resp.headers_mut()
                        .insert("x-seen-model", model.parse().unwrap());
                }
                Ok::<_, Infallible>(resp)
            }
        })
    }
}

fn config(rpm: u32, burst: u32, key: KeyKind) -> Config {
    Config {
        requests_per_minute: rpm,
        burst,
        key,
        queue_timeout: Duration::ZERO,
    }
}

fn with_key(k: &str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {k}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn plain() -> Request<Body> {
    Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

async fn send<S>(svc: &mut S, req: Request<Body>) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn limited(err: &BoxError) -> &RateLimited {
    find_in_chain::<RateLimited>(&**err).unwrap_or_else(|| panic!("not RateLimited: {err}"))
}

fn header<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn burst_is_allowed_then_429_with_retry_after_and_headers() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 3, KeyKind::ApiKey)).unwrap();
    let mut svc = layer.layer(up.service());

    for remaining in ["2", "1", "0"] {
        let resp = send(&mut svc, with_key("sk-a")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3");
        assert_eq!(header(&resp, "x-ratelimit-remaining"), remaining);
    }
    // After 3 at once the bucket refills in 3 intervals of 1s.
    let err = send(&mut svc, with_key("sk-a")).await.unwrap_err();
    let e = limited(&err);
    assert_eq!(e.retry_after, Duration::from_secs(1));
    assert_eq!(e.limit, 3);
    assert_eq!(e.remaining, 0);
    assert_eq!(e.reset_after, Duration::from_secs(3));
    let h = e.headers();
    assert_eq!(h[RETRY_AFTER], "1");
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-reset"], "3");
    assert_eq!(
        up.calls(),
        3,
        "the refused request never reached the upstream"
    );

    // Part way through the interval: Retry-After still rounds up to a whole second.
    tokio::time::advance(Duration::from_millis(400)).await;
    let err = send(&mut svc, with_key("sk-a")).await.unwrap_err();
    assert_eq!(limited(&err).retry_after, Duration::from_millis(600));
    assert_eq!(limited(&err).headers()[RETRY_AFTER], "1");
}

#[tokio::test(start_paused = true)]
async fn refills_after_the_emission_interval() {
    let up = Upstream::default();
    // 6/min: one every 10s.
    let layer = RateLimitLayer::from_config(&config(6, 1, KeyKind::ApiKey)).unwrap();
    let mut svc = layer.layer(up.service());
    send(&mut svc, with_key("k")).await.unwrap();
    let err = send(&mut svc, with_key("k")).await.unwrap_err();
    assert_eq!(limited(&err).retry_after, Duration::from_secs(10));
    assert_eq!(limited(&err).headers()[RETRY_AFTER], "10");

    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(send(&mut svc, with_key("k")).await.is_err());
    tokio::time::advance(Duration::from_millis(1)).await;
    let resp = send(&mut svc, with_key("k")).await.unwrap();
    assert_eq!(header(&resp, "x-ratelimit-reset"), "10");
    assert_eq!(up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn separate_keys_have_separate_budgets() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 2, KeyKind::ApiKey)).unwrap();
    let mut svc = layer.layer(up.service());
    // Clones of the layer and the service share buckets.
    let mut other = layer.clone().layer(up.service());
    send(&mut svc, with_key("sk-a")).await.unwrap();
    send(&mut other, with_key("sk-a")).await.unwrap();
    assert!(send(&mut svc, with_key("sk-a")).await.is_err());
    assert!(send(&mut other.clone(), with_key("sk-a")).await.is_err());

    // x-api-key and Authorization name the same caller; another key has a full bucket.
    let mut via_x_api_key = plain();
    via_x_api_key
        .headers_mut()
        .insert("x-api-key", "sk-a".parse().unwrap());
    assert!(send(&mut svc, via_x_api_key).await.is_err());
    let resp = send(&mut svc, with_key("sk-b")).await.unwrap();
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "1");
}

#[tokio::test(start_paused = true)]
async fn api_key_falls_back_to_client_ip() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 1, KeyKind::ApiKey)).unwrap();
    let mut svc = layer.layer(up.service());
    let from = |ip: &str| {
        let mut r = plain();
        r.extensions_mut()
            .insert(ClientIp(ip.parse::<IpAddr>().unwrap()));
        r
    };
    send(&mut svc, from("10.0.0.1")).await.unwrap();
    assert!(send(&mut svc, from("10.0.0.1")).await.is_err());
    send(&mut svc, from("10.0.0.2")).await.unwrap();
    // Keyless and IP-less callers share one anonymous bucket.
    send(&mut svc, plain()).await.unwrap();
    assert!(send(&mut svc, plain()).await.is_err());
    // A keyed caller from a limited IP is not limited by the IP.
    let mut keyed = from("10.0.0.1");
    keyed
        .headers_mut()
        .insert("authorization", "Bearer sk-z".parse().unwrap());
    send(&mut svc, keyed).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn global_key_is_shared_by_everyone() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 2, KeyKind::Global)).unwrap();
    let mut svc = layer.layer(up.service());
    send(&mut svc, with_key("a")).await.unwrap();
    send(&mut svc, with_key("b")).await.unwrap();
    let err = send(&mut svc, with_key("c")).await.unwrap_err();
    assert_eq!(limited(&err).limit, 2);
    assert!(send(&mut svc, plain()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn user_id_keying_uses_the_user_id_extension() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 1, KeyKind::UserId)).unwrap();
    let mut svc = layer.layer(up.service());
    let as_user = |u: Option<&str>, api_key: &str| {
        let mut r = with_key(api_key);
        if let Some(u) = u {
            r.extensions_mut().insert(UserId::new(u));
        }
        r
    };
    send(&mut svc, as_user(Some("alice"), "k1")).await.unwrap();
    // Same user, different API key: same budget.
    assert!(send(&mut svc, as_user(Some("alice"), "k2")).await.is_err());
    // Same API key, different user: its own budget.
    send(&mut svc, as_user(Some("bob"), "k1")).await.unwrap();
    // No extension: the "default" user.
    send(&mut svc, as_user(None, "k1")).await.unwrap();
    assert!(send(&mut svc, as_user(Some("default"), "k9"))
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn ip_keying_uses_the_client_ip_extension() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 1, KeyKind::Ip)).unwrap();
    let mut svc = layer.layer(up.service());
    let from = |ip: Option<&str>, key: &str| {
        let mut r = with_key(key);
        if let Some(ip) = ip {
            r.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        }
        r
    };
    send(&mut svc, from(Some("192.0.2.1"), "k1")).await.unwrap();
    assert!(send(&mut svc, from(Some("192.0.2.1"), "k2")).await.is_err());
    send(&mut svc, from(Some("2001:db8::1"), "k1"))
        .await
        .unwrap();
    send(&mut svc, from(None, "k1")).await.unwrap();
    assert!(send(&mut svc, from(None, "k2")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn queueing_waits_for_the_slot_then_succeeds() {
    let up = Upstream::default();
    let cfg = Config {
        queue_timeout: Duration::from_secs(5),
        ..config(60, 1, KeyKind::ApiKey)
    };
    let layer = RateLimitLayer::from_config(&cfg).unwrap();
    let mut svc = layer.layer(up.service());
    send(&mut svc, with_key("k")).await.unwrap();

    let start = Instant::now();
    let resp = send(&mut svc, with_key("k")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "waited exactly one interval"
    );
    assert_eq!(up.calls(), 2);

    // Three queued at once: they are let through one interval apart.
    let start = Instant::now();
    let waits = futures_util::future::join_all((0..3).map(|_| {
        let svc = layer.layer(up.service());
        async move {
            svc.oneshot(with_key("k")).await.unwrap();
            start.elapsed()
        }
    }))
    .await;
    let mut waits = waits;
    waits.sort();
    assert_eq!(
        waits,
        [1, 2, 3].map(Duration::from_secs),
        "each waited for its own slot"
    );
    assert_eq!(up.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_queue_timeout_is_refused_at_once() {
    let up = Upstream::default();
    let cfg = Config {
        queue_timeout: Duration::from_secs(5),
        ..config(6, 1, KeyKind::ApiKey) // one every 10s
    };
    let mut svc = RateLimitLayer::from_config(&cfg)
        .unwrap()
        .layer(up.service());
    send(&mut svc, with_key("k")).await.unwrap();
    let start = Instant::now();
    let err = send(&mut svc, with_key("k")).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "did not sleep before refusing"
    );
    assert_eq!(limited(&err).retry_after, Duration::from_secs(10));
    assert_eq!(up.calls(), 1);

    // Once the wait fits, the same request is queued instead.
    tokio::time::advance(Duration::from_secs(6)).await;
    let start = Instant::now();
    send(&mut svc, with_key("k")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

fn chat(model: &str) -> Request<Body> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post("/v1/chat/completions")
        .header("authorization", "Bearer sk-a")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn per_model_limit_is_tighter_and_reads_the_body() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 10, KeyKind::ApiKey))
        .unwrap()
        .with_model_limit("gpt-4-*", Quota::new(1, 2));
    let mut svc = layer.layer(up.service());

    let resp = send(&mut svc, chat("gpt-4-turbo")).await.unwrap();
    // The body is passed on unchanged and the parsed model is left for later layers.
    let body = resp.headers()["x-seen-model"].to_str().unwrap().to_owned();
    assert_eq!(body, "gpt-4-turbo");
    assert_eq!(
        header(&resp, "x-ratelimit-limit"),
        "2",
        "the tighter limit is reported"
    );
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "1");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.starts_with(br#"{"model":"gpt-4-turbo""#));

    // Another model matching the same pattern shares the model budget.
    send(&mut svc, chat("gpt-4-0613")).await.unwrap();
    let err = send(&mut svc, chat("gpt-4-turbo")).await.unwrap_err();
    let e = limited(&err);
    assert_eq!(e.limit, 2);
    assert_eq!(e.retry_after, Duration::from_secs(60), "1/min");

    // Other models are held only to the caller's overall limit.
    let resp = send(&mut svc, chat("gpt-4o-mini")).await.unwrap();
    assert_eq!(header(&resp, "x-ratelimit-limit"), "10");
    // 4 charged to sk-a (the refused model request counts: it was made), 6 left.
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "6");

    // The model budget is per caller.
    let mut other = chat("gpt-4-turbo");
    other
        .headers_mut()
        .insert("authorization", "Bearer sk-b".parse().unwrap());
    send(&mut svc, other).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn per_model_limit_uses_request_meta_when_present() {
    let up = Upstream::default();
    let layer = RateLimitLayer::from_config(&config(60, 10, KeyKind::ApiKey))
        .unwrap()
        .with_model_limit("big", Quota::new(1, 1));
    let mut svc = layer.layer(up.service());
    let with_meta = |model: &str| {
        // The body says nothing; the extension (from the validation layer) is what counts.
        let mut r = with_key("sk-a");
        r.extensions_mut().insert(RequestMeta {
            model: Some(model.into()),
            stream: false,
        });
        r
    };
    send(&mut svc, with_meta("big")).await.unwrap();
    assert!(send(&mut svc, with_meta("big")).await.is_err());
    send(&mut svc, with_meta("small")).await.unwrap();
    // Without a model anywhere, only the main limit applies.
    send(&mut svc, with_key("sk-a")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn per_model_limit_queues_too() {
    let up = Upstream::default();
    let cfg = Config {
        queue_timeout: Duration::from_secs(30),
        ..config(60, 10, KeyKind::ApiKey)
    };
    let mut svc = RateLimitLayer::from_config(&cfg)
        .unwrap()
        .with_model_limit("big", Quota::new(6, 1))
        .layer(up.service());
    send(&mut svc, chat("big")).await.unwrap();
    let start = Instant::now();
    send(&mut svc, chat("big")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn model_lookup_respects_the_body_cap() {
    let up = Upstream::default();
    let mut svc = RateLimitLayer::from_config(&Config::default())
        .unwrap()
        .with_model_limit("*", Quota::new(60, 1))
        .with_max_body_bytes(8)
        .layer(up.service());
    let err = send(&mut svc, chat("gpt-4o")).await.unwrap_err();
    assert!(
        find_in_chain::<portcullis_core::body::CollectError>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(up.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_boxed() {
    #[derive(Debug, thiserror::Error)]
    #[error("upstream broke")]
    struct Broke;
    let svc = tower::service_fn(|_req: Request<Body>| async { Err::<Response<Body>, _>(Broke) });
    let mut svc = RateLimitLayer::from_config(&Config::default())
        .unwrap()
        .layer(svc);
    let err = send(&mut svc, plain()).await.unwrap_err();
    assert!(err.downcast_ref::<Broke>().is_some());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_passes_through_and_the_ready_service_is_called() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut svc = RateLimitLayer::from_config(&config(60, 1, KeyKind::Global))
        .unwrap()
        .layer(mock);
    handle.allow(0);
    assert!(tokio_test::task::spawn(svc.ready()).poll().is_pending());
    handle.allow(1);
    let fut = svc.ready().await.unwrap().call(plain());
    let (_req, send_response) = handle.next_request().await.unwrap();
    send_response.send_response(Response::new(Full::new(Bytes::new())));
    let resp = fut.await.unwrap();
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
}

/// Insert 1M distinct keys, let them go idle, prune: the store is empty again; and under
/// continuous churn of new keys the store never holds more than a few seconds' worth.
#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_leave_memory_bounded() {
    let limiter = MemoryLimiter::new(Quota::new(60, 10)); // T = 1s
    let key = |i: u64| {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.to_le_bytes());
        RateKey(k)
    };
    for i in 0..1_000_000 {
        assert!(limiter.check(&key(i), 1).allowed);
    }
    assert_eq!(limiter.len(), 1_000_000);
    let approx = limiter.len() * std::mem::size_of::<(RateKey, u64)>();
    eprintln!("1M keys hold at least {} MiB of buckets", approx >> 20);

    // A key is indistinguishable from a fresh one once its bucket refilled (TAT + T).
    tokio::time::advance(Duration::from_secs(3)).await;
    limiter.check(&key(u64::MAX), 1);
    limiter.prune();
    assert_eq!(limiter.len(), 1, "only the key used just now remains");

    // Churn: 100k new keys per second for 10s, pruned every second: at most the keys of
    // the last ~2 intervals + 1 prune period are held.
    let mut peak = 0;
    for second in 0..10u64 {
        for i in 0..100_000 {
            limiter.check(&key(1_000_000 + second * 100_000 + i), 1);
        }
        peak = peak.max(limiter.len());
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.prune();
    }
    assert!(peak <= 300_001, "peak {peak} keys");
    assert!(
        limiter.len() <= 200_001,
        "{} keys after churn",
        limiter.len()
    );
}

// === Redis (each test owns a redis-server on a free port; they fail, not skip, without one) ===

/// A fresh server and a store on it. Keep the server alive for as long as the store is used.
async fn redis_store() -> (RedisServer, RedisStore) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to the test's redis-server")
        .with_prefix("portcullis-test:");
    (server, store)
}

#[tokio::test]
async fn redis_burst_then_429() {
    let (_redis, store) = redis_store().await;
    let cfg = config(1, 3, KeyKind::ApiKey); // one per minute: no refill during the test
    let layer = RateLimitLayer::from_config_with_backend(&cfg, Backend::Redis(store)).unwrap();
    let up = Upstream::default();
    let mut svc = layer.layer(up.service());
    for remaining in ["2", "1", "0"] {
        let resp = send(&mut svc, with_key("sk-a")).await.unwrap();
        assert_eq!(header(&resp, "x-ratelimit-remaining"), remaining);
        assert_eq!(header(&resp, "x-ratelimit-limit"), "3");
    }
    let err = send(&mut svc, with_key("sk-a")).await.unwrap_err();
    let e = limited(&err);
    // Just under 60s have to pass for the next slot; the bucket is full 3 minutes later.
    assert!(
        e.retry_after > Duration::from_secs(59) && e.retry_after <= Duration::from_secs(60),
        "{e:?}"
    );
    assert!(e.reset_after > Duration::from_secs(179) && e.reset_after <= Duration::from_secs(180));
    assert_eq!(e.headers()[RETRY_AFTER], "60");
    assert_eq!(up.calls(), 3);
    // Another key, its own budget.
    send(&mut svc, with_key("sk-b")).await.unwrap();
}

#[tokio::test]
async fn redis_replicas_share_one_budget_and_keys_expire() {
    let (server, store) = redis_store().await;
    // Two limiters with separate connections stand for two gateway replicas.
    let replica_a = Limiter::Redis(RedisLimiter::new(store.clone(), Quota::new(1, 4)));
    let second = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_prefix(store.prefix());
    let replica_b = Limiter::Redis(RedisLimiter::new(second, Quota::new(1, 4)));

    let key = RateKey::derive("api_key", b"shared");
    let mut allowed = 0;
    for i in 0..8 {
        let d = if i % 2 == 0 {
            replica_a.check(&key, 1).await
        } else {
            replica_b.check(&key, 1).await
        };
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 4, "the burst is shared, not per replica");

    // Cost is charged in one step (the tokens-per-minute hook).
    let other = RateKey::derive("api_key", b"other");
    let d = replica_a.check(&other, 3).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    assert!(!replica_b.check(&other, 2).await.allowed);

    // The bucket's key expires when it would be full again: idle keys do not accumulate.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.key_name(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3 * 60_000 && ttl <= 4 * 60_000, "ttl {ttl}ms");
}

#[tokio::test]
async fn redis_per_model_limits_use_the_same_backend() {
    let (_redis, store) = redis_store().await;
    let layer = RateLimitLayer::from_config_with_backend(
        &config(60, 10, KeyKind::ApiKey),
        Backend::Redis(store),
    )
    .unwrap()
    .with_model_limit("big", Quota::new(1, 1));
    assert!(matches!(
        layer.model_limiter("big"),
        Some(Limiter::Redis(_))
    ));
    let mut svc = layer.layer(Upstream::default().service());
    send(&mut svc, chat("big")).await.unwrap();
    assert!(send(&mut svc, chat("big")).await.is_err());
    send(&mut svc, chat("small")).await.unwrap();
}

/// The bound on one Redis call (the default) plus slack for a loaded test machine.
const OUTAGE_BOUND: Duration = Duration::from_millis(50 + 100);

/// Sends one request and returns whether it was allowed, asserting it was answered within
/// [`OUTAGE_BOUND`] (a refusal must be a 429, nothing else).
async fn timed<S>(svc: &mut S) -> bool
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    let start = std::time::Instant::now();
    let result = send(svc, plain()).await;
    let took = start.elapsed();
    assert!(took < OUTAGE_BOUND, "answered after {took:?}");
    match result {
        Ok(_) => true,
        Err(e) => {
            limited(&e);
            false
        }
    }
}

/// interface.md, "State in Redis": every call bounded (50 ms), local limits while Redis is
/// away (not fail-open), shared limits again once it is back.
#[tokio::test]
async fn redis_that_goes_away_limits_locally_then_shares_again_when_back() {
    let (mut server, store) = redis_store().await;
    let layer = RateLimitLayer::from_config_with_backend(
        &config(1, 2, KeyKind::Global),
        Backend::Redis(store.clone()),
    )
    .unwrap();
    let up = Upstream::default();
    let mut svc = layer.layer(up.service());
    assert!(timed(&mut svc).await);
    assert!(timed(&mut svc).await);
    assert!(!timed(&mut svc).await, "Redis's bucket is empty");

    server.stop();
    // The first request finds Redis gone (within the bound) and falls back to the local
    // bucket, which starts full: two more, then limited; every answer within the bound.
    let outage: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(timed(&mut svc).await);
        }
        v
    };
    assert_eq!(
        outage,
        [true, true, false, false, false, false],
        "local limits hold"
    );
    assert_eq!(up.calls(), 4);
    assert_eq!(
        store.health().outages(),
        1,
        "one outage, however many requests"
    );
    assert!(!store.health().is_up());

    // Back, and empty. The next probe (within a second) finds it; then the bucket is Redis's
    // again, which a second replica shares.
    server.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut allowed = 0;
    while store.health().recoveries() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis not used again 5 s after it came back"
        );
        // Locally limited until the probe that finds Redis (its empty bucket allows it); each
        // answer still quick.
        allowed += usize::from(timed(&mut svc).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        allowed, 1,
        "only the probe that found Redis back was allowed"
    );
    assert_eq!(store.health().outages(), 1);
    let replica_b = RedisLimiter::new(
        RedisStore::connect(&server.url())
            .await
            .unwrap()
            .with_prefix(store.prefix()),
        Quota::new(1, 2),
    );
    // The probe that found Redis charged its (empty) bucket once; replica B takes the last
    // slot, so this replica is refused by Redis's count, not its own.
    assert!(replica_b.check(&RateKey::global(), 1).await.allowed);
    assert!(!timed(&mut svc).await, "the budget is shared again");
    assert!(!replica_b.check(&RateKey::global(), 1).await.allowed);
}

/// interface.md: the gateway starts while Redis is down. A lazy store can be made without
/// Redis, limits locally within the bound, and picks Redis up when it appears.
#[tokio::test]
async fn a_lazy_store_starts_without_redis_and_picks_it_up_later() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let store = RedisStore::lazy(&url)
        .unwrap()
        .with_prefix("portcullis-test:");
    assert_eq!(
        store.health().name(),
        format!("redis at 127.0.0.1:{}", server.port())
    );
    let layer = RateLimitLayer::from_config_with_backend(
        &config(1, 1, KeyKind::Global),
        Backend::Redis(store.clone()),
    )
    .unwrap();
    let up = Upstream::default();
    let mut svc = layer.layer(up.service());
    assert!(timed(&mut svc).await);
    for _ in 0..3 {
        assert!(!timed(&mut svc).await, "limited locally");
    }
    assert_eq!(store.health().outages(), 1);

    server.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.health().recoveries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never picked up"
        );
        let _ = timed(&mut svc).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bucket now lives in Redis.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(store.key_name(&RateKey::global()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "the recovering check was made in Redis");
    assert_eq!(store.health().outages(), 1);
}

/// A configured bound: a Redis that answers slower than it is treated as down.
#[tokio::test]
async fn the_call_bound_is_configurable() {
    let addr = silent_redis().await;
    let store = RedisStore::lazy(&format!("redis://{addr}"))
        .unwrap()
        .with_call_timeout(Duration::from_millis(10));
    assert_eq!(store.health().call_timeout(), Duration::from_millis(10));
    let limiter = RedisLimiter::new(store.clone(), Quota::new(1, 1));
    let start = std::time::Instant::now();
    assert!(limiter.check(&RateKey::global(), 1).await.allowed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(10) && took < Duration::from_millis(100),
        "{took:?}"
    );
    // Backing off now: the local bucket answers at once.
    let start = std::time::Instant::now();
    assert!(!limiter.check(&RateKey::global(), 1).await.allowed);
    assert!(
        start.elapsed() < Duration::from_millis(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(store.health().outages(), 1);

    // A longer bound is waited for in full (the connection's own timeout does not cut it).
    let store = RedisStore::lazy(&format!("redis://{addr}"))
        .unwrap()
        .with_call_timeout(Duration::from_millis(200));
    let limiter = RedisLimiter::new(store, Quota::new(1, 1));
    let start = std::time::Instant::now();
    assert!(limiter.check(&RateKey::global(), 1).await.allowed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(400),
        "{took:?}"
    );
}

/// A server that accepts connections and never answers.
async fn silent_redis() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    addr
}

/// A minimal RESP server: answers the connection handshake, fails every script call.
async fn broken_redis() -> std::net::SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = sock.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                loop {
                    // A command is `*N` then N bulk strings `$len\r\n<bytes>\r\n`.
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        line.clear();
                        read.read_line(&mut line).await.unwrap();
                        let len: usize = line.trim().trim_start_matches('$').parse().unwrap();
                        let mut buf = vec![0; len + 2];
                        read.read_exact(&mut buf).await.unwrap();
                        args.push(String::from_utf8_lossy(&buf[..len]).to_uppercase());
                    }
                    let reply: &[u8] = match args.first().map(String::as_str) {
                        Some("EVALSHA" | "EVAL" | "SCRIPT") => b"-ERR store unavailable\r\n",
                        _ => b"+OK\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Redis errors (here: every script call refused) are treated like an outage: the local
/// buckets answer, so limits hold; the store is logged down once.
#[tokio::test]
async fn redis_errors_fall_back_to_local_limits() {
    let addr = broken_redis().await;
    let store = RedisStore::connect(&format!("redis://{addr}"))
        .await
        .unwrap();
    let limiter = RedisLimiter::new(store.clone(), Quota::new(1, 1));
    assert!(limiter.check(&RateKey::global(), 1).await.allowed);
    assert!(
        !limiter.check(&RateKey::global(), 1).await.allowed,
        "the local bucket limits"
    );

    let layer = RateLimitLayer::from_config_with_backend(
        &config(1, 1, KeyKind::Global),
        Backend::Redis(store.clone()),
    )
    .unwrap();
    let up = Upstream::default();
    let mut svc = layer.layer(up.service());
    send(&mut svc, plain()).await.unwrap();
    for _ in 0..3 {
        limited(&send(&mut svc, plain()).await.unwrap_err());
    }
    assert_eq!(up.calls(), 1, "with the store down, limits still hold");
    assert_eq!(store.health().outages(), 1);
}

/// A queued request must not hold the inner service's capacity while it waits: with an
/// inner service that takes one request at a time, a request for another caller goes
/// through while the queued one sleeps.
#[tokio::test(start_paused = true)]
async fn a_queued_request_holds_no_inner_capacity_while_it_waits() {
    type Req = Request<Body>;
    let (mock, mut handle) = tower_test::mock::pair::<Req, Response<Body>>();
    // poll_ready takes the one permit; it is held until the call's response (or drop).
    let inner = tower::limit::ConcurrencyLimit::new(mock, 1);
    let cfg = Config {
        queue_timeout: Duration::from_secs(5),
        ..config(60, 1, KeyKind::ApiKey)
    };
    let svc = RateLimitLayer::from_config(&cfg).unwrap().layer(inner);
    async fn next(
        handle: &mut tower_test::mock::Handle<Req, Response<Body>>,
    ) -> (Req, tower_test::mock::SendResponse<Response<Body>>) {
        tokio::time::timeout(Duration::from_millis(500), handle.next_request())
            .await
            .expect("no request reached the inner service within 500ms")
            .expect("inner service dropped")
    }

    // Spend k's burst.
    let first = tokio::spawn(svc.clone().oneshot(with_key("k")));
    let (_, send) = next(&mut handle).await;
    send.send_response(Response::new(Body::default()));
    let resp = first.await.unwrap().unwrap();
    assert_eq!(
        resp.extensions().get::<RateLimitOutcome>(),
        Some(&RateLimitOutcome::Allowed)
    );

    // k's next request queues for 1s.
    let queued = tokio::spawn(svc.clone().oneshot(with_key("k")));
    tokio::task::yield_now().await;
    // Another caller is let through by the limiter and must reach the inner service now.
    let other = tokio::spawn(svc.clone().oneshot(with_key("other")));
    let start = Instant::now();
    let (req, send) = next(&mut handle).await;
    assert_eq!(
        req.headers()["authorization"],
        "Bearer other",
        "the queued request went first"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    send.send_response(Response::new(Body::default()));
    other.await.unwrap().unwrap();

    // The queued request readies the inner service once its slot comes, and is sent.
    let (req, send) = tokio::time::timeout(Duration::from_secs(2), handle.next_request())
        .await
        .expect("the queued request never reached the inner service")
        .unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer k");
    send.send_response(Response::new(Body::default()));
    let resp = queued.await.unwrap().unwrap();
    assert_eq!(
        resp.extensions().get::<RateLimitOutcome>(),
        Some(&RateLimitOutcome::Queued(Duration::from_secs(1)))
    );
}

/// A refused request gives back the readiness its `poll_ready` reserved.
#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_its_readiness_back() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let inner = tower::limit::ConcurrencyLimit::new(mock, 1);
    let layer = RateLimitLayer::from_config(&config(60, 1, KeyKind::ApiKey)).unwrap();
    let mut refused = layer.layer(inner.clone());
    let mut ok = layer.layer(inner);
    // Spend k's burst on a separate caller path first.
    let spend = tokio::spawn(layer.layer(ok.get_ref().clone()).oneshot(with_key("k")));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Body::default()));
    spend.await.unwrap().unwrap();

    // `refused` stays alive after its call (as a buffer worker's service would).
    let err = refused
        .ready()
        .await
        .unwrap()
        .call(with_key("k"))
        .await
        .unwrap_err();
    assert_eq!(limited(&err).outcome(), RateLimitOutcome::Limited);
    tokio::time::timeout(Duration::from_millis(500), ok.ready())
        .await
        .expect("the refused request kept the inner service's only permit")
        .unwrap();
}
