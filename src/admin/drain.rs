//! New clients during a drain: after `server.shutdown_grace` the proxy
//! still answers on its port, but only to refuse logins with 57P03 (as
//! PostgreSQL does while shutting down) and to pass on CancelRequests for
//! the sessions that are finishing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::StartupPacket;
use crate::protocol::io::read_startup;
use crate::protocol::messages::ClientError;
use crate::proxy::Shared;

/// Longest a refused client may take to send its startup packet.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses every new client on `listener` until `until` completes.
pub async fn refuse_new_clients(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    until: impl Future<Output = ()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "cannot keep the listener during the drain");
            return;
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(REFUSE_TIMEOUT, refuse(stream, &shared)).await;
                    });
                }
            }
        }
    }
}

async fn refuse(mut stream: TcpStream, shared: &Shared) {
    let mut buf = BytesMut::with_capacity(512);
    // A client may ask for SSL and then GSS before its startup packet.
    for _ in 0..3 {
        match read_startup(&mut stream, &mut buf).await {
            Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                if stream.write_all(b"N").await.is_err() {
                    return;
                }
            }
            Ok(StartupPacket::CancelRequest { pid, secret }) => {
                // Closed first, as in the listener: no reply, no timing.
                let _ = stream.shutdown().await;
                drop(stream);
                crate::peers::cancel::route_cancel(shared, pid, &secret).await;
                return;
            }
            Ok(StartupPacket::Startup { .. }) => {
                let error =
                    ClientError::fatal("57P03", "the database system is shutting down").to_bytes();
                shared.metrics.errors_in(&error);
                let _ = stream.write_all(&error).await;
                let _ = stream.shutdown().await;
                return;
            }
            Err(_) => return,
        }
    }
}
