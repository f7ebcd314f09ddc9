//! End to end (issue 14, item 11): `state.backend = "redis"` while Redis goes away and comes
//! back, and a gateway started while Redis is down. interface.md, "State in Redis": every
//! Redis call is bounded (50 ms); while Redis is unreachable the gateway uses its local state
//! for limits and cache, logs one warning when it goes and one when it returns, and adds no
//! latency beyond that bound.
//!
//! Each test starts its own `redis-server` (killed and restarted on the same port), a mock
//! upstream and two gateways on that Redis (two replicas, to see whether state is shared).

mod support;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex, Once, PoisonError,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use portcullis_mock::{MockUpstream, RedisServer};
use serde_json::json;
use support::*;

// === log capture ===

/// Every `warn` line the process logs (the gateways run in this process).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary; global, so the gateways' tasks log
/// to it from any thread).
fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
    });
}

/// (went-away lines, came-back lines) logged for the Redis on `port`.
fn transitions(port: u16) -> (usize, usize) {
    let text =
        String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("redis at 127.0.0.1:{port}")))
        .collect();
    let down = ours.iter().filter(|l| l.contains("unreachable")).count();
    let up = ours
        .iter()
        .filter(|l| l.contains("reachable again"))
        .count();
    assert_eq!(ours.len(), down + up, "unexpected lines: {ours:#?}");
    (down, up)
}

// === helpers ===

fn config(mock: &MockUpstream, redis_url: &str) -> String {
    mock_config(
        &mock.url(),
        &format!(
            "[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 3\nkey = \"api_key\"\n\
             [dedup]\nenabled = true\ncache_ttl = \"30s\"\n\
             [state]\nbackend = \"redis\"\nredis_url = \"{redis_url}\""
        ),
    )
}

/// Unique per call and per run, so state left in Redis by earlier runs never matches.
fn nonce(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

fn body(content: &str) -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": content}]})
}

async fn post(gw: &TestGateway, key: &str, content: &str) -> Resp {
    let auth = format!("Bearer {key}");
    post_json(
        &gw.url("/v1/chat/completions"),
        &body(content),
        &[("authorization", &auth)],
    )
    .await
}

/// Statuses of `n` requests from one fresh caller.
async fn burst(gw: &TestGateway, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(post(gw, key, &nonce("burst")).await.status.as_u16());
    }
    out
}

/// Whether the two gateways share one budget: a fresh caller's burst of 3 on `a`, then `b`
/// must refuse it.
async fn shared_budget(a: &TestGateway, b: &TestGateway) -> bool {
    let key = nonce("sk-shared");
    assert_eq!(burst(a, &key, 3).await, [200, 200, 200]);
    match post(b, &key, "one more").await.status.as_u16() {
        429 => true,
        200 => false,
        other => panic!("status {other}"),
    }
}

/// Whether the two gateways share one cache: a fresh caller's answer on `a` is a hit on `b`.
async fn shared_cache(a: &TestGateway, b: &TestGateway) -> bool {
    let key = nonce("sk-cache");
    let content = nonce("cached");
    let first = post(a, &key, &content).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-portcullis-cache"), Some("miss"));
    let second = post(b, &key, &content).await;
    assert_eq!(second.status, 200, "{}", second.text());
    second.header("x-portcullis-cache") == Some("hit")
}

