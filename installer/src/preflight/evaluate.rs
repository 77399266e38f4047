//! Judging one host's probe against what the plan asks of it: pure, so every verdict is
//! unit-tested from canned probes.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::binaries::{GlibcVersion, HostLibc, LibcNeed};
use super::probe::{InterfaceAddress, Probe};
use super::{Check, Facts, HostChecks, HostReport, PortNeed, Verdict};
use crate::cluster::render::{FAIL_CGROUP_V1_DEFAULT_TRUE_FROM, kubelet_refuses_cgroup_v1};

/// Commands the install steps run on every host.
pub const REQUIRED_TOOLS: [&str; 6] = [
    "iptables",
    "iptables-restore",
    "ip",
    "sha256sum",
    "systemctl",
    "mount",
];

/// Clock skew up to this passes: etcd itself starts warning about peers whose clocks differ by
/// more than 1 s.
pub const CLOCK_SKEW_WARN: Duration = Duration::from_secs(1);
/// Clock skew above this fails: certificates made on the operator's machine would be "not yet
/// valid" on a host that far behind, and etcd leader leases misbehave.
pub const CLOCK_SKEW_FAIL: Duration = Duration::from_secs(30);

/// What kubelet refuses to start without under cgroup v1 (its `validateSystemRequirements`).
const CGROUP_V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "cpuset", "memory"];
/// Under cgroup v2: what pod CPU and memory limits are enforced with.
const CGROUP_V2_CONTROLLERS: [&str; 2] = ["cpu", "memory"];
/// Every v1 controller name (mount options also hold rw, relatime, name=systemd, …).
const CGROUP_V1_KNOWN: [&str; 14] = [
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The operator's clock when the probe was sent and when its output came back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OperatorClock {
    pub sent: SystemTime,
    pub received: SystemTime,
}

/// `uname -m` in Kubernetes' platform naming (`x86_64` → `amd64`); `None` when unknown.
pub fn kubernetes_arch(machine: &str) -> Option<&'static str> {
    Some(match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" | "aarch64_be" => "arm64",
        "armv7l" | "armv7" | "armv6l" | "armhf" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "i386" | "i486" | "i586" | "i686" => "386",
        _ => return None,
    })
}

pub(crate) fn evaluate(checks: &HostChecks, probe: &Probe, clock: &OperatorClock) -> HostReport {
    let mut rows = Vec::new();
    if !probe.complete {
        rows.push(probe_cut_short(probe));
    }
    rows.push(user(probe));
    rows.push(os(probe));
    rows.push(arch(checks, probe));
    rows.push(systemd(probe));
    rows.push(memory(checks, probe));
    rows.push(disk(checks, probe));
    rows.push(swap(probe));
    let (clock_row, clock_skew_secs) = clock_check(probe, clock);
    rows.push(clock_row);
    let detected_ip = probe.routes.first().map(|route| route.ip);
    let (address_row, node_ip) = address(checks, probe);
    rows.push(address_row);
    rows.push(tools(probe));
    rows.push(ip_forward(probe));
    let cgroup_version = cgroup_version(probe);
    if checks.needs_container_runtime {
        rows.push(overlay(probe));
        rows.push(cgroups(checks, probe, cgroup_version));
        rows.push(default_route(checks, probe));
    }
    let host_libc = host_libc(probe);
    if !checks.binaries.is_empty() {
        rows.push(libc(checks, host_libc));
    }
    for need in &checks.ports {
        rows.push(port(need, probe));
    }
    HostReport {
        host: checks.host.clone(),
        checks: rows,
        facts: Facts {
            os: probe.os_pretty.clone(),
            kernel: probe.uname_r.clone(),
            arch: probe
                .uname_m
                .as_deref()
                .map(|m| kubernetes_arch(m).unwrap_or(m).to_string()),
            hostname: probe.hostname.clone(),
            cpus: probe.cpus,
            memory_mib: probe.mem_total_kib.map(|kib| kib / 1024),
            disk_free_mib: probe.disk.as_ref().map(|d| d.available_kib / 1024),
            disk_mount: probe.disk.as_ref().map(|d| d.mount.clone()),
            detected_ip,
            node_ip,
            clock_skew_secs,
            cgroup_version: cgroup_version.map(str::to_string),
            libc: host_libc,
            default_route: probe
                .default_routes
                .iter()
                .find_map(|route| route.device.clone()),
        },
    }
}

fn row(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
    }
}

fn not_reported(name: &'static str, what: &str) -> Check {
    row(
        name,
        Verdict::Fail,
        format!("{what} not reported by the probe"),
    )
}

/// Every host command must run as root: as the ssh user when it is root, else through `sudo -n`
/// (`ansible_become`). A user that is neither would fail midway through `up`, so it is refused
/// here, before any change (the host lock, the first command, refuses it earlier still).
fn user(probe: &Probe) -> Check {
    match probe.uid {
        None => not_reported("user", "the effective user (id -u)"),
        Some(0) => match probe.sudo_user.as_deref() {
            Some(ssh_user) if ssh_user != "root" => row(
                "user",
                Verdict::Pass,
                format!("`{ssh_user}` via sudo (uid 0)"),
            ),
            _ => row("user", Verdict::Pass, "root (uid 0)"),
        },
        Some(uid) => {
            let refusal = crate::ssh::SshError::NotRoot {
                host: String::new(),
                user: probe.user.clone().unwrap_or_else(|| "?".to_string()),
                uid: uid.to_string(),
            }
            .to_string();
            let detail = refusal.strip_prefix(": ").unwrap_or(&refusal).to_string();
            row("user", Verdict::Fail, detail)
        }
    }
}

fn probe_cut_short(probe: &Probe) -> Check {
    let mut detail = "output incomplete: the probe script stopped before its end".to_string();
    if let Some(first) = probe.unparsed.first() {
        let first: String = first.chars().take(80).collect();
        detail.push_str(&format!(" (first line not understood: {first:?})"));
    }
    row("probe", Verdict::Fail, detail)
}

fn os(probe: &Probe) -> Check {
    match probe.uname_s.as_deref() {
        Some("Linux") => {
            let name = probe
                .os_pretty
                .as_deref()
                .unwrap_or("unknown distribution (no /etc/os-release)");
            let kernel = probe.uname_r.as_deref().unwrap_or("?");
            row("os", Verdict::Pass, format!("{name}, kernel {kernel}"))
        }
        Some(other) => row(
            "os",
            Verdict::Fail,
            format!("{other}, not Linux (uname -s)"),
        ),
        None => not_reported("os", "uname -s"),
    }
}

fn arch(checks: &HostChecks, probe: &Probe) -> Check {
    let Some(machine) = probe.uname_m.as_deref() else {
        return not_reported("arch", "uname -m");
    };
    match kubernetes_arch(machine) {
        Some(arch) if arch == checks.arch => {
            row("arch", Verdict::Pass, format!("{arch} ({machine})"))
        }
        Some(arch) => row(
            "arch",
            Verdict::Fail,
            format!(
                "host is {arch} ({machine}), the bundle is for {}",
                checks.arch
            ),
        ),
        None => row(
            "arch",
            Verdict::Fail,
            format!(
                "unknown machine type {machine} (uname -m), the bundle is for {}",
                checks.arch
            ),
        ),
    }
}

fn systemd(probe: &Probe) -> Check {
    match probe.systemd_booted {
        Some(true) => row("systemd", Verdict::Pass, "systemd is PID 1"),
        Some(false) => {
            let pid1 = probe.pid1.as_deref().unwrap_or("unknown");
            row(
                "systemd",
                Verdict::Fail,
                format!(
                    "PID 1 is {pid1}, not systemd (no /run/systemd/system): ilha runs every component as a systemd unit"
                ),
            )
        }
        None => not_reported("systemd", "/run/systemd/system"),
    }
}

