//! Unit tests for the PKI: idempotence, re-issue rules, certificate contents and error messages.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn apiserver_spec() -> LeafSpec {
    LeafSpec {
        common_name: "kube-apiserver".into(),
        organizations: vec![],
        dns_names: vec!["kubernetes".into(), "kubernetes.default.svc".into()],
        ips: vec![ip("10.96.0.1"), ip("10.88.0.11")],
        usage: Usage::Server,
    }
}

fn admin_spec() -> LeafSpec {
    LeafSpec {
        common_name: "kubernetes-admin".into(),
        organizations: vec!["system:masters".into()],
        dns_names: vec![],
        ips: vec![],
        usage: Usage::Client,
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// DER of the first PEM block.
fn der(pem_text: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .unwrap()
        .1
        .contents
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .expect("subject key identifier")
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
        .expect("authority key identifier")
}

fn open(dir: &Path) -> Pki {
    Pki::open_or_init(&dir.join("pki")).unwrap()
}

#[test]
fn open_or_init_twice_leaves_every_file_unchanged() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let first = snapshot(pki.dir());
    let names: Vec<_> = first
        .keys()
        .map(|path| path.strip_prefix(pki.dir()).unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "etcd/ca.crt",
            "etcd/ca.key",
            "front-proxy/ca.crt",
            "front-proxy/ca.key",
            "kubernetes/ca.crt",
            "kubernetes/ca.key",
            "sa.key",
            "sa.pub",
        ]
    );
    let ca_before = pki.ca(CaKind::Etcd).unwrap();

    let again = open(state.path());
    assert_eq!(snapshot(again.dir()), first);
    assert_eq!(again.ca(CaKind::Etcd).unwrap(), ca_before);
}

#[test]
fn directories_are_private_and_keys_are_0600() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    assert_eq!(mode(pki.dir()), 0o700);
    for kind in CaKind::ALL {
        let dir = pki.dir().join(kind.subdir());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    }
    assert_eq!(mode(&pki.dir().join("sa.key")), 0o600);
    pki.leaf(CaKind::Kubernetes, "admin", &admin_spec())
        .unwrap();
    assert_eq!(mode(&pki.dir().join("kubernetes/admin.key")), 0o600);
}

#[test]
fn cas_are_self_signed_ecdsa_cas_with_kubeadm_names_and_validity() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let now = OffsetDateTime::now_utc();
    let mut serials = BTreeSet::new();
    for kind in CaKind::ALL {
        let ca = pki.ca(kind).unwrap();
        let der = der(&ca.cert_pem);
        let cert = parse(&der);
        let common_names: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(common_names, [kind.common_name()]);
        assert_eq!(cert.issuer().to_string(), cert.subject().to_string());
        cert.verify_signature(None).unwrap();

        let constraints = cert.basic_constraints().unwrap().unwrap();
        assert!(constraints.critical);
        assert!(constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, None);
        let key_usage = cert.key_usage().unwrap().unwrap().value;
        assert!(key_usage.key_cert_sign());
        assert!(key_usage.crl_sign());
        assert!(key_usage.digital_signature());
        assert!(!key_usage.key_encipherment());
        assert!(cert.extended_key_usage().unwrap().is_none());
        assert!(!subject_key_id(&cert).is_empty());

        // id-ecPublicKey on prime256v1, signed ecdsa-with-SHA256.
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.10045.4.3.2"
        );

        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        assert!(not_before < now - Duration::minutes(4), "backdated");
        assert!(not_before > now - Duration::minutes(6));
        assert!((not_after - now - Duration::days(3650)).abs() < Duration::minutes(1));
        assert_eq!(
            ca.key_pem.lines().next(),
            Some("-----BEGIN PRIVATE KEY-----")
        );
        serials.insert(cert.raw_serial().to_vec());
    }
    assert_eq!(serials.len(), 3, "serials are random, not shared");
}

