//! `ilha up` on the seed's layout (3 masters + etcd, 3 workers) from `manifests/lab.yaml`'s
//! bundle, on real hosts: every node Ready, a Deployment spread over the workers, a Service
//! reaching pods on other nodes, a second `up` that changes nothing, and the API still answering
//! through a worker after master 1 loses power.
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    eventually, fresh_lab, httpd_workload, ilha, kubectl, lab_bundle, seed_layout, text,
    write_config, write_inventory,
};

#[test]
fn up_builds_the_seed_layout_and_a_second_up_changes_nothing() {
    let bundle = lab_bundle();
    let lab = fresh_lab(6);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &seed_layout(), None);
    let config = write_config(work.path(), "seed");
    let inventory = inventory.to_str().unwrap();
    let config = config.to_str().unwrap();
    let bundle_path = bundle.bundle.to_str().unwrap();
    let pubkey = bundle.pubkey.to_str().unwrap();
    let args = [
        "up",
        bundle_path,
        "--pubkey",
        pubkey,
        "-i",
        inventory,
        "-c",
        config,
    ];

    // plan changes nothing and lists every step as to run.
    let planned = ilha(
        &lab,
        &[
            "plan",
            bundle_path,
            "--pubkey",
            pubkey,
            "-i",
            inventory,
            "-c",
            config,
        ],
    );
    assert!(
        planned.status.success(),
        "ilha plan failed:\n{}",
        text(&planned)
    );
    let plan_text = text(&planned);
    assert!(plan_text.contains("will run"), "{plan_text}");
    assert!(
        plan_text.contains("node4 (10.88.0.14, worker, pods 10.244."),
        "{plan_text}"
    );
    assert!(
        ilha_e2e::cluster::untouched(&lab, 1),
        "plan must not change hosts"
    );

    let started = Instant::now();
    let first = ilha(&lab, &args);
    let up_time = started.elapsed();
    assert!(first.status.success(), "ilha up failed:\n{}", text(&first));
    eprintln!(
        "BENCH ilha up, 6 hosts (3 masters + etcd, 3 workers): {:.1}s",
        up_time.as_secs_f64()
    );
    let out = text(&first);
    assert!(out.contains("Slowest steps:"), "{out}");
    assert!(out.contains("6 nodes Ready"), "{out}");
    let admin = work.path().join("state/admin.conf");
    assert!(admin.is_file(), "admin kubeconfig in the state directory");

    // Every node Ready, masters labelled and tainted.
    let nodes = kubectl(&lab, 1, "get nodes --no-headers");
    assert_eq!(
        nodes
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count(),
        6,
        "{nodes}"
    );
    let masters = kubectl(
        &lab,
        1,
        "get nodes -l node-role.kubernetes.io/control-plane -o name",
    );
    assert_eq!(masters.lines().count(), 3, "{masters}");
    let taints = kubectl(&lab, 1, "get node node2 -o jsonpath={.spec.taints[*].key}");
    assert!(
        taints.contains("node-role.kubernetes.io/master"),
        "{taints}"
    );

    // The bundle's addon was applied.
    let addon = kubectl(
        &lab,
        1,
        "get configmap -n kube-system ilha-lab-addon -o jsonpath={.data.applied-by}",
    );
    assert_eq!(addon.trim(), "ilha up");

    // A 3-replica Deployment lands one pod on each worker and runs.
    lab.ssh_ok(
        1,
        &format!(
            "cat > /root/web.yaml <<'EOF'\n{}\nEOF",
            httpd_workload("web", 3, None, None)
        ),
    )
    .unwrap();
    kubectl(&lab, 1, "apply -f /root/web.yaml");
    kubectl(&lab, 1, "rollout status deployment/web --timeout=120s");
    let placement = kubectl(
        &lab,
        1,
        "get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.podIP}{\"\\n\"}{end}'",
    );
    let mut pod_nodes: Vec<&str> = placement
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    pod_nodes.sort();
    assert_eq!(pod_nodes, ["node4", "node5", "node6"], "{placement}");

    // The Service, asked from a pod on node4, answers from pods on other nodes too.
    let pods = kubectl(
        &lab,
        1,
        "get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}'",
    );
    let on_node4 = pods
        .lines()
        .find(|l| l.ends_with(" node4"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let cluster_ip = kubectl(&lab, 1, "get service web -o jsonpath={.spec.clusterIP}");
    let served_by: std::collections::BTreeSet<String> = (0..30)
        .filter_map(|_| {
            let out = lab
                .ssh(1, &format!(
                    "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf exec {on_node4} -- \
                     /bin/busybox sh -c \"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {cluster_ip} 80\""
                ))
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout).to_string();
            body.lines().find(|l| l.starts_with("served-by-")).map(str::to_string)
        })
        .collect();
    assert!(
        served_by.len() >= 2,
        "the Service should reach pods on several nodes, got {served_by:?}"
    );

    // A second run: nothing to do.
    let second = ilha(&lab, &args);
    assert!(
        second.status.success(),
        "second ilha up failed:\n{}",
        text(&second)
    );
    assert!(
        text(&second).contains("Nothing changed"),
        "{}",
        text(&second)
    );

    // Power cut on master 1: the API still answers through a worker's node-local proxy.
    let admin_text = std::fs::read_to_string(&admin).unwrap();
    let local = admin_text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                "    server: https://127.0.0.1:6443".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    lab.ssh_ok(4, &format!("cat > /root/admin.conf <<'EOF'\n{local}\nEOF"))
        .unwrap();

    // Workers run the embedded static ilha-apiproxy, not the operator's ilha, and not as root.
    for worker in 4..=6 {
        let facts = lab
            .ssh_ok(
                worker,
                "sha256sum /usr/local/bin/ilha-apiproxy | cut -d' ' -f1; \
                 ps -o uid= -p \"$(systemctl show -p MainPID --value ilha-apiproxy.service)\"",
            )
            .unwrap();
        let mut lines = facts.lines().map(str::trim);
        assert_eq!(
            lines.next(),
            Some(ilha::apiproxy::sha256().as_str()),
            "h{worker}"
        );
        let uid: u32 = lines.next().unwrap().parse().unwrap();
        assert_ne!(uid, 0, "h{worker}: ilha-apiproxy runs as root");
    }
    // For the record: the lab's systemd and how it rates the unit's sandbox.
    let exposure = lab
        .ssh_ok(
            4,
            "systemctl --version | head -1; \
             systemd-analyze security --no-pager ilha-apiproxy.service | tail -1",
        )
        .unwrap();
    println!(
        "ilha-apiproxy on h4: {}",
        exposure.trim().replace('\n', "; ")
    );
    operators_get_their_own_short_lived_revocable_kubeconfigs(&lab, work.path(), inventory, config);
    a_listener_in_place_of_an_apiserver_gets_no_kubelet(&lab);
    lab.kill(1).unwrap();
    let nodes = eventually(
        "the API answers on node4 after master 1's power cut",
        Duration::from_secs(60),
        || {
            lab.ssh_ok(4, "/usr/local/bin/kubectl --kubeconfig=/root/admin.conf --request-timeout=5s get nodes --no-headers")
            .ok()
        },
    );
    assert_eq!(nodes.lines().count(), 6, "{nodes}");
    // And keeps working for several requests in a row (the proxy skips the dead master).
    for _ in 0..5 {
        lab.ssh_ok(4, "/usr/local/bin/kubectl --kubeconfig=/root/admin.conf --request-timeout=5s get --raw=/readyz").unwrap();
    }
    lab.start(1).unwrap();
}

