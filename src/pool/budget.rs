//! This proxy's share of `pool.max_server_connections_per_node`: how many
//! server connections it may have open to one node, over all its pools
//! (and session-pooled sessions) together.
//!
//! Touched only when a connection is opened or closed, never per message
//! or per checkout of an idle connection: one atomic each way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest a waiter sleeps before looking again, in case a wake-up went to
/// a waiter of another pool on the same node.
const RECHECK: Duration = Duration::from_millis(20);

/// The share in force; 0 means no budget.
#[derive(Debug, Default)]
pub struct BudgetLimit(AtomicUsize);

impl BudgetLimit {
    /// Connections per node this proxy may open now (0: unlimited).
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Server connections this proxy has open to one node.
#[derive(Debug)]
pub struct NodeUnits {
    open: AtomicUsize,
    waiting: AtomicUsize,
    limit: Arc<BudgetLimit>,
    released: Notify,
}

impl NodeUnits {
    /// Units for a pool outside any registry: no budget.
    pub fn unlimited() -> Arc<Self> {
        Arc::new(Self::new(Arc::default()))
    }

    fn new(limit: Arc<BudgetLimit>) -> Self {
        Self {
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            limit,
            released: Notify::new(),
        }
    }

    /// Connections open to this node now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// True when more connections are open than the share allows (after
    /// the share shrank).
    pub fn over_budget(&self) -> bool {
        let limit = self.limit.get();
        limit > 0 && self.open() > limit
    }

    /// Counts one more connection if the share allows it.
    pub fn try_take(&self) -> bool {
        let limit = self.limit.get();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a unit back (its connection closed) and wakes a waiter.
    pub fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.wake();
    }

    /// True while a checkout waits for a unit.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Wakes one waiter, if any: a unit was given back, or a connection
    /// became idle that a waiter of its pool can use instead.
    pub fn wake(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.released.notify_one();
        }
    }

    /// Waits until a unit may be free (or `RECHECK` passes); false once
    /// `deadline` has passed. The caller tries again after it.
    pub async fn wait(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let until = deadline.min(now + RECHECK);
        let _ = tokio::time::timeout_at(until, self.released.notified()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// Takes a unit for a connection that is not pooled (session pooling),
    /// waiting up to `timeout`; the unit is given back when the guard drops.
    pub async fn take_owned(self: &Arc<Self>, timeout: Duration) -> Option<NodeUnit> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_take() {
                return Some(NodeUnit(Arc::clone(self)));
            }
            if !self.wait(deadline).await {
                return None;
            }
        }
    }
}

/// One counted connection to a node, given back on drop.
#[derive(Debug)]
pub struct NodeUnit(Arc<NodeUnits>);

impl Drop for NodeUnit {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Every node's units and the share they are held to.
#[derive(Debug, Default)]
pub struct NodeBudget {
    limit: Arc<BudgetLimit>,
    nodes: Mutex<HashMap<String, Arc<NodeUnits>>>,
}

impl NodeBudget {
    /// The units of `node`, created on first use (at pool creation or
    /// session login, never per message).
    pub fn node(&self, node: &str) -> Arc<NodeUnits> {
        let mut nodes = self.lock();
        if let Some(units) = nodes.get(node) {
            return Arc::clone(units);
        }
        let units = Arc::new(NodeUnits::new(Arc::clone(&self.limit)));
        nodes.insert(node.to_owned(), Arc::clone(&units));
        units
    }

    /// Connections open per node, as counted against the budget.
    pub fn open_per_node(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(node, units)| (node.clone(), units.open()))
            .collect()
    }

    /// The share in force (0: no budget).
    pub fn limit(&self) -> usize {
        self.limit.get()
    }

    /// Sets the share; returns the previous one. A larger share wakes
    /// every waiter; a smaller one applies as connections close.
    pub fn set_limit(&self, limit: usize) -> usize {
        let old = self.limit.0.swap(limit, Ordering::AcqRel);
        if old != 0 && (limit == 0 || limit > old) {
            for units in self.lock().values() {
                units.released.notify_waiters();
            }
        }
        old
    }

    // Inserts cannot be left half done by a panic: a poisoned map is whole.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<NodeUnits>>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn units_stop_at_the_share_and_a_larger_share_admits_more() {
        let budget = NodeBudget::default();
        let node = budget.node("n:1");
        assert!(node.try_take(), "no budget: unlimited");
        node.give_back();
        budget.set_limit(2);
        assert!(node.try_take() && node.try_take());
        assert!(!node.try_take());
        let waiter = {
            let node = Arc::clone(&node);
            tokio::spawn(async move { node.take_owned(Duration::from_secs(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        budget.set_limit(3);
        let unit = waiter.await.unwrap().expect("admitted by the larger share");
        assert_eq!(node.open(), 3);
        drop(unit);
        assert_eq!(node.open(), 2);
        budget.set_limit(1);
        assert!(node.over_budget());
        assert!(node.take_owned(Duration::from_millis(30)).await.is_none());
    }
}
