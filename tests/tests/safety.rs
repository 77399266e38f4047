//! Safety on a live cluster (issue 12), on one small lab cluster (node1 master + etcd, node2
//! worker), each check made on the hosts over SSH, not only from ilha's report:
//! - `plan` against an unreachable host, in an empty directory, leaves nothing there;
//! - Ctrl-C in the middle of `up`: exit 130, no SSH master left, no staging, no host lock, and
//!   the next `up` continues from the journal;
//! - two commands at once on one state directory, and on one host set from two state
//!   directories: the second is refused naming the first (command, pid) and how to clear it;
//! - `up` run from another directory (a state directory with no PKI) and `up` with another
//!   cluster's state directory: refused with nothing changed, naming hosts and fingerprints;
//! - the cluster is still whole: a last `up` changes nothing;
//! - Ctrl-C in the middle of `backup`: no kit, no plaintext staging, no key readable by others on
//!   the master, no SSH master left; the next backup works.
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    EXPOSED_SECRETS, FreshLab, Member, eventually, fresh_lab, ilha, ilha_binary, kubectl,
    lab_bundle, text, up_args, write_config, write_inventory,
};

fn layout() -> Vec<Member> {
    vec![
        Member {
            name: "node1",
            index: 1,
            groups: &["kube-master", "etcd"],
        },
        Member {
            name: "node2",
            index: 2,
            groups: &["kube-node"],
        },
    ]
}

/// `ilha ARGS` with the lab's SSH settings, control sockets under `tmp` (so the test can tell
/// whether this run's SSH masters are gone), in its own process group (so a signal reaches it
/// and its `ssh` children as a terminal's Ctrl-C would).
fn ilha_spawn(lab: &FreshLab, args: &[&str], tmp: &Path) -> (Child, Arc<Mutex<String>>) {
    let mut command = Command::new(ilha_binary());
    command
        .args(args)
        .arg("--ssh-config")
        .arg(lab.ssh_config().unwrap())
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().expect("running ilha");
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                let mut all = output.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
    }
    (child, output)
}

