//! Counters whose name and label are known when the code is compiled, counted without making
//! a key on every call.
//!
//! `metrics::counter!("name", "label" => value)` builds its key at each call: a vector for
//! the label (an allocation) and the key's hash. For a per-request counter whose label takes
//! one of a few fixed values (a cache outcome, where a memory id came from), [`static_key!`](crate::static_key)
//! makes each key once, at compile time, and [`increment`] hands it to the recorder.
//!
//! The process's global recorder, once the program says which it is
//! ([`pin_global_recorder`], after `metrics::set_global_recorder`), is asked for each key's
//! handle once, and the handle kept beside the key: each count is then one atomic add, not a
//! registry lookup (a read lock, the key compared and copied, the handle made and dropped:
//! ~300 instructions and five atomic operations). Any other recorder is asked on every call, so
//! a recorder installed after the first request, or a thread's local recorder in a test, gets
//! every count. A global recorder is never replaced or dropped, so a kept handle is never stale,
//! and no other recorder can be found at its address while it lives.
//!
//! ```
//! use portcullis_core::{counter, static_key};
//!
//! fn count(hit: bool) {
//!     counter::increment(if hit {
//!         static_key!("example_total", "outcome" => "hit")
//!     } else {
//!         static_key!("example_total", "outcome" => "miss")
//!     });
//! }
//! count(true);
//! ```

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    OnceLock,
};

use metrics::{Counter, Key, Level, Metadata, Recorder};

/// A `&'static` [`StaticCounter`] of `name` with one label, made at compile time (see the
/// [module](crate::counter)).
#[macro_export]
macro_rules! static_key {
    ($name:expr, $label:expr => $value:expr) => {{
        static LABELS: [$crate::__metrics::Label; 1] =
            [$crate::__metrics::Label::from_static_parts($label, $value)];
        static COUNTER: $crate::counter::StaticCounter = $crate::counter::StaticCounter::new(
            $crate::__metrics::Key::from_static_parts($name, &LABELS),
        );
        &COUNTER
    }};
}

/// A counter's key made at compile time ([`static_key!`](crate::static_key)), with the global recorder's handle
/// for it once it was asked for one.
#[derive(Debug)]
pub struct StaticCounter {
    key: Key,
    global: OnceLock<Counter>,
}

impl StaticCounter {
    #[doc(hidden)]
    pub const fn new(key: Key) -> Self {
        Self {
            key,
            global: OnceLock::new(),
        }
    }

    /// The counter's key.
    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// The address of the global recorder named by [`pin_global_recorder`]; 0: none.
static PINNED: AtomicUsize = AtomicUsize::new(0);

fn address(recorder: &dyn Recorder) -> usize {
    std::ptr::from_ref(recorder).cast::<()>() as usize
}

/// Say that the global recorder is installed (call it after `metrics::set_global_recorder`
/// succeeded): [`increment`] then keeps that recorder's handle of each key. Read on a thread
/// of its own, where no local recorder can be set.
pub fn pin_global_recorder() {
    let global = std::thread::scope(|s| {
        s.spawn(|| metrics::with_recorder(address))
            .join()
            .unwrap_or(0)
    });
    PINNED.store(global, Ordering::Release);
}

/// Add one to the counter `key` in the recorder installed now (the global one, or the
/// thread's local one).
pub fn increment(key: &'static StaticCounter) {
    static METADATA: Metadata<'static> = Metadata::new("portcullis", Level::INFO, None);
    metrics::with_recorder(|r| {
        let pinned = PINNED.load(Ordering::Acquire);
        if pinned != 0 && pinned == address(r) {
            key.global
                .get_or_init(|| r.register_counter(&key.key, &METADATA))
                .increment(1);
        } else {
            r.register_counter(&key.key, &METADATA).increment(1);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    };

    use metrics::{Counter, Gauge, Histogram, KeyName, Recorder, SharedString, Unit};

    use super::*;

    /// Counts per key, as a recorder sees them.
    #[derive(Default)]
    struct Counts(Mutex<Vec<(Key, Arc<AtomicU64>)>>);

    impl Counts {
        fn of(&self, name: &str, label: (&str, &str)) -> u64 {
            let counts = self.0.lock().unwrap();
            counts
                .iter()
                .filter(|(k, _)| {
                    k.name() == name
                        && k.labels()
                            .map(|l| (l.key(), l.value()))
                            .eq(std::iter::once(label))
                })
                .map(|(_, n)| n.load(Ordering::Relaxed))
                .sum()
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut counts = self.0.lock().unwrap();
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

    fn hit() -> &'static StaticCounter {
        static_key!("portcullis_test_total", "outcome" => "hit")
    }

    #[test]
    fn static_keys_count_like_the_macro_and_reach_a_recorder_installed_later() {
        // Counted before any recorder: lost, as with `counter!`.
        increment(hit());
        let counts = Counts::default();
        metrics::with_local_recorder(&counts, || {
            increment(hit());
            increment(hit());
            increment(static_key!("portcullis_test_total", "outcome" => "miss"));
            metrics::counter!("portcullis_test_total", "outcome" => "hit").increment(1);
        });
        assert_eq!(counts.of("portcullis_test_total", ("outcome", "hit")), 3);
        assert_eq!(counts.of("portcullis_test_total", ("outcome", "miss")), 1);
        assert_eq!(
            hit().key(),
            &Key::from_parts(
                "portcullis_test_total",
                vec![metrics::Label::new("outcome", "hit"),]
            )
        );
    }
}
