//! One client session: startup, authentication, a server connection, and
//! the relay, from accept to close.

mod auth;
mod error;
mod idle;
pub mod md5;
mod negotiate;
mod passthrough;
mod relay;
mod scram;
mod signal;
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
use crate::config::{ClientCertUser, TlsConfig};
use crate::listener::cancel::send_cancel;
use crate::listener::limits::{ClientSlot, UserSlot};
use crate::pool::NodeUnit;
use crate::protocol::StartupPacket;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared, Shutdown};
use crate::router::target::wait_for_primary;
use crate::tls::{CertUserError, ClientStream};
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
    // Boxed, once per session: the handshake's states (TLS, SCRAM) end
    // with the login and need not stay in every idle client's task.
    let Some(admitted) = Box::pin(admit(tcp, peer, &shared, &settings)).await else {
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
        // Boxed: only admin sessions need the console's states.
        let console = crate::admin::hooks::console(client, peer, buf, shared, &params, shutdown);
        return Box::pin(console).await;
    }
    let server_config = &settings.config.server;
    let session_mode = server_config.pool_mode == crate::config::PoolMode::Session;
    let current_primary = shared.topology.load().primary().map(|m| m.addr.clone());
    let session_node = current_primary.as_deref().filter(|_| session_mode);
    let _listed = crate::admin::hooks::logged_in(&shared, &params, peer, session_node);
    if !session_mode {
        let shared = Arc::clone(&shared);
        let settings = Arc::clone(&settings);
        let listed = _listed.info();
        transaction::serve(
            client, shared, settings, params, secret, buf, shutdown, listed,
        )
        .await;
        return;
    }
    // Boxed: session mode's states (relay, re-attach, connect) would
    // otherwise make every session's task, transaction mode's idle
    // clients included, several KiB larger.
    Box::pin(async move {
        let server_config = &settings.config.server;
    // A session-mode client keeps one connection: it must be the primary.
    let failover_timeout = settings.config.routing.failover_timeout;
    let primary = match wait_for_primary(&shared.topology, failover_timeout).await {
        Ok(primary) => primary,
        Err(error) => {
            reject::<()>(&shared, &mut client, peer, &SessionError::NoPrimary(error)).await;
            return;
        }
    };
    // PAUSE holds new session-pooled sessions before they get a server,
    // and waits for the running ones to end (PgBouncer's session pooling).
    let _active = shared.pause.enter().await;
    // Held for the session's life: its server connection counts against
    // this pod's share of the node's connection budget.
    let waited = settings.config.pool.checkout_timeout;
    let Some(mut _budget_unit) = shared.pools.node_units(&primary).take_owned(waited).await else {
        let error = SessionError::NodeBudget {
            node: primary,
            waited,
            share: shared.pools.node_budget(),
        };
        reject::<()>(&shared, &mut client, peer, &error).await;
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
            reject::<()>(&shared, &mut client, peer, &SessionError::Backend(error)).await;
            return;
        }
    };
    let registration = shared.cancels.register(Some(&server.cancel_target));
    let key = registration.key();
    let mut greeting = std::mem::take(&mut server.startup_messages);
    messages::backend_key_data(&mut greeting, key.pid, key.secret);
    messages::ready_for_query_idle(&mut greeting);
    greeting.extend_from_slice(&server.pending);
    if client.write_all(&greeting).await.is_err() {
        return;
    }
    tracing::debug!(%peer, user, server = %server.addr, "session started");
    let mut early_client_bytes = buf;
    loop {
        // Resolved once per server connection: the relay then only adds to it.
        let route = shared.metrics.route(&server.addr, "primary");
        let activity = Activity::counting(&shared.metrics, &route);
        let end = relay_to(
            &mut client,
            &mut server,
            &std::mem::take(&mut early_client_bytes),
            server_config,
            &shutdown,
            &activity,
        )
        .await;
        let server_left = matches!(
            end,
            RelayEnd::ServerLeftIdle { .. } | RelayEnd::ServerGone { .. }
        );
        if !(server_left && activity.can_move() && shared.topology.primary_left(&server.addr).await)
        {
            finish(&shared, client, server, end, &activity).await;
            return;
        }
        // The primary went away between two transactions of the session,
        // which kept nothing on it: carry on on the next primary, as if
        // nothing happened.
        match reattach(&shared, &settings, &params, secret.as_ref()).await {
            Ok((next, unit)) => {
                tracing::info!(%peer, user, from = %server.addr, to = %next.addr, "session moved to a new server connection");
                registration.link(&next.cancel_target);
                server = next;
                // The old unit goes back as the new one is held.
                _budget_unit = unit;
            }
            Err(error) => {
                tracing::info!(%peer, user, server = %server.addr, %error, "session lost its server");
                let mut farewell = match end {
                    RelayEnd::ServerLeftIdle { farewell } => farewell,
                    _ => Vec::new(),
                };
                if farewell.is_empty() {
                    farewell.extend_from_slice(&lost_server(&server.addr));
                }
                shared.metrics.errors_in(&farewell);
                let _ = client.write_all(&farewell).await;
                let _ = client.shutdown().await;
                return;
            }
        }
    }
    })
    .await;
}

