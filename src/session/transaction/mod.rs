//! Transaction pooling: a client borrows a server connection from its pool
//! for each transaction (or pinned stretch) and gives it back at the next
//! idle point. Session state travels with the client: named prepared
//! statements are re-prepared where needed, settings are re-applied, and
//! state that cannot move pins the client to its connection.

mod catalog;
mod internal;
mod local;
pub mod pins;
mod relay;
mod settings;
mod statements;
mod tracker;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::backend::Secret;
use crate::listener::cancel::{CancelTarget, Registration, send_cancel};
use crate::pool::{Pool, PoolError, PoolKey, PoolSettings, PooledConnection};
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared, Shutdown};
use crate::tls::ClientStream;
pub use catalog::Catalogs;
use catalog::PoolCatalog;
use internal::InternalError;
use relay::{ClientState, ShutdownWatch, StretchEnd};
use settings::{SNAPSHOT_SQL, SessionSettings};

/// A logged-in client in transaction mode.
pub struct TransactionSession {
    client: ClientStream,
    pool: Arc<Pool>,
    catalog: Arc<PoolCatalog>,
    settings: SessionSettings,
    state: ClientState,
    registration: Registration,
    limit: usize,
    shared: Arc<Shared>,
}

/// The pool settings from the configuration.
pub fn pool_settings(settings: &Settings) -> PoolSettings {
    let pool = &settings.config.pool;
    PoolSettings {
        min_size: pool.min_size,
        max_size: pool.max_size,
        checkout_timeout: pool.checkout_timeout,
        idle_timeout: pool.idle_timeout,
        max_lifetime: pool.max_lifetime,
        health_check_after: pool.health_check_after,
        connect_timeout: settings.config.server.connect_timeout,
    }
}

/// What login in transaction mode establishes.
struct Login {
    pool: Arc<Pool>,
    catalog: Arc<PoolCatalog>,
    settings: SessionSettings,
    registration: Registration,
}

