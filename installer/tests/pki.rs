//! The PKI and kubeconfigs checked by independent tools: stock `openssl` must accept what
//! `ilha::pki` makes, and the kubeconfig must parse as kubeconfig v1 YAML.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ilha::kubeconfig;
use ilha::pki::{CaKind, KeyPairPem, LeafSpec, Pki, Usage};

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed")
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

fn server_spec(common_name: &str) -> LeafSpec {
    LeafSpec {
        common_name: common_name.into(),
        organizations: vec![],
        dns_names: vec!["localhost".into(), "m1.cluster.internal".into()],
        ips: vec![
            "10.88.0.11".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "fd00::11".parse().unwrap(),
        ],
        usage: Usage::ServerAndClient,
    }
}

fn verify(ca: &KeyPairPem, leaf: &KeyPairPem, scratch: &Path) -> Output {
    let ca_file = write(scratch, "verify-ca.crt", &ca.cert_pem);
    let leaf_file = write(scratch, "verify-leaf.crt", &leaf.cert_pem);
    openssl(&["verify", "-CAfile", &ca_file, &leaf_file])
}

#[test]
fn openssl_accepts_each_cas_leaves_and_rejects_the_wrong_ca() {
    let state = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&state.path().join("pki")).unwrap();
    let scratch = state.path();

    let leaves: Vec<(CaKind, KeyPairPem)> = CaKind::ALL
        .into_iter()
        .map(|kind| {
            let leaf = pki
                .leaf(
                    kind,
                    "server",
                    &server_spec(&format!("{}-server", kind.subdir())),
                )
                .unwrap();
            (kind, leaf)
        })
        .collect();

    for (kind, leaf) in &leaves {
        let ca = pki.ca(*kind).unwrap();
        let output = verify(&ca, leaf, scratch);
        assert!(
            output.status.success(),
            "{kind:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains(": OK"));

        for other in CaKind::ALL.into_iter().filter(|other| other != kind) {
            let output = verify(&pki.ca(other).unwrap(), leaf, scratch);
            assert!(
                !output.status.success(),
                "a {kind:?} leaf must not verify against the {other:?} CA"
            );
        }

        // Same CA name, different key (another cluster's PKI): the signature decides.
        let other_cluster = Pki::open_or_init(&scratch.join("other-cluster")).unwrap();
        let output = verify(&other_cluster.ca(*kind).unwrap(), leaf, scratch);
        assert!(
            !output.status.success(),
            "a {kind:?} leaf must not verify against another cluster's {kind:?} CA"
        );

        // The key file belongs to the certificate: same public key from both.
        let cert_file = write(scratch, "pair.crt", &leaf.cert_pem);
        let key_file = write(scratch, "pair.key", &leaf.key_pem);
        let from_cert = openssl(&["x509", "-noout", "-pubkey", "-in", &cert_file]);
        let from_key = openssl(&["pkey", "-pubout", "-in", &key_file]);
        assert!(from_cert.status.success() && from_key.status.success());
        assert_eq!(from_cert.stdout, from_key.stdout);
    }
}

