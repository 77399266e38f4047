//! A host's pre-install record: what it looked like before `up` first changed it, so `reset` can
//! say what is still different once it has removed everything ilha put there.
//!
//! The record is the raw output of [`capture_script`] (sections of lines under `== NAME ==`
//! headers), kept on the operator's side in `<state_dir>/records/<host>.txt`. [`HostRecord::parse`]
//! normalises it (no counters, no timestamps, no per-session units) so that two captures of an
//! unchanged host compare equal, and [`HostRecord::differences`] lists what changed, one line
//! per rule, interface, route, unit, mount, setting or path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::teardown::{MOUNT_ROOTS, OWNED_DIRS, PARENT_DIRS, SHARED_DIRS};
use crate::ssh::{Fleet, Session};

/// Kernel settings ilha or Kubernetes components change: ilha sets `ip_forward` and the kubelet's
/// kernel defaults; kube-proxy sets `route_localnet`; the kubelet sets the `vm`/`kernel` ones
/// where it may.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    // The rest of what the kubelet's protectKernelDefaults requires, which ilha sets
    // (hardening::KERNEL_DEFAULTS).
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// Prints every section of the record. Read-only; each probe that fails leaves its section empty
/// rather than failing the whole capture (a host without ip6tables simply has no ip6tables rules).
pub fn capture_script() -> String {
    let words = |list: &[&str]| {
        list.iter()
            .map(|p| crate::ssh::shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut watched: Vec<&str> = Vec::new();
    for path in SHARED_DIRS.iter().chain(PARENT_DIRS).chain(OWNED_DIRS) {
        if !watched.contains(path) {
            watched.push(path);
        }
    }
    let mount_cases = MOUNT_ROOTS
        .iter()
        .map(|root| format!("{root}|{root}/*"))
        .collect::<Vec<_>>()
        .join("|");
    format!(
        r#"set +e
export LC_ALL=C
section() {{ printf '== %s ==\n' "$1"; }}
section identity
printf 'machine-id %s\n' "$(cat /etc/machine-id 2>/dev/null)"
section units
systemctl list-unit-files --no-legend --no-pager 2>/dev/null
section links
ip -o link show 2>/dev/null
section routes
ip -4 route show table main 2>/dev/null
for family in iptables ip6tables; do
  if command -v "$family-nft-save" >/dev/null 2>&1 && command -v "$family-legacy-save" >/dev/null 2>&1; then
    for variant in nft legacy; do
      section "$family-$variant"
      "$family-$variant-save" 2>/dev/null
    done
  elif command -v "$family-save" >/dev/null 2>&1; then
    section "$family"
    "$family-save" 2>/dev/null
  fi
done
if command -v nft >/dev/null 2>&1; then
  section nft
  nft list tables 2>/dev/null
fi
section mounts
while read -r _ _ _ _ target _; do
  target=$(printf '%b' "$target")
  case "$target" in {mount_cases}) printf '%s\n' "$target" ;; esac
done < /proc/self/mountinfo
section sysctl
for key in {sysctls}; do
  value=$(sysctl -n "$key" 2>/dev/null) && printf '%s = %s\n' "$key" "$value"
done
section paths
for path in {watched}; do
  if [ -e "$path" ] || [ -L "$path" ]; then
    printf '%s\n' "$path"
    if [ -d "$path" ] && [ ! -L "$path" ]; then
      find "$path" -mindepth 1 -maxdepth 1 -print 2>/dev/null
    fi
  fi
done
exit 0
"#,
        sysctls = words(SYSCTLS),
        watched = words(&watched),
    )
}

/// What one section holds, which decides how its lines read in a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Units,
    Links,
    Routes,
    /// `iptables-nft nat`, `ip6tables filter`, ...
    Iptables,
    Nft,
    Mounts,
    Sysctl,
    Paths,
    Other,
}

impl Kind {
    fn of(section: &str) -> Kind {
        match section {
            "units" => Kind::Units,
            "links" => Kind::Links,
            "routes" => Kind::Routes,
            "nft" => Kind::Nft,
            "mounts" => Kind::Mounts,
            "sysctl" => Kind::Sysctl,
            "paths" => Kind::Paths,
            s if s.starts_with("iptables") || s.starts_with("ip6tables") => Kind::Iptables,
            _ => Kind::Other,
        }
    }

