//! Preflight: before `ilha up` changes anything, one read-only probe script per host (POSIX sh and
//! coreutils/iproute2/systemd only) reports what the host is, and the operator's side judges it
//! against what the plan needs. The result is one verdict table per host; any `FAIL` stops `up`.
//!
//! The split keeps the judging testable without hosts: [`script`] writes the probe, [`probe`]
//! parses its `key=value` output (tolerating garbage), [`evaluate`] turns that into verdicts, and
//! only [`run`] talks SSH. See docs/preflight.md.
mod binaries;
mod evaluate;
mod probe;
mod render;
mod script;

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::config::KubeVersion;
use crate::ssh::{Fleet, Session, SshError};

pub use binaries::{BinaryNeed, BundleNeeds, GlibcVersion, HostLibc, LibcNeed, read_libc_need};
pub use evaluate::{CLOCK_SKEW_FAIL, CLOCK_SKEW_WARN, REQUIRED_TOOLS, kubernetes_arch};

/// How long one host's probe may take. It reads a few files and runs `df`: a host still busy
/// after this is hung (typically a dead network mount under /var/lib), which is itself a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP port a component of the plan will listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNeed {
    pub port: u16,
    /// What needs it, for the operator: `"kube-apiserver"`.
    pub what: &'static str,
    /// The systemd unit ilha runs it as: when the port is held by this unit, this is a re-run of
    /// `up` and the port counts as ours.
    pub owner_unit: &'static str,
}

/// What the plan asks of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostChecks {
    /// Inventory name (the Session's name in the Fleet).
    pub host: String,
    /// The inventory's `ip=`; `None`: the address the default route uses is detected.
    pub expected_ip: Option<IpAddr>,
    pub ports: Vec<PortNeed>,
    /// The bundle's platform architecture, Kubernetes naming: `amd64`, `arm64`.
    pub arch: String,
    /// Installed memory (MemTotal) at least this.
    pub min_memory_mib: u64,
    /// Free space on the filesystem holding /var/lib at least this.
    pub min_disk_mib: u64,
    /// Kubernetes nodes (they run containerd): overlay filesystem, cgroups and the default
    /// route are checked.
    pub needs_container_runtime: bool,
    /// The bundle binaries this host gets and what each needs of its C library
    /// ([`BundleNeeds::for_roles`]); empty: no `libc` row.
    pub binaries: Vec<BinaryNeed>,
    /// The Kubernetes version to install: rules that depend on it (cgroup v1 from 1.35) are
    /// judged for it. `None`: no version rule applies.
    pub kubernetes_version: Option<KubeVersion>,
    /// The cluster config's `kubelet_fail_cgroup_v1` (`None`: the kubelet's default).
    pub kubelet_fail_cgroup_v1: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Pass,
    /// Works, but the operator should know (swap on, clock a little off).
    Warn,
    /// `up` must not go on.
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One row of a host's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short and stable (`"port"`, `"clock"`): callers and tests look rows up by it.
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

/// What the probe learnt about a host (`None`: not reported, or the host was not reached).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// `/etc/os-release` PRETTY_NAME.
    pub os: Option<String>,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// Kubernetes naming (`amd64`) when known, else `uname -m` as is.
    pub arch: Option<String>,
    pub hostname: Option<String>,
    pub cpus: Option<u32>,
    /// MemTotal.
    pub memory_mib: Option<u64>,
    /// Free space on the filesystem holding /var/lib, and where it is mounted.
    pub disk_free_mib: Option<u64>,
    pub disk_mount: Option<String>,
    /// The source address of the default route.
    pub detected_ip: Option<IpAddr>,
    /// The address components will use: the inventory's `ip=` when the host has it, else
    /// `detected_ip`. `None` when neither holds (the `address` row fails).
    pub node_ip: Option<IpAddr>,
    /// Host clock minus operator clock, seconds (positive: the host is ahead).
    pub clock_skew_secs: Option<f64>,
    /// `"v2"` or `"v1"`.
    pub cgroup_version: Option<String>,
    /// The host's C library (`getconf GNU_LIBC_VERSION`, `ldd --version`, a musl loader).
    pub libc: Option<HostLibc>,
    /// The device of the default route (IPv4, else IPv6); `None`: the host has none.
    pub default_route: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostReport {
    pub host: String,
    pub checks: Vec<Check>,
    pub facts: Facts,
}

impl HostReport {
    /// The worst verdict of the host's rows.
    pub fn verdict(&self) -> Verdict {
        self.checks
            .iter()
            .map(|check| check.verdict)
            .max()
            .unwrap_or(Verdict::Pass)
    }

    /// Every row with this name (`"port"` has one per port).
    pub fn checks_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks.iter().filter(move |check| check.name == name)
    }

    /// The first row with this name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.name == name)
    }

    /// A host that could not be probed at all: one `ssh` row with the reason.
    fn unreachable(host: &str, detail: String) -> HostReport {
        HostReport::not_probed(host, "ssh", detail)
    }

    /// A host that could not be probed for `error`: a `user` row when the host answered but ilha
    /// cannot act as root there (not root without become, sudo refused or missing: the fix is the
    /// user or its sudo rule), else an `ssh` row.
    fn failed(host: &str, error: &SshError) -> HostReport {
        let row = if error.is_privilege_problem() {
            "user"
        } else {
            "ssh"
        };
        HostReport::not_probed(host, row, error_detail(host, error))
    }

    fn not_probed(host: &str, name: &'static str, detail: String) -> HostReport {
        HostReport {
            host: host.to_string(),
            checks: vec![Check {
                name,
                verdict: Verdict::Fail,
                detail,
            }],
            facts: Facts::default(),
        }
    }
}

