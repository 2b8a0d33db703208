//! A connection waiting in its pool.

use std::time::Instant;

use crate::backend::ServerConnection;

/// A connection waiting in the pool, and since when.
///
/// Idle connections are a stack in the pool's [`Queue`](super::queue::Queue),
/// most recently used on top (LIFO): the warmest connection is reused first
/// and the coldest ones age out at the bottom, so a pool shrinks back after
/// a burst.
#[derive(Debug)]
pub(super) struct IdleConnection {
    /// The connection, idle (last ReadyForQuery 'I'). Boxed once when
    /// opened: checkouts, hand-overs and checkins move a pointer, not the
    /// connection, and a request's future holds one pointer for it.
    pub conn: Box<ServerConnection>,
    /// When it was checked in or opened.
    pub since: Instant,
}