#[test]
fn leaf_carries_the_requested_identity() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let ca_der = der(&pki.ca(CaKind::Kubernetes).unwrap().cert_pem);
    let ca = parse(&ca_der);

    let issued = pki
        .leaf(CaKind::Kubernetes, "apiserver", &apiserver_spec())
        .unwrap();
    let leaf_der = der(&issued.cert_pem);
    let leaf = parse(&leaf_der);
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(leaf.issuer().to_string(), ca.subject().to_string());
    assert_eq!(authority_key_id(&leaf), subject_key_id(&ca));
    assert!(!leaf.is_ca());
    assert_eq!(leaf.raw_serial().len(), 16);
    assert_eq!(leaf.subject().to_string(), "CN=kube-apiserver");

    let sans = sans(&leaf);
    assert_eq!(
        sans,
        BTreeSet::from(
            [
                "DNS:kubernetes",
                "DNS:kubernetes.default.svc",
                "IP:10.96.0.1",
                "IP:10.88.0.11"
            ]
            .map(String::from)
        )
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    let key_usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(key_usage.digital_signature() && key_usage.key_encipherment());
    assert!(!key_usage.key_cert_sign());

    let now = OffsetDateTime::now_utc();
    let not_after = leaf.validity().not_after.to_datetime();
    assert!((not_after - now - Duration::days(365)).abs() < Duration::minutes(1));
    assert!(leaf.validity().not_before.to_datetime() < now - Duration::minutes(4));

    let admin = pki
        .leaf(CaKind::Kubernetes, "admin", &admin_spec())
        .unwrap();
    let admin_der = der(&admin.cert_pem);
    let admin = parse(&admin_der);
    let organizations: BTreeSet<_> = admin
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(organizations, BTreeSet::from(["system:masters"]));
    assert!(admin.subject_alternative_name().unwrap().is_none());
    let eku = admin.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);

    let peer_spec = LeafSpec {
        usage: Usage::ServerAndClient,
        ..apiserver_spec()
    };
    let peer = pki.leaf(CaKind::Etcd, "peer-m1", &peer_spec).unwrap();
    let peer_der = der(&peer.cert_pem);
    let peer = parse(&peer_der);
    let eku = peer.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
}

#[test]
fn leaf_with_the_same_spec_is_returned_unchanged() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let first = pki
        .leaf(CaKind::Kubernetes, "apiserver", &apiserver_spec())
        .unwrap();
    let files = snapshot(pki.dir());

    // Order and duplicates in the spec do not matter, and a new Pki handle reads the same files.
    let mut reordered = apiserver_spec();
    reordered.dns_names.reverse();
    reordered.ips.reverse();
    reordered.dns_names.push("kubernetes".into());
    let again = open(state.path())
        .leaf(CaKind::Kubernetes, "apiserver", &reordered)
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(snapshot(pki.dir()), files);
    assert_eq!(
        fs::read_to_string(pki.dir().join("kubernetes/apiserver.crt")).unwrap(),
        first.cert_pem
    );
    assert_eq!(
        fs::read_to_string(pki.dir().join("kubernetes/apiserver.key")).unwrap(),
        first.key_pem
    );
}

fn assert_reissued(pki: &Pki, kind: CaKind, stem: &str, before: &KeyPairPem, after: &KeyPairPem) {
    assert_ne!(after.cert_pem, before.cert_pem);
    assert_ne!(
        after.key_pem, before.key_pem,
        "a re-issued leaf gets a new key"
    );
    let (cert_path, key_path) = pki.paths(kind, stem);
    assert_eq!(fs::read_to_string(cert_path).unwrap(), after.cert_pem);
    assert_eq!(fs::read_to_string(key_path).unwrap(), after.key_pem);
}

#[test]
fn leaf_is_reissued_when_a_san_changes() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let before = pki
        .leaf(CaKind::Kubernetes, "apiserver", &apiserver_spec())
        .unwrap();
    let mut new_master = apiserver_spec();
    new_master.ips.push(ip("10.88.0.12"));
    let after = pki
        .leaf(CaKind::Kubernetes, "apiserver", &new_master)
        .unwrap();
    assert_reissued(&pki, CaKind::Kubernetes, "apiserver", &before, &after);
    let after_der = der(&after.cert_pem);
    let new_ip_count = parse(&after_der)
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter(|name| matches!(name, GeneralName::IPAddress([10, 88, 0, 12])))
        .count();
    assert_eq!(new_ip_count, 1);

    // And it is stable again from there on.
    let third = pki
        .leaf(CaKind::Kubernetes, "apiserver", &new_master)
        .unwrap();
    assert_eq!(third, after);
}

#[test]
fn leaf_is_reissued_when_subject_or_usage_changes() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let mut spec = admin_spec();
    let mut previous = pki.leaf(CaKind::Kubernetes, "admin", &spec).unwrap();
    let changes: [fn(&mut LeafSpec); 5] = [
        |spec| spec.common_name = "someone-else".into(),
        |spec| spec.organizations = vec!["kubeadm:cluster-admins".into()],
        |spec| spec.organizations.clear(),
        |spec| spec.usage = Usage::ServerAndClient,
        |spec| spec.dns_names.push("admin.example".into()),
    ];
    for change in changes {
        change(&mut spec);
        let next = pki.leaf(CaKind::Kubernetes, "admin", &spec).unwrap();
        assert_reissued(&pki, CaKind::Kubernetes, "admin", &previous, &next);
        previous = next;
    }
}

