//! Serving threads: one single-threaded tokio runtime per thread, each serving the
//! connections handed to it from accept to close, with upstream connection pools of its own
//! (as Envoy's workers and Pingora's no-steal runtime do).
//!
//! # Why not tokio's work-stealing runtime
//! hyper serves an HTTP/1 connection's requests inside the connection's task. When a handler
//! reads the request body it wakes that same task (hyper's body channel hands its sender a
//! wake-up), and tokio's multi-threaded scheduler answers a task waking itself by waking an
//! idle worker to share the queue: at a light load every request then moved from one thread
//! to the other (a `futex` wake, a context switch, the reactor handed over). Under load, tasks
//! and the upstream connections' tasks stolen between threads take their large futures and
//! buffers to another core's cache. A thread that owns a connection and the upstream
//! connections its requests use does neither; the cost is no stealing, so one thread's
//! connections cannot borrow an idle thread. New connections go to the thread with the fewest
//! open ones.

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::{runtime::Handle, sync::oneshot};

thread_local! {
    /// This thread's index among the serving threads; `usize::MAX` off them.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The serving thread this code runs on (`0..n`), or `None` off the serving threads (a
/// library user's runtime, the main runtime's background tasks).
pub fn current() -> Option<usize> {
    let slot = SLOT.with(Cell::get);
    (slot != usize::MAX).then_some(slot)
}

/// How many serving threads `server.threads` asks for: `0` is one per CPU core.
pub fn resolve(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The serving threads. Dropping stops them: tasks still running on them are dropped.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Connections open on it.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// Start `n` serving threads (at least one), named `portcullis-worker-{i}`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-worker-{i}"))
                .spawn(move || {
                    SLOT.with(|s| s.set(i));
                    // Runs what is spawned on it until stopped (or the sender is dropped).
                    let _ = rt.block_on(stopped);
                    // Connections still open past the drain are dropped with their tasks.
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// How many threads serve.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Never: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Run `connection` on the thread with the fewest open connections, counted open until
    /// it ends. It is built there (`make` runs on that thread, inside its runtime), so the
    /// socket it registers and the tasks it spawns belong to that thread.
    pub fn spawn<F, M>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        // A thread whose runtime has ended (it cannot, short of a panic outside every task)
        // would look idle and get every connection, to drop them: passed over.
        let Some(worker) = self
            .workers
            .iter()
            .filter(|w| w.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            tracing::error!("no serving thread is running; connection dropped");
            return;
        };
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        /// Counts the connection closed however its task ends (also when dropped unrun).
        struct Closed(Arc<AtomicUsize>);
        impl Drop for Closed {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let closed = Closed(open);
        worker.handle.spawn(async move {
            let _closed = closed;
            make().await;
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Spawn one task per thread that waits until all have started, and report where each ran.
    fn run_everywhere(workers: &Workers, n: usize) -> Vec<Option<usize>> {
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(tokio::sync::Barrier::new(n));
        for _ in 0..n {
            let tx = tx.clone();
            let gate = gate.clone();
            workers.spawn(move || async move {
                let here = current();
                // Held open until every task runs: each is counted open meanwhile.
                gate.wait().await;
                let _ = tx.send(here);
            });
        }
        let mut seen: Vec<_> = (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("task ran"))
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn connections_go_to_the_least_busy_thread_and_know_where_they_run() {
        assert_eq!(current(), None, "off the serving threads");
        let workers = Workers::start(3).expect("threads start");
        assert_eq!(workers.len(), 3);
        // Three held open at once: one each (fewest open first).
        assert_eq!(run_everywhere(&workers, 3), vec![Some(0), Some(1), Some(2)]);
        // Counted closed when they end: all three threads free again, so six spread evenly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while workers
            .workers
            .iter()
            .any(|w| w.open.load(Ordering::Relaxed) != 0)
        {
            assert!(std::time::Instant::now() < deadline, "counts never fell");
            std::thread::yield_now();
        }
        let six = run_everywhere(&workers, 6);
        for i in 0..3 {
            assert_eq!(six.iter().filter(|s| **s == Some(i)).count(), 2, "{six:?}");
        }
    }

    #[test]
    fn dropping_stops_the_threads_and_what_runs_on_them() {
        let workers = Workers::start(2).expect("threads start");
        let (tx, rx) = mpsc::channel::<()>();
        // A connection that never ends: dropped with its thread's runtime.
        workers.spawn(move || async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        // Its sender went with the task.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_thread_that_ended_gets_no_connections() {
        let mut workers = Workers::start(2).expect("threads start");
        // Thread 0's runtime ends, as it would after a panic outside its tasks.
        if let Some(stop) = workers.workers[0].stop.take() {
            let _ = stop.send(());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !workers.workers[0]
            .thread
            .as_ref()
            .is_some_and(|t| t.is_finished())
        {
            assert!(std::time::Instant::now() < deadline, "thread 0 never ended");
            std::thread::yield_now();
        }
        // Idle-looking thread 0 first by count, yet every connection runs on thread 1.
        assert_eq!(run_everywhere(&workers, 2), vec![Some(1), Some(1)]);
    }

    #[test]
    fn zero_threads_is_one_per_core() {
        assert!(resolve(0) >= 1);
        assert_eq!(resolve(3), 3);
    }
}