fn memory(checks: &HostChecks, probe: &Probe) -> Check {
    let Some(kib) = probe.mem_total_kib else {
        return not_reported("memory", "MemTotal (/proc/meminfo)");
    };
    let mib = kib / 1024;
    let need = checks.min_memory_mib;
    if mib >= need {
        row(
            "memory",
            Verdict::Pass,
            format!("{mib} MiB (needs {need} MiB)"),
        )
    } else {
        row(
            "memory",
            Verdict::Fail,
            format!("{mib} MiB, needs at least {need} MiB"),
        )
    }
}

fn disk(checks: &HostChecks, probe: &Probe) -> Check {
    let Some(disk) = &probe.disk else {
        return not_reported("disk", "free space (df)");
    };
    let path = probe.disk_path.as_deref().unwrap_or("/var/lib");
    let mib = disk.available_kib / 1024;
    let need = checks.min_disk_mib;
    let place = format!("{}, which holds {path}", disk.mount);
    if mib >= need {
        row(
            "disk",
            Verdict::Pass,
            format!("{mib} MiB free on {place} (needs {need} MiB)"),
        )
    } else {
        row(
            "disk",
            Verdict::Fail,
            format!("{mib} MiB free on {place}, needs at least {need} MiB"),
        )
    }
}

fn swap(probe: &Probe) -> Check {
    match probe.swap_total_kib {
        Some(0) => row("swap", Verdict::Pass, "off"),
        Some(kib) => row(
            "swap",
            Verdict::Warn,
            format!(
                "{} MiB of swap on: the kubelet runs with failSwapOn=false, pods' memory may be swapped out",
                kib / 1024
            ),
        ),
        None => row("swap", Verdict::Warn, "SwapTotal not reported by the probe"),
    }
}

/// Host clock minus operator clock, as NTP measures it: the probe reads the host's clock when it
/// starts (t2) and ends (t3), the operator's side knows when it sent (t1) and received (t4), so
/// skew = ((t2 - t1) + (t3 - t4)) / 2 within ± half the network delay ((t4 - t1) - (t3 - t2)).
/// Judged on its lower bound (`|skew| - error bar`), so a slow link never fails a host whose
/// clock may be right.
fn clock_check(probe: &Probe, clock: &OperatorClock) -> (Check, Option<f64>) {
    let Some(started) = probe.host_time else {
        return (not_reported("clock", "the host's time (date)"), None);
    };
    let epoch_secs = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    };
    let (t1, t4) = (epoch_secs(clock.sent), epoch_secs(clock.received));
    let t2 = started.as_secs_f64();
    // An end before the start (the clock was stepped meanwhile) is ignored.
    let t3 = probe
        .host_time_end
        .map(|end| end.as_secs_f64())
        .filter(|&t3| t3 >= t2)
        .unwrap_or(t2);
    let skew = ((t2 - t1) + (t3 - t4)) / 2.0;
    let error_bar = (((t4 - t1) - (t3 - t2)) / 2.0).max(0.0);
    let bound = (skew.abs() - error_bar).max(0.0);
    let direction = if skew >= 0.0 { "ahead of" } else { "behind" };
    let measured = format!(
        "host is {:.2} s {direction} the operator (±{error_bar:.2} s)",
        skew.abs()
    );
    let check = if bound <= CLOCK_SKEW_WARN.as_secs_f64() {
        row("clock", Verdict::Pass, measured)
    } else if bound <= CLOCK_SKEW_FAIL.as_secs_f64() {
        row(
            "clock",
            Verdict::Warn,
            format!(
                "{measured}: etcd warns above {} s; keep every host on NTP",
                CLOCK_SKEW_WARN.as_secs()
            ),
        )
    } else {
        row(
            "clock",
            Verdict::Fail,
            format!(
                "{measured}, more than {} s: certificates and etcd need agreeing clocks; set the host's time (NTP)",
                CLOCK_SKEW_FAIL.as_secs()
            ),
        )
    };
    (check, Some(skew))
}

/// The address components will use: the inventory's `ip=` if the host has it, else the default
/// route's source.
fn address(checks: &HostChecks, probe: &Probe) -> (Check, Option<IpAddr>) {
    let reachable: Vec<&InterfaceAddress> = probe
        .addresses
        .iter()
        .filter(|a| !a.ip.is_loopback() && !is_link_local(a.ip))
        .collect();
    let has = || {
        if reachable.is_empty() {
            "no address but loopback and link-local".to_string()
        } else {
            let list: Vec<String> = reachable
                .iter()
                .map(|a| format!("{} on {}", a.ip, a.interface))
                .collect();
            format!("has {}", list.join(", "))
        }
    };
    match checks.expected_ip {
        Some(ip) if ip.is_loopback() => (
            row(
                "address",
                Verdict::Fail,
                format!("{ip} (inventory ip=) is a loopback address: other hosts cannot reach it"),
            ),
            None,
        ),
        Some(ip) => match probe.addresses.iter().find(|a| a.ip == ip) {
            Some(found) => (
                row(
                    "address",
                    Verdict::Pass,
                    format!("{ip} on {} (inventory ip=)", found.interface),
                ),
                Some(ip),
            ),
            None if probe.addresses.is_empty() => (
                not_reported("address", "the host's addresses (ip -o addr)"),
                None,
            ),
            None => (
                row(
                    "address",
                    Verdict::Fail,
                    format!(
                        "{ip} (inventory ip=) is on no interface of this host, which {}",
                        has()
                    ),
                ),
                None,
            ),
        },
        None => match probe.routes.first() {
            Some(route) => {
                let device = route.device.as_deref().unwrap_or("?");
                (
                    row(
                        "address",
                        Verdict::Pass,
                        format!(
                            "{} on {device}, the default route's (set ip= in the inventory to pick another)",
                            route.ip
                        ),
                    ),
                    Some(route.ip),
                )
            }
            None => {
                // No route to follow: a host with one IPv4 address can only mean that one (issue
                // 14: hosts reached by name, `ip=` left out); with several, guessing would bind
                // components to an address peers may not reach.
                let ipv4: Vec<&&InterfaceAddress> =
                    reachable.iter().filter(|a| a.ip.is_ipv4()).collect();
                match ipv4.as_slice() {
                    [only] => (
                        row(
                            "address",
                            Verdict::Pass,
                            format!(
                                "{} on {}, the host's only IPv4 address (no default route; set ip= in the inventory to pick another)",
                                only.ip, only.interface
                            ),
                        ),
                        Some(only.ip),
                    ),
                    _ => (
                        row(
                            "address",
                            Verdict::Fail,
                            format!(
                                "no default route and not exactly one IPv4 address to pick from: set ip= in the inventory (the host {})",
                                has()
                            ),
                        ),
                        None,
                    ),
                }
            }
        },
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn tools(probe: &Probe) -> Check {
    let missing: Vec<&str> = REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|tool| !matches!(probe.tools.get(*tool), Some(Some(_))))
        .collect();
    if missing.is_empty() {
        row("tools", Verdict::Pass, REQUIRED_TOOLS.join(" "))
    } else {
        row(
            "tools",
            Verdict::Fail,
            format!("not found in PATH: {}", missing.join(", ")),
        )
    }
}

fn ip_forward(probe: &Probe) -> Check {
    match (probe.ip_forward, probe.ip_forward_writable) {
        (Some(true), _) => row("ip_forward", Verdict::Pass, "net.ipv4.ip_forward is 1"),
        (_, Some(true)) => row(
            "ip_forward",
            Verdict::Pass,
            "net.ipv4.ip_forward is 0 and writable: ilha turns it on",
        ),
        (Some(false), Some(false)) => row(
            "ip_forward",
            Verdict::Fail,
            "net.ipv4.ip_forward is 0 and /proc/sys/net is read-only: pod traffic cannot be routed; \
             enable forwarding for this host (or its container) first",
        ),
        _ => not_reported("ip_forward", "net.ipv4.ip_forward"),
    }
}

fn overlay(probe: &Probe) -> Check {
    match (probe.overlay_loaded, probe.overlay_module) {
        (Some(true), _) => row("overlay", Verdict::Pass, "overlay in /proc/filesystems"),
        (_, Some(true)) => row(
            "overlay",
            Verdict::Pass,
            "overlay module present, not loaded yet (modprobe overlay)",
        ),
        (Some(false), Some(false)) => row(
            "overlay",
            Verdict::Fail,
            "no overlay filesystem (not in /proc/filesystems, no overlay module): containerd's \
             overlayfs snapshotter needs it",
        ),
        _ => not_reported("overlay", "/proc/filesystems"),
    }
}

/// `v2` when /sys/fs/cgroup itself is cgroup2, `v1` when v1 hierarchies are mounted under it
/// (hybrid hosts included: kubelet uses v1 there), `None` when neither.
fn cgroup_version(probe: &Probe) -> Option<&'static str> {
    let unified = probe.cgroup2_controllers.is_some()
        || probe
            .cgroup_mounts
            .iter()
            .any(|m| m.fstype == "cgroup2" && m.target == "/sys/fs/cgroup");
    if unified {
        Some("v2")
    } else if probe
        .cgroup_mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.target.starts_with("/sys/fs/cgroup/"))
    {
        Some("v1")
    } else {
        None
    }
}

