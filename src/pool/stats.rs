//! What a pool reports for metrics and `SHOW POOLS`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A snapshot of one pool's gauges and counters.
///
/// Each field is read on its own (relaxed atomics), so a snapshot taken
/// while the pool is busy may be off by the operations in flight; counters
/// only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// How long the longest-waiting checkout waiting now has waited
    /// (PgBouncer's `maxwait`); zero when none waits.
    pub max_wait: Duration,
    /// Connections idle in the pool, ready to be handed out.
    pub idle: usize,
    /// Of `idle`, those idle for `health_check_after` or longer: a round
    /// trip comes before their next use (PgBouncer's `sv_used`).
    pub idle_unchecked: usize,
    /// Connections in a health-check round trip now (PgBouncer's
    /// `sv_tested`): neither idle nor checked out.
    pub testing: usize,
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
    pub max_wait: Duration,
    pub idle: usize,
    pub idle_unchecked: usize,
    pub testing: usize,
    pub active: usize,
    pub waiting: usize,
    pub open: usize,
}

impl Counters {
    /// A snapshot of the counters together with `gauges`.
    pub fn snapshot(&self, gauges: Gauges) -> PoolStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolStats {
            max_wait: gauges.max_wait,
            idle: gauges.idle,
            idle_unchecked: gauges.idle_unchecked,
            testing: gauges.testing,
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

/// Waiters whose start is kept, at most: the oldest ones, since checkouts
/// wait first come, first served. Beyond that, `maxwait` is still right
/// as long as one of the first ones waits.
const WAIT_SLOTS: usize = 32;

/// When each waiting checkout began, for `maxwait`, kept without a lock:
/// a waiter claims a free slot with a compare-and-swap and clears it when
/// it stops waiting (only checkouts that wait pay for this).
#[derive(Debug)]
pub(super) struct WaitClock {
    epoch: Instant,
    /// Nanoseconds after `epoch` plus one; 0 is a free slot.
    slots: [AtomicU64; WAIT_SLOTS],
}

impl Default for WaitClock {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WaitClock {
    /// How long the longest waiter has waited; zero when none waits.
    pub fn longest(&self) -> Duration {
        let oldest = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&start| start != 0)
            .min();
        oldest.map_or(Duration::ZERO, |start| {
            let began = self.epoch + Duration::from_nanos(start - 1);
            began.elapsed()
        })
    }

    /// Claims a slot holding `since`; `None` when all are taken.
    fn start(&self, since: Instant) -> Option<usize> {
        let nanos = u64::try_from(since.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        // A plain load first: with many waiters most slots are taken, and a
        // failed compare-and-swap costs as much as one that succeeds.
        self.slots.iter().position(|slot| {
            slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, nanos, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
        })
    }
}

/// Counts one waiter in a gauge, and its start in a [`WaitClock`], for as
/// long as it lives (also when the waiting future is cancelled).
pub(super) struct Waiting<'a> {
    _counted: Counted<'a>,
    clock: &'a WaitClock,
    slot: Option<usize>,
}

impl<'a> Waiting<'a> {
    /// Adds one to `gauge` and records in `clock` that a wait began at
    /// `since`, until the returned guard is dropped.
    pub fn enter(gauge: &'a AtomicUsize, clock: &'a WaitClock, since: Instant) -> Self {
        Self {
            _counted: Counted::enter(gauge),
            clock,
            slot: clock.start(since),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.clock.slots[slot].store(0, Ordering::Relaxed);
        }
    }
}

/// Counts one (a waiter, a connection in a check) in a gauge for as long
/// as it lives, also when the future holding it is cancelled.
pub(super) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Adds one to `gauge` until the returned guard is dropped.
    pub fn enter(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_wait_is_the_oldest_waiter_still_waiting() {
        let gauge = AtomicUsize::new(0);
        let clock = WaitClock::default();
        assert_eq!(clock.longest(), Duration::ZERO);
        let first = Waiting::enter(&gauge, &clock, Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let second = Waiting::enter(&gauge, &clock, Instant::now());
        assert!(clock.longest() >= Duration::from_millis(30));
        drop(first);
        assert!(clock.longest() < Duration::from_millis(30));
        assert_eq!(gauge.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(clock.longest(), Duration::ZERO);
        // More waiters than slots: the first ones are timed.
        let many: Vec<_> = (0..WAIT_SLOTS + 3)
            .map(|_| Waiting::enter(&gauge, &clock, Instant::now()))
            .collect();
        assert!(many[..WAIT_SLOTS].iter().all(|w| w.slot.is_some()));
        assert!(many[WAIT_SLOTS..].iter().all(|w| w.slot.is_none()));
    }
}
