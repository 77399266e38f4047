//! The probe: a read-only POSIX sh script printing `key=value` lines. It only reads (files, `df`,
//! `ip`, `ss`, `systemctl is-active`): nothing on the host changes. Every command that may fail on
//! an odd host is guarded, because `Session::run` adds `set -euo pipefail` and one missing file
//! must cost one fact, not the whole probe. Judging happens on the operator's side.
use super::HostChecks;
use super::evaluate::REQUIRED_TOOLS;

/// Last line of a complete probe: without it the output was cut short.
pub(crate) const END_MARKER: &str = "probe_end=1";

/// The script for one host: the fixed probe plus the state of the units owning its ports.
pub(crate) fn probe_script(checks: &HostChecks) -> String {
    let mut units: Vec<&str> = checks.ports.iter().map(|need| need.owner_unit).collect();
    units.sort_unstable();
    units.dedup();
    let units = units
        .iter()
        .map(|unit| crate::ssh::shell_quote(unit))
        .collect::<Vec<_>>()
        .join(" ");
    let tools = REQUIRED_TOOLS.join(" ");
    format!(
        r#"# ilha preflight probe (read-only)
# First, so the operator's side can bracket the moment between sending and receiving.
echo "now=$(date +%s.%N)"
# Non-login root shells may lack the sbin directories, where iptables and ip live.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C
echo "uname_s=$(uname -s)"
echo "uname_m=$(uname -m)"
echo "uname_r=$(uname -r)"
echo "hostname=$(uname -n)"
echo "uid=$(id -u)"
echo "user=$(id -un 2>/dev/null || true)"
# Set by sudo to the ssh user it ran for (become): who ilha connected as.
echo "sudo_user=${{SUDO_USER:-}}"
echo "cpus=$(nproc 2>/dev/null || true)"
if [ -r /etc/os-release ]; then sed -n 's/^PRETTY_NAME=/os_pretty=/p' /etc/os-release; fi
if [ -d /run/systemd/system ]; then echo systemd_booted=1; else echo systemd_booted=0; fi
echo "pid1=$(cat /proc/1/comm 2>/dev/null || true)"
if [ -r /proc/meminfo ]; then
  while read -r key value _; do
    case "$key" in
      MemTotal:|MemAvailable:|SwapTotal:) echo "meminfo.${{key%:}}=$value" ;;
    esac
  done < /proc/meminfo
fi
disk_path=/var/lib
if [ ! -d "$disk_path" ]; then disk_path=/; fi
echo "disk_path=$disk_path"
df -Pk "$disk_path" 2>/dev/null | sed -n '2,$s/^/df=/p' || true
ip -o addr show 2>/dev/null | sed 's/^/addr=/' || true
# Any public destination: the answer is the default route's device and source address.
ip -o -4 route get 1.1.1.1 2>/dev/null | sed 's/^/route=/' || true
ip -o -6 route get 2001:4860:4860::8888 2>/dev/null | sed 's/^/route=/' || true
# Listening TCP sockets from the kernel's tables: right even where `ss` is missing.
for table in /proc/net/tcp /proc/net/tcp6; do
  if [ -r "$table" ]; then
    while read -r _ address _ state _; do
      if [ "$state" = 0A ]; then echo "listen=${{address##*:}}"; fi
    done < "$table"
  fi
done
# Who holds them: ss names the processes, their cgroup names the systemd unit.
listeners=$(ss -ltnp 2>/dev/null || true)
if [ -n "$listeners" ]; then printf '%s\n' "$listeners" | sed 's/^/ss=/'; fi
for pid in $(printf '%s\n' "$listeners" | tr ',' '\n' | sed -n 's/^pid=\([0-9][0-9]*\)$/\1/p' | sort -un); do
  if [ -r "/proc/$pid/cgroup" ]; then
    while IFS= read -r line; do
      case "$line" in
        0::*|*:name=systemd:*) echo "cgroup.$pid=${{line#*:*:}}" ;;
      esac
    done < "/proc/$pid/cgroup"
  fi
done
for unit in {units}; do
  echo "unit.$unit=$(systemctl is-active "$unit" 2>/dev/null || true)"
done
for tool in {tools}; do
  echo "tool.$tool=$(command -v "$tool" 2>/dev/null || true)"
done
echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || true)"
if [ -w /proc/sys/net/ipv4/ip_forward ]; then echo ip_forward_writable=1; else echo ip_forward_writable=0; fi
if grep -qw overlay /proc/filesystems 2>/dev/null; then echo overlay_loaded=1; else echo overlay_loaded=0; fi
modules="/lib/modules/$(uname -r)"
if grep -qs '/overlay\.ko' "$modules/modules.builtin" "$modules/modules.dep"; then
  echo overlay_module=1