fn cgroups(checks: &HostChecks, probe: &Probe, version: Option<&str>) -> Check {
    let (present, required): (BTreeSet<&str>, &[&str]) = match version {
        Some("v2") => (
            probe
                .cgroup2_controllers
                .iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            &CGROUP_V2_CONTROLLERS,
        ),
        Some(_) => (
            probe
                .cgroup_mounts
                .iter()
                .filter(|m| m.fstype == "cgroup")
                .flat_map(|m| m.options.iter().map(String::as_str))
                .filter(|option| CGROUP_V1_KNOWN.contains(option))
                .collect(),
            &CGROUP_V1_CONTROLLERS,
        ),
        None => {
            return row(
                "cgroups",
                Verdict::Fail,
                "no cgroup filesystem under /sys/fs/cgroup: containerd and the kubelet need one",
            );
        }
    };
    let version = version.unwrap_or("?");
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !present.contains(c))
        .collect();
    let listed = present.iter().copied().collect::<Vec<_>>().join(" ");
    if missing.is_empty() {
        if version == "v1"
            && let Some(kubernetes) = &checks.kubernetes_version
        {
            return cgroup_v1_rule(checks, kubernetes, &listed);
        }
        row("cgroups", Verdict::Pass, format!("{version} ({listed})"))
    } else {
        row(
            "cgroups",
            Verdict::Fail,
            format!(
                "{version} without the {} controller(s) the kubelet needs (has: {listed})",
                missing.join(", ")
            ),
        )
    }
}

/// cgroup v1 with the version's kubelet: from 1.35 it refuses v1 unless `failCgroupV1: false`
/// (KEP-4569; the field exists from 1.31, defaulting to false until 1.35).
fn cgroup_v1_rule(
    checks: &HostChecks,
    kubernetes: &crate::config::KubeVersion,
    listed: &str,
) -> Check {
    let setting = checks.kubelet_fail_cgroup_v1;
    if kubelet_refuses_cgroup_v1(kubernetes, setting) {
        let why = match setting {
            Some(true) => "the cluster config sets `kubelet_fail_cgroup_v1: true`".to_string(),
            _ => format!(
                "the kubelet refuses cgroup v1 from Kubernetes v{}.{} (failCgroupV1 defaults to true)",
                FAIL_CGROUP_V1_DEFAULT_TRUE_FROM.0, FAIL_CGROUP_V1_DEFAULT_TRUE_FROM.1
            ),
        };
        return row(
            "cgroups",
            Verdict::Fail,
            format!(
                "v1 ({listed}) with Kubernetes {kubernetes}: {why}; move this host to cgroup v2 \
                 (boot with systemd.unified_cgroup_hierarchy=1), or set \
                 `kubelet_fail_cgroup_v1: false` in the cluster config (cgroup v1 is deprecated)"
            ),
        );
    }
    if setting == Some(false)
        && kubernetes.at_least(
            FAIL_CGROUP_V1_DEFAULT_TRUE_FROM.0,
            FAIL_CGROUP_V1_DEFAULT_TRUE_FROM.1,
        )
    {
        return row(
            "cgroups",
            Verdict::Warn,
            format!(
                "v1 ({listed}) with Kubernetes {kubernetes}: allowed by `kubelet_fail_cgroup_v1: false`; \
                 cgroup v1 is deprecated, move this host to cgroup v2"
            ),
        );
    }
    row("cgroups", Verdict::Pass, format!("v1 ({listed})"))
}

/// Without a default route, host-network clients get "Network is unreachable" for ClusterIPs
/// (kube-proxy's DNAT happens after the routing decision): ilha routes the service range
/// itself, so this only tells the operator.
fn default_route(checks: &HostChecks, probe: &Probe) -> Check {
    if let Some(route) = probe.default_routes.first() {
        let mut detail = String::from("default");
        if let Some(via) = route.via {
            detail.push_str(&format!(" via {via}"));
        }
        if let Some(device) = &route.device {
            detail.push_str(&format!(" dev {device}"));
        }
        return row("default_route", Verdict::Pass, detail);
    }
    if !probe.default_routes_checked {
        return row(
            "default_route",
            Verdict::Warn,
            "default routes not reported by the probe (no `ip`)",
        );
    }
    let mut detail = "none: ilha installs a route for the service range (service_cidr) on the \
                      node's interface, so host-network clients (CNI agents, node-local DNS, \
                      monitoring) still reach ClusterIPs"
        .to_string();
    if checks.expected_ip.is_none() {
        detail.push_str(
            "; without a default route the host needs ip= in the inventory unless it has exactly one IPv4 address",
        );
    }
    row("default_route", Verdict::Warn, detail)
}

/// The host's C library from what the probe printed: `getconf GNU_LIBC_VERSION` (glibc only),
/// else the first line of `ldd --version`, else a musl loader. `None`: the probe said nothing
/// (cut short); [`HostLibc::None`]: it looked and found no C library.
fn host_libc(probe: &Probe) -> Option<HostLibc> {
    let glibc = |text: &str| {
        text.split_whitespace()
            .last()
            .and_then(|v| v.parse::<GlibcVersion>().ok())
    };
    if let Some(version) = probe
        .libc_getconf
        .as_deref()
        .and_then(|t| t.strip_prefix("glibc "))
        .and_then(glibc)
    {
        return Some(HostLibc::Glibc(version));
    }
    if let Some(line) = probe.libc_ldd.as_deref() {
        if line.to_ascii_lowercase().contains("musl") {
            return Some(HostLibc::Musl);
        }
        if let Some(version) = glibc(line) {
            return Some(HostLibc::Glibc(version));
        }
    }
    if !probe.musl_loaders.is_empty() {
        return Some(HostLibc::Musl);
    }
    probe.complete.then_some(HostLibc::None)
}

/// Whether a host with `host` can load a binary needing `need`.
fn runs_on(need: LibcNeed, host: HostLibc) -> bool {
    match (need, host) {
        (LibcNeed::Static, _) => true,
        (LibcNeed::Glibc(None), HostLibc::Glibc(_)) => true,
        (LibcNeed::Glibc(Some(needed)), HostLibc::Glibc(found)) => needed <= found,
        (LibcNeed::Musl, HostLibc::Musl) => true,
        _ => false,
    }
}

