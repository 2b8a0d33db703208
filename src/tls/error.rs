//! Why TLS material could not be loaded or a TLS session could not start.

use thiserror::Error;

/// A TLS failure, naming the file or peer at fault.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("cannot load {what} from {path}: {reason}")]
    Load {
        /// What the file should hold ("certificate chain", "private key", "CA certificates").
        what: &'static str,
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate/key pair or the CA set.
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The CA set could not be turned into a verifier.
    #[error("invalid CA certificates: {0}")]
    Verifier(String),
    /// The TLS handshake failed or timed out.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// A client started TLS directly while client TLS is disabled.
    #[error("direct TLS connection, but client TLS is disabled")]
    NotOffered,
    /// A direct-TLS client did not negotiate the ALPN protocol "postgresql".
    #[error("direct TLS connection without ALPN \"postgresql\"")]
    NoAlpn,
}
