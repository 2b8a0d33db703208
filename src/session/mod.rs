//! One client session: startup, authentication, a server connection, and
//! the relay, from accept to close.

mod auth;
mod error;
mod relay;
mod scram;
mod startup;
pub mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use auth::Credentials;
pub use error::SessionError;
pub use scram::{ScramError, ScramVerifier};

use crate::backend::{self, ServerConnection};
use crate::listener::cancel::{CancelTarget, send_cancel};
use crate::protocol::StartupPacket;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Shared, Shutdown};
use crate::router::target::wait_for_primary;
use relay::{Activity, RelayEnd};
use startup::Opening;

/// Serves one accepted client connection to its end.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let _ = client.set_nodelay(true);
    let settings = shared.settings.load_full();
    let deadline = tokio::time::Instant::now() + settings.config.server.startup_timeout;
    let mut buf = BytesMut::with_capacity(1024);

    let opening =
        tokio::time::timeout_at(deadline, startup::read_opening(&mut client, &mut buf)).await;
    let params = match opening {
        Ok(Ok(Opening::Session { params })) => params,
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            // As PostgreSQL: no reply either way, so a key guess learns nothing.
            if let Some(target) = shared.cancels.lookup(pid, &secret) {
                send_cancel(&target).await;
            }
            return;
        }
        Ok(Err(error)) => return reject(&mut client, peer, &error).await,
        Err(_) => return reject(&mut client, peer, &SessionError::StartupTimeout).await,
    };
    let user = StartupPacket::param(&params, "user").unwrap_or_default();
    let credentials = &settings.credentials;
    let login = tokio::time::timeout_at(
        deadline,
        auth::authenticate(&mut client, &mut buf, &user, credentials),
    )
    .await;
    let credential = match login {
        Ok(Ok(credential)) => credential,
        Ok(Err(error)) => {
            crate::admin::hooks::login_failed(&shared, &error);
            return reject(&mut client, peer, &error).await;
        }
        Err(_) => return reject(&mut client, peer, &SessionError::StartupTimeout).await,
    };
    let database = StartupPacket::param(&params, "database").unwrap_or_else(|| user.clone());
    if crate::admin::console::is_console_database(&database) {
        return crate::admin::hooks::console(client, peer, buf, shared, &params, shutdown).await;
    }

    let server_config = &settings.config.server;
    let session_mode = server_config.pool_mode == crate::config::PoolMode::Session;
    let current_primary = shared.topology.load().primary().map(|m| m.addr.clone());
    let session_node = current_primary.as_deref().filter(|_| session_mode);
    let _listed = crate::admin::hooks::logged_in(&shared, &params, peer, session_node);
    if !session_mode {
        let password = credential.password.clone();
        let shared = Arc::clone(&shared);
        let settings = Arc::clone(&settings);
        transaction::serve(client, shared, settings, params, password, buf, shutdown).await;
        return;
    }
    // A session-mode client keeps one connection: it must be the primary.
    let failover_timeout = settings.config.routing.failover_timeout;
    let primary = match wait_for_primary(&shared.topology, failover_timeout).await {
        Ok(primary) => primary,
        Err(error) => return reject(&mut client, peer, &SessionError::NoPrimary(error)).await,
    };
    // PAUSE holds new session-pooled sessions before they get a server.
    shared.pause.wait_resumed().await;
    let server = backend::connect(
        &primary,
        &params,
        credential.password.as_deref(),
        server_config.connect_timeout,
    )
    .await;
    let mut server = match server {
        Ok(server) => server,
        Err(error) => return reject(&mut client, peer, &SessionError::Backend(error)).await,
    };
    let target = CancelTarget {
        addr: server.addr.clone(),
        pid: server.pid,
        secret: server.secret.clone(),
    };
    let registration = shared.cancels.register(target.clone());
    let key = registration.key();
    let mut greeting = std::mem::take(&mut server.startup_messages);
    messages::backend_key_data(&mut greeting, key.pid, key.secret);
    messages::ready_for_query_idle(&mut greeting);
    greeting.extend_from_slice(&server.pending);
    if client.write_all(&greeting).await.is_err() {
        return;
    }
    tracing::debug!(%peer, user, server = %server.addr, "session started");
    // Resolved once per session: the relay then only adds to it.
    let route = shared.metrics.route(&server.addr, "primary");
    let activity = Activity::counting(&shared.metrics, &route);
    finish(
        client,
        server,
        buf,
        &target,
        server_config.max_message_size,
        &shutdown,
        activity,
    )
    .await;
    drop(registration);
}

async fn finish(
    mut client: TcpStream,
    mut server: ServerConnection,
    early_client_bytes: BytesMut,
    target: &CancelTarget,
    limit: usize,
    shutdown: &Shutdown,
    activity: Activity,
) {
    // A client may pipeline its first query behind the startup packet.
    if !early_client_bytes.is_empty() && server.stream.write_all(&early_client_bytes).await.is_err()
    {
        return;
    }
    let end = relay::relay(
        &mut client,
        &mut server.stream,
        limit,
        &activity,
        &shutdown.draining,
        &shutdown.hard_stop,
    )
    .await;
    tracing::debug!(?end, server = %server.addr, "session ended");
    let busy = !activity.is_idle();
    let tell_client = |error: ClientError| activity.client_at_boundary().then(|| error.to_bytes());
    let message = match end {
        RelayEnd::ClientTerminated => None,
        RelayEnd::ClientGone => {
            if busy {
                send_cancel(target).await;
            }
            None
        }
        RelayEnd::ClientProtocol(error) => {
            if busy {
                send_cancel(target).await;
            }
            let reply = SessionError::Protocol(error).to_client();
            reply
                .filter(|_| activity.client_at_boundary())
                .map(|b| BytesMut::from(&b[..]))
        }
        RelayEnd::ServerGone { fatal_relayed } => (!fatal_relayed)
            .then(|| {
                tell_client(ClientError::fatal(
                    "08006",
                    format!("connection to server {} was lost", server.addr),
                ))
            })
            .flatten(),
        RelayEnd::ServerProtocol(error) => tell_client(ClientError::fatal(
            "08P01",
            format!("server {} sent an invalid message: {error}", server.addr),
        )),
        RelayEnd::DrainedIdle | RelayEnd::HardStop => {
            if busy {
                send_cancel(target).await;
            }
            tell_client(ClientError::fatal(
                "57P01",
                "terminating connection because switchyard is shutting down",
            ))
        }
    };
    if let Some(message) = message {
        let _ = client.write_all(&message).await;
    }
    if !busy {
        let _ = server.stream.write_all(b"X\0\0\0\x04").await;
    }
    let _ = client.shutdown().await;
}

async fn reject(client: &mut TcpStream, peer: SocketAddr, error: &SessionError) {
    if matches!(
        error,
        SessionError::WrongPassword(_) | SessionError::Backend(_)
    ) {
        tracing::info!(%peer, %error, "client rejected");
    } else {
        tracing::debug!(%peer, %error, "client rejected");
    }
    if let Some(message) = error.to_client() {
        let _ = client.write_all(&message).await;
    }
    let _ = client.shutdown().await;
}
