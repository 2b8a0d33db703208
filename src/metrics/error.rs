//! Why the metrics could not be set up or exported.

use thiserror::Error;

/// A metrics failure. Registration fails only on a programming error (two
/// metrics with one name); encoding only if a collector misbehaves.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// A collector could not be created or registered.
    #[error("cannot register metric: {0}")]
    Register(#[source] prometheus::Error),
    /// The registry could not be rendered in the text format.
    #[error("cannot encode metrics: {0}")]
    Encode(#[source] prometheus::Error),
}
