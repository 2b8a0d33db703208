//! Which node serves a transaction: the primary, or a replica picked by
//! power-of-two-choices on running transactions, weighted.

use std::time::Duration;

use thiserror::Error;

use crate::config::{Consistency, Route};
use crate::topology::{Member, Role, Snapshot, Topology};

/// The node chosen for a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The verified primary (index into the snapshot's members).
    Primary(usize),
    /// A replica (or the primary serving reads) for a read.
    Replica(usize),
    /// Needs the primary and there is none: wait for one.
    AwaitPrimary,
}

/// No writable primary appeared within `routing.failover_timeout`.
#[derive(Debug, Error)]
#[error("no writable primary within {waited:?}: {reason}")]
pub struct NoPrimary {
    /// How long the request waited.
    pub waited: Duration,
    /// What the topology said last.
    pub reason: String,
}

impl NoPrimary {
    /// SQLSTATE 57P03 (cannot_connect_now): the condition is temporary and
    /// the client's connection stays usable, unlike class 08.
    pub const SQLSTATE: &'static str = "57P03";
}

/// Waits up to `timeout` for a verified primary; returns its address.
pub async fn wait_for_primary(topology: &Topology, timeout: Duration) -> Result<String, NoPrimary> {
    match topology.wait_for_primary(timeout).await {
        Some(snapshot) => Ok(snapshot
            .primary()
            .map(|m| m.addr.clone())
            .unwrap_or_default()),
        None => Err(NoPrimary {
            waited: timeout,
            reason: topology
                .load()
                .no_primary_reason
                .clone()
                .unwrap_or_else(|| "none elected".into()),
        }),
    }
}

/// A session's routing policy and its read-your-writes position.
#[derive(Debug)]
pub struct Policy {
    /// Routing on (`routing.enabled`).
    pub enabled: bool,
    /// The session's route (user/database policy, startup option or SET).
    pub route: Route,
    /// The session's consistency.
    pub consistency: Consistency,
    /// The primary may serve reads too.
    pub primary_reads: bool,
    /// WAL position of the session's last committed write, for
    /// read-your-writes.
    pub causal_lsn: Option<u64>,
    rng: u64,
}

impl Policy {
    /// A policy; `seed` varies the replica choice between sessions.
    pub fn new(
        enabled: bool,
        route: Route,
        consistency: Consistency,
        primary_reads: bool,
        seed: u64,
    ) -> Self {
        Self {
            enabled,
            route,
            consistency,
            primary_reads,
            causal_lsn: None,
            // xorshift needs a non-zero state.
            rng: seed | 1,
        }
    }

    /// True when read-your-writes kept this read off replicas that are in
    /// rotation but behind the session's last write.
    pub fn read_your_writes_fallback(&self, snapshot: &Snapshot, target: Target) -> bool {
        let Target::Replica(index) = target else {
            return false;
        };
        self.consistency == Consistency::ReadYourWrites
            && !self.primary_reads
            && snapshot.primary == Some(index)
            && snapshot
                .members
                .iter()
                .any(|m| m.role == Role::Replica && m.in_rotation)
    }

    /// Where a transaction goes; `read` is the classifier's (and hints')
    /// verdict on its first request.
    pub fn choose(&mut self, snapshot: &Snapshot, read: bool) -> Target {
        let wants_replica = match self.route {
            _ if !self.enabled => false,
            Route::Primary => false,
            Route::Replica => true,
            Route::Auto => read,
        };
        if !wants_replica {
            return snapshot
                .primary
                .map_or(Target::AwaitPrimary, Target::Primary);
        }
        match self.pick_replica(snapshot) {
            Some(index) => Target::Replica(index),
            // Never fail a read only because no replica is eligible.
            None => snapshot
                .primary
                .map_or(Target::AwaitPrimary, Target::Replica),
        }
    }

    fn eligible(&self, member: &Member, index: usize, snapshot: &Snapshot) -> bool {
        let serves_reads = match member.role {
            Role::Replica => member.in_rotation,
            Role::Primary => self.primary_reads && snapshot.primary == Some(index),
            Role::Unavailable => false,
        };
        if !serves_reads || member.weight == 0 {
            return false;
        }
        match (self.consistency, self.causal_lsn) {
            (Consistency::ReadYourWrites, Some(lsn)) if member.role == Role::Replica => {
                member.has_replayed(lsn)
            }
            _ => true,
        }
    }

