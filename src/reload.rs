//! Hot reload: `SIGHUP` and `POST /admin/reload` re-read the configuration from the sources
//! found at start, check it as `portcullis check` does, and swap a new stack in.
//!
//! An invalid configuration is refused: every problem is logged with its key path (never a
//! value) and the running stack keeps serving. A valid one is built with the running stack's
//! state handed over ([`stack::build_carrying`]: limits, breakers, cookie jars, ... by
//! upstream and model name) and replaces it in the [`Live`] cell: requests already running,
//! streams and WebSockets included, finish on the old stack; new ones go to the new.
//!
//! # What needs a restart
//! Settings read once when the process starts keep their running value; a reload that
//! changes them logs a warning naming each key path and lists it in its answer
//! (`restart_required`):
//!
//! | keys | why |
//! | --- | --- |
//! | `server.listen`, `server.max_connections`, `server.threads`, `server.header_read_timeout`, `server.body_read_timeout`, `server.shutdown_grace`, `server.tls_cert`, `server.tls_key` | the listener and its connection settings (a new listener would drop the backlog and idle connections) |
//! | `[telemetry]` | the log format and trace exporter are installed once per process |
//! | `[audit]` | the audit writer owns its file (reopened by `SIGHUP`); a second writer on the same file could interleave lines |

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::Instant,
};

use portcullis_core::ConfigProblem;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::{
    config::{Config, Overrides, Source},
    server::Live,
    stack::{self, BuildError, StackState},
    state::{Reload, ReloadHook, ReloadResult},
};

/// Rebuilds the live gateway from the configuration sources it started from.
#[derive(Debug)]
pub struct Reloader {
    live: Live,
    source: Source,
    overrides: Overrides,
    /// One reload at a time (a second waits, then reads the file again); counts reloads.
    reloads: Mutex<u64>,
}

impl Reloader {
    /// Build the first gateway from `config` (loaded from `source` with `overrides`); later
    /// reloads read `source` again.
    pub async fn start(
        config: Config,
        source: Source,
        overrides: Overrides,
    ) -> Result<Arc<Self>, BuildError> {
        let hook = ReloadHook::default();
        let gateway =
            stack::build_carrying(config, &StackState::with_reload_hook(hook.clone())).await?;
        let reloader = Arc::new(Self {
            live: Live::new(gateway),
            source,
            overrides,
            reloads: Mutex::new(0),
        });
        let weak: Weak<dyn Reload> = Arc::downgrade(&reloader) as Weak<Reloader>;
        hook.set(weak);
        Ok(reloader)
    }

    /// The live gateway, to serve ([`server::serve_live`](crate::server::serve_live)).
    pub fn live(&self) -> Live {
        self.live.clone()
    }

    /// Re-read and check the configuration; if valid, serve it from the next request on.
    /// `trigger` names the cause in the logs.
    pub async fn reload(&self, trigger: &'static str) -> ReloadResult {
        let mut reloads = self.reloads.lock().await;
        let started = Instant::now();
        let running = self.live.load();
        let loaded = match Config::load_from(&self.source, &self.overrides) {
            Ok(l) => l,
            Err(e) => return Err(refuse(trigger, e.0)),
        };
        for w in &loaded.warnings {
            tracing::warn!(key = %w.path, "{}", w.message);
        }
        let mut config = loaded.config;
        let restart_required = keep_restart_only(&running.state.config, &mut config);
        for key in &restart_required {
            tracing::warn!(
                %key,
                "changed in the configuration, but takes effect only after a restart; \
                 the running value stays"
            );
        }
        let gateway = match stack::build_carrying(config, &running.carry).await {
            Ok(g) => g,
            Err(e) => return Err(refuse(trigger, vec![ConfigProblem::new("config", e.0)])),
        };
        let old = self.live.replace(gateway);
        // Its requests finish on it, but its checks would only duplicate the new ones.
        old.health_checks.stop();
        drop(old);
        *reloads += 1;
        let now = self.live.load();
        let config = &now.state.config;
        tracing::info!(
            trigger,
            config = %self.source,
            reload = *reloads,
            took_ms = started.elapsed().as_millis() as u64,
            upstreams = config.upstreams.len(),
            models = config.models.len(),
            "configuration reloaded"
        );
        let mut models: Vec<&str> = Vec::new();
        for m in &config.models {
            if !models.contains(&m.name.as_str()) {
                models.push(&m.name);
            }
        }
        Ok(json!({
            "status": "reloaded",
            "config": self.source.to_string(),
            "reloads": *reloads,
            "upstreams": config.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            "models": models,
            "layers": config.enabled_layers(),
            "restart_required": restart_required,
            "warnings": loaded.warnings.iter()
                .map(|w| json!({ "path": w.path, "message": w.message }))
                .collect::<Vec<_>>(),
        }))
    }

