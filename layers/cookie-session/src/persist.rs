//! Saving every upstream's jar to one JSON file, atomically, and loading it back at start.
//!
//! The file is `{ "upstream name": [cookie, ...], ... }`, session cookies included: an LLM
//! provider's bot-protection cookie (`cf_clearance`, `__cf_bm`) is usually a session cookie,
//! and losing it on restart means going through the challenge again. An upstream with
//! per-caller jars ([`CallerJars`]) is saved as
//! `"name": { "callers": [ { "caller": "<CallerId hex>", "cookies": [cookie, ...] }, ... ] }`,
//! least recently used caller first, callers with no cookies left out; files without that
//! form load as before. A caller is named by its [`CallerId`], a keyed hash of its
//! credentials: the file never holds a key, and the id cannot be turned back into one. Load
//! it with [`load`] and start each upstream's jars with [`Jars::restore`], which applies the
//! configured bounds (`max_callers`, `max_cookies`).
//!
//! # Writing safely
//!
//! The file holds credentials and its directory may be shared. Each save writes a new temp
//! file with a random name in the same directory, created exclusively (`O_CREAT|O_EXCL`, and
//! `O_NOFOLLOW`) with mode 0600, so a planted file or symlink is never written through and
//! never lends its mode; the temp file is fsynced and renamed over the target (a rename
//! replaces a symlink at the target, it does not follow it).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cookie_store::Cookie;
use portcullis_core::CallerId;
use serde::{Deserialize, Serialize};

use crate::{CallerJars, CookieJar, Jars};

/// One upstream's entry in the file.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SavedJars {
    /// `cookie_scope = "upstream"`: the one jar's cookies (the only form of older files).
    Shared(Vec<Cookie<'static>>),
    /// `cookie_scope = "caller"`.
    PerCaller { callers: Vec<SavedCaller> },
}

#[derive(Serialize, Deserialize)]
struct SavedCaller {
    caller: String,
    cookies: Vec<Cookie<'static>>,
}

impl SavedJars {
    fn of(jars: &Jars) -> Self {
        match jars {
            Jars::Upstream(jar) => Self::Shared(jar.snapshot()),
            Jars::Caller(jars) => Self::PerCaller {
                // A caller whose jar is empty has nothing to restore: it is not named.
                callers: jars
                    .jars()
                    .into_iter()
                    .map(|(id, jar)| SavedCaller {
                        caller: id.to_hex(),
                        cookies: jar.snapshot(),
                    })
                    .filter(|c| !c.cookies.is_empty())
                    .collect(),
            },
        }
    }

    fn cookies(&self) -> usize {
        match self {
            Self::Shared(c) => c.len(),
            Self::PerCaller { callers } => callers.iter().map(|c| c.cookies.len()).sum(),
        }
    }

    fn into_jars(self) -> Jars {
        match self {
            Self::Shared(cookies) => Jars::Upstream(CookieJar::from_snapshot(cookies)),
            Self::PerCaller { callers } => Jars::Caller(CallerJars::from_snapshot(
                callers
                    .into_iter()
                    .filter_map(|c| match CallerId::from_hex(&c.caller) {
                        Some(id) => Some((id, c.cookies)),
                        None => {
                            tracing::warn!(
                                "cookie file: skipping a caller jar with a malformed id"
                            );
                            None
                        }
                    })
                    .collect(),
            )),
        }
    }
}

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
        /// The file (or its temp sibling).
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

/// Save the jars to `path` as one JSON file: written to a fresh temp file in the same
/// directory (see "Writing safely" above), fsynced, then renamed over `path`, so a crash
/// leaves either the old file or the new one. The file has mode 0600 on Unix (cookies are
/// credentials); missing parent directories are created.
pub fn save_all(path: impl AsRef<Path>, jars: &[(&str, &CookieJar)]) -> Result<(), PersistError> {
    let jars: Vec<(&str, Jars)> = jars
        .iter()
        .map(|(name, jar)| (*name, Jars::Upstream((*jar).clone())))
        .collect();
    let refs: Vec<(&str, &Jars)> = jars.iter().map(|(n, j)| (*n, j)).collect();
    save(path, &refs)
}

