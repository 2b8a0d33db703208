//! The client-facing TCP listener: accepts connections and hands each to a
//! session task until shutdown.

pub mod cancel;
pub mod limits;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::proxy::{Shared, Shutdown};

/// Accepts clients until `shutdown.draining` fires; each session is tracked
/// by `sessions` so shutdown can wait for them.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.draining.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                sessions.spawn(crate::session::serve(
                    stream,
                    peer,
                    Arc::clone(&shared),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!("listener closed; no new clients accepted");
}
