//! Hosts without root login (issue 14): every lab host gets a user `ops` with the lab's key and a
//! NOPASSWD sudo rule, and sshd refuses root (`PermitRootLogin no`, proven with a root login that
//! fails). Then, through `ansible_user=ops ansible_become=true` only:
//! - `ops` without `ansible_become` is refused before any change, naming the host and the fix;
//! - a host whose sudo asks for a password is refused, named, before any change on any host;
//! - the whole lifecycle: `up` (h1 master + etcd, h2 worker), `scale` (h3 joins), `backup`,
//!   `restore` (etcd, from the kit), `reset`, each checked on the hosts.
//!
//! The test's own checks cannot ssh as root: they enter the hosts through the lab's console
//! (`Lab::exec`, nsenter into the host's PID 1), which is not how ilha reaches them.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{FreshLab, LAB_EVICTION, eventually, fresh_lab, ilha, lab_bundle, text};

const USER: &str = "ops";

/// Makes `ops` (the lab's key in its authorized_keys, a NOPASSWD rule for root), then forbids
/// root login and restarts sshd. Runs as root over ssh: the last time the test does.
fn harden(lab: &FreshLab, index: usize) {
    lab.ssh_ok(
        index,
        &format!(
            "set -eu
useradd -m -s /bin/bash {USER}
install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh
install -m 600 -o {USER} -g {USER} /root/.ssh/authorized_keys /home/{USER}/.ssh/authorized_keys
echo '{USER} ALL=(root) NOPASSWD: ALL' > /etc/sudoers.d/{USER}
chmod 440 /etc/sudoers.d/{USER}
visudo -cf /etc/sudoers.d/{USER} >/dev/null
echo 'PermitRootLogin no' > /etc/ssh/sshd_config.d/00-no-root-login.conf
sshd -t
systemctl restart ssh"
        ),
    )
    .unwrap_or_else(|err| panic!("hardening h{index}: {err}"));
}

