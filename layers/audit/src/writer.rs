//! The background writer: lines are handed to `portcullis_core::lines::LineWriter`, one
//! thread that appends them to the file in batches, so a slow disk never holds a request up
//! and a request never pays a write or a thread wake-up of its own. A full queue drops the
//! line and counts it.

use std::{fmt, io, path::Path, sync::Arc};

use portcullis_core::lines::{LineWriter, Sink, WriteEvent};

use crate::{UsageTable, DROPPED_METRIC, WRITE_ERRORS_METRIC};

/// What the services and the handle share with the writer thread.
pub(crate) struct Writer {
    lines: LineWriter,
}

impl Writer {
    /// Open `path` for appending and start the writer thread.
    pub(crate) fn start(path: &Path, queue: usize) -> io::Result<Self> {
        let shown = path.display().to_string();
        let lines = LineWriter::start(
            Sink::File(path.to_owned()),
            queue,
            Box::new(move |event| report(&shown, event)),
        )?;
        Ok(Self { lines })
    }

    /// Queue a line; if the queue is full, drop it and count it. Never waits.
    pub(crate) fn send(&self, line: &[u8]) {
        if !self.lines.send(line) {
            metrics::counter!(DROPPED_METRIC).increment(1);
        }
    }
}

/// Log the first failure of a run of them (a full disk fails every line), and the recovery.
fn report(path: &str, event: WriteEvent<'_>) {
    match event {
        WriteEvent::Failed { error, first } => {
            metrics::counter!(WRITE_ERRORS_METRIC).increment(1);
            if first {
                tracing::warn!(path, error = %error, "audit log write failed; lines are being lost");
            }
        }
        WriteEvent::Recovered => tracing::info!(path, "audit log writes succeed again"),
        WriteEvent::Reopened(None) => tracing::info!(path, "audit log reopened"),
        WriteEvent::Reopened(Some(e)) => tracing::warn!(path, error = %e,
            "audit log could not be reopened; writing on to the old file"),
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
            w.lines.reopen();
        }
    }

    /// Wait until every line queued before this call is written and flushed to the file
    /// (for shutdown, and tests). Returns at once when there is no file.
    pub async fn flush(&self) {
        if let Some(w) = &self.writer {
            w.lines.flush().await;
        }
    }

    /// Lines dropped because the queue was full, since start (also the counter
    /// `portcullis_audit_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.lines.dropped())
    }

    /// The usage table (the same one the layer counts into).
    pub fn usage(&self) -> &Arc<UsageTable> {
        &self.usage
    }
}
