//! The lab's own tests: real hosts under systemd-nspawn. Run as root; they never skip.
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ilha_e2e::{LabSession, lab};
use xtask::lab::host::launcher_pid;

const HOSTS: usize = 6;

/// `systemctl is-system-running --wait` on host `index`, with the failed units if it isn't `running`.
fn assert_running(lab: &LabSession, index: usize) {
    let out = lab
        .ssh(index, "timeout 90 systemctl is-system-running --wait")
        .unwrap_or_else(|err| panic!("{err}"));
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if state != "running" {
        let failed = lab
            .ssh(
                index,
                "systemctl --failed --no-legend; journalctl -b -p warning --no-pager | tail -30",
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("h{index} is {state:?}, not running:\n{failed}");
    }
}

fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn six_hosts_boot_to_running_and_answer_ssh() {
    let lab = lab(HOSTS);
    for index in 1..=HOSTS {
        assert_running(&lab, index);
        let hostname = lab.ssh_ok(index, "hostname").unwrap();
        assert_eq!(hostname.trim(), format!("h{index}"));
        let address = lab.ssh_ok(index, "ip -4 -o addr show dev eth0").unwrap();
        assert!(
            address.contains(&format!("{}/24", lab.host(index).ip)),
            "h{index}: {address}"
        );
    }
    let status = lab.status().unwrap();
    for index in 1..=HOSTS {
        let host = status
            .iter()
            .find(|s| s.host.index == index)
            .expect("host in status");
        assert!(host.running && host.ssh_ok, "status of h{index}: {host:?}");
    }
}

#[test]
fn up_on_an_up_lab_is_a_no_op() {
    let lab = lab(HOSTS);
    let launchers: Vec<Option<i32>> = (1..=HOSTS).map(|i| launcher_pid(lab.config(), i)).collect();
    assert!(
        launchers.iter().all(Option::is_some),
        "launchers: {launchers:?}"
    );
    let started = Instant::now();
    lab.up(HOSTS).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "second up took {:?}",
        started.elapsed()
    );
    let again: Vec<Option<i32>> = (1..=HOSTS).map(|i| launcher_pid(lab.config(), i)).collect();
    assert_eq!(launchers, again, "up restarted hosts that were running");
}

#[test]
fn hosts_have_their_own_files_identity_and_host_keys() {
    let lab = lab(HOSTS);
    let marker = token();
    lab.ssh_ok(1, &format!("echo {marker} > /root/only-on-h1"))
        .unwrap();
    assert_eq!(
        lab.ssh_ok(1, "cat /root/only-on-h1").unwrap().trim(),
        marker
    );
    let on_h2 = lab.ssh(2, "cat /root/only-on-h1").unwrap();
    assert!(!on_h2.status.success(), "h2 sees h1's file: {:?}", on_h2);

    let mut machine_ids = HashSet::new();
    let mut host_keys = HashSet::new();
    let known_hosts = std::fs::read_to_string(lab.known_hosts()).unwrap();
    for index in 1..=HOSTS {
        let id = lab
            .ssh_ok(index, "cat /etc/machine-id")
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(id.len(), 32, "h{index} machine-id {id:?}");
        assert!(machine_ids.insert(id), "h{index} shares its machine-id");
        let key = lab
            .ssh_ok(index, "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")
            .unwrap()
            .trim()
            .to_string();
        let learnt = format!("h{index},{} {key}", lab.host(index).ip);
        assert!(
            known_hosts.lines().any(|l| l == learnt),
            "known_hosts lacks {learnt:?}"
        );
        assert!(host_keys.insert(key), "h{index} shares its host key");
    }
}

