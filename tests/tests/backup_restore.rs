//! `ilha backup` and `ilha restore` on the seed's 6-host cluster: a kit proven by stock minisign,
//! etcd recovered after two of three members lost their data, then the cluster reset, built anew
//! and its objects restored (PersistentVolumes bound to the new claims, data on disk intact).
//! Kits with a flipped byte, a corrupt snapshot or a wrong passphrase are refused before any host
//! changes.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ilha::backup::kit::{self, Protection, Unlock};
use ilha_e2e::cluster::{
    FreshLab, eventually, fresh_lab, ilha, kubectl, lab_bundle, seed_layout, text, write_config,
    write_inventory,
};

/// A namespace with config, a secret, a StorageClass, a local PV on node4 bound to a claim,
/// and a Deployment appending to a file on that volume.
const WORKLOAD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {colour: teal}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: shop}
stringData: {value: s3cr3t}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-disk}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: shop-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local-disk
  local: {path: /srv/shop-data}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [node4]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-disk
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: writer, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: writer}}
  template:
    metadata: {labels: {app: writer}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: writer
        image: ilha.test/busybox:1
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "echo started >> /data/log; while true; do sleep 5; done"]
        volumeMounts: [{name: data, mountPath: /data}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
"#;

struct Site {
    lab: FreshLab,
    work: tempfile::TempDir,
    inventory: String,
    config: String,
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
    fn hosts_args(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.inventory.clone(),
            "-c".into(),
            self.config.clone(),
        ]
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let hosts = self.hosts_args();
        all.extend(hosts.iter().map(String::as_str));
        ilha(&self.lab, &all)
    }
    fn up(&self) {
        let bundle = lab_bundle();
        let out = self.run(&[
            "up",
            bundle.bundle.to_str().unwrap(),
            "--pubkey",
            bundle.pubkey.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "ilha up failed:\n{}", text(&out));
    }
    fn kubectl(&self, args: &str) -> String {
        kubectl(&self.lab, 1, args)
    }
    /// Whether the API answers a read of the `shop` namespace (no quorum, or no such namespace: no).
    fn shop_readable(&self) -> bool {
        self.lab
            .ssh(
                1,
                "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=5s get ns shop",
            )
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
    fn wait_workload(&self) {
        eventually(
            "the writer pod Running and its claim Bound",
            Duration::from_secs(180),
            || {
                let phase = self.lab.ssh_ok(1,
                "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=5s -n shop get pvc data -o jsonpath='{.status.phase}' && echo && \
                 /usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=5s -n shop get pods -l app=writer -o jsonpath='{.items[*].status.phase}'").ok()?;
                (phase.split_whitespace().collect::<Vec<_>>() == ["Bound", "Running"]).then_some(())
            },
        );
    }
    /// Lines of the writer's file on node4's disk.
    fn volume_log(&self) -> Vec<String> {
        self.lab
            .ssh_ok(4, "cat /srv/shop-data/log")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn etcd_data_moved_aside(&self, index: usize) -> bool {
        self.lab
            .ssh_ok(
                index,
                "ls -d /var/lib/ilha/etcd-before-restore-* 2>/dev/null || true",
            )
            .unwrap()
            .contains("etcd-before-restore")
    }
}

fn stock(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (a Debian package `make deps` installs)"))
}

/// A copy of `kit` whose etcd snapshot has one byte flipped, signed again with the right key:
/// only the snapshot's own integrity check can catch it.
fn corrupt_snapshot_kit(kit_path: &Path, state: &Path, out: &Path) {
    let pubkey = ilha_format::load_public_key(&state.join("kit-key/ilha.pub")).unwrap();
    let key = ilha_format::load_secret_key(&state.join("kit-key/ilha.key"), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = kit::open_kit(kit_path, &pubkey, &Unlock::None, dir.path()).unwrap();
    let snapshot = dir.path().join("etcd/snapshot.db");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot, &bytes).unwrap();
    manifest.etcd.sha256 = ilha_format::digest::sha256_file(&snapshot)
        .unwrap()
        .0
        .to_string();
    manifest.files.clear();
    kit::write_kit(out, dir.path(), manifest, &Protection::None, &key).unwrap();
}

#[test]
fn back_up_lose_etcd_quorum_recover_then_rebuild_and_restore_objects() {
    let lab = fresh_lab(6);
    let work = tempfile::tempdir().unwrap();
    let layout = seed_layout();
    let inventory = write_inventory(&lab, work.path(), &layout, None);
    let config = write_config(work.path(), "island");
    let mut site = Site {
        inventory: inventory.to_str().unwrap().to_string(),
        config: config.to_str().unwrap().to_string(),
        lab,
        work,
    };
    let lab = &site.lab;
    site.up();
    lab.ssh_ok(4, "mkdir -p /srv/shop-data").unwrap();
    lab.ssh_ok(
        1,
        &format!("cat > /root/shop.yaml <<'EOF'\n{WORKLOAD}\nEOF"),
    )
    .unwrap();
    site.kubectl("apply -f /root/shop.yaml");
    site.wait_workload();
    site.kubectl("label node node5 tier=gold");

    // Two kits: a plain one, and one sealed with a passphrase.
    let plain = site.path("plain.tar.zst");
    let sealed = site.path("sealed.tar.zst");
    let passphrase = site.path("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let started = Instant::now();
    let out = site.run(&["backup", "--out", plain.to_str().unwrap()]);
    eprintln!(
        "BENCH ilha backup (6 hosts, plain kit): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("NOT encrypted"),
        "no warning about the plain kit:\n{said}"
    );
    assert!(said.contains("drill passed"), "{said}");
    let out = site.run(&[
        "backup",
        "--out",
        sealed.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let pubkey = site.state().join("kit-key/ilha.pub");
    for kit in [&plain, &sealed] {
        let verified = stock(
            "minisign",
            &["-Vm", kit.to_str().unwrap(), "-p", pubkey.to_str().unwrap()],
        );
        assert!(
            verified.status.success(),
            "minisign -V refused {}: {}",
            kit.display(),
            text(&verified)
        );
    }
    // The manifest is readable without keys; the drill and the objects are in it.
    let inspect = ilha(lab, &["inspect", sealed.to_str().unwrap()]);
    let shown = text(&inspect);
    assert!(inspect.status.success(), "{shown}");
    assert!(
        shown.contains("island") && shown.contains("passphrase"),
        "{shown}"
    );
    // The plain kit opens with stock tools: etcd reads the snapshot, kubectl takes the dump.
    let opened = tempfile::tempdir().unwrap();
    let untar = stock(
        "tar",
        &[
            "--zstd",
            "-xf",
            plain.to_str().unwrap(),
            "-C",
            opened.path().to_str().unwrap(),
        ],
    );
    assert!(untar.status.success(), "{}", text(&untar));
    lab.copy_to(
        1,
        &opened.path().join("payload/etcd/snapshot.db"),
        "/root/kit-snapshot.db",
    )
    .unwrap();
    let status = lab
        .ssh_ok(
            1,
            "ETCDCTL_API=3 /usr/local/bin/etcdctl snapshot status /root/kit-snapshot.db -w json",
        )
        .unwrap();
    assert!(status.contains("\"totalKey\""), "{status}");
    let objects = opened.path().join("payload/objects");
    let configmaps = std::fs::read_dir(&objects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("configmaps"))
        .expect("a configmaps file in the dump");
    lab.copy_to(1, &configmaps, "/root/configmaps.yaml")
        .unwrap();
    site.kubectl("apply --dry-run=server -f /root/configmaps.yaml");

    // After the backup: one object added (must vanish), one deleted (must come back).
    site.kubectl("-n shop create configmap after-backup --from-literal=x=1");
    site.kubectl("-n shop delete configmap settings");

    // Disaster: node2 and node3 lose power and their etcd data; etcd has no quorum.
    for index in [2, 3] {
        lab.kill(index).unwrap();
    }
    for index in [2, 3] {
        lab.start(index).unwrap();
        lab.ssh_ok(
            index,
            "systemctl stop etcd; rm -rf /var/lib/etcd; systemctl start --no-block etcd",
        )
        .unwrap();
    }
    // node3 also lost files of /etc/kubernetes, one of which its etcd cannot start without.
    lab.ssh_ok(
        3,
        "rm /etc/kubernetes/pki/etcd/peer.key /etc/kubernetes/admin.conf",
    )
    .unwrap();
    eventually(
        "the API to stop answering (quorum lost)",
        Duration::from_secs(60),
        || (!site.shop_readable()).then_some(()),
    );

    // Refused before any host changes: a flipped byte, a corrupt snapshot, a wrong passphrase.
    let flipped = site.path("flipped.tar.zst");
    let mut bytes = std::fs::read(&plain).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 1;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::copy(
        format!("{}.minisig", plain.display()),
        format!("{}.minisig", flipped.display()),
    )
    .unwrap();
    let out = site.run(&["restore", flipped.to_str().unwrap(), "--yes"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));

    let corrupt = site.path("corrupt.tar.zst");
    corrupt_snapshot_kit(&plain, &site.state(), &corrupt);
    let out = site.run(&["restore", corrupt.to_str().unwrap(), "--yes"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("snapshot") && said.contains("nothing was stopped"),
        "{said}"
    );

    let wrong = site.path("wrong-passphrase");
    std::fs::write(&wrong, "incorrect horse\n").unwrap();
    let out = site.run(&[
        "restore",
        sealed.to_str().unwrap(),
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("passphrase"),
        "{}",
        text(&out)
    );
    // A host that does not answer: named, and nothing changes.
    let with_ghost = site.path("with-ghost.ini");
    let mut ini = std::fs::read_to_string(&site.inventory).unwrap();
    ini = ini.replacen(
        '\n',
        "\nghost ansible_ssh_user=root ansible_ssh_host=10.88.0.99 ip=10.88.0.99\n",
        1,
    );
    ini = ini.replacen("[kube-node]\n", "[kube-node]\nghost\n", 1);
    std::fs::write(&with_ghost, ini).unwrap();
    let out = ilha(
        lab,
        &[
            "restore",
            sealed.to_str().unwrap(),
            "--passphrase-file",
            passphrase.to_str().unwrap(),
            "--yes",
            "--connect-timeout",
            "3",
            "-i",
            with_ghost.to_str().unwrap(),
            "-c",
            &site.config,
        ],
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("ghost") && said.contains("Nothing was changed"),
        "{said}"
    );
    for index in 1..=3 {
        assert!(
            !site.etcd_data_moved_aside(index),
            "node{index}: etcd touched by a refused restore"
        );
    }
    assert_eq!(
        lab.ssh_ok(1, "systemctl is-active etcd || true")
            .unwrap()
            .trim(),
        "active"
    );

    // Recovery from the sealed kit.
    let started = Instant::now();
    let out = site.run(&[
        "restore",
        sealed.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "--yes",
    ]);
    eprintln!(
        "BENCH ilha restore (etcd recovery, 3 members, 6 nodes): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("node3: 2 missing file(s) of /etc/kubernetes put back"),
        "{said}"
    );
    lab.ssh_ok(
        3,
        "test -s /etc/kubernetes/pki/etcd/peer.key && test -s /etc/kubernetes/admin.conf",
    )
    .unwrap();
    for index in 1..=3 {
        assert!(
            site.etcd_data_moved_aside(index),
            "node{index}: old etcd data not kept aside"
        );
    }
    assert!(site.shop_readable());
    assert_eq!(
        site.kubectl("-n shop get configmap settings -o jsonpath='{.data.colour}'"),
        "teal"
    );
    assert_eq!(
        site.kubectl("-n shop get secret token -o jsonpath='{.data.value}'"),
        "czNjcjN0"
    );
    assert!(
        site.kubectl("-n shop get configmap after-backup --ignore-not-found")
            .trim()
            .is_empty()
    );
    let members = lab
        .ssh_ok(1, "ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key endpoint health --cluster 2>&1")
        .unwrap_or_else(|e| panic!("etcd health after recovery: {e}"));
    assert_eq!(members.matches("is healthy").count(), 3, "{members}");
    site.wait_workload();
    let log = site.volume_log();
    assert!(
        log.first().map(String::as_str) == Some("started"),
        "{log:?}"
    );

    // A new cluster on the same hosts: reset, up, then the objects from the plain kit.
    let out = site.run(&["reset", "--yes", "--no-snapshot"]);
    assert!(out.status.success(), "{}", text(&out));
    // The new cluster has its own state directory (a new CA): only the kit links the two.
    let old_pubkey = pubkey.to_str().unwrap().to_string();
    let rebuild = site.path("rebuild");
    std::fs::create_dir_all(&rebuild).unwrap();
    site.config = write_config(&rebuild, "island")
        .to_str()
        .unwrap()
        .to_string();
    site.up();
    assert!(
        !site.shop_readable(),
        "the new cluster already has the old namespace"
    );
    let out = site.run(&[
        "restore",
        plain.to_str().unwrap(),
        "--objects",
        "--dry-run",
        "--pubkey",
        &old_pubkey,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("create namespaces shop"), "{said}");
    // node5's label comes back: the dry run shows it as a diff line.
    assert!(
        said.lines()
            .any(|l| l.trim_start().starts_with('+') && l.contains("tier: gold")),
        "{said}"
    );
    assert!(!site.shop_readable(), "--dry-run wrote to the cluster");
    assert!(
        site.kubectl("get node node5 -o jsonpath='{.metadata.labels.tier}'")
            .is_empty()
    );
    let started = Instant::now();
    let out = site.run(&[
        "restore",
        plain.to_str().unwrap(),
        "--objects",
        "--pubkey",
        &old_pubkey,
    ]);
    eprintln!(
        "BENCH ilha restore --objects: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{}", text(&out));
    site.wait_workload();
    assert_eq!(
        site.kubectl("-n shop get configmap settings -o jsonpath='{.data.colour}'"),
        "teal"
    );
    assert_eq!(
        site.kubectl("get node node5 -o jsonpath='{.metadata.labels.tier}'"),
        "gold"
    );
    let claim_uid = site.kubectl("-n shop get pvc data -o jsonpath='{.metadata.uid}'");
    let bound_to = site.kubectl("get pv shop-data -o jsonpath='{.spec.claimRef.uid}'");
    assert_eq!(bound_to, claim_uid, "the PV is not bound to the new claim");
    // The volume kept its data through reset and rebuild, and the new pod appended to it.
    eventually(
        "the new writer's line on the volume",
        Duration::from_secs(60),
        || {
            let log = site.volume_log();
            (log.len() >= 2 && log.iter().all(|l| l == "started")).then_some(())
        },
    );
}
