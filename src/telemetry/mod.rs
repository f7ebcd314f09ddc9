//! Logs, metrics and traces: subscriber set-up, the per-request access log, and the
//! Prometheus recorder behind `GET /metrics`.

pub mod access_log;
pub mod metrics;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps telemetry running; flushes what is buffered when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    _private: (),
}

/// Install the global subscriber: `RUST_LOG`-style filtering (default `info`), pretty or JSON.
pub fn init(cfg: &TelemetryConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    if result.is_err() {
        // Already installed (tests start several gateways in one process).
    }
    TelemetryGuard::default()
}