    fn noun(self, line: &str) -> &'static str {
        match self {
            Kind::Units => "unit file",
            Kind::Links => "interface",
            Kind::Routes => "route",
            Kind::Iptables if line.starts_with(':') => "chain",
            Kind::Iptables => "rule",
            Kind::Nft => "nft table",
            Kind::Mounts => "mount",
            Kind::Sysctl => "setting",
            Kind::Paths => "path",
            Kind::Other => "line",
        }
    }

    /// Lines that are one setting of a named thing: a change shows as one difference.
    fn key(self, line: &str) -> Option<&str> {
        match self {
            Kind::Units => line.split_whitespace().next(),
            Kind::Sysctl => line.split_once(" = ").map(|(k, _)| k),
            Kind::Iptables if line.starts_with(':') => line.split_whitespace().next(),
            _ => None,
        }
    }
}

/// A host's state, normalised for comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRecord {
    /// `/etc/machine-id`: tells a rebuilt host from the one recorded.
    pub machine_id: String,
    sections: BTreeMap<String, BTreeSet<String>>,
}

/// `iptables-save` lines as a record keeps them, or `None` for a line that says nothing about the
/// rules: comments, `COMMIT`, and built-in chains at their default `ACCEPT` policy (an empty
/// table is the same as no table: iptables-nft makes tables on first use).
fn iptables_line(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
        return None;
    }
    // `iptables-save -c` puts counters first.
    let line = match line.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(line, |(_, rule)| rule),
        None => line,
    };
    if let Some(chain) = line.strip_prefix(':') {
        let mut words = chain.split_whitespace();
        let name = words.next()?;
        let policy = words.next().unwrap_or("-");
        if policy == "ACCEPT" {
            return None;
        }
        return Some(format!(":{name} {policy}"));
    }
    Some(line.to_string())
}

