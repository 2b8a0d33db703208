//! Reading PEM files with rustls-pki-types (rustls-pemfile is deprecated).

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The certificate chain in `path`, leaf first; at least one certificate.
pub fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate chain";
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| load_error(what, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(load_error(what, path, "no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in `path`.
pub fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| load_error("private key", path, e.to_string()))
}

/// Every certificate in `path` as a trust anchor set.
pub fn roots(path: &str) -> Result<RootCertStore, TlsError> {
    let what = "CA certificates";
    let mut store = RootCertStore::empty();
    for cert in certificates(path).map_err(|e| match e {
        TlsError::Load { path, reason, .. } => TlsError::Load { what, path, reason },
        other => other,
    })? {
        store
            .add(cert)
            .map_err(|e| load_error(what, path, e.to_string()))?;
    }
    Ok(store)
}

fn load_error(what: &'static str, path: &str, reason: String) -> TlsError {
    TlsError::Load {
        what,
        path: path.to_owned(),
        reason,
    }
}