/// The inventory: h1 master + etcd, the rest workers, all reached as `ops` (with sudo unless
/// `become` is false).
fn inventory(lab: &FreshLab, dir: &Path, hosts: &[usize], become_root: bool) -> PathBuf {
    let mut text = String::new();
    for &index in hosts {
        let ip = lab.host(index).ip;
        text.push_str(&format!("h{index} ansible_host={ip} ip={ip}\n"));
    }
    text.push_str("\n[kube_control_plane]\nh1\n\n[etcd]\nh1\n\n[kube_node]\n");
    for &index in hosts.iter().filter(|&&i| i != 1) {
        text.push_str(&format!("h{index}\n"));
    }
    text.push_str(&format!("\n[all:vars]\nansible_user={USER}\n"));
    if become_root {
        text.push_str("ansible_become=true\n");
    }
    let path = dir.join(format!(
        "inventory-{}{}.ini",
        hosts.len(),
        if become_root { "-become" } else { "" }
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A script's stdout inside host `index`, as root, without ssh.
fn on_host(lab: &FreshLab, index: usize, script: &str) -> String {
    lab.exec_ok(index, script)
        .unwrap_or_else(|err| panic!("on h{index}: {err}"))
        .trim()
        .to_string()
}

fn kubectl(lab: &FreshLab, args: &str) -> String {
    on_host(
        lab,
        1,
        &format!("kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s {args}"),
    )
}

/// Nothing of a cluster on the host: no state, no config, no units (the host lock's tmpfs
/// directory aside, which a lock leaves and a reboot clears).
fn untouched(lab: &FreshLab, index: usize) -> bool {
    on_host(
        lab,
        index,
        "ls -d /var/lib/ilha /etc/kubernetes /etc/systemd/system/kubelet.service /usr/local/bin/kubelet 2>/dev/null || true",
    )
    .is_empty()
}

fn ready_nodes(lab: &FreshLab) -> Vec<String> {
    let out = kubectl(
        lab,
        "get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}'",
    );
    out.lines()
        .filter_map(|line| line.strip_suffix("=True"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_cluster_lives_its_whole_life_through_sudo_on_hosts_without_root_login() {
    let bundle = lab_bundle();
    let lab = fresh_lab(3);
    // From here on: the suite's own cost (the lab's lock may have been waited for above).
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("cluster.yaml");
    std::fs::write(
        &config,
        format!("cluster_name: sudoers\nstate_dir: state\n{LAB_EVICTION}"),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    for index in 1..=3 {
        harden(&lab, index);
    }
    for index in 1..=3 {
        let refused = lab
            .ssh(index, "true")
            .expect_err("root logs in over ssh after PermitRootLogin no");
        assert!(
            refused.to_string().contains("Permission denied"),
            "h{index}: {refused}"
        );
        assert_eq!(
            on_host(&lab, index, "sshd -T | grep -i '^permitrootlogin'"),
            "permitrootlogin no"
        );
    }
    eprintln!(
        "BENCH lab: 3 hosts with `ops` and no root login: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let bundle_path = bundle.bundle.to_str().unwrap();
    let pubkey = bundle.pubkey.to_str().unwrap();
    let install = |command: &str, inventory: &Path| {
        ilha(
            &lab,
            &[
                command,
                bundle_path,
                "--pubkey",
                pubkey,
                "-i",
                inventory.to_str().unwrap(),
                "-c",
                &config,
            ],
        )
    };

    // `ops` without become: refused at the first command on each host, before any change.
    let plain = inventory(&lab, work.path(), &[1, 2], false);
    let out = install("up", &plain);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("2 host(s) where ilha cannot run commands as root:"),
        "{said}"
    );
    for host in ["h1", "h2"] {
        assert!(
            said.contains(&format!(
                "{host}: connected as `{USER}` (uid 1000), not root, and the inventory does not ask for sudo: set `ansible_become=true` for this host and give `{USER}` a NOPASSWD sudo rule for root"
            )),
            "{said}"
        );
    }
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(
        !said.contains("Preflight"),
        "refused before preflight:\n{said}"
    );
    assert!(untouched(&lab, 1) && untouched(&lab, 2), "{said}");

    // h2's sudo asks for a password: h2 is named with sudo's words and the fix; no host changes.
    let two = inventory(&lab, work.path(), &[1, 2], true);
    on_host(
        &lab,
        2,
        &format!("echo '{USER} ALL=(root) ALL' > /etc/sudoers.d/{USER}"),
    );
    let out = install("up", &two);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "h2: `sudo -n` as `{USER}` was refused (sudo: a password is required): ilha never types a password; give `{USER}` a NOPASSWD rule for root, for example `{USER} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{USER}"
        )),
        "{said}"
    );
    assert!(!said.contains("h1: `sudo"), "h1's sudo is fine:\n{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(untouched(&lab, 1) && untouched(&lab, 2), "{said}");
    on_host(
        &lab,
        2,
        &format!("echo '{USER} ALL=(root) NOPASSWD: ALL' > /etc/sudoers.d/{USER}"),
    );

    // up, as ops through sudo.
    let at = Instant::now();
    let out = install("up", &two);
    let said = text(&out);
    assert!(out.status.success(), "ilha up as ops failed:\n{said}");
    eprintln!(
        "BENCH ilha up through sudo, 2 hosts: {:.1}s",
        at.elapsed().as_secs_f64()
    );
    assert_eq!(
        said.matches(&format!("`{USER}` via sudo (uid 0)")).count(),
        2,
        "preflight's user row on h1 and h2:\n{said}"
    );
    eventually("h1 and h2 Ready", Duration::from_secs(90), || {
        (ready_nodes(&lab) == ["h1", "h2"]).then_some(())
    });
    for index in [1, 2] {
        // What ilha made belongs to root, its units run, and the commands were sudo's.
        assert_eq!(
            on_host(
                &lab,
                index,
                "stat -c %U /var/lib/ilha /etc/kubernetes /usr/local/bin/kubelet | sort -u; systemctl is-active kubelet"
            ),
            "root\nactive",
            "h{index}"
        );
        let sudo_log = on_host(
            &lab,
            index,
            &format!(
                "journalctl -q --no-pager _COMM=sudo | grep -c '{USER} : .*USER=root.*COMMAND=/usr/bin/bash' || true"
            ),
        );
        assert!(
            sudo_log.parse::<u32>().unwrap_or(0) > 5,
            "h{index}: sudo's log shows {sudo_log} commands from {USER}"
        );
    }
    assert!(lab.ssh(1, "true").is_err(), "root login came back");

    // scale: h3 joins, through sudo too.
    let three = inventory(&lab, work.path(), &[1, 2, 3], true);
    let at = Instant::now();
    let out = install("scale", &three);
    assert!(out.status.success(), "ilha scale failed:\n{}", text(&out));
    eprintln!(
        "BENCH ilha scale through sudo, +1 worker: {:.1}s",
        at.elapsed().as_secs_f64()
    );
    eventually("h3 Ready", Duration::from_secs(90), || {
        (ready_nodes(&lab) == ["h1", "h2", "h3"]).then_some(())
    });
    assert_eq!(on_host(&lab, 3, "systemctl is-active kubelet"), "active");

    // backup (snapshot and /etc/kubernetes downloaded through sudo), then restore from it.
    let hosts_args = ["-i", three.to_str().unwrap(), "-c", config.as_str()];
    kubectl(
        &lab,
        "create configmap before-backup --from-literal=kept=yes",
    );
    let kit = work.path().join("kit.tar.zst");
    let mut args = vec!["backup", "--out", kit.to_str().unwrap(), "--no-encrypt"];
    args.extend(hosts_args);
    let at = Instant::now();
    let out = ilha(&lab, &args);
    assert!(out.status.success(), "ilha backup failed:\n{}", text(&out));
    eprintln!(
        "BENCH ilha backup through sudo: {:.1}s",
        at.elapsed().as_secs_f64()
    );
    assert!(kit.is_file());
    let listing = std::process::Command::new("tar")
        .args(["--zstd", "-tf"])
        .arg(&kit)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("h1") && l.contains("etc-kubernetes")),
        "no /etc/kubernetes of h1 in the kit:\n{listing}"
    );
    kubectl(&lab, "delete configmap before-backup");
    kubectl(
        &lab,
        "create configmap after-backup --from-literal=gone=yes",
    );
    let mut args = vec!["restore", kit.to_str().unwrap(), "--yes"];
    args.extend(hosts_args);
    let at = Instant::now();
    let out = ilha(&lab, &args);
    assert!(out.status.success(), "ilha restore failed:\n{}", text(&out));
    eprintln!(
        "BENCH ilha restore through sudo: {:.1}s",
        at.elapsed().as_secs_f64()
    );
    eventually(
        "the API back with the backup's objects",
        Duration::from_secs(90),
        || {
            let names = lab
                .exec_ok(
                    1,
                    "kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=5s get configmaps -o name",
                )
                .ok()?;
            (names.contains("configmap/before-backup") && !names.contains("after-backup"))
                .then_some(())
        },
    );
    eventually(
        "every node Ready after restore",
        Duration::from_secs(90),
        || (ready_nodes(&lab) == ["h1", "h2", "h3"]).then_some(()),
    );

    // reset: every host back to what it was, still reachable as ops only.
    let mut args = vec!["reset", "--yes", "--no-snapshot"];
    args.extend(hosts_args);
    let at = Instant::now();
    let out = ilha(&lab, &args);
    let said = text(&out);
    assert!(out.status.success(), "ilha reset failed:\n{said}");
    for host in ["h1", "h2", "h3"] {
        assert!(
            said.lines().any(|l| l.starts_with(&format!("{host}: "))
                && l.ends_with("matches its pre-install record")),
            "{host} does not match its record:\n{said}"
        );
    }
    eprintln!(
        "BENCH ilha reset through sudo, 3 hosts: {:.1}s",
        at.elapsed().as_secs_f64()
    );
    for index in 1..=3 {
        assert!(untouched(&lab, index), "h{index} keeps cluster files");
        assert_eq!(
            on_host(
                &lab,
                index,
                "systemctl is-active kubelet etcd 2>/dev/null || true"
            ),
            "inactive\ninactive",
            "h{index}"
        );
        assert!(
            lab.ssh(index, "true").is_err(),
            "h{index}: root login came back"
        );
    }
    eprintln!(
        "BENCH become suite: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
