//! A session's pools, one per node it has used: looked up in the shared
//! registry (a lock) only the first time the session goes to a node.

use std::sync::Arc;

use crate::backend::Secret;
use crate::pool::{Pool, PoolKey, PoolSettings};
use crate::proxy::Shared;

/// The pools of one (database, user), by node.
#[derive(Debug)]
pub struct NodePools {
    database: String,
    user: String,
    secret: Option<Secret>,
    settings: PoolSettings,
    pools: Vec<Arc<Pool>>,
}

impl NodePools {
    /// No pools yet; they are created or found on first use.
    pub fn new(
        database: String,
        user: String,
        secret: Option<Secret>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            database,
            user,
            secret,
            settings,
            pools: Vec::new(),
        }
    }

    /// The pool to `node`.
    pub fn get(&mut self, shared: &Shared, node: &str) -> Arc<Pool> {
        if let Some(pool) = self.pools.iter().find(|p| p.key().node == node) {
            return Arc::clone(pool);
        }
        let key = PoolKey::new(node, &self.database, &self.user);
        let pool = shared
            .pools
            .get_or_create(key, self.secret.clone(), self.settings.clone());
        self.pools.push(Arc::clone(&pool));
        pool
    }

    /// The key naming this session's pools on every node (node `*`), for
    /// what is the same on all of them: statement validity, greetings.
    pub fn catalog_key(&self) -> PoolKey {
        PoolKey::new("*", &self.database, &self.user)
    }
}