#[test]
fn leaf_close_to_expiry_is_reissued() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let now = OffsetDateTime::now_utc();
    let spec = apiserver_spec();
    let before = pki.leaf(CaKind::Kubernetes, "apiserver", &spec).unwrap();
    let still_fine = pki
        .leaf_at(
            CaKind::Kubernetes,
            "apiserver",
            &spec,
            now + Duration::days(300),
        )
        .unwrap();
    assert_eq!(still_fine, before);
    let renewed = pki
        .leaf_at(
            CaKind::Kubernetes,
            "apiserver",
            &spec,
            now + Duration::days(340),
        )
        .unwrap();
    assert_reissued(&pki, CaKind::Kubernetes, "apiserver", &before, &renewed);
}

#[test]
fn leaf_is_reissued_when_its_ca_was_replaced_or_its_key_lost() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let spec = apiserver_spec();
    let before = pki.leaf(CaKind::Etcd, "server-m1", &spec).unwrap();

    // The operator removed the etcd CA on purpose; a new one is made on the next run.
    fs::remove_file(pki.dir().join("etcd/ca.crt")).unwrap();
    let pki = open(state.path());
    let after = pki.leaf(CaKind::Etcd, "server-m1", &spec).unwrap();
    assert_reissued(&pki, CaKind::Etcd, "server-m1", &before, &after);
    let ca_der = der(&pki.ca(CaKind::Etcd).unwrap().cert_pem);
    let after_der = der(&after.cert_pem);
    parse(&after_der)
        .verify_signature(Some(parse(&ca_der).public_key()))
        .unwrap();

    // A key that does not belong to the certificate (e.g. a crash between the two writes).
    let other = pki.leaf(CaKind::Etcd, "other", &spec).unwrap();
    fs::write(pki.dir().join("etcd/server-m1.key"), &other.key_pem).unwrap();
    let fixed = pki.leaf(CaKind::Etcd, "server-m1", &spec).unwrap();
    assert_ne!(fixed.cert_pem, after.cert_pem);
    assert_ne!(fixed.key_pem, other.key_pem);

    // Only a key left (the certificate write never happened).
    fs::remove_file(pki.dir().join("etcd/server-m1.crt")).unwrap();
    let recreated = pki.leaf(CaKind::Etcd, "server-m1", &spec).unwrap();
    assert_ne!(recreated.key_pem, fixed.key_pem);
}

#[test]
fn leaves_of_different_cas_do_not_share_files() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let spec = admin_spec();
    let kubernetes = pki.leaf(CaKind::Kubernetes, "client", &spec).unwrap();
    let front_proxy = pki.leaf(CaKind::FrontProxy, "client", &spec).unwrap();
    assert_ne!(kubernetes.cert_pem, front_proxy.cert_pem);
    assert_eq!(
        pki.leaf(CaKind::Kubernetes, "client", &spec).unwrap(),
        kubernetes
    );
}

#[test]
fn corrupt_stored_leaf_files_are_errors_naming_the_file() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let spec = apiserver_spec();
    pki.leaf(CaKind::Kubernetes, "apiserver", &spec).unwrap();
    let cert_path = pki.dir().join("kubernetes/apiserver.crt");
    let key_path = pki.dir().join("kubernetes/apiserver.key");
    let good_cert = fs::read_to_string(&cert_path).unwrap();

    fs::write(&cert_path, "not a certificate\n").unwrap();
    let error = pki
        .leaf(CaKind::Kubernetes, "apiserver", &spec)
        .unwrap_err()
        .to_string();
    assert!(error.contains(cert_path.to_str().unwrap()), "{error}");
    assert!(error.contains("PEM certificate"), "{error}");
    assert_eq!(
        fs::read_to_string(&cert_path).unwrap(),
        "not a certificate\n"
    );

    fs::write(&cert_path, &good_cert).unwrap();
    fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let error = pki
        .leaf(CaKind::Kubernetes, "apiserver", &spec)
        .unwrap_err()
        .to_string();
    assert!(error.contains(key_path.to_str().unwrap()), "{error}");
    assert!(error.contains("private key"), "{error}");

    // A private key where the certificate should be.
    let key_pem = pki.ca(CaKind::Etcd).unwrap().key_pem;
    fs::write(&cert_path, key_pem).unwrap();
    let error = pki
        .leaf(CaKind::Kubernetes, "apiserver", &spec)
        .unwrap_err()
        .to_string();
    assert!(error.contains("expected `CERTIFICATE`"), "{error}");
}

