//! Error type of the Patroni watcher.

use std::time::Duration;

/// What can go wrong while asking Patroni for the cluster.
#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    /// `patroni.urls` is empty.
    #[error("patroni.urls is empty: the Patroni watcher needs at least one member's REST API URL")]
    NoUrls,

    /// A `patroni.urls` entry is not a usable `http://host:port` URL.
    #[error("patroni.urls entry {url:?} is not usable: {reason}")]
    BadUrl {
        /// The configured URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// The request did not complete in `patroni.request_timeout`.
    #[error("GET {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },

    /// Connecting or sending failed (refused, reset, DNS, ...).
    #[error("GET {url} failed: {source}")]
    Request {
        /// The URL asked.
        url: String,
        /// The client error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },

    /// Patroni answered with a status other than 200.
    #[error("GET {url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The body could not be read or exceeded the size limit.
    #[error("reading the answer of GET {url} failed: {reason}")]
    Body {
        /// The URL asked.
        url: String,
        /// What went wrong (includes the size limit when exceeded).
        reason: String,
    },

    /// The body is not a Patroni `/cluster` document.
    #[error("the answer is not a Patroni /cluster document: {0}")]
    Parse(#[source] serde_json::Error),
}
