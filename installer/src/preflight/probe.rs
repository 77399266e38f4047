//! Parsing the probe's `key=value` output. Never fails: a line that does not parse (a banner from
//! a login script, a value cut short) leaves that fact unknown and is kept in `unparsed`, and the
//! checks that needed the fact say so.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::script::END_MARKER;

/// Free space on the filesystem holding the probed path (`df -Pk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskFree {
    pub available_kib: u64,
    pub mount: String,
}

/// One address of one interface (`ip -o addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceAddress {
    pub interface: String,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// The default route's device and source address (`ip -o route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSource {
    pub ip: IpAddr,
    pub device: Option<String>,
}

/// A listening TCP socket as `ss -ltnp` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    pub port: u16,
    /// `(process name, pid)` of every process holding it (empty when `ss` could not tell).
    pub processes: Vec<(String, u32)>,
}

/// One default route: `default via 10.88.0.1 dev eth0 proto static`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefaultRoute {
    pub via: Option<IpAddr>,
    pub device: Option<String>,
}

/// A mounted cgroup filesystem (`/proc/self/mounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    pub target: String,
    pub options: Vec<String>,
}

/// What one host reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The end marker arrived: the output is whole.
    pub complete: bool,
    /// The host's clock when the probe started and ended, since the Unix epoch.
    pub host_time: Option<Duration>,
    pub host_time_end: Option<Duration>,
    pub uname_s: Option<String>,
    pub uname_m: Option<String>,
    pub uname_r: Option<String>,
    pub hostname: Option<String>,
    /// `id -u` and `id -un`: who ilha's commands run as on this host.
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// `$SUDO_USER`: the ssh user when commands run through sudo (become); `None` without sudo.
    pub sudo_user: Option<String>,
    pub cpus: Option<u32>,
    pub os_pretty: Option<String>,
    pub systemd_booted: Option<bool>,
    /// `/proc/1/comm`.
    pub pid1: Option<String>,
    pub mem_total_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
    pub swap_total_kib: Option<u64>,
    /// The path whose filesystem was measured (/var/lib, or / when it does not exist).
    pub disk_path: Option<String>,
    pub disk: Option<DiskFree>,
    pub addresses: Vec<InterfaceAddress>,
    /// IPv4 default route first, then IPv6.
    pub routes: Vec<RouteSource>,
    /// Ports with a listening TCP socket, from the kernel's tables.
    pub listening: BTreeSet<u16>,
    pub listeners: Vec<Listener>,
    /// pid → its systemd cgroup path (`/system.slice/ssh.service`).
    pub cgroups: BTreeMap<u32, String>,
    /// unit → `systemctl is-active` answer.
    pub unit_states: BTreeMap<String, String>,
    /// tool → its path, `None` when not found.
    pub tools: BTreeMap<String, Option<String>>,
    pub ip_forward: Option<bool>,
    pub ip_forward_writable: Option<bool>,
    pub overlay_loaded: Option<bool>,
    pub overlay_module: Option<bool>,
    /// `/sys/fs/cgroup/cgroup.controllers` when /sys/fs/cgroup is cgroup v2.
    pub cgroup2_controllers: Option<Vec<String>>,
    pub cgroup_mounts: Vec<CgroupMount>,
    /// `getconf GNU_LIBC_VERSION`: `glibc 2.36`.
    pub libc_getconf: Option<String>,
    /// The first line of `ldd --version` when getconf said nothing: `ldd (Debian GLIBC
    /// 2.36-9+deb12u14) 2.36`, or musl's `musl libc (x86_64)`.
    pub libc_ldd: Option<String>,
    /// musl's loaders present (`/lib/ld-musl-x86_64.so.1`).
    pub musl_loaders: Vec<String>,
    /// `ip -o route show default` (IPv4, then IPv6): the default routes of the main table.
    pub default_routes: Vec<DefaultRoute>,
    /// The default routes were looked for (`ip` exists): an empty list means "none".
    pub default_routes_checked: bool,
    /// Lines that were not understood, for the `probe` row's detail.
    pub unparsed: Vec<String>,
}

