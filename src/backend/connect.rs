//! Opening a server connection: TCP, StartupMessage, authentication as the
//! server asks (SCRAM-SHA-256, md5, cleartext, trust), and the startup
//! messages up to the first ReadyForQuery.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::BackendError;
use crate::protocol::frame::{BodyReader, HEADER_LEN};
use crate::protocol::io::read_message;
use crate::protocol::{Frame, ProtocolError};

/// Largest message accepted from a server before it is logged in.
const LOGIN_MESSAGE_LIMIT: usize = 64 * 1024;

/// A logged-in server connection, ready for queries.
#[derive(Debug)]
pub struct ServerConnection {
    /// The socket.
    pub stream: TcpStream,
    /// The node's address.
    pub addr: String,
    /// The server's BackendKeyData process id.
    pub pid: i32,
    /// The server's BackendKeyData secret.
    pub secret: Bytes,
    /// ParameterStatus and NoticeResponse frames the server sent during
    /// login, to replay to the client verbatim.
    pub startup_messages: BytesMut,
    /// Bytes the server sent after its first ReadyForQuery (normally none).
    pub pending: BytesMut,
    /// When the connection was opened (for `pool.max_lifetime`).
    pub created: std::time::Instant,
    /// Internal prepared statements present on this connection, by the
    /// hash that names them (transaction pooling).
    pub prepared: std::collections::HashSet<u64>,
    /// Fingerprint of the session settings applied on this connection;
    /// 0 means the server defaults (transaction pooling).
    pub settings_fingerprint: u64,
}

/// Connects to `addr` and logs in with the client's startup `params`
/// (which include `user`), within `timeout`.
pub async fn connect(
    addr: &str,
    params: &[(String, String)],
    password: Option<&str>,
    timeout: Duration,
) -> Result<ServerConnection, BackendError> {
    tokio::time::timeout(timeout, connect_and_login(addr, params, password))
        .await
        .map_err(|_| BackendError::Timeout {
            addr: addr.to_owned(),
        })?
}

async fn connect_and_login(
    addr: &str,
    params: &[(String, String)],
    password: Option<&str>,
) -> Result<ServerConnection, BackendError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| BackendError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    // Small request/response messages must not wait for Nagle's timer.
    stream
        .set_nodelay(true)
        .map_err(|source| BackendError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let mut login = Login {
        addr,
        user: crate::protocol::StartupPacket::param(params, "user").unwrap_or_default(),
        password,
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

struct Login<'a> {
    addr: &'a str,
    user: String,
    password: Option<&'a str>,
    buf: BytesMut,
    out: BytesMut,
    scram: Option<ScramSha256>,
}

impl<'a> Login<'a> {
    async fn run(mut self, mut stream: TcpStream) -> Result<ServerConnection, BackendError> {
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
                    return Ok(ServerConnection {
                        stream,
                        addr: self.addr.to_owned(),
                        pid,
                        secret,
                        startup_messages,
                        pending: self.buf,
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
                let hash = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt);
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
        let scram = ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut self.out)
            .map_err(|_| self.protocol("bad SASL message"))?;
        self.scram = Some(scram);
        Ok(())
    }

    fn scram_continue(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let Some(scram) = self.scram.as_mut() else {
            return Err(self.protocol("SASLContinue before SASL"));
        };
        if let Err(error) = scram.update(data) {
            return Err(self.scram(&error.to_string()));
        }
        let message = scram.message().to_vec();
        frontend::sasl_response(&message, &mut self.out)
            .map_err(|_| self.protocol("bad SASL message"))
    }

    fn scram_finish(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let Some(scram) = self.scram.as_mut() else {
            return Err(self.protocol("SASLFinal before SASL"));
        };
        scram.finish(data).map_err(|e| self.scram(&e.to_string()))
    }

    fn password(&self) -> Result<&'a str, BackendError> {
        self.password.ok_or_else(|| BackendError::NoPassword {
            addr: self.addr.to_owned(),
            user: self.user.clone(),
        })
    }

    async fn flush(&mut self, stream: &mut TcpStream) -> Result<(), BackendError> {
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
        self.protocol_error(ProtocolError::Malformed(reason))
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