/// The bundle binaries this host gets, against its C library: each binary that cannot start
/// there is named with what it needs and what the host has.
fn libc(checks: &HostChecks, host: Option<HostLibc>) -> Check {
    let Some(host) = host else {
        return not_reported(
            "libc",
            "the host's C library (getconf GNU_LIBC_VERSION, ldd --version)",
        );
    };
    let failing: Vec<_> = checks
        .binaries
        .iter()
        .filter(|b| !runs_on(b.need, host))
        .collect();
    if failing.is_empty() {
        // Grouped by need, newest glibc first: "glibc 2.34: containerd runc; static: kubelet".
        let mut groups: Vec<(LibcNeed, Vec<&str>)> = Vec::new();
        for binary in &checks.binaries {
            match groups.iter_mut().find(|(need, _)| *need == binary.need) {
                Some((_, names)) => names.push(&binary.name),
                None => groups.push((binary.need, vec![&binary.name])),
            }
        }
        groups.sort_by_key(|(need, _)| match need {
            LibcNeed::Glibc(version) => (0, std::cmp::Reverse(*version)),
            LibcNeed::Musl => (1, std::cmp::Reverse(None)),
            LibcNeed::Static => (2, std::cmp::Reverse(None)),
        });
        let groups: Vec<String> = groups
            .iter()
            .map(|(need, names)| format!("{need}: {}", names.join(" ")))
            .collect();
        return row(
            "libc",
            Verdict::Pass,
            format!("{host}; binaries need {}", groups.join("; ")),
        );
    }
    let names: Vec<&str> = failing.iter().map(|b| b.name.as_str()).collect();
    let needs: Vec<String> = failing
        .iter()
        .map(|b| format!("{} needs {}", b.name, b.need))
        .collect();
    let newest_glibc = failing
        .iter()
        .filter_map(|b| match b.need {
            LibcNeed::Glibc(version) => Some(version),
            _ => None,
        })
        .max();
    let other_host = match newest_glibc {
        Some(Some(version)) => format!("a host with glibc {version} or newer"),
        Some(None) => "a host with glibc".to_string(),
        None => "a host with musl".to_string(),
    };
    // containerd's default upstream tarball is dynamic; its static build is a separate tarball.
    let hint = if names
        .iter()
        .any(|n| n.starts_with("containerd") || *n == "ctr")
    {
        "e.g. upstream's containerd-static tarball for containerd"
    } else {
        "e.g. the project's own release binaries, usually static, instead of a distribution's package"
    };
    let found = match host {
        HostLibc::None => "no C library (getconf, ldd and a musl loader all missing)".to_string(),
        other => other.to_string(),
    };
    row(
        "libc",
        Verdict::Fail,
        format!(
            "the host has {found}, but {}: put statically linked builds of {} in the bundle \
             ({hint}), or use {other_host}",
            needs.join(", "),
            names.join(", ")
        ),
    )
}

/// The systemd unit a cgroup path belongs to: its first `.service` or `.scope` component
/// (`/system.slice/kube-apiserver.service` → `kube-apiserver.service`).
fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup
        .split('/')
        .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
}

