//! Reading stored certificates and keys back, and deciding whether a stored leaf still fits what
//! is asked of it. Unparseable files are errors naming the file; a parseable leaf that no longer
//! fits is simply re-issued.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{PkiError, Usage, WantedLeaf};

/// A leaf this close to expiry is re-issued instead of reused: it would otherwise lapse between
/// two runs of `ilha up`.
pub(super) const LEAF_RENEW_BEFORE: Duration = Duration::days(30);

/// Decodes a PEM certificate file to DER, checking that the DER parses as X.509.
pub(super) fn parse_cert(path: &Path, pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let corrupt = |reason: String| PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "PEM certificate",
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|error| corrupt(format!("bad PEM: {error}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(corrupt(format!(
            "PEM block is `{}`, expected `CERTIFICATE`",
            pem.label
        )));
    }
    X509Certificate::from_der(&pem.contents)
        .map_err(|error| corrupt(format!("bad X.509: {error}")))?;
    Ok(pem.contents)
}

/// Parses DER already checked by [`parse_cert`].
pub(super) fn x509(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der)
        .expect("DER was validated when the file was read")
        .1
}

/// Parses a PKCS#8 PEM private key.
pub(super) fn parse_key(path: &Path, pem_text: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem_text).map_err(|error| PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "PKCS#8 PEM private key",
        reason: error.to_string(),
    })
}

/// Parses a SubjectPublicKeyInfo PEM public key, returning its DER.
pub(super) fn parse_public_key(path: &Path, pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let corrupt = |reason: String| PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "PEM public key",
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|error| corrupt(format!("bad PEM: {error}")))?;
    if pem.label != "PUBLIC KEY" {
        return Err(corrupt(format!(
            "PEM block is `{}`, expected `PUBLIC KEY`",
            pem.label
        )));
    }
    x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
        .map_err(|error| corrupt(format!("bad SubjectPublicKeyInfo: {error}")))?;
    Ok(pem.contents)
}

pub(super) fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

pub(super) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(constraints)) if constraints.value.ca)
}

/// Why the stored leaf cannot be reused for `wanted`, or `None` when it can.
pub(super) fn leaf_drift(
    cert: &X509Certificate<'_>,
    key: &KeyPair,
    ca: &X509Certificate<'_>,
    wanted: &WantedLeaf,
    now: OffsetDateTime,
) -> Option<String> {
    if !key_matches(cert, key) {
        return Some("its key does not match the certificate".into());
    }
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Some("its key is not ECDSA P-256".into());
    }
    if cert.issuer().to_string() != ca.subject().to_string()
        || cert.verify_signature(Some(ca.public_key())).is_err()
    {
        return Some("it was not signed by the current CA".into());
    }
    if is_ca(cert) {
        return Some("it is a CA certificate".into());
    }
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if now < not_before {
        return Some(format!("it is not valid before {not_before}"));
    }
    if now + LEAF_RENEW_BEFORE > not_after {
        return Some(format!("it expires on {not_after}"));
    }
    subject_drift(cert, wanted)
        .or_else(|| san_drift(cert, wanted))
        .or_else(|| usage_drift(cert, wanted.usage))
}

/// A leaf whose subject equals its CA's looks self-issued: OpenSSL and Go stop building the
/// chain at it and reject it.
pub(super) fn has_subject_of(ca: &X509Certificate<'_>, wanted: &WantedLeaf) -> bool {
    subject_drift(ca, wanted).is_none()
}

fn subject_drift(cert: &X509Certificate<'_>, wanted: &WantedLeaf) -> Option<String> {
    let subject = cert.subject();
    let text_of = |attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attribute.as_str().ok().map(str::to_owned)
    };
    let common_names: Option<Vec<String>> = subject.iter_common_name().map(text_of).collect();
    let organizations: Option<BTreeSet<String>> =
        subject.iter_organization().map(text_of).collect();
    let (Some(common_names), Some(organizations)) = (common_names, organizations) else {
        return Some(format!("its subject `{subject}` has non-text CN or O"));
    };
    let attribute_count = subject.iter_attributes().count();
    if common_names != [wanted.common_name.as_str()] {
        return Some(format!("its CN is {common_names:?}"));
    }
    if organizations != wanted.organizations {
        return Some(format!("its O is {organizations:?}"));
    }
    if attribute_count != 1 + wanted.organizations.len() {
        return Some(format!("its subject `{subject}` has other attributes"));
    }
    None
}

fn san_drift(cert: &X509Certificate<'_>, wanted: &WantedLeaf) -> Option<String> {
    let mut dns_names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    match cert.subject_alternative_name() {
        Ok(None) => {}
        Ok(Some(extension)) => {
            for name in &extension.value.general_names {
                match name {
                    GeneralName::DNSName(dns_name) => {
                        dns_names.insert((*dns_name).to_owned());
                    }
                    GeneralName::IPAddress(octets) => match ip_from_octets(octets) {
                        Some(ip) => {
                            ips.insert(ip);
                        }
                        None => return Some("it has a malformed IP SAN".into()),
                    },
                    other => return Some(format!("it has an unexpected SAN {other:?}")),
                }
            }
        }
        Err(error) => return Some(format!("its SAN extension is unreadable: {error}")),
    }
    if dns_names != wanted.dns_names {
        return Some(format!("its DNS SANs are {dns_names:?}"));
    }
    if ips != wanted.ips {
        return Some(format!("its IP SANs are {ips:?}"));
    }
    None
}

fn ip_from_octets(octets: &[u8]) -> Option<IpAddr> {
    match octets.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(octets).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(octets).ok()?)),
        _ => None,
    }
}

fn usage_drift(cert: &X509Certificate<'_>, usage: Usage) -> Option<String> {
    let key_usage_ok = matches!(
        cert.key_usage(),
        Ok(Some(key_usage)) if key_usage.value.digital_signature()
    );
    if !key_usage_ok {
        return Some("its key usage lacks digitalSignature".into());
    }
    let (want_server, want_client) = match usage {
        Usage::Server => (true, false),
        Usage::Client => (false, true),
        Usage::ServerAndClient => (true, true),
    };
    let has = match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let eku = eku.value;
            let others = eku.any
                || eku.code_signing
                || eku.email_protection
                || eku.time_stamping
                || eku.ocsp_signing
                || !eku.other.is_empty();
            (eku.server_auth, eku.client_auth, others)
        }
        Ok(None) => (false, false, false),
        Err(error) => return Some(format!("its extended key usage is unreadable: {error}")),
    };
    if has != (want_server, want_client, false) {
        return Some(format!(
            "its extended key usage is not {usage:?} (serverAuth {}, clientAuth {}, other {})",
            has.0, has.1, has.2
        ));
    }
    None
}