else
  echo overlay_module=0
fi
if [ -r /sys/fs/cgroup/cgroup.controllers ]; then
  echo "cgroup2_controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
fi
while read -r _ target fstype options _; do
  case "$fstype" in
    cgroup|cgroup2) echo "cgroup_mount=$fstype $target $options" ;;
  esac
done < /proc/self/mounts
# The C library the bundle's dynamic binaries will be loaded against.
echo "libc_getconf=$(getconf GNU_LIBC_VERSION 2>/dev/null || true)"
if ! getconf GNU_LIBC_VERSION >/dev/null 2>&1; then
  # musl's ldd prints its version on stderr and exits 1.
  echo "libc_ldd=$(ldd --version 2>&1 | sed -n 1p || true)"
fi
for loader in /lib/ld-musl-*.so.1; do
  if [ -e "$loader" ]; then echo "musl_loader=$loader"; fi
done
# Default routes of the main table (host-network clients reach ClusterIPs through them).
if command -v ip >/dev/null 2>&1; then
  ip -o -4 route show default 2>/dev/null | sed 's/^/default_route=/' || true
  ip -o -6 route show default 2>/dev/null | sed 's/^/default_route=/' || true
  echo default_route_checked=1
fi
# With `now`, brackets the probe's own run time out of the clock measurement.
echo "now_end=$(date +%s.%N)"
echo {END_MARKER}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::PortNeed;

    fn checks() -> HostChecks {
        HostChecks {
            host: "node1".into(),
            expected_ip: None,
            ports: vec![
                PortNeed {
                    port: 6443,
                    what: "kube-apiserver",
                    owner_unit: "kube-apiserver.service",
                },
                PortNeed {
                    port: 2379,
                    what: "etcd clients",
                    owner_unit: "etcd.service",
                },
                PortNeed {
                    port: 2380,
                    what: "etcd peers",
                    owner_unit: "etcd.service",
                },
            ],
            arch: "amd64".into(),
            min_memory_mib: 1,
            min_disk_mib: 1,
            needs_container_runtime: true,
            ..HostChecks::default()
        }
    }

    #[test]
    fn asks_each_owner_unit_once_quoted() {
        let script = probe_script(&checks());
        assert!(
            script.contains("for unit in 'etcd.service' 'kube-apiserver.service'; do"),
            "{script}"
        );
        assert!(
            script
                .contains("for tool in iptables iptables-restore ip sha256sum systemctl mount; do")
        );
        assert!(script.trim_end().ends_with(END_MARKER));
    }

    #[test]
    fn without_ports_the_unit_loop_is_empty() {
        let mut checks = checks();
        checks.ports.clear();
        let script = probe_script(&checks);
        assert!(script.contains("for unit in ; do"), "{script}");
    }

    /// The probe runs as `Session::run` runs it (bash, `set -euo pipefail`) and under dash (a
    /// strict POSIX sh) on this machine: it must get to the end and report the basics.
    #[cfg(target_os = "linux")]
    #[test]
    fn runs_to_the_end_under_bash_strict_mode_and_posix_sh() {
        let script = probe_script(&checks());
        let shells: [(&str, String); 2] = [
            ("bash", format!("set -euo pipefail\n{script}")),
            ("sh", format!("set -eu\n{script}")),
        ];
        for (shell, text) in shells {
            let output = std::process::Command::new(shell)
                .args(["-c", &text])
                .output()
                .unwrap_or_else(|e| panic!("running {shell}: {e}"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{shell}: {}\n{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
            let probe = crate::preflight::probe::parse(&stdout);
            assert!(probe.complete, "{shell}:\n{stdout}");
            assert_eq!(probe.uname_s.as_deref(), Some("Linux"), "{shell}");
            assert!(probe.host_time.is_some(), "{shell}:\n{stdout}");
            assert!(probe.host_time_end >= probe.host_time, "{shell}:\n{stdout}");
            assert!(probe.mem_total_kib.is_some_and(|kib| kib > 0), "{shell}");
            assert!(probe.disk.is_some(), "{shell}:\n{stdout}");
            assert_eq!(probe.tools.len(), REQUIRED_TOOLS.len(), "{shell}");
            assert!(probe.unit_states.contains_key("etcd.service"), "{shell}");
            // This machine's own C library, as the hosts report theirs.
            #[cfg(target_env = "gnu")]
            assert!(
                probe
                    .libc_getconf
                    .as_deref()
                    .is_some_and(|l| l.starts_with("glibc 2.")),
                "{shell}:\n{stdout}"
            );
            assert!(probe.default_routes_checked, "{shell}:\n{stdout}");
        }
    }
}