    /// Power of two choices: two random eligible nodes, the one with fewer
    /// running transactions per unit of weight wins.
    fn pick_replica(&mut self, snapshot: &Snapshot) -> Option<usize> {
        let mut eligible = [0usize; 16];
        let mut count = 0;
        for (index, member) in snapshot.members.iter().enumerate() {
            if count < eligible.len() && self.eligible(member, index, snapshot) {
                eligible[count] = index;
                count += 1;
            }
        }
        match count {
            0 => None,
            1 => Some(eligible[0]),
            _ => {
                let first = eligible[self.next_random() as usize % count];
                let mut second = eligible[self.next_random() as usize % (count - 1)];
                if second == first {
                    second = eligible[count - 1];
                }
                let cost = |i: usize| {
                    let member = &snapshot.members[i];
                    // Cross-multiplied to compare load/weight without division.
                    (member.load.outstanding() as u64 + 1) * 1000 / u64::from(member.weight)
                };
                let (a, b) = (cost(first), cost(second));
                let tie_to_second = a == b && self.next_random() & 1 == 0;
                Some(if b < a || tie_to_second {
                    second
                } else {
                    first
                })
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn snapshot(roles: &[(Role, bool, u32)]) -> Snapshot {
        let members = roles
            .iter()
            .enumerate()
            .map(|(i, &(role, in_rotation, weight))| Member {
                role,
                in_rotation,
                reachable: true,
                lsn: Some(100 * i as u64),
                ..Member::unprobed(&format!("n{i}:1"), weight, Arc::default())
            })
            .collect();
        let primary = roles.iter().position(|r| r.0 == Role::Primary);
        Snapshot {
            primary,
            ..Snapshot::initial(members)
        }
    }

    fn policy(route: Route) -> Policy {
        Policy::new(true, route, Consistency::Eventual, false, 42)
    }

    #[test]
    fn reads_spread_evenly_over_two_idle_replicas() {
        let s = snapshot(&[
            (Role::Primary, true, 1),
            (Role::Replica, true, 1),
            (Role::Replica, true, 1),
        ]);
        let mut p = policy(Route::Auto);
        let mut counts = [0; 3];
        for _ in 0..10_000 {
            match p.choose(&s, true) {
                Target::Replica(i) => counts[i] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts[0], 0);
        assert!((4500..5500).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn busier_replica_gets_fewer_reads_and_weights_count() {
        let s = snapshot(&[
            (Role::Primary, true, 1),
            (Role::Replica, true, 1),
            (Role::Replica, true, 1),
        ]);
        let _busy: Vec<_> = (0..3).map(|_| s.members[1].load.start()).collect();
        let mut p = policy(Route::Auto);
        let to_idle = (0..1000)
            .filter(|_| p.choose(&s, true) == Target::Replica(2))
            .count();
        assert_eq!(to_idle, 1000, "two choices always include both replicas");
        let weighted = snapshot(&[
            (Role::Primary, true, 1),
            (Role::Replica, true, 3),
            (Role::Replica, true, 1),
        ]);
        let _one: Vec<_> = (0..2).map(|_| weighted.members[1].load.start()).collect();
        // (2+1)/3 = 1 per weight unit vs (0+1)/1 = 1: a tie, both get reads.
        let mut p = policy(Route::Auto);
        let heavy = (0..1000)
            .filter(|_| p.choose(&weighted, true) == Target::Replica(1))
            .count();
        assert!((300..700).contains(&heavy), "{heavy}");
    }

    #[test]
    fn writes_and_policies_pick_the_primary_or_wait() {
        let s = snapshot(&[(Role::Primary, true, 1), (Role::Replica, true, 1)]);
        assert_eq!(policy(Route::Auto).choose(&s, false), Target::Primary(0));
        assert_eq!(policy(Route::Primary).choose(&s, true), Target::Primary(0));
        assert_eq!(policy(Route::Replica).choose(&s, false), Target::Replica(1));
        let mut off = Policy::new(false, Route::Auto, Consistency::Eventual, false, 1);
        assert_eq!(off.choose(&s, true), Target::Primary(0));
        let headless = snapshot(&[(Role::Unavailable, false, 1), (Role::Replica, true, 1)]);
        assert_eq!(
            policy(Route::Auto).choose(&headless, false),
            Target::AwaitPrimary
        );
        // Reads go on without a primary.
        assert_eq!(
            policy(Route::Auto).choose(&headless, true),
            Target::Replica(1)
        );
    }

    #[test]
    fn reads_fall_back_to_the_primary_when_no_replica_is_eligible() {
        let s = snapshot(&[(Role::Primary, true, 1), (Role::Replica, false, 1)]);
        assert_eq!(policy(Route::Auto).choose(&s, true), Target::Replica(0));
        let mut with_primary = Policy::new(true, Route::Auto, Consistency::Eventual, true, 7);
        let s = snapshot(&[(Role::Primary, true, 1), (Role::Replica, true, 1)]);
        let on_primary = (0..1000)
            .filter(|_| with_primary.choose(&s, true) == Target::Replica(0))
            .count();
        assert!((300..700).contains(&on_primary), "{on_primary}");
    }

    #[test]
    fn read_your_writes_skips_replicas_behind_the_session() {
        // Replica 1 replayed 100, replica 2 replayed 200.
        let s = snapshot(&[
            (Role::Primary, true, 1),
            (Role::Replica, true, 1),
            (Role::Replica, true, 1),
        ]);
        let mut p = Policy::new(true, Route::Auto, Consistency::ReadYourWrites, false, 3);
        p.causal_lsn = Some(150);
        for _ in 0..100 {
            assert_eq!(p.choose(&s, true), Target::Replica(2));
        }
        p.causal_lsn = Some(250);
        assert_eq!(p.choose(&s, true), Target::Replica(0), "primary serves it");
    }
}