/// Waits until both gateways use Redis again: budgets and cache shared across them.
async fn wait_until_shared(a: &TestGateway, b: &TestGateway) -> Duration {
    let start = Instant::now();
    loop {
        if shared_budget(a, b).await && shared_cache(a, b).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "state not shared again 5 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === light load, measured ===

const BEFORE: u8 = 0;
const OUTAGE: u8 = 1;
const AFTER: u8 = 2;

/// One sample: the phase the request was sent in, its status and latency.
type Sample = (u8, u16, Duration);

/// Sends a request every ~20 ms to each gateway (each from a fresh caller, so none is rate
/// limited) on one kept-alive client, until `stop`.
fn load(
    gws: Vec<String>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let client = client();
        let mut samples = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for url in &gws {
                i += 1;
                let p = phase.load(Ordering::Relaxed);
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer sk-load-{i}-{}", nonce("")))
                    .body(Full::new(Bytes::from(
                        body(&format!("load {i}")).to_string(),
                    )))
                    .unwrap();
                let start = Instant::now();
                let resp = client.request(req).await.expect("request");
                let status = resp.status().as_u16();
                resp.into_body().collect().await.expect("body");
                let took = start.elapsed();
                // A request that overlapped the outage at either end counts as in it.
                let end = phase.load(Ordering::Relaxed);
                let p = if p == OUTAGE || end == OUTAGE {
                    OUTAGE
                } else {
                    p.max(end)
                };
                samples.push((p, status, took));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    })
}

fn percentile(samples: &[Sample], phase: u8, p: f64) -> Duration {
    let mut lat: Vec<Duration> = samples
        .iter()
        .filter(|s| s.0 == phase)
        .map(|s| s.2)
        .collect();
    assert!(!lat.is_empty(), "no samples in phase {phase}");
    lat.sort();
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i]
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_costs_no_errors_and_no_latency_and_state_is_shared_again_after() {
    capture_logs();
    let mut redis = RedisServer::start();
    let port = redis.port();
    let mock = MockUpstream::start().await.unwrap();
    let config = config(&mock, &redis.url());
    let gw1 = TestGateway::start(&config).await;
    let gw2 = TestGateway::start(&config).await;
    assert!(
        shared_budget(&gw1, &gw2).await,
        "one budget across replicas"
    );
    assert!(shared_cache(&gw1, &gw2).await, "one cache across replicas");

    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let urls = vec![
        gw1.url("/v1/chat/completions"),
        gw2.url("/v1/chat/completions"),
    ];
    let load = load(urls, phase.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Redis goes away (SIGKILL) under load.
    redis.stop();
    phase.store(OUTAGE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Limits hold, per replica: each gateway has its own local budget now.
    let key = nonce("sk-outage");
    assert_eq!(burst(&gw1, &key, 4).await, [200, 200, 200, 429]);
    assert_eq!(burst(&gw2, &key, 4).await, [200, 200, 200, 429]);
    let limited = post(&gw1, &key, "again").await;
    assert_eq!(limited.header("x-portcullis-error"), Some("rate_limited"));
    // The cache goes on in each process.
    let content = nonce("outage-cache");
    assert_eq!(
        post(&gw1, "sk-outage-cache", &content)
            .await
            .header("x-portcullis-cache"),
        Some("miss")
    );
    assert_eq!(
        post(&gw1, "sk-outage-cache", &content)
            .await
            .header("x-portcullis-cache"),
        Some("hit")
    );
    assert!(
        !shared_budget(&gw1, &gw2).await,
        "not shared while Redis is away"
    );
    // Long enough for several probes (one a second) to find Redis still gone.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    // Back, empty, on the same port.
    redis.restart().unwrap();
    phase.store(AFTER, Ordering::Relaxed);
    let took = wait_until_shared(&gw1, &gw2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = load.await.unwrap();

    let errors: Vec<&Sample> = samples.iter().filter(|s| s.1 != 200).collect();
    assert!(errors.is_empty(), "requests failed under load: {errors:?}");
    let count = |p: u8| samples.iter().filter(|s| s.0 == p).count();
    let (before_p99, outage_p99) = (
        percentile(&samples, BEFORE, 0.99),
        percentile(&samples, OUTAGE, 0.99),
    );
    eprintln!(
        "redis outage: before n={} p50={:?} p99={:?}; outage n={} p50={:?} p99={:?} max={:?}; \
         after n={} p99={:?}; shared again {:?} after restart",
        count(BEFORE),
        percentile(&samples, BEFORE, 0.5),
        before_p99,
        count(OUTAGE),
        percentile(&samples, OUTAGE, 0.5),
        outage_p99,
        percentile(&samples, OUTAGE, 1.0),
        count(AFTER),
        percentile(&samples, AFTER, 0.99),
        took,
    );
    assert!(count(OUTAGE) >= 50, "too few samples: {}", count(OUTAGE));
    assert!(
        outage_p99.saturating_sub(before_p99) < Duration::from_millis(60),
        "added p99 during the outage: {:?} -> {:?}",
        before_p99,
        outage_p99
    );
    // One line per gateway per transition, however many requests met the outage.
    assert_eq!(transitions(port), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_while_redis_is_down_and_picks_it_up_later() {
    capture_logs();
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.stop();
    let mock = MockUpstream::start().await.unwrap();
    let config = config(&mock, &redis.url());
    let start = Instant::now();
    let gw1 = TestGateway::start(&config).await;
    let gw2 = TestGateway::start(&config).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "build waited for Redis: {:?}",
        start.elapsed()
    );

    // Served, on local state: limits per replica, cache per process, quickly.
    let key = nonce("sk-down");
    let start = Instant::now();
    assert_eq!(burst(&gw1, &key, 4).await, [200, 200, 200, 429]);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(burst(&gw2, &key, 4).await, [200, 200, 200, 429]);
    let content = nonce("down-cache");
    let r = post(&gw1, "sk-down-cache", &content).await;
    assert_eq!(r.header("x-portcullis-cache"), Some("miss"));
    let r = post(&gw1, "sk-down-cache", &content).await;
    assert_eq!(r.header("x-portcullis-cache"), Some("hit"));
    assert_eq!(transitions(port), (2, 0));

    redis.restart().unwrap();
    let took = wait_until_shared(&gw1, &gw2).await;
    eprintln!("started without redis: shared {took:?} after it appeared");
    assert_eq!(transitions(port), (2, 2));
}

/// A Redis that accepts connections and never answers (a hung server, a black-holed network)
/// is where the bound matters: a killed Redis refuses at once. Each request pays at most the
/// 50 ms bound, and only the first and one probe a second pay it at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_costs_at_most_the_bound_and_only_on_probes() {
    capture_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&config(&mock, &format!("redis://127.0.0.1:{port}"))).await;
    // The first request meets the hung Redis: it pays the bound, then local state serves.
    let key = nonce("sk-hang");
    let t = Instant::now();
    assert_eq!(post(&gw, &key, "first").await.status, 200);
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(50 + 60),
        "first request: {first:?}"
    );
    assert_eq!(burst(&gw, &key, 3).await, [200, 200, 429], "local limits");

    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        let r = post(&gw, &nonce("sk-hang-load"), "load").await;
        assert_eq!(r.status, 200, "{}", r.text());
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    let slow = lat
        .iter()
        .filter(|d| **d >= Duration::from_millis(40))
        .count();
    eprintln!(
        "hung redis: first request {first:?}; then n={} p50={:?} p99={:?} max={:?}; {} at the \
         bound",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1],
        slow
    );
    assert!(
        *lat.last().unwrap() < Duration::from_millis(50 + 60),
        "a request waited past the bound: {:?}",
        lat.last()
    );
    // One probe a second (each may pay the bound in both stores' calls, at most one each).
    assert!(slow <= 4, "{slow} requests paid the bound: {lat:?}");
    assert_eq!(transitions(port), (1, 0), "one warning, then quiet");
}
