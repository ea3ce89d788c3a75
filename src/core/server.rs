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
use tokio::sync::watch;

use crate::core::platform::Lifecycle;

/// Binds the listener at `address` (port 0 picks a free port).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves `router` on `listener` until a shutdown signal, then drains for at
/// most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    lifecycle: Arc<Lifecycle>,
    grace: Duration,
) -> std::io::Result<()> {
    let (signalled_tx, signalled) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        // The receivers live as long as `serve`; if they are gone there is no one to tell.
        signalled_tx.send_replace(true);
    });
    let mut stop_accepting = signalled.clone();
    // Connection info gives handlers the client's address (login rate limits).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        // An error means the sender is gone; shut down then too.
        let _ = stop_accepting.wait_for(|signalled| *signalled).await;
        lifecycle.begin_draining();
        tracing::info!(
            grace_ms = grace.as_millis(),
            "shutdown signal received; draining"
        );
    });
    let mut grace_over = signalled;
    tokio::select! {
        result = server.into_future() => result,
        () = async move {
            let _ = grace_over.wait_for(|signalled| *signalled).await;
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
