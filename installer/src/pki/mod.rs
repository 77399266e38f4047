//! The cluster's PKI, made on the operator's machine and kept in `<state>/pki/`.
//!
//! Layout (one directory per CA, kubeadm's file names inside):
//!
//! ```text
//! pki/                       0700
//!   kubernetes/ca.crt|key    CA "kubernetes"      (the key also goes to masters: CSR signing)
//!   etcd/ca.crt|key          CA "etcd-ca"         (key kept on masters too: recovery)
//!   front-proxy/ca.crt|key   CA "front-proxy-ca"  (key kept on masters too: recovery)
//!   <ca-dir>/<stem>.crt|key  leaves signed by that CA
//!   sa.key, sa.pub           service-account token signing pair
//! ```
//!
//! Everything is ECDSA P-256. Re-running reuses what exists byte for byte; a leaf is re-issued
//! (with a new key) only when it no longer fits its [`LeafSpec`], was signed by another CA, or is
//! within 30 days of expiry. A CA or service-account key is never replaced automatically.

mod error;
mod inspect;
mod issue;
mod store;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use error::PkiError;
use issue::LoadedCa;
use store::{KEY_MODE, PUBLIC_MODE};

/// File stem of each CA inside its directory, as in kubeadm (`ca.crt`, `ca.key`).
const CA_STEM: &str = "ca";
const SERVICE_ACCOUNT_KEY: &str = "sa.key";
const SERVICE_ACCOUNT_PUBLIC_KEY: &str = "sa.pub";

/// The PKI directory of one cluster. Cheap to hold: files are read on each call.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and its private key, both PEM (the key PKCS#8, `-----BEGIN PRIVATE KEY-----`).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPairPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for KeyPairPem {
    /// Keeps private keys out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPairPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf certificate may be used for (its extendedKeyUsage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// TLS server only (serverAuth), e.g. the API server's serving certificate.
    Server,
    /// TLS client only (clientAuth), e.g. a kubeconfig user or apiserver-kubelet-client.
    Client,
    /// Both (serverAuth and clientAuth), e.g. etcd peer certificates.
    ServerAndClient,
}

/// The identity a leaf certificate must carry. Order inside the lists does not matter and
/// duplicates are ignored: a stored leaf is reused when the sets match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject CN; Kubernetes reads it as the user name of a client certificate.
    pub common_name: String,
    /// Subject O; Kubernetes reads it as the group (e.g. `system:masters`). At most one entry:
    /// rcgen 0.14 cannot encode a repeated subject attribute, and Kubernetes' own certificates
    /// never need two.
    pub organizations: Vec<String>,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// IP subjectAltNames.
    pub ips: Vec<IpAddr>,
    pub usage: Usage,
}

/// The three CAs of a cluster, as in kubeadm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaKind {
    /// Signs API server, kubelet and user certificates; CN "kubernetes".
    Kubernetes,
    /// Signs etcd server, peer and client certificates; CN "etcd-ca".
    Etcd,
    /// Signs the API server's aggregation-layer client certificate; CN "front-proxy-ca".
    FrontProxy,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Kubernetes, CaKind::Etcd, CaKind::FrontProxy];

    /// Subject CN of the CA certificate (kubeadm's names).
    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::Etcd => "etcd-ca",
            CaKind::FrontProxy => "front-proxy-ca",
        }
    }

    /// Directory under the PKI root holding this CA and the leaves it signed.
    pub fn subdir(self) -> &'static str {
        match self {
            CaKind::Kubernetes => "kubernetes",
            CaKind::Etcd => "etcd",
            CaKind::FrontProxy => "front-proxy",
        }
    }
}

/// A [`LeafSpec`] in the form stored certificates are compared against.
#[derive(Debug)]
struct WantedLeaf {
    common_name: String,
    organizations: BTreeSet<String>,
    dns_names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    usage: Usage,
}

impl WantedLeaf {
    fn from_spec(spec: &LeafSpec, cert_path: &Path) -> Result<WantedLeaf, PkiError> {
        let invalid = |reason: &str| PkiError::InvalidSpec {
            path: cert_path.to_path_buf(),
            reason: reason.to_owned(),
        };
        if spec.common_name.is_empty() {
            return Err(invalid("the common name is empty"));
        }
        if spec.organizations.iter().any(String::is_empty) {
            return Err(invalid("an organization is empty"));
        }
        let organizations: BTreeSet<String> = spec.organizations.iter().cloned().collect();
        if organizations.len() > 1 {
            return Err(invalid(
                "more than one organization (O) is not supported; rcgen cannot encode a repeated subject attribute",
            ));
        }
        if spec.dns_names.iter().any(String::is_empty) {
            return Err(invalid("a DNS name is empty"));
        }
        Ok(WantedLeaf {
            common_name: spec.common_name.clone(),
            organizations,
            dns_names: spec.dns_names.iter().cloned().collect(),
            ips: spec.ips.iter().copied().collect(),
            usage: spec.usage,
        })
    }
}