pub(crate) fn parse(stdout: &str) -> Probe {
    let mut probe = Probe::default();
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line == END_MARKER {
            probe.complete = true;
            continue;
        }
        let understood = match line.split_once('=') {
            Some((key, value)) => apply(&mut probe, key, value),
            None => false,
        };
        if !understood {
            probe.unparsed.push(line.to_string());
        }
    }
    probe
}

/// Records one fact; false when the key is unknown or the value does not parse.
fn apply(probe: &mut Probe, key: &str, value: &str) -> bool {
    fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
        let ok = value.is_some();
        if ok {
            *slot = value;
        }
        ok
    }
    let text = || (!value.trim().is_empty()).then(|| value.trim().to_string());
    if let Some(name) = key.strip_prefix("meminfo.") {
        let slot = match name {
            "MemTotal" => &mut probe.mem_total_kib,
            "MemAvailable" => &mut probe.mem_available_kib,
            "SwapTotal" => &mut probe.swap_total_kib,
            _ => return false,
        };
        return set(slot, value.trim().parse().ok());
    }
    if let Some(unit) = key.strip_prefix("unit.") {
        probe
            .unit_states
            .insert(unit.to_string(), value.trim().to_string());
        return !unit.is_empty();
    }
    if let Some(tool) = key.strip_prefix("tool.") {
        probe.tools.insert(tool.to_string(), text());
        return !tool.is_empty();
    }
    if let Some(pid) = key.strip_prefix("cgroup.") {
        return match pid.parse() {
            Ok(pid) if !value.is_empty() => {
                probe.cgroups.insert(pid, value.to_string());
                true
            }
            _ => false,
        };
    }
    match key {
        "now" => set(&mut probe.host_time, parse_epoch(value)),
        "now_end" => set(&mut probe.host_time_end, parse_epoch(value)),
        "uname_s" => set(&mut probe.uname_s, text()),
        "uname_m" => set(&mut probe.uname_m, text()),
        "uname_r" => set(&mut probe.uname_r, text()),
        "hostname" => set(&mut probe.hostname, text()),
        "uid" => set(&mut probe.uid, value.parse().ok()),
        "user" => value.is_empty() || set(&mut probe.user, text()),
        "sudo_user" => value.is_empty() || set(&mut probe.sudo_user, text()),
        // nproc is coreutils, but a host without it only loses a fact.
        "cpus" => value.is_empty() || set(&mut probe.cpus, value.parse().ok()),
        "os_pretty" => set(&mut probe.os_pretty, text().map(|t| unquote(&t))),
        "systemd_booted" => set(&mut probe.systemd_booted, flag(value)),
        "pid1" => value.is_empty() || set(&mut probe.pid1, text()),
        "disk_path" => set(&mut probe.disk_path, text()),
        "df" => set(&mut probe.disk, parse_df(value)),
        "addr" => match parse_addr(value) {
            Some(address) => {
                probe.addresses.push(address);
                true
            }
            // `ip -o addr` also prints link-layer lines on some versions: not an error.
            None => value
                .split_whitespace()
                .nth(2)
                .is_some_and(|f| f.starts_with("link")),
        },
        "route" => match parse_route(value) {
            Some(route) => {
                probe.routes.push(route);
                true
            }
            None => false,
        },
        "listen" => match u16::from_str_radix(value.trim(), 16) {
            Ok(port) => {
                // Both the IPv4 and IPv6 tables list a dual-stack listener: once is enough.
                probe.listening.insert(port);
                true
            }
            Err(_) => false,
        },
        "ss" => match parse_ss(value) {
            Some(Some(listener)) => {
                probe.listeners.push(listener);
                true
            }
            // The header line.
            Some(None) => true,
            None => false,
        },
        "ip_forward" => value.is_empty() || set(&mut probe.ip_forward, flag(value)),
        "ip_forward_writable" => set(&mut probe.ip_forward_writable, flag(value)),
        "overlay_loaded" => set(&mut probe.overlay_loaded, flag(value)),
        "overlay_module" => set(&mut probe.overlay_module, flag(value)),
        "libc_getconf" => value.trim().is_empty() || set(&mut probe.libc_getconf, text()),
        "libc_ldd" => value.trim().is_empty() || set(&mut probe.libc_ldd, text()),
        "musl_loader" => match text() {
            Some(loader) => {
                probe.musl_loaders.push(loader);
                true
            }
            None => false,
        },
        "default_route" => match parse_default_route(value) {
            Some(route) => {
                probe.default_routes.push(route);
                true
            }
            None => false,
        },
        "default_route_checked" => match flag(value) {
            Some(checked) => {
                probe.default_routes_checked = checked;
                true
            }
            None => false,
        },
        "cgroup2_controllers" => {
            probe.cgroup2_controllers =
                Some(value.split_whitespace().map(str::to_string).collect());
            true
        }
        "cgroup_mount" => {
            let mut fields = value.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(fstype), Some(target), options) => {
                    probe.cgroup_mounts.push(CgroupMount {
                        fstype: fstype.to_string(),
                        target: target.to_string(),
                        options: options
                            .map(|o| o.split(',').map(str::to_string).collect())
                            .unwrap_or_default(),
                    });
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn flag(value: &str) -> Option<bool> {
    match value.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// os-release values may be quoted: `"Debian GNU/Linux 12 (bookworm)"`.
fn unquote(text: &str) -> String {
    let trimmed = text.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = trimmed
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner.to_string();
        }
    }
    trimmed.to_string()
}

/// `1700000000.123456789`; a `date` without `%N` leaves `1700000000.N` or `.%N`: whole seconds.
fn parse_epoch(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs: u64 = secs.parse().ok()?;
    let nanos = if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) {
        let digits: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        digits.parse().ok()?
    } else {
        0
    };
    Some(Duration::new(secs, nanos))
}

