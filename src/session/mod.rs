//! One client session: startup, authentication, a server connection, and
//! the relay, from accept to close.

mod auth;
mod error;
mod negotiate;
mod passthrough;
mod relay;
mod scram;
mod startup;
pub mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use auth::{Authenticated, Credentials};
pub use error::SessionError;
pub use passthrough::Passthrough;
pub use scram::{
    AwaitingClientFinal, Binding, MECHANISM, MECHANISM_PLUS, ScramError, ScramSuccess,
    ScramVerifier, VERIFIER_PREFIX,
};
pub use startup::{Opening, read_opening};

use crate::backend::{self, Secret, ServerConnection};
use crate::listener::cancel::{CancelTarget, send_cancel};
use crate::listener::limits::{ClientSlot, UserSlot};
use crate::protocol::StartupPacket;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared, Shutdown};
use crate::router::target::wait_for_primary;
use crate::tls::ClientStream;
use negotiate::{Opened, Refused};
use relay::{Activity, RelayEnd};

/// A client past encryption negotiation, authentication and the
/// connection limits.
struct Admitted {
    client: ClientStream,
    params: Vec<(String, String)>,
    user: String,
    /// Bytes the client sent after authenticating (a pipelined first query).
    buf: BytesMut,
    secret: Option<Secret>,
    /// Held for the session's life: they count it against the limits.
    _slots: (ClientSlot, Option<UserSlot>),
}

/// Serves one accepted client connection to its end.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: Shutdown) {
    let settings = shared.settings.load_full();
    let Some(admitted) = admit(tcp, peer, &shared, &settings).await else {
        return;
    };
    let Admitted {
        mut client,
        params,
        user,
        buf,
        secret,
        _slots,
    } = admitted;
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
        let shared = Arc::clone(&shared);
        let settings = Arc::clone(&settings);
        transaction::serve(client, shared, settings, params, secret, buf, shutdown).await;
        return;
    }
    // A session-mode client keeps one connection: it must be the primary.
    let failover_timeout = settings.config.routing.failover_timeout;
    let primary = match wait_for_primary(&shared.topology, failover_timeout).await {
        Ok(primary) => primary,
        Err(error) => {
            reject::<()>(&mut client, peer, &SessionError::NoPrimary(error)).await;
            return;
        }
    };
    // PAUSE holds new session-pooled sessions before they get a server.
    shared.pause.wait_resumed().await;
    // Held for the session's life: its server connection counts against
    // this pod's share of the node's connection budget.
    let waited = settings.config.pool.checkout_timeout;
    let Some(_budget_unit) = shared.pools.node_units(&primary).take_owned(waited).await else {
        let error = SessionError::NodeBudget {
            node: primary,
            waited,
            share: shared.pools.node_budget(),
        };
        reject::<()>(&mut client, peer, &error).await;
        return;
    };
    let server = backend::connect(
        &primary,
        &params,
        secret.as_ref(),
        &settings.server_tls,
        server_config.connect_timeout,
    )
    .await;
    let mut server = match server {
        Ok(server) => server,
        Err(error) => {
            reject::<()>(&mut client, peer, &SessionError::Backend(error)).await;
            return;
        }
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

/// Negotiates encryption, reads the StartupMessage (or serves a
/// CancelRequest), applies the connection limits and authenticates, all
/// within `server.startup_timeout`; a refused client has been told why.
async fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    settings: &Settings,
) -> Option<Admitted> {
    let _ = tcp.set_nodelay(true);
    let server_config = &settings.config.server;
    // Counted from accept, so stalled connections count too; one over the
    // limit is still read up to its StartupMessage, so that the refusal
    // reaches it in a form it can read (inside TLS if it asked for TLS).
    let client_slot = shared
        .limits
        .try_client(server_config.max_client_connections);
    let deadline = tokio::time::Instant::now() + server_config.startup_timeout;
    let mut buf = BytesMut::with_capacity(1024);
    let acceptor = settings.client_tls.as_ref();
    let opened = negotiate::open(tcp, &mut buf, acceptor, settings.config.tls.mode, deadline).await;
    let Opened {
        mut client,
        opening,
        binding,
    } = match opened {
        Ok(opened) => opened,
        Err(Refused::Tell(mut client, error)) => return reject(&mut client, peer, &error).await,
        Err(Refused::Silent(error)) => {
            tracing::debug!(%peer, %error, "connection closed during negotiation");
            return None;
        }
    };
    let params = match opening {
        Opening::Session { params } => params,
        Opening::Cancel { pid, secret } => {
            // As PostgreSQL: no reply either way, and the connection closes
            // before the key is even looked at, so that neither an answer
            // nor its timing tells a guessed key from a real one.
            let _ = client.shutdown().await;
            drop(client);
            crate::peers::cancel::route_cancel(shared, pid, &secret).await;
            return None;
        }
        Opening::TlsRequest => {
            let error = SessionError::UnexpectedMessage {
                expected: "a StartupMessage",
                tag: b'?',
            };
            return reject(&mut client, peer, &error).await;
        }
    };
    let Some(client_slot) = client_slot else {
        let error = SessionError::TooManyClients(server_config.max_client_connections);
        return reject(&mut client, peer, &error).await;
    };
    let user = StartupPacket::param(&params, "user").unwrap_or_default();
    let login = tokio::time::timeout_at(
        deadline,
        auth::authenticate(
            &mut client,
            &mut buf,
            &user,
            &settings.credentials,
            settings.passthrough.as_ref(),
            binding,
        ),
    )
    .await;
    let authenticated = match login {
        Ok(Ok(authenticated)) => authenticated,
        Ok(Err(error)) => {
            crate::admin::hooks::login_failed(shared, &error);
            return reject(&mut client, peer, &error).await;
        }
        Err(_) => return reject(&mut client, peer, &SessionError::StartupTimeout).await,
    };
    let user_slot = match authenticated.max_connections {
        Some(max) => match shared.limits.try_user(&user, max) {
            Some(slot) => Some(slot),
            None => return reject(&mut client, peer, &SessionError::TooManyForUser(user)).await,
        },
        None => None,
    };
    Some(Admitted {
        client,
        params,
        user,
        buf,
        secret: authenticated.secret,
        _slots: (client_slot, user_slot),
    })
}

async fn finish(
    mut client: ClientStream,
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

/// Tells the client why it is refused and closes; `None`, for `admit`.
async fn reject<T>(client: &mut ClientStream, peer: SocketAddr, error: &SessionError) -> Option<T> {
    if matches!(
        error,
        SessionError::WrongPassword(_)
            | SessionError::Backend(_)
            | SessionError::TooManyClients(_)
            | SessionError::TooManyForUser(_)
            | SessionError::AuthLookup { .. }
            | SessionError::NodeBudget { .. }
    ) {
        tracing::info!(%peer, %error, "client rejected");
    } else {
        tracing::debug!(%peer, %error, "client rejected");
    }
    if let Some(message) = error.to_client() {
        let _ = client.write_all(&message).await;
    }
    let _ = client.shutdown().await;
    None
}
