//! How big a pool may grow and how long its connections live.

use std::time::Duration;

/// Shortest pause between two reaper passes.
const REAPER_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause between two reaper passes.
const REAPER_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// Sizes and timeouts of one pool.
///
/// A timeout of [`Duration::MAX`] disables what it bounds; a zero timeout
/// takes effect at the next opportunity (e.g. `idle_timeout = 0` closes
/// every idle connection above `min_size` at the next reaper pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections kept open even when nobody uses them, opened in the
    /// background. Clamped to `max_size`. Default 0.
    pub min_size: usize,
    /// Most connections open at once: idle, checked out and being opened.
    /// At least 1 (0 is treated as 1). Default 20.
    pub max_size: usize,
    /// Longest a checkout waits for a free slot before it fails with
    /// [`PoolError::CheckoutTimeout`](super::PoolError::CheckoutTimeout).
    /// Default 5 s.
    pub checkout_timeout: Duration,
    /// Idle connections above `min_size` are closed after this long unused.
    /// Default 10 min.
    pub idle_timeout: Duration,
    /// Connections are closed once this old (checked at checkin and while
    /// idle, never while checked out). Default 1 h.
    pub max_lifetime: Duration,
    /// An idle connection unused for this long gets a round trip to the
    /// server before it is handed out. Default 30 s.
    pub health_check_after: Duration,
    /// Bound on TCP connect plus login of a new connection. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            min_size: 0,
            max_size: 20,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            health_check_after: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PoolSettings {
    /// These settings with `max_size >= 1` and `min_size <= max_size`.
    pub(super) fn normalized(mut self) -> Self {
        self.max_size = self.max_size.max(1);
        self.min_size = self.min_size.min(self.max_size);
        self
    }

    /// How often the reaper looks at the idle connections: half the
    /// shorter of `idle_timeout` and `max_lifetime`, within 1 s to 30 s.
    pub(super) fn reaper_interval(&self) -> Duration {
        (self.idle_timeout.min(self.max_lifetime) / 2)
            .clamp(REAPER_MIN_INTERVAL, REAPER_MAX_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_keeps_at_least_one_slot_and_min_within_max() {
        let s = PoolSettings {
            min_size: 9,
            max_size: 0,
            ..PoolSettings::default()
        }
        .normalized();
        assert_eq!((s.min_size, s.max_size), (1, 1));
        let s = PoolSettings {
            min_size: 2,
            max_size: 5,
            ..PoolSettings::default()
        }
        .normalized();
        assert_eq!((s.min_size, s.max_size), (2, 5));
    }

    #[test]
    fn reaper_interval_is_half_the_shorter_timeout_clamped() {
        let with = |idle, life| PoolSettings {
            idle_timeout: Duration::from_secs(idle),
            max_lifetime: Duration::from_secs(life),
            ..PoolSettings::default()
        };
        assert_eq!(with(600, 3600).reaper_interval(), Duration::from_secs(30));
        assert_eq!(with(20, 3600).reaper_interval(), Duration::from_secs(10));
        assert_eq!(with(600, 8).reaper_interval(), Duration::from_secs(4));
        assert_eq!(with(1, 3600).reaper_interval(), Duration::from_secs(1));
        let disabled = PoolSettings {
            idle_timeout: Duration::MAX,
            max_lifetime: Duration::MAX,
            ..PoolSettings::default()
        };
        assert_eq!(disabled.reaper_interval(), Duration::from_secs(30));
    }
}
