//! mTLS name-to-user: which users a client certificate may log in as
//! (`tls.client_cert_user`, `tls.client_cert_map`), as PostgreSQL's
//! `clientcert=verify-full` matches the certificate's CN to the user, with
//! the map in the role of pg_ident.conf.
//!
//! The certificate has already chained to `tls.client_ca` in the handshake;
//! this only reads the names out of it and compares them, exactly and
//! case-sensitively, with the user the StartupMessage asks for.

use std::collections::BTreeMap;

use thiserror::Error;

use super::der::{self, BOOLEAN, INTEGER, OCTET_STRING, OID, SEQUENCE, SET};
use crate::config::ClientCertUser;

/// id-at-commonName (2.5.4.3).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName (2.5.29.17).
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// `[0] EXPLICIT Version` in TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[1] rfc822Name` (an email address).
const SAN_EMAIL: u8 = 0x81;
/// GeneralName `[2] dNSName`.
const SAN_DNS: u8 = 0x82;

/// The names a client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// The subject's first commonName, when it is a UTF8String,
    /// PrintableString or IA5String (PostgreSQL, too, reads the first).
    pub common_name: Option<String>,
    /// subjectAltName DNS names and email addresses, in order.
    pub alt_names: Vec<String>,
}

impl CertificateNames {
    /// Reads the names of the DER certificate `cert`; `None` when it is not
    /// laid out as an X.509 certificate.
    pub fn from_der(cert: &[u8]) -> Option<Self> {
        let (certificate, _) = der::element(cert, SEQUENCE)?;
        let (tbs, _) = der::element(certificate, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&VERSION) {
            rest = der::element(rest, VERSION)?.1;
        }
        let (_serial, rest) = der::element(rest, INTEGER)?;
        let (_signature, rest) = der::element(rest, SEQUENCE)?;
        let (_issuer, rest) = der::element(rest, SEQUENCE)?;
        let (_validity, rest) = der::element(rest, SEQUENCE)?;
        let (subject, rest) = der::element(rest, SEQUENCE)?;
        let (_key, mut rest) = der::element(rest, SEQUENCE)?;
        let mut alt_names = Vec::new();
        // issuerUniqueID, subjectUniqueID (v2, never seen), then extensions.
        while let Some((tag, contents, after)) = der::any(rest) {
            if tag == EXTENSIONS {
                alt_names = subject_alt_names(contents)?;
            }
            rest = after;
        }
        Some(Self {
            common_name: common_name(subject),
            alt_names,
        })
    }

    /// The names `rule` lets stand for a user: the CN, and with
    /// `cn-or-san` the alternative names too.
    pub fn for_rule(&self, rule: ClientCertUser) -> impl Iterator<Item = &str> {
        let alt = match rule {
            ClientCertUser::CnOrSan => &self.alt_names[..],
            ClientCertUser::Off | ClientCertUser::Cn => &[],
        };
        self.common_name
            .as_deref()
            .into_iter()
            .chain(alt.iter().map(String::as_str))
    }
}

/// The first commonName of a `Name` (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(subject: &[u8]) -> Option<String> {
    let mut rdns = subject;
    while let Some((rdn, after)) = der::element(rdns, SET) {
        let mut attributes = rdn;
        while let Some((attribute, next)) = der::element(attributes, SEQUENCE) {
            let (oid, value) = der::element(attribute, OID)?;
            if oid == OID_COMMON_NAME {
                // The first CN decides, even if unreadable: a later one
                // must not stand in for it.
                return directory_string(value);
            }
            attributes = next;
        }
        rdns = after;
    }
    None
}

/// A DirectoryString in the encodings that carry plain text.
fn directory_string(value: &[u8]) -> Option<String> {
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    match der::any(value)? {
        (UTF8_STRING | PRINTABLE_STRING | IA5_STRING, text, _) => text_name(text),
        _ => None,
    }
}

/// Text that can be a user name: UTF-8 without NUL (a NUL would let
/// "alice\0x" pass a C-string comparison with "alice" elsewhere).
fn text_name(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    (!text.contains('\0')).then(|| text.to_owned())
}

/// DNS names and email addresses from the extensions, if there is a
/// subjectAltName; `None` when the extensions are malformed.
fn subject_alt_names(explicit: &[u8]) -> Option<Vec<String>> {
    let (extensions, _) = der::element(explicit, SEQUENCE)?;
    let mut rest = extensions;
    while let Some((extension, after)) = der::element(rest, SEQUENCE) {
        let (oid, mut fields) = der::element(extension, OID)?;
        if oid == OID_SUBJECT_ALT_NAME {
            if fields.first() == Some(&BOOLEAN) {
                fields = der::element(fields, BOOLEAN)?.1;
            }
            let (value, _) = der::element(fields, OCTET_STRING)?;
            let (mut general_names, _) = der::element(value, SEQUENCE)?;
            let mut names = Vec::new();
            while let Some((tag, contents, next)) = der::any(general_names) {
                if matches!(tag, SAN_DNS | SAN_EMAIL)
                    && let Some(name) = text_name(contents)
                {
                    names.push(name);
                }
                general_names = next;
            }
            return Some(names);
        }
        rest = after;
    }
    Some(Vec::new())
}

