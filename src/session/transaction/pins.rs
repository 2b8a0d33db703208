//! Session state that cannot move between server connections pins the
//! client to its connection until the state is released.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::effects::{PinReason, PinSet, SessionEffects, UnpinSet};

/// What currently pins a client, and releases that wait for their
/// transaction to end well (an `UNLISTEN *` that is rolled back releases
/// nothing).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    held: PinSet,
    pending_releases: UnpinSet,
    release_failed: bool,
}

impl Pins {
    /// True while any reason holds.
    pub fn is_pinned(self) -> bool {
        !self.held.is_empty()
    }

    /// Records a statement sent to the server: its pins take hold at once
    /// (being pinned too long is safe), its releases wait for
    /// [`Self::transaction_ended`]. Returns a reason that newly pins.
    pub fn note_sent(&mut self, effects: &SessionEffects) -> Option<PinReason> {
        self.pending_releases = self.pending_releases.union(effects.unpins);
        self.pin(effects)
    }

    /// The server reported an error or a rollback: pending releases are void.
    pub fn note_failure(&mut self) {
        if !self.pending_releases.is_empty() {
            self.release_failed = true;
        }
    }

    /// ReadyForQuery 'I': pending releases take effect unless their
    /// transaction failed or rolled back.
    pub fn transaction_ended(&mut self) {
        if !self.release_failed {
            self.release(self.pending_releases);
        }
        self.pending_releases = UnpinSet::default();
        self.release_failed = false;
    }

    fn release(&mut self, unpins: UnpinSet) {
        for unpin in unpins.iter() {
            for reason in self.held.iter() {
                if unpin.releases(reason) {
                    self.held.remove(reason);
                }
            }
        }
    }

    fn pin(&mut self, effects: &SessionEffects) -> Option<PinReason> {
        let mut newly = None;
        for reason in effects.pins.iter() {
            if !self.held.contains(reason) {
                newly.get_or_insert(reason);
                self.held.insert(reason);
            }
        }
        newly
    }
}

/// Pins counted by reason since start (metric-ready).
#[derive(Debug, Default)]
pub struct PinCounters([AtomicU64; PinReason::ALL.len()]);

fn index(reason: PinReason) -> usize {
    PinReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
}

impl PinCounters {
    /// Counts one new pin.
    pub fn count(&self, reason: PinReason) {
        self.0[index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Pins so far for `reason`.
    pub fn get(&self, reason: PinReason) -> u64 {
        self.0[index(reason)].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::effects::session_effects;

    #[test]
    fn each_release_clears_only_its_own_reason() {
        let mut pins = Pins::default();
        let mut run = |sql: &str| {
            let newly = pins.note_sent(&session_effects(sql));
            pins.transaction_ended();
            (newly, pins.is_pinned())
        };
        assert_eq!(
            run("LISTEN a; SELECT pg_advisory_lock(1)"),
            (Some(PinReason::Listen), true)
        );
        assert_eq!(
            run("UNLISTEN *"),
            (None, true),
            "the advisory lock still pins"
        );
        assert_eq!(run("SELECT pg_advisory_unlock_all()"), (None, false));
        run("CREATE TEMP TABLE t (x int)");
        assert_eq!(run("DISCARD ALL"), (None, false));
        let counters = PinCounters::default();
        counters.count(PinReason::Listen);
        assert_eq!(
            (
                counters.get(PinReason::Listen),
                counters.get(PinReason::TempTable)
            ),
            (1, 0)
        );
    }

    #[test]
    fn releases_wait_for_a_transaction_that_ends_well() {
        let mut pins = Pins::default();
        pins.note_sent(&session_effects("LISTEN a"));
        pins.transaction_ended();
        pins.note_sent(&session_effects("UNLISTEN *"));
        assert!(pins.is_pinned(), "not released before the transaction ends");
        pins.note_failure();
        pins.transaction_ended();
        assert!(pins.is_pinned(), "a rolled-back release releases nothing");
        pins.note_sent(&session_effects("UNLISTEN *"));
        pins.transaction_ended();
        assert!(!pins.is_pinned());
    }
}
