//! md5 password authentication, for clients and nodes still on it: the
//! stored hash PostgreSQL keeps in `pg_authid` (`md5` + hex(md5(password ||
//! user))) and the salted response exchanged on the wire.

use ::md5::{Digest, Md5};

/// How a stored md5 hash starts.
pub const HASH_PREFIX: &str = "md5";

/// True when `password` is a stored md5 hash rather than a password.
pub fn is_stored_hash(password: &str) -> bool {
    password.len() == 35
        && password.starts_with(HASH_PREFIX)
        && password[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hash PostgreSQL stores for `user` with `password`.
pub fn stored_hash(user: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(password.as_bytes());
    md5.update(user.as_bytes());
    format!("{HASH_PREFIX}{}", hex(&md5.finalize()))
}

/// The PasswordMessage a client sends for `stored` (a stored hash) and the
/// server's `salt`.
pub fn salted_response(stored: &str, salt: [u8; 4]) -> String {
    let mut md5 = Md5::new();
    md5.update(
        stored
            .get(HASH_PREFIX.len()..)
            .unwrap_or_default()
            .as_bytes(),
    );
    md5.update(salt);
    format!("{HASH_PREFIX}{}", hex(&md5.finalize()))
}

/// True when the client's `response` matches; compared in constant time.
pub fn response_matches(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = salted_response(stored, salt);
    expected.len() == response.len()
        && expected
            .bytes()
            .zip(response)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_and_libpq() {
        // SELECT 'md5' || md5('secret' || 'app') in PostgreSQL.
        let stored = stored_hash("app", "secret");
        assert!(is_stored_hash(&stored));
        assert!(!is_stored_hash("secret"));
        // libpq computes the response from the password: the same bytes.
        let from_password =
            postgres_protocol::authentication::md5_hash(b"app", b"secret", [1, 2, 3, 4]);
        assert_eq!(salted_response(&stored, [1, 2, 3, 4]), from_password);
        assert!(response_matches(
            &stored,
            [1, 2, 3, 4],
            from_password.as_bytes()
        ));
        assert!(!response_matches(
            &stored,
            [1, 2, 3, 5],
            from_password.as_bytes()
        ));
        assert!(!response_matches(&stored, [1, 2, 3, 4], b"md5"));
    }
}
