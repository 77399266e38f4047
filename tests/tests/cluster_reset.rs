//! `ilha reset` on real hosts: a cluster with running pods (containers, mounts, veths, KUBE- and
//! CNI- chains) is taken off its 3 hosts; each host then matches the record `up` took before
//! installing, a rule and an interface the test made before `up` are still there, SSH still
//! works, and `up` on the same hosts builds the cluster again (the seed's failure case).
use std::time::Instant;

use ilha_e2e::cluster::{
    FreshLab, fresh_lab, httpd_workload, ilha, kubectl, lab_bundle, master_and_two_workers, text,
    write_config, write_inventory,
};

/// What the test looks at on a host, one `key=value` per line.
const PROBE: &str = r#"
units=$(ls /etc/systemd/system | grep -cE '^(etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|containerd|ilha-apiproxy|ilha-routes)\.service$')
echo "ilha_units=$units"
echo "ilha_dir=$([ -e /var/lib/ilha ] && echo yes || echo no)"
echo "journal=$([ -e /var/lib/ilha/journal ] && echo yes || echo no)"
echo "cni0=$(ip link show cni0 >/dev/null 2>&1 && echo yes || echo no)"
echo "kube_chains=$( (iptables-nft-save; iptables-legacy-save; ip6tables-nft-save; ip6tables-legacy-save) 2>/dev/null | grep -cE 'KUBE-|CNI-')"
echo "kubelet_mounts=$(awk '$5 ~ "^/var/lib/kubelet/" || $5 ~ "^/run/containerd/"' /proc/self/mountinfo | wc -l)"
echo "shims=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^containerd-shim$')"
echo "guard=$(iptables -S OUTPUT | grep -c -- '-o eth0 -j ILHA-GUARD')"
echo "guard_rules=$(iptables -S ILHA-GUARD | grep -c '^-A ILHA-GUARD')"
echo "test_keep=$(iptables -S INPUT | grep -c -- '-A INPUT -j TEST-KEEP')"
echo "test_keep_rules=$(iptables -S TEST-KEEP 2>/dev/null | grep -c -- '--dport 9999')"
echo "keep0=$(ip link show keep0 >/dev/null 2>&1 && echo yes || echo no)"
echo "kubelet=$(systemctl is-active kubelet 2>/dev/null)"
true
"#;

