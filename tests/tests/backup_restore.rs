//! `ilha backup` and `ilha restore` on the seed's 6-host cluster: a kit proven by stock minisign,
//! etcd recovered after two of three members lost their data, then the cluster reset, built anew
//! and its objects restored (PersistentVolumes bound to the new claims, data on disk intact).
//! Kits with a flipped byte, a corrupt snapshot or a wrong passphrase are refused before any host
//! changes.
//!
//! Secrets: a kit is encrypted unless `--no-encrypt`; no master ever holds key material others can
//! read, during a backup, after one, or after one that failed or was interrupted (checked on the
//! hosts themselves); the plaintext staging is in the state directory, never beside `--out`; the
//! drill's etcd listens on no TCP port; a signed kit whose /etc/kubernetes tar holds
//! `root/.ssh/authorized_keys2`, `..`, a link or a setuid file puts none of them on a master.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ilha::backup::kit::{self, Protection, Unlock};
use ilha_e2e::cluster::{
    EXPOSED_SECRETS, FreshLab, eventually, fresh_lab, ilha, ilha_binary, kubectl, lab_bundle,
    seed_layout, text, write_config, write_inventory,
};
use xtask::lab::Lab;

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

/// [`EXPOSED_SECRETS`] on every master; `when` names the moment in failure messages.
fn assert_no_exposed_secrets(lab: &Lab, when: &str) {
    for index in 1..=3 {
        let found = lab.ssh(index, EXPOSED_SECRETS).unwrap();
        let found = String::from_utf8_lossy(&found.stdout).trim().to_string();
        let modes = if found.is_empty() {
            String::new()
        } else {
            lab.ssh_ok(
                index,
                &format!("stat -c '%a %U %n' {}", found.replace('\n', " ")),
            )
            .unwrap_or_default()
        };
        assert!(
            found.is_empty(),
            "node{index} {when}: key material readable by others:\n{modes}"
        );
        assert_eq!(
            lab.ssh_ok(
                index,
                "test -e /var/lib/ilha/etc-kubernetes.tar && echo left || true"
            )
            .unwrap()
            .trim(),
            "",
            "node{index} {when}: an archive of /etc/kubernetes was left on the master"
        );
    }
}

/// Watches, on node1 (the first etcd member: the drill runs there), every listening socket of
/// the drill's throwaway etcd while it lives. Prints `unix` for a unix socket and `tcp <line>`
/// for a TCP one, then `done` once the drill's etcd came and went.
const DRILL_WATCH: &str = r#"end=$((SECONDS + 240)); seen=
while [ $SECONDS -lt $end ]; do
  pid=$(pgrep -f -- '^/usr/local/bin/etcd --name ilha-drill' | head -n1 || true)
  if [ -n "$pid" ]; then
    seen=1
    ss -Hltnp 2>/dev/null | grep -F "pid=$pid," | sed 's/^/tcp /' || true
    ss -Hlxp 2>/dev/null | grep -qF "pid=$pid," && echo unix || true
  elif [ -n "$seen" ]; then
    echo done; exit 0
  fi
  sleep 0.02
done
echo timeout"#;

/// What [`DRILL_WATCH`] saw: whether the drill's etcd was on a unix socket, and every TCP
/// listener of it.
fn drill_sockets(output: &str) -> (bool, Vec<String>) {
    let unix = output.lines().any(|l| l == "unix");
    let mut tcp: Vec<String> = output
        .lines()
        .filter(|l| l.starts_with("tcp "))
        .map(str::to_string)
        .collect();
    tcp.sort();
    tcp.dedup();
    (unix, tcp)
}

/// On node2, `tar` (first on root's PATH) runs the real one, then holds its output open until
/// `/run/ilha-test-tar-held` is removed: a backup caught in the middle of archiving
/// /etc/kubernetes, for as long as the test needs.
const HOLD_TAR: &str = r#"cat > /usr/local/bin/tar <<'WRAPPER'
#!/bin/bash
/usr/bin/tar "$@"
rc=$?
touch /run/ilha-test-tar-held
while [ -e /run/ilha-test-tar-held ]; do sleep 0.2; done
exit $rc
WRAPPER
chmod 755 /usr/local/bin/tar"#;