/// Like [`save_all`], for upstreams of either [`CookieScope`](crate::CookieScope).
pub fn save(path: impl AsRef<Path>, jars: &[(&str, &Jars)]) -> Result<(), PersistError> {
    let path = path.as_ref();
    let all: BTreeMap<&str, SavedJars> = jars
        .iter()
        .map(|(name, jars)| (*name, SavedJars::of(jars)))
        .collect();
    let bytes = serde_json::to_vec_pretty(&all).map_err(PersistError::encode)?;
    write_atomically(path, &bytes)?;
    tracing::debug!(
        path = %path.display(),
        jars = jars.len(),
        cookies = all.values().map(SavedJars::cookies).sum::<usize>(),
        "cookie jars saved"
    );
    Ok(())
}

/// A temp file name next to `path` that nobody can guess in advance:
/// `.<file name>.<random>.tmp`.
fn temp_path(path: &Path, attempt: u32) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded from the OS per process and varies per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "cookies".as_ref()));
    name.push(format!(".{:016x}.tmp", h.finish()));
    path.with_file_name(name)
}

/// Create a new file at a fresh temp path: exclusively, never through a symlink, mode 0600.
fn create_temp(path: &Path) -> Result<(PathBuf, File), PersistError> {
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        let tmp = temp_path(path, attempt);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            // Someone made that name first: take another, a few times.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < ATTEMPTS => {
                attempt += 1;
            }
            Err(source) => return Err(PersistError::Write { path: tmp, source }),
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PersistError::Write { path, source }
    };
    fs::create_dir_all(&dir).map_err(write_err(&dir))?;

    let (tmp, mut file) = create_temp(path)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(write_err(&tmp));
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path).map_err(write_err(path))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Not every platform can open a directory, and the data
    // is already safe in one of the two names, so a failure here is not an error.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Load the shared jars saved by [`save_all`] or [`save`], keyed by upstream name, dropping
/// cookies that have expired since. Per-caller jars are left out (see [`load`]). A missing
/// file is an empty map; a corrupt one is [`PersistError::Corrupt`]. The jars get the
/// default bound; see [`CookieJar::set_max_cookies`].
pub fn load_all(path: impl AsRef<Path>) -> Result<HashMap<String, CookieJar>, PersistError> {
    Ok(load(path)?
        .into_iter()
        .filter_map(|(name, jars)| match jars {
            Jars::Upstream(jar) => Some((name, jar)),
            Jars::Caller(_) => {
                tracing::debug!(upstream = %name, "load_all: leaving out per-caller jars");
                None
            }
        })
        .collect())
}

/// Load every upstream's jars saved by [`save`] (or [`save_all`], or an older version),
/// shared and per-caller. The jars get the default bounds; see
/// [`CookieJar::set_max_cookies`] and [`CallerJars::set_limits`]. An upstream whose
/// `cookie_scope` changed since gets jars of the other kind ([`Jars::scope`]): the gateway
/// decides whether to keep them.
pub fn load(path: impl AsRef<Path>) -> Result<HashMap<String, Jars>, PersistError> {
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
    let all: HashMap<String, SavedJars> =
        serde_json::from_slice(&bytes).map_err(|e| PersistError::decode(Some(path), &e))?;
    let jars: HashMap<String, Jars> = all
        .into_iter()
        .map(|(name, saved)| (name, saved.into_jars()))
        .collect();
    tracing::info!(
        path = %path.display(),
        jars = jars.len(),
        cookies = jars.values().map(Jars::len).sum::<usize>(),
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
pub fn spawn_autosave<J: Into<Jars>>(
    path: PathBuf,
    jars: Vec<(String, J)>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let jars: Vec<(String, Jars)> = jars.into_iter().map(|(n, j)| (n, j.into())).collect();
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
            let refs: Vec<(&str, &Jars)> = jars.iter().map(|(n, j)| (n.as_str(), j)).collect();
            match save(&path, &refs) {
                Ok(()) => saved = now,
                Err(error) => tracing::warn!(%error, "saving cookie jars failed"),
            }
        }
    })
}
