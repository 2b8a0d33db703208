//! Transaction pooling: a client borrows a server connection from its pool
//! for each transaction (or pinned stretch) and gives it back at the next
//! idle point. Session state travels with the client: named prepared
//! statements are re-prepared where needed, settings are re-applied, and
//! state that cannot move pins the client to its connection.

mod catalog;
mod deferred;
mod local;
mod login;
mod node_pools;
pub mod pins;
mod relay;
pub mod request;
mod retry;
mod settings;
pub mod statements;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use crate::backend::Secret;
use crate::backend::query::{self as internal, InternalError};
use crate::config::{Consistency, Route};
use crate::listener::cancel::{Registration, send_cancel};
use crate::pool::{Pool, PoolError, PoolKey, PoolSettings, PooledConnection};
use crate::protocol::buffers;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared, Shutdown};
use crate::router::target::{NoPrimary, Policy, Target, wait_for_primary};
use crate::tls::ClientStream;
use crate::topology::LoadGuard;
use crate::topology::probe::parse_lsn;
pub use catalog::Catalogs;
use catalog::PoolCatalog;
use login::{invalid_route, login};
use node_pools::NodePools;
pub(crate) use relay::complete_frame;
use relay::{ClientState, Plan, ShutdownWatch, StretchEnd};
use request::Request;
use settings::{SNAPSHOT_SQL, SessionSettings};

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

/// Where a request goes, decided by [`TransactionSession::route`].
struct Routed {
    pool: Arc<Pool>,
    /// Counts the transaction on its node until the stretch ends.
    load: LoadGuard,
    plan: Plan,
    /// Routed as a write to the primary (not a read it happens to serve).
    wrote: bool,
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
        self.state.traffic.ready_at = None;
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

    /// The checkout for a request failed: the request goes to the primary
    /// or waits for the topology (true: the session goes on and the
    /// request is routed again), or fails with the pool's error.
    async fn checkout_failed(&mut self, error: PoolError, gated: bool) -> bool {
        if gated && matches!(error, PoolError::Connect(_)) {
            // A replica that cannot serve is not the client's problem,
            // even when it refuses the login: one that has yet to replay
            // a new database or role says 3D000 or 28000. The primary
            // has the last word.
            tracing::debug!(%error, "replica unavailable; the primary serves the read");
            self.force_primary = true;
            return true;
        }
        if error.is_node_unavailable() && self.primary_may_be_failing() {
            // The primary is unreachable and the monitor may not have
            // noticed yet: wait for its next verdict instead of failing
            // a transaction that never started.
            tracing::debug!(%error, "primary unreachable; waiting for the topology");
            self.shared
                .topology
                .next_publish(Duration::from_secs(1))
                .await;
            return true;
        }
        self.primary_failing_since = None;
        self.fail_request(pool_error_bytes(&error, false));
        self.flush().await
    }