fn probe(lab: &FreshLab, index: usize) -> std::collections::BTreeMap<String, String> {
    lab.ssh_ok(index, PROBE)
        .unwrap_or_else(|err| panic!("probing h{index}: {err}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn number(state: &std::collections::BTreeMap<String, String>, key: &str) -> usize {
    state[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key}={}", state[key]))
}

#[test]
fn reset_removes_the_cluster_keeps_the_hosts_own_and_up_works_again() {
    let bundle = lab_bundle();
    let lab = fresh_lab(3);
    let work = tempfile::tempdir().unwrap();
    let layout = master_and_two_workers();
    let inventory = write_inventory(&lab, work.path(), &layout, None);
    let config = write_config(work.path(), "resettable");
    let inventory = inventory.to_str().unwrap();
    let config = config.to_str().unwrap();
    let up_args = [
        "up",
        bundle.bundle.to_str().unwrap(),
        "--pubkey",
        bundle.pubkey.to_str().unwrap(),
        "-i",
        inventory,
        "-c",
        config,
    ];

    // h2's own firewall rule and interfaces, made before ilha ever touches it (the kernel has
    // no dummy driver here: a veth pair not on any bridge stands in).
    lab.ssh_ok(
        2,
        "iptables -w -N TEST-KEEP && iptables -w -A TEST-KEEP -p tcp --dport 9999 -j ACCEPT && \
         iptables -w -A INPUT -j TEST-KEEP && ip link add keep0 type veth peer name keep1",
    )
    .unwrap();

    let started = Instant::now();
    let up = ilha(&lab, &up_args);
    assert!(up.status.success(), "ilha up failed:\n{}", text(&up));
    eprintln!(
        "BENCH ilha up, 3 hosts: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for host in ["h1", "h2", "h3"] {
        assert!(
            work.path()
                .join(format!("state/records/{host}.txt"))
                .is_file(),
            "up must record {host} before installing"
        );
    }

    // Two pods, one per worker, each with a hostPort (so the portmap plugin makes CNI-HOSTPORT
    // chains) and the service-account token volume (a tmpfs mount under /var/lib/kubelet).
    lab.ssh_ok(
        1,
        &format!(
            "cat > /root/busy.yaml <<'EOF'\n{}\nEOF",
            httpd_workload("busy", 2, Some(18080), None)
        ),
    )
    .unwrap();
    kubectl(&lab, 1, "apply -f /root/busy.yaml");
    let rollout = lab
        .ssh(
            1,
            "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf rollout status deployment/busy --timeout=180s",
        )
        .unwrap();
    if !rollout.status.success() {
        let pods = lab
            .ssh(
                1,
                "k='/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf'; $k get pods -o wide; $k describe pods -l app=busy | tail -40",
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("the pods did not start:\n{pods}");
    }

    // There is something to remove on the workers: containers, mounts, veths, chains.
    for index in [2, 3] {
        let state = probe(&lab, index);
        assert_eq!(state["cni0"], "yes", "h{index}: {state:?}");
        assert!(number(&state, "kube_chains") > 0, "h{index}: {state:?}");
        assert!(number(&state, "kubelet_mounts") > 0, "h{index}: {state:?}");
        assert!(number(&state, "shims") > 0, "h{index}: {state:?}");
    }
    let hostport = lab
        .ssh_ok(2, "iptables-save -t nat | grep -c CNI-HOSTPORT || true")
        .unwrap();
    assert!(
        hostport.trim().parse::<usize>().unwrap() > 0,
        "no portmap chains on h2"
    );

    let reset = |extra: &[&str]| {
        let mut args = vec!["reset", "-i", inventory, "-c", config];
        args.extend_from_slice(extra);
        ilha(&lab, &args)
    };

    // --dry-run lists and changes nothing.
    let dry = reset(&["--dry-run"]);
    assert!(
        dry.status.success(),
        "reset --dry-run failed:\n{}",
        text(&dry)
    );
    let listing = text(&dry);
    for expected in [
        "would stop kubelet.service",
        "would delete bridge cni0",
        "would remove /var/lib/ilha",
        "would first save an etcd snapshot",
        "chain KUBE-SERVICES",
        "Nothing was changed",
    ] {
        assert!(
            listing.contains(expected),
            "{expected:?} missing from:\n{listing}"
        );
    }
    assert!(
        !listing.contains("TEST-KEEP") && !listing.contains("keep0"),
        "{listing}"
    );
    for index in 1..=3 {
        let state = probe(&lab, index);
        assert_eq!(state["journal"], "yes", "--dry-run changed h{index}");
        assert_eq!(state["kubelet"], "active", "--dry-run changed h{index}");
    }

    // A host the inventory does not have: refused, naming the inventory.
    let unknown = reset(&["--hosts", "h9", "--yes"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("--hosts names h9 not in")
            && text(&unknown).contains("inventory.ini"),
        "{}",
        text(&unknown)
    );

    // A host that does not answer: refused before anything changes, naming it.
    let ghost_inventory = work.path().join("with-ghost.ini");
    std::fs::write(
        &ghost_inventory,
        std::fs::read_to_string(inventory)
            .unwrap()
            .replacen(
                "\n",
                "\nghost ansible_ssh_user=root ansible_ssh_host=10.88.0.99 ip=10.88.0.99\n",
                1,
            )
            .replace("[kube-node]\n", "[kube-node]\nghost\n"),
    )
    .unwrap();
    let unreachable = ilha(
        &lab,
        &[
            "reset",
            "-i",
            ghost_inventory.to_str().unwrap(),
            "-c",
            config,
            "--yes",
            "--connect-timeout",
            "3",
        ],
    );
    assert!(!unreachable.status.success(), "{}", text(&unreachable));
    assert!(
        text(&unreachable).contains("ghost"),
        "{}",
        text(&unreachable)
    );
    for index in 1..=3 {
        assert_eq!(
            probe(&lab, index)["journal"],
            "yes",
            "a reset refused for an unreachable host changed h{index}"
        );
    }

    // Without --yes and without a terminal to ask on: refused, nothing changed.
    let refused = reset(&[]);
    assert!(!refused.status.success(), "reset without --yes must refuse");
    assert!(text(&refused).contains("pass --yes"), "{}", text(&refused));
    assert_eq!(
        probe(&lab, 2)["kubelet"],
        "active",
        "a refused reset changed h2"
    );

    let started = Instant::now();
    let done = reset(&["--yes"]);
    let reset_time = started.elapsed();
    let report = text(&done);
    assert!(done.status.success(), "reset --yes failed:\n{report}");
    eprintln!(
        "BENCH ilha reset, 3 hosts: {:.1}s",
        reset_time.as_secs_f64()
    );
    for host in ["h1", "h2", "h3"] {
        assert!(
            report.lines().any(|l| l.starts_with(&format!("{host}: "))
                && l.ends_with("matches its pre-install record")),
            "{host} does not match its record:\n{report}"
        );
    }
    // The etcd member's data was saved first.
    let snapshots: Vec<_> = std::fs::read_dir(work.path().join("state/snapshots"))
        .expect("state/snapshots")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert_eq!(snapshots.len(), 1, "one etcd snapshot saved:\n{report}");
    assert!(snapshots[0].metadata().unwrap().len() > 0);

    for index in 1..=3 {
        let state = probe(&lab, index);
        assert_eq!(number(&state, "ilha_units"), 0, "h{index}: {state:?}");
        assert_eq!(state["ilha_dir"], "no", "h{index}: {state:?}");
        assert_eq!(state["cni0"], "no", "h{index}: {state:?}");
        assert_eq!(number(&state, "kube_chains"), 0, "h{index}: {state:?}");
        assert_eq!(number(&state, "kubelet_mounts"), 0, "h{index}: {state:?}");
        assert_eq!(number(&state, "shims"), 0, "h{index}: {state:?}");
        // The lab's guard survives on every host (the probe itself proves SSH still works).
        assert_eq!(number(&state, "guard"), 1, "h{index}: {state:?}");
        assert!(number(&state, "guard_rules") >= 3, "h{index}: {state:?}");
    }
    let h2 = probe(&lab, 2);
    assert_eq!(number(&h2, "test_keep"), 1, "{h2:?}");
    assert_eq!(number(&h2, "test_keep_rules"), 1, "{h2:?}");
    assert_eq!(h2["keep0"], "yes", "{h2:?}");

    // Reset again: nothing left to do, still matching.
    let again = reset(&["--yes"]);
    let report = text(&again);
    assert!(again.status.success(), "second reset failed:\n{report}");
    for host in ["h1", "h2", "h3"] {
        assert!(
            report.contains(&format!(
                "{host}: 0 action(s) done; matches its pre-install record"
            )),
            "{report}"
        );
    }

    // The same hosts take a new install.
    let started = Instant::now();
    let again = ilha(&lab, &up_args);
    assert!(
        again.status.success(),
        "ilha up after reset failed:\n{}",
        text(&again)
    );
    eprintln!(
        "BENCH ilha up after reset, 3 hosts: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(text(&again).contains("3 nodes Ready"), "{}", text(&again));
    let nodes = kubectl(&lab, 1, "get nodes --no-headers");
    assert_eq!(
        nodes
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count(),
        3,
        "{nodes}"
    );
}
