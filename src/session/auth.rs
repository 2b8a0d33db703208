//! Client authentication against `[[users]]` (or, for users not listed
//! there, a verifier fetched by auth passthrough), before any server
//! connection is opened: a client that fails here never costs the
//! database anything.

use std::collections::HashMap;

use bytes::BytesMut;
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::SessionError;
use super::md5;
use super::passthrough::Passthrough;
use super::scram::{self, AwaitingClientFinal, Binding, ScramError, ScramVerifier};
use crate::backend::{ScramKeys, Secret};
use crate::config::{AuthMethod, Config};
use crate::protocol::frame::BodyReader;
use crate::protocol::io::read_message;
use crate::protocol::messages;

/// Largest password/SASL message a client may send.
const AUTH_MESSAGE_LIMIT: usize = 16 * 1024;

/// One user's login material, derived once from the config.
#[derive(Debug)]
pub struct UserCredential {
    /// Plaintext password for logging in to the nodes, when configured as one.
    password: Option<String>,
    /// The stored md5 hash, for `auth = "md5"`.
    md5: Option<String>,
    auth: AuthMethod,
    verifier: Option<ScramVerifier>,
    /// Most clients of this user at once.
    max_connections: Option<usize>,
}

/// Every configured user's credentials, plus what unknown users are checked against.
#[derive(Debug)]
pub struct Credentials {
    users: HashMap<String, UserCredential>,
    mock_secret: [u8; 32],
}

/// What a successful authentication establishes.
#[derive(Debug)]
pub struct Authenticated {
    /// What the proxy logs in to the nodes with for this client.
    pub secret: Option<Secret>,
    /// The user's `max_connections`, if any.
    pub max_connections: Option<usize>,
}

