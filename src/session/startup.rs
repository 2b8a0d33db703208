//! The first packets of a connection: encryption requests, CancelRequest,
//! and the StartupMessage.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
}

/// Reads packets until a StartupMessage or CancelRequest arrives, declining
/// SSL and GSS encryption (client TLS is not offered by this version).
pub async fn read_opening(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Opening, SessionError> {
    // A client may ask for SSL and then GSS (or the reverse) before starting.
    for _ in 0..3 {
        match read_startup(stream, buf).await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                if !buf.is_empty() {
                    // Bytes after an encryption request would be a
                    // plaintext-injection attempt (CVE-2021-23222's shape).
                    return Err(SessionError::UnexpectedMessage {
                        expected: "nothing before the encryption response",
                        tag: buf[0],
                    });
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