/// `/dev/sda1  41152736  9012345  30000000  24%  /` (a mount point may hold spaces).
fn parse_df(value: &str) -> Option<DiskFree> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() < 6 || !fields[4].ends_with('%') {
        return None;
    }
    Some(DiskFree {
        available_kib: fields[3].parse().ok()?,
        mount: fields[5..].join(" "),
    })
}

/// `2: eth0    inet 10.88.0.11/24 brd 10.88.0.255 scope global eth0\       valid_lft forever ...`
fn parse_addr(value: &str) -> Option<InterfaceAddress> {
    let mut fields = value.split_whitespace();
    let _index = fields.next()?.strip_suffix(':')?;
    let interface = fields.next()?;
    let family = fields.next()?;
    if family != "inet" && family != "inet6" {
        return None;
    }
    let (ip, prefix) = fields.next()?.split_once('/')?;
    // `eth0@if12` names a veth's peer: the interface is `eth0`.
    let interface = interface.split('@').next().unwrap_or(interface);
    Some(InterfaceAddress {
        interface: interface.to_string(),
        ip: ip.parse().ok()?,
        prefix: prefix.parse().ok()?,
    })
}

/// `1.1.1.1 via 10.88.0.1 dev eth0 src 10.88.0.11 uid 0 \    cache`
fn parse_route(value: &str) -> Option<RouteSource> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let after = |word: &str| {
        fields
            .windows(2)
            .find(|pair| pair[0] == word)
            .map(|pair| pair[1])
    };
    Some(RouteSource {
        ip: after("src")?.parse().ok()?,
        device: after("dev").map(str::to_string),
    })
}