/// Leaf file stems become file names next to `ca.crt`: keep them plain and never `ca`.
fn check_stem(stem: &str) -> Result<(), PkiError> {
    let plain = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain && stem != CA_STEM {
        Ok(())
    } else {
        Err(PkiError::InvalidStem {
            stem: stem.to_owned(),
        })
    }
}

impl Pki {
    /// Opens `<dir>`, creating the three CAs (kubernetes-ca "kubernetes", etcd-ca "etcd-ca",
    /// front-proxy-ca "front-proxy-ca") and the service-account key pair when missing. The
    /// directories are made 0700 and keys 0600. Existing CAs are validated (parseable, a CA,
    /// key matching the certificate) and never replaced; an unusable file is an error naming it.
    pub fn open_or_init(dir: &Path) -> Result<Pki, PkiError> {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        store::ensure_private_dir(&pki.dir)?;
        let now = OffsetDateTime::now_utc();
        for kind in CaKind::ALL {
            store::ensure_private_dir(&pki.dir.join(kind.subdir()))?;
            let (cert_path, key_path) = pki.paths(kind, CA_STEM);
            // The certificate is written last, so its presence means the pair is complete; a
            // key without a certificate is a leftover of an interrupted first run.
            if store::read_optional(&cert_path)?.is_none() {
                let ca = issue::new_ca(kind.common_name(), now, &cert_path)?;
                store::write_atomic(&key_path, &ca.key_pem, KEY_MODE)?;
                store::write_atomic(&cert_path, &ca.cert_pem, PUBLIC_MODE)?;
                tracing::info!(path = %cert_path.display(), "created CA {}", kind.common_name());
            }
            pki.load_ca(kind)?;
        }
        pki.init_service_account()?;
        Ok(pki)
    }

    /// The PKI root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's certificate and private key, as stored.
    pub fn ca(&self, kind: CaKind) -> Result<KeyPairPem, PkiError> {
        Ok(self.load_ca(kind)?.0)
    }

