//! The client side of SCRAM-SHA-256 with keys instead of a password: the
//! proof is built from a ClientKey (recovered from a client's own proof),
//! so the proxy logs in to a node without ever knowing the password.
//! postgres-protocol's client needs the password, hence this small file.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::secret::ScramKeys;

type HmacSha256 = Hmac<Sha256>;

/// One exchange in progress.
pub struct KeysExchange {
    keys: ScramKeys,
    nonce: String,
    state: State,
}

enum State {
    /// client-first sent.
    Started,
    /// client-final sent; the server's signature is expected.
    Proved { auth_message: String },
}

impl KeysExchange {
    /// Starts an exchange: the client-first-message is [`Self::client_first`].
    pub fn new(keys: ScramKeys) -> Self {
        let mut random = [0u8; 18];
        rand::rng().fill_bytes(&mut random);
        Self {
            keys,
            nonce: BASE64.encode(random),
            state: State::Started,
        }
    }

    /// The client-first-message (no channel binding; PostgreSQL ignores the name).
    pub fn client_first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    /// Answers the server-first-message with the client-final-message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, &'static str> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in text.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = BASE64.decode(v).ok(),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or("server nonce does not extend the client nonce")?;
        let (salt, iterations) = salt
            .zip(iterations)
            .ok_or("server-first lacks salt or iterations")?;
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(
                "the server's salt or iteration count differs from the verifier's (the node holds another verifier)",
            );
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("n=,r={},{text},{without_proof}", self.nonce);
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = self.keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature.iter()) {
            *p ^= s;
        }
        self.state = State::Proved { auth_message };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final-message: the node must prove it holds ServerKey.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), &'static str> {
        let State::Proved { auth_message } = &self.state else {
            return Err("server-final before server-first");
        };
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        let verifier = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or("server-final has no verifier")?;
        let expected = hmac(&self.keys.server_key, auth_message.as_bytes());
        if verifier.len() != expected.len()
            || verifier
                .iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return Err("server signature does not match the verifier");
        }
        Ok(())
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{AwaitingClientFinal, Binding, MECHANISM, ScramVerifier};

    /// The proxy's own SCRAM server stands in for PostgreSQL.
    #[test]
    fn keys_from_one_exchange_log_in_to_a_server_with_the_same_verifier() {
        let verifier = ScramVerifier::from_password("pw");
        // A real client proves the password; its ClientKey is recovered.
        let mut client = postgres_protocol::authentication::sasl::ScramSha256::new(
            b"pw",
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let server = AwaitingClientFinal::start(
            verifier.clone(),
            MECHANISM,
            client.message(),
            Binding::None,
        )
        .unwrap();
        client.update(server.server_first().as_bytes()).unwrap();
        let client_key = server.finish(client.message()).unwrap().client_key;

        let (salt, iterations) = verifier.salt_and_iterations();
        let keys = ScramKeys {
            client_key,
            server_key: verifier.server_key(),
            salt: salt.to_vec(),
            iterations,
        };
        let mut exchange = KeysExchange::new(keys);
        let node = AwaitingClientFinal::start(
            verifier,
            MECHANISM,
            exchange.client_first().as_bytes(),
            Binding::None,
        )
        .unwrap();
        let client_final = exchange.respond(node.server_first().as_bytes()).unwrap();
        let success = node.finish(client_final.as_bytes()).unwrap();
        exchange.finish(success.server_final.as_bytes()).unwrap();
        assert!(exchange.finish(b"v=AAAA").is_err());
    }

    #[test]
    fn garbage_from_the_server_is_an_error() {
        let keys = ScramKeys {
            client_key: [1; 32],
            server_key: [2; 32],
            salt: vec![3; 16],
            iterations: 4096,
        };
        let mut exchange = KeysExchange::new(keys);
        for input in [&b""[..], b"r=x,s=AAAA,i=1", b"\xff", b"r=,s=,i="] {
            assert!(exchange.respond(input).is_err());
        }
        assert!(exchange.finish(b"v=AAAA").is_err());
    }
}
