//! The verified topology, published as an immutable snapshot.
//!
//! Sessions read the current [`Snapshot`] with one atomic load (arc-swap)
//! per routing decision; the monitor replaces it whole when something
//! changes. Per-node load counters live outside the snapshot (in
//! [`NodeLoad`], shared by every snapshot naming the node) so that counting
//! a transaction never means publishing a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

/// A node's role after verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Verified out of recovery and elected: gets writes.
    Primary,
    /// In recovery (streaming replica): may get reads.
    Replica,
    /// Unreachable, or out of recovery without being elected: gets nothing.
    Unavailable,
}

impl Role {
    /// The role as a metric label or log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unavailable => "unavailable",
        }
    }
}

/// Transactions running on a node now; read by the load balancer.
#[derive(Debug, Default)]
pub struct NodeLoad {
    outstanding: AtomicUsize,
}

impl NodeLoad {
    /// Transactions running on the node now.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a transaction as running until the guard drops.
    pub fn start(self: &Arc<Self>) -> LoadGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        LoadGuard(Arc::clone(self))
    }
}

/// One running transaction on a node (see [`NodeLoad::start`]).
#[derive(Debug)]
pub struct LoadGuard(Arc<NodeLoad>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One node as the proxy sees it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Member {
    /// `host:port` the proxy connects to.
    pub addr: String,
    /// Verified role.
    pub role: Role,
    /// The last probe reached the node.
    pub reachable: bool,
    /// The node said it is in recovery (None: not probed yet or unreachable).
    pub in_recovery: Option<bool>,
    /// WAL timeline, where the node reports it.
    pub timeline: Option<u32>,
    /// The primary's current WAL position, or the replica's replay position.
    pub lsn: Option<u64>,
    /// Bytes of WAL the replica has yet to replay.
    pub lag_bytes: Option<u64>,
    /// Seconds since the replica last replayed a transaction, while it has
    /// WAL left to replay (0 when caught up).
    pub lag_seconds: Option<f64>,
    /// A replica within the lag limits: eligible for reads.
    pub in_rotation: bool,
    /// Why the last probe failed, when it did.
    pub probe_error: Option<String>,
    /// Relative share of reads.
    pub weight: u32,
    /// Running transactions.
    #[serde(skip)]
    pub load: Arc<NodeLoad>,
}

impl Member {
    /// A member known by address only, before any probe.
    pub fn unprobed(addr: &str, weight: u32, load: Arc<NodeLoad>) -> Self {
        Self {
            addr: addr.to_owned(),
            role: Role::Unavailable,
            reachable: false,
            in_recovery: None,
            timeline: None,
            lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            in_rotation: false,
            probe_error: None,
            weight,
            load,
        }
    }

    /// True when this replica has replayed at least `lsn`.
    pub fn has_replayed(&self, lsn: u64) -> bool {
        self.role == Role::Replica && self.lsn.is_some_and(|replayed| replayed >= lsn)
    }
}

/// The whole verified view at one moment.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    /// Every configured or discovered node.
    pub members: Vec<Member>,
    /// Index of the verified primary in `members`.
    pub primary: Option<usize>,
    /// Why there is no primary, when there is none.
    pub no_primary_reason: Option<String>,
    /// Two nodes claim to be primary on the same timeline: writes held.
    pub split_brain: bool,
    /// Bumped on every published change.
    pub version: u64,
    /// When this snapshot was published.
    pub published_at: SystemTime,
}

impl Snapshot {
    /// A snapshot with no probe results yet: no primary, nothing eligible.
    pub fn initial(members: Vec<Member>) -> Self {
        Self {
            members,
            primary: None,
            no_primary_reason: Some("the nodes have not been probed yet".into()),
            split_brain: false,
            version: 0,
            published_at: SystemTime::now(),
        }
    }

    /// The verified primary.
    pub fn primary(&self) -> Option<&Member> {
        self.primary.and_then(|i| self.members.get(i))
    }