    /// `(sa.key, sa.pub)`: the PKCS#8 PEM private key that signs service-account tokens
    /// (`kube-controller-manager --service-account-private-key-file`,
    /// `kube-apiserver --service-account-signing-key-file`) and its SubjectPublicKeyInfo PEM
    /// (`kube-apiserver --service-account-key-file`).
    pub fn service_account(&self) -> Result<(String, String), PkiError> {
        let key_path = self.dir.join(SERVICE_ACCOUNT_KEY);
        let public_path = self.dir.join(SERVICE_ACCOUNT_PUBLIC_KEY);
        let key_pem = read_required(&key_path)?;
        let public_pem = read_required(&public_path)?;
        let key = inspect::parse_key(&key_path, &key_pem)?;
        let public_der = inspect::parse_public_key(&public_path, &public_pem)?;
        if public_der != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(PkiError::KeyMismatch {
                cert: public_path,
                key: key_path,
            });
        }
        Ok((key_pem, public_pem))
    }

    /// Loads `<dir>/<kind-subdir>/<stem>.crt|.key` if present, signed by that CA, and matching
    /// `spec` (CN, O, SAN set, usage) with more than 30 days left; otherwise issues a new one
    /// (new key), writes it atomically (key 0600) and returns it. A stored file that cannot be
    /// parsed is an error naming it rather than being overwritten.
    pub fn leaf(&self, kind: CaKind, stem: &str, spec: &LeafSpec) -> Result<KeyPairPem, PkiError> {
        self.leaf_at(kind, stem, spec, OffsetDateTime::now_utc())
    }

    fn leaf_at(
        &self,
        kind: CaKind,
        stem: &str,
        spec: &LeafSpec,
        now: OffsetDateTime,
    ) -> Result<KeyPairPem, PkiError> {
        check_stem(stem)?;
        let (cert_path, key_path) = self.paths(kind, stem);
        let wanted = WantedLeaf::from_spec(spec, &cert_path)?;
        let (_, ca) = self.load_ca(kind)?;
        if inspect::has_subject_of(&inspect::x509(&ca.cert_der), &wanted) {
            return Err(PkiError::InvalidSpec {
                path: cert_path,
                reason: format!(
                    "the subject is the same as the {} CA's; TLS clients would take the leaf for the CA",
                    kind.common_name()
                ),
            });
        }

        let stored_cert = store::read_optional(&cert_path)?;
        let stored_key = store::read_optional(&key_path)?;
        if let (Some(cert_pem), Some(key_pem)) = (stored_cert, stored_key) {
            let cert_der = inspect::parse_cert(&cert_path, &cert_pem)?;
            let key = inspect::parse_key(&key_path, &key_pem)?;
            let drift = inspect::leaf_drift(
                &inspect::x509(&cert_der),
                &key,
                &inspect::x509(&ca.cert_der),
                &wanted,
                now,
            );
            match drift {
                None => return Ok(KeyPairPem { cert_pem, key_pem }),
                Some(reason) => {
                    tracing::info!(path = %cert_path.display(), "re-issuing: {reason}");
                }
            }
        }

        let issued = issue::new_leaf(&wanted, &ca, now, issue::LEAF_VALIDITY, &cert_path)?;
        // Key first: a crash in between leaves an old certificate with a new key, which the next
        // run sees as a mismatch and re-issues.
        store::write_atomic(&key_path, &issued.key_pem, KEY_MODE)?;
        store::write_atomic(&cert_path, &issued.cert_pem, PUBLIC_MODE)?;
        Ok(issued)
    }

    /// A new certificate and key for `spec`, valid for `validity` (never past the CA), that is
    /// not stored: for credentials handed to someone else (`ilha kubeconfig`), which the state
    /// directory records but must not keep the key of. `label` names it in errors.
    pub fn issue_unstored(
        &self,
        kind: CaKind,
        label: &str,
        spec: &LeafSpec,
        validity: time::Duration,
    ) -> Result<KeyPairPem, PkiError> {
        let path = self.dir.join(kind.subdir()).join(label);
        let wanted = WantedLeaf::from_spec(spec, &path)?;
        let (_, ca) = self.load_ca(kind)?;
        issue::new_leaf(&wanted, &ca, OffsetDateTime::now_utc(), validity, &path)
    }

    fn paths(&self, kind: CaKind, stem: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(kind.subdir());
        (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        )
    }

    /// Reads and validates a CA: both files parse, the key belongs to the certificate, and the
    /// certificate is a CA.
    fn load_ca(&self, kind: CaKind) -> Result<(KeyPairPem, LoadedCa), PkiError> {
        let (cert_path, key_path) = self.paths(kind, CA_STEM);
        let cert_pem = read_required(&cert_path)?;
        let Some(key_pem) = store::read_optional(&key_path)? else {
            return Err(PkiError::MissingKey {
                cert: cert_path,
                key: key_path,
            });
        };
        let cert_der = inspect::parse_cert(&cert_path, &cert_pem)?;
        let key = inspect::parse_key(&key_path, &key_pem)?;
        let cert = inspect::x509(&cert_der);
        if !inspect::key_matches(&cert, &key) {
            return Err(PkiError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        if !inspect::is_ca(&cert) {
            return Err(PkiError::NotACa { path: cert_path });
        }
        let not_after = cert.validity().not_after.to_datetime();
        Ok((
            KeyPairPem { cert_pem, key_pem },
            LoadedCa {
                cert_der,
                key,
                not_after,
            },
        ))
    }

    /// The key is the source of truth: made when missing, and `sa.pub` re-derived from it when
    /// missing. An existing `sa.pub` that does not match is an error, not overwritten.
    fn init_service_account(&self) -> Result<(), PkiError> {
        let key_path = self.dir.join(SERVICE_ACCOUNT_KEY);
        let public_path = self.dir.join(SERVICE_ACCOUNT_PUBLIC_KEY);
        let key = match store::read_optional(&key_path)? {
            Some(key_pem) => inspect::parse_key(&key_path, &key_pem)?,
            None => {
                let key = issue::new_key(&key_path)?;
                store::write_atomic(&key_path, &key.serialize_pem(), KEY_MODE)?;
                // A stale public key from an interrupted run must not survive the new key.
                store::write_atomic(&public_path, &key.public_key_pem(), PUBLIC_MODE)?;
                return Ok(());
            }
        };
        match store::read_optional(&public_path)? {
            None => store::write_atomic(&public_path, &key.public_key_pem(), PUBLIC_MODE),
            Some(_) => self.service_account().map(drop),
        }
    }
}

fn read_required(path: &Path) -> Result<String, PkiError> {
    store::read_optional(path)?.ok_or_else(|| PkiError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "missing (the PKI was never initialised here, or the file was removed)",
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests;