#[test]
fn broken_cas_are_errors_naming_the_file_and_never_replaced() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("pki");
    Pki::open_or_init(&dir).unwrap();

    let ca_cert = dir.join("front-proxy/ca.crt");
    let good = fs::read_to_string(&ca_cert).unwrap();
    let truncated = &good[..good.len() / 2];
    fs::write(&ca_cert, truncated).unwrap();
    let error = Pki::open_or_init(&dir).unwrap_err().to_string();
    assert!(error.contains(ca_cert.to_str().unwrap()), "{error}");
    assert_eq!(fs::read_to_string(&ca_cert).unwrap(), truncated);
    fs::write(&ca_cert, &good).unwrap();

    let ca_key = dir.join("kubernetes/ca.key");
    let saved_key = fs::read(&ca_key).unwrap();
    fs::remove_file(&ca_key).unwrap();
    let error = Pki::open_or_init(&dir).unwrap_err();
    assert!(matches!(error, PkiError::MissingKey { .. }), "{error}");
    assert!(error.to_string().contains(ca_key.to_str().unwrap()));

    // The etcd CA key in place of the kubernetes one.
    fs::copy(dir.join("etcd/ca.key"), &ca_key).unwrap();
    let error = Pki::open_or_init(&dir).unwrap_err();
    assert!(matches!(error, PkiError::KeyMismatch { .. }), "{error}");
    fs::write(&ca_key, saved_key).unwrap();

    // A leaf certificate with its key where a CA should be.
    let pki = Pki::open_or_init(&dir).unwrap();
    let leaf = pki.leaf(CaKind::Etcd, "x", &admin_spec()).unwrap();
    fs::write(dir.join("etcd/ca.crt"), &leaf.cert_pem).unwrap();
    fs::write(dir.join("etcd/ca.key"), &leaf.key_pem).unwrap();
    let error = Pki::open_or_init(&dir).unwrap_err();
    assert!(matches!(error, PkiError::NotACa { .. }), "{error}");
}

#[test]
fn service_account_pair_is_made_once_and_public_key_rederived() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    let (key_pem, public_pem) = pki.service_account().unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(key.public_key_pem(), public_pem);

    fs::remove_file(pki.dir().join("sa.pub")).unwrap();
    let pki = open(state.path());
    assert_eq!(pki.service_account().unwrap(), (key_pem, public_pem));

    // A public key of another key pair is refused, not overwritten.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sa_pub = pki.dir().join("sa.pub");
    fs::write(&sa_pub, other.public_key_pem()).unwrap();
    let error = Pki::open_or_init(pki.dir()).unwrap_err();
    assert!(matches!(error, PkiError::KeyMismatch { .. }), "{error}");
    assert_eq!(fs::read_to_string(&sa_pub).unwrap(), other.public_key_pem());

    fs::write(&sa_pub, "garbage").unwrap();
    let error = pki.service_account().unwrap_err().to_string();
    assert!(error.contains(sa_pub.to_str().unwrap()), "{error}");
}

#[test]
fn bad_stems_and_specs_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let pki = open(state.path());
    for stem in ["", "ca", "../apiserver", ".hidden", "a/b", "a b"] {
        let error = pki
            .leaf(CaKind::Kubernetes, stem, &admin_spec())
            .unwrap_err();
        assert!(
            matches!(error, PkiError::InvalidStem { .. }),
            "{stem}: {error}"
        );
    }
    let mut spec = admin_spec();
    spec.organizations.push("ilha:admins".into());
    let error = pki.leaf(CaKind::Kubernetes, "admin", &spec).unwrap_err();
    assert!(matches!(error, PkiError::InvalidSpec { .. }), "{error}");
    // The same organization twice is one organization.
    spec.organizations = vec!["system:masters".into(), "system:masters".into()];
    assert_eq!(
        pki.leaf(CaKind::Kubernetes, "admin2", &spec).unwrap(),
        pki.leaf(CaKind::Kubernetes, "admin2", &admin_spec())
            .unwrap()
    );
    let same_as_ca = LeafSpec {
        common_name: "etcd-ca".into(),
        organizations: vec![],
        ..apiserver_spec()
    };
    let error = pki.leaf(CaKind::Etcd, "server", &same_as_ca).unwrap_err();
    assert!(
        error.to_string().contains("same as the etcd-ca CA"),
        "{error}"
    );
    spec = admin_spec();
    spec.common_name.clear();
    let error = pki.leaf(CaKind::Kubernetes, "admin", &spec).unwrap_err();
    assert!(matches!(error, PkiError::InvalidSpec { .. }), "{error}");
    assert!(error.to_string().contains("admin.crt"), "{error}");
    // Nothing written for a refused request.
    assert!(!pki.dir().join("kubernetes/admin.key").exists());
}

#[test]
fn debug_output_hides_private_keys() {
    let pair = KeyPairPem {
        cert_pem: "CERT".into(),
        key_pem: "SECRET".into(),
    };
    let shown = format!("{pair:?}");
    assert!(shown.contains("CERT"));
    assert!(!shown.contains("SECRET"));
}

/// A certificate's subjectAltNames as `DNS:name` and `IP:address` (IPv4 only).
pub(crate) fn sans(cert: &X509Certificate<'_>) -> BTreeSet<String> {
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::IPAddress(octets) => {
                format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*octets).unwrap()))
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}
