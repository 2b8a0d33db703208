//! Opening a server connection: TCP, StartupMessage, authentication as the
//! server asks (SCRAM-SHA-256, md5, cleartext, trust), and the startup
//! messages up to the first ReadyForQuery.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BackendError;
use super::scram_keys::KeysExchange;
use super::secret::Secret;
use crate::config::ServerTlsMode;
use crate::listener::cancel::CancelTarget;
use crate::protocol::frame::{BodyReader, HEADER_LEN};
use crate::protocol::io::read_message;
use crate::protocol::{Frame, ProtocolError, buffers};
use crate::tls::{Connector, ServerStream};

/// Largest message accepted from a server before it is logged in.
const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// A logged-in server connection, ready for queries.
#[derive(Debug)]
pub struct ServerConnection {
    /// The socket, plain or TLS.
    pub stream: ServerStream,
    /// The node's address.
    pub addr: String,
    /// The server's BackendKeyData process id.
    pub pid: i32,
    /// Where a client's CancelRequest for this connection goes (its
    /// address and BackendKeyData), built once: transaction pooling points
    /// a session's cancel key at it on every checkout.
    pub cancel_target: Arc<CancelTarget>,
    /// ParameterStatus and NoticeResponse frames the server sent during
    /// login, to replay to the client verbatim.
    pub startup_messages: BytesMut,
    /// Bytes read from the server and not yet handled: after login, what
    /// it sent past its first ReadyForQuery (normally none); in transaction
    /// pooling, the relay's input buffer, kept with the connection so that
    /// a transaction allocates none.
    pub pending: BytesMut,
    /// Bytes on their way to the server during a transaction-pooling
    /// stretch, kept for the same reason; empty between stretches.
    pub outgoing: BytesMut,
    /// When the connection was opened (for `pool.max_lifetime`).
    pub created: std::time::Instant,
    /// Internal prepared statements present on this connection, by the
    /// hash that names them (transaction pooling).
    pub prepared: std::collections::HashSet<u64>,
    /// Fingerprint of the session settings applied on this connection;
    /// 0 means the server defaults (transaction pooling).
    pub settings_fingerprint: u64,
}

impl ServerConnection {
    /// Frees the buffers that a large message grew (see
    /// [`buffers::shed_if_large`]), so an idle connection does not hold them.
    pub fn shed_large_buffers(&mut self) {
        buffers::shed_if_large(&mut self.pending);
        buffers::shed_if_large(&mut self.outgoing);
    }
}

/// Connects to `addr` (TLS as `tls` says) and logs in with the client's
/// startup `params` (which include `user`), within `timeout`.
pub async fn connect(
    addr: &str,
    params: &[(String, String)],
    secret: Option<&Secret>,
    tls: &Connector,
    timeout: Duration,
) -> Result<ServerConnection, BackendError> {
    tokio::time::timeout(timeout, connect_and_login(addr, params, secret, tls))
        .await
        .map_err(|_| BackendError::Timeout {
            addr: addr.to_owned(),
        })?
}

async fn connect_and_login(
    addr: &str,
    params: &[(String, String)],
    secret: Option<&Secret>,
    tls: &Connector,
) -> Result<ServerConnection, BackendError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    // Small request/response messages must not wait for Nagle's timer.
    tcp.set_nodelay(true)
        .map_err(|source| BackendError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let mut stream = negotiate_tls(addr, tcp, tls).await?;
    let mut login = Login {
        addr,
        user: crate::protocol::StartupPacket::param(params, "user").unwrap_or_default(),
        secret,
        buf: BytesMut::with_capacity(8192),
        out: BytesMut::with_capacity(512),
        scram: None,
    };
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    frontend::startup_message(pairs, &mut login.out)
        .map_err(|_| login.protocol("parameter contains NUL"))?;
    login.flush(&mut stream).await?;
    login.run(stream).await
}