/// Why a client certificate does not let its client log in as the user it asked for.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertUserError {
    /// No certificate: a plaintext client, or TLS without one.
    #[error(
        "certificate authentication failed for user \"{user}\": no client certificate was presented (tls.client_cert_user requires one)"
    )]
    Missing {
        /// The user asked for.
        user: String,
    },
    /// The certificate's names could not be read.
    #[error(
        "certificate authentication failed for user \"{user}\": the client certificate's names cannot be read"
    )]
    Unreadable {
        /// The user asked for.
        user: String,
    },
    /// The certificate names someone else.
    #[error(
        "certificate authentication failed for user \"{user}\": the client certificate is for {names} (tls.client_cert_user = \"{rule}\")"
    )]
    Mismatch {
        /// The user asked for.
        user: String,
        /// The certificate's names the rule considered, quoted.
        names: String,
        /// The rule in force.
        rule: &'static str,
    },
}

/// Checks that the client certificate `cert` (DER, the leaf) lets its
/// client log in as `user`: one of its names under `rule` is `user`, or
/// is mapped to `user` by `map`. `ClientCertUser::Off` allows everyone.
pub fn check_user(
    rule: ClientCertUser,
    map: &BTreeMap<String, Vec<String>>,
    cert: Option<&[u8]>,
    user: &str,
) -> Result<(), CertUserError> {
    if rule == ClientCertUser::Off {
        return Ok(());
    }
    let Some(cert) = cert else {
        return Err(CertUserError::Missing { user: user.into() });
    };
    let Some(names) = CertificateNames::from_der(cert) else {
        return Err(CertUserError::Unreadable { user: user.into() });
    };
    let allowed = names.for_rule(rule).any(|name| {
        name == user
            || map
                .get(name)
                .is_some_and(|users| users.iter().any(|u| u == user))
    });
    if allowed {
        return Ok(());
    }
    let quoted: Vec<String> = names.for_rule(rule).map(|n| format!("{n:?}")).collect();
    Err(CertUserError::Mismatch {
        user: user.into(),
        names: if quoted.is_empty() {
            "no usable name".into()
        } else {
            quoted.join(", ")
        },
        rule: rule.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: &[SanType]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // rcgen names its certificates "rcgen self signed cert" by default.
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(DnType::OrganizationName, "org");
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans.to_vec();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    #[test]
    fn names_are_read_from_the_subject_and_subject_alt_name() {
        let der = cert(
            Some("alice"),
            &[
                dns("alice.example.com"),
                SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
        );
        let names = CertificateNames::from_der(&der).unwrap();
        assert_eq!(names.common_name.as_deref(), Some("alice"));
        assert_eq!(names.alt_names, ["alice.example.com", "alice@example.com"]);
        let none = CertificateNames::from_der(&cert(None, &[])).unwrap();
        assert_eq!(none, CertificateNames::default());
    }

    #[test]
    fn cn_rule_matches_the_common_name_or_the_map_only() {
        let der = cert(Some("alice"), &[dns("bob")]);
        let map = BTreeMap::from([("alice".to_owned(), vec!["reports".to_owned()])]);
        let check = |rule, user| check_user(rule, &map, Some(&der), user);
        assert_eq!(check(ClientCertUser::Cn, "alice"), Ok(()));
        assert_eq!(check(ClientCertUser::Cn, "reports"), Ok(()));
        let err = check(ClientCertUser::Cn, "bob").unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate authentication failed for user \"bob\": the client certificate is for \"alice\" (tls.client_cert_user = \"cn\")"
        );
        assert_eq!(check(ClientCertUser::CnOrSan, "bob"), Ok(()));
        assert!(
            check(ClientCertUser::Cn, "Alice").is_err(),
            "case-sensitive"
        );
        assert_eq!(check(ClientCertUser::Off, "anyone"), Ok(()));
    }

    #[test]
    fn missing_or_unreadable_certificates_are_refused_unless_off() {
        let map = BTreeMap::new();
        assert!(matches!(
            check_user(ClientCertUser::Cn, &map, None, "app"),
            Err(CertUserError::Missing { .. })
        ));
        assert!(matches!(
            check_user(ClientCertUser::Cn, &map, Some(b"\x30\x00"), "app"),
            Err(CertUserError::Unreadable { .. })
        ));
        assert_eq!(check_user(ClientCertUser::Off, &map, None, "app"), Ok(()));
        let nameless = cert(None, &[]);
        let err = check_user(ClientCertUser::CnOrSan, &map, Some(&nameless), "app").unwrap_err();
        assert!(err.to_string().contains("no usable name"), "{err}");
    }

    #[test]
    fn truncated_certificates_read_as_none_without_panicking() {
        let der = cert(Some("alice"), &[dns("alice.example.com")]);
        for len in 0..der.len() {
            // Any prefix is either unreadable or reads the names it still holds.
            let _ = CertificateNames::from_der(&der[..len]);
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = CertificateNames::from_der(&flipped);
            flipped[i] ^= 0xff;
        }
    }
}
