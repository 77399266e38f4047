//! `ilha scale` and `ilha remove-node` on real hosts: a cluster grows by two workers without
//! reinstalling or restarting anything that ran, etcd grows to four members and back with its
//! quorum answering throughout, a worker with pods is drained and removed, and a removal that
//! would leave etcd short of its quorum is refused.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    FreshLab, Member, eventually, fresh_lab, ilha, kubectl, lab_bundle, text, write_config,
    write_inventory,
};

const CP: &[&str] = &["kube-master", "etcd"];
const WORKER: &[&str] = &["kube-node"];
const ETCD: &[&str] = &["etcd"];

fn member(name: &'static str, index: usize, groups: &'static [&'static str]) -> Member {
    Member {
        name,
        index,
        groups,
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      # `sleep` as PID 1 ignores SIGTERM: without this a drain waits the default 30 s per pod.
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector: {matchLabels: {app: spread}}
              topologyKey: kubernetes.io/hostname
      containers:
      - name: sleep
        image: ilha.test/busybox:1
        imagePullPolicy: Never
        command: ["/bin/busybox", "sleep", "100000"]
"#;

struct Cluster {
    lab: FreshLab,
    work: tempfile::TempDir,
    bundle: ilha_e2e::cluster::LabBundle,
}

impl Cluster {
    fn paths(&self, layout: &[Member]) -> (String, String) {
        let inventory = write_inventory(&self.lab, self.work.path(), layout, None);
        let config = write_config(self.work.path(), "grow");
        (
            inventory.to_str().unwrap().to_string(),
            config.to_str().unwrap().to_string(),
        )
    }

    fn install(&self, command: &str, layout: &[Member]) -> (String, f64) {
        let (inventory, config) = self.paths(layout);
        let started = Instant::now();
        let out = ilha(
            &self.lab,
            &[
                command,
                self.bundle.bundle.to_str().unwrap(),
                "--pubkey",
                self.bundle.pubkey.to_str().unwrap(),
                "-i",
                &inventory,
                "-c",
                &config,
            ],
        );
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "ilha {command} failed:\n{}",
            text(&out)
        );
        (text(&out), elapsed)
    }

    fn remove(&self, layout: &[Member], names: &[&str]) -> std::process::Output {
        let (inventory, config) = self.paths(layout);
        let mut args = vec!["remove-node"];
        args.extend_from_slice(names);
        args.extend_from_slice(&["-i", &inventory, "-c", &config, "--yes"]);
        ilha(&self.lab, &args)
    }

    fn journal(&self, index: usize) -> Vec<String> {
        self.lab
            .ssh_ok(index, "cat /var/lib/ilha/journal")
            .unwrap()
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect()
    }

    /// etcd's members that have started, by name, as node1's etcd sees them.
    fn etcd_members(&self) -> Vec<String> {
        let out = self
            .lab
            .ssh_ok(
                1,
                "ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 \
                 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
                 --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
                 --key=/etc/kubernetes/pki/etcd/healthcheck-client.key member list",
            )
            .unwrap();
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(", ").nth(2).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Pod name → (node, uid, restarts) of the Deployment.
    fn pods(&self) -> BTreeMap<String, (String, String, String)> {
        kubectl(
            &self.lab,
            1,
            "get pods -l app=spread -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.uid} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}'",
        )
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| {
                (
                    f[0].to_string(),
                    (f[1].to_string(), f[2].to_string(), f[3].to_string()),
                )
            })
        })
        .collect()
    }
}

/// Polls etcd's quorum (a linearizable read through node1's member) twice a second on node1
/// itself, into /root/etcd-health.log, until /root/stop-health exists.
const HEALTH_LOOP: &str = "rm -f /root/stop-health /root/etcd-health.log
setsid sh -c 'while [ ! -e /root/stop-health ]; do
  if ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key --command-timeout=2s endpoint health >/dev/null 2>&1; then echo ok; else echo FAIL $(date +%T); fi
  sleep 0.5
done' >/root/etcd-health.log 2>&1 </dev/null &";

