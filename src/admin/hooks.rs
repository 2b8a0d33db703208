//! The calls the data path makes into the admin side: one line each at
//! the session's login, its end of transaction, and its failures, so the
//! session code stays about sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::clients::{ClientGuard, ClientInfo};
use crate::pool::Pool;
use crate::protocol::StartupPacket;
use crate::protocol::messages::ClientError;
use crate::proxy::{Shared, Shutdown};
use crate::session::SessionError;

/// Bytes a transaction-pooled client moved during one stretch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes read from the client.
    pub received: u64,
    /// Bytes written to the client.
    pub sent: u64,
    /// Requests (Query and Sync messages: one ReadyForQuery each).
    pub queries: u64,
}

/// A login was refused: counted by SQLSTATE class, and wrong passwords
/// and unknown users as auth failures.
pub fn login_failed(shared: &Shared, error: &SessionError) {
    if matches!(error, SessionError::WrongPassword(_)) {
        shared.metrics.auth_failures.inc();
    }
    if let Some(code) = error.to_client().as_deref().and_then(sqlstate) {
        shared.metrics.error(code);
    }
}

/// The SQLSTATE (`C` field) of an ErrorResponse frame.
fn sqlstate(frame: &[u8]) -> Option<&str> {
    frame
        .get(5..)?
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .and_then(|code| std::str::from_utf8(code).ok())
}

/// A client logged in: listed (SHOW CLIENTS, client gauges) until the
/// guard drops. `session_node` is the node a session-pooled client's own
/// server connection goes to.
pub fn logged_in(
    shared: &Shared,
    params: &[(String, String)],
    peer: SocketAddr,
    session_node: Option<&str>,
) -> ClientGuard {
    shared.metrics.client_logins.inc();
    shared
        .clients
        .register(client_info(params, peer, session_node, false))
}

fn client_info(
    params: &[(String, String)],
    peer: SocketAddr,
    session_node: Option<&str>,
    admin: bool,
) -> ClientInfo {
    let user = StartupPacket::param(params, "user").unwrap_or_default();
    ClientInfo {
        database: StartupPacket::param(params, "database").unwrap_or_else(|| user.clone()),
        user,
        addr: peer,
        connected_at: SystemTime::now(),
        application_name: StartupPacket::param(params, "application_name").unwrap_or_default(),
        session_node: session_node.map(str::to_owned),
        admin,
    }
}

/// A transaction-pooled stretch (a transaction, or a pinned run of them)
/// ended: counted with its duration and traffic, which is reset.
pub fn stretch_ended(shared: &Shared, pool: &Pool, traffic: &mut Traffic, started: Instant) {
    let Traffic {
        received,
        sent,
        queries,
    } = std::mem::take(traffic);
    let metrics = pool.metrics();
    metrics.transaction_done(started.elapsed().as_secs_f64(), received, sent);
    metrics.queries(queries);
    shared.metrics.bytes_received.inc_by(received);
    shared.metrics.bytes_sent.inc_by(sent);
}

/// An authenticated client asked for the console database: serves the
/// console to an admin user, refuses anyone else.
pub async fn console(
    mut client: ClientStream,
    peer: SocketAddr,
    early: BytesMut,
    shared: Arc<Shared>,
    params: &[(String, String)],
    shutdown: Shutdown,
) {
    let user = StartupPacket::param(params, "user").unwrap_or_default();
    if !shared.settings.load().config.admin.users.contains(&user) {
        tracing::info!(%peer, user, "admin console refused: not in admin.users");
        let error = ClientError::fatal(
            "28000",
            format!("user \"{user}\" may not use the admin console (admin.users)"),
        );
        let _ = client.write_all(&error.to_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    tracing::info!(%peer, user, "admin console session");
    let _listed = shared
        .clients
        .register(client_info(params, peer, None, true));
    super::console::serve(client, early, shared, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_is_read_from_an_error_response() {
        let frame = ClientError::fatal("28P01", "password authentication failed").to_bytes();
        assert_eq!(sqlstate(&frame), Some("28P01"));
        assert_eq!(sqlstate(b"E"), None);
    }
}
