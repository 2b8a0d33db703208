//! One pool's idle connections, free checkout permits and waiting
//! checkouts, under one lock.
//!
//! Written here rather than taken from `tokio::sync::Semaphore` plus a
//! `tokio::time::timeout` per waiter, because on the hot path of a busy pool
//! (more clients than connections, so most checkouts wait) those cost a
//! semaphore lock, an idle-stack lock, a timer registration and removal, and
//! a validation of the connection per transaction. Here a checkin hands its
//! connection (with its permit) straight to the oldest waiter: one lock on
//! each side, no timer per waiter (one watchdog task per pool sleeps until
//! the earliest deadline), and a connection that never went idle is not
//! re-checked.
//!
//! Invariant: while a checkout waits without a grant, no permit is free
//! (every release goes to the oldest such waiter first), so a checkout that
//! finds a free permit never overtakes a waiter.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a waiting checkout was given.
#[derive(Debug)]
pub(super) enum Grant<T> {
    /// A permit and a connection another checkout just gave back.
    Item(T),
    /// A permit only: take an idle connection or open one.
    Permit,
    /// Nothing: the deadline passed first.
    Expired,
}

/// What [`Queue::enter`] found.
pub(super) enum Entry<'a, T: Send + 'static> {
    /// A permit was free; with the most recently used idle item, if any.
    Ready(Option<T>),
    /// Every permit is taken: wait for a [`Grant`].
    Wait(Wait<'a, T>),
}

/// Idle items (most recently used last), permits and waiters.
#[derive(Debug)]
pub(super) struct Queue<T> {
    state: Mutex<State<T>>,
    /// Wakes the watchdog when a waiter's deadline is earlier than the one
    /// it sleeps until (after `checkout_timeout` shrank).
    rearm: Notify,
}

#[derive(Debug)]
struct State<T> {
    idle: Vec<T>,
    /// Permits nobody holds.
    free: usize,
    /// Permits to retire as they come back (the pool shrank while they
    /// were held).
    owed: usize,
    /// Oldest first; granted waiters stay until they claim their grant.
    waiters: VecDeque<Waiter<T>>,
    next_ticket: u64,
    /// When the watchdog task (if one runs) wakes next.
    watchdog: Option<Instant>,
}

#[derive(Debug)]
struct Waiter<T> {
    ticket: u64,
    deadline: Instant,
    waker: Waker,
    grant: Option<Grant<T>>,
}

impl<T: Send + 'static> Queue<T> {
    /// An empty queue with `permits` free permits.
    pub fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                idle: Vec::new(),
                free: permits,
                owed: 0,
                waiters: VecDeque::new(),
                next_ticket: 0,
                watchdog: None,
            }),
            rearm: Notify::new(),
        })
    }

    /// Takes a free permit (and the most recently used idle item), or
    /// queues for one until `deadline`.
    pub fn enter(self: &Arc<Self>, deadline: Instant) -> Entry<'_, T> {
        let mut state = self.lock();
        if state.free > 0 {
            state.free -= 1;
            return Entry::Ready(state.idle.pop());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiters.push_back(Waiter {
            ticket,
            deadline,
            waker: Waker::noop().clone(),
            grant: None,
        });
        match state.watchdog {
            // Outside a runtime nothing could await the wait either; no
            // panic here, with the waiter already queued.
            None => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    state.watchdog = Some(deadline);
                    runtime.spawn(watchdog(Arc::clone(self)));
                }
            }
            Some(wakes) if deadline < wakes => self.rearm.notify_one(),
            Some(_) => {}
        }
        Entry::Wait(Wait {
            queue: self,
            ticket,
            done: false,
        })
    }

    /// Takes a free permit without waiting, if no checkout waits.
    pub fn try_permit(&self) -> bool {
        let mut state = self.lock();
        let free = state.free > 0;
        if free {
            state.free -= 1;
        }
        free
    }

    /// With a permit held: the most recently used idle item.
    pub fn pop_idle(&self) -> Option<T> {
        self.lock().idle.pop()
    }

    /// Gives back a permit together with `item`: to the oldest waiter, or
    /// onto the idle stack.
    pub fn give_back(&self, item: T) {
        let waker = {
            let mut state = self.lock();
            state.give_back(item)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives back a permit without an item (its connection was closed, or
    /// never opened).
    pub fn release(&self) {
        let waker = self.lock().release();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Puts `item` on the idle stack without touching permits.
    pub fn push_idle(&self, item: T) {
        self.lock().idle.push(item);
    }

    /// Adds `n` permits (the pool grew): waiters first.
    pub fn add_permits(&self, n: usize) {
        let mut wakers = Vec::new();
        {
            let mut state = self.lock();
            for _ in 0..n {
                if state.owed > 0 {
                    state.owed -= 1;
                } else if let Some(waker) = state.release() {
                    wakers.push(waker);
                }
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Retires `n` permits (the pool shrank): free ones now, held ones as
    /// they come back.
    pub fn forget_permits(&self, n: usize) {
        let mut state = self.lock();
        let now = n.min(state.free);
        state.free -= now;
        state.owed += n - now;
    }

    /// Permits free now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// How many items are idle.
    #[cfg(test)]
    pub fn idle_len(&self) -> usize {
        self.lock().idle.len()
    }

    /// Removes the idle items `verdict` gives a reason to close, visiting
    /// the longest idle first; the rest keep their order.
    pub fn extract_idle<R>(&self, mut verdict: impl FnMut(&T) -> Option<R>) -> Vec<(T, R)> {
        let mut state = self.lock();
        let capacity = state.idle.len();
        let all = std::mem::replace(&mut state.idle, Vec::with_capacity(capacity));
        let mut closing = Vec::new();
        for item in all {
            match verdict(&item) {
                Some(reason) => closing.push((item, reason)),
                None => state.idle.push(item),
            }
        }
        closing
    }

    /// `describe` of every idle item.
    pub fn describe_idle<D>(&self, describe: impl FnMut(&T) -> D) -> Vec<D> {
        self.lock().idle.iter().map(describe).collect()
    }

    /// Removes every idle item.
    pub fn take_idle(&self) -> Vec<T> {
        std::mem::take(&mut self.lock().idle)
    }

    /// Expires the waiters whose deadline has passed; the earliest deadline
    /// left, or `None` (and the watchdog stops) when nobody waits.
    fn expire(&self, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        let mut state = self.lock();
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        for waiter in state.waiters.iter_mut().filter(|w| w.grant.is_none()) {
            if waiter.deadline <= now {
                waiter.grant = Some(Grant::Expired);
                wakers.push(waiter.waker.clone());
            } else {
                next = Some(next.map_or(waiter.deadline, |n| n.min(waiter.deadline)));
            }
        }
        state.watchdog = next;
        (wakers, next)
    }

    // Every critical section is a few field updates or one pass over the
    // idle stack, with no await and no user code that could panic halfway:
    // a poisoned lock still guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> State<T> {
    /// The waker of the oldest waiter without a grant, after granting it
    /// `grant`; `Err(grant)` when nobody waits.
    fn grant(&mut self, grant: Grant<T>) -> Result<Waker, Grant<T>> {
        match self.waiters.iter_mut().find(|w| w.grant.is_none()) {
            Some(waiter) => {
                waiter.grant = Some(grant);
                Ok(waiter.waker.clone())
            }
            None => Err(grant),
        }
    }

    fn give_back(&mut self, item: T) -> Option<Waker> {
        if self.owed > 0 {
            self.owed -= 1;
            self.idle.push(item);
            return None;
        }
        match self.grant(Grant::Item(item)) {
            Ok(waker) => Some(waker),
            Err(Grant::Item(item)) => {
                self.idle.push(item);
                self.free += 1;
                None
            }
            Err(_) => None,
        }
    }

    fn release(&mut self) -> Option<Waker> {
        if self.owed > 0 {
            self.owed -= 1;
            return None;
        }
        match self.grant(Grant::Permit) {
            Ok(waker) => Some(waker),
            Err(_) => {
                self.free += 1;
                None
            }
        }
    }
}

/// A permit held; given back when dropped unless handed on.
#[must_use]
pub(super) struct Permit<'a, T: Send + 'static> {
    queue: &'a Queue<T>,
    held: bool,
}

impl<'a, T: Send + 'static> Permit<'a, T> {
    /// A free permit, if one is free now and nobody waits.
    pub fn try_take(queue: &'a Queue<T>) -> Option<Self> {
        queue.try_permit().then_some(Self { queue, held: true })
    }

    /// Takes responsibility for a permit already taken (by
    /// [`Queue::enter`] or a [`Grant`]).
    pub fn adopt(queue: &'a Queue<T>) -> Self {
        Self { queue, held: true }
    }

    /// Gives the permit back with `item` (see [`Queue::give_back`]).
    pub fn give_back(mut self, item: T) {
        self.held = false;
        self.queue.give_back(item);
    }

    /// The permit stays taken; its new holder gives it back.
    pub fn hand_on(mut self) {
        self.held = false;
    }
}

impl<T: Send + 'static> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if self.held {
            self.queue.release();
        }
    }
}

/// Expires waiters at their deadlines; runs while anyone waits.
async fn watchdog<T: Send + 'static>(queue: Arc<Queue<T>>) {
    let mut gone = WatchdogGone {
        queue: &queue,
        stopped: false,
    };
    loop {
        let (expired, next) = queue.expire(Instant::now());
        expired.into_iter().for_each(Waker::wake);
        let Some(next) = next else {
            // `expire` marked the watchdog gone under the lock.
            gone.stopped = true;
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = queue.rearm.notified() => {}
        }
    }
}

/// Marks the watchdog gone if its task is dropped while waiters remain
/// (its runtime shut down), so the next waiter starts another.
struct WatchdogGone<'a, T> {
    queue: &'a Queue<T>,
    stopped: bool,
}

