//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it.
//!
//! Written here rather than taken from pgwire because pgwire's SCRAM server
//! is bound to its own connection handler and message decoder, which the
//! proxy does not use on untrusted bytes (DESIGN.md, decision 1). The
//! primitives (HMAC, SHA-256, verifier generation) come from maintained
//! crates; this file only sequences them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The SASL mechanism name with channel binding, offered on TLS connections.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// How a stored verifier starts (pg_authid's format).
pub const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";
/// The one channel binding type supported (RFC 5929).
const BINDING_TYPE: &str = "tls-server-end-point";
const NONCE_BYTES: usize = 18;

/// Why a SCRAM exchange failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow the SCRAM grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which needs TLS.
    #[error("channel binding is not supported on a connection without TLS")]
    ChannelBindingUnsupported,
    /// The proof does not match the verifier: wrong password.
    #[error("password does not match")]
    WrongPassword,
    /// A stored verifier string is not in pg_authid's format.
    #[error("invalid SCRAM verifier")]
    InvalidVerifier,
    /// The client's channel binding choice contradicts what was offered
    /// (a client that supports binding must use it when it is offered: a
    /// downgrade otherwise), or its binding data does not match this TLS
    /// session (a man in the middle).
    #[error("SCRAM channel binding check failed: {0}")]
    ChannelBindingMismatch(&'static str),
}

/// What PostgreSQL stores for a SCRAM user (`SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Derives a verifier with a fresh random salt (4096 iterations, as PostgreSQL).
    pub fn from_password(password: &str) -> Self {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // Invariant: postgres-protocol emits exactly the format parse() reads.
        Self::parse(&text).unwrap_or_else(|_| Self::mock("", b""))
    }

    /// Parses pg_authid's text form.
    pub fn parse(text: &str) -> Result<Self, ScramError> {
        let rest = text
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or(ScramError::InvalidVerifier)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::InvalidVerifier)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::InvalidVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::InvalidVerifier)?;
        Ok(Self {
            iterations: iterations
                .parse()
                .ok()
                .filter(|&i| i > 0)
                .ok_or(ScramError::InvalidVerifier)?,
            salt: decode(salt).ok_or(ScramError::InvalidVerifier)?,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
    }

    /// ServerKey, which proves the proxy to a node that holds the same verifier.
    pub fn server_key(&self) -> [u8; 32] {
        self.server_key
    }

    /// The salt and iteration count a node holding this verifier will send.
    pub fn salt_and_iterations(&self) -> (&[u8], u32) {
        (&self.salt, self.iterations)
    }

    /// A verifier no password matches, with a salt derived from the user
    /// name, so that an unknown user's exchange looks like a known one's.
    pub fn mock(user: &str, secret: &[u8]) -> Self {
        let salt = Sha256::new()
            .chain_update(secret)
            .chain_update(user.as_bytes())
            .finalize();
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::rng().fill_bytes(&mut stored_key);
        rand::rng().fill_bytes(&mut server_key);
        Self {
            iterations: 4096,
            salt: salt[..16].to_vec(),
            stored_key,
            server_key,
        }
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

fn key32(text: &str) -> Result<[u8; 32], ScramError> {
    decode(text)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ScramError::InvalidVerifier)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The exchange after the client-first-message: the server-first-message
/// has been produced and the client's final message is awaited.
#[derive(Debug)]
pub struct AwaitingClientFinal {
    verifier: ScramVerifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    channel_binding_b64: String,
}

/// A successful exchange.
pub struct ScramSuccess {
    /// The server-final-message to send in AuthenticationSASLFinal.
    pub server_final: String,
    /// The client's ClientKey, recovered from its proof: with the
    /// verifier's ServerKey it logs in to a node holding the same verifier.
    pub client_key: [u8; 32],
}

impl std::fmt::Debug for ScramSuccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the ClientKey is a password equivalent.
        f.debug_struct("ScramSuccess")
            .field("server_final", &self.server_final)
            .finish_non_exhaustive()
    }
}

/// What the client's TLS session offers for channel binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Plain connection: only SCRAM-SHA-256 was offered.
    None,
    /// TLS: SCRAM-SHA-256-PLUS was offered with this `tls-server-end-point` hash.
    TlsServerEndPoint(std::sync::Arc<[u8]>),
}

