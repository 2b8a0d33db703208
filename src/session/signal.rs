//! A shutdown signal that a relay can poll on every message without taking
//! a lock.
//!
//! tokio-util's cancellation future takes the token's mutex on every poll
//! (`is_cancelled`), and the shutdown tokens are shared by every session:
//! polled in each relay's `select!`, that is a lock shared by all sessions,
//! once per message (1.2 % of the proxy's CPU under `pgbench -S` in one
//! `perf` profile). [`Signal`] polls the token's future only on its first
//! poll and after that future's waker fired; any other poll reads one
//! process-wide counter and compares a waker: the waker registered last
//! time (a task's waker does not change) stays in place until it fires.
//!
//! Measured in `perf annotate` under `pgbench -S`: a poll's cost was the
//! cache misses on the signal's own shared state, not the atomics, since a
//! session's memory is cold when its task wakes. The counter is one
//! read-mostly line that every session reads (it changes only at shutdown).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Wake-ups of any signal's token so far, in the whole process.
static WAKEUPS: AtomicU64 = AtomicU64::new(0);

/// Completes once its token is cancelled; stays complete after that.
pub struct Signal {
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    wakeup: Arc<Wakeup>,
    /// The waker last registered in `wakeup.task`; registration (two
    /// atomic read-modify-writes) is skipped while it would wake the same
    /// task and has not fired.
    registered: Option<Waker>,
    /// [`WAKEUPS`] when this signal last looked at `wakeup.fired`.
    seen: u64,
    done: bool,
}

/// The waker handed to the token's future: notes that it fired, then wakes
/// the task that polls the [`Signal`].
struct Wakeup {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        // Before the task's waker is taken: a poll that still sees the old
        // count finds that waker in place and is woken by it.
        WAKEUPS.fetch_add(1, Ordering::AcqRel);
        self.task.wake();
    }
}

impl Signal {
    /// Watches `token`.
    pub fn new(token: CancellationToken) -> Self {
        Signal {
            cancelled: Box::pin(token.cancelled_owned()),
            wakeup: Arc::new(Wakeup {
                // The first poll must reach the token: it registers there.
                fired: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
            registered: None,
            seen: 0,
            done: false,
        }
    }
}

impl Future for Signal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        // A waker still in place wakes this task when the token fires. It
        // is taken out only by a wake-up, which sets `fired` and counts in
        // WAKEUPS first: seen here, the waker is registered again before
        // `fired` is cleared.
        let wakeups = WAKEUPS.load(Ordering::Acquire);
        let in_place = self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if in_place && wakeups == self.seen {
            return Poll::Pending;
        }
        self.seen = wakeups;
        let fired = self.wakeup.fired.load(Ordering::Acquire);
        if fired || !in_place {
            // Registered before `fired` is cleared, so a wake-up in between
            // is not lost.
            self.wakeup.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if !fired || !self.wakeup.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.wakeup));
        let mut token_cx = Context::from_waker(&waker);
        if self.cancelled.as_mut().poll(&mut token_cx).is_ready() {
            self.done = true;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn completes_when_the_token_is_cancelled_and_stays_complete() {
        let token = CancellationToken::new();
        let mut signal = Signal::new(token.clone());
        // Many polls while nothing happens: each returns pending.
        for _ in 0..3 {
            let polled = tokio::time::timeout(Duration::from_millis(10), &mut signal).await;
            assert!(polled.is_err(), "completed before the cancel");
        }
        let waiter = tokio::spawn(async move {
            (&mut signal).await;
            // Polled again, it is still complete.
            (&mut signal).await;
            signal.done
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        token.cancel();
        let done = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the cancel woke the waiting task")
            .unwrap();
        assert!(done);
    }

    #[tokio::test]
    async fn another_signal_firing_leaves_this_one_pending_and_its_own_cancel_still_wakes_it() {
        let mine = CancellationToken::new();
        let other = CancellationToken::new();
        let mut signal = Signal::new(mine.clone());
        let mut other_signal = Signal::new(other.clone());
        // Both registered (their first polls reach the tokens).
        for polled in [
            tokio::time::timeout(Duration::from_millis(10), &mut signal).await,
            tokio::time::timeout(Duration::from_millis(10), &mut other_signal).await,
        ] {
            assert!(polled.is_err());
        }
        other.cancel();
        (&mut other_signal).await;
        // The process-wide count moved: this signal looks at its own flag
        // once, finds nothing, and keeps waiting.
        let polled = tokio::time::timeout(Duration::from_millis(10), &mut signal).await;
        assert!(polled.is_err(), "completed on another token's cancel");
        let waiter = tokio::spawn(async move {
            (&mut signal).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        mine.cancel();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("its own cancel woke the waiting task")
            .unwrap();
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_first_poll_completes_it() {
        let token = CancellationToken::new();
        token.cancel();
        Signal::new(token).await;
    }
}
