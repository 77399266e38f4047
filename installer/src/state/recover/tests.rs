use std::path::Path;

use super::*;
use crate::cluster::membership::Bootstrap;
use crate::cluster::tests_support::plan_for;
use crate::cluster::{ClusterPlan, certs, render};

const INVENTORY: &str = "\
node1 ansible_host=10.0.0.1 ip=10.0.0.1
node2 ansible_host=10.0.0.2 ip=10.0.0.2
node3 ansible_host=10.0.0.3 ip=10.0.0.3
node4 ansible_host=10.0.0.4 ip=10.0.0.4
node5 ansible_host=10.0.0.5 ip=10.0.0.5
node6 ansible_host=10.0.0.6 ip=10.0.0.6

[kube-master]
node1
node2
node3

[etcd]
node1
node2
node3

[kube-node]
node4
node5
node6

[k8s-cluster:children]
kube-master
kube-node
";

const DIGEST: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn inventory() -> Inventory {
    Inventory::parse(Path::new("inventory.ini"), INVENTORY).unwrap()
}

/// The seed's plan with every etcd member started together, as `up` plans a new cluster.
fn plan() -> ClusterPlan {
    let mut plan = plan_for("1.20.15");
    let everyone: Vec<(String, String)> = plan
        .etcd_members()
        .map(|m| (m.name.clone(), render::etcd_peer_url(m)))
        .collect();
    for host in plan.hosts.iter_mut().filter(|h| h.is_etcd()) {
        host.etcd_bootstrap = Some(Bootstrap {
            initial_cluster: everyone.clone(),
            state: ClusterState::New,
        });
    }
    plan
}

/// What every host of `plan` holds after `up` with the PKI in `pki`: its certificates and
/// kubeconfigs, its etcd unit, a journal and its record.
fn hosts_after_up(pki: &Pki, plan: &ClusterPlan) -> Vec<HostFiles> {
    let inventory = inventory();
    plan.hosts
        .iter()
        .map(|host| {
            let mut files: BTreeMap<String, Vec<u8>> = certs::files_for(pki, plan, host)
                .unwrap()
                .into_iter()
                .map(|f| (f.path, f.content))
                .collect();
            if host.is_node() && plan.config.hardening.kubelet_serving_certificates {
                for file in certs::kubelet_serving_files(pki, host).unwrap() {
                    files.insert(file.path, file.content);
                }
            }
            if host.is_etcd() {
                let unit = render::etcd_unit(plan, host);
                files.insert(unit.path, unit.content);
            }
            files.insert(
                crate::cluster::paths::JOURNAL.to_string(),
                format!("system\t{DIGEST}\t1\n").into_bytes(),
            );
            files.insert(
                record::HOST_COPY.to_string(),
                format!(
                    "# ilha: {}'s state\n== identity ==\nmachine-id {}\n== units ==\n",
                    host.name, host.name
                )
                .into_bytes(),
            );
            HostFiles {
                name: host.name.clone(),
                roles: inventory.host(&host.name).unwrap().roles.clone(),
                files,
            }
        })
        .collect()
}

fn facts(plan: &ClusterPlan) -> ClusterFacts {
    ClusterFacts {
        pod_cidrs: Some((
            "node1".into(),
            plan.hosts
                .iter()
                .filter_map(|h| Some((h.name.clone(), h.pod_cidr?)))
                .collect(),
        )),
        members: Some((
            "node1".into(),
            membership::parse_member_list(
                r#"{"members":[{"ID":1,"name":"node1"},{"ID":2,"name":"node2"},{"ID":3,"name":"node3"}]}"#,
            )
            .unwrap(),
        )),
    }
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn the_recovered_state_gives_every_host_the_same_bytes_again() {
    let original = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&original.path().join("pki")).unwrap();
    let plan = plan();
    let hosts = hosts_after_up(&pki, &plan);

    let recovered = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan)).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("nested/state");
    write(&state, &plan.config, &recovered).unwrap();

    // Every CA, key and leaf of the lost PKI, byte for byte.
    let lost = tree(&original.path().join("pki"));
    let found = tree(&state.join("pki"));
    assert_eq!(
        lost.keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
    assert_eq!(lost, found);
    // So `up` renders every host's files identically from it.
    let again = Pki::open_or_init(&state.join("pki")).unwrap();
    for host in &plan.hosts {
        let before: Vec<_> = certs::files_for(&pki, &plan, host)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.mode, f.content))
            .collect();
        let after: Vec<_> = certs::files_for(&again, &plan, host)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.mode, f.content))
            .collect();
        assert_eq!(before, after, "{}", host.name);
    }
    // Pod ranges and etcd starts as `up` would find them.
    let nodes: Vec<&str> = plan.nodes().map(|n| n.name.as_str()).collect();
    let ranges = allocations::allocate(
        &state,
        plan.config.pod_cidr,
        plan.config.node_cidr_prefix(),
        &nodes,
    )
    .unwrap();
    for host in plan.nodes() {
        assert_eq!(Some(ranges[&host.name]), host.pod_cidr, "{}", host.name);
    }
    let planned: Vec<membership::PlannedMember> = plan
        .etcd_members()
        .map(|m| membership::PlannedMember {
            name: m.name.clone(),
            peer_url: render::etcd_peer_url(m),
            established: true,
        })
        .collect();
    let boot = membership::bootstrap(&state, &planned).unwrap();
    for member in plan.etcd_members() {
        assert_eq!(Some(&boot[&member.name]), member.etcd_bootstrap.as_ref());
    }
    // Records, the admin kubeconfig (as `up` writes it), and modes.
    assert!(state.join("records/node5.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(state.join("admin.conf")).unwrap(),
        certs::operator_admin_kubeconfig(&pki, &plan).unwrap()
    );
    let mode = |p: &str| {
        std::fs::metadata(state.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("pki"), 0o700);
    assert_eq!(mode("pki/etcd/ca.key"), 0o600);
    assert_eq!(mode("pki/kubernetes/kubelet-node4.key"), 0o600);
    assert_eq!(mode("pki/sa.key"), 0o600);
    assert_eq!(mode("admin.conf"), 0o600);
    assert_eq!(mode("pki/etcd/ca.crt"), 0o644);
    // Nothing left beside it.
    let siblings: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, ["state"]);
}

