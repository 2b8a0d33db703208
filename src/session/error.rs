//! Why a client session ended early, and what the client is told.

use bytes::Bytes;
use thiserror::Error;

use super::scram::ScramError;
use crate::backend::BackendError;
use crate::protocol::ProtocolError;
use crate::protocol::io::ReadError;
use crate::protocol::messages::ClientError;
use crate::router::target::NoPrimary;
use crate::tls::{CertUserError, TlsError};

/// A session that could not start or had to stop.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The client's socket failed or closed; nobody to tell.
    #[error("client connection lost: {0}")]
    ClientGone(String),
    /// The client sent bytes that are not valid protocol.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The SCRAM exchange was malformed or asked for something unsupported.
    #[error("{0}")]
    Auth(#[from] ScramError),
    /// Wrong password or unknown user (deliberately indistinguishable).
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    /// The client sent a message that does not fit the protocol state.
    #[error("expected {expected}, received message type {tag:?}")]
    UnexpectedMessage {
        /// What the protocol state called for.
        expected: &'static str,
        /// The tag received, as a character.
        tag: u8,
    },
    /// Startup and authentication did not finish within `server.startup_timeout`.
    #[error("canceling authentication due to timeout")]
    StartupTimeout,
    /// The server connection could not be opened.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// No writable primary appeared within `routing.failover_timeout`.
    #[error("{0}")]
    NoPrimary(#[from] NoPrimary),
    /// The TLS handshake failed (nothing can be told to the client).
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// `tls.mode = "require"` and the client did not ask for TLS.
    #[error(
        "TLS is required: this server only accepts encrypted connections (connect with sslmode=require)"
    )]
    TlsRequired,
    /// `server.max_client_connections` clients are connected already.
    #[error("sorry, too many clients already (server.max_client_connections = {0})")]
    TooManyClients(usize),
    /// The user's `max_connections` clients are connected already.
    #[error("too many connections for role \"{0}\"")]
    TooManyForUser(String),
    /// The client certificate does not name the user (`tls.client_cert_user`).
    #[error("{0}")]
    ClientCertificate(#[from] CertUserError),
    /// Session pooling: this pod's share of
    /// `pool.max_server_connections_per_node` stayed in use for
    /// `pool.checkout_timeout`.
    #[error(
        "no server connection to {node} within {waited:?}: this proxy's share of pool.max_server_connections_per_node ({share}) is in use"
    )]
    NodeBudget {
        /// The node.
        node: String,
        /// How long the session waited.
        waited: std::time::Duration,
        /// The share in force.
        share: usize,
    },
    /// Auth passthrough could not fetch the user's verifier.
    #[error("could not look up user \"{user}\" for authentication: {reason}")]
    AuthLookup {
        /// The client's user.
        user: String,
        /// What failed.
        reason: String,
    },
}

impl From<std::io::Error> for SessionError {
    fn from(error: std::io::Error) -> Self {
        Self::ClientGone(error.to_string())
    }
}

impl From<ReadError> for SessionError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Protocol(e) => Self::Protocol(e),
            ReadError::Io(e) => Self::ClientGone(e.to_string()),
            ReadError::Closed => Self::ClientGone("closed".into()),
        }
    }
}

impl SessionError {
    /// The ErrorResponse to send before closing, or `None` when the client is gone.
    pub fn to_client(&self) -> Option<Bytes> {
        let fatal =
            |code, message: String| Some(ClientError::fatal(code, message).to_bytes().freeze());
        match self {
            Self::ClientGone(_) => None,
            Self::Protocol(ProtocolError::TooLarge { size, limit }) => fatal(
                "54000",
                format!("message of {size} bytes exceeds server.max_message_size ({limit} bytes)"),
            ),
            Self::Protocol(ProtocolError::UnsupportedProtocol { major, minor }) => fatal(
                "0A000",
                format!("unsupported frontend protocol {major}.{minor}: switchyard supports 3.0"),
            ),
            Self::Protocol(e) => fatal("08P01", e.to_string()),
            Self::Auth(ScramError::ChannelBindingUnsupported)
            | Self::Auth(ScramError::ChannelBindingMismatch(_))
            | Self::TlsRequired
            | Self::ClientCertificate(_) => fatal("28000", self.to_string()),
            Self::TooManyClients(_) | Self::TooManyForUser(_) | Self::NodeBudget { .. } => {
                fatal("53300", self.to_string())
            }
            Self::AuthLookup { .. } => fatal("08006", self.to_string()),
            Self::Tls(_) => None,
            Self::Auth(e) => fatal("08P01", e.to_string()),
            Self::WrongPassword(_) => fatal("28P01", self.to_string()),
            Self::UnexpectedMessage { expected, tag } => fatal(
                "08P01",
                format!(
                    "expected {expected}, received message type {:?}",
                    char::from(*tag)
                ),
            ),
            Self::StartupTimeout => fatal("08006", self.to_string()),
            Self::Backend(e) => Some(e.to_client()),
            Self::NoPrimary(e) => fatal(NoPrimary::SQLSTATE, e.to_string()),
        }
    }
}