/// Asks the node for TLS (SSLRequest) when the mode says so and runs the
/// handshake; `prefer` falls back to plain TCP when the node declines.
async fn negotiate_tls(
    addr: &str,
    mut tcp: TcpStream,
    tls: &Connector,
) -> Result<ServerStream, BackendError> {
    if tls.mode() == ServerTlsMode::Disable {
        return Ok(ServerStream::Plain(tcp));
    }
    let io_error = |source: std::io::Error| BackendError::Read {
        addr: addr.to_owned(),
        source: source.into(),
    };
    tcp.write_all(&crate::protocol::startup::ssl_request())
        .await
        .map_err(io_error)?;
    let answer = tcp.read_u8().await.map_err(io_error)?;
    match answer {
        b'S' => {}
        b'N' if tls.mode() == ServerTlsMode::Prefer => return Ok(ServerStream::Plain(tcp)),
        b'N' => {
            return Err(BackendError::Tls {
                addr: addr.to_owned(),
                reason: "the server does not accept TLS connections".into(),
            });
        }
        _ => return Err(protocol_error(addr, "unexpected answer to SSLRequest")),
    }
    let host = host_of(addr);
    tls.connect(host, tcp)
        .await
        .map_err(|error| BackendError::Tls {
            addr: addr.to_owned(),
            reason: error.to_string(),
        })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn protocol_error(addr: &str, reason: &'static str) -> BackendError {
    BackendError::Protocol {
        addr: addr.to_owned(),
        reason: ProtocolError::Malformed(reason),
    }
}

/// The SCRAM exchange with a node in progress.
enum ScramClient {
    /// postgres-protocol's client, with the password.
    Password(ScramSha256),
    /// Proof from ClientKey, when only a verifier is known.
    Keys(KeysExchange),
}

struct Login<'a> {
    addr: &'a str,
    user: String,
    secret: Option<&'a Secret>,
    buf: BytesMut,
    out: BytesMut,
    scram: Option<ScramClient>,
}

impl<'a> Login<'a> {
    async fn run(mut self, mut stream: ServerStream) -> Result<ServerConnection, BackendError> {
        let mut startup_messages = BytesMut::new();
        let mut key = None;
        loop {
            let frame = read_message(&mut stream, &mut self.buf, LOGIN_MESSAGE_LIMIT)
                .await
                .map_err(|source| BackendError::Read {
                    addr: self.addr.to_owned(),
                    source,
                })?;
            match frame.tag {
                b'R' => {
                    self.authenticate(&frame)?;
                    self.flush(&mut stream).await?;
                }
                b'E' => return Err(BackendError::Refused(reframe(&frame))),
                b'S' | b'N' => startup_messages.extend_from_slice(&reframe(&frame)),
                b'K' => {
                    let mut body = BodyReader::new(&frame.body, "BackendKeyData");
                    let pid = body.i32().map_err(|e| self.protocol_error(e))?;
                    key = Some((pid, Bytes::copy_from_slice(body.rest())));
                }
                b'Z' => {
                    let (pid, secret) = key.unwrap_or_default();
                    let addr = self.addr.to_owned();
                    let cancel_target = Arc::new(CancelTarget::new(addr.clone(), pid, secret));
                    return Ok(ServerConnection {
                        stream,
                        addr,
                        pid,
                        cancel_target,
                        startup_messages,
                        pending: self.buf,
                        outgoing: BytesMut::new(),
                        created: std::time::Instant::now(),
                        prepared: std::collections::HashSet::new(),
                        settings_fingerprint: 0,
                    });
                }
                // NegotiateProtocolVersion: the server speaks an older minor; nothing to do.
                b'v' => {}
                _ => return Err(self.protocol("unexpected message type")),
            }
        }
    }

