//! What the proxy has learnt about one pool's server side, shared by every
//! session of the pool: which statement texts parse, and what a server
//! reports to a client with given settings at login.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::pool::PoolKey;

/// Knowledge about one pool's server side.
#[derive(Debug, Default)]
pub struct PoolCatalog {
    // Read on every named Parse, written once per new statement text: a
    // copy-on-write set keeps reads lock-free.
    valid_statements: ArcSwap<HashSet<u64>>,
    // Touched at login only.
    greetings: Mutex<HashMap<u64, Bytes>>,
}

impl PoolCatalog {
    /// True when a statement with this hash has parsed on one of the pool's
    /// connections, so a client's Parse of it can be acknowledged at once.
    pub fn is_valid(&self, internal: u64) -> bool {
        self.valid_statements.load().contains(&internal)
    }

    /// Records a statement hash that parsed.
    pub fn mark_valid(&self, internal: u64) {
        if self.is_valid(internal) {
            return;
        }
        self.valid_statements.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.insert(internal);
            set
        });
    }

    /// The ParameterStatus frames a client with these settings was greeted with.
    pub fn greeting(&self, settings_fingerprint: u64) -> Option<Bytes> {
        self.lock().get(&settings_fingerprint).cloned()
    }

    /// Remembers a greeting for clients with these settings.
    pub fn remember_greeting(&self, settings_fingerprint: u64, frames: Bytes) {
        self.lock().insert(settings_fingerprint, frames);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Bytes>> {
        // Single inserts and reads cannot leave the map inconsistent.
        self.greetings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Catalogs by pool.
#[derive(Debug, Default)]
pub struct Catalogs {
    // Touched once per login.
    by_pool: Mutex<HashMap<PoolKey, Arc<PoolCatalog>>>,
}

impl Catalogs {
    /// The catalog of `key`'s pool.
    pub fn get(&self, key: &PoolKey) -> Arc<PoolCatalog> {
        let mut map = self.by_pool.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key.clone()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_become_valid_once_marked() {
        let catalog = PoolCatalog::default();
        assert!(!catalog.is_valid(7));
        catalog.mark_valid(7);
        catalog.mark_valid(7);
        assert!(catalog.is_valid(7));
    }

    #[test]
    fn catalogs_are_shared_per_pool() {
        let catalogs = Catalogs::default();
        let key = PoolKey::new("n:1", "db", "u");
        catalogs.get(&key).mark_valid(1);
        assert!(catalogs.get(&key).is_valid(1));
        assert!(!catalogs.get(&PoolKey::new("n:2", "db", "u")).is_valid(1));
    }
}