impl HostRecord {
    /// Reads a capture; `origin` names it in errors (`records/h1.txt`).
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<HostRecord> {
        let mut record = HostRecord::default();
        let mut raw: Option<String> = None;
        // The iptables table currently open inside an iptables section.
        let mut table: Option<String> = None;
        let mut seen_section = false;
        for (number, line) in text.lines().enumerate() {
            if let Some(name) = line
                .strip_prefix("== ")
                .and_then(|rest| rest.strip_suffix(" =="))
            {
                raw = Some(name.to_string());
                table = None;
                seen_section = true;
                if Kind::of(name) != Kind::Iptables {
                    record.sections.entry(name.to_string()).or_default();
                }
                continue;
            }
            let Some(section) = raw.as_deref() else {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                bail!(
                    "{origin}:{}: `{}` comes before any `== SECTION ==` line: not a host record",
                    number + 1,
                    line.chars().take(80).collect::<String>()
                );
            };
            let kind = Kind::of(section);
            let normalised = match kind {
                Kind::Iptables => {
                    if let Some(name) = line.trim().strip_prefix('*') {
                        table = Some(name.to_string());
                        continue;
                    }
                    let Some(rule) = iptables_line(line) else {
                        continue;
                    };
                    let Some(table) = &table else {
                        bail!(
                            "{origin}:{}: iptables line outside a `*table`: {rule}",
                            number + 1
                        );
                    };
                    record
                        .sections
                        .entry(format!("{section} {table}"))
                        .or_default()
                        .insert(rule);
                    continue;
                }
                Kind::Units => {
                    // `NAME STATE [PRESET]`; transient units (sessions, containers' scopes) come
                    // and go by themselves.
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some(_), Some("transient")) | (None, _) => continue,
                        (Some(name), state) => format!("{name} {}", state.unwrap_or("")),
                    }
                }
                Kind::Links => {
                    // `2: eth0@if7: <BROADCAST,...> mtu ...`: the name, without its peer.
                    let Some(name) = line.split(": ").nth(1) else {
                        continue;
                    };
                    name.split('@').next().unwrap_or(name).to_string()
                }
                Kind::Sysctl => match line.split_once('=') {
                    Some((key, value)) => format!(
                        "{} = {}",
                        key.trim(),
                        value.split_whitespace().collect::<Vec<_>>().join(" ")
                    ),
                    None => continue,
                },
                Kind::Nft => {
                    // iptables-nft's own tables are in the iptables sections, rule by rule.
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["table", "ip" | "ip6" | "arp" | "bridge", name]
                            if matches!(
                                *name,
                                "filter" | "nat" | "mangle" | "raw" | "security" | "broute"
                            ) =>
                        {
                            continue;
                        }
                        [] => continue,
                        _ => words.join(" "),
                    }
                }
                Kind::Other if section == "identity" => {
                    if let Some(id) = line.strip_prefix("machine-id ") {
                        record.machine_id = id.trim().to_string();
                    }
                    continue;
                }
                Kind::Routes | Kind::Mounts | Kind::Paths | Kind::Other => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if words.is_empty() {
                        continue;
                    }
                    if kind == Kind::Routes {
                        words.join(" ")
                    } else {
                        line.trim_end().to_string()
                    }
                }
            };
            record
                .sections
                .entry(section.to_string())
                .or_default()
                .insert(normalised);
        }
        if !seen_section {
            bail!("{origin}: empty: not a host record");
        }
        record.sections.remove("identity");
        Ok(record)
    }

    /// The lines of one section (normalised), empty when the record has none.
    pub fn section(&self, name: &str) -> impl Iterator<Item = &str> {
        self.sections
            .get(name)
            .into_iter()
            .flat_map(|lines| lines.iter().map(String::as_str))
    }

    /// Paths ilha may touch that existed when the record was taken.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.section("paths")
    }

    /// Mount points under the container and kubelet directories at the record.
    pub fn mounts(&self) -> impl Iterator<Item = &str> {
        self.section("mounts")
    }

    pub fn links(&self) -> impl Iterator<Item = &str> {
        self.section("links")
    }

    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.section("routes")
    }

    /// `(key, value)` of each recorded kernel setting.
    pub fn sysctls(&self) -> impl Iterator<Item = (&str, &str)> {
        self.section("sysctl")
            .filter_map(|line| line.split_once(" = "))
    }

    /// What `after` has that `before` had not, and the reverse, section by section; a unit whose
    /// state changed or a setting whose value changed is one difference.
    pub fn differences(before: &HostRecord, after: &HostRecord) -> Vec<Difference> {
        let empty = BTreeSet::new();
        let names: BTreeSet<&String> = before
            .sections
            .keys()
            .chain(after.sections.keys())
            .collect();
        let mut out = Vec::new();
        for name in names {
            let kind = Kind::of(name);
            let old = before.sections.get(name).unwrap_or(&empty);
            let new = after.sections.get(name).unwrap_or(&empty);
            let mut missing: Vec<&String> = old.difference(new).collect();
            let mut added: Vec<&String> = new.difference(old).collect();
            // Pair lines about the same key into one "changed".
            let mut changed = Vec::new();
            missing.retain(|line| {
                let Some(key) = kind.key(line) else {
                    return true;
                };
                match added.iter().position(|a| kind.key(a) == Some(key)) {
                    Some(index) => {
                        changed.push(((*line).clone(), added.remove(index).clone()));
                        false
                    }
                    None => true,
                }
            });
            if kind == Kind::Sysctl {
                // A setting that appeared is a kernel module loaded since (br_netfilter):
                // reset does not unload modules.
                added.clear();
            }
            for line in missing {
                out.push(Difference {
                    section: name.clone(),
                    change: Change::Missing(line.clone()),
                    noun: kind.noun(line),
                });
            }
            for line in added {
                out.push(Difference {
                    section: name.clone(),
                    change: Change::Added(line.clone()),
                    noun: kind.noun(line),
                });
            }
            for (before, after) in changed {
                out.push(Difference {
                    section: name.clone(),
                    noun: kind.noun(&before),
                    change: Change::Changed { before, after },
                });
            }
        }
        out
    }
}

