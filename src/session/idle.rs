//! `server.client_idle_timeout`: clients idle between transactions longer
//! than the limit are closed with FATAL 57P05, as PostgreSQL's
//! `idle_session_timeout` does.
//!
//! Idle means: the last transaction ended (ReadyForQuery "idle" reached the
//! client with nothing else in flight) and the client has sent nothing
//! since. A client inside a transaction is never idle.
//!
//! The relays only note when a client became idle (a clock read once per
//! transaction) and when it spoke again; one timer per session, armed once
//! and re-armed only when it fires, decides when to look. So a busy client
//! costs no timer work per message, and an idle one wakes its task once per
//! limit (twice at most before it is closed).

use std::future::pending;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep, sleep};

use crate::protocol::messages::ClientError;

/// SQLSTATE idle_session_timeout, as PostgreSQL sends it.
pub const SQLSTATE: &str = "57P05";
/// PostgreSQL's message for it.
pub const MESSAGE: &str = "terminating connection due to idle-session timeout";

/// One session's idle limit and its timer; disabled when the limit is zero.
#[derive(Debug)]
pub struct IdleTimeout {
    limit: Duration,
    /// Boxed once per session (the transaction session outlives many
    /// awaits); `None` when disabled, so nothing is allocated or armed.
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleTimeout {
    /// A timeout of `limit` (zero: never), armed from now.
    pub fn new(limit: Duration) -> Self {
        let timer = (!limit.is_zero()).then(|| Box::pin(sleep(limit)));
        Self { limit, timer }
    }

    /// True when a limit is set; callers skip noting idleness otherwise.
    pub fn is_enabled(&self) -> bool {
        self.timer.is_some()
    }

    /// Completes once the client has been idle for the limit, judged by
    /// `idle_since` (when it became idle; `None` while busy), which is
    /// called only when the timer fires. Never completes when disabled.
    /// Cancel-safe: the timer keeps its deadline across calls.
    pub async fn expired(&mut self, idle_since: impl Fn() -> Option<Instant>) {
        let Some(timer) = self.timer.as_mut() else {
            return pending().await;
        };
        loop {
            timer.as_mut().await;
            let now = Instant::now();
            let next = match idle_since() {
                Some(since) if now.saturating_duration_since(since) >= self.limit => return,
                Some(since) => since + self.limit,
                None => now + self.limit,
            };
            timer.as_mut().reset(next);
        }
    }
}

/// The FATAL ErrorResponse an idle client is closed with.
pub fn error() -> Bytes {
    ClientError::fatal(SQLSTATE, MESSAGE).to_bytes().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_a_limit_after_the_client_became_idle_not_after_it_was_armed() {
        let limit = Duration::from_millis(200);
        let mut idle = IdleTimeout::new(limit);
        let start = Instant::now();
        // Busy for the first 300 ms, then idle.
        let became_idle = start + Duration::from_millis(300);
        idle.expired(|| (Instant::now() >= became_idle).then_some(became_idle))
            .await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        assert!(waited < Duration::from_millis(1500), "{waited:?}");
    }

    #[tokio::test]
    async fn disabled_never_fires() {
        let mut idle = IdleTimeout::new(Duration::ZERO);
        assert!(!idle.is_enabled());
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            idle.expired(|| Some(Instant::now())),
        )
        .await;
        assert!(waited.is_err());
    }

    #[test]
    fn error_is_fatal_57p05() {
        let bytes = error();
        assert!(bytes.windows(6).any(|w| w == b"C57P05"));
        assert!(bytes.windows(6).any(|w| w == b"SFATAL"));
    }
}