/// The staging directories in `dir` (`.kit-staging-*`) with their modes.
fn staging_in(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kit-staging-"))
        .map(|e| {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            (e.file_name().to_string_lossy().into_owned(), mode)
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A copy of the `sealed` kit (same passphrase) whose /etc/kubernetes tar of every master also
/// holds what must never land on one, signed again with the right key: only restore's own
/// filter stands between it and `/` on the masters.
fn hostile_kit(sealed: &Path, passphrase: &str, state: &Path, out: &Path) {
    use tar::{EntryType, Header};
    let pubkey = ilha_format::load_public_key(&state.join("kit-key/ilha.pub")).unwrap();
    let key = ilha_format::load_secret_key(&state.join("kit-key/ilha.key"), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = kit::open_kit(
        sealed,
        &pubkey,
        &Unlock::Passphrase(passphrase.into()),
        dir.path(),
    )
    .unwrap();
    for master in &manifest.masters {
        let path = dir
            .path()
            .join(format!("masters/{master}/etc-kubernetes.tar"));
        let mut original = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let rebuilt = path.with_extension("new");
        let mut b = tar::Builder::new(std::fs::File::create(&rebuilt).unwrap());
        for entry in original.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let name = entry.path().unwrap().into_owned();
            let mut header = header;
            b.append_data(&mut header, name, &mut entry).unwrap();
        }
        let mut add = |name: &str, kind: EntryType, mode: u32, data: &[u8], link: Option<&str>| {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            // The raw name field: `set_path` would refuse `..`, a hostile tar does not.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add(
            "root/.ssh/authorized_keys2",
            EntryType::Regular,
            0o644,
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntruder intruder\n",
            None,
        );
        add(
            "etc/kubernetes/../../root/x",
            EntryType::Regular,
            0o644,
            b"x\n",
            None,
        );
        add(
            "etc/kubernetes/ssh",
            EntryType::Symlink,
            0o777,
            b"",
            Some("/root/.ssh"),
        );
        add(
            "etc/kubernetes/pki/shell",
            EntryType::Regular,
            0o4755,
            b"#!/bin/sh\nexec /bin/sh -p\n",
            None,
        );
        b.finish().unwrap();
        drop(b);
        std::fs::rename(&rebuilt, &path).unwrap();
    }
    manifest.files.clear();
    kit::write_kit(
        out,
        dir.path(),
        manifest,
        &Protection::Passphrase(passphrase.into()),
        &key,
    )
    .unwrap();
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

    // No choice of encryption: refused, nothing written (not even the kit signing key).
    let refused = site.path("refused.tar.zst");
    let out = site.run(&["backup", "--out", refused.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing was written"), "{}", text(&out));
    assert!(!refused.exists() && !site.state().join("kit-key").exists());
    assert_no_exposed_secrets(lab, "after ilha up");

    // Two kits: a plain one (asked for), and one sealed with a passphrase. While the first is
    // made, node1 is watched for the drill's etcd and its sockets.
    let plain = site.path("plain.tar.zst");
    let sealed = site.path("sealed.tar.zst");
    let passphrase = site.path("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let watch = lab
        .ssh_command(1)
        .arg(DRILL_WATCH)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let out = site.run(&["backup", "--out", plain.to_str().unwrap(), "--no-encrypt"]);
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
    let watched = watch.wait_with_output().unwrap();
    let watched = String::from_utf8_lossy(&watched.stdout);
    let (on_unix, on_tcp) = drill_sockets(&watched);
    assert!(
        on_tcp.is_empty(),
        "the drill's etcd listened on TCP:\n{}",
        on_tcp.join("\n")
    );
    assert!(
        on_unix && watched.contains("done"),
        "the drill's etcd was not seen on its unix socket:\n{watched}"
    );
    let out = site.run(&[
        "backup",
        "--out",
        sealed.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("NOT encrypted"), "{}", text(&out));
    assert_no_exposed_secrets(lab, "after two backups");
    assert!(staging_in(&site.state()).is_empty());

    // A backup caught while node2 archives /etc/kubernetes, then interrupted.
    let held_at = Instant::now();
    let media = site.path("media");
    std::fs::create_dir_all(&media).unwrap();
    lab.ssh_ok(2, HOLD_TAR).unwrap();
    let mut backup = Command::new(ilha_binary());
    backup
        .args(["backup", "--out"])
        .arg(media.join("interrupted.tar.zst"))
        .args(["--passphrase-file", passphrase.to_str().unwrap()])
        .args(site.hosts_args())
        .arg("--ssh-config")
        .arg(lab.ssh_config().unwrap())
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut running = backup.spawn().unwrap();
    eventually(
        "node2's tar to hold the backup in the middle",
        Duration::from_secs(120),
        || {
            lab.ssh_ok(2, "test -e /run/ilha-test-tar-held && echo held || true")
                .ok()
                .filter(|o| o.trim() == "held")
        },
    );
    assert_no_exposed_secrets(lab, "during a backup");
    let staging = staging_in(&site.state());
    assert!(
        staging.len() == 1 && staging[0].1 == 0o700,
        "the backup's staging is not one owner-only directory in the state directory: {staging:?}"
    );
    assert!(
        names_in(&media).is_empty(),
        "the backup wrote beside --out: {:?}",
        names_in(&media)
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let _ = running.wait();
    lab.ssh_ok(2, "rm -f /usr/local/bin/tar /run/ilha-test-tar-held")
        .unwrap();
    assert_no_exposed_secrets(lab, "after an interrupted backup");
    assert!(names_in(&media).is_empty(), "{:?}", names_in(&media));
    // What an interrupted run may leave stays owner-only in the state directory.
    assert!(
        staging_in(&site.state())
            .iter()
            .all(|(_, mode)| *mode == 0o700)
    );

    // A backup that fails midway: the object API does not answer.
    let admin = site.state().join("admin.conf");
    let kubeconfig = std::fs::read_to_string(&admin).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server line in admin.conf")
        .to_string();
    std::fs::write(&admin, kubeconfig.replace(&server, "https://127.0.0.1:1")).unwrap();
    let out = site.run(&[
        "backup",
        "--out",
        media.join("failed.tar.zst").to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ]);
    std::fs::write(&admin, &kubeconfig).unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("objects"), "{}", text(&out));
    assert_no_exposed_secrets(lab, "after a failed backup");
    assert!(names_in(&media).is_empty(), "{:?}", names_in(&media));
    // No staging is left: the failed run's own, and the interrupted run's (removed by this one).
    assert!(
        staging_in(&site.state()).is_empty(),
        "{:?}",
        staging_in(&site.state())
    );
    eprintln!(
        "BENCH interrupted + failed backups: {:.1}s",
        held_at.elapsed().as_secs_f64()
    );
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

    // Recovery from the sealed kit, signed again with hostile entries in every master's
    // /etc/kubernetes tar: they are named and dropped, the rest of the recovery is the same.
    let hostile = site.path("hostile.tar.zst");
    hostile_kit(
        &sealed,
        "correct horse battery staple",
        &site.state(),
        &hostile,
    );
    let started = Instant::now();
    let out = site.run(&[
        "restore",
        hostile.to_str().unwrap(),
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
    for entry in [
        "root/.ssh/authorized_keys2",
        "etc/kubernetes/../../root/x",
        "etc/kubernetes/ssh",
        "etc/kubernetes/pki/shell",
    ] {
        assert!(
            said.contains(&format!("{entry:?}")),
            "the refused entry {entry} is not named:\n{said}"
        );
    }
    for index in 1..=3 {
        let landed = lab
            .ssh_ok(
                index,
                "for f in /root/.ssh/authorized_keys2 /root/x /etc/kubernetes/ssh \
                 /etc/kubernetes/pki/shell; do [ ! -e \"$f\" ] && [ ! -L \"$f\" ] || echo \"$f\"; done; \
                 find /etc/kubernetes -perm /6000; \
                 find /etc/kubernetes ! -user root ! \\( -user etcd \\( -path /etc/kubernetes/pki/etcd/server.key \
                   -o -path /etc/kubernetes/pki/etcd/peer.key \\) \\)",
            )
            .unwrap();
        // Owners come from the restore, never from the kit: root, and etcd for its own two keys
        // (hardening.etcd_user).
        assert_eq!(landed.trim(), "", "node{index}: the hostile kit landed");
    }
    assert_no_exposed_secrets(lab, "after the recovery");
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
