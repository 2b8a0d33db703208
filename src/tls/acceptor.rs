//! Client-facing TLS: the server certificate from `[tls]`, reloaded from
//! disk when its files change (Kubernetes rotates Secrets in place), and
//! optional client certificates (mTLS).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;

use super::stream::ClientStream;
use super::{TlsError, pem, provider};
use crate::config::TlsConfig;

/// The ALPN protocol PostgreSQL 17 clients send, required for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// Files are looked at no more often than this.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the certificate, key and client CA come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA certificates client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<String>,
}

impl TlsFiles {
    /// The files `[tls]` names; `None` when no certificate is configured.
    pub fn from_config(config: &TlsConfig) -> Option<Self> {
        Some(Self {
            cert: config.cert.clone()?,
            key: config.key.clone()?,
            client_ca: config.client_ca.clone(),
        })
    }
}

/// One loaded certificate, ready for handshakes.
#[derive(Debug)]
pub struct Loaded {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
    /// `tls-server-end-point` channel binding data of the leaf certificate.
    pub end_point_hash: Arc<[u8]>,
}

/// What a finished client handshake established.
#[derive(Debug)]
pub struct Accepted {
    /// The encrypted client connection.
    pub stream: ClientStream,
    /// Channel binding data of the certificate this handshake used.
    pub end_point_hash: Arc<[u8]>,
}

/// The client-facing TLS state: the certificate in force and when its files
/// were last looked at.
#[derive(Debug)]
pub struct Acceptor {
    files: TlsFiles,
    current: ArcSwap<Loaded>,
    last_check: Mutex<(Instant, FileStamp)>,
}

/// Modification time and size of each file, to notice a rotation.
type FileStamp = Vec<Option<(SystemTime, u64)>>;

impl Acceptor {
    /// Loads the files; fails naming the file that cannot be used.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let loaded = build(&files)?;
        Ok(Self {
            current: ArcSwap::from_pointee(loaded),
            last_check: Mutex::new((Instant::now(), stamp)),
            files,
        })
    }

    /// The certificate in force, after reloading it if its files changed
    /// (looked at most once per second; a file that fails to load keeps the
    /// previous certificate in force and is logged).
    pub fn current(&self) -> Arc<Loaded> {
        self.reload_if_changed();
        self.current.load_full()
    }

    fn reload_if_changed(&self) {
        // try_lock: one handshake checks, the others go on with what is loaded.
        let Ok(mut last) = self.last_check.try_lock() else {
            return;
        };
        if last.0.elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        // A few stat calls once a second; cheaper than a watcher task.
        let now = stamp(&self.files);
        last.0 = Instant::now();
        if now == last.1 {
            return;
        }
        match build(&self.files) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                last.1 = now;
                tracing::info!(cert = %self.files.cert, "TLS certificate reloaded");
            }
            Err(error) => {
                // Half-written files during a rotation: retry at the next check.
                tracing::warn!(%error, "TLS certificate changed but cannot be loaded; keeping the previous one");
            }
        }
    }

    /// Runs the server side of a TLS handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, TlsError> {
        let loaded = self.current();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&loaded.config));
        let stream = acceptor.accept(tcp).await.map_err(TlsError::Handshake)?;
        Ok(Accepted {
            stream: ClientStream::tls(stream),
            end_point_hash: Arc::clone(&loaded.end_point_hash),
        })
    }
}

fn stamp(files: &TlsFiles) -> FileStamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn build(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = pem::certificates(&files.cert)?;
    let key = pem::private_key(&files.key)?;
    let end_point_hash = super::end_point_hash(certs[0].as_ref()).into();
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(pem::roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        end_point_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use sha2::{Digest, Sha256};

    /// A self-signed certificate for `name`: (cert PEM, key PEM, end-point hash).
    fn make_cert(name: &str) -> (String, String, Arc<[u8]>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let hash = Sha256::digest(cert.der()).to_vec().into();
        (cert.pem(), key.serialize_pem(), hash)
    }

    fn write_cert(
        dir: &std::path::Path,
        (cert, key, hash): &(String, String, Arc<[u8]>),
    ) -> Arc<[u8]> {
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
        Arc::clone(hash)
    }

    fn files(dir: &std::path::Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("c.pem").display().to_string(),
            key: dir.join("k.pem").display().to_string(),
            client_ca: None,
        }
    }

    #[test]
    fn changed_files_are_loaded_at_the_next_check_and_bad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        // Made ahead: within the check interval there is only time to
        // write files, even on a loaded machine.
        let next = make_cert("second-name-longer");
        let first = write_cert(dir.path(), &make_cert("first"));
        let acceptor = Acceptor::load(files(dir.path())).unwrap();
        assert_eq!(acceptor.current().end_point_hash, first);

        let second = write_cert(dir.path(), &next);
        // Within the check interval nothing is looked at.
        assert_eq!(acceptor.current().end_point_hash, first);
        std::thread::sleep(RELOAD_CHECK_INTERVAL);
        assert_eq!(acceptor.current().end_point_hash, second);

        // A half-written rotation keeps the last good certificate.
        std::fs::write(dir.path().join("c.pem"), "-----BEGIN CERT").unwrap();
        std::thread::sleep(RELOAD_CHECK_INTERVAL);
        assert_eq!(acceptor.current().end_point_hash, second);
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Acceptor::load(files(dir.path())).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
        std::fs::write(dir.path().join("c.pem"), "").unwrap();
        let err = Acceptor::load(files(dir.path())).unwrap_err();
        assert!(err.to_string().contains("certificate chain"), "{err}");
    }
}
