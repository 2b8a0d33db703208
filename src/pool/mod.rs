//! Pools of logged-in server connections, one per (node, database, user),
//! for transaction pooling: a session checks a connection out when a
//! transaction starts and checks it back in at ReadyForQuery 'I'.
//!
//! How a pool stays within `max_size`:
//! - `max_size` permits order the checkouts: a checkout first waits
//!   (FIFO, bounded by `checkout_timeout`) for a permit and holds it for as
//!   long as it holds its connection. A checkin hands its connection and
//!   permit straight to the oldest waiter ([`queue`]).
//! - With a permit alone, a checkout takes the most recently used idle
//!   connection, checking it first (see [`PooledConnection`] for what
//!   "checked" means), or opens a new one.
//! - An atomic count of open connections (idle, checked out, being opened)
//!   is the hard bound: a connection is only opened after reserving a unit
//!   of it below `max_size`.
//! - A permit is released only once its connection is back on the idle
//!   stack or closed, so the waiter it wakes finds an idle connection or a
//!   free unit. The reaper opens `min_size` connections only with permits
//!   nobody is waiting for.
//!
//! Nothing here is global: each pool has its own queue (permits, waiters,
//! idle stack) and counters, and [`Pools`] (the registry) is touched only at session
//! login. A background reaper per pool closes connections past
//! `idle_timeout` or `max_lifetime`, drops dead ones and keeps `min_size`
//! open.

mod budget;
mod checkin;
mod checkout;
mod connection;
mod error;
mod health;
mod idle;
mod key;
mod lifecycle;
mod parameters;
mod queue;
mod reaper;
mod reconfigure;
mod registry;
mod settings;
mod slot;
mod stats;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::backend::Secret;
use crate::tls::Connector;

pub use budget::{NodeBudget, NodeUnit, NodeUnits};
pub use connection::PooledConnection;
pub use error::PoolError;
pub use key::PoolKey;
pub use registry::Pools;
pub use settings::PoolSettings;
pub use stats::{IdleServer, PoolStats};

use idle::IdleConnection;
use queue::Queue;
use stats::{Counters, Gauges, WaitClock};

use crate::metrics::PoolMetrics;

/// The server connections of one (node, database, user).
pub struct Pool {
    key: PoolKey,
    /// What new connections log in with; replaced when a client logs in
    /// with different keys (auth passthrough after a password change).
    secret: ArcSwapOption<Secret>,
    /// TLS to the node.
    tls: Connector,
    /// Swapped whole by [`Pool::reconfigure`] on a config reload.
    settings: ArcSwap<PoolSettings>,
    /// `max_size` permits (a checkout holds one while it holds a
    /// connection), the checkouts waiting for one, and the idle stack.
    queue: Arc<Queue<IdleConnection>>,
    /// Connections open: idle, checked out, or being opened.
    open: AtomicUsize,
    /// This proxy's connections to the pool's node, against its budget.
    node: Arc<NodeUnits>,
    /// Connections checked out.
    active: AtomicUsize,
    /// Checkouts waiting for a permit.
    waiting: AtomicUsize,
    /// Connections in a health-check round trip.
    testing: AtomicUsize,
    /// When they began waiting (for `maxwait`).
    wait_clock: WaitClock,
    counters: Counters,
    /// ParameterStatus frames of the first connection opened.
    server_parameters: OnceLock<Bytes>,
    /// Connections opened before this instant are closed instead of reused
    /// (set by [`Pool::reconnect`]).
    retire_before: ArcSwap<Option<Instant>>,
    /// The pool's metric series, resolved once.
    metrics: PoolMetrics,
}

impl Pool {
    /// A pool for `key` that logs in with `secret` (if the server asks),
    /// over plain TCP.
    ///
    /// Opens nothing itself; its reaper task (spawned here on the current
    /// Tokio runtime, ending when the pool is dropped) opens `min_size`
    /// connections in the background. Outside a runtime there is no
    /// reaper: connections are then only closed on checkin or when found
    /// expired at checkout.
    pub fn new(key: PoolKey, secret: Option<Secret>, settings: PoolSettings) -> Arc<Self> {
        Self::with_parts(
            key,
            secret,
            settings,
            Connector::default(),
            PoolMetrics::detached(),
            NodeUnits::unlimited(),
        )
    }

    /// As [`Pool::new`], connecting to the node with `tls`, reporting to
    /// `metrics`, and counting its connections against `node`'s budget.
    pub fn with_parts(
        key: PoolKey,
        secret: Option<Secret>,
        settings: PoolSettings,
        tls: Connector,
        metrics: PoolMetrics,
        node: Arc<NodeUnits>,
    ) -> Arc<Self> {
        let settings = settings.normalized();
        let pool = Arc::new(Self {
            key,
            secret: ArcSwapOption::from(secret.map(Arc::new)),
            tls,
            queue: Queue::new(settings.max_size),
            settings: ArcSwap::from_pointee(settings),
            open: AtomicUsize::new(0),
            node,
            active: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            testing: AtomicUsize::new(0),
            wait_clock: WaitClock::default(),
            counters: Counters::default(),
            server_parameters: OnceLock::new(),
            retire_before: ArcSwap::from_pointee(None),
            metrics,
        });
        reaper::spawn(&pool);
        pool
    }

    /// Replaces the secret new connections log in with, when it differs.
    pub fn update_secret(&self, secret: Option<Secret>) {
        if self.secret.load().as_deref() != secret.as_ref() {
            self.secret.store(secret.map(Arc::new));
        }
    }

    /// Which pool this is.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The settings in effect (normalized: `1 <= max_size`,
    /// `min_size <= max_size`).
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// The pool's metric series.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The pool's gauges and counters now.
    pub fn stats(&self) -> PoolStats {
        let now = Instant::now();
        let check_after = self.settings.load().health_check_after;
        let idle_for = self
            .queue
            .describe_idle(|idle| now.saturating_duration_since(idle.since));
        self.counters.snapshot(Gauges {
            max_wait: self.wait_clock.longest(),
            idle: idle_for.len(),
            idle_unchecked: idle_for.iter().filter(|&&d| d >= check_after).count(),
            testing: self.testing.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
        })
    }

    /// The idle connections, for `SHOW SERVERS` (checked-out ones belong
    /// to their sessions and are only counted, in [`Pool::stats`]).
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        self.queue.describe_idle(|idle| IdleServer {
            pid: idle.conn.pid,
            opened: idle.conn.created,
            idle_since: idle.since,
        })
    }

    /// The ParameterStatus frames (tag and length included) a fresh
    /// connection of this pool reported at login: the server defaults to
    /// greet clients with. `None` until the pool has opened a connection.
    pub fn server_parameters(&self) -> Option<Bytes> {
        self.server_parameters.get().cloned()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the password stays out of logs.
        f.debug_struct("Pool")
            .field("key", &self.key)
            .field("settings", &self.settings.load())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for idle in self.queue.take_idle() {
            health::terminate(idle.conn);
            // The node's units outlive this pool.
            self.node.give_back();
        }
    }
}