#[test]
fn grow_and_shrink_a_running_cluster() {
    let bundle = lab_bundle();
    let lab = fresh_lab(7);
    let cluster = Cluster {
        lab,
        work: tempfile::tempdir().unwrap(),
        bundle,
    };
    let lab = &cluster.lab;

    // 3 masters + etcd and 1 worker, a Deployment on the worker.
    let mut layout = vec![
        member("node1", 1, CP),
        member("node2", 2, CP),
        member("node3", 3, CP),
        member("node4", 4, WORKER),
    ];
    cluster.install("up", &layout);
    lab.ssh_ok(
        1,
        &format!("cat > /root/spread.yaml <<'EOF'\n{DEPLOYMENT}\nEOF"),
    )
    .unwrap();
    kubectl(lab, 1, "apply -f /root/spread.yaml");
    kubectl(lab, 1, "rollout status deployment/spread --timeout=120s");
    let before = cluster.pods();
    assert_eq!(before.len(), 1, "{before:?}");
    let journals_before: Vec<Vec<String>> = (1..=4).map(|i| cluster.journal(i)).collect();

    // `scale` without a cluster is refused; that is what `up` is for.
    let elsewhere = tempfile::tempdir().unwrap();
    let lone = write_inventory(
        lab,
        elsewhere.path(),
        &[member("node5", 5, &["kube-master", "etcd", "kube-node"])],
        None,
    );
    let out = ilha(
        lab,
        &[
            "scale",
            cluster.bundle.bundle.to_str().unwrap(),
            "--pubkey",
            cluster.bundle.pubkey.to_str().unwrap(),
            "-i",
            lone.to_str().unwrap(),
            "-c",
            &cluster.paths(&layout).1,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("there is no cluster to scale"),
        "{}",
        text(&out)
    );

    // Two workers join.
    layout.push(member("node5", 5, WORKER));
    layout.push(member("node6", 6, WORKER));
    let (out, seconds) = cluster.install("scale", &layout);
    eprintln!("BENCH ilha scale, 4 -> 6 hosts (2 workers added): {seconds:.1}s");
    assert!(out.contains("6 nodes Ready"), "{out}");
    // The old hosts only learnt routes to the new nodes' pods; nothing was reinstalled.
    for (i, old) in journals_before.iter().enumerate() {
        let now = cluster.journal(i + 1);
        assert!(now.starts_with(old), "node{}: journal rewritten", i + 1);
        let added = &now[old.len()..];
        assert!(
            added.iter().all(|step| step == "pod-network"),
            "node{} ran more than the pod network: {added:?}\n{out}",
            i + 1
        );
    }
    assert!(out.contains("Hosts changed:"), "{out}");
    // The running pod was neither moved nor restarted.
    let after = cluster.pods();
    assert_eq!(after, before, "the running pod changed");
    kubectl(lab, 1, "scale deployment/spread --replicas=3");
    kubectl(lab, 1, "rollout status deployment/spread --timeout=120s");
    let spread: Vec<String> = cluster.pods().values().map(|p| p.0.clone()).collect();
    for node in ["node4", "node5", "node6"] {
        assert!(spread.contains(&node.to_string()), "{spread:?}");
    }

    // etcd grows to four members and back, its quorum answering throughout.
    lab.ssh_ok(1, HEALTH_LOOP).unwrap();
    layout.push(member("node7", 7, ETCD));
    let (out, seconds) = cluster.install("scale", &layout);
    eprintln!("BENCH ilha scale, etcd member added: {seconds:.1}s");
    assert_eq!(
        cluster.etcd_members(),
        ["node1", "node2", "node3", "node7"],
        "{out}"
    );
    assert!(out.contains("node7 added as a member"), "{out}");

    let out = cluster.remove(&layout, &["node7"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("etcd snapshot from"), "{}", text(&out));
    assert_eq!(cluster.etcd_members(), ["node1", "node2", "node3"]);
    let snapshots = std::fs::read_dir(cluster.work.path().join("state/snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .count();
    assert!(snapshots >= 1, "no snapshot kept on the operator's side");
    assert!(
        lab.ssh_ok(7, "test -e /var/lib/etcd && echo left || echo gone")
            .unwrap()
            .trim()
            == "gone",
        "node7 still has etcd data after its removal"
    );
    layout.pop();

    // Two of three members at once would leave etcd without a quorum of today's cluster.
    let out = cluster.remove(&layout, &["node2", "node3"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("fewer than the 2"), "{}", text(&out));
    assert_eq!(cluster.etcd_members(), ["node1", "node2", "node3"]);
    assert!(kubectl(lab, 1, "get nodes -o name").contains("node/node3"));

    lab.ssh_ok(1, "touch /root/stop-health; sleep 1").unwrap();
    let health = lab.ssh_ok(1, "cat /root/etcd-health.log").unwrap();
    let checks = health.lines().count();
    let failures: Vec<&str> = health.lines().filter(|l| l.starts_with("FAIL")).collect();
    eprintln!("etcd quorum checks during the membership changes: {checks}, failed: {failures:?}");
    assert!(checks > 10, "the health loop did not run: {health}");
    assert!(failures.is_empty(), "etcd lost its quorum: {failures:?}");

    // A worker with a pod is drained and removed; its pod moves.
    let on_node5: Vec<String> = cluster
        .pods()
        .into_iter()
        .filter(|(_, p)| p.0 == "node5")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(on_node5.len(), 1, "{:?}", cluster.pods());
    let out = cluster.remove(&layout, &["node5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("drained"), "{}", text(&out));
    assert!(!kubectl(lab, 1, "get nodes -o name").contains("node/node5"));
    kubectl(lab, 1, "rollout status deployment/spread --timeout=120s");
    let pods = cluster.pods();
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.values().all(|p| p.0 != "node5"), "{pods:?}");
    assert!(!pods.contains_key(&on_node5[0]), "{pods:?}");

    // A worker that lost power cannot confirm its pods stopped: the drain is given up after its
    // timeout, the Node deleted anyway, and its pod recreated elsewhere.
    lab.kill(6).unwrap();
    let (inventory, config) = cluster.paths(&layout);
    let out = ilha(
        lab,
        &[
            "remove-node",
            "node6",
            "-i",
            &inventory,
            "-c",
            &config,
            "--yes",
            "--drain-timeout",
            "5",
            "--connect-timeout",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("node6: unreachable"), "{}", text(&out));
    assert!(text(&out).contains("drain given up"), "{}", text(&out));
    assert!(!kubectl(lab, 1, "get nodes -o name").contains("node/node6"));
    // The pod garbage collector deletes the dead node's pods; their replacements land on node4.
    eventually(
        "every pod of the Deployment running on node4",
        Duration::from_secs(120),
        || {
            let pods = cluster.pods();
            (pods.len() == 3 && pods.values().all(|p| p.0 == "node4")).then_some(())
        },
    );
    kubectl(lab, 1, "rollout status deployment/spread --timeout=120s");
}
