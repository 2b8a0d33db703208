//! Error type for the local test cluster.

use std::io;
use std::time::Duration;

/// Everything that can go wrong while setting up, using or tearing down a
/// [`LocalCluster`](super::LocalCluster).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL installation (a directory containing `initdb`) was found.
    #[error(
        "no PostgreSQL binaries found: looked for `initdb` on PATH, in `pg_config --bindir` \
         and in /usr/lib/postgresql/*/bin ({detail})"
    )]
    BinariesNotFound {
        /// What was tried and why each candidate was rejected.
        detail: String,
    },

    /// An external command could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line (passwords redacted).
        command: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// An external command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    CommandFailed {
        /// The command line (passwords redacted).
        command: String,
        /// The exit status as displayed by the OS.
        status: String,
        /// The last lines of the command's stderr (or stdout if stderr was empty).
        stderr_tail: String,
    },

    /// A filesystem or other I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// The unprivileged OS user for running PostgreSQL as root could not be
    /// found or created.
    #[error("could not set up OS user `{user}`: {reason}")]
    OsUser {
        /// The OS user name.
        user: String,
        /// Why it failed.
        reason: String,
    },

    /// A PostgreSQL server process exited or misbehaved while starting.
    #[error(
        "PostgreSQL node `{node}` failed to start: {reason}\n--- server log tail ---\n{log_tail}"
    )]
    StartFailed {
        /// The node name (`primary`, `replica1`, ...).
        node: String,
        /// What went wrong.
        reason: String,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long was waited.
        waited: Duration,
    },

    /// The caller passed an invalid argument or cluster specification.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClusterError {
    /// Builds an [`ClusterError::Io`] with the given context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The last `max_lines` lines of `text` (at most ~4 KiB), trimmed.
pub(crate) fn tail(text: &str, max_lines: usize) -> String {
    let text = text.trim_end();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    let joined = lines[start..].join("\n");
    const MAX_BYTES: usize = 4096;
    if joined.len() <= MAX_BYTES {
        return joined;
    }
    let mut cut = joined.len() - MAX_BYTES;
    while !joined.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &joined[cut..])
}
