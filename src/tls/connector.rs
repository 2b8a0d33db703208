//! Server-facing TLS: how the proxy encrypts its connections to the
//! PostgreSQL nodes (`[server_tls]`), with libpq's sslmode semantics.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use super::stream::ServerStream;
use super::{TlsError, pem, provider};
use crate::config::{ServerTlsConfig, ServerTlsMode};

/// How connections to the nodes are encrypted; built once from the config.
#[derive(Debug, Clone)]
pub struct Connector {
    mode: ServerTlsMode,
    config: Option<Arc<ClientConfig>>,
}

impl Default for Connector {
    /// No TLS to the nodes.
    fn default() -> Self {
        Self {
            mode: ServerTlsMode::Disable,
            config: None,
        }
    }
}

impl Connector {
    /// Builds the TLS client configuration `[server_tls]` asks for, loading
    /// `ca_file` for verify-ca and verify-full.
    pub fn from_config(config: &ServerTlsConfig) -> Result<Self, TlsError> {
        if config.mode == ServerTlsMode::Disable {
            return Ok(Self::default());
        }
        let roots = match (&config.ca_file, config.mode) {
            (Some(path), _) => Some(Arc::new(pem::roots(path)?)),
            (None, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull) => {
                return Err(TlsError::Verifier(
                    "server_tls.ca_file is required for verify-ca and verify-full".into(),
                ));
            }
            (None, _) => None,
        };
        let verifier = PolicyVerifier {
            // prefer and require encrypt without checking who answers, as libpq does.
            roots: roots.filter(|_| config.mode.verifies()),
            check_name: config.mode == ServerTlsMode::VerifyFull,
            algorithms: provider().signature_verification_algorithms,
        };
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            mode: config.mode,
            config: Some(Arc::new(client)),
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> ServerTlsMode {
        self.mode
    }

    /// Runs the client side of a TLS handshake with the node `host`
    /// (sent as SNI when it is a name), verifying as the mode says.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<ServerStream, TlsError> {
        let Some(config) = &self.config else {
            return Ok(ServerStream::Plain(tcp));
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError::Verifier(format!("invalid server name {host:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(TlsError::Handshake)?;
        Ok(ServerStream::tls(stream))
    }
}

/// Checks the node's certificate as the mode asks: against `roots` when
/// set, and its name when `check_name`. Handshake signatures are always
/// verified, so the peer holds the certificate's key.
#[derive(Debug)]
struct PolicyVerifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PolicyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
