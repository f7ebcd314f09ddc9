//! The state gauge follows every transition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use portcullis_circuit_breaker::{CircuitBreakerLayer, Config};
use tower::{service_fn, BoxError, Layer, ServiceExt};

#[derive(Default)]
struct Gauges(Mutex<Vec<(String, f64)>>);

struct Recording {
    labels: String,
    log: Arc<Gauges>,
}

impl GaugeFn for Recording {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.log
            .0
            .lock()
            .unwrap()
            .push((self.labels.clone(), value));
    }
}

struct TestRecorder(Arc<Gauges>);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        assert_eq!(key.name(), "portcullis_circuit_breaker_state");
        let labels = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect::<Vec<_>>()
            .join(",");
        Gauge::from_arc(Arc::new(Recording {
            labels,
            log: Arc::clone(&self.0),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn gauge_tracks_transitions() {
    let log = Arc::new(Gauges::default());
    let recorder = TestRecorder(Arc::clone(&log));
    // Paused-time tests run on one thread, so a thread-local recorder sees everything.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = CircuitBreakerLayer::new(
        "openai",
        Config {
            failure_threshold: 1,
            open_timeout: Duration::from_secs(5),
            success_threshold: 1,
            minimum_requests: 1,
            ..Config::default()
        },
    );
    let fail = Arc::new(Mutex::new(true));
    let upstream = {
        let fail = Arc::clone(&fail);
        service_fn(move |_req: Request<()>| {
            let status = if *fail.lock().unwrap() { 500 } else { 200 };
            async move {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::from_u16(status)?;
                Ok::<_, BoxError>(res)
            }
        })
    };
    let svc = layer.layer(upstream);

    svc.clone().oneshot(Request::new(())).await.unwrap(); // 500: opens
    svc.clone().oneshot(Request::new(())).await.unwrap_err(); // fails fast: no change
    tokio::time::advance(Duration::from_secs(5)).await;
    *fail.lock().unwrap() = false;
    svc.clone().oneshot(Request::new(())).await.unwrap(); // probe: half-open, then closed

    let seen = log.0.lock().unwrap().clone();
    let values: Vec<f64> = seen.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, [0.0, 1.0, 2.0, 0.0]);
    assert!(
        seen.iter().all(|(labels, _)| labels == "upstream=openai"),
        "{seen:?}"
    );
}