#[test]
fn ssh_config_works_with_plain_ssh_and_checks_host_keys() {
    let lab = lab(HOSTS);
    let config = lab.ssh_config().unwrap();
    let config_path = config.to_str().unwrap();
    let by_ip = run(
        "ssh",
        &[
            "-F",
            config_path,
            &format!("root@{}", lab.host(1).ip),
            "hostname",
        ],
    );
    assert_eq!(by_ip.trim(), "h1");
    let by_name = run("ssh", &["-F", config_path, "h2", "hostname"]);
    assert_eq!(by_name.trim(), "h2");

    // The same config with h2's key filed under h1: ssh must refuse h1.
    let scratch = tempfile::tempdir().unwrap();
    let known = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let h2_key = known
        .lines()
        .find(|l| l.starts_with("h2,") && l.contains("ssh-ed25519"))
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key.to_string())
        .expect("h2's ed25519 key in known_hosts");
    let wrong_known = scratch.path().join("known_hosts");
    std::fs::write(&wrong_known, format!("h1,{} {h2_key}\n", lab.host(1).ip)).unwrap();
    let wrong_config = scratch.path().join("ssh_config");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &lab.known_hosts().display().to_string(),
        &wrong_known.display().to_string(),
    );
    std::fs::write(&wrong_config, text).unwrap();
    let refused = Command::new("ssh")
        .args([
            "-F",
            wrong_config.to_str().unwrap(),
            &format!("root@{}", lab.host(1).ip),
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(255),
        "ssh accepted a wrong host key: {refused:?}"
    );
}

#[test]
fn guard_rejects_outside_traffic_fast_and_lets_the_lab_through() {
    let lab = lab(HOSTS);
    // TEST-NET-2: never routed anywhere; the guard must stop it inside the host.
    let outside = "198.51.100.1";
    let route = lab.ssh_ok(1, &format!("ip route get {outside}")).unwrap();
    assert!(
        route.contains("dev eth0"),
        "no route to {outside} at all, so the guard is not what stops it: {route}"
    );

    let counter = "iptables -w -L ILHA-GUARD -vnx | awk '$3==\"REJECT\"{n+=$1} END{print n+0}'";
    let before: u64 = lab.ssh_ok(1, counter).unwrap().trim().parse().unwrap();
    let started = Instant::now();
    let attempt = lab
        .ssh(
            1,
            &format!("timeout 5 bash -c 'echo > /dev/tcp/{outside}/80'"),
        )
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&attempt.stderr);
    assert_eq!(
        attempt.status.code(),
        Some(1),
        "connect to {outside}: {attempt:?}"
    );
    assert!(
        stderr.contains("Connection refused"),
        "not REJECTed: {stderr}"
    );
    // The ssh round trip is included; a DROP would have taken the full 5 s timeout.
    assert!(took < Duration::from_secs(2), "rejection took {took:?}");
    let after: u64 = lab.ssh_ok(1, counter).unwrap().trim().parse().unwrap();
    assert!(
        after > before,
        "REJECT counter did not move: {before} -> {after}"
    );

    let udp = lab.ssh(1, &format!("ping -c1 -W2 {outside}")).unwrap();
    assert!(
        !udp.status.success(),
        "ping to {outside} went through: {udp:?}"
    );

    lab.ssh_ok(
        1,
        &format!("timeout 5 bash -c 'echo > /dev/tcp/{}/22'", lab.host(2).ip),
    )
    .unwrap();
    lab.ssh_ok(1, "ping -c1 -W2 h2").unwrap();
}

#[test]
fn a_power_cut_host_comes_back_with_its_files() {
    let lab = lab(HOSTS);
    let marker = token();
    lab.ssh_ok(3, &format!("echo {marker} > /root/survives && sync"))
        .unwrap();
    let id = lab.ssh_ok(3, "cat /etc/machine-id").unwrap();

    lab.kill(3).unwrap();
    assert!(
        launcher_pid(lab.config(), 3).is_none(),
        "h3 still running after kill"
    );
    assert!(
        lab.ssh(3, "true").is_err(),
        "h3 answers SSH after a power cut"
    );
    assert_running(&lab, 4);

    lab.start(3).unwrap();
    assert_running(&lab, 3);
    assert_eq!(lab.ssh_ok(3, "cat /root/survives").unwrap().trim(), marker);
    assert_eq!(lab.ssh_ok(3, "cat /etc/machine-id").unwrap(), id);
}

