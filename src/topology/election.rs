//! From probe results (and a control plane's claim) to a snapshot: who is
//! primary, which replicas are in rotation.
//!
//! The rules that keep writes off nodes in recovery live here, as pure
//! functions:
//! - only a node the probe found out of recovery can be primary;
//! - of several such nodes the highest timeline wins; a tie holds writes
//!   (split brain) rather than guess;
//! - a control plane's claim picks among verified nodes, never overrides
//!   the probe: a claimed primary that is in recovery gets no writes.

use std::time::SystemTime;

use super::probe::Observation;
use super::snapshot::{Member, Role, Snapshot};

/// Who the control plane says is primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No control plane: the probe alone elects (`topology = "probe"`).
    ProbeOnly,
    /// This node should be primary (static config, Patroni leader, CNPG
    /// currentPrimary); `None` when the control plane names none.
    Primary(Option<String>),
    /// The control plane reports a failover under way: hold writes.
    HoldWrites,
}

/// Lag limits for replica rotation.
#[derive(Clone, Copy, Debug)]
pub struct LagLimits {
    /// Bytes of unreplayed WAL beyond which a replica leaves rotation.
    pub max_bytes: u64,
    /// Replay age (seconds) beyond which a replica leaves rotation.
    pub max_seconds: f64,
}

impl LagLimits {
    /// True when a replica with this lag may stay in (or, when
    /// `returning`, come back into) rotation. Coming back needs half the
    /// limits, so a replica hovering at the limit does not flap.
    fn allows(&self, bytes: Option<u64>, seconds: Option<f64>, returning: bool) -> bool {
        let (max_bytes, max_seconds) = if returning {
            (self.max_bytes / 2, self.max_seconds / 2.0)
        } else {
            (self.max_bytes, self.max_seconds)
        };
        bytes.is_none_or(|b| b <= max_bytes) && seconds.is_none_or(|s| s <= max_seconds)
    }
}

/// Builds the next snapshot. `observations[i]` is the latest probe of
/// `previous.members[i]` (None: unreachable).
pub fn elect(
    previous: &Snapshot,
    observations: &[Option<Observation>],
    claim: &Claim,
    limits: LagLimits,
) -> Snapshot {
    let (primary, reason, split_brain) = choose_primary(previous, observations, claim);
    let primary_lsn = primary
        .and_then(|i| observations.get(i).copied().flatten())
        .and_then(|o| o.lsn);
    let members = previous
        .members
        .iter()
        .zip(observations)
        .enumerate()
        .map(|(index, (before, seen))| {
            let mut member = before.clone();
            apply(&mut member, *seen, index, primary, primary_lsn, limits);
            member
        })
        .collect();
    Snapshot {
        members,
        primary,
        no_primary_reason: reason,
        split_brain,
        version: previous.version + 1,
        published_at: SystemTime::now(),
    }
}

fn choose_primary(
    previous: &Snapshot,
    observations: &[Option<Observation>],
    claim: &Claim,
) -> (Option<usize>, Option<String>, bool) {
    let writable: Vec<(usize, Option<u32>)> = observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.filter(|o| !o.in_recovery).map(|o| (i, o.timeline)))
        .collect();
    let best = writable.iter().map(|(_, tl)| *tl).max().flatten();
    let leaders: Vec<usize> = writable
        .iter()
        .filter(|(_, tl)| *tl == best)
        .map(|(i, _)| *i)
        .collect();
    let addr = |i: usize| previous.members[i].addr.as_str();
    match claim {
        Claim::HoldWrites => (
            None,
            Some("the control plane reports a failover in progress".into()),
            false,
        ),
        Claim::ProbeOnly => match leaders.as_slice() {
            [] => (None, Some("no node is out of recovery".into()), false),
            [one] => (Some(*one), None, false),
            many => (None, Some(split_brain_reason(many, addr)), true),
        },
        Claim::Primary(None) => (
            None,
            Some("the control plane names no primary".into()),
            false,
        ),
        Claim::Primary(Some(claimed)) => {
            let Some(index) = previous.members.iter().position(|m| &m.addr == claimed) else {
                return (
                    None,
                    Some(format!("claimed primary {claimed} is not a known node")),
                    false,
                );
            };
            match observations.get(index).copied().flatten() {
                None => (
                    None,
                    Some(format!("claimed primary {claimed} is unreachable")),
                    false,
                ),
                Some(o) if o.in_recovery => (
                    None,
                    Some(format!("claimed primary {claimed} is in recovery")),
                    false,
                ),
                Some(_) if leaders.len() > 1 => {
                    (None, Some(split_brain_reason(&leaders, addr)), true)
                }
                Some(_) if leaders != [index] => (
                    None,
                    Some(format!(
                        "claimed primary {claimed} is on an older timeline than {}",
                        addr(leaders[0])
                    )),
                    false,
                ),
                Some(_) => (Some(index), None, false),
            }
        }
    }
}

