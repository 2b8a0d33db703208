//! Session state that cannot move between server connections pins the
//! client to its connection until the state is released.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::router::effects::{PinReason, PinSet, SessionEffects};

/// What currently pins a client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pins(PinSet);

impl Pins {
    /// True while any reason holds.
    pub fn is_pinned(self) -> bool {
        !self.0.is_empty()
    }

    /// Applies a statement's effects (releases first, as `DISCARD ALL;
    /// LISTEN x` ends pinned); returns a reason that newly pins.
    pub fn apply(&mut self, effects: &SessionEffects) -> Option<PinReason> {
        for unpin in effects.unpins.iter() {
            for reason in self.0.iter() {
                if unpin.releases(reason) {
                    self.0.remove(reason);
                }
            }
        }
        let mut newly = None;
        for reason in effects.pins.iter() {
            if !self.0.contains(reason) {
                newly.get_or_insert(reason);
                self.0.insert(reason);
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
        assert_eq!(
            pins.apply(&session_effects("LISTEN a; SELECT pg_advisory_lock(1)")),
            Some(PinReason::Listen)
        );
        pins.apply(&session_effects("UNLISTEN *"));
        assert!(pins.is_pinned(), "the advisory lock still pins");
        pins.apply(&session_effects("SELECT pg_advisory_unlock_all()"));
        assert!(!pins.is_pinned());
        pins.apply(&session_effects("CREATE TEMP TABLE t (x int)"));
        pins.apply(&session_effects("DISCARD ALL"));
        assert!(!pins.is_pinned());
    }
}