    /// On every `SIGHUP`: reopen the audit log (logrotate moved it), then reload.
    #[cfg(unix)]
    pub fn spawn_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = self.clone();
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reopening the audit log and reloading the configuration");
                reloader.live.load().audit.reopen();
                // Logged either way; the running stack serves on if it is refused.
                let _ = reloader.reload("SIGHUP").await;
            }
        }))
    }
}

impl Reload for Reloader {
    fn reload(
        &self,
        trigger: &'static str,
    ) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + '_>> {
        Box::pin(Reloader::reload(self, trigger))
    }
}

/// Log every problem (key path and message: a problem never quotes a value) and hand them
/// back for the admin answer.
fn refuse(trigger: &'static str, problems: Vec<ConfigProblem>) -> Vec<ConfigProblem> {
    for p in &problems {
        tracing::error!(trigger, key = %p.path, "{}", p.message);
    }
    tracing::warn!(
        trigger,
        problems = problems.len(),
        "configuration reload refused; the running configuration keeps serving"
    );
    problems
}

/// Put the running value back into `new` for every setting that needs a restart (see the
/// module docs), and name the ones that were changed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<String> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($section:ident . $key:ident),* $(,)?) => {$(
            if new.$section.$key != running.$section.$key {
                kept.push(concat!(stringify!($section), ".", stringify!($key)).to_string());
                new.$section.$key = running.$section.$key.clone();
            }
        )*};
    }
    keep!(
        server.listen,
        server.max_connections,
        server.threads,
        server.header_read_timeout,
        server.body_read_timeout,
        server.shutdown_grace,
        server.tls_cert,
        server.tls_key,
    );
    kept.extend(changed_keys(
        "telemetry",
        &running.telemetry,
        &new.telemetry,
    ));
    new.telemetry = running.telemetry.clone();
    kept.extend(changed_keys("audit", &running.audit, &new.audit));
    new.audit = running.audit.clone();
    kept
}

/// The key paths of a section whose values differ (neither section holds a secret).
fn changed_keys<T: Serialize>(section: &str, running: &T, new: &T) -> Vec<String> {
    match (serde_json::to_value(running), serde_json::to_value(new)) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| format!("{section}.{k}"))
                .collect()
        }
        (a, b) if a.as_ref().ok() == b.as_ref().ok() => Vec::new(),
        _ => vec![section.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_running_value_and_are_named() {
        let running = Config::from_toml("").unwrap().config;
        let mut new = Config::from_toml(
            r#"
[server]
listen = "127.0.0.1:9999"
max_connections = 5
max_body_bytes = 1000
[telemetry]
log_format = "json"
[audit]
include_bodies = true
[retry]
max_attempts = 7
"#,
        )
        .unwrap()
        .config;
        // Set after loading: the files would be read (and must exist) at load.
        new.server.tls_cert = "/etc/portcullis/cert.pem".into();
        new.server.tls_key = "/etc/portcullis/key.pem".into();
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(
            kept,
            [
                "server.listen",
                "server.max_connections",
                "server.tls_cert",
                "server.tls_key",
                "telemetry.log_format",
                "audit.include_bodies"
            ]
        );
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.server.max_connections, running.server.max_connections);
        assert!(!new.server.tls_enabled());
        assert_eq!(new.telemetry.log_format, running.telemetry.log_format);
        assert_eq!(new.audit, running.audit);
        // What a reload may change, it changes.
        assert_eq!(new.server.max_body_bytes, 1000);
        assert_eq!(new.retry.max_attempts, 7);
        assert!(keep_restart_only(&running, &mut new).is_empty());
    }
}
