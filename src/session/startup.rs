//! The first packets of a connection: encryption requests, CancelRequest,
//! and the StartupMessage.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::SessionError;
use crate::protocol::StartupPacket;
use crate::protocol::io::read_startup;
use crate::protocol::messages;

/// What a new connection asked for.
#[derive(Debug)]
pub enum Opening {
    /// A session: the StartupMessage's parameters.
    Session {
        /// Startup parameters, including `user`.
        params: Vec<(String, String)>,
    },
    /// A CancelRequest for the session holding this key.
    Cancel {
        /// Proxy-issued process id.
        pid: i32,
        /// Proxy-issued secret.
        secret: Vec<u8>,
    },
    /// An SSLRequest this connection can accept: the client waits for 'S'
    /// and then starts a TLS handshake.
    TlsRequest,
}

/// Reads packets until a StartupMessage or CancelRequest arrives, or an
/// SSLRequest when `tls_offered`; declines GSS encryption, and SSL when
/// TLS is not offered.
pub async fn read_opening<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    tls_offered: bool,
) -> Result<Opening, SessionError> {
    // A client may ask for SSL and then GSS (or the reverse) before starting.
    for _ in 0..3 {
        match read_startup(stream, buf).await? {
            packet @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                if !buf.is_empty() {
                    // Bytes after an encryption request would be a
                    // plaintext-injection attempt (CVE-2021-23222's shape).
                    return Err(SessionError::UnexpectedMessage {
                        expected: "nothing before the encryption response",
                        tag: buf[0],
                    });
                }
                if tls_offered && matches!(packet, StartupPacket::SslRequest) {
                    return Ok(Opening::TlsRequest);
                }
                stream.write_all(b"N").await?;
            }
            StartupPacket::CancelRequest { pid, secret } => {
                return Ok(Opening::Cancel { pid, secret });
            }
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => {
                if minor > 0 || !protocol_options.is_empty() {
                    let mut out = BytesMut::new();
                    messages::negotiate_protocol_version(&mut out, &protocol_options);
                    stream.write_all(&out).await?;
                }
                return Ok(Opening::Session { params });
            }
        }
    }
    Err(SessionError::UnexpectedMessage {
        expected: "a StartupMessage",
        tag: b'?',
    })
}