/// Issue 12's fault: a process listening on master 2's 6443 in place of its kube-apiserver
/// (accepts TCP, never answers). Fresh proxies and restarted kubelets/kube-proxies on every
/// worker must not send a single client connection there: only `/readyz` answering 200 counts.
fn a_listener_in_place_of_an_apiserver_gets_no_kubelet(lab: &xtask::lab::Lab) {
    let started = Instant::now();
    let since = lab.ssh_ok(4, "date '+%Y-%m-%d %H:%M:%S'").unwrap();
    lab.ssh_ok(
        2,
        "systemctl stop kube-apiserver && systemd-run --quiet --unit=ilha-test-listener \
         socat TCP-LISTEN:6443,fork,reuseaddr SYSTEM:'sleep 600'",
    )
    .unwrap();
    // New proxies know nothing yet, and every kubelet and kube-proxy reconnects at once.
    for worker in 4..=6 {
        lab.ssh_ok(worker, "systemctl restart ilha-apiproxy kubelet kube-proxy")
            .unwrap();
    }
    // Every request through a worker's proxy is a new connection; one sent to the listener
    // would hang until the request timeout.
    for _ in 0..10 {
        lab.ssh_ok(4, "/usr/local/bin/kubectl --kubeconfig=/root/admin.conf --request-timeout=5s get --raw=/readyz")
            .unwrap();
    }
    eventually("the workers Ready again", Duration::from_secs(60), || {
        let nodes = kubectl(lab, 1, "get nodes node4 node5 node6 --no-headers");
        (nodes
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == 3)
            .then_some(())
    });
    // Connections the listener holds: probes last at most the probe timeout (2 s), so a worker
    // address:port seen in two samples 3 s apart is a client (kubelet, kube-proxy, kubectl).
    let samples = lab
        .ssh_ok(
            2,
            "for i in 1 2 3 4; do ss -Htn state established '( sport = :6443 )' | \
             awk '{print $4}'; echo --; sleep 3; done",
        )
        .unwrap();
    let samples: Vec<Vec<&str>> = samples
        .split("--")
        .map(|s| s.split_whitespace().collect())
        .collect();
    let workers = ["10.88.0.14:", "10.88.0.15:", "10.88.0.16:"];
    let mut seen_worker = false;
    for pair in samples.windows(2) {
        for peer in &pair[0] {
            seen_worker |= workers.iter().any(|w| peer.starts_with(w));
            assert!(
                !(workers.iter().any(|w| peer.starts_with(w)) && pair[1].contains(peer)),
                "a worker's client connection reached the listener on master 2: {peer}\n{samples:?}"
            );
        }
    }
    let journal = lab
        .ssh_ok(
            4,
            &format!(
                "journalctl -u ilha-apiproxy --since='{}' --no-pager",
                since.trim()
            ),
        )
        .unwrap();
    assert!(
        journal.contains("backend 10.88.0.12:6443 unhealthy: no answer to GET /readyz within 2s"),
        "{journal}"
    );
    assert!(
        seen_worker || journal.contains("10.88.0.12:6443 unhealthy"),
        "{samples:?}"
    );
    // Master 2's apiserver back, and back in the proxies' rotation.
    lab.ssh_ok(
        2,
        "systemctl stop ilha-test-listener; systemctl start kube-apiserver",
    )
    .unwrap();
    eventually(
        "master 2 ready in node4's proxy",
        Duration::from_secs(90),
        || {
            lab.ssh_ok(
                4,
                &format!(
                    "journalctl -u ilha-apiproxy --since='{}' --no-pager",
                    since.trim()
                ),
            )
            .ok()
            .filter(|j| j.contains("backend 10.88.0.12:6443 ready"))
        },
    );
    println!(
        "BENCH listener in place of master 2's apiserver: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Issue 14's identities: `ilha kubeconfig` gives a person a certificate of their own (no group,
/// not `system:masters`), bound by RBAC to the role asked for, which `--revoke` takes away; each
/// used from master 2 against the API address of the state directory's admin.conf.
fn operators_get_their_own_short_lived_revocable_kubeconfigs(
    lab: &xtask::lab::Lab,
    work: &std::path::Path,
    inventory: &str,
    config: &str,
) {
    use std::os::unix::fs::PermissionsExt as _;
    let kubeconfig = |extra: &[&str]| {
        let mut args = vec!["kubeconfig", "-i", inventory, "-c", config];
        args.extend_from_slice(extra);
        ilha(lab, &args)
    };
    let as_user = |user: &str, args: &str| {
        lab.ssh(
            2,
            &format!(
                "/usr/local/bin/kubectl --kubeconfig=/root/{user}.conf --request-timeout=10s {args}"
            ),
        )
        .unwrap()
    };
    let alice = work.join("alice.conf");
    let issued = kubeconfig(&[
        "--user",
        "alice",
        "--role",
        "view",
        "--ttl",
        "2h",
        "--out",
        alice.to_str().unwrap(),
    ]);
    assert!(issued.status.success(), "{}", text(&issued));
    assert!(text(&issued).contains("role view"), "{}", text(&issued));
    assert_eq!(
        std::fs::metadata(&alice).unwrap().permissions().mode() & 0o777,
        0o600,
        "a kubeconfig with a private key is the owner's only"
    );
    let record = std::fs::read_to_string(work.join("state/users/alice.json")).unwrap();
    assert!(record.contains("\"role\": \"view\""), "{record}");
    assert!(
        !record.contains("PRIVATE KEY"),
        "the record keeps no key: {record}"
    );
    // The certificate names alice alone, with the lifetime asked for.
    let text_of_alice = std::fs::read_to_string(&alice).unwrap();
    let cert = base64_decode(
        text_of_alice
            .lines()
            .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
            .unwrap(),
    );
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert).unwrap();
    let x509 = pem.parse_x509().unwrap();
    assert_eq!(x509.subject().to_string(), "CN=alice");
    let left = x509.validity().time_to_expiration().unwrap();
    assert!(
        left.whole_minutes() > 110 && left.whole_minutes() <= 120,
        "{left:?}"
    );

    lab.copy_to(2, &alice, "/root/alice.conf").unwrap();
    let read = as_user("alice", "get pods -A --no-headers");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let write = as_user("alice", "create namespace alice-was-here");
    assert!(!write.status.success(), "view may not create namespaces");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );

    let bob = work.join("bob.conf");
    let issued = kubeconfig(&["--user", "bob", "--out", bob.to_str().unwrap()]);
    assert!(issued.status.success(), "{}", text(&issued));
    lab.copy_to(2, &bob, "/root/bob.conf").unwrap();
    let created = as_user("bob", "create namespace bob-was-here");
    assert!(
        created.status.success(),
        "cluster-admin by default: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        as_user("bob", "delete namespace bob-was-here --wait=false")
            .status
            .success()
    );

    // Refused before anything: a file that exists, a name that is Kubernetes' own, a long life.
    for (extra, says) in [
        (
            vec!["--user", "carol", "--out", bob.to_str().unwrap()],
            "already exists",
        ),
        (
            vec!["--user", "system-admin", "--out", "/tmp/x.conf"],
            "own identities",
        ),
        (
            vec!["--user", "carol", "--ttl", "400d", "--out", "/tmp/x.conf"],
            "between 5m and 365d",
        ),
    ] {
        let refused = kubeconfig(&extra);
        assert!(!refused.status.success(), "{extra:?}");
        assert!(
            text(&refused).contains(says),
            "{extra:?}: {}",
            text(&refused)
        );
    }
    let stray = kubectl(lab, 1, "get clusterrolebindings -l ilha.io/user -o name");
    assert_eq!(
        stray.lines().count(),
        2,
        "only alice's and bob's bindings: {stray}"
    );

    let revoked = kubeconfig(&["--revoke", "alice"]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    assert!(text(&revoked).contains("deleted"), "{}", text(&revoked));
    let read = as_user("alice", "get pods -A --no-headers");
    assert!(!read.status.success(), "a revoked user still reads pods");
    assert!(String::from_utf8_lossy(&read.stderr).contains("forbidden"));
    assert!(
        as_user("bob", "get pods -A --no-headers").status.success(),
        "bob is untouched"
    );

    let listed = kubeconfig(&["--list"]);
    let listed = text(&listed);
    let line = |user: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(user))
            .unwrap_or_else(|| panic!("{listed}"))
    };
    assert!(line("alice").contains("revoked"), "{listed}");
    assert!(
        line("bob").contains("cluster-admin") && line("bob").ends_with("bound"),
        "{listed}"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
