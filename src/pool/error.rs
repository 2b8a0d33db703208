//! Why a checkout failed, and what a client should be told.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use super::PoolKey;
use crate::backend::BackendError;

/// A checkout that produced no connection.
#[derive(Debug, Error)]
pub enum PoolError {
    /// Every connection of the pool stayed in use for `checkout_timeout`.
    #[error(
        "timed out after {} waiting for a server connection in pool {pool}",
        Seconds(*waited)
    )]
    CheckoutTimeout {
        /// The pool that was full.
        pool: PoolKey,
        /// How long the checkout waited: the pool's `checkout_timeout`
        /// (not the measured time, which a DBA would not recognize).
        waited: Duration,
    },
    /// A new server connection could not be opened (its slot is free again).
    #[error("could not open a server connection: {0}")]
    Connect(#[from] BackendError),
}

impl PoolError {
    /// The SQLSTATE a client gets: `53300` (too_many_connections) for a
    /// checkout timeout, `08006` (connection_failure) for a failed connect.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::CheckoutTimeout { .. } => "53300",
            Self::Connect(_) => "08006",
        }
    }

    /// The server's own ErrorResponse frame when it refused the login
    /// (e.g. the database does not exist), to pass on to the client verbatim.
    pub fn server_error(&self) -> Option<&Bytes> {
        match self {
            Self::Connect(BackendError::Refused(raw)) => Some(raw),
            _ => None,
        }
    }

    /// The node could not be reached or is shutting down (see
    /// [`BackendError::is_node_unavailable`]): a primary that fails this
    /// way may be on its way out, so a write should wait for the topology.
    pub fn is_node_unavailable(&self) -> bool {
        matches!(self, Self::Connect(error) if error.is_node_unavailable())
    }
}

/// A duration as a DBA writes it: `5s`, `2.5s`, `250ms`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis < 1000 {
            return write!(f, "{millis}ms");
        }
        // Tenths of a second, rounded: a timer that fired at 5.003 s says 5s.
        let tenths = (millis + 50) / 100;
        match tenths % 10 {
            0 => write!(f, "{}s", tenths / 10),
            t => write!(f, "{}.{t}s", tenths / 10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(waited: Duration) -> PoolError {
        PoolError::CheckoutTimeout {
            pool: PoolKey::new("127.0.0.1:5432", "appdb", "app"),
            waited,
        }
    }

    #[test]
    fn checkout_timeout_names_the_pool() {
        assert_eq!(
            timeout(Duration::from_millis(5003)).to_string(),
            "timed out after 5s waiting for a server connection in pool app@appdb on 127.0.0.1:5432"
        );
    }

    #[test]
    fn durations_read_like_config_values() {
        let s = |ms| Seconds(Duration::from_millis(ms)).to_string();
        assert_eq!(s(250), "250ms");
        assert_eq!(s(999), "999ms");
        assert_eq!(s(1000), "1s");
        assert_eq!(s(2500), "2.5s");
        assert_eq!(s(4999), "5s");
        assert_eq!(s(61_040), "61s");
    }

    #[test]
    fn sqlstates_and_server_error() {
        assert_eq!(timeout(Duration::from_secs(1)).sqlstate(), "53300");
        assert!(timeout(Duration::from_secs(1)).server_error().is_none());
        let raw = Bytes::from_static(b"E\0\0\0\x04");
        let refused = PoolError::Connect(BackendError::Refused(raw.clone()));
        assert_eq!(refused.sqlstate(), "08006");
        assert_eq!(refused.server_error(), Some(&raw));
        let timed_out = PoolError::Connect(BackendError::Timeout {
            addr: "127.0.0.1:1".into(),
        });
        assert_eq!(timed_out.sqlstate(), "08006");
        assert!(timed_out.server_error().is_none());
    }

    #[test]
    fn unreachable_or_shutting_down_nodes_are_unavailable_but_bad_logins_are_not() {
        let refused = |code: &str| {
            let body = format!("SFATAL\0C{code}\0Mno\0\0");
            let mut raw = vec![b'E'];
            raw.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            raw.extend_from_slice(body.as_bytes());
            PoolError::Connect(BackendError::Refused(Bytes::from(raw)))
        };
        assert!(refused("57P03").is_node_unavailable());
        assert!(!refused("28P01").is_node_unavailable());
        assert!(!refused("3D000").is_node_unavailable());
        let timed_out = PoolError::Connect(BackendError::Timeout {
            addr: "127.0.0.1:1".into(),
        });
        assert!(timed_out.is_node_unavailable());
        assert!(!timeout(Duration::from_secs(1)).is_node_unavailable());
    }
}