fn lost_server(addr: &str) -> BytesMut {
    ClientError::fatal("08006", format!("connection to server {addr} was lost")).to_bytes()
}

/// A new server connection for a session-mode client whose server left
/// while the session could move, with its unit of the node's connection
/// budget: on the verified primary, waiting for one (and retrying connects
/// to a node that is going away) up to `routing.failover_timeout`.
async fn reattach(
    shared: &Shared,
    settings: &Settings,
    params: &[(String, String)],
    secret: Option<&Secret>,
) -> Result<(ServerConnection, NodeUnit), SessionError> {
    let timeout = settings.config.routing.failover_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let primary = wait_for_primary(&shared.topology, remaining)
            .await
            .map_err(SessionError::NoPrimary)?;
        let waited = settings.config.pool.checkout_timeout;
        let Some(unit) = shared.pools.node_units(&primary).take_owned(waited).await else {
            return Err(SessionError::NodeBudget {
                node: primary,
                waited,
                share: shared.pools.node_budget(),
            });
        };
        let connected = backend::connect(
            &primary,
            params,
            secret,
            &settings.server_tls,
            settings.config.server.connect_timeout,
        )
        .await;
        match connected {
            Ok(server) => return Ok((server, unit)),
            Err(error) if error.is_node_unavailable() && tokio::time::Instant::now() < deadline => {
                // Most likely the old primary, not yet dropped by the monitor.
                shared
                    .topology
                    .next_publish(std::time::Duration::from_secs(1))
                    .await;
            }
            Err(error) => return Err(SessionError::Backend(error)),
        }
    }
}

