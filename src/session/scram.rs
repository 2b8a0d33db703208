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
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::InvalidVerifier)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::InvalidVerifier)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::InvalidVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::InvalidVerifier)?;
        Ok(Self {
            iterations: iterations
                .parse()
                .map_err(|_| ScramError::InvalidVerifier)?,
            salt: decode(salt).ok_or(ScramError::InvalidVerifier)?,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
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
#[derive(Debug)]
pub struct ScramSuccess {
    /// The server-final-message to send in AuthenticationSASLFinal.
    pub server_final: String,
}

impl AwaitingClientFinal {
    /// Reads the client-first-message and prepares the server-first-message.
    pub fn start(verifier: ScramVerifier, client_first: &[u8]) -> Result<Self, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed("empty"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let bare = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("invalid channel binding flag")),
        }
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
        Ok(Self {
            verifier,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
            channel_binding_b64: BASE64.encode(gs2_header),
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
            return Err(ScramError::Malformed("channel binding does not match"));
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
        })
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
        let server = AwaitingClientFinal::start(verifier, client.message())?;
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
        let err =
            AwaitingClientFinal::start(verifier, b"p=tls-server-end-point,,n=,r=abc").unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingUnsupported);
    }

    #[test]
    fn garbage_messages_are_malformed_not_panics() {
        for input in [&b""[..], b"n", b"n,,", b"x,,r=a", b"n,,n=,r=", b"\xff\xfe"] {
            let verifier = ScramVerifier::from_password("pw");
            assert!(AwaitingClientFinal::start(verifier, input).is_err());
        }
        let verifier = ScramVerifier::from_password("pw");
        let server = AwaitingClientFinal::start(verifier, b"n,,n=,r=abc").unwrap();
        assert!(server.finish(b"c=biws,r=wrong,p=AAAA").is_err());
    }
}