#[test]
fn reboot_inside_a_host_boots_it_again() {
    let lab = lab(HOSTS);
    let launcher = launcher_pid(lab.config(), 5).expect("h5 running");
    lab.ssh_ok(5, "touch /run/before-reboot").unwrap();
    // The connection may drop before ssh sees the exit status.
    let _ = lab.ssh(5, "systemctl reboot");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let fresh = lab.ssh(5, "test ! -e /run/before-reboot");
        if fresh.is_ok_and(|o| o.status.success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "h5 did not come back from reboot"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        launcher_pid(lab.config(), 5),
        Some(launcher),
        "reboot replaced the launcher"
    );
    assert_running(&lab, 5);
}

#[test]
fn down_leaves_nothing_behind() {
    let lab = lab(HOSTS);
    let config = lab.config().clone();
    lab.down().unwrap();
    let prefix = &config.prefix;

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state_dir = config.state_dir.display().to_string();
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(&state_dir)).collect();
    assert!(ours.is_empty(), "mounts left: {ours:#?}");

    let netns = run("ip", &["netns", "list"]);
    assert!(
        !netns.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
        "netns left: {netns}"
    );
    let links = run("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains(&format!(": {prefix}-h")),
        "veths left: {links}"
    );
    assert!(
        !links.contains(&format!(": {}:", config.bridge())),
        "bridge left: {links}"
    );

    let mut cgroups = Vec::new();
    find_dirs_named(
        Path::new("/sys/fs/cgroup"),
        &format!("{prefix}-h"),
        6,
        &mut cgroups,
    );
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:#?}");

    let machine = format!("--machine={prefix}-h");
    let nspawns: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&machine))
        .collect();
    assert!(nspawns.is_empty(), "processes left: {nspawns:#?}");

    let rules = run("iptables-save", &[]);
    assert!(
        !rules.contains(&config.rule_comment()),
        "iptables rules left:\n{rules}"
    );

    // State is kept for the next `up`.
    assert!(config.hosts_dir().join("h1/upper/etc/machine-id").is_file());
}

fn find_dirs_named(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            found.push(entry.path().display().to_string());
        } else if depth > 0 {
            find_dirs_named(&entry.path(), prefix, depth - 1, found);
        }
    }
}

/// Removes the stand-in "someone else's network" even when the test fails.
struct StandInLink(&'static str);

impl Drop for StandInLink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn up_refuses_a_subnet_routed_by_something_else() {
    // Another lab (own names, own state) on a /24 that a stand-in bridge already routes.
    let link = StandInLink("ilhatest0");
    let _ = Command::new("ip")
        .args(["link", "del", link.0])
        .stderr(std::process::Stdio::null())
        .status();
    run("ip", &["link", "add", link.0, "type", "bridge"]);
    run("ip", &["addr", "add", "10.77.0.1/24", "dev", link.0]);
    run("ip", &["link", "set", link.0, "up"]);
    let state = tempfile::tempdir().unwrap();
    let config = xtask::lab::LabConfig {
        state_dir: state.path().to_path_buf(),
        prefix: "ilhat".into(),
        net: "10.77.0".into(),
        ..xtask::lab::LabConfig::from_env()
    };
    let other = xtask::lab::Lab::new(config.clone());
    let err = other
        .up(1)
        .expect_err("up on a subnet that is routed elsewhere");
    assert!(
        matches!(err, xtask::lab::LabError::SubnetTaken { .. }),
        "wrong error: {err}"
    );
    assert!(
        err.to_string().contains(link.0),
        "error does not name the route: {err}"
    );
    let links = run("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains(&format!(": {}:", config.bridge())),
        "made a bridge anyway"
    );
}
