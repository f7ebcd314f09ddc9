//! The Prometheus recorder: one per process, shared by every gateway built in it.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `portcullis_requests_total` | model, upstream, status | proxied requests, counted when the response body ends |
//! | `portcullis_request_duration_seconds` | model, upstream | histogram: request start to the end of the response body |
//! | `portcullis_time_to_first_byte_seconds` | model, upstream | histogram: request start to the response head |
//! | `portcullis_upstream_attempts_total` | upstream | upstream attempts (first tries and retries) |
//! | `portcullis_upstream_retries_total` | upstream | retries |
//! | `portcullis_upstream_attempt_duration_seconds` | upstream, outcome | histogram per attempt: status code, `timeout` or `connect_error` |
//! | `portcullis_circuit_breaker_state` | upstream | gauge: 0 closed, 1 open, 2 half-open |
//! | `portcullis_cache_total` | outcome | `miss`, `hit`, `coalesced`, `bypass` |
//! | `portcullis_rate_limited_total` | | requests refused by the rate limit |
//! | `portcullis_cookies` | upstream | gauge: cookies in the upstream's jar |
//! | `portcullis_tokens_total` | model, type | `input`/`output` tokens the upstreams reported (cache hits excluded) |
//! | `portcullis_websocket_connections` | | gauge: proxied WebSocket connections open now |
//! | `portcullis_websocket_total` | upstream | proxied WebSocket connections opened |
//! | `portcullis_log_dropped_total` | | JSON access lines dropped because stdout could not keep up |

use std::{sync::OnceLock, time::Duration};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: LLM calls run from milliseconds (cache hits) to minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often recorded histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The process's recorder handle, installing it on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed: then ours is not global, and
            // /metrics shows only what is recorded through it explicitly.
            if metrics::set_global_recorder(recorder).is_ok() {
                // Per-request counters keep this recorder's handles (portcullis_core::counter).
                portcullis_core::counter::pin_global_recorder();
                describe();
            }
            // Without a scrape, histogram samples pile up until rendered: fold them in on a
            // timer so an unscraped gateway does not grow.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("portcullis_requests_total", "Proxied requests.");
    describe_histogram!(
        "portcullis_request_duration_seconds",
        Unit::Seconds,
        "Request start to the end of the response body."
    );
    describe_histogram!(
        "portcullis_time_to_first_byte_seconds",
        Unit::Seconds,
        "Request start to the response head."
    );
    describe_counter!(
        "portcullis_upstream_attempts_total",
        "Upstream attempts, retries included."
    );
    describe_counter!("portcullis_upstream_retries_total", "Upstream retries.");
    describe_histogram!(
        "portcullis_upstream_attempt_duration_seconds",
        Unit::Seconds,
        "One upstream attempt, until its response head."
    );
    describe_gauge!(
        "portcullis_circuit_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        "portcullis_cache_total",
        "Dedup/cache outcomes: miss, hit, coalesced, bypass."
    );
    describe_counter!(
        "portcullis_rate_limited_total",
        "Requests refused by the rate limit."
    );
    describe_gauge!("portcullis_cookies", "Cookies in each upstream's jar.");
    describe_counter!(
        "portcullis_tokens_total",
        "Tokens reported by upstreams, by model and type (input, output)."
    );
    describe_gauge!(
        "portcullis_websocket_connections",
        "Proxied WebSocket connections open now."
    );
    describe_counter!(
        "portcullis_websocket_total",
        "Proxied WebSocket connections opened, by upstream."
    );
    describe_counter!(
        "portcullis_log_dropped_total",
        "JSON access lines dropped because stdout could not keep up."
    );
}

/// Render the text exposition format.
pub fn render() -> String {
    handle().render()
}