/// Relays the session over `server` until either side ends it.
async fn relay_to(
    client: &mut ClientStream,
    server: &mut ServerConnection,
    early_client_bytes: &[u8],
    server_config: &crate::config::ServerConfig,
    shutdown: &Shutdown,
    activity: &Activity,
) -> RelayEnd {
    relay::relay(
        client,
        &mut server.stream,
        // A client may pipeline its first query behind the startup packet.
        early_client_bytes,
        server_config.max_message_size,
        idle::IdleTimeout::new(server_config.client_idle_timeout),
        activity,
        shutdown,
    )
    .await
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
    let opened = negotiate::open(
        tcp,
        &mut buf,
        acceptor,
        settings.config.tls.mode,
        deadline,
        &shared.metrics,
    )
    .await;
    let Opened {
        mut client,
        opening,
        binding,
    } = match opened {
        Ok(opened) => opened,
        Err(Refused::Tell(mut client, error)) => {
            return reject(shared, &mut client, peer, &error).await;
        }
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
            return reject(shared, &mut client, peer, &error).await;
        }
    };
    let Some(client_slot) = client_slot else {
        let error = SessionError::TooManyClients(server_config.max_client_connections);
        return reject(shared, &mut client, peer, &error).await;
    };
    let user = StartupPacket::param(&params, "user").unwrap_or_default();
    // Before authentication: auth passthrough would open a server connection.
    if let Err(error) = certificate_allows(&client, &settings.config.tls, &user) {
        return reject(shared, &mut client, peer, &error.into()).await;
    }
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
            return reject(shared, &mut client, peer, &error).await;
        }
        Err(_) => return reject(shared, &mut client, peer, &SessionError::StartupTimeout).await,
    };
    let user_slot = match authenticated.max_connections {
        Some(max) => match shared.limits.try_user(&user, max) {
            Some(slot) => Some(slot),
            None => {
                return reject(
                    shared,
                    &mut client,
                    peer,
                    &SessionError::TooManyForUser(user),
                )
                .await;
            }
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

/// Checks `tls.client_cert_user`: the client's certificate (none on a
/// plaintext connection) must name `user`.
fn certificate_allows(
    client: &ClientStream,
    tls: &TlsConfig,
    user: &str,
) -> Result<(), CertUserError> {
    if tls.client_cert_user == ClientCertUser::Off {
        return Ok(());
    }
    let check = |cert: Option<&[u8]>| {
        crate::tls::check_user(tls.client_cert_user, &tls.client_cert_map, cert, user)
    };
    client
        .with_tls(|stream| {
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            check(leaf.map(|cert| cert.as_ref()))
        })
        .unwrap_or_else(|| check(None))
}

/// Ends a session-mode session the way `end` calls for.
async fn finish(
    shared: &Shared,
    mut client: ClientStream,
    mut server: ServerConnection,
    end: RelayEnd,
    activity: &Activity,
) {
    tracing::debug!(?end, server = %server.addr, "session ended");
    let target = Arc::clone(&server.cancel_target);
    let busy = !activity.is_idle();
    let tell_client = |error: ClientError| activity.client_at_boundary().then(|| error.to_bytes());
    let message = match end {
        RelayEnd::ClientTerminated => None,
        RelayEnd::ClientGone => {
            if busy {
                send_cancel(&target).await;
            }
            None
        }
        RelayEnd::ClientProtocol(error) => {
            if busy {
                send_cancel(&target).await;
            }
            let reply = SessionError::Protocol(error).to_client();
            reply
                .filter(|_| activity.client_at_boundary())
                .map(|b| BytesMut::from(&b[..]))
        }
        RelayEnd::ServerLeftIdle { farewell } => Some(BytesMut::from(&farewell[..])),
        RelayEnd::ServerGone { fatal_relayed } => (!fatal_relayed)
            .then(|| {
                activity
                    .client_at_boundary()
                    .then(|| lost_server(&server.addr))
            })
            .flatten(),
        RelayEnd::ServerProtocol(error) => tell_client(ClientError::fatal(
            "08P01",
            format!("server {} sent an invalid message: {error}", server.addr),
        )),
        RelayEnd::IdleTimeout => tell_client(ClientError::fatal(idle::SQLSTATE, idle::MESSAGE)),
        RelayEnd::DrainedIdle | RelayEnd::HardStop => {
            if busy {
                send_cancel(&target).await;
            }
            tell_client(ClientError::fatal(
                "57P01",
                "terminating connection because switchyard is shutting down",
            ))
        }
    };
    if let Some(message) = message {
        // The server's farewell (ServerLeftIdle) was not relayed, so not
        // yet counted either.
        shared.metrics.errors_in(&message);
        let _ = client.write_all(&message).await;
    }
    if !busy {
        let _ = server
            .stream
            .write_all(crate::protocol::messages::TERMINATE)
            .await;
    }
    let _ = client.shutdown().await;
}

/// Tells the client why it is refused and closes; `None`, for `admit`.
async fn reject<T>(
    shared: &Shared,
    client: &mut ClientStream,
    peer: SocketAddr,
    error: &SessionError,
) -> Option<T> {
    if matches!(
        error,
        SessionError::WrongPassword(_)
            | SessionError::Backend(_)
            | SessionError::TooManyClients(_)
            | SessionError::TooManyForUser(_)
            | SessionError::AuthLookup { .. }
            | SessionError::ClientCertificate(_)
            | SessionError::NodeBudget { .. }
    ) {
        tracing::info!(%peer, %error, "client rejected");
    } else {
        tracing::debug!(%peer, %error, "client rejected");
    }
    if let Some(message) = error.to_client() {
        shared.metrics.errors_in(&message);
        let _ = client.write_all(&message).await;
    }
    let _ = client.shutdown().await;
    None
}
