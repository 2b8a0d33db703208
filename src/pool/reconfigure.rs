//! Changing a live pool: new settings from a config reload, and
//! RECONNECT (retire every connection opened so far).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::CloseReason;
use super::{Pool, PoolSettings};

impl Pool {
    /// Applies `settings` to this pool without closing anything: a larger
    /// `max_size` admits more checkouts at once; a smaller one takes effect
    /// as connections come back (checkouts in flight keep theirs). Timeouts
    /// and `min_size` apply from the next checkout or reaper pass.
    pub fn reconfigure(&self, settings: PoolSettings) {
        let settings = settings.normalized();
        let old = self.settings.swap(Arc::new(settings.clone()));
        if old.max_size == settings.max_size {
            return;
        }
        tracing::info!(pool = %self.key, from = old.max_size, to = settings.max_size, "pool max_size changed");
        if settings.max_size > old.max_size {
            self.queue.add_permits(settings.max_size - old.max_size);
        } else {
            self.queue.forget_permits(old.max_size - settings.max_size);
        }
    }

    /// Closes every idle connection now and every checked-out one when it
    /// comes back, so the next checkouts get fresh connections (e.g. after
    /// a node's address now points elsewhere).
    pub fn reconnect(&self) {
        self.retire_before.store(Arc::new(Some(Instant::now())));
        for idle in self.queue.take_idle() {
            self.close(idle.conn, CloseReason::Lifetime);
        }
    }

    /// True when a connection opened at `created` must not be reused at
    /// `now`: it reached `max_lifetime`, or was opened before a RECONNECT.
    pub(super) fn outlived(&self, created: Instant, now: Instant) -> bool {
        self.outlived_with(created, now, self.settings.load().max_lifetime)
    }

    /// [`Self::outlived`] with the pool's `max_lifetime` already at hand.
    pub(super) fn outlived_with(
        &self,
        created: Instant,
        now: Instant,
        max_lifetime: Duration,
    ) -> bool {
        if now.saturating_duration_since(created) >= max_lifetime {
            return true;
        }
        matches!(**self.retire_before.load(), Some(before) if created < before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolKey;

    #[tokio::test]
    async fn max_size_grows_and_shrinks_the_permits() {
        let pool = Pool::new(
            PoolKey::new("127.0.0.1:1", "db", "u"),
            None,
            PoolSettings {
                max_size: 2,
                ..PoolSettings::default()
            },
        );
        pool.reconfigure(PoolSettings {
            max_size: 5,
            ..PoolSettings::default()
        });
        assert_eq!(pool.queue.available(), 5);
        assert_eq!(pool.settings().max_size, 5);
        pool.reconfigure(PoolSettings {
            max_size: 1,
            ..PoolSettings::default()
        });
        assert_eq!(pool.queue.available(), 1);
    }

    #[tokio::test]
    async fn reconnect_retires_connections_opened_before_it() {
        let pool = Pool::new(
            PoolKey::new("127.0.0.1:1", "db", "u"),
            None,
            PoolSettings::default(),
        );
        let before = Instant::now();
        assert!(!pool.outlived(before, Instant::now()));
        pool.reconnect();
        assert!(pool.outlived(before, Instant::now()));
        assert!(!pool.outlived(Instant::now(), Instant::now()));
    }
}
