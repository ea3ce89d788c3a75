//! Serving HTTP with graceful shutdown.
//!
//! On SIGINT or SIGTERM the service stops accepting connections, `/ready`
//! turns 503, in-flight requests get the grace period to finish, and whatever
//! is still running after it is dropped, so shutdown never hangs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::core::platform::Lifecycle;

/// Binds the listener at `address` (port 0 picks a free port).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// A token cancelled at the first SIGINT or SIGTERM; everything long-lived
/// (the HTTP server, the workers) stops on it.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

/// Serves `router` on `listener` until `shutdown`, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    lifecycle: Arc<Lifecycle>,
    grace: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let stop_accepting = shutdown.clone();
    // Connection info gives handlers the client's address (login rate limits).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        stop_accepting.cancelled().await;
        lifecycle.begin_draining();
        tracing::info!(grace_ms = grace.as_millis(), "draining HTTP requests");
    });
    tokio::select! {
        result = server.into_future() => result,
        () = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; closing the connections still open");
            Ok(())
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what orchestrators send).
async fn wait_for_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
