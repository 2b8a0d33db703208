//! What the proxy logs in to a node with: a password, or SCRAM keys
//! recovered from a client's proof when only a verifier is known.

use std::fmt;

/// The secret for one user's server logins.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plaintext password (SCRAM-SHA-256, md5 or cleartext, as the node asks).
    Password(String),
    /// SCRAM keys: works only with SCRAM-SHA-256 against a node that holds
    /// the verifier these keys belong to.
    ScramKeys(ScramKeys),
    /// A stored md5 hash (`md5…`, as in pg_authid): works only against a
    /// node that asks for md5.
    Md5Hash(String),
}

/// A SCRAM verifier's keys plus the ClientKey a client proved it knows.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// ClientKey = HMAC(SaltedPassword, "Client Key"), recovered from a client's proof.
    pub client_key: [u8; 32],
    /// ServerKey from the verifier, to check the node's signature.
    pub server_key: [u8; 32],
    /// The verifier's salt; the node must send the same one.
    pub salt: Vec<u8>,
    /// The verifier's iteration count; the node must send the same one.
    pub iterations: u32,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: secrets stay out of logs.
        match self {
            Self::Password(_) => f.write_str("Secret::Password(..)"),
            Self::ScramKeys(_) => f.write_str("Secret::ScramKeys(..)"),
            Self::Md5Hash(_) => f.write_str("Secret::Md5Hash(..)"),
        }
    }
}

impl From<String> for Secret {
    fn from(password: String) -> Self {
        Self::Password(password)
    }
}

impl From<&str> for Secret {
    fn from(password: &str) -> Self {
        Self::Password(password.to_owned())
    }
}