fn port(need: &PortNeed, probe: &Probe) -> Check {
    let label = format!("{} ({})", need.port, need.what);
    let listeners: Vec<_> = probe
        .listeners
        .iter()
        .filter(|l| l.port == need.port)
        .collect();
    if !probe.complete && probe.listening.is_empty() && listeners.is_empty() {
        return row(
            "port",
            Verdict::Fail,
            format!("{label}: listening sockets not reported by the probe"),
        );
    }
    if !probe.listening.contains(&need.port) && listeners.is_empty() {
        return row("port", Verdict::Pass, format!("{label}: free"));
    }
    let holders: Vec<(&str, u32, Option<&str>)> = listeners
        .iter()
        .flat_map(|l| l.processes.iter())
        .map(|(name, pid)| {
            let unit = probe.cgroups.get(pid).and_then(|path| unit_of(path));
            (name.as_str(), *pid, unit)
        })
        .collect();
    let owner_active = probe
        .unit_states
        .get(need.owner_unit)
        .is_some_and(|state| state == "active");
    if holders.is_empty() {
        // `ss` could not name the process (missing, or not root): trust the unit's state.
        return if owner_active {
            row(
                "port",
                Verdict::Pass,
                format!(
                    "{label}: in use, and its owner {} is active",
                    need.owner_unit
                ),
            )
        } else {
            row(
                "port",
                Verdict::Fail,
                format!(
                    "{label}: in use by a process ss could not name, and {} is not active",
                    need.owner_unit
                ),
            )
        };
    }
    let mut others: Vec<String> = holders
        .iter()
        .filter(|(_, _, unit)| *unit != Some(need.owner_unit))
        .map(|(name, pid, unit)| match unit {
            Some(unit) => format!("{name} (pid {pid}, {unit})"),
            None => format!("{name} (pid {pid})"),
        })
        .collect();
    others.dedup();
    if others.is_empty() {
        row(
            "port",
            Verdict::Pass,
            format!("{label}: already held by its owner {}", need.owner_unit),
        )
    } else {
        row(
            "port",
            Verdict::Fail,
            format!("{label}: in use by {}", others.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::preflight::BinaryNeed;
    use crate::preflight::probe::{CgroupMount, DefaultRoute, DiskFree, Listener, RouteSource};

    const NOW: u64 = 1_700_000_000;

    /// Sent 50 ms before NOW, received 50 ms after: a ±0.05 s error bar for a host reporting
    /// only its start time.
    fn at_probe() -> OperatorClock {
        OperatorClock {
            sent: UNIX_EPOCH + Duration::from_secs(NOW) - Duration::from_millis(50),
            received: UNIX_EPOCH + Duration::from_secs(NOW) + Duration::from_millis(50),
        }
    }

    fn host_checks() -> HostChecks {
        HostChecks {
            host: "node1".into(),
            expected_ip: Some("10.0.0.5".parse().unwrap()),
            ports: vec![PortNeed {
                port: 6443,
                what: "kube-apiserver",
                owner_unit: "kube-apiserver.service",
            }],
            arch: "amd64".into(),
            min_memory_mib: 2048,
            min_disk_mib: 10_240,
            needs_container_runtime: true,
            binaries: vec![
                BinaryNeed {
                    name: "kubelet".into(),
                    need: LibcNeed::Static,
                },
                BinaryNeed {
                    name: "containerd".into(),
                    need: LibcNeed::Glibc(Some(GlibcVersion::new(2, 34))),
                },
                BinaryNeed {
                    name: "runc".into(),
                    need: LibcNeed::Glibc(Some(GlibcVersion::new(2, 34))),
                },
            ],
            kubernetes_version: None,
            kubelet_fail_cgroup_v1: None,
        }
    }

    /// A host that passes everything `host_checks()` asks.
    fn good_probe() -> Probe {
        Probe {
            complete: true,
            host_time: Some(Duration::from_secs(NOW)),
            host_time_end: None,
            uname_s: Some("Linux".into()),
            uid: Some(0),
            user: Some("root".into()),
            sudo_user: None,
            uname_m: Some("x86_64".into()),
            uname_r: Some("6.1.0".into()),
            hostname: Some("node1".into()),
            cpus: Some(2),
            os_pretty: Some("Debian GNU/Linux 12 (bookworm)".into()),
            systemd_booted: Some(true),
            pid1: Some("systemd".into()),
            mem_total_kib: Some(4096 * 1024),
            mem_available_kib: Some(3000 * 1024),
            swap_total_kib: Some(0),
            disk_path: Some("/var/lib".into()),
            disk: Some(DiskFree {
                available_kib: 20 * 1024 * 1024,
                mount: "/".into(),
            }),
            addresses: vec![
                InterfaceAddress {
                    interface: "lo".into(),
                    ip: "127.0.0.1".parse().unwrap(),
                    prefix: 8,
                },
                InterfaceAddress {
                    interface: "eth0".into(),
                    ip: "10.0.0.5".parse().unwrap(),
                    prefix: 24,
                },
                InterfaceAddress {
                    interface: "eth0".into(),
                    ip: "fe80::1".parse().unwrap(),
                    prefix: 64,
                },
            ],
            routes: vec![RouteSource {
                ip: "10.0.0.5".parse().unwrap(),
                device: Some("eth0".into()),
            }],
            listening: BTreeSet::from([22]),
            listeners: vec![Listener {
                port: 22,
                processes: vec![("sshd".into(), 100)],
            }],
            cgroups: BTreeMap::from([(100, "/system.slice/ssh.service".into())]),
            unit_states: BTreeMap::from([("kube-apiserver.service".into(), "inactive".into())]),
            tools: REQUIRED_TOOLS
                .iter()
                .map(|t| (t.to_string(), Some(format!("/usr/sbin/{t}"))))
                .collect(),
            ip_forward: Some(false),
            ip_forward_writable: Some(true),
            overlay_loaded: Some(true),
            overlay_module: Some(false),
            cgroup2_controllers: Some(vec!["cpuset".into(), "cpu".into(), "memory".into()]),
            cgroup_mounts: vec![CgroupMount {
                fstype: "cgroup2".into(),
                target: "/sys/fs/cgroup".into(),
                options: vec!["rw".into()],
            }],
            libc_getconf: Some("glibc 2.36".into()),
            libc_ldd: None,
            musl_loaders: Vec::new(),
            default_routes: vec![DefaultRoute {
                via: Some("10.0.0.1".parse().unwrap()),
                device: Some("eth0".into()),
            }],
            default_routes_checked: true,
            unparsed: Vec::new(),
        }
    }

    fn judge(checks: &HostChecks, probe: &Probe) -> HostReport {
        evaluate(checks, probe, &at_probe())
    }

    /// The one row named `name` (exactly one must exist).
    fn only(report: &HostReport, name: &str) -> Check {
        let rows: Vec<&Check> = report.checks_named(name).collect();
        assert_eq!(rows.len(), 1, "{name}: {:#?}", report.checks);
        rows[0].clone()
    }

    fn assert_row(report: &HostReport, name: &str, verdict: Verdict, needle: &str) {
        let check = only(report, name);
        assert_eq!(check.verdict, verdict, "{name}: {}", check.detail);
        assert!(
            check.detail.contains(needle),
            "{name}: {:?} lacks {needle:?}",
            check.detail
        );
    }

    #[test]
    fn a_good_host_passes_every_row_and_reports_its_facts() {
        let report = judge(&host_checks(), &good_probe());
        for check in &report.checks {
            assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
        }
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "user",
                "os",
                "arch",
                "systemd",
                "memory",
                "disk",
                "swap",
                "clock",
                "address",
                "tools",
                "ip_forward",
                "overlay",
                "cgroups",
                "default_route",
                "libc",
                "port"
            ]
        );
        assert_eq!(report.verdict(), Verdict::Pass);
        assert_eq!(
            facts_libc(&report),
            Some(HostLibc::Glibc(GlibcVersion::new(2, 36)))
        );
        assert_eq!(report.facts.default_route.as_deref(), Some("eth0"));
        let facts = &report.facts;
        assert_eq!(facts.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(facts.arch.as_deref(), Some("amd64"));
        assert_eq!(facts.memory_mib, Some(4096));
        assert_eq!(facts.disk_free_mib, Some(20 * 1024));
        assert_eq!(facts.node_ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(facts.detected_ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(facts.clock_skew_secs, Some(0.0));
        assert_eq!(facts.cgroup_version.as_deref(), Some("v2"));
        assert_row(
            &report,
            "port",
            Verdict::Pass,
            "6443 (kube-apiserver): free",
        );
        assert_row(
            &report,
            "os",
            Verdict::Pass,
            "Debian GNU/Linux 12 (bookworm), kernel 6.1.0",
        );
    }

    #[test]
    fn etcd_only_hosts_skip_the_container_runtime_rows() {
        let mut checks = host_checks();
        checks.needs_container_runtime = false;
        let mut probe = good_probe();
        probe.overlay_loaded = Some(false);
        probe.cgroup_mounts.clear();
        probe.cgroup2_controllers = None;
        let report = judge(&checks, &probe);
        assert!(report.check("overlay").is_none());
        assert!(report.check("cgroups").is_none());
        assert!(report.check("default_route").is_none());
        assert_eq!(report.verdict(), Verdict::Pass);
    }

    #[test]
    fn incomplete_output_fails_and_quotes_the_first_garbage() {
        let mut probe = good_probe();
        probe.complete = false;
        probe.unparsed = vec!["Welcome!".into()];
        let report = judge(&host_checks(), &probe);
        assert_row(&report, "probe", Verdict::Fail, "\"Welcome!\"");
        assert_eq!(report.checks[0].name, "probe");
        // The facts that did arrive are still judged.
        assert_eq!(only(&report, "memory").verdict, Verdict::Pass);
    }

    #[test]
    fn nothing_reported_fails_every_row_that_needs_a_fact() {
        let report = judge(&host_checks(), &Probe::default());
        for name in [
            "probe",
            "os",
            "arch",
            "systemd",
            "memory",
            "disk",
            "clock",
            "address",
            "tools",
            "ip_forward",
            "overlay",
            "cgroups",
            "libc",
            "port",
        ] {
            assert_eq!(only(&report, name).verdict, Verdict::Fail, "{name}");
        }
        assert_row(&report, "swap", Verdict::Warn, "not reported");
        assert_row(&report, "default_route", Verdict::Warn, "not reported");
        assert_row(&report, "libc", Verdict::Fail, "C library");
        assert_row(&report, "port", Verdict::Fail, "not reported");
        assert_eq!(report.facts, Facts::default());
    }

    #[test]
    fn os_not_linux_fails_and_missing_os_release_passes() {
        let mut probe = good_probe();
        probe.os_pretty = None;
        assert_row(
            &judge(&host_checks(), &probe),
            "os",
            Verdict::Pass,
            "unknown distribution",
        );
        probe.uname_s = Some("FreeBSD".into());
        assert_row(
            &judge(&host_checks(), &probe),
            "os",
            Verdict::Fail,
            "FreeBSD, not Linux",
        );
    }

    #[test]
    fn arch_mismatch_and_unknown_machine_fail() {
        let mut probe = good_probe();
        probe.uname_m = Some("aarch64".into());
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "arch",
            Verdict::Fail,
            "host is arm64 (aarch64), the bundle is for amd64",
        );
        assert_eq!(report.facts.arch.as_deref(), Some("arm64"));
        let mut checks = host_checks();
        checks.arch = "arm64".into();
        assert_row(
            &judge(&checks, &probe),
            "arch",
            Verdict::Pass,
            "arm64 (aarch64)",
        );
        probe.uname_m = Some("mips".into());
        assert_row(
            &judge(&checks, &probe),
            "arch",
            Verdict::Fail,
            "unknown machine type mips",
        );
    }

    #[test]
    fn kubernetes_arch_names() {
        assert_eq!(kubernetes_arch("x86_64"), Some("amd64"));
        assert_eq!(kubernetes_arch("aarch64"), Some("arm64"));
        assert_eq!(kubernetes_arch("armv7l"), Some("arm"));
        assert_eq!(kubernetes_arch("ppc64le"), Some("ppc64le"));
        assert_eq!(kubernetes_arch("sparc"), None);
    }

    #[test]
    fn without_systemd_as_pid_1_fails_naming_pid_1() {
        let mut probe = good_probe();
        probe.systemd_booted = Some(false);
        probe.pid1 = Some("init".into());
        assert_row(
            &judge(&host_checks(), &probe),
            "systemd",
            Verdict::Fail,
            "PID 1 is init, not systemd",
        );
    }

    #[test]
    fn memory_and_disk_below_minimum_fail_with_both_numbers() {
        let mut probe = good_probe();
        probe.mem_total_kib = Some(1024 * 1024);
        probe.disk = Some(DiskFree {
            available_kib: 5 * 1024 * 1024,
            mount: "/var".into(),
        });
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "memory",
            Verdict::Fail,
            "1024 MiB, needs at least 2048 MiB",
        );
        assert_row(
            &report,
            "disk",
            Verdict::Fail,
            "5120 MiB free on /var, which holds /var/lib, needs at least 10240 MiB",
        );
        // Exactly the minimum is enough.
        probe.mem_total_kib = Some(2048 * 1024);
        assert_eq!(
            only(&judge(&host_checks(), &probe), "memory").verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn swap_on_warns() {
        let mut probe = good_probe();
        probe.swap_total_kib = Some(2048 * 1024);
        let report = judge(&host_checks(), &probe);
        assert_row(&report, "swap", Verdict::Warn, "2048 MiB of swap on");
        assert_eq!(report.verdict(), Verdict::Warn);
    }

    #[test]
    fn clock_skew_passes_warns_and_fails_by_its_lower_bound() {
        let cases = [
            (0.9, Verdict::Pass, "0.90 s ahead of"),
            (-1.04, Verdict::Pass, "1.04 s behind"), // within the ±0.05 s error bar
            (-1.2, Verdict::Warn, "1.20 s behind"),
            (29.0, Verdict::Warn, "etcd warns above 1 s"),
            (31.0, Verdict::Fail, "more than 30 s"),
            (-3600.0, Verdict::Fail, "3600.00 s behind"),
        ];
        for (skew, verdict, needle) in cases {
            let mut probe = good_probe();
            let host = NOW as f64 + skew;
            probe.host_time = Some(Duration::from_secs_f64(host));
            let report = judge(&host_checks(), &probe);
            assert_row(&report, "clock", verdict, needle);
            let measured = report.facts.clock_skew_secs.unwrap();
            assert!((measured - skew).abs() < 1e-3, "{measured} vs {skew}");
        }
    }

    #[test]
    fn the_probe_s_own_run_time_is_taken_out_of_the_error_bar() {
        // 2 s round trip, of which the script ran 1.8 s: the link's delay is 0.2 s.
        let clock = OperatorClock {
            sent: UNIX_EPOCH + Duration::from_secs(NOW),
            received: UNIX_EPOCH + Duration::from_secs(NOW + 2),
        };
        let mut probe = good_probe();
        // The host is 5 s ahead: it started at NOW+0.1 and ended at NOW+1.9 on the true clock.
        probe.host_time = Some(Duration::from_secs_f64(NOW as f64 + 5.1));
        probe.host_time_end = Some(Duration::from_secs_f64(NOW as f64 + 6.9));
        let report = evaluate(&host_checks(), &probe, &clock);
        assert_row(
            &report,
            "clock",
            Verdict::Warn,
            "host is 5.00 s ahead of the operator (±0.10 s)",
        );
        let skew = report.facts.clock_skew_secs.unwrap();
        assert!((skew - 5.0).abs() < 1e-3, "{skew}");

        // An end before the start (clock stepped back mid-probe): judged on the start alone.
        probe.host_time_end = Some(Duration::from_secs(NOW - 100));
        let report = evaluate(&host_checks(), &probe, &clock);
        assert_row(&report, "clock", Verdict::Warn, "(±1.00 s)");
    }

    #[test]
    fn a_user_other_than_root_is_refused_naming_it() {
        assert_row(
            &judge(&host_checks(), &good_probe()),
            "user",
            Verdict::Pass,
            "root (uid 0)",
        );
        let mut probe = good_probe();
        probe.uid = Some(1000);
        probe.user = Some("admin".into());
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "user",
            Verdict::Fail,
            "connected as `admin` (uid 1000), not root, and the inventory does not ask for sudo: set `ansible_become=true` for this host and give `admin` a NOPASSWD sudo rule for root (for example `admin ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/admin), or connect as root with ansible_user=root",
        );
        assert_eq!(report.verdict(), Verdict::Fail);
        probe.uid = None;
        assert_row(
            &judge(&host_checks(), &probe),
            "user",
            Verdict::Fail,
            "not reported",
        );
    }

    #[test]
    fn commands_run_through_sudo_name_the_ssh_user() {
        let mut probe = good_probe();
        probe.sudo_user = Some("ops".into());
        let report = judge(&host_checks(), &probe);
        assert_row(&report, "user", Verdict::Pass, "`ops` via sudo (uid 0)");
        assert_eq!(
            report.check("user").unwrap().detail,
            "`ops` via sudo (uid 0)"
        );
        // root asking for become runs without sudo; a stray SUDO_USER=root says nothing more.
        probe.sudo_user = Some("root".into());
        assert_eq!(
            judge(&host_checks(), &probe).check("user").unwrap().detail,
            "root (uid 0)"
        );
    }

    #[test]
    fn expected_ip_must_be_on_an_interface() {
        let mut checks = host_checks();
        checks.expected_ip = Some("10.0.0.99".parse().unwrap());
        let report = judge(&checks, &good_probe());
        assert_row(
            &report,
            "address",
            Verdict::Fail,
            "10.0.0.99 (inventory ip=) is on no interface of this host, which has 10.0.0.5 on eth0",
        );
        assert_eq!(report.facts.node_ip, None);
        assert_eq!(report.facts.detected_ip, Some("10.0.0.5".parse().unwrap()));

        checks.expected_ip = Some("127.0.0.1".parse().unwrap());
        assert_row(
            &judge(&checks, &good_probe()),
            "address",
            Verdict::Fail,
            "loopback",
        );

        let mut probe = good_probe();
        probe.addresses.clear();
        checks.expected_ip = Some("10.0.0.5".parse().unwrap());
        assert_row(
            &judge(&checks, &probe),
            "address",
            Verdict::Fail,
            "not reported",
        );
    }

    #[test]
    fn without_expected_ip_the_default_route_address_is_used() {
        let mut checks = host_checks();
        checks.expected_ip = None;
        let mut probe = good_probe();
        probe.addresses.push(InterfaceAddress {
            interface: "eth1".into(),
            ip: "192.168.1.5".parse().unwrap(),
            prefix: 24,
        });
        let report = judge(&checks, &probe);
        assert_row(
            &report,
            "address",
            Verdict::Pass,
            "10.0.0.5 on eth0, the default route's",
        );
        assert_eq!(report.facts.node_ip, Some("10.0.0.5".parse().unwrap()));

        probe.routes.clear();
        let report = judge(&checks, &probe);
        assert_row(
            &report,
            "address",
            Verdict::Fail,
            "no default route and not exactly one IPv4 address to pick from: set ip= in the inventory (the host has 10.0.0.5 on eth0, 192.168.1.5 on eth1)",
        );
        assert_eq!(report.facts.node_ip, None);

        // One IPv4 address (IPv6 and link-local aside) is the one to use.
        probe.addresses.pop();
        probe.addresses.push(InterfaceAddress {
            interface: "eth0".into(),
            ip: "fe80::1".parse().unwrap(),
            prefix: 64,
        });
        probe.addresses.push(InterfaceAddress {
            interface: "eth0".into(),
            ip: "fd00::5".parse().unwrap(),
            prefix: 64,
        });
        let report = judge(&checks, &probe);
        assert_row(
            &report,
            "address",
            Verdict::Pass,
            "10.0.0.5 on eth0, the host's only IPv4 address (no default route",
        );
        assert_eq!(report.facts.node_ip, Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn missing_tools_are_listed() {
        let mut probe = good_probe();
        probe.tools.insert("iptables-restore".into(), None);
        probe.tools.remove("sha256sum");
        assert_row(
            &judge(&host_checks(), &probe),
            "tools",
            Verdict::Fail,
            "not found in PATH: iptables-restore, sha256sum",
        );
    }

    #[test]
    fn ip_forward_on_writable_or_read_only() {
        let cases = [
            (Some(true), Some(false), Verdict::Pass, "is 1"),
            (Some(false), Some(true), Verdict::Pass, "writable"),
            (Some(false), Some(false), Verdict::Fail, "read-only"),
            (None, None, Verdict::Fail, "not reported"),
        ];
        for (on, writable, verdict, needle) in cases {
            let mut probe = good_probe();
            probe.ip_forward = on;
            probe.ip_forward_writable = writable;
            assert_row(
                &judge(&host_checks(), &probe),
                "ip_forward",
                verdict,
                needle,
            );
        }
    }

    #[test]
    fn overlay_loaded_as_module_or_absent() {
        let cases = [
            (
                Some(true),
                Some(false),
                Verdict::Pass,
                "in /proc/filesystems",
            ),
            (Some(false), Some(true), Verdict::Pass, "module present"),
            (
                Some(false),
                Some(false),
                Verdict::Fail,
                "no overlay filesystem",
            ),
        ];
        for (loaded, module, verdict, needle) in cases {
            let mut probe = good_probe();
            probe.overlay_loaded = loaded;
            probe.overlay_module = module;
            assert_row(&judge(&host_checks(), &probe), "overlay", verdict, needle);
        }
    }

    fn v1_mount(controllers: &str) -> CgroupMount {
        CgroupMount {
            fstype: "cgroup".into(),
            target: format!("/sys/fs/cgroup/{controllers}"),
            options: ["ro", "nosuid"]
                .into_iter()
                .chain(controllers.split(','))
                .map(String::from)
                .collect(),
        }
    }

    #[test]
    fn cgroups_v2_v1_hybrid_and_missing() {
        let mut probe = good_probe();
        probe.cgroup2_controllers = Some(vec!["cpu".into(), "pids".into()]);
        assert_row(
            &judge(&host_checks(), &probe),
            "cgroups",
            Verdict::Fail,
            "v2 without the memory controller(s)",
        );

        // Hybrid: v1 controllers, systemd's own hierarchy as cgroup2 under unified/.
        probe.cgroup2_controllers = None;
        probe.cgroup_mounts = vec![
            CgroupMount {
                fstype: "cgroup2".into(),
                target: "/sys/fs/cgroup/unified".into(),
                options: vec!["rw".into()],
            },
            v1_mount("cpu,cpuacct"),
            v1_mount("cpuset"),
            v1_mount("memory"),
            CgroupMount {
                fstype: "cgroup".into(),
                target: "/sys/fs/cgroup/systemd".into(),
                options: vec!["rw".into(), "name=systemd".into()],
            },
        ];
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "cgroups",
            Verdict::Pass,
            "v1 (cpu cpuacct cpuset memory)",
        );
        assert_eq!(report.facts.cgroup_version.as_deref(), Some("v1"));

        probe.cgroup_mounts.remove(3);
        assert_row(
            &judge(&host_checks(), &probe),
            "cgroups",
            Verdict::Fail,
            "v1 without the memory controller(s)",
        );

        probe.cgroup_mounts.clear();
        assert_row(
            &judge(&host_checks(), &probe),
            "cgroups",
            Verdict::Fail,
            "no cgroup filesystem",
        );
    }

    fn busy(probe: &mut Probe, port: u16, process: &str, pid: u32, cgroup: Option<&str>) {
        probe.listening.insert(port);
        probe.listeners.push(Listener {
            port,
            processes: vec![(process.into(), pid)],
        });
        if let Some(cgroup) = cgroup {
            probe.cgroups.insert(pid, cgroup.into());
        }
    }

    #[test]
    fn port_held_by_its_own_unit_passes() {
        let mut probe = good_probe();
        busy(
            &mut probe,
            6443,
            "kube-apiserver",
            412,
            Some("/system.slice/kube-apiserver.service"),
        );
        probe
            .unit_states
            .insert("kube-apiserver.service".into(), "active".into());
        assert_row(
            &judge(&host_checks(), &probe),
            "port",
            Verdict::Pass,
            "6443 (kube-apiserver): already held by its owner kube-apiserver.service",
        );
    }

    #[test]
    fn port_held_by_anything_else_fails_naming_it() {
        let mut probe = good_probe();
        busy(
            &mut probe,
            6443,
            "socat",
            812,
            Some("/system.slice/busy.service"),
        );
        // Even with the owner active: the port is someone else's.
        probe
            .unit_states
            .insert("kube-apiserver.service".into(), "active".into());
        assert_row(
            &judge(&host_checks(), &probe),
            "port",
            Verdict::Fail,
            "6443 (kube-apiserver): in use by socat (pid 812, busy.service)",
        );

        let mut probe = good_probe();
        busy(&mut probe, 6443, "nc", 99, None);
        assert_row(
            &judge(&host_checks(), &probe),
            "port",
            Verdict::Fail,
            "in use by nc (pid 99)",
        );
    }

    #[test]
    fn port_in_use_without_process_names_trusts_the_owner_unit_state() {
        let mut probe = good_probe();
        probe.listening.insert(6443);
        assert_row(
            &judge(&host_checks(), &probe),
            "port",
            Verdict::Fail,
            "in use by a process ss could not name, and kube-apiserver.service is not active",
        );
        probe
            .unit_states
            .insert("kube-apiserver.service".into(), "active".into());
        assert_row(
            &judge(&host_checks(), &probe),
            "port",
            Verdict::Pass,
            "in use, and its owner kube-apiserver.service is active",
        );
    }

    #[test]
    fn one_row_per_port() {
        let mut checks = host_checks();
        checks.ports.push(PortNeed {
            port: 22,
            what: "ssh",
            owner_unit: "ssh.service",
        });
        let report = judge(&checks, &good_probe());
        let rows: Vec<&Check> = report.checks_named("port").collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[1].detail == "22 (ssh): already held by its owner ssh.service",
            "{:?}",
            rows[1]
        );
    }

    fn facts_libc(report: &HostReport) -> Option<HostLibc> {
        report.facts.libc
    }

    fn glibc(major: u32, minor: u32) -> LibcNeed {
        LibcNeed::Glibc(Some(GlibcVersion::new(major, minor)))
    }

    #[test]
    fn libc_passes_listing_needs_newest_first() {
        let mut checks = host_checks();
        checks.binaries.push(BinaryNeed {
            name: "etcd".into(),
            need: glibc(2, 17),
        });
        assert_row(
            &judge(&checks, &good_probe()),
            "libc",
            Verdict::Pass,
            "glibc 2.36; binaries need glibc 2.34: containerd runc; glibc 2.17: etcd; static: kubelet",
        );
        // Needing exactly what the host has is enough.
        checks.binaries.push(BinaryNeed {
            name: "ctr".into(),
            need: glibc(2, 36),
        });
        assert_eq!(
            only(&judge(&checks, &good_probe()), "libc").verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn a_binary_needing_a_newer_glibc_fails_naming_it_both_versions_and_the_way_out() {
        let mut checks = host_checks();
        checks.binaries[1].need = glibc(2, 38);
        checks.binaries.push(BinaryNeed {
            name: "etcd".into(),
            need: glibc(2, 39),
        });
        assert_row(
            &judge(&checks, &good_probe()),
            "libc",
            Verdict::Fail,
            "the host has glibc 2.36, but containerd needs glibc 2.38, etcd needs glibc 2.39: \
             put statically linked builds of containerd, etcd in the bundle (e.g. upstream's \
             containerd-static tarball for containerd), or use a host with glibc 2.39 or newer",
        );
    }

    #[test]
    fn the_way_out_names_containerd_static_only_for_containerd() {
        let mut checks = host_checks();
        checks.binaries = vec![BinaryNeed {
            name: "etcd".into(),
            need: glibc(2, 39),
        }];
        assert_row(
            &judge(&checks, &good_probe()),
            "libc",
            Verdict::Fail,
            "put statically linked builds of etcd in the bundle (e.g. the project's own release \
             binaries, usually static, instead of a distribution's package), or use a host with \
             glibc 2.39 or newer",
        );
    }

    #[test]
    fn glibc_binaries_fail_on_musl_and_on_hosts_without_a_c_library() {
        let mut probe = good_probe();
        probe.libc_getconf = None;
        probe.libc_ldd = Some("musl libc (x86_64)".into());
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "libc",
            Verdict::Fail,
            "the host has musl, but containerd needs glibc 2.34, runc needs glibc 2.34",
        );
        assert_eq!(facts_libc(&report), Some(HostLibc::Musl));

        probe.libc_ldd = None;
        probe.musl_loaders = vec!["/lib/ld-musl-x86_64.so.1".into()];
        assert_eq!(
            facts_libc(&judge(&host_checks(), &probe)),
            Some(HostLibc::Musl)
        );

        probe.musl_loaders.clear();
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "libc",
            Verdict::Fail,
            "the host has no C library (getconf, ldd and a musl loader all missing)",
        );
        assert_eq!(facts_libc(&report), Some(HostLibc::None));

        // Static binaries run anywhere.
        let mut checks = host_checks();
        checks.binaries.retain(|b| b.need == LibcNeed::Static);
        assert_row(
            &judge(&checks, &probe),
            "libc",
            Verdict::Pass,
            "static: kubelet",
        );
    }

    #[test]
    fn host_glibc_from_ldd_when_getconf_is_silent() {
        let mut probe = good_probe();
        probe.libc_getconf = None;
        probe.libc_ldd = Some("ldd (GNU libc) 2.34".into());
        assert_eq!(
            facts_libc(&judge(&host_checks(), &probe)),
            Some(HostLibc::Glibc(GlibcVersion::new(2, 34)))
        );
        probe.libc_ldd = Some("ldd (Debian GLIBC 2.36-9+deb12u14) 2.36".into());
        assert_eq!(
            facts_libc(&judge(&host_checks(), &probe)),
            Some(HostLibc::Glibc(GlibcVersion::new(2, 36)))
        );
    }

    #[test]
    fn no_binaries_no_libc_row() {
        let mut checks = host_checks();
        checks.binaries.clear();
        assert!(judge(&checks, &good_probe()).check("libc").is_none());
    }

    fn cgroup_v1_probe() -> Probe {
        let mut probe = good_probe();
        probe.cgroup2_controllers = None;
        probe.cgroup_mounts = vec![
            v1_mount("cpu,cpuacct"),
            v1_mount("cpuset"),
            v1_mount("memory"),
        ];
        probe
    }

    #[test]
    fn cgroup_v1_fails_from_kubernetes_1_35_naming_both_ways_out() {
        let mut checks = host_checks();
        checks.kubernetes_version = Some("v1.35.0".parse().unwrap());
        assert_row(
            &judge(&checks, &cgroup_v1_probe()),
            "cgroups",
            Verdict::Fail,
            "v1 (cpu cpuacct cpuset memory) with Kubernetes v1.35.0: the kubelet refuses cgroup v1 \
             from Kubernetes v1.35 (failCgroupV1 defaults to true); move this host to cgroup v2 \
             (boot with systemd.unified_cgroup_hierarchy=1), or set `kubelet_fail_cgroup_v1: false` \
             in the cluster config (cgroup v1 is deprecated)",
        );
        // Its release candidates already have the new default.
        for version in ["v1.35.0-rc.1", "v1.37.1"] {
            checks.kubernetes_version = Some(version.parse().unwrap());
            assert_row(
                &judge(&checks, &cgroup_v1_probe()),
                "cgroups",
                Verdict::Fail,
                version,
            );
        }

        // The escape hatch: allowed, with a warning.
        checks.kubelet_fail_cgroup_v1 = Some(false);
        assert_row(
            &judge(&checks, &cgroup_v1_probe()),
            "cgroups",
            Verdict::Warn,
            "allowed by `kubelet_fail_cgroup_v1: false`; cgroup v1 is deprecated",
        );
        // cgroup v2 hosts never meet the rule.
        checks.kubelet_fail_cgroup_v1 = None;
        assert_row(
            &judge(&checks, &good_probe()),
            "cgroups",
            Verdict::Pass,
            "v2",
        );
    }

    #[test]
    fn cgroup_v1_below_1_35_passes_unless_the_config_asks_the_kubelet_to_fail() {
        let mut checks = host_checks();
        for version in ["v1.20.2", "v1.30.4", "v1.34.2"] {
            checks.kubernetes_version = Some(version.parse().unwrap());
            assert_row(
                &judge(&checks, &cgroup_v1_probe()),
                "cgroups",
                Verdict::Pass,
                "v1 (cpu cpuacct cpuset memory)",
            );
        }
        // 1.31-1.34 know the field: `true` makes that kubelet refuse v1 too.
        checks.kubernetes_version = Some("v1.33.1".parse().unwrap());
        checks.kubelet_fail_cgroup_v1 = Some(true);
        assert_row(
            &judge(&checks, &cgroup_v1_probe()),
            "cgroups",
            Verdict::Fail,
            "the cluster config sets `kubelet_fail_cgroup_v1: true`",
        );
        // Before 1.31 the field does not exist (and is not rendered): no rule.
        checks.kubernetes_version = Some("v1.30.4".parse().unwrap());
        assert_eq!(
            only(&judge(&checks, &cgroup_v1_probe()), "cgroups").verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn no_default_route_warns_and_says_what_ilha_does() {
        let mut probe = good_probe();
        probe.default_routes.clear();
        let report = judge(&host_checks(), &probe);
        assert_row(
            &report,
            "default_route",
            Verdict::Warn,
            "none: ilha installs a route for the service range (service_cidr) on the node's \
             interface, so host-network clients (CNI agents, node-local DNS, monitoring) still \
             reach ClusterIPs",
        );
        assert_eq!(report.verdict(), Verdict::Warn);
        assert_eq!(report.facts.default_route, None);
        // Without ip= as well: the address row still refuses a host with several addresses.
        let mut checks = host_checks();
        checks.expected_ip = None;
        probe.routes.clear();
        probe.addresses.push(InterfaceAddress {
            interface: "eth1".into(),
            ip: "192.168.1.5".parse().unwrap(),
            prefix: 24,
        });
        let report = judge(&checks, &probe);
        assert_row(
            &report,
            "default_route",
            Verdict::Warn,
            "needs ip= in the inventory",
        );
        assert_row(&report, "address", Verdict::Fail, "no default route");
    }

    #[test]
    fn default_route_row_shows_gateway_and_device() {
        assert_row(
            &judge(&host_checks(), &good_probe()),
            "default_route",
            Verdict::Pass,
            "default via 10.0.0.1 dev eth0",
        );
        let mut probe = good_probe();
        probe.default_routes = vec![DefaultRoute {
            via: None,
            device: Some("wg0".into()),
        }];
        assert_row(
            &judge(&host_checks(), &probe),
            "default_route",
            Verdict::Pass,
            "default dev wg0",
        );
    }

    #[test]
    fn unit_of_cgroup_paths() {
        assert_eq!(unit_of("/system.slice/etcd.service"), Some("etcd.service"));
        assert_eq!(
            unit_of("/system.slice/containerd.service/kubepods"),
            Some("containerd.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-0.slice/session-3.scope"),
            Some("session-3.scope")
        );
        assert_eq!(unit_of("/"), None);
    }
}
