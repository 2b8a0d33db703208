//! Process-wide switches the admin side flips and the data path reads:
//! readiness, PAUSE, and requests for shutdown.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports: ready only while the listener is up, a topology
/// snapshot exists, and no drain has begun.
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    topology: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// The client listener is accepting.
    pub fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::Release);
    }

    /// A topology snapshot exists (the topology watcher calls this when it
    /// publishes its first snapshot; the static topology has one at start).
    pub fn set_topology_ready(&self, ready: bool) {
        self.topology.store(ready, Ordering::Release);
    }

    /// A drain has begun: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// True while a drain is under way.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether new clients should be sent here.
    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.topology.load(Ordering::Acquire)
            && !self.is_draining()
    }
}

/// PAUSE/RESUME: while paused, new transactions (transaction pooling) and
/// new sessions (session pooling) wait; running ones go on.
#[derive(Debug)]
pub struct Pause {
    // The flag is the fast path (one load per transaction); the channel
    // wakes the waiters.
    paused: AtomicBool,
    state: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            paused: AtomicBool::new(false),
            state: watch::Sender::new(false),
        }
    }
}

impl Pause {
    /// Holds new transactions until [`Self::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
        self.state.send_replace(true);
    }

    /// Releases every waiter.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.state.send_replace(false);
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Returns at once unless paused; else when resumed.
    pub async fn wait_resumed(&self) {
        if !self.is_paused() {
            return;
        }
        let mut state = self.state.subscribe();
        // The sender lives as long as `self`, so the channel cannot close.
        let _ = state.wait_for(|paused| !paused).await;
    }
}

/// Requests from the admin console to the control side.
#[derive(Debug, Default)]
pub struct Control {
    /// SHUTDOWN: start the graceful shutdown, as SIGTERM does.
    pub shutdown: CancellationToken,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_is_held_until_resume() {
        let pause = Arc::new(Pause::default());
        pause.wait_resumed().await;
        pause.pause();
        let waiter = tokio::spawn({
            let pause = Arc::clone(&pause);
            async move { pause.wait_resumed().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        pause.resume();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn ready_needs_listener_and_topology_and_no_drain() {
        let readiness = Readiness::default();
        readiness.set_listening(true);
        assert!(!readiness.is_ready());
        readiness.set_topology_ready(true);
        assert!(readiness.is_ready());
        readiness.set_draining();
        assert!(!readiness.is_ready());
    }
}
