//! Where a request goes: the node (primary or a replica, by the session's
//! route and the request), and what the proxy answers itself on the way
//! (`SET switchyard.route`, a held BEGIN and its empty end).

use std::sync::Arc;
use std::time::Duration;

use super::relay::{self, Plan};
use super::request::Request;
use super::{TransactionSession, deferred, invalid_route, pool_error_bytes};
use crate::backend::query as internal;
use crate::config::Route;
use crate::pool::{Pool, PoolError, PooledConnection};
use crate::protocol::messages::{self, ClientError};
use crate::router::target::{NoPrimary, Target, wait_for_primary};
use crate::topology::LoadGuard;
use crate::topology::probe::parse_lsn;
use bytes::Buf;

/// Where a request goes, decided by [`TransactionSession::route`].
pub(super) struct Routed {
    /// The chosen node's pool for the session's database and user.
    pub pool: Arc<Pool>,
    /// Counts the transaction on its node until the stretch ends.
    pub load: LoadGuard,
    /// How the stretch runs there.
    pub plan: Plan,
    /// Routed as a write to the primary (not a read it happens to serve).
    pub wrote: bool,
}

impl TransactionSession {
    /// The checkout for a request failed: the request goes to the primary
    /// or waits for the topology (true: the session goes on and the
    /// request is routed again), or fails with the pool's error.
    pub(super) async fn checkout_failed(&mut self, error: PoolError, gated: bool) -> bool {
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
    pub(super) async fn route(&mut self, read: bool, request: &Request) -> Option<Routed> {
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
    pub(super) async fn note_causal_lsn(&mut self, conn: &mut PooledConnection) {
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
    pub(super) fn answer_route_setting(&mut self, status: u8) -> bool {
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
    pub(super) fn answer_transaction_control(&mut self) -> bool {
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
    pub(super) fn routes_by_statement(&self) -> bool {
        self.policy.enabled && self.policy.route == Route::Auto
    }
}