impl AwaitingClientFinal {
    /// Reads the client-first-message (sent with `mechanism`) and prepares
    /// the server-first-message; `binding` is what this connection offered.
    pub fn start(
        verifier: ScramVerifier,
        mechanism: &str,
        client_first: &[u8],
        binding: Binding,
    ) -> Result<Self, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed("empty"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let bare = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let cbind_data = check_binding_flag(flag, mechanism, &binding)?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("invalid authzid"));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|nonce| !nonce.is_empty() && nonce.bytes().all(|b| (0x21..0x7f).contains(&b)))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed("unsupported extension"));
        }
        let mut random = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut random);
        let nonce = format!("{client_nonce}{}", BASE64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&verifier.salt),
            verifier.iterations
        );
        let gs2_header = &text[..text.len() - bare.len()];
        let mut binding_input = gs2_header.as_bytes().to_vec();
        binding_input.extend_from_slice(cbind_data);
        Ok(Self {
            verifier,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
            channel_binding_b64: BASE64.encode(binding_input),
        })
    }

    /// The server-first-message to send in AuthenticationSASLContinue.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final-message's proof.
    pub fn finish(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if binding != self.channel_binding_b64 {
            return Err(ScramError::ChannelBindingMismatch(
                "channel binding data does not match this TLS session",
            ));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = decode(proof)
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("invalid proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (i, byte) in client_key.iter_mut().enumerate() {
            *byte = proof[i] ^ client_signature[i];
        }
        let derived: [u8; 32] = Sha256::digest(client_key).into();
        // Constant-time comparison: fold every byte before deciding.
        let difference = derived
            .iter()
            .zip(self.verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(ScramSuccess {
            server_final: format!("v={}", BASE64.encode(server_signature)),
            client_key,
        })
    }
}

/// Checks the GS2 channel binding flag against the mechanism the client
/// chose and what the connection offered; returns the binding data the
/// client-final-message must carry.
fn check_binding_flag<'b>(
    flag: &str,
    mechanism: &str,
    binding: &'b Binding,
) -> Result<&'b [u8], ScramError> {
    let plus = mechanism == MECHANISM_PLUS;
    match (flag, binding) {
        ("n", _) | ("y", Binding::None) if !plus => Ok(&[]),
        // "y": the client could bind but believes the server cannot; it
        // was offered PLUS, so someone removed it on the way.
        ("y", Binding::TlsServerEndPoint(_)) if !plus => Err(ScramError::ChannelBindingMismatch(
            "client supports channel binding but saw no SCRAM-SHA-256-PLUS offer",
        )),
        (f, Binding::TlsServerEndPoint(hash)) if plus => match f.strip_prefix("p=") {
            Some(BINDING_TYPE) => Ok(hash),
            Some(_) => Err(ScramError::Malformed("unsupported channel binding type")),
            None => Err(ScramError::ChannelBindingMismatch(
                "SCRAM-SHA-256-PLUS without channel binding",
            )),
        },
        (f, Binding::None) if f.starts_with("p=") || plus => {
            Err(ScramError::ChannelBindingUnsupported)
        }
        (f, _) if f.starts_with("p=") => Err(ScramError::ChannelBindingMismatch(
            "channel binding requested with SCRAM-SHA-256 (not -PLUS)",
        )),
        _ => Err(ScramError::Malformed("invalid channel binding flag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(stored_password: &str, client_password: &str) -> Result<ScramSuccess, ScramError> {
        let verifier = ScramVerifier::from_password(stored_password);
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let server =
            AwaitingClientFinal::start(verifier, MECHANISM, client.message(), Binding::None)?;
        client.update(server.server_first().as_bytes()).unwrap();
        let success = server.finish(client.message())?;
        client.finish(success.server_final.as_bytes()).unwrap();
        Ok(success)
    }

    #[test]
    fn right_password_authenticates_and_server_proves_itself() {
        exchange("s3cret", "s3cret").unwrap();
    }

    #[test]
    fn wrong_password_is_refused() {
        assert_eq!(
            exchange("s3cret", "guess").unwrap_err(),
            ScramError::WrongPassword
        );
    }

    #[test]
    fn verifier_round_trips_pg_authid_format() {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let verifier = ScramVerifier::parse(&text).unwrap();
        assert_eq!(verifier.iterations, 4096);
        assert!(ScramVerifier::parse("md5abc").is_err());
        assert!(ScramVerifier::parse("SCRAM-SHA-256$x:y$z:w").is_err());
    }

    #[test]
    fn channel_binding_request_without_tls_is_refused() {
        let verifier = ScramVerifier::from_password("pw");
        let err = AwaitingClientFinal::start(
            verifier,
            MECHANISM,
            b"p=tls-server-end-point,,n=,r=abc",
            Binding::None,
        )
        .unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingUnsupported);
    }

    #[test]
    fn garbage_messages_are_malformed_not_panics() {
        for input in [&b""[..], b"n", b"n,,", b"x,,r=a", b"n,,n=,r=", b"\xff\xfe"] {
            let verifier = ScramVerifier::from_password("pw");
            assert!(AwaitingClientFinal::start(verifier, MECHANISM, input, Binding::None).is_err());
        }
        let verifier = ScramVerifier::from_password("pw");
        let server =
            AwaitingClientFinal::start(verifier, MECHANISM, b"n,,n=,r=abc", Binding::None).unwrap();
        assert!(server.finish(b"c=biws,r=wrong,p=AAAA").is_err());
    }

    fn plus_exchange(server_hash: [u8; 32], client_hash: [u8; 32]) -> Result<(), ScramError> {
        let server_hash: std::sync::Arc<[u8]> = server_hash.to_vec().into();
        let verifier = ScramVerifier::from_password("pw");
        let mut client = ScramSha256::new(
            b"pw",
            ChannelBinding::tls_server_end_point(client_hash.to_vec()),
        );
        let binding = Binding::TlsServerEndPoint(server_hash);
        let server =
            AwaitingClientFinal::start(verifier, MECHANISM_PLUS, client.message(), binding)?;
        client.update(server.server_first().as_bytes()).unwrap();
        let success = server.finish(client.message())?;
        client.finish(success.server_final.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn channel_binding_to_this_certificate_succeeds() {
        plus_exchange([7; 32], [7; 32]).unwrap();
    }

    #[test]
    fn channel_binding_to_another_certificate_is_refused() {
        let err = plus_exchange([7; 32], [8; 32]).unwrap_err();
        assert!(
            matches!(err, ScramError::ChannelBindingMismatch(_)),
            "{err}"
        );
    }

    #[test]
    fn downgrade_to_plain_scram_after_plus_offer_is_refused() {
        let verifier = ScramVerifier::from_password("pw");
        let err = AwaitingClientFinal::start(
            verifier,
            MECHANISM,
            b"y,,n=,r=abc",
            Binding::TlsServerEndPoint(vec![0; 32].into()),
        )
        .unwrap_err();
        assert!(matches!(err, ScramError::ChannelBindingMismatch(_)));
    }

    #[test]
    fn recovered_client_key_matches_the_password() {
        let verifier = ScramVerifier::from_password("s3cret");
        let (salt, iterations) = verifier.salt_and_iterations();
        let salted = postgres_protocol_salted(b"s3cret", salt, iterations);
        let expected = hmac(&salted, &[b"Client Key"]);
        let mut client = ScramSha256::new(b"s3cret", ChannelBinding::unsupported());
        let server =
            AwaitingClientFinal::start(verifier, MECHANISM, client.message(), Binding::None)
                .unwrap();
        client.update(server.server_first().as_bytes()).unwrap();
        let success = server.finish(client.message()).unwrap();
        assert_eq!(success.client_key, expected);
    }

    fn postgres_protocol_salted(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        // PBKDF2-HMAC-SHA-256 with one block, as RFC 5802's Hi().
        let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut out = u;
        for _ in 1..iterations {
            u = hmac(password, &[&u]);
            for (o, b) in out.iter_mut().zip(u.iter()) {
                *o ^= b;
            }
        }
        out
    }
}
