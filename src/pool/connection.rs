//! A server connection on loan from a pool.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use super::Pool;
use crate::backend::ServerConnection;

/// A server connection checked out of a [`Pool`]; derefs to the
/// [`ServerConnection`].
///
/// When handed out it is logged in and idle (last ReadyForQuery 'I', no
/// unread bytes), and the server had neither closed it nor sent anything
/// on it while it waited in the pool, as far as the runtime has seen.
///
/// Give it back with [`checkin`](Self::checkin) when it is idle again, or
/// [`discard`](Self::discard) when its state is unknown. Dropping it
/// without either discards it: an unfinished transaction never reaches the
/// next session.
pub struct PooledConnection {
    /// Present from checkout until checkin, discard or drop.
    conn: Option<Box<ServerConnection>>,
    /// Holds one of the pool's permits until checkin, discard or drop
    /// give it back (with the connection, or after closing it).
    pool: Arc<Pool>,
    lent_at: Instant,
}

impl PooledConnection {
    pub(super) fn new(conn: Box<ServerConnection>, pool: Arc<Pool>, lent_at: Instant) -> Self {
        Self {
            conn: Some(conn),
            pool,
            lent_at,
        }
    }

    /// When the checkout handed it out (the clock read the checkout made
    /// anyway, for a caller timing its use).
    pub fn lent_at(&self) -> Instant {
        self.lent_at
    }

    /// The pool this connection belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the connection to the pool for reuse. The caller vouches
    /// that it is idle (ReadyForQuery 'I' was the last message) with no
    /// session state left that the next user must not see. A connection
    /// past `max_lifetime` is closed instead.
    pub fn checkin(self) {
        self.checkin_at(Instant::now());
    }

    /// [`Self::checkin`] for a caller that has just read the clock: `now`
    /// stamps when the connection went idle.
    pub fn checkin_at(mut self, now: Instant) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin_connection(conn, now);
        }
    }

    /// Closes the connection (its state is broken or unknown) and frees
    /// its slot in the pool.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.discard_connection(conn);
        }
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.discard_connection(conn);
        }
    }
}

impl Deref for PooledConnection {
    type Target = ServerConnection;

    fn deref(&self) -> &ServerConnection {
        // Invariant: only checkin, discard and drop take the connection,
        // and the first two consume `self`.
        self.conn
            .as_deref()
            .expect("a PooledConnection holds its connection until checkin, discard or drop")
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut ServerConnection {
        self.conn
            .as_deref_mut()
            .expect("a PooledConnection holds its connection until checkin, discard or drop")
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("pool", &self.pool.key())
            .field("pid", &self.conn.as_ref().map(|c| c.pid))
            .finish()
    }
}
