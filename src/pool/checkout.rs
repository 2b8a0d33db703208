//! Handing out a connection: wait for a slot, reuse a healthy idle
//! connection or open a new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::idle::IdleConnection;
use super::lifecycle::CloseReason;
use super::parameters::parameter_status_frames;
use super::queue::{Entry, Grant, Permit};
use super::slot::{Full, OpenSlot};
use super::stats::{Counted, Waiting, bump};
use super::{Pool, PoolError, PooledConnection, health};
use crate::backend::{self, BackendError, ServerConnection};

/// Longest the empty-query round trip of a health check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Stands in for a deadline too far away to represent.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `timeout` after `started`, on the runtime's clock.
fn deadline(started: Instant, timeout: Duration) -> tokio::time::Instant {
    let started = tokio::time::Instant::from_std(started);
    started
        .checked_add(timeout)
        .unwrap_or_else(|| started + FAR_FUTURE)
}

/// A checkout's rare path: a health check round trip, or opening a connection.
type Opening<'a> = Pin<Box<dyn Future<Output = Result<PooledConnection, PoolError>> + Send + 'a>>;

/// What a checkout holding a permit does next.
enum Next<'a> {
    /// The connection, handed out.
    Lent(PooledConnection),
    /// The rare path.
    Open(Opening<'a>),
}

/// What the checks of an idle connection found without a round trip.
enum IdleVerdict {
    /// It passed them all.
    Usable(Box<ServerConnection>),
    /// It has been idle for `health_check_after`: a round trip first.
    Due(IdleConnection),
    /// It failed one and was closed (or there was none).
    Closed,
}

impl Pool {
    /// A connection of this pool, idle and logged in, for one transaction.
    ///
    /// Waits (first come, first served) up to `checkout_timeout` when
    /// `max_size` connections are checked out. A connection another
    /// session has just given back is handed over as it is; one taken from
    /// the idle stack has passed a liveness check (and a round trip to the
    /// server when it was idle for `health_check_after`); a new one is
    /// opened with only `user` and `database` set.
    ///
    /// Cancel-safe: dropping the future frees whatever it had reserved.
    pub async fn checkout(self: &Arc<Self>) -> Result<PooledConnection, PoolError> {
        self.checkout_since(Instant::now()).await
    }

    /// [`Self::checkout`] for a caller that has just read the clock:
    /// `started` is when it asked (the timeout and the wait count from it).
    pub async fn checkout_since(
        self: &Arc<Self>,
        started: Instant,
    ) -> Result<PooledConnection, PoolError> {
        let checkout_timeout = self.settings.load().checkout_timeout;
        let (idle, now) = match self.queue.enter(deadline(started, checkout_timeout)) {
            Entry::Ready(idle) => (idle, started),
            Entry::Wait(wait) => {
                let waiting = Waiting::enter(&self.waiting, &self.wait_clock, started);
                let grant = wait.await;
                drop(waiting);
                let now = Instant::now();
                match grant {
                    // Given back a moment ago, never idle: nothing to check.
                    Grant::Item(handed) => return Ok(self.lend(handed.conn, started, now)),
                    Grant::Permit => (self.queue.pop_idle(), now),
                    Grant::Expired => return Err(self.timed_out()),
                }
            }
        };
        match self.with_permit(idle, started, now) {
            Next::Lent(conn) => Ok(conn),
            // Boxed: the rare path's awaits would size this future, which
            // is part of every request's.
            Next::Open(open) => open.await,
        }
    }

