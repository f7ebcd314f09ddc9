//! `portcullis_core::counter` with a global recorder: its own test binary, since a process
//! has one global recorder for its whole life.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex,
};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use portcullis_core::{counter, static_key};

/// Counts per key, and how many times a handle was asked for.
#[derive(Default)]
struct Counts {
    counts: Mutex<Vec<(Key, Arc<AtomicU64>)>>,
    registered: AtomicUsize,
}

impl Counts {
    fn of(&self, key: &Key) -> u64 {
        let counts = self.counts.lock().unwrap();
        counts
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, n)| n.load(Ordering::Relaxed))
    }
}

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registered.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap();
        let n = match counts.iter().find(|(k, _)| k == key) {
            Some((_, n)) => n.clone(),
            None => {
                let n = Arc::new(AtomicU64::new(0));
                counts.push((key.clone(), n.clone()));
                n
            }
        };
        Counter::from_arc(n)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// A `Counts` shared with the test: the global recorder must be owned by `metrics`.
struct Shared(Arc<Counts>);

impl Recorder for Shared {
    fn describe_counter(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_counter(k, u, d)
    }
    fn describe_gauge(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_gauge(k, u, d)
    }
    fn describe_histogram(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_histogram(k, u, d)
    }
    fn register_counter(&self, k: &Key, m: &Metadata<'_>) -> Counter {
        self.0.register_counter(k, m)
    }
    fn register_gauge(&self, k: &Key, m: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(k, m)
    }
    fn register_histogram(&self, k: &Key, m: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(k, m)
    }
}

#[test]
fn the_pinned_global_recorder_is_asked_once_per_key_and_a_local_one_every_time() {
    let hit = || static_key!("portcullis_test_total", "outcome" => "hit");
    let global = Arc::new(Counts::default());
    metrics::set_global_recorder(Shared(global.clone())).unwrap();

    // Installed but not pinned: asked on every count, as any recorder.
    counter::increment(hit());
    counter::increment(hit());
    assert_eq!(global.registered.load(Ordering::Relaxed), 2);

    // Pinned: one handle per key, kept; counts from every thread reach it.
    counter::pin_global_recorder();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    counter::increment(hit());
                }
            });
        }
    });
    assert_eq!(global.of(hit().key()), 402);
    assert_eq!(global.registered.load(Ordering::Relaxed), 3);

    // A thread's local recorder on top still gets each count, through its own handles.
    let local = Counts::default();
    metrics::with_local_recorder(&local, || {
        counter::increment(hit());
        counter::increment(hit());
    });
    assert_eq!(local.of(hit().key()), 2);
    assert_eq!(local.registered.load(Ordering::Relaxed), 2);
    assert_eq!(global.of(hit().key()), 402);
}