#[test]
fn kubelet_serving_pairs_come_back_only_where_ilha_put_them() {
    let original = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&original.path().join("pki")).unwrap();
    let plan = plan();
    let hosts = hosts_after_up(&pki, &plan);
    let recovered = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan)).unwrap();
    let serving = |recovered: &Recovered| -> Vec<String> {
        recovered
            .files
            .keys()
            .filter(|path| path.contains("kubelet-server-"))
            .cloned()
            .collect()
    };
    assert_eq!(serving(&recovered).len(), 12, "a pair for each of 6 nodes");
    assert!(
        recovered
            .files
            .contains_key("pki/kubernetes/kubelet-server-node4.key")
    );

    // The item off: nodes hold none, and none is missed.
    let mut off = plan.clone();
    off.config.hardening.kubelet_serving_certificates = false;
    let hosts = hosts_after_up(&pki, &off);
    let recovered = assemble(&inventory(), &off.config, &hosts, &[], &facts(&off)).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert!(serving(&recovered).is_empty());
}

#[test]
fn a_host_with_another_ca_is_an_error_naming_hosts_and_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("a")).unwrap();
    let other = Pki::open_or_init(&dir.path().join("b")).unwrap();
    let plan = plan();
    let mut hosts = hosts_after_up(&pki, &plan);
    let foreign = hosts_after_up(&other, &plan);
    hosts[2] = foreign[2].clone();
    let err = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan))
        .unwrap_err()
        .to_string();
    let ours = fingerprint(pki.ca(CaKind::Kubernetes).unwrap().cert_pem.as_bytes()).unwrap();
    let theirs = fingerprint(other.ca(CaKind::Kubernetes).unwrap().cert_pem.as_bytes()).unwrap();
    assert!(err.contains("kubernetes CA"), "{err}");
    assert!(
        err.contains(&format!("{ours} on node1, node2, node4, node5, node6")),
        "{err}"
    );
    assert!(err.contains(&format!("{theirs} on node3")), "{err}");
}

#[test]
fn an_unreachable_master_leaves_only_its_own_leaves_to_reissue() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("pki")).unwrap();
    let plan = plan();
    let mut hosts = hosts_after_up(&pki, &plan);
    hosts.remove(2);
    let recovered = assemble(
        &inventory(),
        &plan.config,
        &hosts,
        &["node3".to_string()],
        &facts(&plan),
    )
    .unwrap();
    assert!(recovered.files.contains_key("pki/kubernetes/ca.key"));
    assert!(recovered.files.contains_key("pki/etcd/ca.key"));
    assert!(
        recovered
            .files
            .contains_key("pki/kubernetes/apiserver-node1.crt")
    );
    assert!(
        !recovered
            .files
            .contains_key("pki/kubernetes/apiserver-node3.crt")
    );
    let warnings = recovered.warnings.join("\n");
    for stem in [
        "apiserver-node3",
        "server-node3",
        "peer-node3",
        "kubelet-node3",
    ] {
        assert!(
            warnings.contains(&format!("{stem} (")) && warnings.contains("unreachable: node3"),
            "{stem}: {warnings}"
        );
    }
    assert!(
        warnings.contains("etcd member(s) node3 unreachable"),
        "{warnings}"
    );
}

#[test]
fn masters_without_the_etcd_ca_key_are_an_error_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("pki")).unwrap();
    let plan = plan();
    let mut hosts = hosts_after_up(&pki, &plan);
    for host in &mut hosts {
        host.files.remove(&format!("{ETCD_PKI_DIR}/ca.key"));
    }
    let err = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan))
        .unwrap_err()
        .to_string();
    assert!(err.contains("etcd-ca CA's key"), "{err}");
    assert!(err.contains("backup kit"), "{err}");
}

