//! Errors in bytes a peer sent.

use thiserror::Error;

/// A peer sent bytes that do not form a valid protocol message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A frame's length field is below the 4 bytes the field itself takes.
    #[error("invalid message length {0}")]
    InvalidLength(u32),
    /// A frame is larger than `server.max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared size of the message, length field included.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The startup packet's length is outside what PostgreSQL accepts.
    #[error("invalid startup packet length {0}")]
    InvalidStartupLength(u32),
    /// The startup packet names a protocol version the proxy does not speak.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// The startup packet's parameter list is malformed.
    #[error("invalid startup packet layout: {0}")]
    InvalidStartupPacket(&'static str),
    /// A message body is shorter than its fields require.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}
