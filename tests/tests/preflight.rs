//! `ilha::preflight` against the lab's real hosts (root, never skipped): clean hosts pass, and a
//! wrong `ip=`, a busy port, a skewed clock, a lost and an unreachable host each fail naming the
//! host and what is wrong. The hosts report their real glibc, the lab bundle's binaries (read
//! from their ELF headers) pass against it, and a binary needing a newer glibc fails naming host
//! and binary; a host whose default route is deleted gets a warning.
use std::time::{Duration, Instant, SystemTime};

use ilha::cluster::bundle::InstallBundle;
use ilha::preflight::{
    self, BundleNeeds, GlibcVersion, HostChecks, HostLibc, LibcNeed, PortNeed, PreflightReport,
    Verdict,
};
use ilha::ssh::{Fleet, SshOptions, Target};
use ilha_e2e::{LabSession, RestartOnDrop, lab};
use ilha_format::cluster::NodeRole;
use xtask::lab::Lab;

const HOSTS: usize = 3;
/// A port nothing in the lab uses: free unless the test makes it busy.
const BUSY_PORT: u16 = 16443;
/// The transient unit holding it.
const BUSY_UNIT: &str = "ilha-preflight-busy.service";

fn targets(lab: &Lab, hosts: &[usize]) -> Vec<Target> {
    ilha_e2e::ssh::targets(lab, hosts)
}

fn lab_options(lab: &Lab) -> SshOptions {
    ilha_e2e::ssh::lab_options(lab, Duration::from_secs(3))
}

/// What `up` would ask of a lab host: sshd's port (held by ssh.service: the "already ours" path),
/// and a port that must be free. h3 gives no `ip=`, so its address is detected.
fn host_checks(lab: &Lab, index: usize) -> HostChecks {
    let host = lab.host(index);
    HostChecks {
        host: host.name.clone(),
        expected_ip: (index != 3).then(|| host.ip.parse().unwrap()),
        ports: vec![
            PortNeed {
                port: 22,
                what: "sshd",
                owner_unit: "ssh.service",
            },
            PortNeed {
                port: BUSY_PORT,
                what: "kube-apiserver",
                owner_unit: "kube-apiserver.service",
            },
        ],
        // The hosts run on this machine's kernel.
        arch: preflight::kubernetes_arch(std::env::consts::ARCH)
            .expect("known architecture")
            .to_string(),
        min_memory_mib: 256,
        min_disk_mib: 256,
        needs_container_runtime: true,
        ..HostChecks::default()
    }
}

fn all_checks(lab: &Lab) -> Vec<HostChecks> {
    (1..=HOSTS).map(|index| host_checks(lab, index)).collect()
}

/// Whether this machine (whose /proc/meminfo the hosts see) has swap on: then `swap` warns.
fn machine_has_swap() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .is_some_and(|kib| kib != "0")
}

/// Every failed row as `(host, check name, detail)`.
fn failures(report: &PreflightReport) -> Vec<(String, &'static str, String)> {
    report
        .failures()
        .map(|(host, check)| (host.to_string(), check.name, check.detail.clone()))
        .collect()
}

fn detail_of<'a>(report: &'a PreflightReport, host: &str, port: u16) -> &'a str {
    report
        .host(host)
        .unwrap()
        .checks_named("port")
        .find(|check| check.detail.starts_with(&format!("{port} (")))
        .map(|check| check.detail.as_str())
        .unwrap_or_else(|| panic!("{host}: no row for port {port}\n{report}"))
}

/// Stops the unit holding the busy port when the test ends, even by a panic.
struct StopBusyOnDrop<'a> {
    lab: &'a LabSession,
    index: usize,
}

