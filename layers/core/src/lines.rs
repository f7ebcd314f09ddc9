//! [`LineWriter`]: log lines appended by one background thread in batches, so a request never
//! waits on a disk or a pipe and never pays a write syscall or a thread wake-up of its own.
//!
//! # Why not a channel
//!
//! A channel whose receiver parks when it runs dry wakes that thread (a futex call and a
//! context switch) for nearly every line under moderate load: measured, that was a tenth of
//! the gateway's CPU with the access and audit logs on. Here producers append to a shared
//! buffer under a short lock; the writer thread takes the whole buffer every
//! [`BATCH_INTERVAL`] under load (up to [`MAX_BATCH_INTERVAL`] while lines are sparse),
//! writes it with one call and flushes. Only a writer that has been idle for a while parks,
//! and only then does a producer wake it (one atomic load otherwise).
//!
//! The buffer is bounded by a line count: past it, lines are dropped and counted
//! ([`LineWriter::dropped`]), never waited for.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::sync::oneshot;

/// How long the writer thread gathers lines before it writes them, at the least: under load a
/// line waits at most this long.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);

/// How long the writer thread gathers lines at the most: while lines are sparse (a light
/// load), it waits longer between writes, so it wakes ~50 times a second instead of ~200 (at
/// 200 requests/s those wake-ups were ~7 % of the gateway's CPU per writer). Short enough
/// that a line still reaches its file soon after its answer.
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// How long the writer thread goes without lines before it parks until the next one.
const IDLE_BEFORE_PARKING: Duration = Duration::from_secs(1);

/// The wait before the next batch, after a batch of `lines`: twice as long (up to
/// [`MAX_BATCH_INTERVAL`]) while batches hold fewer than 4 lines, half as long (down to
/// [`BATCH_INTERVAL`]) once they hold more than 32. Between the two it stays.
fn next_interval(current: Duration, lines: usize) -> Duration {
    if lines < 4 {
        (current * 2).min(MAX_BATCH_INTERVAL)
    } else if lines > 32 {
        (current / 2).max(BATCH_INTERVAL)
    } else {
        current
    }
}

/// Where the lines go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Appended to a file (created if missing); [`LineWriter::reopen`] opens the path afresh
    /// (after logrotate moved the file).
    File(PathBuf),
    /// The process's standard output.
    Stdout,
}

