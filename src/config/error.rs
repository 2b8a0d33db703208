//! Why a configuration was refused.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration that cannot be used, naming the file, variable or key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A `SWITCHYARD_*` environment variable could not be applied.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key parsed but its value cannot work.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `cluster.primary`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