    fn authenticate(&mut self, frame: &Frame) -> Result<(), BackendError> {
        let mut body = BodyReader::new(&frame.body, "Authentication");
        let code = body.i32().map_err(|e| self.protocol_error(e))?;
        match code {
            0 => Ok(()),
            3 => {
                let password = self.password()?;
                frontend::password_message(password.as_bytes(), &mut self.out)
                    .map_err(|_| self.protocol("password contains NUL"))
            }
            5 => {
                let salt: [u8; 4] = body
                    .bytes(4)
                    .map_err(|e| self.protocol_error(e))?
                    .try_into()
                    .map_err(|_| self.protocol("bad md5 salt"))?;
                let hash = match self.secret {
                    Some(Secret::Md5Hash(stored)) => {
                        crate::session::md5::salted_response(stored, salt)
                    }
                    _ => md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt),
                };
                frontend::password_message(hash.as_bytes(), &mut self.out)
                    .map_err(|_| self.protocol("password contains NUL"))
            }
            10 => self.scram_start(body.rest()),
            11 => self.scram_continue(body.rest()),
            12 => self.scram_finish(body.rest()),
            code => Err(BackendError::UnsupportedAuth {
                addr: self.addr.to_owned(),
                code,
            }),
        }
    }

    fn scram_start(&mut self, mechanisms: &[u8]) -> Result<(), BackendError> {
        let offered = mechanisms.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
        if !offered {
            return Err(self.scram("server does not offer SCRAM-SHA-256"));
        }
        let scram = match self.secret {
            Some(Secret::ScramKeys(keys)) => ScramClient::Keys(KeysExchange::new(keys.clone())),
            _ => ScramClient::Password(ScramSha256::new(
                self.password()?.as_bytes(),
                ChannelBinding::unsupported(),
            )),
        };
        let first = match &scram {
            ScramClient::Password(client) => client.message().to_vec(),
            ScramClient::Keys(exchange) => exchange.client_first().into_bytes(),
        };
        frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut self.out)
            .map_err(|_| self.protocol("bad SASL message"))?;
        self.scram = Some(scram);
        Ok(())
    }

    fn scram_continue(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let message = match self.scram.as_mut() {
            None => return Err(self.protocol("SASLContinue before SASL")),
            Some(ScramClient::Password(client)) => client
                .update(data)
                .map(|()| client.message().to_vec())
                .map_err(|e| e.to_string()),
            Some(ScramClient::Keys(exchange)) => exchange
                .respond(data)
                .map(String::into_bytes)
                .map_err(str::to_owned),
        };
        let message = message.map_err(|reason| self.scram(&reason))?;
        frontend::sasl_response(&message, &mut self.out)
            .map_err(|_| self.protocol("bad SASL message"))
    }

    fn scram_finish(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let result = match self.scram.as_mut() {
            None => return Err(self.protocol("SASLFinal before SASL")),
            Some(ScramClient::Password(client)) => client.finish(data).map_err(|e| e.to_string()),
            Some(ScramClient::Keys(exchange)) => exchange.finish(data).map_err(str::to_owned),
        };
        result.map_err(|reason| self.scram(&reason))
    }

    fn password(&self) -> Result<&'a str, BackendError> {
        match self.secret {
            Some(Secret::Password(password)) => Ok(password),
            Some(Secret::ScramKeys(_) | Secret::Md5Hash(_)) => Err(BackendError::VerifierOnly {
                addr: self.addr.to_owned(),
                user: self.user.clone(),
            }),
            None => Err(BackendError::NoPassword {
                addr: self.addr.to_owned(),
                user: self.user.clone(),
            }),
        }
    }

    async fn flush(&mut self, stream: &mut ServerStream) -> Result<(), BackendError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = stream.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|source| BackendError::Read {
            addr: self.addr.to_owned(),
            source: source.into(),
        })
    }

    fn protocol(&self, reason: &'static str) -> BackendError {
        protocol_error(self.addr, reason)
    }

    fn protocol_error(&self, reason: ProtocolError) -> BackendError {
        BackendError::Protocol {
            addr: self.addr.to_owned(),
            reason,
        }
    }

    fn scram(&self, reason: &str) -> BackendError {
        BackendError::Scram {
            addr: self.addr.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// Re-adds tag and length to a frame that was split off for inspection.
fn reframe(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + frame.body.len());
    out.extend_from_slice(&[frame.tag]);
    out.extend_from_slice(&(frame.body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&frame.body);
    out.freeze()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn host_is_the_address_without_port() {
        assert_eq!(host_of("db.example.com:5432"), "db.example.com");
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }
}
