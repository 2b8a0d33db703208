//! All pools of the proxy, by key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{NodeBudget, NodeUnits, Pool, PoolKey, PoolSettings};
use crate::backend::Secret;
use crate::metrics::{Metrics, PoolMetrics};
use crate::tls::Connector;

/// The registry of pools: one [`Pool`] per [`PoolKey`], created on first
/// use.
///
/// A std mutex around a `HashMap` is enough: sessions look their pool up
/// once, at login, and keep the `Arc<Pool>`; checkout and checkin never
/// touch the registry. Nothing awaits while the lock is held.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    metrics: Option<Arc<Metrics>>,
    tls: Connector,
    budget: NodeBudget,
}

impl Pools {
    /// An empty registry whose pools connect over plain TCP.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose pools connect to the nodes with `tls` and
    /// report to `metrics`.
    pub fn with_parts(tls: Connector, metrics: Arc<Metrics>) -> Self {
        Self {
            pools: Mutex::default(),
            metrics: Some(metrics),
            tls,
            budget: NodeBudget::default(),
        }
    }

    /// The pool for `key`, created with `secret` and `settings` if it
    /// does not exist yet. An existing pool keeps the settings it was
    /// created with and takes `secret` for its next connections (a client
    /// that just logged in proved it current).
    pub fn get_or_create(
        &self,
        key: PoolKey,
        secret: Option<Secret>,
        settings: PoolSettings,
    ) -> Arc<Pool> {
        let mut pools = self.lock();
        if let Some(pool) = pools.get(&key) {
            pool.update_secret(secret);
            return Arc::clone(pool);
        }
        let metrics = match &self.metrics {
            Some(metrics) => metrics.pool(&key.node, &key.database, &key.user),
            None => PoolMetrics::detached(),
        };
        let node = self.budget.node(&key.node);
        let pool = Pool::with_parts(
            key.clone(),
            secret,
            settings,
            self.tls.clone(),
            metrics,
            node,
        );
        pools.insert(key, Arc::clone(&pool));
        pool
    }

    /// The pool for `key`, if it exists.
    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.lock().get(key).cloned()
    }

    /// Every pool, for stats and the admin console (in no particular order).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.lock().values().cloned().collect()
    }

    /// Closes the idle connections of every pool to `node`.
    pub fn close_idle_on(&self, node: &str) {
        for pool in self.all() {
            if pool.key().node == node {
                pool.close_idle();
            }
        }
    }

    /// The budget units of `node` (session pooling takes one per session).
    pub fn node_units(&self, node: &str) -> Arc<NodeUnits> {
        self.budget.node(node)
    }

    /// Connections open per node, as the budget counts them.
    pub fn node_connections(&self) -> Vec<(String, usize)> {
        self.budget.open_per_node()
    }

    /// This proxy's share of `pool.max_server_connections_per_node` (0: none).
    pub fn node_budget(&self) -> usize {
        self.budget.limit()
    }

    /// Sets this proxy's per-node share; when it shrank, idle connections
    /// above it are closed now and busy ones as they come back.
    pub fn set_node_budget(&self, limit: usize) {
        let old = self.budget.set_limit(limit);
        if limit != 0 && (old == 0 || limit < old) {
            for pool in self.all() {
                pool.trim_to_budget();
            }
        }
    }

    // Inserting into a HashMap cannot be left half done by a panic, so a
    // poisoned lock still guards a valid map.
    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_same_pool_other_key_other_pool() {
        let pools = Pools::new();
        let key = PoolKey::new("127.0.0.1:1", "appdb", "app");
        let a = pools.get_or_create(key.clone(), None, PoolSettings::default());
        let b = pools.get_or_create(key.clone(), Some("x".into()), PoolSettings::default());
        assert!(Arc::ptr_eq(&a, &b));
        let other = PoolKey::new("127.0.0.1:1", "appdb", "reporting");
        let c = pools.get_or_create(other, None, PoolSettings::default());
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(pools.all().len(), 2);
        assert!(pools.get(&key).is_some_and(|p| Arc::ptr_eq(&p, &a)));
    }
}