impl Credentials {
    /// Derives SCRAM verifiers for every `[[users]]` entry (once, at load:
    /// PBKDF2 is deliberately slow). A password written as a verifier
    /// (`SCRAM-SHA-256$...`, as in pg_authid) is used as one.
    pub fn from_config(config: &Config) -> Self {
        let users = config
            .users
            .iter()
            .map(|user| {
                let stored = user.password.as_deref();
                let verifier_text = stored.filter(|p| p.starts_with(scram::VERIFIER_PREFIX));
                let verifier = match (user.auth, verifier_text) {
                    (AuthMethod::Trust, _) => None,
                    // Invariant: validate() refused verifiers that do not parse.
                    (_, Some(text)) => ScramVerifier::parse(text).ok(),
                    (_, None) => stored.map(ScramVerifier::from_password),
                };
                let md5 = stored.filter(|_| user.auth == AuthMethod::Md5).map(|p| {
                    if md5::is_stored_hash(p) {
                        p.to_owned()
                    } else {
                        md5::stored_hash(&user.name, p)
                    }
                });
                let credential = UserCredential {
                    password: stored
                        .filter(|p| verifier_text.is_none() && !md5::is_stored_hash(p))
                        .map(str::to_owned),
                    md5,
                    auth: user.auth,
                    verifier,
                    max_connections: user.max_connections,
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
/// sent and what the node login needs is returned.
///
/// Unknown users (not configured, and not found by `passthrough`) go
/// through a full SCRAM exchange against a mock verifier and fail exactly
/// like a wrong password, so the proxy does not reveal which user names exist.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    credentials: &Credentials,
    passthrough: Option<&Passthrough>,
    binding: Binding,
) -> Result<Authenticated, SessionError> {
    let credential = credentials.get(user);
    if let Some(UserCredential {
        md5: Some(stored),
        password,
        max_connections,
        ..
    }) = credential
    {
        md5_exchange(stream, buf, user, stored).await?;
        let mut out = BytesMut::with_capacity(16);
        messages::authentication_ok(&mut out);
        stream.write_all(&out).await?;
        let secret = match password {
            Some(password) => Secret::Password(password.clone()),
            None => Secret::Md5Hash(stored.clone()),
        };
        return Ok(Authenticated {
            secret: Some(secret),
            max_connections: *max_connections,
        });
    }
    let (verifier, known) =
        match (credential, passthrough) {
            (Some(c), _) if c.auth == AuthMethod::Trust => (None, true),
            (Some(c), _) => (c.verifier.clone(), true),
            (None, Some(passthrough)) => {
                let found = passthrough.verifier(user).await.map_err(|reason| {
                    SessionError::AuthLookup {
                        user: user.to_owned(),
                        reason,
                    }
                })?;
                let known = found.is_some();
                (found, known)
            }
            (None, None) => (None, false),
        };
    let verifier = match (verifier, known) {
        (None, false) => Some(ScramVerifier::mock(user, &credentials.mock_secret)),
        (verifier, _) => verifier,
    };
    let proof = match &verifier {
        Some(verifier) => Some(scram_exchange(stream, buf, user, verifier.clone(), binding).await?),
        None => None,
    };
    if !known {
        return Err(SessionError::WrongPassword(user.to_owned()));
    }
    let password = credential.and_then(|c| c.password.clone());
    let secret = match (password, verifier, proof) {
        (Some(password), _, _) => Some(Secret::Password(password)),
        // Only a verifier: the node login replays this client's ClientKey.
        (None, Some(verifier), Some(client_key)) => {
            let (salt, iterations) = verifier.salt_and_iterations();
            Some(Secret::ScramKeys(ScramKeys {
                client_key,
                server_key: verifier.server_key(),
                salt: salt.to_vec(),
                iterations,
            }))
        }
        _ => None,
    };
    let mut out = BytesMut::with_capacity(16);
    messages::authentication_ok(&mut out);
    stream.write_all(&out).await?;
    Ok(Authenticated {
        secret,
        max_connections: credential.and_then(|c| c.max_connections),
    })
}

/// Asks the client for an md5 password with a fresh salt and checks it.
async fn md5_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    stored: &str,
) -> Result<(), SessionError> {
    let mut salt = [0u8; 4];
    rand::rng().fill_bytes(&mut salt);
    let mut out = BytesMut::with_capacity(16);
    messages::authentication_md5_password(&mut out, salt);
    stream.write_all(&out).await?;
    let message = read_password_message(stream, buf).await?;
    let response = message.strip_suffix(b"\0").unwrap_or(&message);
    if md5::response_matches(stored, salt, response) {
        Ok(())
    } else {
        Err(SessionError::WrongPassword(user.to_owned()))
    }
}

/// Runs SCRAM with the client; returns the ClientKey its proof revealed.
async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    verifier: ScramVerifier,
    binding: Binding,
) -> Result<[u8; 32], SessionError> {
    let mut out = BytesMut::with_capacity(256);
    match binding {
        Binding::None => messages::authentication_sasl(&mut out, &[scram::MECHANISM]),
        Binding::TlsServerEndPoint(_) => {
            messages::authentication_sasl(&mut out, &[scram::MECHANISM_PLUS, scram::MECHANISM])
        }
    }
    stream.write_all(&out).await?;

    let initial = read_password_message(stream, buf).await?;
    let mut body = BodyReader::new(&initial, "SASLInitialResponse");
    let mechanism = body.cstr()?;
    let mechanism = match mechanism {
        m if m == scram::MECHANISM.as_bytes() => scram::MECHANISM,
        m if m == scram::MECHANISM_PLUS.as_bytes() => scram::MECHANISM_PLUS,
        _ => {
            return Err(SessionError::Auth(ScramError::Malformed(
                "unsupported SASL mechanism",
            )));
        }
    };
    let len = body.i32()?;
    let client_first = body.bytes(usize::try_from(len).unwrap_or(0))?;
    let exchange = AwaitingClientFinal::start(verifier, mechanism, client_first, binding)?;

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
    Ok(success.client_key)
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
