//! From an accepted socket to a StartupMessage: encryption negotiation
//! (SSLRequest, PostgreSQL 17 direct TLS), the TLS handshake, and the
//! `tls.mode = "require"` rule, all within the startup deadline.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::SessionError;
use super::scram::Binding;
use super::startup::{Opening, read_opening};
use crate::config::TlsMode;
use crate::metrics::Metrics;
use crate::tls::acceptor::{ALPN_POSTGRESQL, Accepted};
use crate::tls::{Acceptor, ClientStream, TlsError};

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection past its opening packets.
#[derive(Debug)]
pub struct Opened {
    /// The client, plain or TLS.
    pub client: ClientStream,
    /// What it asked for (never [`Opening::TlsRequest`]).
    pub opening: Opening,
    /// What SCRAM may bind to.
    pub binding: Binding,
}

/// Why a connection ends before its StartupMessage was accepted.
#[derive(Debug)]
pub enum Refused {
    /// Tell the client (it can read a plaintext or TLS ErrorResponse).
    Tell(ClientStream, SessionError),
    /// Nothing can be said: the TLS handshake failed or the socket broke.
    Silent(SessionError),
}

/// Negotiates encryption and reads the opening packet by `deadline`;
/// handshakes are counted in `metrics`.
pub async fn open(
    mut tcp: TcpStream,
    buf: &mut BytesMut,
    acceptor: Option<&Acceptor>,
    mode: TlsMode,
    deadline: Instant,
    metrics: &Metrics,
) -> Result<Opened, Refused> {
    let tls_offered = acceptor.is_some() && mode != TlsMode::Disable;
    let mut first = [0u8; 1];
    let direct = match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE_RECORD,
        Ok(Ok(_)) => return Err(Refused::Silent(SessionError::ClientGone("closed".into()))),
        Ok(Err(error)) => return Err(Refused::Silent(error.into())),
        Err(_) => {
            let error = SessionError::StartupTimeout;
            return Err(Refused::Tell(ClientStream::Plain(tcp), error));
        }
    };
    let acceptor = acceptor.filter(|_| tls_offered);
    if direct {
        let Some(acceptor) = acceptor else {
            // A TLS client cannot read a plaintext error; just close.
            return Err(Refused::Silent(SessionError::Tls(TlsError::NotOffered)));
        };
        let accepted = handshake(acceptor, tcp, deadline, metrics).await?;
        let alpn = accepted
            .stream
            .with_tls(|tls| tls.get_ref().1.alpn_protocol() == Some(ALPN_POSTGRESQL));
        if alpn != Some(true) {
            return Err(Refused::Silent(SessionError::Tls(TlsError::NoAlpn)));
        }
        return read_encrypted(accepted, buf, deadline).await;
    }
    let opening = match timeout_at(deadline, read_opening(&mut tcp, buf, tls_offered)).await {
        Ok(Ok(opening)) => opening,
        Ok(Err(error)) => return Err(Refused::Tell(ClientStream::Plain(tcp), error)),
        Err(_) => {
            let error = SessionError::StartupTimeout;
            return Err(Refused::Tell(ClientStream::Plain(tcp), error));
        }
    };
    match (opening, acceptor) {
        (Opening::TlsRequest, Some(acceptor)) => {
            if let Err(error) = tcp.write_all(b"S").await {
                return Err(Refused::Silent(error.into()));
            }
            let accepted = handshake(acceptor, tcp, deadline, metrics).await?;
            read_encrypted(accepted, buf, deadline).await
        }
        (Opening::Session { .. }, _) if mode == TlsMode::Require => Err(Refused::Tell(
            ClientStream::Plain(tcp),
            SessionError::TlsRequired,
        )),
        (opening, _) => Ok(Opened {
            client: ClientStream::Plain(tcp),
            opening,
            binding: Binding::None,
        }),
    }
}

/// Runs the TLS handshake; counts it as completed or failed (a timeout
/// is a failure too).
async fn handshake(
    acceptor: &Acceptor,
    tcp: TcpStream,
    deadline: Instant,
    metrics: &Metrics,
) -> Result<Accepted, Refused> {
    let result = match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(accepted)) => Ok(accepted),
        Ok(Err(error)) => Err(Refused::Silent(SessionError::Tls(error))),
        Err(_) => Err(Refused::Silent(SessionError::StartupTimeout)),
    };
    metrics.tls_handshake(result.is_ok());
    result
}

/// Reads the StartupMessage (or CancelRequest) inside TLS.
async fn read_encrypted(
    accepted: Accepted,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Opened, Refused> {
    let Accepted {
        stream: mut client,
        end_point_hash,
    } = accepted;
    match timeout_at(deadline, read_opening(&mut client, buf, false)).await {
        Ok(Ok(opening)) => Ok(Opened {
            client,
            opening,
            binding: Binding::TlsServerEndPoint(end_point_hash),
        }),
        Ok(Err(error)) => Err(Refused::Tell(client, error)),
        Err(_) => Err(Refused::Tell(client, SessionError::StartupTimeout)),
    }
}