/// Finishes login for an authenticated client: checks out a connection to
/// learn the server's parameters under the client's settings, greets the
/// client, then serves it until it leaves.
pub async fn serve(
    mut client: ClientStream,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    params: Vec<(String, String)>,
    password: Option<Secret>,
    early_client_bytes: BytesMut,
    shutdown: Shutdown,
) {
    let login = match login(&mut client, &shared, &settings, &params, password).await {
        Ok(Some(login)) => login,
        Ok(None) => return,
        Err(message) => {
            let _ = client.write_all(&message).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let state = ClientState {
        client_in: early_client_bytes,
        ..ClientState::default()
    };
    let session = TransactionSession {
        client,
        pool: login.pool,
        catalog: login.catalog,
        settings: login.settings,
        state,
        registration: login.registration,
        limit: settings.config.server.max_message_size,
        shared,
    };
    session.run(&shutdown).await;
}

async fn login(
    client: &mut ClientStream,
    shared: &Arc<Shared>,
    settings: &Settings,
    params: &[(String, String)],
    password: Option<Secret>,
) -> Result<Option<Login>, Bytes> {
    let user = crate::protocol::StartupPacket::param(params, "user").unwrap_or_default();
    let database =
        crate::protocol::StartupPacket::param(params, "database").unwrap_or_else(|| user.clone());
    let key = PoolKey::new(settings.config.primary(), &database, &user);
    let catalog = shared.catalogs.get(&key);
    let pool = shared
        .pools
        .get_or_create(key, password, pool_settings(settings));
    let session_settings = SessionSettings::from_startup(params);
    let fingerprint = session_settings.fingerprint();

    // Clients with settings seen before are greeted without a server round
    // trip, so logins keep working while every connection is busy.
    let (mut greeting, target) = match catalog.greeting(fingerprint) {
        Some(frames) => (BytesMut::from(&frames[..]), None),
        None => {
            let (frames, target) = first_greeting(&pool, &session_settings).await?;
            catalog.remember_greeting(fingerprint, frames.clone());
            (BytesMut::from(&frames[..]), Some(target))
        }
    };
    let target = target.unwrap_or_else(|| CancelTarget {
        addr: pool.key().node.clone(),
        pid: 0,
        secret: Bytes::new(),
    });
    let registration = shared.cancels.register(target);
    // The login connection went back to the pool: nothing to cancel yet.
    registration.set_linked(false);
    let key = registration.key();
    messages::backend_key_data(&mut greeting, key.pid, key.secret);
    messages::ready_for_query_idle(&mut greeting);
    if client.write_all(&greeting).await.is_err() {
        return Ok(None);
    }
    Ok(Some(Login {
        pool,
        catalog,
        settings: session_settings,
        registration,
    }))
}

/// Checks out a connection, applies `settings`, and returns the
/// ParameterStatus frames the client should see.
async fn first_greeting(
    pool: &Arc<Pool>,
    settings: &SessionSettings,
) -> Result<(Bytes, CancelTarget), Bytes> {
    let mut conn = pool
        .checkout()
        .await
        .map_err(|e| pool_error_bytes(&e, true))?;
    let statuses = match internal::query(&mut conn, &settings.apply_sql()).await {
        Ok(result) => result.parameter_status,
        Err(InternalError::Refused(raw)) => {
            conn.settings_fingerprint = u64::MAX;
            conn.checkin();
            return Err(as_fatal(&raw));
        }
        Err(InternalError::Connection(reason)) => {
            conn.discard();
            return Err(ClientError::fatal("08006", reason).to_bytes().freeze());
        }
    };
    conn.settings_fingerprint = settings.fingerprint();
    let target = cancel_target(&conn);
    let frames = merge_parameters(pool.server_parameters().unwrap_or_default(), &statuses);
    conn.checkin();
    Ok((frames.freeze(), target))
}

fn cancel_target(conn: &PooledConnection) -> CancelTarget {
    CancelTarget {
        addr: conn.addr.clone(),
        pid: conn.pid,
        secret: conn.secret.clone(),
    }
}

/// An ErrorResponse for a pool failure (ERROR mid-session, FATAL at login).
fn pool_error_bytes(error: &PoolError, fatal: bool) -> Bytes {
    if let Some(raw) = error.server_error() {
        return if fatal { raw.clone() } else { as_error(raw) };
    }
    let severity = if fatal { "FATAL" } else { "ERROR" };
    ClientError {
        severity,
        code: error.sqlstate(),
        message: error.to_string(),
    }
    .to_bytes()
    .freeze()
}

/// The server's ErrorResponse with severity FATAL (the client is closed after it).
fn as_fatal(raw: &Bytes) -> Bytes {
    with_severity(raw, "FATAL")
}

/// The server's ErrorResponse with severity ERROR (the client stays).
fn as_error(raw: &Bytes) -> Bytes {
    with_severity(raw, "ERROR")
}

fn with_severity(raw: &Bytes, severity: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(raw.len() + 8);
    out.extend_from_slice(b"E\0\0\0\0");
    for field in raw.get(5..).unwrap_or_default().split(|&b| b == 0) {
        match field.first() {
            None => break,
            Some(b'S') | Some(b'V') => {
                out.extend_from_slice(&field[..1]);
                out.extend_from_slice(severity.as_bytes());
            }
            Some(_) => out.extend_from_slice(field),
        }
        out.extend_from_slice(b"\0");
    }
    out.extend_from_slice(b"\0");
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// The pool's default ParameterStatus frames, overridden by `statuses`.
fn merge_parameters(defaults: Bytes, statuses: &[Bytes]) -> BytesMut {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut rest = defaults;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
        if len > rest.len() || len < 5 {
            break;
        }
        let frame = rest.split_to(len);
        if frame[0] == b'S' {
            frames.push(frame);
        }
    }
    for status in statuses {
        let name = internal::parameter_name(status);
        frames.retain(|f| internal::parameter_name(f) != name);
        frames.push(status.clone());
    }
    let mut out = BytesMut::new();
    for frame in frames {
        out.extend_from_slice(&frame);
    }
    out
}

impl TransactionSession {
    async fn run(mut self, shutdown: &Shutdown) {
        let mut watch = ShutdownWatch::new(shutdown);
        loop {
            if !self.wait_for_request(&mut watch).await {
                return;
            }
            if let Some(error) = self.state.owed_error.take() {
                self.fail_request(error);
                if !self.flush().await {
                    return;
                }
                continue;
            }
            if local::answer(&mut self.state, &self.catalog) {
                // Answered without a server connection (e.g. re-preparing a
                // statement that is known to parse).
                if !self.flush().await {
                    return;
                }
                continue;
            }
            tracing::trace!(client = self.registration.key().pid, "checkout");
            let mut conn = match self.pool.checkout().await {
                Ok(conn) => {
                    tracing::trace!(
                        client = self.registration.key().pid,
                        server = conn.pid,
                        "checked out"
                    );
                    conn
                }
                Err(error) => {
                    self.fail_request(pool_error_bytes(&error, false));
                    if !self.flush().await {
                        return;
                    }
                    continue;
                }
            };
            if !self.prepare(&mut conn).await {
                continue;
            }
            // Building a target allocates; most checkouts reuse the connection
            // the key already points at.
            if !self.registration.points_at(&conn.addr, conn.pid) {
                self.registration.retarget(cancel_target(&conn));
            }
            self.registration.set_linked(true);
            let end = relay::run(
                &mut self.client,
                &mut conn,
                &mut self.state,
                &self.catalog,
                self.limit,
                &mut watch,
            )
            .await;
            self.count_pin();
            // Pinned sessions keep their connection; everyone else's cancel
            // key must stop pointing at it before it goes back to the pool.
            self.registration.set_linked(false);
            if !self.finish_stretch(conn, end).await {
                return;
            }
        }
    }

    /// Waits until a complete client message is buffered; false when the session ends.
    async fn wait_for_request(&mut self, watch: &mut ShutdownWatch) -> bool {
        use tokio::io::AsyncReadExt;
        loop {
            if self.state.client_in.len() >= 5 {
                let tag = self.state.client_in[0];
                if tag == b'X' {
                    return false;
                }
                return true;
            }
            // Idle clients are the many: keep their buffer small until they speak.
            self.state.client_in.reserve(512);
            let read = tokio::select! {
                () = watch.draining.as_mut() => {
                    self.say_goodbye().await;
                    return false;
                }
                read = self.client.read_buf(&mut self.state.client_in) => read,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return false;
            }
        }
    }

    /// Brings a freshly checked-out connection to the client's settings.
    async fn prepare(&mut self, conn: &mut PooledConnection) -> bool {
        if conn.settings_fingerprint == self.settings.fingerprint() {
            return true;
        }
        match internal::query(conn, &self.settings.apply_sql()).await {
            Ok(_) => {
                conn.settings_fingerprint = self.settings.fingerprint();
                true
            }
            Err(error) => {
                tracing::warn!(%error, pool = %self.pool.key(), "could not apply session settings");
                let message = match error {
                    InternalError::Refused(raw) => as_error(&raw),
                    InternalError::Connection(reason) => ClientError {
                        severity: "ERROR",
                        code: "08006",
                        message: reason,
                    }
                    .to_bytes()
                    .freeze(),
                };
                self.fail_request(message);
                let _ = self.flush().await;
                false
            }
        }
    }

    /// Answers the buffered request with `error` as PostgreSQL would: the
    /// error, everything up to the next Sync (or the Query) skipped, then
    /// ReadyForQuery.
    fn fail_request(&mut self, error: Bytes) {
        use bytes::Buf;
        self.state.to_client.extend_from_slice(&error);
        while let Ok(Some((tag, len))) = relay::complete_frame(&self.state.client_in, self.limit) {
            self.state.client_in.advance(len);
            if matches!(tag, b'S' | b'Q' | b'F') {
                break;
            }
        }
        messages::ready_for_query_idle(&mut self.state.to_client);
    }

    async fn flush(&mut self) -> bool {
        let ok = self.client.write_all(&self.state.to_client).await.is_ok();
        self.state.to_client.clear();
        ok
    }

    fn count_pin(&mut self) {
        if let Some(reason) = self.state.new_pin.take() {
            self.shared.pins.count(reason);
            tracing::debug!(?reason, pool = %self.pool.key(), "client pinned to its server connection");
        }
    }

    /// Returns the connection (or not) after a stretch; false when the session ends.
    async fn finish_stretch(&mut self, mut conn: PooledConnection, end: StretchEnd) -> bool {
        tracing::trace!(?end, server = %conn.addr, pinned = self.state.pins.is_pinned(), "stretch ended");
        match end {
            StretchEnd::Idle | StretchEnd::IdleDraining => {
                if self.state.settings_dirty {
                    self.snapshot_settings(&mut conn).await;
                }
                if self.state.pins.is_pinned() {
                    // Draining while pinned: the pinned state cannot survive.
                    conn.discard();
                } else {
                    conn.checkin();
                }
                if matches!(end, StretchEnd::IdleDraining) {
                    self.say_goodbye().await;
                    return false;
                }
                true
            }
            StretchEnd::Terminate => {
                let reusable = !self.state.pins.is_pinned() && self.state.tracker.is_empty();
                if reusable {
                    conn.checkin();
                } else {
                    conn.discard();
                }
                false
            }
            StretchEnd::ClientGone | StretchEnd::ClientProtocol(_) | StretchEnd::HardStop => {
                if !self.state.tracker.is_empty() {
                    send_cancel(&cancel_target(&conn)).await;
                }
                conn.discard();
                let message = match end {
                    StretchEnd::ClientProtocol(error) => {
                        crate::session::SessionError::Protocol(error).to_client()
                    }
                    StretchEnd::HardStop => Some(shutdown_error()),
                    _ => None,
                };
                if let Some(message) = message {
                    let _ = self.client.write_all(&self.state.to_client).await;
                    let _ = self.client.write_all(&message).await;
                }
                false
            }
            StretchEnd::ServerLost => self.server_lost(conn).await,
            StretchEnd::ServerProtocol(error) => {
                tracing::warn!(%error, server = %conn.addr, "server sent an invalid message");
                self.server_lost(conn).await
            }
        }
    }

    /// The server connection died mid-stretch: the client gets an error for
    /// what was in flight and keeps its connection.
    async fn server_lost(&mut self, conn: PooledConnection) -> bool {
        let addr = conn.addr.clone();
        conn.discard();
        let pending = self.state.tracker.pending_ready();
        self.state.tracker.clear();
        self.state.pins = Default::default();
        self.state.client_in.clear();
        let error = ClientError {
            severity: "ERROR",
            code: "08006",
            message: format!(
                "connection to server {addr} was lost; the transaction was rolled back"
            ),
        };
        if pending == 0 {
            // Nothing was in flight, but the client was in a transaction or
            // pinned: its next request learns that the state is gone.
            let said = self.state.lost_connection_error.take();
            let code = match said.as_deref() {
                Some(frame) if frame.windows(7).any(|w| w == b"C57P01\0") => "57P01",
                _ => "08006",
            };
            let owed = ClientError {
                severity: "ERROR",
                code,
                message: format!(
                    "connection to server {addr} was lost; the open transaction and session state on it are gone"
                ),
            };
            self.state.owed_error = Some(owed.to_bytes().freeze());
            return self.flush().await;
        }
        self.state.lost_connection_error = None;
        // A FATAL the server sent is relayed as it came; follow it with what
        // the client still waits for.
        let server_said_fatal = self.state.to_client.windows(7).any(|w| w == b"SFATAL\0");
        if !server_said_fatal {
            error.encode(&mut self.state.to_client);
        }
        for _ in 0..pending {
            messages::ready_for_query_idle(&mut self.state.to_client);
        }
        self.flush().await
    }

    async fn snapshot_settings(&mut self, conn: &mut PooledConnection) {
        self.state.settings_dirty = false;
        match internal::query(conn, SNAPSHOT_SQL).await {
            Ok(result) => {
                let pairs = result
                    .rows
                    .into_iter()
                    .filter_map(|row| {
                        let mut columns = row.into_iter();
                        Some((columns.next()?, columns.next()?))
                    })
                    .collect();
                self.settings = SessionSettings::from_pairs(pairs);
                conn.settings_fingerprint = self.settings.fingerprint();
            }
            Err(error) => {
                tracing::warn!(%error, "could not read back session settings");
                conn.settings_fingerprint = u64::MAX;
            }
        }
    }

    async fn say_goodbye(&mut self) {
        let _ = self.client.write_all(&shutdown_error()).await;
        let _ = self.client.shutdown().await;
    }
}

fn shutdown_error() -> Bytes {
    ClientError::fatal(
        "57P01",
        "terminating connection because switchyard is shutting down",
    )
    .to_bytes()
    .freeze()
}