fn signal(pid: i32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// SSH processes whose command line names `dir` (this run's control sockets).
fn ssh_processes_under(dir: &Path) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f", &format!("ssh .*{}", dir.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What must not change when a command is refused: trust roots, identity, journal, binaries,
/// services, per host.
fn host_fingerprint(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(
        index,
        "cd / && sha256sum etc/kubernetes/pki/ca.crt var/lib/ilha/identity.json var/lib/ilha/journal \
         usr/local/bin/kubelet etc/kubernetes/kubelet.conf 2>&1; \
         stat -c '%n %a %Y' etc/kubernetes/pki/ca.crt var/lib/ilha/journal; \
         systemctl is-active kubelet containerd; systemctl show -p ActiveEnterTimestamp kubelet",
    )
    .unwrap()
}

fn holders(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(index, "cat /run/ilha/holders/* 2>/dev/null || true")
        .unwrap()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn assert_refused(output: &Output, what: &str) -> String {
    let all = text(output);
    assert!(
        !output.status.success(),
        "{what} should have been refused:\n{all}"
    );
    all
}

/// `ilha ARGS` started and frozen (SIGSTOP) while it holds the lock of both hosts, so refusals
/// cannot race its end. A run with nothing to do holds them for about a second: the holders are
/// polled until both show this run, checked again once it is frozen, and the run started again
/// if it ended (or let go) first.
fn first_run_frozen_holding_both_hosts(
    lab: &FreshLab,
    args: &[&str],
    tmp: &Path,
) -> (Child, Arc<Mutex<String>>, u32) {
    let holds_both = |pid: u32| {
        let mark = format!("(pid {pid})");
        [1, 2].iter().all(|&i| {
            let held = holders(lab, i);
            held.contains("`ilha up` from") && held.contains(&mark)
        })
    };
    for _attempt in 0..5 {
        let (mut child, output) = ilha_spawn(lab, args, tmp);
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            if holds_both(pid) {
                signal(pid as i32, "STOP");
                if holds_both(pid) {
                    return (child, output, pid);
                }
                signal(pid as i32, "CONT");
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "{}", output.lock().unwrap());
    }
    panic!("five `ilha up` runs ended before both host locks were seen held");
}

#[test]
fn a_live_cluster_survives_operator_slips() {
    let bundle = lab_bundle();
    let lab = fresh_lab(2);
    let bundle_path = bundle.bundle.to_str().unwrap();
    let pubkey = bundle.pubkey.to_str().unwrap();
    let started = Instant::now();

    // 1. plan against an unreachable host, in an empty directory, leaves nothing behind ------
    let empty = tempfile::tempdir().unwrap();
    let mut ghost_layout = layout();
    ghost_layout[1].index = 9; // no host there
    let inventory = write_inventory(&lab, empty.path(), &ghost_layout, None);
    std::fs::write(empty.path().join("cluster.yaml"), "cluster_name: lab\n").unwrap();
    let planned = ilha(
        &lab,
        &[
            "plan",
            bundle_path,
            "--pubkey",
            pubkey,
            "-i",
            inventory.to_str().unwrap(),
            "-c",
            empty.path().join("cluster.yaml").to_str().unwrap(),
            "--connect-timeout",
            "3",
        ],
    );
    let all = assert_refused(&planned, "plan with an unreachable host");
    assert!(
        all.contains("node2"),
        "the unreachable host is named:\n{all}"
    );
    let left: Vec<String> = std::fs::read_dir(empty.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(
        left_sorted,
        ["cluster.yaml", "inventory.ini"],
        "plan left something behind"
    );

    // 2. Ctrl-C in the middle of up ---------------------------------------------------------
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &layout(), None);
    let config = write_config(work.path(), "lab");
    let state = work.path().join("state");
    let (inventory_s, config_s) = (inventory.to_str().unwrap(), config.to_str().unwrap());
    let args = up_args(bundle_path, pubkey, inventory_s, config_s);
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, output) = ilha_spawn(&lab, &args, tmp.path());
    // A step has finished on some host: others are in flight.
    eventually("a first step done", Duration::from_secs(240), || {
        output.lock().unwrap().contains(" done in ").then_some(())
    });
    signal(-(child.id() as i32), "INT");
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let said = output.lock().unwrap().clone();
    eventually(
        "no SSH process of the interrupted run",
        Duration::from_secs(5),
        || ssh_processes_under(tmp.path()).is_empty().then_some(()),
    );
    eventually("host locks released", Duration::from_secs(10), || {
        [1, 2]
            .iter()
            .all(|&i| holders(&lab, i).is_empty())
            .then_some(())
    });
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after Ctrl-C:\n{said}"
    );
    assert!(said.contains("stopped early"), "{said}");
    assert!(said.contains("Run `ilha up` again"), "{said}");
    assert!(
        said.contains(&state.display().to_string()),
        "the state directory is named:\n{said}"
    );
    assert!(!state.join("bundle.new").exists(), "bundle staging left");
    // The next run continues: some steps were journaled by the interrupted one.
    let resumed = ilha(&lab, &args);
    let all = text(&resumed);
    assert!(resumed.status.success(), "up after Ctrl-C:\n{all}");
    assert!(
        !all.contains(" 0 already done"),
        "nothing was journaled before Ctrl-C:\n{all}"
    );
    assert!(
        all.contains(&format!(
            "State directory: {}",
            state.canonicalize().unwrap().display()
        )),
        "{all}"
    );
    assert!(kubectl(&lab, 1, "get nodes").contains("node2"));

    // 3. Two commands at once -----------------------------------------------------------------
    let (mut first, first_output, pid) =
        first_run_frozen_holding_both_hosts(&lab, &args, tmp.path());
    let same_state = ilha(&lab, &args);
    let all = assert_refused(&same_state, "a second up on the same state directory");
    assert!(all.contains("is in use by `ilha up`"), "{all}");
    assert!(all.contains(&format!("(pid {pid})")), "{all}");

    let other = tempfile::tempdir().unwrap();
    copy_dir(
        &state,
        &other.path().join("state"),
        &["bundle", "bundle.new", "lock"],
    );
    std::fs::copy(&inventory, other.path().join("inventory.ini")).unwrap();
    let other_config = write_config(other.path(), "lab");
    let other_args = up_args(
        bundle_path,
        pubkey,
        inventory_s,
        other_config.to_str().unwrap(),
    );
    let same_hosts = ilha(&lab, &other_args);
    let all = assert_refused(
        &same_hosts,
        "up on the same hosts from another state directory",
    );
    assert!(all.contains("in use by another ilha command"), "{all}");
    assert!(all.contains("in use by `ilha up` from"), "{all}");
    assert!(all.contains(&format!("(pid {pid})")), "{all}");
    assert!(all.contains("`kill "), "how to clear a stale lock:\n{all}");
    signal(pid as i32, "CONT");
    let status = first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(status.success(), "{}", first_output.lock().unwrap());

    // 4. The wrong state directory never reaches the hosts -----------------------------------
    let before: Vec<String> = [1, 2].iter().map(|&i| host_fingerprint(&lab, i)).collect();
    let ours = sha256_hex(&state.join("pki/kubernetes/ca.crt"));
    // The same inventory and config copied to another directory: a state directory with no PKI.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(&inventory, elsewhere.path().join("inventory.ini")).unwrap();
    std::fs::copy(&config, elsewhere.path().join("cluster.yaml")).unwrap();
    let moved = ilha(
        &lab,
        &up_args(
            bundle_path,
            pubkey,
            elsewhere.path().join("inventory.ini").to_str().unwrap(),
            elsewhere.path().join("cluster.yaml").to_str().unwrap(),
        ),
    );
    let all = assert_refused(&moved, "up from another directory");
    assert!(
        all.contains("node1, node2: cluster \"lab\", kubernetes CA sha256 "),
        "{all}"
    );
    assert!(
        all.contains(&ours),
        "the hosts' fingerprint is named:\n{all}"
    );
    assert!(all.contains("no PKI"), "{all}");
    assert!(all.contains("ilha state recover"), "{all}");
    assert!(
        !elsewhere.path().join("state").exists(),
        "the refused run left its state directory"
    );

    // Another cluster's state directory (its own CAs).
    let foreign = tempfile::tempdir().unwrap();
    ilha::pki::Pki::open_or_init(&foreign.path().join("state/pki")).unwrap();
    let theirs = sha256_hex(&foreign.path().join("state/pki/kubernetes/ca.crt"));
    let foreign_config = write_config(foreign.path(), "lab");
    let mixed = ilha(
        &lab,
        &up_args(
            bundle_path,
            pubkey,
            inventory_s,
            foreign_config.to_str().unwrap(),
        ),
    );
    let all = assert_refused(&mixed, "up with another cluster's state directory");
    assert!(
        all.contains(&ours) && all.contains(&theirs),
        "both fingerprints:\n{all}"
    );
    assert!(all.contains("nothing was changed"), "{all}");
    let after: Vec<String> = [1, 2].iter().map(|&i| host_fingerprint(&lab, i)).collect();
    assert_eq!(before, after, "a refused run changed a host");

    // 5. The cluster is whole: nothing to do --------------------------------------------------
    let last = ilha(&lab, &args);
    let all = text(&last);
    assert!(last.status.success(), "{all}");
    assert!(all.contains("Nothing changed"), "{all}");
    let nodes = kubectl(&lab, 1, "get nodes --no-headers");
    assert_eq!(nodes.matches(" Ready").count(), 2, "{nodes}");
    // 6. Ctrl-C in the middle of a backup: no kit, no plaintext staging, no key left ---------
    let kit = work.path().join("kits/lab.tar.zst");
    let kit_s = kit.to_str().unwrap();
    let backup_args = [
        "backup",
        "-i",
        inventory_s,
        "-c",
        config_s,
        "--out",
        kit_s,
        "--no-encrypt",
    ];
    let (mut child, output) = ilha_spawn(&lab, &backup_args, tmp.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    // Polled closely: the three parts of a backup take a couple of seconds in all.
    while !output.lock().unwrap().contains("Taking the etcd snapshot") {
        assert!(Instant::now() < deadline, "backup never started its work");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(-(child.id() as i32), "INT");
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let said = output.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "backup after Ctrl-C:\n{said}");
    // The host's end of the lock goes when sshd sees the channel close, a moment after ilha.
    eventually("node1's lock released", Duration::from_secs(10), || {
        holders(&lab, 1).is_empty().then_some(())
    });
    assert!(!kit.exists(), "a kit was written by an interrupted backup");
    let staging: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kit-staging-"))
        .collect();
    assert!(staging.is_empty(), "plaintext staging left: {staging:?}");
    eventually(
        "no SSH process of the interrupted backup",
        Duration::from_secs(5),
        || ssh_processes_under(tmp.path()).is_empty().then_some(()),
    );
    let readable = lab.ssh(1, EXPOSED_SECRETS).unwrap();
    let readable = String::from_utf8_lossy(&readable.stdout).trim().to_string();
    assert_eq!(readable, "", "key material readable by others on node1");
    let again = ilha(&lab, &backup_args);
    assert!(
        again.status.success(),
        "backup after Ctrl-C:\n{}",
        text(&again)
    );
    assert!(kit.exists());
    // Every closing summary names the state directory.
    let closing = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        closing.ends_with(&format!("State directory: {}\n", state.display())),
        "{closing}"
    );

    eprintln!("safety suite: {:.0}s", started.elapsed().as_secs_f64());
}
