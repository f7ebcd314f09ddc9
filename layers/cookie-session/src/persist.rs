//! Saving every upstream's jar to one JSON file, atomically, and loading it back at start.
//!
//! The file is `{ "upstream name": [cookie, ...], ... }`, session cookies included: an LLM
//! provider's bot-protection cookie (`cf_clearance`, `__cf_bm`) is usually a session cookie,
//! and losing it on restart means going through the challenge again.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cookie_store::Cookie;

use crate::CookieJar;

/// Why cookies could not be saved or loaded.
///
/// Decoding errors carry only the position and kind of the problem: `serde_json`'s own
/// message may quote the offending cookie, value included.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading the file failed (other than it not existing).
    #[error("cannot read cookie file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing, syncing or renaming the file failed.
    #[error("cannot write cookie file {}: {source}", path.display())]
    Write {
        /// The file (or its `.tmp` sibling).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The data is not a cookie file.
    #[error("{} is not a valid cookie file: {kind} at line {line}, column {column}", path.as_deref().map_or_else(|| "the data".into(), |p| p.display().to_string()))]
    Corrupt {
        /// The file, if the data came from one.
        path: Option<PathBuf>,
        /// `syntax`, `data` (well-formed JSON of the wrong shape), `eof` or `io`.
        kind: &'static str,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// Encoding the cookies failed (the writer failed, usually).
    #[error("cannot encode cookies: {0}")]
    Encode(String),
}

impl PersistError {
    pub(crate) fn decode(path: Option<&Path>, e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        PersistError::Corrupt {
            path: path.map(Path::to_path_buf),
            kind: match e.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "eof",
            },
            line: e.line(),
            column: e.column(),
        }
    }

    pub(crate) fn encode(e: serde_json::Error) -> Self {
        // Encoding errors come from the writer or from serializing a string; neither message
        // holds a cookie value, but keep only the category to be sure.
        PersistError::Encode(
            match e.classify() {
                serde_json::error::Category::Io => "the writer failed",
                _ => "a cookie could not be serialized",
            }
            .to_owned(),
        )
    }
}

/// Save the jars to `path` as one JSON file: written to `path.tmp` in the same directory,
/// fsynced, then renamed over `path`, so a crash leaves either the old file or the new one.
/// The file is created with mode 0600 on Unix (cookies are credentials); missing parent
/// directories are created.
pub fn save_all(path: impl AsRef<Path>, jars: &[(&str, &CookieJar)]) -> Result<(), PersistError> {
    let path = path.as_ref();
    let all: BTreeMap<&str, Vec<Cookie<'static>>> = jars
        .iter()
        .map(|(name, jar)| (*name, jar.snapshot()))
        .collect();
    let bytes = serde_json::to_vec_pretty(&all).map_err(PersistError::encode)?;
    write_atomically(path, &bytes)?;
    tracing::debug!(
        path = %path.display(),
        jars = jars.len(),
        cookies = all.values().map(Vec::len).sum::<usize>(),
        "cookie jars saved"
    );
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PersistError::Write { path, source }
    };
    fs::create_dir_all(&dir).map_err(write_err(&dir))?;

    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(write_err(&tmp))?;
    file.write_all(bytes).map_err(write_err(&tmp))?;
    file.sync_all().map_err(write_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_err(path))?;
    // Make the rename itself durable. Not every platform can open a directory, and the data
    // is already safe in one of the two names, so a failure here is not an error.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Load the jars saved by [`save_all`], keyed by upstream name, dropping cookies that have
/// expired since. A missing file is an empty map; a corrupt one is
/// [`PersistError::Corrupt`]. The jars get the default bound; see
/// [`CookieJar::set_max_cookies`].
pub fn load_all(path: impl AsRef<Path>) -> Result<HashMap<String, CookieJar>, PersistError> {
    let path = path.as_ref();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no cookie file yet");
            return Ok(HashMap::new());
        }
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let all: HashMap<String, Vec<Cookie<'static>>> =
        serde_json::from_slice(&bytes).map_err(|e| PersistError::decode(Some(path), &e))?;
    let jars: HashMap<String, CookieJar> = all
        .into_iter()
        .map(|(name, cookies)| (name, CookieJar::from_snapshot(cookies)))
        .collect();
    tracing::info!(
        path = %path.display(),
        jars = jars.len(),
        cookies = jars.values().map(CookieJar::len).sum::<usize>(),
        "cookie jars loaded"
    );
    Ok(jars)
}

/// Save the jars to `path` every `every`, whenever any of them changed since the last save.
///
/// Runs until the returned task is aborted; call [`save_all`] once more at shutdown so the
/// last changes are not lost. Failures are logged (`warn`) and retried on the next tick.
/// The write happens on the runtime thread: a cookie file is a few kilobytes and is written
/// at most once per `every`, which does not justify a blocking-pool round trip.
pub fn spawn_autosave(
    path: PathBuf,
    jars: Vec<(String, CookieJar)>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    // `interval` panics on zero; a zero period would mean "save constantly" anyway.
    let every = every.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let generations = || {
            jars.iter()
                .map(|(_, j)| j.generation())
                .collect::<Vec<u64>>()
        };
        let mut saved = generations();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = generations();
            if now == saved {
                continue;
            }
            let refs: Vec<(&str, &CookieJar)> = jars.iter().map(|(n, j)| (n.as_str(), j)).collect();
            match save_all(&path, &refs) {
                Ok(()) => saved = now,
                Err(error) => tracing::warn!(%error, "saving cookie jars failed"),
            }
        }
    })
}