    /// True when the role, rotation or reachability of any node differs
    /// from `other` (LSNs and lag alone do not count as a change).
    pub fn differs_in_shape(&self, other: &Snapshot) -> bool {
        self.primary != other.primary
            || self.split_brain != other.split_brain
            || self.members.len() != other.members.len()
            || self.members.iter().zip(&other.members).any(|(a, b)| {
                a.addr != b.addr
                    || a.role != b.role
                    || a.reachable != b.reachable
                    || a.in_rotation != b.in_rotation
            })
    }
}

/// The current snapshot plus a way to wait for the next one.
#[derive(Debug)]
pub struct Topology {
    current: ArcSwap<Snapshot>,
    changed: Notify,
    changes: AtomicU64,
}

impl Topology {
    /// Starts from `initial`.
    pub fn new(initial: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            changed: Notify::new(),
            changes: AtomicU64::new(0),
        }
    }

    /// The current snapshot (one atomic load).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, owned.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `next` and wakes everyone waiting for a change.
    pub fn publish(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Role or rotation changes published so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Waits for the next published snapshot, at most `timeout`.
    pub async fn next_publish(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// Whether `addr`, a primary that just dropped a connection or stopped a
    /// request, is on its way out: after two monitor rounds (so that the
    /// second began after the event) it is no longer the verified primary.
    /// False when it stays: the event was aimed at that one backend
    /// (`pg_terminate_backend`), not a shutdown, switchover or crash.
    pub async fn primary_left(&self, addr: &str) -> bool {
        for _ in 0..2 {
            self.next_publish(Duration::from_secs(1)).await;
        }
        self.load()
            .primary()
            .is_none_or(|primary| primary.addr != addr)
    }

    /// Waits until a snapshot with a primary is published, or `timeout`.
    pub async fn wait_for_primary(&self, timeout: Duration) -> Option<Arc<Snapshot>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a publish in between is not missed.
            let notified = self.changed.notified();
            let snapshot = self.snapshot();
            if snapshot.primary.is_some() {
                return Some(snapshot);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, role: Role) -> Member {
        Member {
            role,
            reachable: true,
            ..Member::unprobed(addr, 1, Arc::default())
        }
    }

    #[test]
    fn lag_alone_is_not_a_change_of_shape() {
        let a = Snapshot {
            primary: Some(0),
            ..Snapshot::initial(vec![
                member("a:1", Role::Primary),
                member("b:1", Role::Replica),
            ])
        };
        let mut b = a.clone();
        b.members[1].lag_bytes = Some(100);
        assert!(!a.differs_in_shape(&b));
        b.members[1].in_rotation = !b.members[1].in_rotation;
        assert!(a.differs_in_shape(&b));
    }

    #[test]
    fn load_guards_count_running_transactions() {
        let load = Arc::new(NodeLoad::default());
        let first = load.start();
        let second = load.start();
        assert_eq!(load.outstanding(), 2);
        drop(first);
        drop(second);
        assert_eq!(load.outstanding(), 0);
    }

    #[tokio::test]
    async fn waiting_for_a_primary_ends_when_one_is_published() {
        let topology = Arc::new(Topology::new(Snapshot::initial(vec![member(
            "a:1",
            Role::Unavailable,
        )])));
        let waiter = {
            let topology = Arc::clone(&topology);
            tokio::spawn(async move { topology.wait_for_primary(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        topology.publish(Snapshot {
            primary: Some(0),
            ..Snapshot::initial(vec![member("a:1", Role::Primary)])
        });
        let snapshot = waiter.await.unwrap().expect("a primary");
        assert_eq!(snapshot.primary().unwrap().addr, "a:1");
        assert!(
            topology
                .wait_for_primary(Duration::from_millis(10))
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn waiting_for_a_primary_times_out() {
        let topology = Topology::new(Snapshot::initial(vec![]));
        assert!(
            topology
                .wait_for_primary(Duration::from_millis(20))
                .await
                .is_none()
        );
    }
}