impl<T> Drop for WatchdogGone<'_, T> {
    fn drop(&mut self) {
        if !self.stopped {
            let mut state = self
                .queue
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.watchdog = None;
        }
    }
}

/// A queued checkout; resolves to its [`Grant`]. Dropped before it
/// resolves, it passes on whatever it was granted.
pub(super) struct Wait<'a, T: Send + 'static> {
    queue: &'a Arc<Queue<T>>,
    ticket: u64,
    done: bool,
}

impl<T: Send + 'static> Future for Wait<'_, T> {
    type Output = Grant<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant<T>> {
        let ticket = self.ticket;
        let mut state = self.queue.lock();
        // Granted waiters are the oldest: near the front.
        let Some(at) = state.waiters.iter().position(|w| w.ticket == ticket) else {
            // Invariant: only `poll` (after a grant) and `drop` remove a
            // waiter, and neither runs again once done.
            drop(state);
            self.done = true;
            return Poll::Ready(Grant::Expired);
        };
        if state.waiters[at].grant.is_none() {
            let waiter = &mut state.waiters[at];
            if !waiter.waker.will_wake(cx.waker()) {
                waiter.waker.clone_from(cx.waker());
            }
            return Poll::Pending;
        }
        let grant = state.waiters.remove(at).and_then(|w| w.grant);
        drop(state);
        self.done = true;
        Poll::Ready(grant.unwrap_or(Grant::Expired))
    }
}

