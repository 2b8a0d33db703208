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
    /// Microseconds from requests to their ReadyForQuery.
    pub query_micros: u64,
    /// Named statements used that the server connection had prepared.
    pub prepared_hits: u64,
    /// Named statements used that had to be prepared on it first.
    pub prepared_misses: u64,
    /// When the stretch's last ReadyForQuery came (the relay reads the
    /// clock there anyway): where the stretch ended, for its duration.
    pub ready_at: Option<Instant>,
}

impl Traffic {
    /// A named statement was used (Parse, Bind or Describe): `hit` when
    /// the server connection had it. Added to the shared counters once per
    /// stretch, not per message.
    pub fn count_prepared(&mut self, hit: bool) {
        if hit {
            self.prepared_hits += 1;
        } else {
            self.prepared_misses += 1;
        }
    }
}

/// Authentication failed: wrong passwords and unknown users count as auth
/// failures. (The ErrorResponse the client gets is counted by class where
/// it is sent.)
pub fn login_failed(shared: &Shared, error: &SessionError) {
    if matches!(error, SessionError::WrongPassword(_)) {
        shared.metrics.auth_failures.inc();
    }
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
        wait: Default::default(),
    }
}

/// A transaction-pooled stretch (a transaction, or a pinned run of them)
/// that began at `started` ended: counted with its duration and traffic,
/// which is reset. Returns when it ended (its last ReadyForQuery, or now).
pub fn stretch_ended(
    shared: &Shared,
    pool: &Pool,
    traffic: &mut Traffic,
    started: Instant,
) -> Instant {
    let Traffic {
        received,
        sent,
        queries,
        query_micros,
        prepared_hits,
        prepared_misses,
        ready_at,
    } = std::mem::take(traffic);
    let ended = ready_at.unwrap_or_else(Instant::now);
    let metrics = pool.metrics();
    let duration = ended.saturating_duration_since(started);
    metrics.transaction_done(duration.as_secs_f64(), received, sent);
    metrics.queries(queries, query_micros);
    shared
        .metrics
        .prepared_statements(prepared_hits, prepared_misses);
    shared.metrics.bytes_received.inc_by(received);
    shared.metrics.bytes_sent.inc_by(sent);
    ended
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
        )
        .to_bytes();
        shared.metrics.errors_in(&error);
        let _ = client.write_all(&error).await;
        let _ = client.shutdown().await;
        return;
    }
    tracing::info!(%peer, user, "admin console session");
    let _listed = shared
        .clients
        .register(client_info(params, peer, None, true));
    super::console::serve(client, early, shared, shutdown).await;
}
