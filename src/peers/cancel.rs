//! A CancelRequest, wherever it arrived: the session's own pod cancels on
//! the server; any other pod passes it once to the pod the key names.
//!
//! Not an oracle: the client's connection is closed before any of this
//! runs and nothing is ever sent back, so a matching key, a wrong one and
//! one for another pod look the same from outside (as with PostgreSQL).

use crate::listener::cancel::{FORWARDED, peer_of, send_cancel, send_cancel_request};
use crate::proxy::Shared;

/// What became of a CancelRequest (the `outcome` label of
/// `switchyard_cancel_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It matched a session here and was sent to that session's server.
    Cancelled,
    /// It names another pod and was passed on to it.
    Forwarded,
    /// No live session here has that key, the key names an unknown pod, or
    /// it was already forwarded once for another pod (loop guard).
    Unknown,
}

impl CancelOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Forwarded => "forwarded",
            Self::Unknown => "unknown",
        }
    }
}

/// Serves a CancelRequest for (`pid`, `secret`). Call after the client's
/// connection is closed.
pub async fn route_cancel(shared: &Shared, pid: i32, secret: &[u8]) -> CancelOutcome {
    let outcome = route(shared, pid, secret).await;
    shared.metrics.cancel_request(outcome.label());
    outcome
}

async fn route(shared: &Shared, pid: i32, secret: &[u8]) -> CancelOutcome {
    let forwarded = pid & FORWARDED != 0;
    let pid = pid & !FORWARDED;
    let own = shared.peers.own_id();
    let peer = peer_of(pid);
    if own == 0 || peer == own {
        return match shared.cancels.lookup(pid, secret) {
            Some(target) => {
                send_cancel(&target).await;
                CancelOutcome::Cancelled
            }
            None => CancelOutcome::Unknown,
        };
    }
    if forwarded {
        // Another pod believed `peer` is here: the peer lists disagree.
        // Passing it on again could loop; one hop is all a cancel gets.
        tracing::debug!(peer, "forwarded cancel request names another pod; dropped");
        return CancelOutcome::Unknown;
    }
    let Some(addr) = shared.peers.table().address_of(peer) else {
        return CancelOutcome::Unknown;
    };
    send_cancel_request(&addr.to_string(), pid | FORWARDED, secret).await;
    CancelOutcome::Forwarded
}