/// `default via 10.88.0.1 dev eth0 proto static \    ...`; `default dev wg0 scope link`.
fn parse_default_route(value: &str) -> Option<DefaultRoute> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.first() != Some(&"default") {
        return None;
    }
    let after = |word: &str| {
        fields
            .windows(2)
            .find(|pair| pair[0] == word)
            .map(|pair| pair[1])
    };
    Some(DefaultRoute {
        via: after("via").and_then(|ip| ip.parse().ok()),
        device: after("dev").map(str::to_string),
    })
}

/// `LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=123,fd=3))`: `Some(None)` for the
/// header, `None` for garbage.
fn parse_ss(value: &str) -> Option<Option<Listener>> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.first() == Some(&"State") {
        return Some(None);
    }
    if fields.len() < 5 || fields[0] != "LISTEN" {
        return None;
    }
    // `0.0.0.0:22`, `[::]:22`, `*:22`, `127.0.0.1%lo:53`: the port follows the last colon.
    let port = fields[3].rsplit_once(':')?.1.parse().ok()?;
    let users = fields[5..].join(" ");
    Some(Some(Listener {
        port,
        processes: parse_ss_users(&users),
    }))
}

/// `users:(("sshd",pid=123,fd=3),("sshd",pid=124,fd=3))` → `[("sshd", 123), ("sshd", 124)]`.
fn parse_ss_users(users: &str) -> Vec<(String, u32)> {
    let Some(list) = users.strip_prefix("users:(") else {
        return Vec::new();
    };
    list.split("),(")
        .filter_map(|entry| {
            let entry = entry.trim_start_matches('(').trim_end_matches(')');
            let (name, rest) = entry.strip_prefix('"')?.split_once('"')?;
            let pid = rest
                .split(',')
                .find_map(|part| part.strip_prefix("pid="))?
                .parse()
                .ok()?;
            Some((name.to_string(), pid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Debian 12 lab host prints (trimmed).
    pub(crate) const DEBIAN: &str = r#"now=1700000000.250000000
uname_s=Linux
uname_m=x86_64
uname_r=6.1.0-28-amd64
hostname=h1
uid=0
user=root
sudo_user=
cpus=4
os_pretty="Debian GNU/Linux 12 (bookworm)"
systemd_booted=1
pid1=systemd
meminfo.MemTotal=8039124
meminfo.MemAvailable=6000000
meminfo.SwapTotal=0
disk_path=/var/lib
df=overlay 41152736 9012345 30000000 24% /
addr=1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
addr=1: lo    inet6 ::1/128 scope host noprefixroute \       valid_lft forever preferred_lft forever
addr=2: eth0@if7    inet 10.88.0.11/24 brd 10.88.0.255 scope global eth0\       valid_lft forever preferred_lft forever
addr=2: eth0@if7    inet6 fe80::1/64 scope link \       valid_lft forever preferred_lft forever
route=1.1.1.1 via 10.88.0.1 dev eth0 src 10.88.0.11 uid 0 \    cache
listen=0016
listen=0016
listen=1A0B
ss=State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
ss=LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=200,fd=3))
ss=LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=200,fd=4))
ss=LISTEN 0      4096               *:6667            *:*    users:(("kube-apiserver",pid=412,fd=7),("kube-apiserver",pid=413,fd=7))
cgroup.200=/system.slice/ssh.service
cgroup.412=/system.slice/kube-apiserver.service
unit.kube-apiserver.service=active
unit.etcd.service=inactive
tool.iptables=/usr/sbin/iptables
tool.iptables-restore=/usr/sbin/iptables-restore
tool.ip=/usr/sbin/ip
tool.sha256sum=/usr/bin/sha256sum
tool.systemctl=/usr/bin/systemctl
tool.mount=/usr/bin/mount
ip_forward=0
ip_forward_writable=1
overlay_loaded=1
overlay_module=0
cgroup2_controllers=cpuset cpu io memory pids
cgroup_mount=cgroup2 /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime
libc_getconf=glibc 2.36
default_route=default via 10.88.0.1 dev eth0 proto static 
default_route_checked=1
now_end=1700000000.750000000
probe_end=1
"#;

    #[test]
    fn reads_every_fact_of_a_debian_host() {
        let probe = parse(DEBIAN);
        assert!(probe.complete);
        assert_eq!(probe.unparsed, Vec::<String>::new());
        assert_eq!(
            probe.host_time,
            Some(Duration::new(1_700_000_000, 250_000_000))
        );
        assert_eq!(probe.uname_m.as_deref(), Some("x86_64"));
        assert_eq!(
            probe.os_pretty.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(probe.cpus, Some(4));
        assert_eq!(probe.uid, Some(0));
        assert_eq!(probe.user.as_deref(), Some("root"));
        assert_eq!(probe.sudo_user, None, "no sudo: an empty SUDO_USER");
        assert_eq!(
            parse("sudo_user=ops\n").sudo_user.as_deref(),
            Some("ops"),
            "through sudo: the ssh user"
        );
        assert_eq!(probe.systemd_booted, Some(true));
        assert_eq!(probe.mem_total_kib, Some(8_039_124));
        assert_eq!(probe.swap_total_kib, Some(0));
        assert_eq!(
            probe.disk,
            Some(DiskFree {
                available_kib: 30_000_000,
                mount: "/".into()
            })
        );
        assert_eq!(probe.addresses.len(), 4);
        assert_eq!(
            probe.addresses[2],
            InterfaceAddress {
                interface: "eth0".into(),
                ip: "10.88.0.11".parse().unwrap(),
                prefix: 24
            }
        );
        assert_eq!(
            probe.routes,
            [RouteSource {
                ip: "10.88.0.11".parse().unwrap(),
                device: Some("eth0".into())
            }]
        );
        assert_eq!(probe.listening, BTreeSet::from([22, 0x1A0B]));
        assert_eq!(probe.listeners.len(), 3);
        assert_eq!(
            probe.listeners[2].processes,
            [
                ("kube-apiserver".to_string(), 412),
                ("kube-apiserver".to_string(), 413)
            ]
        );
        assert_eq!(probe.cgroups[&200], "/system.slice/ssh.service");
        assert_eq!(probe.unit_states["etcd.service"], "inactive");
        assert_eq!(probe.tools.len(), 6);
        assert_eq!(probe.ip_forward, Some(false));
        assert_eq!(probe.ip_forward_writable, Some(true));
        assert_eq!(probe.overlay_loaded, Some(true));
        assert_eq!(
            probe.cgroup2_controllers.as_deref(),
            Some(&["cpuset", "cpu", "io", "memory", "pids"].map(String::from)[..])
        );
        assert_eq!(probe.cgroup_mounts[0].fstype, "cgroup2");
        assert_eq!(probe.libc_getconf.as_deref(), Some("glibc 2.36"));
        assert_eq!(
            probe.default_routes,
            [DefaultRoute {
                via: Some("10.88.0.1".parse().unwrap()),
                device: Some("eth0".into())
            }]
        );
        assert!(probe.default_routes_checked);
    }

    #[test]
    fn libc_lines_of_glibc_musl_and_none() {
        let probe = parse(
            "libc_getconf=\nlibc_ldd=musl libc (x86_64)\nmusl_loader=/lib/ld-musl-x86_64.so.1\n",
        );
        assert_eq!(probe.unparsed, Vec::<String>::new());
        assert_eq!(probe.libc_getconf, None);
        assert_eq!(probe.libc_ldd.as_deref(), Some("musl libc (x86_64)"));
        assert_eq!(probe.musl_loaders, ["/lib/ld-musl-x86_64.so.1"]);
    }

    #[test]
    fn default_routes_with_and_without_gateway() {
        assert_eq!(
            parse_default_route("default dev wg0 scope link"),
            Some(DefaultRoute {
                via: None,
                device: Some("wg0".into())
            })
        );
        assert_eq!(
            parse_default_route("default via fe80::1 dev ens3 proto ra metric 1024 pref medium"),
            Some(DefaultRoute {
                via: Some("fe80::1".parse().unwrap()),
                device: Some("ens3".into())
            })
        );
        assert_eq!(parse_default_route("10.0.0.0/8 dev eth1"), None);
        // Checked and none found: an empty list that means "no default route".
        let probe = parse("default_route_checked=1\n");
        assert!(probe.default_routes_checked && probe.default_routes.is_empty());
    }

    #[test]
    fn garbage_costs_only_the_facts_it_touches() {
        let text = "Welcome to node1!\r\nnow=yesterday\nuname_s=Linux\nmeminfo.MemTotal=lots\n\
                    df=Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                    addr=2: eth0 inet 10.0.0.300/24 scope global\nlisten=zz\n\
                    ss=LISTEN 0 128 nonsense\ncgroup.x=/a\nroute=unreachable\n=\n\u{0}\u{1}binary\n";
        let probe = parse(text);
        assert!(!probe.complete);
        assert_eq!(probe.uname_s.as_deref(), Some("Linux"));
        assert_eq!(probe.host_time, None);
        assert_eq!(probe.mem_total_kib, None);
        assert_eq!(probe.disk, None);
        assert!(probe.addresses.is_empty());
        assert!(probe.listening.is_empty());
        assert!(probe.listeners.is_empty());
        assert!(probe.cgroups.is_empty());
        assert!(probe.routes.is_empty());
        assert_eq!(probe.unparsed.len(), 11, "{:?}", probe.unparsed);
        assert_eq!(probe.unparsed[0], "Welcome to node1!");
    }

    #[test]
    fn empty_output_is_incomplete_and_knows_nothing() {
        assert_eq!(parse(""), Probe::default());
    }

    #[test]
    fn epoch_with_and_without_nanoseconds() {
        assert_eq!(parse_epoch("12.5"), Some(Duration::new(12, 500_000_000)));
        assert_eq!(parse_epoch("12.000000001"), Some(Duration::new(12, 1)));
        assert_eq!(parse_epoch("12.N"), Some(Duration::new(12, 0)));
        assert_eq!(parse_epoch("12.%N"), Some(Duration::new(12, 0)));
        assert_eq!(parse_epoch("12"), Some(Duration::new(12, 0)));
        assert_eq!(parse_epoch("-3"), None);
        assert_eq!(parse_epoch(""), None);
    }

    #[test]
    fn df_with_spaces_in_the_mount_point() {
        assert_eq!(
            parse_df("/dev/sdb1 100 50 50 50% /mnt/my disk"),
            Some(DiskFree {
                available_kib: 50,
                mount: "/mnt/my disk".into()
            })
        );
        assert_eq!(parse_df("/dev/sdb1 100 50"), None);
    }

    #[test]
    fn ss_addresses_of_every_shape() {
        for (local, port) in [
            ("0.0.0.0:22", 22),
            ("[::]:2379", 2379),
            ("*:6443", 6443),
            ("127.0.0.53%lo:53", 53),
            ("[::ffff:10.0.0.1]:10250", 10250),
        ] {
            let line = format!("LISTEN 0 128 {local} 0.0.0.0:*");
            let listener = parse_ss(&line).unwrap().unwrap();
            assert_eq!(listener.port, port, "{local}");
            assert!(listener.processes.is_empty());
        }
    }

    #[test]
    fn ipv6_route_source() {
        assert_eq!(
            parse_route(
                "2001:4860:4860::8888 from :: via fe80::1 dev ens3 proto ra src 2001:db8::5 metric 100 pref medium"
            ),
            Some(RouteSource {
                ip: "2001:db8::5".parse().unwrap(),
                device: Some("ens3".into())
            })
        );
    }
}