#[test]
fn openssl_shows_the_requested_fields() {
    let state = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&state.path().join("pki")).unwrap();
    let scratch = state.path();

    let leaf = pki
        .leaf(
            CaKind::Kubernetes,
            "apiserver",
            &server_spec("kube-apiserver"),
        )
        .unwrap();
    let leaf_file = write(scratch, "apiserver.crt", &leaf.cert_pem);
    let output = openssl(&[
        "x509", "-noout", "-text", "-nameopt", "RFC2253", "-in", &leaf_file,
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "DNS:localhost",
        "DNS:m1.cluster.internal",
        "IP Address:10.88.0.11",
        "IP Address:127.0.0.1",
        "IP Address:FD00:0:0:0:0:0:0:11",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "Digital Signature, Key Encipherment",
        "Subject: CN=kube-apiserver",
        "Issuer: CN=kubernetes",
        "ASN1 OID: prime256v1",
        "ecdsa-with-SHA256",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("CA:TRUE"), "{text}");

    let admin = pki
        .leaf(
            CaKind::Kubernetes,
            "admin",
            &LeafSpec {
                common_name: "kubernetes-admin".into(),
                organizations: vec!["system:masters".into()],
                dns_names: vec![],
                ips: vec![],
                usage: Usage::Client,
            },
        )
        .unwrap();
    let admin_file = write(scratch, "admin.crt", &admin.cert_pem);
    let output = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
        "-ext",
        "extendedKeyUsage",
        "-in",
        &admin_file,
    ]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("O=system:masters"), "{text}");
    assert!(text.contains("CN=kubernetes-admin"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("Server Authentication"), "{text}");

    let ca_file = write(scratch, "ca.crt", &pki.ca(CaKind::Etcd).unwrap().cert_pem);
    let output = openssl(&[
        "x509", "-noout", "-text", "-nameopt", "RFC2253", "-in", &ca_file,
    ]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(
        text.contains("Digital Signature, Certificate Sign, CRL Sign"),
        "{text}"
    );
    assert!(text.contains("Subject: CN=etcd-ca"), "{text}");
}

#[test]
fn openssl_parses_the_service_account_pair() {
    let state = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&state.path().join("pki")).unwrap();
    let (private_pem, public_pem) = pki.service_account().unwrap();
    let scratch = state.path();

    let pub_file = write(scratch, "sa.pub", &public_pem);
    let output = openssl(&["pkey", "-pubin", "-in", &pub_file, "-noout", "-text"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("prime256v1"));

    let key_file = write(scratch, "sa.key", &private_pem);
    let derived = openssl(&["pkey", "-in", &key_file, "-pubout"]);
    assert!(derived.status.success());
    assert_eq!(String::from_utf8(derived.stdout).unwrap(), public_pem);
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    current_context: String,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    users: Vec<NamedUser>,
}
#[derive(serde::Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority_data: String,
}
#[derive(serde::Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}
#[derive(serde::Deserialize)]
struct Context {
    cluster: String,
    user: String,
}
#[derive(serde::Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

fn decode(data: &str) -> String {
    String::from_utf8(STANDARD.decode(data).expect("valid base64")).unwrap()
}

#[test]
fn kubeconfig_embeds_the_pems_and_names_one_context() {
    let state = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&state.path().join("pki")).unwrap();
    let ca = pki.ca(CaKind::Kubernetes).unwrap();
    let admin = pki
        .leaf(
            CaKind::Kubernetes,
            "admin",
            &LeafSpec {
                common_name: "kubernetes-admin".into(),
                organizations: vec!["system:masters".into()],
                dns_names: vec![],
                ips: vec![],
                usage: Usage::Client,
            },
        )
        .unwrap();

    let text = kubeconfig::render(
        "ilha",
        "https://10.88.0.11:6443",
        &ca.cert_pem,
        &admin,
        "kubernetes-admin",
    );
    let config: Kubeconfig = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(config.api_version, "v1");
    assert_eq!(config.kind, "Config");
    assert_eq!(config.clusters.len(), 1);
    assert_eq!(config.contexts.len(), 1);
    assert_eq!(config.users.len(), 1);

    let cluster = &config.clusters[0];
    assert_eq!(cluster.name, "ilha");
    assert_eq!(cluster.cluster.server, "https://10.88.0.11:6443");
    assert_eq!(
        decode(&cluster.cluster.certificate_authority_data),
        ca.cert_pem
    );

    let user = &config.users[0];
    assert_eq!(user.name, "kubernetes-admin");
    assert_eq!(decode(&user.user.client_certificate_data), admin.cert_pem);
    assert_eq!(decode(&user.user.client_key_data), admin.key_pem);

    let context = &config.contexts[0];
    assert_eq!(context.name, "kubernetes-admin@ilha");
    assert_eq!(context.context.cluster, "ilha");
    assert_eq!(context.context.user, "kubernetes-admin");
    assert_eq!(config.current_context, context.name);

    // The decoded client certificate chains to the decoded CA with stock openssl.
    let scratch = state.path();
    let ca_file = write(
        scratch,
        "kc-ca.crt",
        &decode(&cluster.cluster.certificate_authority_data),
    );
    let cert_file = write(
        scratch,
        "kc-admin.crt",
        &decode(&user.user.client_certificate_data),
    );
    let output = openssl(&["verify", "-CAfile", &ca_file, &cert_file]);
    assert!(output.status.success());
}
