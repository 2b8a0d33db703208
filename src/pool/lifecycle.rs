//! When a pooled connection is closed, and why.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::PoolSettings;
use super::health::HealthError;
use super::stats::Counters;

/// Why the pool closed a connection.
#[derive(Debug)]
pub(super) enum CloseReason {
    /// Unused for `idle_timeout`.
    Idle,
    /// Reached `max_lifetime`.
    Lifetime,
    /// A health check failed.
    Broken(HealthError),
    /// The session discarded it, or dropped it without checking it in.
    Discarded,
}

impl CloseReason {
    /// The counter this closing adds to.
    pub fn counter<'a>(&self, counters: &'a Counters) -> &'a AtomicU64 {
        match self {
            Self::Idle => &counters.closed_idle,
            Self::Lifetime => &counters.closed_lifetime,
            Self::Broken(_) => &counters.discarded_broken,
            Self::Discarded => &counters.discarded_by_session,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle => f.write_str("idle timeout"),
            Self::Lifetime => f.write_str("max lifetime reached"),
            Self::Broken(e) => write!(f, "broken: {e}"),
            Self::Discarded => f.write_str("discarded by session"),
        }
    }
}

/// Whether a connection `age` old and unused for `idle_for` has outlived
/// the settings. Lifetime wins over idleness: it applies below `min_size`
/// too.
pub(super) fn expiry(
    age: Duration,
    idle_for: Duration,
    settings: &PoolSettings,
) -> Option<CloseReason> {
    if age >= settings.max_lifetime {
        Some(CloseReason::Lifetime)
    } else if idle_for >= settings.idle_timeout {
        Some(CloseReason::Idle)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        PoolSettings {
            idle_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(60),
            ..PoolSettings::default()
        }
    }

    #[test]
    fn young_and_recently_used_stays() {
        let s = settings();
        assert!(expiry(Duration::from_secs(59), Duration::from_secs(9), &s).is_none());
    }

    #[test]
    fn lifetime_wins_over_idleness() {
        let s = settings();
        let reason = expiry(Duration::from_secs(60), Duration::from_secs(30), &s);
        assert!(matches!(reason, Some(CloseReason::Lifetime)));
        let reason = expiry(Duration::from_secs(20), Duration::from_secs(10), &s);
        assert!(matches!(reason, Some(CloseReason::Idle)));
    }

    #[test]
    fn max_duration_disables() {
        let s = PoolSettings {
            idle_timeout: Duration::MAX,
            max_lifetime: Duration::MAX,
            ..PoolSettings::default()
        };
        let forever = Duration::from_secs(10 * 365 * 86_400);
        assert!(expiry(forever, forever, &s).is_none());
    }
}
