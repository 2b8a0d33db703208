//! TLS on both sides of the proxy, with rustls and its ring provider only
//! (DESIGN.md decision 10: no aws-lc-rs in the tree).
//!
//! A module of its own because the listener (client-facing) and the
//! backend (server-facing) share the stream type and the PEM loading.

pub mod acceptor;
pub mod client_user;
pub mod connector;
mod der;
mod end_point;
mod error;
mod pem;
pub mod stream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use acceptor::{Acceptor, TlsFiles};
pub use client_user::{CertUserError, CertificateNames, check_user};
pub use connector::Connector;
pub use end_point::end_point_hash;
pub use error::TlsError;
pub use stream::{ClientStream, MaybeTls, ServerStream};

/// The one crypto provider every TLS configuration is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    /// DESIGN.md decision 10, as the issue words it (`cargo tree -i
    /// aws-lc-rs` finds nothing): not even an optional dependency resolves it.
    #[test]
    fn aws_lc_rs_is_nowhere_in_the_lockfile() {
        assert!(!include_str!("../../Cargo.lock").contains("aws-lc"));
    }
}
