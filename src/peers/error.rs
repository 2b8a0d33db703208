//! Why peer discovery could not produce a list this round.

use thiserror::Error;

/// A failed discovery step; the previous list stays in force.
#[derive(Debug, Error)]
pub enum PeersError {
    /// The DNS resolver could not be built (unreadable resolv.conf).
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// The headless Service's name did not resolve.
    #[error("cannot resolve peers.dns {name:?}: {reason}")]
    Dns {
        /// `peers.dns`.
        name: String,
        /// The resolver's message.
        reason: String,
    },
    /// A `peers.static` host name did not resolve.
    #[error("cannot resolve peers.static entry {address:?}: {source}")]
    Static {
        /// The entry's `host:port`.
        address: String,
        /// The resolver error.
        source: std::io::Error,
    },
}
