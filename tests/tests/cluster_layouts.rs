//! Layouts other than the seed's: everything on one host, and etcd on hosts of its own.
use ilha_e2e::cluster::{
    FreshLab, Member, fresh_lab, ilha, kubectl, lab_bundle, text, write_config, write_inventory,
};

fn up(layout: &[Member], hosts: usize, name: &str) -> (FreshLab, String) {
    let bundle = lab_bundle();
    let lab = fresh_lab(hosts);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), layout, None);
    let config = write_config(work.path(), name);
    let started = std::time::Instant::now();
    let out = ilha(
        &lab,
        &[
            "up",
            bundle.bundle.to_str().unwrap(),
            "--pubkey",
            bundle.pubkey.to_str().unwrap(),
            "-i",
            inventory.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "ilha up ({name}) failed:\n{}",
        text(&out)
    );
    eprintln!(
        "BENCH ilha up, {name} ({hosts} hosts): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    (lab, text(&out))
}

#[test]
fn a_single_host_runs_etcd_control_plane_and_workloads() {
    let layout = [Member {
        name: "solo",
        index: 1,
        groups: &["kube-master", "etcd", "kube-node"],
    }];
    let (lab, out) = up(&layout, 1, "solo");
    assert!(out.contains("1 nodes Ready"), "{out}");
    let nodes = kubectl(&lab, 1, "get nodes --no-headers");
    assert!(
        nodes.starts_with("solo ") && nodes.contains(" Ready"),
        "{nodes}"
    );
    // Listed as a worker too, so it takes pods: no master taint (Kubespray's rule).
    let taints = kubectl(&lab, 1, "get node solo -o jsonpath={.spec.taints[*].key}");
    assert!(
        !taints.contains("node-role.kubernetes.io/master"),
        "{taints}"
    );
    let roles = kubectl(&lab, 1, "get node solo -o jsonpath={.metadata.labels}");
    assert!(
        roles.contains("node-role.kubernetes.io/control-plane"),
        "{roles}"
    );
}

#[test]
fn etcd_on_separate_hosts() {
    let etcd: &'static [&'static str] = &["etcd"];
    let layout = [
        Member {
            name: "etcd1",
            index: 1,
            groups: etcd,
        },
        Member {
            name: "etcd2",
            index: 2,
            groups: etcd,
        },
        Member {
            name: "etcd3",
            index: 3,
            groups: etcd,
        },
        Member {
            name: "master1",
            index: 4,
            groups: &["kube-master"],
        },
        Member {
            name: "worker1",
            index: 5,
            groups: &["kube-node"],
        },
        Member {
            name: "worker2",
            index: 6,
            groups: &["kube-node"],
        },
    ];
    let (lab, out) = up(&layout, 6, "split");
    assert!(out.contains("3 nodes Ready"), "{out}");
    // etcd runs on the etcd hosts only, and no kubelet there.
    for index in 1..=3 {
        let state = lab
            .ssh_ok(
                index,
                "systemctl is-active etcd; systemctl is-active kubelet || true",
            )
            .unwrap();
        assert_eq!(
            state.split_whitespace().collect::<Vec<_>>(),
            ["active", "inactive"],
            "h{index}"
        );
    }
    let members = lab
        .ssh_ok(
            1,
            "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
             --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key \
             member list",
        )
        .unwrap();
    assert_eq!(members.lines().count(), 3, "{members}");
    let nodes = kubectl(
        &lab,
        4,
        "get nodes --no-headers -o custom-columns=N:.metadata.name",
    );
    let mut names: Vec<&str> = nodes.lines().collect();
    names.sort();
    assert_eq!(names, ["master1", "worker1", "worker2"]);
}