fn split_brain_reason<'a>(leaders: &[usize], addr: impl Fn(usize) -> &'a str) -> String {
    let names: Vec<&str> = leaders.iter().map(|&i| addr(i)).collect();
    format!(
        "split brain: {} are all out of recovery on the same timeline",
        names.join(", ")
    )
}

fn apply(
    member: &mut Member,
    seen: Option<Observation>,
    index: usize,
    primary: Option<usize>,
    primary_lsn: Option<u64>,
    limits: LagLimits,
) {
    let Some(seen) = seen else {
        member.role = Role::Unavailable;
        member.reachable = false;
        member.in_rotation = false;
        member.in_recovery = None;
        return;
    };
    member.reachable = true;
    member.in_recovery = Some(seen.in_recovery);
    member.timeline = seen.timeline.or(member.timeline);
    member.lsn = seen.lsn;
    if primary == Some(index) {
        member.role = Role::Primary;
        member.lag_bytes = Some(0);
        member.lag_seconds = Some(0.0);
        member.in_rotation = true;
        return;
    }
    if !seen.in_recovery {
        // Out of recovery but not elected: neither writes nor reads (it may
        // be a former primary that has not been fenced yet).
        member.role = Role::Unavailable;
        member.in_rotation = false;
        return;
    }
    member.role = Role::Replica;
    member.lag_bytes = match (primary_lsn, seen.lsn) {
        (Some(head), Some(replayed)) => Some(head.saturating_sub(replayed)),
        _ => None,
    };
    let waiting = matches!((seen.receive_lsn, seen.lsn), (Some(r), Some(p)) if r > p);
    member.lag_seconds = Some(if waiting {
        seen.replay_age.unwrap_or(0.0).max(0.0)
    } else {
        0.0
    });
    let returning = !member.in_rotation;
    member.in_rotation = limits.allows(member.lag_bytes, member.lag_seconds, returning);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const LIMITS: LagLimits = LagLimits {
        max_bytes: 1000,
        max_seconds: 2.0,
    };

    fn cluster(addrs: &[&str]) -> Snapshot {
        Snapshot::initial(
            addrs
                .iter()
                .map(|a| Member::unprobed(a, 1, Arc::default()))
                .collect(),
        )
    }

    fn primary(timeline: u32, lsn: u64) -> Option<Observation> {
        Some(Observation {
            in_recovery: false,
            lsn: Some(lsn),
            receive_lsn: None,
            timeline: Some(timeline),
            replay_age: None,
        })
    }

    fn replica(replayed: u64, received: u64, age: f64) -> Option<Observation> {
        Some(Observation {
            in_recovery: true,
            lsn: Some(replayed),
            receive_lsn: Some(received),
            timeline: Some(1),
            replay_age: Some(age),
        })
    }

    #[test]
    fn probe_elects_the_only_node_out_of_recovery() {
        let s = elect(
            &cluster(&["a:1", "b:1", "c:1"]),
            &[
                replica(90, 90, 0.0),
                primary(1, 100),
                replica(100, 100, 9.0),
            ],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert_eq!(s.primary, Some(1));
        assert_eq!(s.members[0].role, Role::Replica);
        assert_eq!(s.members[0].lag_bytes, Some(10));
        // Caught up with what it received: no time lag however old the last commit.
        assert_eq!(s.members[2].lag_seconds, Some(0.0));
        assert!(s.members[0].in_rotation && s.members[2].in_rotation);
    }

    #[test]
    fn higher_timeline_wins_and_a_tie_holds_writes() {
        let s = elect(
            &cluster(&["a:1", "b:1"]),
            &[primary(1, 100), primary(2, 50)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert_eq!(s.primary, Some(1));
        assert_eq!(s.members[0].role, Role::Unavailable);
        let tie = elect(
            &cluster(&["a:1", "b:1"]),
            &[primary(2, 100), primary(2, 50)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert_eq!(tie.primary, None);
        assert!(tie.split_brain);
        assert!(tie.no_primary_reason.unwrap().contains("split brain"));
    }

    #[test]
    fn claimed_primary_in_recovery_gets_no_writes() {
        let s = elect(
            &cluster(&["a:1", "b:1"]),
            &[replica(100, 100, 0.0), replica(100, 100, 0.0)],
            &Claim::Primary(Some("a:1".into())),
            LIMITS,
        );
        assert_eq!(s.primary, None);
        assert!(s.no_primary_reason.unwrap().contains("in recovery"));
        assert_eq!(s.members[0].role, Role::Replica);
    }

    #[test]
    fn claimed_primary_on_an_older_timeline_gets_no_writes() {
        let s = elect(
            &cluster(&["a:1", "b:1"]),
            &[primary(1, 100), primary(2, 100)],
            &Claim::Primary(Some("a:1".into())),
            LIMITS,
        );
        assert_eq!(s.primary, None);
        let ok = elect(
            &cluster(&["a:1", "b:1"]),
            &[primary(3, 100), replica(90, 95, 0.5)],
            &Claim::Primary(Some("a:1".into())),
            LIMITS,
        );
        assert_eq!(ok.primary, Some(0));
        assert_eq!(ok.members[1].lag_seconds, Some(0.5));
    }

    #[test]
    fn failover_in_progress_and_unreachable_primary_hold_writes() {
        let held = elect(
            &cluster(&["a:1"]),
            &[primary(1, 1)],
            &Claim::HoldWrites,
            LIMITS,
        );
        assert_eq!(held.primary, None);
        let gone = elect(
            &cluster(&["a:1", "b:1"]),
            &[None, replica(1, 1, 0.0)],
            &Claim::Primary(Some("a:1".into())),
            LIMITS,
        );
        assert_eq!(gone.primary, None);
        assert!(!gone.members[0].reachable);
        // Reads go on: the replica stays in rotation with its lag unknown.
        assert!(gone.members[1].in_rotation);
    }

    #[test]
    fn lagging_replica_leaves_rotation_and_returns_with_hysteresis() {
        let start = cluster(&["a:1", "b:1"]);
        let behind = elect(
            &start,
            &[primary(1, 5000), replica(3000, 5000, 0.1)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert!(!behind.members[1].in_rotation, "2000 bytes behind");
        // Within the limit but above half of it: stays out.
        let closer = elect(
            &behind,
            &[primary(1, 5000), replica(4200, 5000, 0.1)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert!(!closer.members[1].in_rotation);
        let caught_up = elect(
            &closer,
            &[primary(1, 5000), replica(4600, 5000, 0.1)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert!(caught_up.members[1].in_rotation);
        // Once in, it stays in up to the full limit.
        let drifting = elect(
            &caught_up,
            &[primary(1, 5000), replica(4200, 5000, 0.1)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert!(drifting.members[1].in_rotation);
        let stale = elect(
            &drifting,
            &[primary(1, 5000), replica(4900, 5000, 3.0)],
            &Claim::ProbeOnly,
            LIMITS,
        );
        assert!(!stale.members[1].in_rotation, "3 s of replay lag");
    }
}