    /// Picks the node for a request; `None` after answering it with an
    /// error (no primary within the failover timeout).
    async fn route(&mut self, read: bool, request: &Request) -> Option<Routed> {
        let routing = &self.proxy.config.routing;
        // A guard, not an owned Arc: no reference count to touch per
        // request. Not held across the wait below.
        let mut snapshot = self.shared.topology.load();
        let mut target = self.policy.choose(&snapshot, read);
        if target == Target::AwaitPrimary {
            drop(snapshot);
            // Counted as held (gauge and total) while it waits.
            let shared = Arc::clone(&self.shared);
            let _held = shared.metrics.hold_request();
            // Boxed: rare, and would otherwise size every request's future.
            let waited = Box::pin(wait_for_primary(
                &self.shared.topology,
                routing.failover_timeout,
            ));
            match waited.await {
                Ok(_) => {
                    snapshot = self.shared.topology.load();
                    target = self.policy.choose(&snapshot, read);
                }
                Err(error) => {
                    tracing::warn!(%error, "request failed: no primary");
                    let error = ClientError {
                        severity: "ERROR",
                        code: NoPrimary::SQLSTATE,
                        message: error.to_string(),
                    };
                    self.fail_request(error.to_bytes().freeze());
                    return None;
                }
            }
        }
        let (index, wrote) = match target {
            Target::Primary(index) => (index, true),
            Target::Replica(index) => (index, false),
            Target::AwaitPrimary => {
                // The primary vanished again between two loads: try again later.
                let error = ClientError {
                    severity: "ERROR",
                    code: NoPrimary::SQLSTATE,
                    message: "the primary changed while the request waited; retry".into(),
                };
                self.fail_request(error.to_bytes().freeze());
                return None;
            }
        };
        if self.policy.read_your_writes_fallback(&snapshot, target) {
            self.shared.metrics.read_your_writes_fallback();
        }
        let member = &snapshot.members[index];
        let on_primary = snapshot.primary == Some(index);
        let plan = Plan {
            gated: !on_primary,
            retryable: (!on_primary || self.within_failover_window())
                && routing.retry_on_primary
                && request.replayable
                && request.len > 0,
        };
        Some(Routed {
            pool: self.pools.get(&self.shared, &member.addr),
            load: member.load.start(),
            plan,
            wrote,
        })
    }

    /// After a write transaction of a session that reads its writes,
    /// records where the primary's WAL stands, so that its reads wait for
    /// a replica that has it.
    async fn note_causal_lsn(&mut self, conn: &mut PooledConnection) {
        match internal::query(conn, "SELECT pg_catalog.pg_current_wal_lsn()").await {
            Ok(result) => {
                let lsn = result
                    .rows
                    .first()
                    .and_then(|row| row.first())
                    .and_then(|text| parse_lsn(text));
                if lsn.is_some() {
                    self.policy.causal_lsn = lsn.max(self.policy.causal_lsn);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "could not read the write's LSN; reads go to the primary");
                self.policy.causal_lsn = Some(u64::MAX);
            }
        }
    }