/// One way a host differs from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `units`, `iptables-nft nat`, `paths`, ...
    pub section: String,
    pub change: Change,
    noun: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// On the host now, not in the record.
    Added(String),
    /// In the record, gone from the host.
    Missing(String),
    /// The same unit, setting or chain, in another state.
    Changed { before: String, after: String },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = &self.section;
        let noun = self.noun;
        match &self.change {
            Change::Added(line) => write!(f, "{section}: {noun} added since the record: {line}"),
            Change::Missing(line) => {
                write!(f, "{section}: {noun} in the record, missing now: {line}")
            }
            Change::Changed { before, after } => write!(
                f,
                "{section}: {noun} changed since the record: `{before}`, now `{after}`"
            ),
        }
    }
}

/// The copy of its record each host keeps (inside ilha's own directory, so `reset` removes it).
pub const HOST_COPY: &str = "/var/lib/ilha/record.txt";

/// Where the record of `host` is kept.
pub fn record_path(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join("records").join(format!("{host}.txt"))
}

/// The stored record of `host`, `None` if it has none (installed before records existed).
pub fn load(state_dir: &Path, host: &str) -> anyhow::Result<Option<HostRecord>> {
    let path = record_path(state_dir, host);
    match std::fs::read_to_string(&path) {
        Ok(text) => HostRecord::parse(&path.display().to_string(), &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Captures the host's state now: the raw text and its parsed form.
pub async fn capture(session: &Session) -> anyhow::Result<(String, HostRecord)> {
    let output = session
        .run_script("capture host record", &capture_script())
        .await?;
    let record = HostRecord::parse(&format!("{}: capture", session.name()), &output.stdout)?;
    Ok((output.stdout, record))
}

/// Records the state of `hosts` (in parallel) before `up` first changes them, in
/// `<state_dir>/records/<host>.txt`. A record already there for the same machine is kept: the
/// first one is the state before ilha, whatever happened since (a failed `up`, a `reset` that
/// left something). A host rebuilt under the same name (another machine-id) is recorded anew.
pub async fn record_before_install(
    fleet: &Fleet,
    hosts: &[String],
    state_dir: &Path,
) -> anyhow::Result<()> {
    let dir = state_dir.join("records");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = fleet
        .each(async |target, session| {
            if !hosts.contains(&target.name) {
                return Ok(());
            }
            let (raw, now) = capture(session).await?;
            let path = record_path(state_dir, &target.name);
            let text = match load(state_dir, &target.name)? {
                Some(kept) if kept.machine_id == now.machine_id => {
                    tracing::debug!(host = %target.name, "pre-install record kept");
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                _ => {
                    let text = format!(
                        "# ilha: {}'s state before the install, compared by `ilha reset`.\n{raw}",
                        target.name
                    );
                    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
                        .with_context(|| format!("writing {}", path.display()))?;
                    text
                }
            };
            // A copy on the host, for `ilha state recover` when the state directory is lost.
            session
                .upload(
                    crate::ssh::UploadSource::Bytes(text.as_bytes()),
                    HOST_COPY,
                    0o600,
                )
                .await?;
            Ok::<(), anyhow::Error>(())
        })
        .await;
    let failures: Vec<String> = report
        .failures()
        .map(|(host, e)| format!("{host}: {e:#}"))
        .collect();
    if !failures.is_empty() {
        bail!(
            "recording the hosts' state before the install:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bookworm host of the lab before `up`, as the capture script prints it (trimmed).
    const BEFORE: &str = "\
== identity ==
machine-id 4f1c0c7d2e8a4b7a9d2f0e6c1b3a5d77
== units ==
ssh.service                            enabled         enabled
getty@.service                         enabled         enabled
session-3.scope                        transient       -
systemd-journald.service               static          -
== links ==
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0@if12: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 2a:01:33:aa:10:02 brd ff:ff:ff:ff:ff:ff link-netnsid 0
3: keep0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 7e:2c:9d:31:4f:1a brd ff:ff:ff:ff:ff:ff
== routes ==
default via 10.88.0.1 dev eth0 
10.88.0.0/24 dev eth0 proto kernel scope link src 10.88.0.12 
== iptables-nft ==
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Mar  3 10:00:00 2026
*filter
:INPUT ACCEPT [120:9000]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [100:8000]
:ILHA-GUARD - [0:0]
:TEST-KEEP - [0:0]
-A INPUT -j TEST-KEEP
-A FORWARD -o eth0 -j ILHA-GUARD
-A OUTPUT -o eth0 -j ILHA-GUARD
-A ILHA-GUARD -d 10.88.0.0/24 -j RETURN
-A ILHA-GUARD -p tcp -j REJECT --reject-with tcp-reset
-A TEST-KEEP -p tcp -m tcp --dport 9999 -j ACCEPT
COMMIT
# Completed on Tue Mar  3 10:00:00 2026
== iptables-legacy ==
== ip6tables-nft ==
== ip6tables-legacy ==
== mounts ==
/var/lib/containerd
== sysctl ==
net.ipv4.ip_forward = 0
net.ipv4.conf.all.route_localnet = 0
kernel.panic = 0
== paths ==
/usr/local/bin
/usr/local/sbin
/etc/systemd/system
/etc/systemd/system/multi-user.target.wants
/etc/systemd/system/sshd.service
/var/lib/containerd
";

    fn before() -> HostRecord {
        HostRecord::parse("records/h2.txt", BEFORE).unwrap()
    }

    #[test]
    fn parsing_keeps_what_matters_and_drops_noise() {
        let r = before();
        assert_eq!(r.machine_id, "4f1c0c7d2e8a4b7a9d2f0e6c1b3a5d77");
        let units: Vec<&str> = r.section("units").collect();
        assert!(units.contains(&"ssh.service enabled"), "{units:?}");
        assert!(
            !units.iter().any(|u| u.starts_with("session-")),
            "{units:?}"
        );
        assert_eq!(r.links().collect::<Vec<_>>(), ["eth0", "keep0", "lo"]);
        assert!(
            r.routes()
                .any(|l| l == "10.88.0.0/24 dev eth0 proto kernel scope link src 10.88.0.12")
        );
        let filter: Vec<&str> = r.section("iptables-nft filter").collect();
        // Counters, comments, COMMIT and ACCEPT policies of built-in chains are gone.
        assert_eq!(
            filter,
            [
                "-A FORWARD -o eth0 -j ILHA-GUARD",
                "-A ILHA-GUARD -d 10.88.0.0/24 -j RETURN",
                "-A ILHA-GUARD -p tcp -j REJECT --reject-with tcp-reset",
                "-A INPUT -j TEST-KEEP",
                "-A OUTPUT -o eth0 -j ILHA-GUARD",
                "-A TEST-KEEP -p tcp -m tcp --dport 9999 -j ACCEPT",
                ":ILHA-GUARD -",
                ":TEST-KEEP -",
            ]
        );
        assert_eq!(r.sysctls().next(), Some(("kernel.panic", "0")));
        assert!(r.paths().any(|p| p == "/var/lib/containerd"));
        assert_eq!(r.mounts().collect::<Vec<_>>(), ["/var/lib/containerd"]);
    }

    #[test]
    fn the_same_host_captured_again_has_no_differences() {
        // Another session, other counters, another timestamp: nothing that matters changed.
        let again = BEFORE
            .replace("session-3.scope", "session-9.scope")
            .replace("[120:9000]", "[4521:340110]")
            .replace("10:00:00", "11:42:17")
            .replace("eth0@if12", "eth0@if31");
        let diff = HostRecord::differences(&before(), &HostRecord::parse("now", &again).unwrap());
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn leftovers_and_losses_are_named_by_section() {
        let after = BEFORE
            .replace(
                "COMMIT\n# Completed",
                "COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n# Completed",
            )
            .replace("-A INPUT -j TEST-KEEP\n", "")
            .replace("3: keep0:", "3: cni0:")
            .replace("net.ipv4.ip_forward = 0", "net.ipv4.ip_forward = 1")
            .replace(
                "ssh.service                            enabled ",
                "ssh.service                            disabled",
            )
            .replace(
                "sshd.service\n/var/lib/containerd\n",
                "sshd.service\n/var/lib/containerd\n/var/lib/containerd/io.containerd.content.v1.content\n",
            );
        let after = HostRecord::parse("now", &after).unwrap();
        let lines: Vec<String> = HostRecord::differences(&before(), &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "iptables-nft filter: rule in the record, missing now: -A INPUT -j TEST-KEEP",
            "iptables-nft nat: rule added since the record: -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "iptables-nft nat: chain added since the record: :KUBE-SERVICES -",
            "links: interface in the record, missing now: keep0",
            "links: interface added since the record: cni0",
            "paths: path added since the record: /var/lib/containerd/io.containerd.content.v1.content",
            "sysctl: setting changed since the record: `net.ipv4.ip_forward = 0`, now `net.ipv4.ip_forward = 1`",
            "units: unit file changed since the record: `ssh.service enabled`, now `ssh.service disabled`",
        ];
        for line in expected {
            assert!(
                lines.contains(&line.to_string()),
                "missing {line:?} in\n{lines:#?}"
            );
        }
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    }

    #[test]
    fn a_policy_other_than_accept_is_kept() {
        let text = "== iptables ==\n*filter\n:FORWARD DROP [3:180]\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        let r = HostRecord::parse("x", text).unwrap();
        assert_eq!(
            r.section("iptables filter").collect::<Vec<_>>(),
            [":FORWARD DROP"]
        );
        let opened =
            HostRecord::parse("y", &text.replace("FORWARD DROP", "FORWARD ACCEPT")).unwrap();
        let diff = HostRecord::differences(&r, &opened);
        assert_eq!(
            diff[0].to_string(),
            "iptables filter: chain in the record, missing now: :FORWARD DROP"
        );
    }

    #[test]
    fn a_setting_that_appears_later_is_not_a_leftover() {
        let r = before();
        let later = BEFORE.replace(
            "kernel.panic = 0",
            "kernel.panic = 0\nnet.bridge.bridge-nf-call-iptables = 1",
        );
        let diff = HostRecord::differences(&r, &HostRecord::parse("now", &later).unwrap());
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn text_that_is_not_a_record_is_refused_with_its_line() {
        let err = HostRecord::parse("state/records/h1.txt", "# header\nhello\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("state/records/h1.txt:2: `hello`"),
            "{err}"
        );
        assert!(HostRecord::parse("empty.txt", "").is_err());
        let err = HostRecord::parse("r", "== iptables ==\n-A INPUT -j X\n").unwrap_err();
        assert!(
            err.to_string().contains("r:2: iptables line outside"),
            "{err}"
        );
    }

    #[test]
    fn kube_proxy_nft_tables_are_kept_and_iptables_own_are_not() {
        let r = HostRecord::parse(
            "x",
            "== nft ==\ntable ip filter\ntable ip6 nat\ntable ip kube-proxy\ntable inet mine\n",
        )
        .unwrap();
        assert_eq!(
            r.section("nft").collect::<Vec<_>>(),
            ["table inet mine", "table ip kube-proxy"]
        );
    }

    #[test]
    fn the_capture_script_is_valid_bash_and_watches_ilha_paths() {
        let script = capture_script();
        crate::cluster::tests_support::assert_bash_syntax(&script);
        for path in ["'/var/lib/kubelet'", "'/usr/local/bin'", "'/etc/cni'"] {
            assert!(script.contains(path), "{path} not watched");
        }
        assert!(script.contains("/var/lib/kubelet|/var/lib/kubelet/*"));
    }

    /// reset puts back what ilha changes: every setting the kubelet's kernel defaults need.
    #[test]
    fn every_kernel_default_ilha_sets_is_recorded() {
        for (key, _) in crate::cluster::hardening::KERNEL_DEFAULTS {
            assert!(SYSCTLS.contains(key), "{key} missing from record::SYSCTLS");
        }
        assert!(SYSCTLS.contains(&"net.ipv4.ip_forward"));
    }

    #[test]
    fn records_live_under_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "h1").unwrap().is_none());
        let path = record_path(dir.path(), "h1");
        assert!(path.ends_with("records/h1.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, BEFORE).unwrap();
        assert_eq!(load(dir.path(), "h1").unwrap(), Some(before()));
        std::fs::write(&path, "garbage\n").unwrap();
        let err = load(dir.path(), "h1").unwrap_err().to_string();
        assert!(err.contains("records/h1.txt:1"), "{err}");
    }
}