impl Drop for StopBusyOnDrop<'_> {
    fn drop(&mut self) {
        let stop = format!(
            "systemctl stop {BUSY_UNIT} || true; systemctl reset-failed {BUSY_UNIT} 2>/dev/null || true"
        );
        if let Err(err) = self.lab.ssh(self.index, &stop) {
            eprintln!("stopping {BUSY_UNIT} on h{}: {err}", self.index);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_hosts_pass_and_each_broken_expectation_fails_naming_it() {
    let lab = lab(HOSTS);
    let fleet = Fleet::connect(targets(&lab, &[1, 2, 3]), &lab_options(&lab))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let checks = all_checks(&lab);

    // Clean hosts: nothing fails; the only warning a lab host can earn is the machine's swap.
    let started = Instant::now();
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    println!(
        "{report}\nFIGURE preflight on {HOSTS} hosts: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert!(report.passed(), "{report}");
    let swap = if machine_has_swap() {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    for host in &report.hosts {
        for check in &host.checks {
            let expected = if check.name == "swap" {
                swap
            } else {
                Verdict::Pass
            };
            assert_eq!(
                check.verdict, expected,
                "{}: {check:?}\n{report}",
                host.host
            );
        }
    }
    assert_eq!(
        report
            .hosts
            .iter()
            .map(|h| h.host.as_str())
            .collect::<Vec<_>>(),
        ["h1", "h2", "h3"]
    );
    for (index, host) in (1..).zip(&report.hosts) {
        let facts = &host.facts;
        let ip = lab.host(index).ip.parse().unwrap();
        assert_eq!(facts.node_ip, Some(ip), "{}", host.host);
        assert_eq!(facts.hostname.as_deref(), Some(host.host.as_str()));
        assert!(
            facts
                .os
                .as_deref()
                .is_some_and(|os| os.starts_with("Debian GNU/Linux")),
            "{facts:?}"
        );
        // One machine, one clock: what is measured is the method's own error.
        assert!(
            facts.clock_skew_secs.is_some_and(|skew| skew.abs() < 0.5),
            "{facts:?}"
        );
        assert!(
            detail_of(&report, &host.host, 22).ends_with("already held by its owner ssh.service")
        );
        assert!(detail_of(&report, &host.host, BUSY_PORT).ends_with(": free"));
    }
    // h3 gave no ip=: its address is the default route's, which is its lab address.
    let h3 = report.host("h3").unwrap();
    assert_eq!(h3.facts.detected_ip, h3.facts.node_ip);
    assert!(
        h3.check("address")
            .unwrap()
            .detail
            .contains("the default route's"),
        "{report}"
    );

    // A wrong ip= on h1: only that row fails, naming the address.
    let wrong_ip = format!("{}.99", lab.config().net);
    let mut wrong = checks.clone();
    wrong[0].expected_ip = Some(wrong_ip.parse().unwrap());
    let report = preflight::run(&fleet, &wrong, SystemTime::now()).await;
    println!("{report}");
    assert!(!report.passed());
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("h1", "address"));
    assert!(
        failed[0]
            .2
            .starts_with(&format!("{wrong_ip} (inventory ip=) is on no interface")),
        "{report}"
    );
    assert!(failed[0].2.contains(&lab.host(1).ip), "{report}");

    // A port held by something else on h2: fails naming the port, the process and its unit.
    let _busy = StopBusyOnDrop {
        lab: &lab,
        index: 2,
    };
    lab.ssh_ok(
        2,
        &format!(
            "systemctl stop {BUSY_UNIT} 2>/dev/null || true
systemctl reset-failed {BUSY_UNIT} 2>/dev/null || true
systemd-run --quiet --unit={BUSY_UNIT} socat TCP-LISTEN:{BUSY_PORT},reuseaddr,fork /dev/null
for _ in $(seq 50); do
  if ss -Hltn 'sport = :{BUSY_PORT}' | grep -q LISTEN; then exit 0; fi
  sleep 0.1
done
echo 'socat never listened' >&2; exit 1"
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    println!("{report}");
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("h2", "port"));
    assert!(
        failed[0].2.starts_with(&format!(
            "{BUSY_PORT} (kube-apiserver): in use by socat (pid "
        )),
        "{report}"
    );
    assert!(
        failed[0].2.ends_with(&format!(", {BUSY_UNIT})")),
        "{report}"
    );
    assert!(report.render().contains("\nh2: FAIL"), "{report}");

    // The same port when the plan says that unit is its owner: a re-run of `up`, so it passes.
    let mut rerun = checks.clone();
    rerun[1].ports[1].owner_unit = BUSY_UNIT;
    let report = preflight::run(&fleet, &rerun, SystemTime::now()).await;
    assert!(report.passed(), "{report}");
    assert!(
        detail_of(&report, "h2", BUSY_PORT)
            .ends_with(&format!("already held by its owner {BUSY_UNIT}")),
        "{report}"
    );

    // The operator's clock 10 s and 45 s off: every host warns, then fails.
    let report = preflight::run(&fleet, &rerun, SystemTime::now() - Duration::from_secs(10)).await;
    for host in &report.hosts {
        let clock = host.check("clock").unwrap();
        assert_eq!(clock.verdict, Verdict::Warn, "{report}");
        assert!(clock.detail.contains("ahead of the operator"), "{report}");
    }
    let report = preflight::run(&fleet, &rerun, SystemTime::now() + Duration::from_secs(45)).await;
    println!("{report}");
    let failed = failures(&report);
    assert_eq!(failed.len(), HOSTS, "{report}");
    for (host, name, detail) in &failed {
        assert_eq!(*name, "clock", "{host}");
        assert!(detail.contains("behind the operator"), "{detail}");
    }
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_and_unreachable_hosts_fail_naming_host_and_ssh_error() {
    let lab = lab(HOSTS);
    let options = lab_options(&lab);
    let checks = all_checks(&lab);
    let fleet = Fleet::connect(targets(&lab, &[1, 2, 3]), &options)
        .await
        .unwrap_or_else(|err| panic!("{err}"));

    // h3 loses power after the fleet connected: its probe fails, the others are judged.
    lab.kill(3).unwrap();
    let _restart = RestartOnDrop {
        lab: &lab,
        index: 3,
    };
    let started = Instant::now();
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    let elapsed = started.elapsed();
    println!("{report}\n({:.1}s)", elapsed.as_secs_f64());
    // Keepalives (1 s x 3) notice, not the 60 s probe timeout.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("h3", "ssh"));
    assert!(
        failed[0].2.starts_with("connection lost while running"),
        "{report}"
    );
    assert!(report.host("h1").unwrap().check("os").is_some());
    fleet.close().await;

    // h3 still off when connecting: the connect error is its row.
    let (fleet, connect_failures) =
        Fleet::connect_available(targets(&lab, &[1, 2, 3]), &options).await;
    assert_eq!(connect_failures.len(), 1);
    let report =
        preflight::run_with_connect_failures(&fleet, &connect_failures, &checks, SystemTime::now())
            .await;
    println!("{report}");
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("h3", "ssh"));
    let target = format!("h3 (root@{})", lab.host(3).ip);
    assert!(
        failed[0].2.starts_with(&format!("{target}: unreachable"))
            || failed[0].2.starts_with(&format!("{target}: timed out")),
        "{report}"
    );
    assert_eq!(report.hosts.len(), HOSTS);
    assert!(
        report.render().contains("\nh3: FAIL\n  FAIL  ssh"),
        "{report}"
    );

    // Without the connect errors the host is still there, failed, not silently skipped.
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    assert_eq!(
        report.host("h3").unwrap().check("ssh").unwrap().detail,
        "not connected: the fleet has no session for this host"
    );
    assert!(!report.passed());
    fleet.close().await;
}

/// The lab bundle, verified and extracted as `up` does, with what its binaries need.
fn lab_bundle_needs(state: &std::path::Path) -> (InstallBundle, BundleNeeds) {
    let built = ilha_e2e::cluster::lab_bundle();
    let bundle = InstallBundle::open(&built.bundle, &built.pubkey, state)
        .unwrap_or_else(|e| panic!("opening the lab bundle: {e:#}"));
    let needs = BundleNeeds::of_bundle(&bundle).unwrap_or_else(|e| panic!("{e:#}"));
    (bundle, needs)
}

/// The glibc version a host reports through `ldd --version` (the probe asks `getconf`).
fn host_glibc_by_ldd(lab: &Lab, index: usize) -> GlibcVersion {
    let line = lab
        .ssh_ok(index, "ldd --version | sed -n 1p")
        .unwrap_or_else(|e| panic!("h{index}: {e}"));
    line.split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("h{index}: ldd said {line:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_report_their_real_glibc_and_the_lab_bundle_runs_on_them() {
    let lab = lab(HOSTS);
    let state = tempfile::tempdir().unwrap();
    let (bundle, needs) = lab_bundle_needs(state.path());
    // Measured from the bundle's files: Kubernetes built from source is static Go; Debian 12's
    // containerd, runc, etcd and CNI plugins reference GLIBC_2.34 at most.
    assert_eq!(needs.binaries["kubelet"], LibcNeed::Static, "{needs:?}");
    assert_eq!(needs.binaries["kube-apiserver"], LibcNeed::Static);
    let glibc_2_34 = LibcNeed::Glibc(Some(GlibcVersion::new(2, 34)));
    for name in ["containerd", "runc", "etcd", "bridge"] {
        assert_eq!(needs.binaries[name], glibc_2_34, "{name}: {needs:?}");
    }
    let roles: [&[NodeRole]; HOSTS] = [
        &[NodeRole::Etcd, NodeRole::ControlPlane, NodeRole::Node],
        &[NodeRole::Node],
        &[NodeRole::Etcd],
    ];
    let mut checks = all_checks(&lab);
    for (host, roles) in checks.iter_mut().zip(roles) {
        host.binaries = needs.for_roles(&bundle.requirements, roles);
        host.kubernetes_version = Some(bundle.version.clone());
    }
    let fleet = Fleet::connect(targets(&lab, &[1, 2, 3]), &lab_options(&lab))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    fleet.close().await;
    println!("{report}");
    assert!(report.passed(), "{report}");
    for (index, host) in (1..).zip(&report.hosts) {
        let glibc = host_glibc_by_ldd(&lab, index);
        assert_eq!(host.facts.libc, Some(HostLibc::Glibc(glibc)), "{report}");
        let row = host.check("libc").unwrap();
        assert_eq!(row.verdict, Verdict::Pass, "{report}");
        assert!(
            row.detail
                .starts_with(&format!("glibc {glibc}; binaries need glibc 2.34: ")),
            "{report}"
        );
    }
    // h1 runs the lot; h3 (etcd only) gets etcd and etcdctl and nothing static.
    let h1 = &report.host("h1").unwrap().check("libc").unwrap().detail;
    assert!(h1.contains("containerd") && h1.contains("static: ") && h1.contains("kubelet"));
    let h3 = &report.host("h3").unwrap().check("libc").unwrap().detail;
    assert!(h3.contains("etcd") && !h3.contains("kubelet"), "{h3}");
    // The lab runs Kubernetes v1.20.2 on cgroup v1: below 1.35, the kubelet takes it.
    let h1 = report.host("h1").unwrap();
    assert_eq!(h1.facts.cgroup_version.as_deref(), Some("v1"), "{report}");
    assert_eq!(h1.check("cgroups").unwrap().verdict, Verdict::Pass);
}

/// No real binary of the lab needs more than the hosts' glibc 2.36: Debian 13's etcd 3.5.16,
/// the newest the lab has, references GLIBC_2.34 (asserted below). So the failing binary is a
/// STAND-IN: that etcd with its one `GLIBC_2.34` version-need string rewritten to `GLIBC_2.99`
/// (same length, in `.dynstr`). The hosts' own loader is asked too and refuses it the same way,
/// so what preflight predicts is what would have happened at `systemctl start etcd`.
#[tokio::test(flavor = "multi_thread")]
async fn a_binary_needing_a_newer_glibc_fails_naming_host_and_binary() {
    let lab = lab(HOSTS);
    let newer = xtask::artifacts::newer_etcd::ensure(&lab.config().cache_dir)
        .unwrap_or_else(|e| panic!("Debian 13's etcd: {e}"));
    assert_eq!(
        preflight::read_libc_need(&newer.etcd).unwrap(),
        LibcNeed::Glibc(Some(GlibcVersion::new(2, 34))),
        "Debian 13's etcd needs a newer glibc now: use it as is instead of the stand-in"
    );
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("etcd");
    let mut bytes = std::fs::read(&newer.etcd).unwrap();
    let needle = b"GLIBC_2.34\0";
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "one version-need string expected");
    bytes[at[0]..at[0] + needle.len()].copy_from_slice(b"GLIBC_2.99\0");
    std::fs::write(&stand_in, &bytes).unwrap();
    let need = preflight::read_libc_need(&stand_in).unwrap();
    assert_eq!(need, LibcNeed::Glibc(Some(GlibcVersion::new(2, 99))));

    let needs = BundleNeeds::read([("etcd", stand_in.as_path())]).unwrap();
    let requirements = ilha_format::cluster::requirements(&ilha_format::cluster::ClusterSpec {
        kubernetes_version: "v1.20.2".into(),
        network: ilha_format::cluster::Network::Bridge,
    })
    .unwrap();
    let mut checks = all_checks(&lab);
    checks[0].binaries = needs.for_roles(&requirements, &[NodeRole::Etcd]);
    let fleet = Fleet::connect(targets(&lab, &[1, 2, 3]), &lab_options(&lab))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    fleet.close().await;
    println!("{report}");
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("h1", "libc"));
    let glibc = host_glibc_by_ldd(&lab, 1);
    assert!(
        failed[0].2.starts_with(&format!(
            "the host has glibc {glibc}, but etcd needs glibc 2.99: put statically linked builds of etcd"
        )),
        "{report}"
    );
    assert!(
        failed[0]
            .2
            .ends_with("or use a host with glibc 2.99 or newer")
    );

    // The host's loader agrees.
    lab.copy_to(1, &stand_in, "/tmp/ilha-preflight-etcd")
        .unwrap_or_else(|e| panic!("{e}"));
    let run = lab
        .ssh(
            1,
            "chmod +x /tmp/ilha-preflight-etcd; /tmp/ilha-preflight-etcd --version 2>&1; \
             echo rc=$?; rm -f /tmp/ilha-preflight-etcd",
        )
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("version `GLIBC_2.99' not found") && !said.contains("rc=0"),
        "{said}"
    );
}

/// Puts a host's default route back when dropped, even by a panic.
struct RestoreRouteOnDrop<'a> {
    lab: &'a LabSession,
    index: usize,
    route: String,
}

impl Drop for RestoreRouteOnDrop<'_> {
    fn drop(&mut self) {
        let script = format!("ip route replace {}", self.route);
        if let Err(err) = self.lab.ssh_ok(self.index, &script) {
            eprintln!("restoring h{}'s default route: {err}", self.index);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_without_a_default_route_gets_a_warning_not_a_failure() {
    let lab = lab(HOSTS);
    let route = lab
        .ssh_ok(2, "ip -4 route show default")
        .unwrap()
        .trim()
        .to_string();
    assert!(route.starts_with("default via"), "h2: {route:?}");
    let _restore = RestoreRouteOnDrop {
        lab: &lab,
        index: 2,
        route: route.clone(),
    };
    lab.ssh_ok(
        2,
        "ip -4 route del default; ip -6 route del default 2>/dev/null || true",
    )
    .unwrap();
    let fleet = Fleet::connect(targets(&lab, &[1, 2, 3]), &lab_options(&lab))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let report = preflight::run(&fleet, &all_checks(&lab), SystemTime::now()).await;
    fleet.close().await;
    println!("{report}");
    // h2 has ip= in the checks: it still passes, with the warning.
    assert!(report.passed(), "{report}");
    let h2 = report.host("h2").unwrap();
    let row = h2.check("default_route").unwrap();
    assert_eq!(row.verdict, Verdict::Warn, "{report}");
    assert!(
        row.detail
            .starts_with("none: ilha installs a route for the service range")
    );
    assert_eq!(h2.facts.default_route, None);
    let h1 = report.host("h1").unwrap().check("default_route").unwrap();
    assert_eq!(h1.verdict, Verdict::Pass, "{report}");
    assert!(h1.detail.starts_with("default via "), "{report}");
}

/// A non-root user made on a lab host for one test (the lab's hosts have only root), removed
/// when dropped, even by a panic.
struct TemporaryUserOnDrop<'a> {
    lab: &'a Lab,
    index: usize,
    user: &'static str,
}

impl Drop for TemporaryUserOnDrop<'_> {
    fn drop(&mut self) {
        let script = format!("userdel -r {} 2>/dev/null || true", self.user);
        if let Err(err) = self.lab.ssh_ok(self.index, &script) {
            eprintln!("removing user {} on h{}: {err}", self.user, self.index);
        }
    }
}

/// Issue 14, as Kubespray inventories are written: a host range (`h[2:3]`), no `ansible_host`
/// (ssh resolves h1..h3 through the lab's ssh_config, as Ansible would through the operator's),
/// no `ip=` (the default route's address), the lab's key through `ansible_ssh_private_key_file`
/// and a bastion-style `ansible_ssh_common_args` option (here a harmless one, the lab has no
/// bastion): `ilha plan` connects and passes. The same inventory with a non-root `ansible_user`
/// on h2 is refused before anything runs on any host (when ilha locks the host, the first thing
/// it does there), naming h2, the user and the fix.
#[test]
fn a_kubespray_inventory_passes_plan_and_a_non_root_user_is_refused_before_any_change() {
    let lab = lab(HOSTS);
    let bundle = ilha_e2e::cluster::lab_bundle();
    let (bundle_path, pubkey) = (
        bundle.bundle.to_str().unwrap(),
        bundle.pubkey.to_str().unwrap(),
    );
    let ssh_config = lab.ssh_config().unwrap();
    let key = ssh_config.parent().unwrap().join("id_ed25519");
    let work = tempfile::tempdir().unwrap();
    let config = ilha_e2e::cluster::write_config(work.path(), "lab");
    let inventory_with = |worker_line: &str| {
        let path = work.path().join("inventory.ini");
        std::fs::write(
            &path,
            format!(
                "[kube_control_plane]\nh1\n[etcd]\nh1\n[kube_node]\n{worker_line}\n\
                 [k8s_cluster:children]\nkube_control_plane\nkube_node\n\
                 [all:vars]\nansible_ssh_private_key_file={}\n\
                 ansible_ssh_common_args='-o ConnectionAttempts=2'\n",
                key.display()
            ),
        )
        .unwrap();
        path
    };
    let plan = |inventory: &std::path::Path| {
        ilha_e2e::cluster::ilha(
            &lab,
            &[
                "plan",
                bundle_path,
                "--pubkey",
                pubkey,
                "-i",
                inventory.to_str().unwrap(),
                "-c",
                config.to_str().unwrap(),
                "--connect-timeout",
                "5",
            ],
        )
    };

    let started = Instant::now();
    let planned = plan(&inventory_with("h[2:3]"));
    let all = ilha_e2e::cluster::text(&planned);
    assert!(planned.status.success(), "plan failed:\n{all}");
    for host in ["h1", "h2", "h3"] {
        assert!(all.contains(host), "{host} is not in the plan:\n{all}");
    }
    eprintln!(
        "plan with ranges, names and a key file: {:?}",
        started.elapsed()
    );

    const USER: &str = "ilha-nonroot";
    let _remove = TemporaryUserOnDrop {
        lab: &lab,
        index: 2,
        user: USER,
    };
    lab.ssh_ok(
        2,
        &format!(
            "id {USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {USER}; \
             install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh; \
             install -m 600 -o {USER} -g {USER} /root/.ssh/authorized_keys /home/{USER}/.ssh/authorized_keys"
        ),
    )
    .unwrap();
    let refused = plan(&inventory_with(&format!("h2 ansible_user={USER}\nh3")));
    let all = ilha_e2e::cluster::text(&refused);
    assert!(
        !refused.status.success(),
        "a non-root user should be refused:\n{all}"
    );
    let line = all
        .lines()
        .find(|line| line.contains(&format!("connected as `{USER}`")))
        .unwrap_or_else(|| panic!("no row names the user:\n{all}"));
    assert!(
        line.contains("h2: connected as")
            && line.contains("not root")
            && line.contains("ansible_user=root"),
        "{line}\n{all}"
    );
    assert!(
        !all.contains("Preflight"),
        "refused before preflight ran:\n{all}"
    );
}
