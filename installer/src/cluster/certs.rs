//! Which certificates, keys and kubeconfigs each host receives, issued from the cluster's PKI in
//! the state directory. Every CA key goes to the control-plane hosts, as with kubeadm: the
//! kubernetes one because kube-controller-manager signs with it, the etcd and front-proxy ones so
//! that `ilha state recover` can rebuild a lost state directory from the masters (root on a
//! master already holds etcd's and the aggregation layer's client keys, so they add no power).

use std::net::IpAddr;

use anyhow::Context as _;

use super::paths::{ETCD_PKI_DIR, KUBERNETES_DIR, PKI_DIR};
use super::render::RemoteFile;
use super::{ClusterPlan, HostPlan};
use crate::kubeconfig;
use crate::pki::{CaKind, KeyPairPem, LeafSpec, Pki, Usage};

const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

fn pair(files: &mut Vec<RemoteFile>, dir: &str, stem: &str, pem: &KeyPairPem) {
    files.push(RemoteFile::new(
        format!("{dir}/{stem}.crt"),
        CERT_MODE,
        pem.cert_pem.clone(),
    ));
    files.push(RemoteFile::new(
        format!("{dir}/{stem}.key"),
        KEY_MODE,
        pem.key_pem.clone(),
    ));
}

fn spec(cn: &str, orgs: &[&str], usage: Usage) -> LeafSpec {
    LeafSpec {
        common_name: cn.to_string(),
        organizations: orgs.iter().map(|o| o.to_string()).collect(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        usage,
    }
}

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The kubernetes CA's certificate, for kubeconfigs.
fn kube_ca(pki: &Pki) -> anyhow::Result<KeyPairPem> {
    Ok(pki.ca(CaKind::Kubernetes)?)
}

/// A kubeconfig for `user` (CN) in `orgs`, signed by the kubernetes CA, stored as `stem`.
fn client_kubeconfig(
    pki: &Pki,
    plan: &ClusterPlan,
    server: &str,
    stem: &str,
    user: &str,
    orgs: &[&str],
) -> anyhow::Result<String> {
    let ca = kube_ca(pki)?;
    let client = pki.leaf(CaKind::Kubernetes, stem, &spec(user, orgs, Usage::Client))?;
    Ok(kubeconfig::render(
        &plan.config.cluster_name,
        server,
        &ca.cert_pem,
        &client,
        user,
    ))
}

/// The admin kubeconfig ilha writes to the state directory, aimed at the first master.
pub fn operator_admin_kubeconfig(pki: &Pki, plan: &ClusterPlan) -> anyhow::Result<String> {
    client_kubeconfig(
        pki,
        plan,
        &plan.operator_api_url(),
        "admin",
        "kubernetes-admin",
        &["system:masters"],
    )
}

/// Where a node's kubelet finds the serving certificate ilha issues it (kubelet config
/// `tlsCertFile`/`tlsPrivateKeyFile`), next to the cluster CA that vouches for it.
pub const KUBELET_SERVING_CERT: &str = "/etc/kubernetes/pki/kubelet-server.crt";
pub const KUBELET_SERVING_KEY: &str = "/etc/kubernetes/pki/kubelet-server.key";

/// The stem of `node`'s kubelet serving leaf in the state directory's kubernetes CA directory.
pub fn kubelet_serving_stem(node: &str) -> String {
    format!("kubelet-server-{node}")
}

/// The serving certificate of `host`'s kubelet, from the kubernetes CA, so that kube-apiserver
/// (`--kubelet-certificate-authority`) can verify whom it talks to for `exec`, `logs` and
/// `port-forward`. The subject is what a kubelet's own serving CSR carries (`system:node:NAME`
/// in `system:nodes`); the SANs are every address kube-apiserver may dial
/// (`--kubelet-preferred-address-types=InternalIP,Hostname`): the node name, which
/// `--hostname-override` makes the Node's Hostname address, its `ip` (`--node-ip`, the
/// InternalIP) and its peer address. Serving only: it cannot log in as the node.
pub fn kubelet_serving_spec(host: &HostPlan) -> LeafSpec {
    let mut serving = spec(
        &format!("system:node:{}", host.name),
        &["system:nodes"],
        Usage::Server,
    );
    // An inventory name that is an address goes in as an IP SAN (a DNS SAN may not hold one).
    match host.name.parse::<IpAddr>() {
        Ok(ip) => serving.ips.push(ip),
        Err(_) => serving.dns_names.push(host.name.clone()),
    }
    serving.ips.push(host.ip);
    if host.peer_ip != host.ip {
        serving.ips.push(host.peer_ip);
    }
    serving
}

/// The kubelet serving pair of `host` (a node), issued or reused from the state directory like
/// every leaf (re-issued within 30 days of expiry), as the files the kubelet step puts there:
/// certificate 0644, key 0600.
pub fn kubelet_serving_files(pki: &Pki, host: &HostPlan) -> anyhow::Result<Vec<RemoteFile>> {
    let pem = pki
        .leaf(
            CaKind::Kubernetes,
            &kubelet_serving_stem(&host.name),
            &kubelet_serving_spec(host),
        )
        .with_context(|| format!("{}: issuing the kubelet's serving certificate", host.name))?;
    Ok(vec![
        RemoteFile::new(KUBELET_SERVING_CERT, CERT_MODE, pem.cert_pem),
        RemoteFile::new(KUBELET_SERVING_KEY, KEY_MODE, pem.key_pem),
    ])
}

/// Every certificate, key and kubeconfig `host` needs for its roles.
pub fn files_for(
    pki: &Pki,
    plan: &ClusterPlan,
    host: &HostPlan,
) -> anyhow::Result<Vec<RemoteFile>> {
    build(pki, plan, host).with_context(|| format!("{}: issuing certificates", host.name))
}

fn build(pki: &Pki, plan: &ClusterPlan, host: &HostPlan) -> anyhow::Result<Vec<RemoteFile>> {
    let mut files = Vec::new();
    let kube_ca = kube_ca(pki)?;
    let etcd_ca = pki.ca(CaKind::Etcd)?;
    let local_api = format!("https://127.0.0.1:{}", plan.config.api_port);

    if host.is_etcd() || host.is_control_plane() {
        files.push(RemoteFile::new(
            format!("{ETCD_PKI_DIR}/ca.crt"),
            CERT_MODE,
            etcd_ca.cert_pem.clone(),
        ));
    }
    if host.is_etcd() {
        let mut ips = vec![host.ip, LOCALHOST];
        if host.peer_ip != host.ip {
            ips.push(host.peer_ip);
        }
        let names = vec![host.name.clone(), "localhost".to_string()];
        let mut server = spec(&host.name, &[], Usage::ServerAndClient);
        server.dns_names = names.clone();
        server.ips = ips.clone();
        let server_pem = pki.leaf(CaKind::Etcd, &format!("server-{}", host.name), &server)?;
        pair(&mut files, ETCD_PKI_DIR, "server", &server_pem);
        let mut peer = spec(&host.name, &[], Usage::ServerAndClient);
        peer.dns_names = names;
        peer.ips = ips;
        let peer_pem = pki.leaf(CaKind::Etcd, &format!("peer-{}", host.name), &peer)?;
        pair(&mut files, ETCD_PKI_DIR, "peer", &peer_pem);
        // etcdctl on the host (health checks, snapshots) authenticates with this.
        let check = pki.leaf(
            CaKind::Etcd,
            "healthcheck-client",
            &spec("kube-etcd-healthcheck-client", &[], Usage::Client),
        )?;
        pair(&mut files, ETCD_PKI_DIR, "healthcheck-client", &check);
    }
    if host.is_control_plane() {
        pair(&mut files, PKI_DIR, "ca", &kube_ca);
        let front_ca = pki.ca(CaKind::FrontProxy)?;
        files.push(RemoteFile::new(
            format!("{PKI_DIR}/front-proxy-ca.crt"),
            CERT_MODE,
            front_ca.cert_pem.clone(),
        ));
        // Not used on the host: kept for `ilha state recover` (kubeadm's paths).
        files.push(RemoteFile::new(
            format!("{PKI_DIR}/front-proxy-ca.key"),
            KEY_MODE,
            front_ca.key_pem.clone(),
        ));
        files.push(RemoteFile::new(
            format!("{ETCD_PKI_DIR}/ca.key"),
            KEY_MODE,
            etcd_ca.key_pem.clone(),
        ));
        let (sa_key, sa_pub) = pki.service_account()?;
        files.push(RemoteFile::new(
            format!("{PKI_DIR}/sa.key"),
            KEY_MODE,
            sa_key,
        ));
        files.push(RemoteFile::new(
            format!("{PKI_DIR}/sa.pub"),
            CERT_MODE,
            sa_pub,
        ));

        let mut api = spec("kube-apiserver", &[], Usage::Server);
        let domain = &plan.config.dns_domain;
        api.dns_names = vec![
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{domain}"),
            "localhost".to_string(),
            host.name.clone(),
        ];
        api.ips = vec![plan.config.api_service_ip(), LOCALHOST, host.ip];
        if host.peer_ip != host.ip {
            api.ips.push(host.peer_ip);
        }
        if let crate::config::ApiEndpoint::External { host: lb, .. } = &plan.config.api_endpoint {
            match lb.parse::<IpAddr>() {
                Ok(ip) => api.ips.push(ip),
                Err(_) => api.dns_names.push(lb.clone()),
            }
        }
        let api_pem = pki.leaf(
            CaKind::Kubernetes,
            &format!("apiserver-{}", host.name),
            &api,
        )?;
        pair(&mut files, PKI_DIR, "apiserver", &api_pem);
        let kubelet_client = pki.leaf(
            CaKind::Kubernetes,
            "apiserver-kubelet-client",
            &spec(
                "kube-apiserver-kubelet-client",
                &["system:masters"],
                Usage::Client,
            ),
        )?;
        pair(
            &mut files,
            PKI_DIR,
            "apiserver-kubelet-client",
            &kubelet_client,
        );
        let etcd_client = pki.leaf(
            CaKind::Etcd,
            "apiserver-etcd-client",
            &spec("kube-apiserver-etcd-client", &[], Usage::Client),
        )?;
        pair(&mut files, PKI_DIR, "apiserver-etcd-client", &etcd_client);
        let front_client = pki.leaf(
            CaKind::FrontProxy,
            "front-proxy-client",
            &spec("front-proxy-client", &[], Usage::Client),
        )?;
        pair(&mut files, PKI_DIR, "front-proxy-client", &front_client);

        for (file, stem, user, orgs) in [
            (
                "admin.conf",
                "admin",
                "kubernetes-admin",
                &["system:masters"][..],
            ),
            (
                "controller-manager.conf",
                "controller-manager",
                "system:kube-controller-manager",
                &[][..],
            ),
            (
                "scheduler.conf",
                "scheduler",
                "system:kube-scheduler",
                &[][..],
            ),
        ] {
            let text = client_kubeconfig(pki, plan, &local_api, stem, user, orgs)?;
            files.push(RemoteFile::new(
                format!("{KUBERNETES_DIR}/{file}"),
                KEY_MODE,
                text,
            ));
        }
    }
    if host.is_node() {
        if !host.is_control_plane() {
            files.push(RemoteFile::new(
                format!("{PKI_DIR}/ca.crt"),
                CERT_MODE,
                kube_ca.cert_pem.clone(),
            ));
        }
        let server = plan.node_api_url();
        let kubelet = client_kubeconfig(
            pki,
            plan,
            &server,
            &format!("kubelet-{}", host.name),
            &format!("system:node:{}", host.name),
            &["system:nodes"],
        )?;
        files.push(RemoteFile::new(
            format!("{KUBERNETES_DIR}/kubelet.conf"),
            KEY_MODE,
            kubelet,
        ));
        let proxy = client_kubeconfig(pki, plan, &server, "kube-proxy", "system:kube-proxy", &[])?;
        files.push(RemoteFile::new(
            format!("{KUBERNETES_DIR}/kube-proxy.conf"),
            KEY_MODE,
            proxy,
        ));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::cluster::tests_support::plan_for;

    fn der(pem_text: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
            .unwrap()
            .1
            .contents
    }

    use crate::pki::tests::sans;

    #[test]
    fn kubelet_serving_certificate_names_the_node_and_its_addresses() {
        let state = tempfile::tempdir().unwrap();
        let pki = Pki::open_or_init(state.path()).unwrap();
        let mut plan = plan_for("v1.20.2");
        plan.hosts[3].peer_ip = "192.168.7.4".parse().unwrap();
        let worker = &plan.hosts[3];
        let files = kubelet_serving_files(&pki, worker).unwrap();
        let paths: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            paths,
            [
                ("/etc/kubernetes/pki/kubelet-server.crt", 0o644),
                ("/etc/kubernetes/pki/kubelet-server.key", 0o600)
            ]
        );
        assert!(KUBELET_SERVING_CERT.starts_with(PKI_DIR));
        let cert_pem = String::from_utf8(files[0].content.clone()).unwrap();
        let cert_der = der(&cert_pem);
        let cert = X509Certificate::from_der(&cert_der).unwrap().1;
        let ca_der = der(&pki.ca(CaKind::Kubernetes).unwrap().cert_pem);
        let ca = X509Certificate::from_der(&ca_der).unwrap().1;
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=kubernetes");
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:node4"
        );
        assert_eq!(
            sans(&cert),
            BTreeSet::from(["DNS:node4", "IP:10.0.0.4", "IP:192.168.7.4"].map(str::to_string))
        );
        let usage = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.server_auth && !usage.client_auth, "serving only");
        // Kept in the state directory under its own stem, and reused as is by the next run.
        assert!(
            state
                .path()
                .join("kubernetes/kubelet-server-node4.crt")
                .is_file()
        );
        assert_eq!(kubelet_serving_files(&pki, worker).unwrap(), files);
        // Each node its own leaf.
        let master = kubelet_serving_files(&pki, &plan.hosts[0]).unwrap();
        assert_ne!(master[0].content, files[0].content);
        let master_der = der(std::str::from_utf8(&master[0].content).unwrap());
        let master = X509Certificate::from_der(&master_der).unwrap().1;
        assert_eq!(
            sans(&master),
            BTreeSet::from(["DNS:node1", "IP:10.0.0.1"].map(str::to_string))
        );
    }

    #[test]
    fn an_inventory_name_that_is_an_address_is_an_ip_san() {
        let mut plan = plan_for("v1.20.2");
        plan.hosts[3].name = "10.0.0.4".to_string();
        let spec = kubelet_serving_spec(&plan.hosts[3]);
        assert!(spec.dns_names.is_empty());
        assert_eq!(spec.common_name, "system:node:10.0.0.4");
        assert_eq!(spec.ips, vec!["10.0.0.4".parse::<IpAddr>().unwrap(); 2]);
    }
}