#[test]
fn a_leaf_not_signed_by_the_ca_is_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("a")).unwrap();
    let other = Pki::open_or_init(&dir.path().join("b")).unwrap();
    let plan = plan();
    let mut hosts = hosts_after_up(&pki, &plan);
    let foreign = hosts_after_up(&other, &plan);
    for path in [
        format!("{PKI_DIR}/apiserver.crt"),
        format!("{PKI_DIR}/apiserver.key"),
    ] {
        hosts[1]
            .files
            .insert(path.clone(), foreign[1].files[&path].clone());
    }
    let recovered = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan)).unwrap();
    assert!(
        !recovered
            .files
            .contains_key("pki/kubernetes/apiserver-node2.crt")
    );
    let warnings = recovered.warnings.join("\n");
    assert!(
        warnings.contains(
            "node2: /etc/kubernetes/pki/apiserver.crt: it was not signed by the cluster's CA"
        ),
        "{warnings}"
    );
}

#[test]
fn another_cluster_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("pki")).unwrap();
    let plan = plan();
    let hosts = hosts_after_up(&pki, &plan);
    let mut config = plan.config.clone();
    config.cluster_name = "prod".into();
    let err = assemble(&inventory(), &config, &hosts, &[], &facts(&plan))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("name the cluster `ilha`, the cluster config `prod`"),
        "{err}"
    );
}

#[test]
fn a_state_directory_with_a_pki_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pki/kubernetes")).unwrap();
    let err = check_target(dir.path()).unwrap_err().to_string();
    assert!(err.contains("already holds a PKI"), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("pod-ranges.json"), "{}").unwrap();
    let err = check_target(other.path()).unwrap_err().to_string();
    assert!(err.contains("pod-ranges.json exists"), "{err}");
    check_target(&other.path().join("absent")).unwrap();
}

#[test]
fn into_an_existing_directory_without_pki_the_entries_are_added() {
    let original = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&original.path().join("pki")).unwrap();
    let plan = plan();
    let hosts = hosts_after_up(&pki, &plan);
    let recovered = assemble(&inventory(), &plan.config, &hosts, &[], &facts(&plan)).unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(state.path().join("keep.txt"), "mine").unwrap();
    write(state.path(), &plan.config, &recovered).unwrap();
    let mode = std::fs::metadata(state.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        std::fs::read_to_string(state.path().join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        tree(&original.path().join("pki")),
        tree(&state.path().join("pki"))
    );
}

#[test]
fn etcd_starts_are_read_back_from_the_units_ilha_writes() {
    let mut plan = plan();
    plan.hosts[2].etcd_bootstrap = Some(Bootstrap {
        initial_cluster: vec![
            ("node1".into(), "https://10.0.0.1:2380".into()),
            ("node3".into(), "https://[fd00::3]:2380".into()),
        ],
        state: ClusterState::Existing,
    });
    for host in plan.etcd_members() {
        let unit = render::etcd_unit(&plan, host);
        let text = String::from_utf8(unit.content).unwrap();
        assert_eq!(
            Some(bootstrap_from_unit(&text).unwrap()),
            host.etcd_bootstrap,
            "{}",
            host.name
        );
    }
    let err = bootstrap_from_unit("[Service]\nExecStart=/usr/local/bin/etcd\n").unwrap_err();
    assert!(err.to_string().contains("--initial-cluster"), "{err}");
}

#[test]
fn pod_cidrs_are_read_and_nodes_without_one_skipped() {
    let ranges = parse_pod_cidrs("node1=10.244.0.0/24\nnode2=\nnode3=10.244.2.0/24\n").unwrap();
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges["node3"], "10.244.2.0/24".parse::<IpNet>().unwrap());
    let err = parse_pod_cidrs("node1=10.244.0/24\n").unwrap_err();
    assert!(err.to_string().contains("node node1"), "{err}");
}

#[test]
fn the_read_script_lists_files_and_their_absence() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ca.key");
    std::fs::write(&key, b"secret\nwith lines\n\x00binary").unwrap();
    let files = vec![
        key.display().to_string(),
        dir.path().join("absent").display().to_string(),
    ];
    let script = read_script(&files);
    crate::cluster::tests_support::assert_bash_syntax(&script);
    let out = crate::cluster::tests_support::run_bash_ok(&script);
    let listing = parse_listing("h1", &out).unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[&files[0]], b"secret\nwith lines\n\x00binary");
    let err = parse_listing("h1", "garbage\n").unwrap_err().to_string();
    assert!(err.contains("h1: line 1"), "{err}");
}

#[test]
fn the_masters_files_include_every_ca_key() {
    let roles: BTreeSet<Role> = [Role::ControlPlane, Role::Etcd].into();
    let files = wanted_files(&roles);
    for kind in CaKind::ALL {
        let (cert, key) = ca_paths(kind);
        assert!(files.contains(&cert) && files.contains(&key), "{kind:?}");
    }
    let worker = wanted_files(&[Role::Worker].into());
    assert!(!worker.iter().any(|f| f.ends_with("ca.key")));
}
