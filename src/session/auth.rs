//! Client authentication against `[[users]]`, before any server connection
//! is opened: a client that fails here never costs the database anything.

use std::collections::HashMap;

use bytes::BytesMut;
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::SessionError;
use super::scram::{self, AwaitingClientFinal, ScramError, ScramVerifier};
use crate::config::{AuthMethod, Config};
use crate::protocol::frame::BodyReader;
use crate::protocol::io::read_message;
use crate::protocol::messages;

/// Largest password/SASL message a client may send.
const AUTH_MESSAGE_LIMIT: usize = 16 * 1024;

/// One user's login material, derived once from the config.
#[derive(Debug)]
pub struct UserCredential {
    /// Password for logging in to the nodes.
    pub password: Option<String>,
    auth: AuthMethod,
    verifier: Option<ScramVerifier>,
}

/// Every configured user's credentials, plus what unknown users are checked against.
#[derive(Debug)]
pub struct Credentials {
    users: HashMap<String, UserCredential>,
    mock_secret: [u8; 32],
}

impl Credentials {
    /// Derives SCRAM verifiers for every `[[users]]` entry (once, at load:
    /// PBKDF2 is deliberately slow).
    pub fn from_config(config: &Config) -> Self {
        let users = config
            .users
            .iter()
            .map(|user| {
                let verifier = match user.auth {
                    AuthMethod::ScramSha256 => {
                        user.password.as_deref().map(ScramVerifier::from_password)
                    }
                    AuthMethod::Trust => None,
                };
                let credential = UserCredential {
                    password: user.password.clone(),
                    auth: user.auth,
                    verifier,
                };
                (user.name.clone(), credential)
            })
            .collect();
        let mut mock_secret = [0u8; 32];
        rand::rng().fill_bytes(&mut mock_secret);
        Self { users, mock_secret }
    }

    /// The credential for `user`, if configured.
    pub fn get(&self, user: &str) -> Option<&UserCredential> {
        self.users.get(user)
    }
}

/// Authenticates the client as `user`; on success AuthenticationOk has been
/// sent and the user's credential is returned.
///
/// Unknown users go through a full SCRAM exchange against a mock verifier
/// and fail exactly like a wrong password, so the proxy does not reveal
/// which user names exist.
pub async fn authenticate<'c, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    credentials: &'c Credentials,
) -> Result<&'c UserCredential, SessionError> {
    let credential = credentials.get(user);
    let verifier = match credential {
        Some(c) if c.auth == AuthMethod::Trust => None,
        Some(c) => c.verifier.clone(),
        None => Some(ScramVerifier::mock(user, &credentials.mock_secret)),
    };
    if let Some(verifier) = verifier {
        scram_exchange(stream, buf, user, verifier).await?;
    }
    let credential = credential.ok_or_else(|| SessionError::WrongPassword(user.to_owned()))?;
    let mut out = BytesMut::with_capacity(16);
    messages::authentication_ok(&mut out);
    stream.write_all(&out).await?;
    Ok(credential)
}

async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    verifier: ScramVerifier,
) -> Result<(), SessionError> {
    let mut out = BytesMut::with_capacity(256);
    messages::authentication_sasl(&mut out, &[scram::MECHANISM]);
    stream.write_all(&out).await?;

    let initial = read_password_message(stream, buf).await?;
    let mut body = BodyReader::new(&initial, "SASLInitialResponse");
    let mechanism = body.cstr()?;
    if mechanism != scram::MECHANISM.as_bytes() {
        return Err(SessionError::Auth(ScramError::Malformed(
            "unsupported SASL mechanism",
        )));
    }
    let len = body.i32()?;
    let client_first = body.bytes(usize::try_from(len).unwrap_or(0))?;
    let exchange = AwaitingClientFinal::start(verifier, client_first)?;

    out.clear();
    messages::authentication_sasl_continue(&mut out, exchange.server_first().as_bytes());
    stream.write_all(&out).await?;

    let client_final = read_password_message(stream, buf).await?;
    let success = exchange
        .finish(&client_final)
        .map_err(|error| match error {
            ScramError::WrongPassword => SessionError::WrongPassword(user.to_owned()),
            other => SessionError::Auth(other),
        })?;
    out.clear();
    messages::authentication_sasl_final(&mut out, success.server_final.as_bytes());
    stream.write_all(&out).await?;
    Ok(())
}

async fn read_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<bytes::Bytes, SessionError> {
    let frame = read_message(stream, buf, AUTH_MESSAGE_LIMIT).await?;
    if frame.tag != b'p' {
        return Err(SessionError::UnexpectedMessage {
            expected: "a password message",
            tag: frame.tag,
        });
    }
    Ok(frame.body)
}
