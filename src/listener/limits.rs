//! Client connection limits: `server.max_client_connections` for the whole
//! proxy and `max_connections` per user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Counts of connected clients.
#[derive(Debug, Default)]
pub struct ClientLimits {
    clients: AtomicUsize,
    /// Touched at login and logout only, never per message.
    per_user: Mutex<HashMap<String, usize>>,
}

/// One client counted against `max_client_connections`; released on drop.
#[derive(Debug)]
pub struct ClientSlot {
    limits: Arc<ClientLimits>,
}

/// One client counted against its user's `max_connections`; released on drop.
#[derive(Debug)]
pub struct UserSlot {
    limits: Arc<ClientLimits>,
    user: String,
}

impl ClientLimits {
    /// Counts a new client unless `max` (0: no limit) are connected already.
    pub fn try_client(self: &Arc<Self>, max: usize) -> Option<ClientSlot> {
        let admitted = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_ok();
        admitted.then(|| ClientSlot {
            limits: Arc::clone(self),
        })
    }

    /// Counts a client of `user` unless `max` of them are connected already.
    pub fn try_user(self: &Arc<Self>, user: &str, max: usize) -> Option<UserSlot> {
        let mut per_user = self.lock();
        let count = per_user.entry(user.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            limits: Arc::clone(self),
            user: user.to_owned(),
        })
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Single increments and decrements cannot leave the map inconsistent.
        self.per_user.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.limits.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut per_user = self.limits.lock();
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_on_drop() {
        let limits = Arc::new(ClientLimits::default());
        let a = limits.try_client(2).unwrap();
        let _b = limits.try_client(2).unwrap();
        assert!(limits.try_client(2).is_none());
        drop(a);
        assert!(limits.try_client(2).is_some());
        assert!(limits.try_client(0).is_some(), "0 means no limit");
    }

    #[test]
    fn user_limit_counts_each_user_apart() {
        let limits = Arc::new(ClientLimits::default());
        let one = limits.try_user("app", 1).unwrap();
        assert!(limits.try_user("app", 1).is_none());
        assert!(limits.try_user("other", 1).is_some());
        drop(one);
        assert!(limits.try_user("app", 1).is_some());
    }
}
