//! `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash of
//! the server's certificate, with the hash of its signature algorithm
//! (SHA-256 for MD5, SHA-1 and anything unrecognised), as libpq computes it.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::der::{OID, SEQUENCE, element};

/// ecdsa-with-SHA384 (1.2.840.10045.4.3.3).
const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
/// ecdsa-with-SHA512 (1.2.840.10045.4.3.4).
const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
/// sha384WithRSAEncryption (1.2.840.113549.1.1.12).
const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
/// sha512WithRSAEncryption (1.2.840.113549.1.1.13).
const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];

/// The channel binding data for the DER certificate `cert`.
pub fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    match signature_oid(cert) {
        Some(oid) if oid == ECDSA_SHA384 || oid == RSA_SHA384 => Sha384::digest(cert).to_vec(),
        Some(oid) if oid == ECDSA_SHA512 || oid == RSA_SHA512 => Sha512::digest(cert).to_vec(),
        _ => Sha256::digest(cert).to_vec(),
    }
}

/// The OID of `Certificate.signatureAlgorithm`:
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, .. }, .. }`.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (_, after_tbs) = element(certificate, SEQUENCE)?;
    let (algorithm, _) = element(after_tbs, SEQUENCE)?;
    let (oid, _) = element(algorithm, OID)?;
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(end_point_hash(&p256), Sha256::digest(&p256).to_vec());
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(end_point_hash(&p384), Sha384::digest(&p384).to_vec());
    }

    #[test]
    fn garbage_falls_back_to_sha256_without_panicking() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
        ] {
            assert_eq!(end_point_hash(input).len(), 32);
        }
    }
}