impl<T: Send + 'static> Drop for Wait<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waker = {
            let mut state = self.queue.lock();
            let Some(at) = state.waiters.iter().position(|w| w.ticket == self.ticket) else {
                return;
            };
            match state.waiters.remove(at).and_then(|w| w.grant) {
                Some(Grant::Item(item)) => state.give_back(item),
                Some(Grant::Permit) => state.release(),
                Some(Grant::Expired) | None => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn ready<T: Send + 'static>(entry: Entry<'_, T>) -> Option<T> {
        match entry {
            Entry::Ready(item) => item,
            Entry::Wait(_) => panic!("expected a free permit"),
        }
    }

    fn waiting<T: Send + 'static>(entry: Entry<'_, T>) -> Wait<'_, T> {
        match entry {
            Entry::Wait(wait) => wait,
            Entry::Ready(_) => panic!("expected to wait"),
        }
    }

    #[tokio::test]
    async fn a_given_back_item_goes_to_the_oldest_waiter_first() {
        let queue = Queue::<u32>::new(1);
        assert_eq!(ready(queue.enter(later(5_000))), None);
        let first = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move {
                match waiting(queue.enter(later(5_000))).await {
                    Grant::Item(item) => item,
                    other => panic!("first waiter got {other:?}"),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { matches!(waiting(queue.enter(later(5_000))).await, Grant::Permit) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.give_back(7);
        assert_eq!(first.await.unwrap(), 7);
        assert_eq!(queue.idle_len(), 0, "handed over, not idle");
        queue.release();
        assert!(second.await.unwrap());
        assert_eq!(queue.available(), 0);
        queue.release();
        assert_eq!(queue.available(), 1);
    }

    #[tokio::test]
    async fn without_waiters_an_item_goes_idle_and_the_next_entry_takes_it() {
        let queue = Queue::<u32>::new(2);
        assert_eq!(ready(queue.enter(later(100))), None);
        queue.give_back(1);
        assert_eq!(queue.idle_len(), 1);
        assert_eq!(queue.available(), 2);
        assert_eq!(ready(queue.enter(later(100))), Some(1));
        assert!(queue.try_permit());
        assert!(!queue.try_permit());
    }

    #[tokio::test]
    async fn a_waiter_expires_at_its_deadline() {
        let queue = Queue::<u32>::new(1);
        assert!(queue.try_permit());
        let started = Instant::now();
        let grant = waiting(queue.enter(later(150))).await;
        let waited = started.elapsed();
        assert!(matches!(grant, Grant::Expired), "{grant:?}");
        assert!(
            waited >= Duration::from_millis(140) && waited < Duration::from_millis(1_000),
            "{waited:?}"
        );
        // A later, shorter deadline wakes the watchdog early.
        let long = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { waiting(queue.enter(later(5_000))).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        assert!(matches!(
            waiting(queue.enter(later(100))).await,
            Grant::Expired
        ));
        assert!(started.elapsed() < Duration::from_millis(1_000));
        long.abort();
        let _ = long.await;
        assert_eq!(queue.available(), 0, "the holder still has its permit");
    }

    #[test]
    fn a_watchdog_lost_with_its_runtime_is_started_again() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let queue = Queue::<u32>::new(1);
        let first = runtime();
        first.block_on(async {
            assert!(queue.try_permit());
            let wait = waiting(queue.enter(later(60_000)));
            // The watchdog starts and sleeps until the deadline a minute on.
            tokio::task::yield_now().await;
            drop(wait);
        });
        drop(first);
        runtime().block_on(async {
            let wait = waiting(queue.enter(later(100)));
            let grant = tokio::time::timeout(Duration::from_secs(5), wait).await;
            assert!(matches!(grant, Ok(Grant::Expired)), "{grant:?}");
        });
    }

    #[tokio::test]
    async fn a_waiter_dropped_after_its_grant_passes_the_grant_on() {
        let queue = Queue::<u32>::new(1);
        assert!(queue.try_permit());
        let dropped = waiting(queue.enter(later(5_000)));
        let next = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { waiting(queue.enter(later(5_000))).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.give_back(9);
        drop(dropped);
        match next.await.unwrap() {
            Grant::Item(9) => {}
            other => panic!("the next waiter got {other:?}"),
        }
        // Dropped with nobody behind it: the item goes idle, the permit free.
        let dropped = waiting(queue.enter(later(5_000)));
        queue.give_back(3);
        drop(dropped);
        assert_eq!(queue.idle_len(), 1);
        assert_eq!(queue.available(), 1);
    }

    #[tokio::test]
    async fn permits_grow_to_waiters_and_shrink_as_they_come_back() {
        let queue = Queue::<u32>::new(1);
        assert!(queue.try_permit());
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { matches!(waiting(queue.enter(later(5_000))).await, Grant::Permit) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.add_permits(2);
        assert!(waiter.await.unwrap());
        assert_eq!(queue.available(), 1);
        queue.forget_permits(3);
        assert_eq!(queue.available(), 0);
        // Two permits are held; both retire as they come back.
        queue.give_back(4);
        queue.release();
        assert_eq!(queue.available(), 0);
        assert_eq!(
            queue.idle_len(),
            1,
            "a retired permit's item still goes idle"
        );
    }
}
