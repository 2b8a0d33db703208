//! Taking connections back: to the idle stack, or closed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Pool;
use super::health;
use super::idle::IdleConnection;
use super::lifecycle::CloseReason;
use super::stats::bump;
use crate::backend::ServerConnection;

impl Pool {
    /// A checked-out connection comes back idle, with its permit: to the
    /// oldest waiting checkout or onto the idle stack, unless it has
    /// reached `max_lifetime` or fails the liveness check (unread server
    /// bytes, a closed socket). `now` serves the lifetime check and the
    /// idle stamp.
    pub(super) fn checkin_connection(&self, mut conn: Box<ServerConnection>, now: Instant) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        if self.outlived(conn.created, now) {
            self.close(conn, CloseReason::Lifetime);
        } else if self.node.over_budget() {
            // The budget share shrank (a peer joined): close down to it.
            self.close(conn, CloseReason::Discarded);
        } else if let Err(broken) = health::check_alive(&conn) {
            // Not idle after all (unread bytes: whatever they are, the next
            // transaction must not read them), or closed. Checked here too
            // because a waiting checkout takes the connection as it is.
            self.close(conn, CloseReason::Broken(broken));
        } else {
            // A large result or request grew the buffers; idle, the
            // connection keeps only the usual size.
            conn.shed_large_buffers();
            let idle = IdleConnection { conn, since: now };
            if self.node.has_waiters() {
                // A checkout of this pool waiting on the node's budget (it
                // holds a permit already) can take this connection instead
                // of opening one.
                self.queue.push_idle(idle);
                self.node.wake();
                self.queue.release();
            } else {
                self.queue.give_back(idle);
            }
            return;
        }
        self.queue.release();
    }

    /// A checked-out connection in an unknown state: closed, and its
    /// permit given back.
    pub(super) fn discard_connection(&self, conn: Box<ServerConnection>) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.close(conn, CloseReason::Discarded);
        self.queue.release();
    }

    /// Closes a connection that holds a unit of `open`, and gives it back.
    pub(super) fn close(&self, conn: Box<ServerConnection>, reason: CloseReason) {
        self.retire(conn, reason);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.node.give_back();
    }

    /// Counts, logs and closes `conn`; the caller settles `open`.
    pub(super) fn retire(&self, conn: Box<ServerConnection>, reason: CloseReason) {
        bump(reason.counter(&self.counters));
        match &reason {
            CloseReason::Broken(_) => {
                tracing::info!(pool = %self.key, pid = conn.pid, %reason, "closing server connection");
            }
            _ => {
                tracing::debug!(pool = %self.key, pid = conn.pid, %reason, "closing server connection");
            }
        }
        health::terminate(conn);
    }
}