    /// Answers `SET switchyard.route = …` (and RESET) without a server,
    /// with ReadyForQuery `status`.
    fn answer_route_setting(&mut self, status: u8) -> bool {
        let limit = self.proxy.config.server.max_message_size;
        let Ok(Some((b'Q', len))) = relay::complete_frame(&self.state.client_in, limit) else {
            return false;
        };
        // Looked at in place: most requests are not ours, and stay as they are.
        let body = &self.state.client_in[5..len];
        let sql = body.strip_suffix(b"\0").unwrap_or(body);
        let Some(value) = crate::router::access::route_setting(sql) else {
            return false;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        let reset = sql
            .trim_ascii_start()
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"reset"));
        self.state.client_in.advance(len);
        match Route::parse(&value) {
            Some(route) => {
                self.policy.route = route;
                let verb = if reset { "RESET" } else { "SET" };
                messages::command_complete(&mut self.state.to_client, verb);
            }
            None => {
                let error = ClientError {
                    severity: "ERROR",
                    code: "22023",
                    message: invalid_route(&value),
                };
                self.shared.metrics.error(error.code);
                error.encode(&mut self.state.to_client);
            }
        }
        messages::ready_for_query(&mut self.state.to_client, status);
        true
    }

    /// Holds a bare BEGIN back (answering it), or answers the COMMIT or
    /// ROLLBACK of a held BEGIN's transaction that did nothing; true when
    /// it answered.
    fn answer_transaction_control(&mut self) -> bool {
        use crate::router::control::Control;
        if !self.begin_held && !self.routes_by_statement() {
            return false;
        }
        let limit = self.proxy.config.server.max_message_size;
        let Some(lone) = deferred::lone(&self.state.client_in, limit, &self.state.statements)
        else {
            return false;
        };
        let status = match (self.begin_held, lone.control) {
            (false, Control::Begin) if self.may_hold_begin() => b'T',
            (true, Control::Commit | Control::Rollback) => b'I',
            // A second BEGIN (PostgreSQL warns), or an end without a
            // transaction: the server's answer is the true one.
            _ => return false,
        };
        self.begin_held = status == b'T';
        deferred::answer(&mut self.state, lone, status, &self.proxy.write_functions);
        true
    }

    /// Holding a BEGIN back only helps when its transaction might go to a
    /// replica: routing is on and the session routes by statement.
    fn may_hold_begin(&self) -> bool {
        self.routes_by_statement() && !self.force_primary && !self.settings.read_only_by_default()
    }

    /// Routing is on and the session's route is `auto`.
    fn routes_by_statement(&self) -> bool {
        self.policy.enabled && self.policy.route == Route::Auto
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

    fn count_pin(&mut self) {
        if let Some(reason) = self.state.new_pin.take() {
            self.shared.pins.count(reason);
            tracing::debug!(
                ?reason,
                client = self.registration.key().pid,
                "client pinned to its server connection"
            );
        }
    }

    /// Returns the connection (or not) after a stretch that `ended` (its
    /// last ReadyForQuery); false when the session ends.
    async fn finish_stretch(
        &mut self,
        conn: PooledConnection,
        end: StretchEnd,
        ended: Instant,
    ) -> bool {
        if matches!(end, StretchEnd::Idle)
            && !self.state.settings_dirty
            && !self.state.pins.is_pinned()
        {
            // The common end: nothing to read back, nothing to say.
            conn.checkin_at(ended);
            return true;
        }
        // Boxed: the other ends await round trips and writes that would
        // otherwise size every request's future.
        Box::pin(self.finish_stretch_otherwise(conn, end, ended)).await
    }

    /// [`Self::finish_stretch`] for every end but the common one.
    async fn finish_stretch_otherwise(
        &mut self,
        mut conn: PooledConnection,
        end: StretchEnd,
        ended: Instant,
    ) -> bool {
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
                    conn.checkin_at(ended);
                }
                if matches!(end, StretchEnd::IdleDraining) {
                    self.say_goodbye().await;
                    return false;
                }
                true
            }
            StretchEnd::IdleTimeout => {
                // Only a pinned client idles inside a stretch; its pinned
                // state (temp tables, LISTEN, ...) cannot outlive it.
                conn.discard();
                self.close_idle().await;
                false
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
                    send_cancel(&conn.cancel_target).await;
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
                    self.shared.metrics.errors_in(&message);
                    let _ = self.client.write_all(&self.state.to_client).await;
                    let _ = self.client.write_all(&message).await;
                }
                false
            }
            StretchEnd::ServerLost => self.server_lost(conn).await,
            // Handled before the stretch is finished.
            StretchEnd::Retry { .. } => {
                conn.discard();
                true
            }
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
        // The request in flight may have been committing (an autocommit
        // statement, or COMMIT): then nobody can know whether it committed,
        // which PostgreSQL calls transaction_resolution_unknown.
        let error = ClientError {
            severity: "ERROR",
            code: "08007",
            message: format!(
                "connection to server {addr} was lost while a request was in flight: an open transaction was rolled back, but a commit in flight may or may not have happened"
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
            self.shared.metrics.error(error.code);
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

    /// Closes a client idle past `server.client_idle_timeout` (57P05).
    async fn close_idle(&mut self) {
        tracing::debug!(
            client = self.registration.key().pid,
            "client closed after server.client_idle_timeout"
        );
        let error = crate::session::idle::error();
        self.shared.metrics.errors_in(&error);
        let _ = self.client.write_all(&error).await;
        let _ = self.client.shutdown().await;
    }

    async fn say_goodbye(&mut self) {
        let error = shutdown_error();
        self.shared.metrics.errors_in(&error);
        let _ = self.client.write_all(&error).await;
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
