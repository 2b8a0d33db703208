//! Transaction pooling: a client borrows a server connection from its pool
//! for each transaction (or pinned stretch) and gives it back at the next
//! idle point. Session state travels with the client: named prepared
//! statements are re-prepared where needed, settings are re-applied, and
//! state that cannot move pins the client to its connection.

mod catalog;
mod deferred;
mod finish;
mod local;
mod login;
mod node_pools;
pub mod pins;
mod relay;
pub mod request;
mod retry;
mod route;
mod settings;
pub mod statements;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::backend::Secret;
use crate::backend::query::{self as internal, InternalError};
use crate::config::Consistency;
use crate::listener::cancel::Registration;
use crate::pool::{PoolError, PoolKey, PoolSettings, PooledConnection};
use crate::protocol::buffers;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared, Shutdown};
use crate::router::target::Policy;
use crate::tls::ClientStream;
pub use catalog::Catalogs;
use catalog::PoolCatalog;
use login::{invalid_route, login};
use node_pools::NodePools;
pub(crate) use relay::complete_frame;
use relay::{ClientState, ShutdownWatch, StretchEnd};
use settings::SessionSettings;

/// A logged-in client in transaction mode.
pub struct TransactionSession {
    client: ClientStream,
    pools: NodePools,
    catalog: Arc<PoolCatalog>,
    settings: SessionSettings,
    state: ClientState,
    registration: Registration,
    policy: Policy,
    /// The next request must run on the primary (a replica refused it).
    force_primary: bool,
    /// The client's bare BEGIN was answered by the proxy: its transaction
    /// opens on the node the next request is routed to.
    begin_held: bool,
    /// The held BEGIN's transaction failed before any server had it: the
    /// client is in a failed transaction block until it ends it.
    held_failed: bool,
    /// The settings (fingerprint) a replica refused to take: while the
    /// session keeps them, its reads go to the primary.
    settings_refused_by_replica: Option<u64>,
    /// When the primary first failed the request at hand (could not be
    /// reached, or stopped it before it ran), while the request waits for
    /// the topology to catch up.
    primary_failing_since: Option<Instant>,
    proxy: Arc<Settings>,
    shared: Arc<Shared>,
    /// This client's entry in SHOW CLIENTS (it shows the client waiting).
    listed: Arc<crate::admin::clients::ClientInfo>,
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

/// Finishes login for an authenticated client: checks out a connection to
/// learn the server's parameters under the client's settings, greets the
/// client, then serves it until it leaves.
// The session's parts as `session::serve` took them apart; a struct to
// carry them would be built for this one call.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    mut client: ClientStream,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    params: Vec<(String, String)>,
    password: Option<Secret>,
    early_client_bytes: BytesMut,
    shutdown: Shutdown,
    listed: Arc<crate::admin::clients::ClientInfo>,
) {
    // Boxed, once per session, for the reason `admit` is.
    let login = match Box::pin(login(&mut client, &shared, &settings, &params, password)).await {
        Ok(Some(login)) => login,
        Ok(None) => return,
        Err(message) => {
            shared.metrics.errors_in(&message);
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
        pools: login.pools,
        catalog: login.catalog,
        settings: login.settings,
        state,
        registration: login.registration,
        policy: login.policy,
        force_primary: false,
        begin_held: false,
        held_failed: false,
        settings_refused_by_replica: None,
        primary_failing_since: None,
        proxy: settings,
        shared,
        listed,
    };
    session.run(&shutdown).await;
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

/// `make()`'s future in a box of its own, written there directly.
///
/// `Box::pin(future)` builds the future on the stack and then copies all
/// of it (840 bytes for a request, most of it not yet initialised) into
/// the box: `memmove` was the largest single item of a `perf` profile
/// under `pgbench -S`. Allocating first and writing `make()`'s result into
/// the uninitialised box lets the compiler build the future in place
/// (memmove's share fell from 2.4 % to 1.7 % with this and another change;
/// not measured alone).
fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

impl TransactionSession {
    async fn run(mut self, shutdown: &Shutdown) {
        let idle_timeout = self.proxy.config.server.client_idle_timeout;
        let mut watch = ShutdownWatch::new(shutdown, idle_timeout);
        loop {
            if !self.wait_for_request(&mut watch).await {
                return;
            }
            // Boxed, one allocation per request: serving one is a deep
            // state machine (routing, checkout, prepare, relay, failover)
            // that an idle client's task would otherwise carry all along
            // (measured with 5,000 idle clients: 61.9 -> 52.3 MiB RSS).
            if !boxed_in_place(|| self.serve_request(&mut watch)).await {
                return;
            }
        }
    }

    /// Serves the buffered request (and whatever follows it on the same
    /// connection); false when the session ends.
    async fn serve_request(&mut self, watch: &mut ShutdownWatch) -> bool {
        if let Some(error) = self.state.owed_error.take() {
            self.fail_request(error);
            return self.flush().await;
        }
        let proxy = Arc::clone(&self.proxy);
        let functions = &proxy.write_functions;
        if self.held_failed {
            let limit = proxy.config.server.max_message_size;
            match deferred::answer_failed(&mut self.state, limit, functions) {
                Some(status) => self.held_failed = status == b'E',
                None => self.fail_request(deferred::in_failed_transaction()),
            }
            return self.flush().await;
        }
        let status = if self.begin_held { b'T' } else { b'I' };
        if local::answer(&mut self.state, &self.catalog, functions, status)
            || self.answer_route_setting(status)
            || self.answer_transaction_control()
        {
            // Answered without a server connection (e.g. re-preparing a
            // statement that is known to parse).
            return self.flush().await;
        }
        let limit = self.proxy.config.server.max_message_size;
        // Unless it routes by statement, the class would not change where
        // the request goes: not worth a lexer pass.
        let classifier = self.routes_by_statement().then(|| request::Classifier {
            functions,
            learned: &self.shared.learned_writes,
            opened: self.begin_held,
        });
        let request = request::inspect(
            &self.state.client_in,
            limit,
            &self.state.statements,
            classifier,
        );
        let read = !std::mem::take(&mut self.force_primary)
            && (request.read || self.settings.read_only_by_default())
            && !self.settings.serializable_by_default()
            && self.settings_refused_by_replica != Some(self.settings.fingerprint());
        // PAUSE (admin console) holds new transactions here, and waits
        // for this one until the guard drops at the end of the stretch.
        let _active = self.shared.pause.enter().await;
        let Some(routed) = self.route(read, &request).await else {
            return self.flush().await;
        };
        tracing::trace!(client = self.registration.key().pid, node = %routed.pool.key().node, read, "checkout");
        // One clock read for SHOW CLIENTS' wait and the checkout's own.
        let asked = Instant::now();
        self.listed.wait.begin_at(asked);
        // This future is allocated per request: every rare path below is
        // boxed, and the checkout's result is scoped to a block, so that
        // neither sizes the state the relay runs in. With the pool's
        // connections boxed too it is 840 bytes (2,304 before; measured
        // with `-Zprint-type-sizes`), which glibc serves from its
        // per-thread cache (chunks up to 1,032 bytes).
        let mut conn = {
            let checkout = routed.pool.checkout_since(asked).await;
            self.listed.wait.end();
            match checkout {
                Ok(conn) => conn,
                Err(error) => {
                    return Box::pin(self.checkout_failed(error, routed.plan.gated)).await;
                }
            }
        };
        if conn.settings_fingerprint != self.settings.fingerprint()
            && let Err(error) = Box::pin(self.prepare(&mut conn)).await
        {
            // A replica that cannot take the session's settings (lost, or
            // refusing them: a standby refuses even `SELECT set_config(…)`
            // when serializable is the database's or role's default) is
            // not the client's problem either.
            if routed.plan.gated {
                tracing::debug!(%error, "replica cannot take the session; the primary serves the read");
                if matches!(error, InternalError::Refused(_)) {
                    self.settings_refused_by_replica = Some(self.settings.fingerprint());
                }
                conn.discard();
                self.force_primary = true;
                return true;
            }
            let key = conn.pool().key().clone();
            conn.discard();
            self.settings_failed(error, &key);
            return self.flush().await;
        }
        if self.begin_held
            && let Err(error) = Box::pin(self.open_held_transaction(&mut conn)).await
        {
            if routed.plan.gated && matches!(error, InternalError::Connection(_)) {
                conn.discard();
                self.force_primary = true;
                return true;
            }
            conn.discard();
            self.held_begin_failed(error);
            return self.flush().await;
        }
        // Opened on this connection; a re-run elsewhere opens it again.
        let begun = std::mem::take(&mut self.begin_held);
        if routed.plan.retryable {
            self.state.replay.clear();
            self.state
                .replay
                .extend_from_slice(&self.state.client_in[..request.len]);
        }
        self.registration.link(&conn.cancel_target);
        let started = conn.lent_at();
        let end = relay::run(
            &mut self.client,
            &mut conn,
            &mut self.state,
            &self.catalog,
            &self.proxy.write_functions,
            &self.shared.metrics,
            routed.plan,
            limit,
            watch,
            started,
        )
        .await;
        drop(routed.load);
        let ended = crate::admin::hooks::stretch_ended(
            &self.shared,
            &routed.pool,
            &mut self.state.traffic,
            started,
        );
        self.count_pin();
        // Pinned sessions keep their connection; everyone else's cancel
        // key must stop pointing at it before it goes back to the pool.
        self.registration.unlink();
        // The relay leaves a finished transaction's last bytes to be
        // written here, after it was counted above.
        if matches!(end, StretchEnd::Idle) && !self.flush_until_hard_stop(watch).await {
            // The client is gone, or would not read before the shutdown
            // timeout; the server's side is idle, so its connection goes
            // back as usual.
            self.finish_stretch(conn, StretchEnd::Idle, ended).await;
            return false;
        }
        if let StretchEnd::Retry { reusable, writes } = end {
            if routed.plan.gated {
                self.state.to_client.clear();
                self.begin_held = begun;
                self.retry_on_primary(conn, reusable, writes, request);
                return true;
            }
            // Boxed: a rare path whose future would otherwise enlarge every
            // idle session's task.
            if Box::pin(self.shared.topology.primary_left(&conn.addr)).await {
                self.state.to_client.clear();
                self.begin_held = begun;
                self.rerun_after_failover(conn, reusable);
                return true;
            }
            // The primary stays: the request was stopped for its own sake
            // (pg_terminate_backend, a session made read-only), and its
            // answer stands (its errors were held back uncounted).
            self.primary_failing_since = None;
            self.shared.metrics.errors_in(&self.state.to_client);
            if !reusable {
                return Box::pin(self.server_lost(conn)).await;
            }
            return self.finish_stretch(conn, StretchEnd::Idle, ended).await && self.flush().await;
        }
        self.primary_failing_since = None;
        if routed.wrote
            && matches!(end, StretchEnd::Idle | StretchEnd::IdleDraining)
            && self.policy.consistency == Consistency::ReadYourWrites
        {
            Box::pin(self.note_causal_lsn(&mut conn)).await;
        }
        self.finish_stretch(conn, end, ended).await
    }

    /// Opens the transaction of a held BEGIN on the connection its first
    /// request got.
    async fn open_held_transaction(
        &mut self,
        conn: &mut PooledConnection,
    ) -> Result<(), InternalError> {
        internal::query(conn, "BEGIN").await?;
        Ok(())
    }

    /// The held BEGIN could not be opened: its transaction fails, as it
    /// would have on a server (ReadyForQuery 'E' until COMMIT or ROLLBACK).
    fn held_begin_failed(&mut self, error: InternalError) {
        tracing::warn!(%error, "could not open a held transaction");
        let message = match error {
            InternalError::Refused(raw) => as_error(&raw),
            InternalError::Connection(reason) => ClientError {
                severity: "ERROR",
                code: "08006",
                message: format!("could not open the transaction on a server: {reason}"),
            }
            .to_bytes()
            .freeze(),
        };
        self.fail_request(message);
    }

    /// Waits until a complete client message is buffered; false when the session ends.
    async fn wait_for_request(&mut self, watch: &mut ShutdownWatch) -> bool {
        use tokio::io::AsyncReadExt;
        loop {
            let limit = self.proxy.config.server.max_message_size;
            // The router reads the request's first message whole; a frame
            // that is too long is the relay's to report.
            if !matches!(
                relay::complete_frame(&self.state.client_in, limit),
                Ok(None)
            ) {
                return self.state.client_in[0] != b'X';
            }
            if self.state.client_in.is_empty() {
                // Between transactions: the last request's copy is spent,
                // and what a large request or answer grew is not kept.
                self.state.replay.clear();
                buffers::shed_if_large(&mut self.state.replay);
                buffers::shed_if_large(&mut self.state.client_in);
                buffers::shed_if_large(&mut self.state.to_client);
            }
            // Idle clients are the many: keep their buffer small until they speak.
            self.state.client_in.reserve(512);
            // Between transactions: the idle clock runs from here (one
            // clock read per transaction) until the client sends anything.
            if self.state.client_in.is_empty()
                && self.state.idle_since.is_none()
                && watch.idle.is_enabled()
            {
                self.state.idle_since = Some(tokio::time::Instant::now());
            }
            let idle_since = self.state.idle_since;
            // Biased: no random branch order (a thread-local RNG draw) per
            // transaction; the read comes last, and the two others are
            // ready once in a session at most.
            let read = tokio::select! {
                biased;
                () = &mut watch.draining => {
                    self.say_goodbye().await;
                    return false;
                }
                () = watch.idle.expired(|| idle_since) => {
                    self.close_idle().await;
                    return false;
                }
                read = self.client.read_buf(&mut self.state.client_in) => read,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return false;
            }
            self.state.idle_since = None;
        }
    }

    /// Brings a freshly checked-out connection, whose settings differ, to
    /// the client's settings.
    async fn prepare(&mut self, conn: &mut PooledConnection) -> Result<(), InternalError> {
        internal::query(conn, &self.settings.apply_sql()).await?;
        conn.settings_fingerprint = self.settings.fingerprint();
        Ok(())
    }

    /// Tells the client its settings could not be applied.
    fn settings_failed(&mut self, error: InternalError, pool: &PoolKey) {
        tracing::warn!(%error, %pool, "could not apply session settings");
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
    }

    /// Answers the buffered request with `error` as PostgreSQL would: the
    /// error, everything up to the next Sync (or the Query) skipped, then
    /// ReadyForQuery.
    fn fail_request(&mut self, error: Bytes) {
        use bytes::Buf;
        self.shared.metrics.errors_in(&error);
        // A held BEGIN's transaction fails with the error, on no server.
        if std::mem::take(&mut self.begin_held) {
            self.held_failed = true;
        }
        self.state.to_client.extend_from_slice(&error);
        let limit = self.proxy.config.server.max_message_size;
        while let Ok(Some((tag, len))) = relay::complete_frame(&self.state.client_in, limit) {
            self.state.client_in.advance(len);
            if matches!(tag, b'S' | b'Q' | b'F') {
                break;
            }
        }
        let status = if self.held_failed { b'E' } else { b'I' };
        messages::ready_for_query(&mut self.state.to_client, status);
    }

    async fn flush(&mut self) -> bool {
        let ok = self.client.write_all(&self.state.to_client).await.is_ok();
        self.state.to_client.clear();
        ok
    }

    /// [`Self::flush`] of what may be up to a result's last 64 KiB, given
    /// up at the shutdown timeout: a client that stops reading must not
    /// hold its session (and shutdown) forever.
    async fn flush_until_hard_stop(&mut self, watch: &mut ShutdownWatch) -> bool {
        let written = tokio::select! {
            written = self.client.write_all(&self.state.to_client) => written.is_ok(),
            () = &mut watch.hard_stop => false,
        };
        self.state.to_client.clear();
        written
    }
}
