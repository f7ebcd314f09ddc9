//! Serving: bind, log the address, serve until a shutdown signal, then drain in-flight
//! requests (streams included) for up to `server.shutdown_grace`.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    time::Duration,
};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::stack::Gateway;

/// Serve `gateway` on `listener` until `shutdown` resolves, then drain for up to `grace`.
///
/// Returns `true` when every in-flight request finished within the grace period.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<bool> {
    let autosave = gateway.cookie_persist.as_ref().map(|p| p.spawn_autosave());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = gateway
        .app
        .into_make_service_with_connect_info::<SocketAddr>();
    // Streams are many small writes (one SSE event each): without TCP_NODELAY, Nagle's
    // algorithm and the client's delayed ACKs hold each event back for up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutdown signal received; draining in-flight requests");
        let _ = tx.send(());
    });
    let server = std::pin::pin!(server.into_future());
    let drained = tokio::select! {
        r = server => { r?; true }
        _ = async {
            // The grace period starts at the signal, not at start-up.
            if rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace = ?grace, "shutdown grace period passed; dropping in-flight requests");
            false
        }
    };
    if let Some(task) = autosave {
        task.abort();
    }
    if let Some(p) = &gateway.cookie_persist {
        match p.save() {
            Ok(()) => tracing::info!(path = %p.path.display(), "cookie jars saved"),
            Err(e) => {
                tracing::warn!(path = %p.path.display(), error = %e, "saving cookie jars failed")
            }
        }
    }
    Ok(drained)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