    /// With a permit just taken (by this checkout, asked for at `started`)
    /// and the idle connection that came with it, as of `now`: the
    /// connection if it passes the checks that need no round trip, else
    /// the rare path, boxed so that its awaits do not size every checkout's
    /// future: a health-check round trip, or another idle connection or a
    /// new one.
    fn with_permit(
        self: &Arc<Self>,
        idle: Option<IdleConnection>,
        started: Instant,
        now: Instant,
    ) -> Next<'_> {
        // Given back if the checkout fails or is dropped before it lends.
        let permit = Permit::adopt(&self.queue);
        match idle.map_or(IdleVerdict::Closed, |idle| self.usable_now(idle, now)) {
            IdleVerdict::Usable(conn) => {
                permit.hand_on();
                Next::Lent(self.lend(conn, started, now))
            }
            IdleVerdict::Due(due) => {
                Next::Open(Box::pin(self.open_with(permit, Some(due), started)))
            }
            IdleVerdict::Closed => Next::Open(Box::pin(self.open_with(permit, None, started))),
        }
    }

    /// The rare path of [`Self::with_permit`].
    async fn open_with(
        self: &Arc<Self>,
        permit: Permit<'_, IdleConnection>,
        idle: Option<IdleConnection>,
        started: Instant,
    ) -> Result<PooledConnection, PoolError> {
        let conn = self.take_or_open(idle, started).await?;
        permit.hand_on();
        Ok(self.lend(conn, started, Instant::now()))
    }

    /// Counts `conn` as checked out (asked for at `started`, handed out
    /// at `lent_at`) and wraps it for the caller.
    fn lend(
        self: &Arc<Self>,
        conn: Box<ServerConnection>,
        started: Instant,
        lent_at: Instant,
    ) -> PooledConnection {
        self.active.fetch_add(1, Ordering::Relaxed);
        bump(&self.counters.checkouts);
        self.metrics
            .checkout_waited(lent_at.saturating_duration_since(started).as_secs_f64());
        PooledConnection::new(conn, Arc::clone(self), lent_at)
    }

    /// The checks of an idle connection that need no round trip, as of `now`.
    fn usable_now(&self, idle: IdleConnection, now: Instant) -> IdleVerdict {
        match self.check_without_round_trip(&idle, now) {
            Ok(false) => IdleVerdict::Usable(idle.conn),
            Ok(true) => IdleVerdict::Due(idle),
            Err(reason) => {
                self.close(idle.conn, reason);
                IdleVerdict::Closed
            }
        }
    }

    fn timed_out(&self) -> PoolError {
        bump(&self.counters.checkout_timeouts);
        let waited = self.settings.load().checkout_timeout;
        tracing::warn!(pool = %self.key, ?waited, "checkout timed out: pool exhausted");
        PoolError::CheckoutTimeout {
            pool: self.key.clone(),
            waited,
        }
    }

    /// With a permit in hand: `idle` (popped with it) or the next idle
    /// connection that passes its checks, else a new one.
    async fn take_or_open(
        &self,
        mut idle: Option<IdleConnection>,
        started: Instant,
    ) -> Result<Box<ServerConnection>, PoolError> {
        loop {
            if let Some(conn) = self.take_idle(idle.take()).await {
                return Ok(conn);
            }
            let max_size = self.settings.load().max_size;
            let checkout_timeout = self.settings.load().checkout_timeout;
            match OpenSlot::reserve(&self.open, max_size, &self.node) {
                Ok(slot) => {
                    let conn = self.connect().await?;
                    slot.keep();
                    return Ok(conn);
                }
                // The node's budget share is in use (by this pool or
                // another): wait for a connection to close, or for one of
                // this pool's to come back idle.
                Err(Full::Node) => {
                    let deadline = deadline(started, checkout_timeout);
                    if !self.node.wait(deadline).await {
                        return Err(self.timed_out());
                    }
                    idle = self.queue.pop_idle();
                }
                // Every unit of `open` is taken yet nothing is idle: the
                // reaper has taken expired connections off the idle stack
                // and is closing them. Brief; look again rather than
                // exceed max_size.
                Err(Full::Pool) => {
                    if started.elapsed() >= checkout_timeout {
                        return Err(self.timed_out());
                    }
                    tokio::task::yield_now().await;
                    idle = self.queue.pop_idle();
                }
            }
        }
    }

    /// `first`, then idle connections popped until one passes its checks;
    /// closes the rest.
    async fn take_idle(&self, first: Option<IdleConnection>) -> Option<Box<ServerConnection>> {
        let mut next = first;
        while let Some(mut idle) = next.take() {
            // Owns the popped connection's unit of `open` until it is handed
            // out, so a checkout cancelled mid health check gives it back.
            let slot = OpenSlot::adopt(&self.open, &self.node);
            match self.validate(&mut idle).await {
                Ok(()) => {
                    slot.keep();
                    return Some(idle.conn);
                }
                // `slot` drops at the end of this arm: the unit is given back.
                Err(reason) => self.retire(idle.conn, reason),
            }
            next = self.queue.pop_idle();
        }
        None
    }

    async fn validate(&self, idle: &mut IdleConnection) -> Result<(), CloseReason> {
        if self.check_without_round_trip(idle, Instant::now())? {
            // SHOW POOLS' sv_tested, for as long as the round trip runs.
            let _testing = Counted::enter(&self.testing);
            health::ping(&mut idle.conn, PING_TIMEOUT)
                .await
                .map_err(CloseReason::Broken)?;
        }
        Ok(())
    }

    /// Lifetime and liveness of an idle connection as of `now`; true when
    /// it has been idle for `health_check_after` and needs a round trip as
    /// well.
    fn check_without_round_trip(
        &self,
        idle: &IdleConnection,
        now: Instant,
    ) -> Result<bool, CloseReason> {
        // One settings load for both checks.
        let (max_lifetime, health_check_after) = {
            let settings = self.settings.load();
            (settings.max_lifetime, settings.health_check_after)
        };
        if self.outlived_with(idle.conn.created, now, max_lifetime) {
            return Err(CloseReason::Lifetime);
        }
        health::check_alive(&idle.conn).map_err(CloseReason::Broken)?;
        Ok(now.saturating_duration_since(idle.since) >= health_check_after)
    }

    /// Opens and logs in a new connection with the pool's user, database
    /// and password. The caller has reserved its unit of `open`.
    pub(super) async fn connect(&self) -> Result<Box<ServerConnection>, BackendError> {
        let params = [
            ("user".to_owned(), self.key.user.clone()),
            ("database".to_owned(), self.key.database.clone()),
        ];
        let secret = self.secret.load_full();
        let timeout = self.settings.load().connect_timeout;
        let opened = backend::connect(
            &self.key.node,
            &params,
            secret.as_deref(),
            &self.tls,
            timeout,
        )
        .await;
        match opened {
            Ok(conn) => {
                bump(&self.counters.connects);
                self.server_parameters
                    .get_or_init(|| parameter_status_frames(&conn.startup_messages));
                tracing::debug!(pool = %self.key, pid = conn.pid, "opened server connection");
                Ok(Box::new(conn))
            }
            Err(error) => {
                bump(&self.counters.connect_errors);
                tracing::debug!(pool = %self.key, %error, "could not open server connection");
                Err(error)
            }
        }
    }
}
