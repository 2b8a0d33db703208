//! Why a server connection could not be opened.

use bytes::Bytes;
use thiserror::Error;

use crate::protocol::frame::HEADER_LEN;

use crate::protocol::ProtocolError;
use crate::protocol::io::ReadError;
use crate::protocol::messages::ClientError;

/// Failure to open or log in a server connection.
#[derive(Debug, Error)]
pub enum BackendError {
    /// TCP connect failed.
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Connect and login did not finish within `server.connect_timeout`.
    #[error("timed out connecting to server {addr}")]
    Timeout {
        /// The node's address.
        addr: String,
    },
    /// The server connection failed during login.
    #[error("server {addr} closed the connection during login: {source}")]
    Read {
        /// The node's address.
        addr: String,
        /// What went wrong.
        source: ReadError,
    },
    /// The server refused the login with an ErrorResponse, kept verbatim for the client.
    #[error("server refused the login")]
    Refused(Bytes),
    /// The server asked for a password and none is configured for the user.
    #[error("server {addr} requires a password for user {user:?} and none is configured")]
    NoPassword {
        /// The node's address.
        addr: String,
        /// The role.
        user: String,
    },
    /// The server asked for a method the known verifier cannot answer: md5
    /// or cleartext with only a SCRAM verifier, anything but md5 with only
    /// an md5 hash.
    #[error(
        "server {addr} asks for a password for user {user:?}, but only a stored verifier is known (the node must use scram-sha-256 for a SCRAM verifier, md5 for an md5 hash)"
    )]
    VerifierOnly {
        /// The node's address.
        addr: String,
        /// The role.
        user: String,
    },
    /// TLS to the server was required and could not be established or verified.
    #[error("TLS with server {addr} failed: {reason}")]
    Tls {
        /// The node's address.
        addr: String,
        /// What failed (e.g. the certificate does not match the host name).
        reason: String,
    },
    /// The server asked for an authentication method the proxy cannot do.
    #[error("server {addr} requested unsupported authentication method {code}")]
    UnsupportedAuth {
        /// The node's address.
        addr: String,
        /// The AuthenticationRequest code.
        code: i32,
    },
    /// The SCRAM exchange with the server failed (wrong configured password, or a bad server).
    #[error("SCRAM authentication with server {addr} failed: {reason}")]
    Scram {
        /// The node's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The server sent something it should not have during login.
    #[error("server {addr} sent an unexpected message during login: {reason}")]
    Protocol {
        /// The node's address.
        addr: String,
        /// What was wrong.
        reason: ProtocolError,
    },
}

impl BackendError {
    /// The node could not be reached, or refused the login only because it
    /// is starting up, shutting down or in recovery without hot standby
    /// (`57P03`, cannot_connect_now): it may be failing over, unlike a
    /// login refused for a bad password or an unknown database.
    pub fn is_node_unavailable(&self) -> bool {
        match self {
            Self::Refused(raw) => {
                crate::protocol::messages::error_code(raw.get(HEADER_LEN..).unwrap_or_default())
                    == Some(b"57P03")
            }
            Self::Connect { .. } | Self::Timeout { .. } | Self::Read { .. } | Self::Tls { .. } => {
                true
            }
            _ => false,
        }
    }

    /// The ErrorResponse a client gets for this failure.
    pub fn to_client(&self) -> Bytes {
        match self {
            Self::Refused(raw) => raw.clone(),
            Self::NoPassword { .. }
            | Self::VerifierOnly { .. }
            | Self::Scram { .. }
            | Self::UnsupportedAuth { .. } => ClientError::fatal("28000", self.to_string())
                .to_bytes()
                .freeze(),
            _ => ClientError::fatal("08006", self.to_string())
                .to_bytes()
                .freeze(),
        }
    }
}
