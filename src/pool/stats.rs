//! What a pool reports for metrics and `SHOW POOLS`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of one pool's gauges and counters.
///
/// Each field is read on its own (relaxed atomics), so a snapshot taken
/// while the pool is busy may be off by the operations in flight; counters
/// only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections idle in the pool, ready to be handed out.
    pub idle: usize,
    /// Connections checked out by sessions.
    pub active: usize,
    /// Checkouts waiting for a free slot.
    pub waiting: usize,
    /// Connections open: idle, checked out and being opened (at most
    /// `max_size`).
    pub open: usize,
    /// Checkouts that got a connection.
    pub checkouts: u64,
    /// Server connections opened.
    pub connects: u64,
    /// Attempts to open a server connection that failed.
    pub connect_errors: u64,
    /// Checkouts that failed with a checkout timeout.
    pub checkout_timeouts: u64,
    /// Connections closed because a health check found them broken (closed
    /// by the server, unexpected data while idle, failed round trip).
    pub discarded_broken: u64,
    /// Connections the session discarded (state unknown) or dropped
    /// without checking in.
    pub discarded_by_session: u64,
    /// Connections closed after `idle_timeout` unused.
    pub closed_idle: u64,
    /// Connections closed after reaching `max_lifetime`.
    pub closed_lifetime: u64,
}

/// One idle server connection, for `SHOW SERVERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleServer {
    /// The server's backend process id.
    pub pid: i32,
    /// When it was opened.
    pub opened: std::time::Instant,
    /// When it was last checked in.
    pub idle_since: std::time::Instant,
}

/// The atomics behind [`PoolStats`]'s counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub checkouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub checkout_timeouts: AtomicU64,
    pub discarded_broken: AtomicU64,
    pub discarded_by_session: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_lifetime: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The pool's gauges at one moment.
pub(super) struct Gauges {
    pub idle: usize,
    pub active: usize,
    pub waiting: usize,
    pub open: usize,
}

impl Counters {
    /// A snapshot of the counters together with `gauges`.
    pub fn snapshot(&self, gauges: Gauges) -> PoolStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolStats {
            idle: gauges.idle,
            active: gauges.active,
            waiting: gauges.waiting,
            open: gauges.open,
            checkouts: get(&self.checkouts),
            connects: get(&self.connects),
            connect_errors: get(&self.connect_errors),
            checkout_timeouts: get(&self.checkout_timeouts),
            discarded_broken: get(&self.discarded_broken),
            discarded_by_session: get(&self.discarded_by_session),
            closed_idle: get(&self.closed_idle),
            closed_lifetime: get(&self.closed_lifetime),
        }
    }
}

/// Counts one waiter in a gauge for as long as it lives (also when the
/// waiting future is cancelled).
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Adds one to `gauge` until the returned guard is dropped.
    pub fn enter(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
