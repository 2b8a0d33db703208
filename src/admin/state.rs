//! Process-wide switches the admin side flips and the data path reads:
//! readiness, PAUSE, and requests for shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use thiserror::Error;
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

/// PAUSE/RESUME, with PgBouncer's meaning: while paused, new transactions
/// (transaction pooling) and new sessions (session pooling) wait; PAUSE
/// itself returns once nothing holds a server connection any more: every
/// transaction that was running has ended (a client pinned to its
/// connection, and a session-pooled session, holds one until its pin or
/// session ends).
#[derive(Debug)]
pub struct Pause {
    // The flag is the fast path (one load per transaction); the channel
    // wakes the waiters.
    paused: AtomicBool,
    state: watch::Sender<bool>,
    /// Transactions (and session-pooled sessions) past the PAUSE gate.
    active: Arc<AtomicUsize>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            paused: AtomicBool::new(false),
            state: watch::Sender::new(false),
            active: Arc::default(),
        }
    }
}

/// How often a pending PAUSE looks whether the last transaction ended.
/// Polled, so that ending a transaction costs one atomic subtraction and
/// nothing else.
const PAUSE_POLL: Duration = Duration::from_millis(10);

/// Why a PAUSE returned before the last transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PauseInterrupted {
    /// RESUME (from another console, or the shutdown) came first.
    #[error("RESUME came before the active transactions ended")]
    Resumed,
}

impl Pause {
    /// Holds new transactions from now on and waits until none is active
    /// (see [`Pause`]); new transactions stay held until [`Self::resume`].
    pub async fn pause(&self) -> Result<(), PauseInterrupted> {
        // SeqCst pairs with `enter`: either a session sees the flag, or
        // this sees its transaction counted.
        self.paused.store(true, Ordering::SeqCst);
        self.state.send_replace(true);
        while self.active() > 0 {
            if !self.is_paused() {
                return Err(PauseInterrupted::Resumed);
            }
            tokio::time::sleep(PAUSE_POLL).await;
        }
        Ok(())
    }

    /// Releases every waiter.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.state.send_replace(false);
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Transactions (and session-pooled sessions) running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits while paused, then counts a transaction as active until the
    /// returned guard drops. Costs two atomic operations when not paused.
    pub async fn enter(&self) -> Active {
        loop {
            self.active.fetch_add(1, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                return Active(Arc::clone(&self.active));
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
            self.wait_resumed().await;
        }
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

/// A transaction (or session) that PAUSE waits for; dropping it ends it.
#[derive(Debug)]
pub struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

    #[tokio::test]
    async fn pause_waits_for_active_transactions_and_holds_new_ones() {
        let pause = Arc::new(Pause::default());
        let running = pause.enter().await;
        let pausing = tokio::spawn({
            let pause = Arc::clone(&pause);
            async move { pause.pause().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !pausing.is_finished(),
            "PAUSE returned with a transaction running"
        );
        let next = tokio::spawn({
            let pause = Arc::clone(&pause);
            async move { drop(pause.enter().await) }
        });
        drop(running);
        tokio::time::timeout(Duration::from_secs(1), pausing)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished(), "a new transaction ran while paused");
        assert_eq!(pause.active(), 0);
        pause.resume();
        tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn resume_interrupts_a_pending_pause() {
        let pause = Arc::new(Pause::default());
        let _running = pause.enter().await;
        let pausing = tokio::spawn({
            let pause = Arc::clone(&pause);
            async move { pause.pause().await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        pause.resume();
        let outcome = tokio::time::timeout(Duration::from_secs(1), pausing).await;
        assert_eq!(outcome.unwrap().unwrap(), Err(PauseInterrupted::Resumed));
    }

    #[tokio::test]
    async fn a_waiter_is_held_until_resume() {
        let pause = Arc::new(Pause::default());
        pause.wait_resumed().await;
        pause.pause().await.unwrap();
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
