//! The background writer: lines go through a bounded queue to one thread that appends them to
//! the file, so a slow disk never holds a request up.
//!
//! # Why a thread and not a task
//!
//! File writes block. On a tokio worker they would stall every request scheduled there; a
//! `spawn_blocking` per line would cost a hand-off each. One dedicated thread blocking on the
//! queue (`blocking_recv`) writes through a `BufWriter`, flushing whenever the queue runs
//! empty, and needs no runtime (the layer can be built before one exists).

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use tokio::sync::{mpsc, oneshot};

use crate::{UsageTable, DROPPED_METRIC, WRITE_ERRORS_METRIC};

pub(crate) enum Msg {
    Line(Vec<u8>),
    /// Wakes the writer to reopen (the flag says so even when this could not be queued).
    Reopen,
    Flush(oneshot::Sender<()>),
}

/// What the services and the handle share with the writer.
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
}

impl Writer {
    /// Open `path` for appending and start the writer thread.
    pub(crate) fn start(path: &Path, queue: usize) -> io::Result<Self> {
        let file = open(path)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || run(rx, path, file, flag))?;
        Ok(Self {
            tx,
            reopen,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue a line; if the queue is full, drop it and count it. Never waits.
    pub(crate) fn send(&self, line: Vec<u8>) {
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DROPPED_METRIC).increment(1);
        }
    }
}

fn open(path: &Path) -> io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

fn run(
    mut rx: mpsc::Receiver<Msg>,
    path: PathBuf,
    mut out: BufWriter<File>,
    reopen: Arc<AtomicBool>,
) {
    let mut failing = false;
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                // The queue ran dry: what was written reaches the file now.
                report(out.flush(), &mut failing);
                match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        if reopen.swap(false, Ordering::AcqRel) {
            report(out.flush(), &mut failing);
            match open(&path) {
                Ok(new) => {
                    out = new;
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "audit log could not be reopened; writing on to the old file");
                }
            }
        }
        match msg {
            Msg::Line(line) => report(out.write_all(&line), &mut failing),
            Msg::Reopen => {}
            Msg::Flush(done) => {
                report(out.flush(), &mut failing);
                let _ = done.send(());
            }
        }
    }
    report(out.flush(), &mut failing);
}

/// Log the first failure of a run of them (a full disk fails every line), and the recovery.
fn report(r: io::Result<()>, failing: &mut bool) {
    match r {
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!("audit log writes succeed again");
        }
        Ok(()) => {}
        Err(e) => {
            metrics::counter!(WRITE_ERRORS_METRIC).increment(1);
            if !*failing {
                *failing = true;
                tracing::warn!(error = %e, "audit log write failed; lines are being lost");
            }
        }
    }
}

/// A handle on the audit log, for the binary: reopen the file (on `SIGHUP`, after logrotate
/// moved it), wait until queued lines are written, read the usage table. Cloning is cheap and
/// shares everything.
#[derive(Clone)]
pub struct AuditHandle {
    pub(crate) writer: Option<Arc<Writer>>,
    pub(crate) usage: Arc<UsageTable>,
}

impl fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditHandle")
            .field("writing", &self.writer.is_some())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Reopen the file at the configured path (creating it if it was moved away), for
    /// logrotate's `postrotate` `kill -HUP`. Returns at once; the writer reopens before the
    /// next line it writes. Lines queued before the call may still go to the old file.
    pub fn reopen(&self) {
        if let Some(w) = &self.writer {
            w.reopen.store(true, Ordering::Release);
            // If the queue is full, the flag is seen with the next line anyway.
            let _ = w.tx.try_send(Msg::Reopen);
        }
    }

    /// Wait until every line queued before this call is written and flushed to the file
    /// (for shutdown, and tests). Returns at once when there is no file.
    pub async fn flush(&self) {
        if let Some(w) = &self.writer {
            let (done, wait) = oneshot::channel();
            if w.tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Lines dropped because the queue was full, since start (also the counter
    /// `portcullis_audit_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| w.dropped.load(Ordering::Relaxed))
    }

    /// The usage table (the same one the layer counts into).
    pub fn usage(&self) -> &Arc<UsageTable> {
        &self.usage
    }
}
