//! The stack of idle connections of one pool.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::backend::ServerConnection;

/// A connection waiting in the pool, and since when.
#[derive(Debug)]
pub(super) struct IdleConnection {
    /// The connection, idle (last ReadyForQuery 'I').
    pub conn: ServerConnection,
    /// When it was checked in or opened.
    pub since: Instant,
}

/// Idle connections, most recently used on top (LIFO): the warmest
/// connection is reused first and the coldest ones age out at the bottom,
/// so a pool shrinks back after a burst.
///
/// A std mutex around a `Vec`: every critical section is one push, one pop
/// or one pass of the reaper over this pool's idle connections, with no
/// await inside. It is per pool, so sessions of different pools never
/// contend, and an uncontended std mutex costs less than the atomics a
/// lock-free stack would need.
#[derive(Debug, Default)]
pub(super) struct IdleList {
    stack: Mutex<Vec<IdleConnection>>,
}

impl IdleList {
    /// Puts `conn` on top, idle since `now`.
    pub fn push(&self, conn: ServerConnection, now: Instant) {
        let idle = IdleConnection { conn, since: now };
        self.lock().push(idle);
    }

    /// Takes the most recently used connection.
    pub fn pop(&self) -> Option<IdleConnection> {
        self.lock().pop()
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes the connections `verdict` gives a reason to close, visiting
    /// the longest idle first; the rest keep their order.
    pub fn extract<R>(
        &self,
        mut verdict: impl FnMut(&IdleConnection) -> Option<R>,
    ) -> Vec<(IdleConnection, R)> {
        let mut stack = self.lock();
        let capacity = stack.len();
        let all = std::mem::replace(&mut *stack, Vec::with_capacity(capacity));
        let mut closing = Vec::new();
        for idle in all {
            match verdict(&idle) {
                Some(reason) => closing.push((idle, reason)),
                None => stack.push(idle),
            }
        }
        closing
    }

    /// `(server pid, opened at, idle since)` of every idle connection.
    pub fn describe(&self) -> Vec<(i32, Instant, Instant)> {
        self.lock()
            .iter()
            .map(|idle| (idle.conn.pid, idle.conn.created, idle.since))
            .collect()
    }

    /// Removes every connection.
    pub fn take_all(&self) -> Vec<IdleConnection> {
        std::mem::take(&mut *self.lock())
    }

    // A panic while the lock is held cannot leave a Vec half-pushed, so a
    // poisoned lock still guards a valid stack.
    fn lock(&self) -> MutexGuard<'_, Vec<IdleConnection>> {
        self.stack.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
