//! [`AuditLayer`]: builds [`Audit`] services that share one writer and one usage table.

use std::{io, path::PathBuf, sync::Arc};

use portcullis_core::{
    pattern::{ModelPattern, PatternSet},
    ConfigProblem,
};
use tower::Layer;

use crate::{writer::Writer, Audit, AuditHandle, Config, UsageTable};

/// Why an audit layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The settings are wrong (every problem, each with its key).
    #[error("invalid audit settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    /// The log file could not be opened for appending (or the writer thread not started).
    #[error("cannot open audit log {path:?}: {source}")]
    Open {
        /// The configured path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Writes one JSON line per request when its response body ends, and counts usage per key
/// and model (see the [crate docs](crate)).
///
/// The writer (its queue and thread), the usage table and the settings live in an `Arc`:
/// cloning the layer, or the services it makes, shares them; [`handle`](Self::handle) gives
/// the binary its side (reopen, flush, usage).
#[derive(Debug, Clone)]
pub struct AuditLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) writer: Option<Arc<Writer>>,
    pub(crate) usage: Arc<UsageTable>,
    pub(crate) include_bodies: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) entries: PatternSet<Arc<str>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("writing", &self.writer.is_some())
            .field("include_bodies", &self.include_bodies)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The `[[models]]` entry a model matches, for responses without a `RouteInfo`.
    pub(crate) fn entry_of(&self, model: Option<&str>) -> Option<Arc<str>> {
        self.entries.lookup(model?).cloned()
    }
}

impl AuditLayer {
    /// A layer for `config`: with a non-empty `path`, the file is opened for appending (and
    /// created) now, and the writer thread started. Settings out of range are clamped; use
    /// [`from_config`](Self::from_config) to have them reported instead.
    pub fn new(config: &Config) -> Result<Self, AuditError> {
        let writer = if config.path.is_empty() {
            None
        } else {
            let path = PathBuf::from(&config.path);
            let w = Writer::start(&path, config.queue).map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
            Some(Arc::new(w))
        };
        Ok(Self {
            shared: Arc::new(Shared {
                include_bodies: config.include_bodies && writer.is_some(),
                writer,
                usage: Arc::new(UsageTable::new(config.max_usage_entries)),
                max_body_bytes: config.max_body_bytes,
                entries: PatternSet::new(),
            }),
        })
    }

    /// A layer for `config`, or every problem with it, or why its file cannot be opened.
    pub fn from_config(config: &Config) -> Result<Self, AuditError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(AuditError::Config(problems));
        }
        Self::new(config)
    }

    /// Name the `[[models]]` entries (exact, `prefix*` or `*`), so a response that carries no
    /// `RouteInfo` (a cache hit, a refusal made before the router) is still counted under the
    /// entry its model matches rather than `other`.
    pub fn with_model_entries<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let entries: PatternSet<Arc<str>> = names
            .into_iter()
            .map(|n| (ModelPattern::parse(n), Arc::<str>::from(n)))
            .collect();
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.entries = entries,
            None => {
                let s = &self.shared;
                self.shared = Arc::new(Shared {
                    writer: s.writer.clone(),
                    usage: s.usage.clone(),
                    include_bodies: s.include_bodies,
                    max_body_bytes: s.max_body_bytes,
                    entries,
                });
            }
        }
        self
    }

    /// The binary's side: reopen the file, wait for queued lines, read the usage table.
    pub fn handle(&self) -> AuditHandle {
        AuditHandle {
            writer: self.shared.writer.clone(),
            usage: self.shared.usage.clone(),
        }
    }

    /// The usage table this layer counts into.
    pub fn usage(&self) -> &Arc<UsageTable> {
        &self.shared.usage
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::from_shared(inner, self.shared.clone())
    }
}
