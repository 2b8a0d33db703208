//! Statements a replica refused as writing (SQLSTATE 25006), remembered so
//! that they go straight to the primary next time.
//!
//! Read on every routed read, written almost never: a copy-on-write set
//! behind arc-swap, so a lookup is one atomic load and a hash probe.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// At most this many statements are remembered; the set starts over when full.
pub const CAPACITY: usize = 10_000;

/// The learned-write set, keyed by a hash of the statement text.
#[derive(Debug, Default)]
pub struct LearnedWrites {
    hashes: ArcSwap<HashSet<u64>>,
}

impl LearnedWrites {
    /// True when `sql` was refused by a replica before.
    pub fn contains(&self, sql: &[u8]) -> bool {
        let hashes = self.hashes.load();
        !hashes.is_empty() && hashes.contains(&hash(sql))
    }

    /// Remembers `sql` as a write.
    pub fn insert(&self, sql: &[u8]) {
        let key = hash(sql);
        self.hashes.rcu(|current| {
            let mut next = if current.len() >= CAPACITY {
                HashSet::new()
            } else {
                HashSet::clone(current)
            };
            next.insert(key);
            Arc::new(next)
        });
    }

    /// How many statements are remembered.
    pub fn len(&self) -> usize {
        self.hashes.load().len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hash(sql: &[u8]) -> u64 {
    // A fixed-key hasher: the same text hashes the same in every session.
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    hasher.write(sql);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_statements_are_found_and_others_are_not() {
        let learned = LearnedWrites::default();
        assert!(!learned.contains(b"SELECT f()"));
        learned.insert(b"SELECT f()");
        assert!(learned.contains(b"SELECT f()"));
        assert!(!learned.contains(b"SELECT g()"));
        assert_eq!(learned.len(), 1);
    }

    #[test]
    fn the_set_stays_bounded() {
        let learned = LearnedWrites::default();
        for i in 0..CAPACITY + 5 {
            learned.insert(format!("SELECT {i}").as_bytes());
        }
        assert!(learned.len() <= CAPACITY);
    }
}
