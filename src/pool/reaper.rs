//! The background task of each pool: closes idle connections that expired
//! or died, and keeps `min_size` connections open.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::time::MissedTickBehavior;

use super::idle::IdleConnection;
use super::lifecycle::{CloseReason, expiry};
use super::queue::Permit;
use super::slot::OpenSlot;
use super::{Pool, health};

/// Starts the reaper of `pool` on the current Tokio runtime, if any. It
/// holds only a weak reference between passes, so it ends once the pool
/// is dropped.
pub(super) fn spawn(pool: &Arc<Pool>) {
    let interval = pool.settings.load().reaper_interval();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(run(Arc::downgrade(pool), interval));
        }
        Err(_) => {
            tracing::warn!(pool = %pool.key, "no Tokio runtime: pool has no reaper");
        }
    }
}

async fn run(pool: Weak<Pool>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick is immediate: `min_size` is opened right away.
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.reap();
        pool.refill().await;
    }
}

impl Pool {
    /// Closes idle connections past `max_lifetime`, dead ones, and those
    /// past `idle_timeout` as long as `min_size` stay open.
    pub(super) fn reap(&self) {
        let open = self.open.load(Ordering::Acquire);
        let mut spare = open.saturating_sub(self.settings.load().min_size);
        // The liveness probe runs under the idle lock: it is one
        // non-blocking recv per idle connection, once per reaper pass.
        let closing = self
            .queue
            .extract_idle(|idle| self.reap_verdict(idle, &mut spare));
        for (idle, reason) in closing {
            self.close(idle.conn, reason);
        }
    }

    /// Closes idle connections while the node has more open than this
    /// proxy's budget share (after the share shrank: a peer joined).
    pub fn trim_to_budget(&self) {
        while self.node.over_budget() {
            let Some(idle) = self.queue.pop_idle() else {
                return;
            };
            self.close(idle.conn, CloseReason::Discarded);
        }
    }

    /// Closes every idle connection (its node changed role or went away);
    /// connections checked out now are unaffected.
    pub fn close_idle(&self) {
        for (idle, reason) in self.queue.extract_idle(|_| Some(CloseReason::Discarded)) {
            self.close(idle.conn, reason);
        }
    }

    fn reap_verdict(&self, idle: &IdleConnection, spare: &mut usize) -> Option<CloseReason> {
        let expired = expiry(
            idle.conn.created.elapsed(),
            idle.since.elapsed(),
            &self.settings.load(),
        );
        let reason = match expired {
            Some(CloseReason::Idle) if *spare == 0 => None,
            other => other,
        }
        .or_else(|| {
            health::check_alive(&idle.conn)
                .err()
                .map(CloseReason::Broken)
        });
        if reason.is_some() {
            *spare = spare.saturating_sub(1);
        }
        reason
    }

    /// Opens connections until `min_size` are open. Never competes with
    /// checkouts: it only uses a permit nobody is waiting for, and stops at
    /// the first failure (the next pass tries again).
    pub(super) async fn refill(&self) {
        while self.open.load(Ordering::Acquire) < self.settings.load().min_size {
            let Some(permit) = Permit::try_take(&self.queue) else {
                return;
            };
            let min_size = self.settings.load().min_size;
            let Ok(slot) = OpenSlot::reserve(&self.open, min_size, &self.node) else {
                return;
            };
            match self.connect().await {
                Ok(conn) => {
                    slot.keep();
                    permit.give_back(IdleConnection {
                        conn,
                        since: Instant::now(),
                    });
                }
                Err(error) => {
                    tracing::warn!(pool = %self.key, %error, "could not open a min_size connection");
                    return;
                }
            }
        }
    }
}
