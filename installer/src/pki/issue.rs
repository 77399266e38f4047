//! Making new keys and certificates with rcgen, following kubeadm's profile: ECDSA P-256, CAs
//! valid 10 years, leaves 1 year, `not_before` backdated for clock skew between hosts.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

use super::store::random_serial;
use super::{KeyPairPem, PkiError, Usage, WantedLeaf};

/// kubeadm's `CACertificateValidityPeriod`.
pub(super) const CA_VALIDITY: Duration = Duration::days(365 * 10);
/// kubeadm's `CertificateValidityPeriod`.
pub(super) const LEAF_VALIDITY: Duration = Duration::days(365);
/// kubeadm's `CertificateBackdate`: hosts whose clock lags the operator's still accept the
/// certificate right away.
pub(super) const BACKDATE: Duration = Duration::minutes(5);

/// The signing side of a CA, loaded from its stored files.
pub(super) struct LoadedCa {
    pub cert_der: Vec<u8>,
    pub key: KeyPair,
    pub not_after: OffsetDateTime,
}

fn issue_error(path: &Path) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Issue {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn new_key(path: &Path) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_error(path))
}

/// A fresh self-signed CA with a new key. `cert_path` only names the target in errors.
pub(super) fn new_ca(
    common_name: &str,
    now: OffsetDateTime,
    cert_path: &Path,
) -> Result<KeyPairPem, PkiError> {
    let key = new_key(cert_path)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key).map_err(issue_error(cert_path))?;
    Ok(KeyPairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf for `wanted` with a new key, signed by `ca`. Never outlives the CA.
pub(super) fn new_leaf(
    wanted: &WantedLeaf,
    ca: &LoadedCa,
    now: OffsetDateTime,
    validity: Duration,
    cert_path: &Path,
) -> Result<KeyPairPem, PkiError> {
    let key = new_key(cert_path)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // Kubernetes maps O to groups and CN to the user name, in this order of preference.
    for organization in &wanted.organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization.as_str());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, wanted.common_name.as_str());
    for dns_name in &wanted.dns_names {
        let name = dns_name
            .as_str()
            .try_into()
            .map_err(issue_error(cert_path))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &wanted.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match wanted.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = now - BACKDATE;
    params.not_after = (now + validity).min(ca.not_after);

    // The issuer's name and key identifier come from the stored CA certificate, so the leaf's
    // issuer and authority key identifier match it byte for byte.
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der.as_slice().into(), &ca.key)
        .map_err(issue_error(cert_path))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(issue_error(cert_path))?;
    Ok(KeyPairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