/// What the writer reports about a write: the first failure of a run, and the recovery.
pub type ReportFn = Box<dyn Fn(WriteEvent<'_>) + Send + Sync>;

/// A change in the writer's fortunes, for the owner to log and count.
#[derive(Debug)]
pub enum WriteEvent<'a> {
    /// A write failed (every failing write is reported; `first` marks the start of a run).
    Failed {
        /// The error.
        error: &'a io::Error,
        /// Whether the previous write succeeded.
        first: bool,
    },
    /// Writes succeed again after failures.
    Recovered,
    /// The file was reopened (or could not be: the error, and writing goes on to the old one).
    Reopened(Option<&'a io::Error>),
}

/// Someone waiting for the lines queued before them to be written.
enum Waiter {
    Task(oneshot::Sender<()>),
    Thread(std::sync::mpsc::Sender<()>),
}

impl Waiter {
    fn done(self) {
        match self {
            Self::Task(t) => {
                let _ = t.send(());
            }
            Self::Thread(t) => {
                let _ = t.send(());
            }
        }
    }
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    waiters: Vec<Waiter>,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    parked: AtomicBool,
    reopen: AtomicBool,
    dropped: AtomicU64,
    max_lines: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_if_parked(&self) {
        if self.parked.load(Ordering::Acquire) {
            self.parked.store(false, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// Appends lines through a background thread (see the [module docs](self)). Cloning shares
/// the thread; it ends when the last clone is dropped, after writing what was queued.
#[derive(Clone)]
pub struct LineWriter {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineWriter")
            .field("max_lines", &self.shared.max_lines)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Closes the queue when the last [`LineWriter`] goes, so the thread writes what is left and
/// ends.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.parked.store(false, Ordering::Release);
        self.0.wake.notify_one();
    }
}

impl LineWriter {
    /// Open the sink and start the writer thread, queueing at most `max_lines` lines.
    pub fn start(sink: Sink, max_lines: usize, report: ReportFn) -> io::Result<Self> {
        let out = Output::open(&sink)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            parked: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            max_lines: max_lines.max(1),
        });
        let thread_shared = shared.clone();
        let name = match &sink {
            Sink::File(_) => "portcullis-log-file",
            Sink::Stdout => "portcullis-log-stdout",
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&thread_shared, sink, out, &report))?;
        Ok(Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// Queue one line (`line` should end with `\n`). Returns `false`, and counts the line as
    /// dropped, when the queue is full. Never waits for the writer.
    pub fn send(&self, line: &[u8]) -> bool {
        {
            let mut p = self.shared.lock();
            if p.lines >= self.shared.max_lines {
                drop(p);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            p.bytes.extend_from_slice(line);
            p.lines += 1;
        }
        self.shared.wake_if_parked();
        true
    }

    /// Lines dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Open the file sink's path afresh before the next write (logrotate's `postrotate`).
    /// Lines queued before the call may still go to the old file.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.shared.parked.store(false, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Wait until every line queued before this call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.push_waiter(Waiter::Task(done));
        let _ = wait.await;
    }

    /// [`flush`](Self::flush) for synchronous code (exit paths, `Drop`), waiting at most
    /// `timeout`. Safe to call from inside an async runtime (it blocks the thread briefly).
    pub fn flush_blocking(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        self.push_waiter(Waiter::Thread(done));
        let _ = wait.recv_timeout(timeout);
    }

    fn push_waiter(&self, w: Waiter) {
        self.shared.lock().waiters.push(w);
        self.shared.parked.store(false, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

enum Output {
    File(File),
    Stdout(io::Stdout),
}

impl Output {
    fn open(sink: &Sink) -> io::Result<Self> {
        Ok(match sink {
            Sink::File(path) => Self::File(open_append(path)?),
            Sink::Stdout => Self::Stdout(io::stdout()),
        })
    }

    fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::File(f) => f.write_all(bytes),
            Self::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(bytes)?;
                s.flush()
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn run(shared: &Shared, sink: Sink, mut out: Output, report: &ReportFn) {
    let mut failing = false;
    let mut idle = Duration::ZERO;
    let mut interval = BATCH_INTERVAL;
    let mut spare = Vec::new();
    loop {
        let (mut batch, waiters, closed) = {
            let mut p = shared.lock();
            std::mem::swap(&mut p.bytes, &mut spare);
            interval = next_interval(interval, p.lines);
            p.lines = 0;
            (
                std::mem::take(&mut spare),
                std::mem::take(&mut p.waiters),
                p.closed,
            )
        };
        if shared.reopen.swap(false, Ordering::AcqRel) {
            if let Sink::File(path) = &sink {
                match open_append(path) {
                    Ok(f) => {
                        out = Output::File(f);
                        report(WriteEvent::Reopened(None));
                    }
                    Err(e) => report(WriteEvent::Reopened(Some(&e))),
                }
            }
        }
        let wrote = !batch.is_empty();
        if wrote {
            match out.write_batch(&batch) {
                Ok(()) if failing => {
                    failing = false;
                    report(WriteEvent::Recovered);
                }
                Ok(()) => {}
                Err(e) => {
                    report(WriteEvent::Failed {
                        error: &e,
                        first: !failing,
                    });
                    failing = true;
                }
            }
        }
        for w in waiters {
            w.done();
        }
        if closed {
            return;
        }
        // Keep the allocation for the next batch (bounded: a huge burst is not kept).
        batch.clear();
        if batch.capacity() <= 1 << 20 {
            spare = batch;
        }
        idle = if wrote {
            Duration::ZERO
        } else {
            idle + interval
        };
        let p = shared.lock();
        if idle >= IDLE_BEFORE_PARKING && p.bytes.is_empty() && p.waiters.is_empty() {
            // Idle: park until a producer, a flush or a reopen wakes us.
            shared.parked.store(true, Ordering::Release);
            let _p = shared
                .wake
                .wait_while(p, |p| {
                    shared.parked.load(Ordering::Acquire) && !p.closed && p.waiters.is_empty()
                })
                .unwrap_or_else(|e| e.into_inner());
            idle = Duration::ZERO;
        } else {
            // Gather a batch; a flush, a reopen or closing cuts the wait short.
            let _ = shared
                .wake
                .wait_timeout_while(p, interval, |p| {
                    !p.closed && p.waiters.is_empty() && !shared.reopen.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> ReportFn {
        Box::new(|_| {})
    }

    #[test]
    fn sparse_lines_stretch_the_wait_and_a_load_brings_it_back() {
        // A light load: batches of one line stretch the wait to the longest.
        let mut t = BATCH_INTERVAL;
        let mut waits = Vec::new();
        for _ in 0..4 {
            t = next_interval(t, 1);
            waits.push(t.as_millis());
        }
        assert_eq!(waits, [10, 20, 20, 20]);
        // Between 4 and 32 lines a batch the wait stays.
        let ten = Duration::from_millis(10);
        assert_eq!(next_interval(ten, 4), ten);
        assert_eq!(next_interval(ten, 32), ten);
        // A load: full batches halve it back to the shortest.
        let mut waits = Vec::new();
        for _ in 0..3 {
            t = next_interval(t, 500);
            waits.push(t.as_millis());
        }
        assert_eq!(waits, [10, 5, 5]);
    }

    #[tokio::test]
    async fn lines_reach_the_file_in_order_and_flush_waits_for_them() {
        let dir = std::env::temp_dir().join(format!("pc-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let _ = std::fs::remove_file(&path);
        let w = LineWriter::start(Sink::File(path.clone()), 1000, quiet()).unwrap();
        for i in 0..100 {
            assert!(w.send(format!("line {i}\n").as_bytes()));
        }
        w.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // No writer thread: nothing drains the queue while the test fills it.
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            parked: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            max_lines: 3,
        });
        let w = LineWriter {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        };
        let sent: Vec<bool> = (0..5)
            .map(|i| w.send(format!("{i}\n").as_bytes()))
            .collect();
        assert_eq!(sent, [true, true, true, false, false]);
        assert_eq!(w.dropped(), 2);
        assert_eq!(w.shared.lock().bytes, b"0\n1\n2\n");
    }

    #[tokio::test]
    async fn reopen_follows_a_moved_file() {
        let dir = std::env::temp_dir().join(format!("pc-lines-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let _ = std::fs::remove_file(&path);
        let w = LineWriter::start(Sink::File(path.clone()), 100, quiet()).unwrap();
        w.send(b"before\n");
        w.flush().await;
        std::fs::rename(&path, dir.join("c.log.1")).unwrap();
        w.reopen();
        w.send(b"after\n");
        w.flush().await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("c.log.1")).unwrap(),
            "before\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn dropping_the_last_writer_writes_what_is_queued() {
        let dir = std::env::temp_dir().join(format!("pc-lines-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.log");
        let _ = std::fs::remove_file(&path);
        let w = LineWriter::start(Sink::File(path.clone()), 100, quiet()).unwrap();
        w.send(b"first\n");
        w.flush_blocking(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let shared = w.shared.clone();
        w.send(b"last words\n");
        drop(w);
        // The thread ends after writing: wait until the queue is empty and closed.
        for _ in 0..500 {
            let p = shared.lock();
            if p.closed && p.bytes.is_empty() && std::fs::read(&path).unwrap().len() == 17 {
                break;
            }
            drop(p);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first\nlast words\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