/// Every host's report, in the order the checks were given.
#[derive(Debug, Clone, PartialEq)]
pub struct PreflightReport {
    pub hosts: Vec<HostReport>,
}

impl PreflightReport {
    /// No `FAIL` on any host (warnings allowed).
    pub fn passed(&self) -> bool {
        self.hosts
            .iter()
            .all(|host| host.verdict() != Verdict::Fail)
    }

    pub fn host(&self, name: &str) -> Option<&HostReport> {
        self.hosts.iter().find(|host| host.host == name)
    }

    /// Every failed row with its host.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Check)> {
        self.hosts.iter().flat_map(|host| {
            host.checks
                .iter()
                .filter(|check| check.verdict == Verdict::Fail)
                .map(|check| (host.host.as_str(), check))
        })
    }

    /// One table per host, then a summary line.
    pub fn render(&self) -> String {
        render::render(self)
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Probes every host of `checks` that `fleet` has a session for, all at once (bounded by the
/// fleet's `max_parallel`). A host without a session, whose script fails or whose connection drops
/// gets a failed `ssh` row naming the error. `operator_now` is the operator's clock when this is
/// called (the clock check compares each host against it).
pub async fn run(
    fleet: &Fleet,
    checks: &[HostChecks],
    operator_now: SystemTime,
) -> PreflightReport {
    run_with_connect_failures(fleet, &[], checks, operator_now).await
}

/// [`run`] after [`Fleet::connect_available`]: the hosts it could not connect to are reported with
/// their connect error.
pub async fn run_with_connect_failures(
    fleet: &Fleet,
    connect_failures: &[SshError],
    checks: &[HostChecks],
    operator_now: SystemTime,
) -> PreflightReport {
    let started = Instant::now();
    let probed = fleet
        .each(async |_, session: &Session| {
            Ok::<_, Infallible>(match checks.iter().find(|c| c.host == session.name()) {
                Some(host_checks) => {
                    Some(probe_host(session, host_checks, operator_now, started).await)
                }
                None => None,
            })
        })
        .await;
    let mut reports: Vec<HostReport> = probed
        .hosts
        .into_iter()
        .filter_map(|outcome| match outcome.result {
            Ok(report) => report,
            Err(never) => match never {},
        })
        .collect();
    let hosts = checks
        .iter()
        .map(|host_checks| {
            let name = host_checks.host.as_str();
            if let Some(index) = reports.iter().position(|r| r.host == name) {
                return reports.swap_remove(index);
            }
            match connect_failures.iter().find(|e| e.host() == name) {
                Some(error) => HostReport::failed(name, error),
                None => HostReport::unreachable(
                    name,
                    "not connected: the fleet has no session for this host".to_string(),
                ),
            }
        })
        .collect();
    PreflightReport { hosts }
}

async fn probe_host(
    session: &Session,
    checks: &HostChecks,
    operator_now: SystemTime,
    started: Instant,
) -> HostReport {
    let script = script::probe_script(checks);
    let sent = started.elapsed();
    let result = tokio::time::timeout(PROBE_TIMEOUT, session.run(&script)).await;
    let received = started.elapsed();
    let output = match result {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return HostReport::failed(&checks.host, &error),
        Err(_) => {
            return HostReport::unreachable(
                &checks.host,
                format!(
                    "the probe script did not finish within {} s (hung mount or overloaded host?)",
                    PROBE_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let clock = evaluate::OperatorClock {
        sent: operator_now + sent,
        received: operator_now + received,
    };
    let probe = probe::parse(&output.stdout);
    evaluate::evaluate(checks, &probe, &clock)
}

/// The error without its leading `host: ` (the table's header names the host).
fn error_detail(host: &str, error: &SshError) -> String {
    let text = error.to_string();
    text.strip_prefix(&format!("{host}: "))
        .unwrap_or(&text)
        .replace('\n', " / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_ilha_cannot_act_as_root_on_fails_its_user_row() {
        let refused = SshError::SudoRefused {
            host: "h2".into(),
            user: "ops".into(),
            detail: "sudo: a password is required".into(),
        };
        let report = HostReport::failed("h2", &refused);
        let row = report.check("user").expect("a user row");
        assert_eq!(row.verdict, Verdict::Fail);
        assert!(
            row.detail.starts_with(
                "`sudo -n` as `ops` was refused (sudo: a password is required): ilha never types a password; give `ops` a NOPASSWD rule for root"
            ),
            "{}",
            row.detail
        );
        let lost = SshError::ConnectionLost {
            host: "h2".into(),
            command: "probe".into(),
            detail: "gone".into(),
        };
        assert_eq!(HostReport::failed("h2", &lost).checks[0].name, "ssh");
    }
}
