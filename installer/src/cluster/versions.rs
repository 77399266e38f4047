//! The version guard: before anything changes, what runs on every host (Kubernetes, etcd,
//! containerd) is compared with what the bundle would install, and a downgrade or a skipped
//! minor is refused with both versions named. Also what each host has of the bundle's binaries,
//! so the `binaries` step can stage changed ones beside the live ones (see
//! [`super::steps::stage_binaries`]) and each restarting step switches its own.
//!
//! Versions on the hosts are what the installed binaries say (`BINARY --version`): true whatever
//! installed them (an older ilha, or a half-finished run). Versions in the bundle: Kubernetes'
//! from the bundle's signed cluster spec (as resolved with the config); etcd's and containerd's
//! from the bundle's own binaries run here with `--version`, only when a host already runs them
//! (the index records no per-binary version, and a binary's own answer cannot disagree with what
//! the hosts will report once it is installed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use super::bundle::InstallBundle;
use super::paths::BIN_DIR;
use super::say;
use crate::config::KubeVersion;
use crate::ssh::{Fleet, shell_quote};

/// What each host's `binaries` step last put in place: `sha256sum` lines (`HEX  PATH`) of the
/// bundle's binaries for that host. Lets a later run tell unchanged binaries from changed ones
/// without hashing hundreds of MiB on every host.
pub const BINARIES_RECORD: &str = "/var/lib/ilha/binaries";

/// Suffix of a binary staged next to the live one until its service restarts.
pub const STAGED_SUFFIX: &str = ".ilha-new";

/// A component whose version the guard compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Kubernetes,
    Etcd,
    Containerd,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Kubernetes => "Kubernetes",
            Component::Etcd => "etcd",
            Component::Containerd => "containerd",
        }
    }

    /// How many minors one upgrade may go up (`None`: any).
    fn minor_step(self) -> Option<u64> {
        match self {
            // Kubernetes' skew policy and etcd's upgrade guides: one minor at a time.
            Component::Kubernetes | Component::Etcd => Some(1),
            Component::Containerd => None,
        }
    }
}

/// The binaries the guard asks, with the component each belongs to. Every Kubernetes binary is
/// asked: after an interrupted upgrade they can differ on one host.
const GUARDED: &[(&str, Component)] = &[
    ("etcd", Component::Etcd),
    ("kube-apiserver", Component::Kubernetes),
    ("kube-controller-manager", Component::Kubernetes),
    ("kube-scheduler", Component::Kubernetes),
    ("kubelet", Component::Kubernetes),
    ("kube-proxy", Component::Kubernetes),
    ("containerd", Component::Containerd),
];

/// `MAJOR.MINOR.PATCH`, without pre-release or distribution suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// The first `[v]X.Y.Z` word of a `--version` output: `etcd Version: 3.4.23`,
    /// `Kubernetes v1.20.2`, `containerd github.com/containerd/containerd 1.6.20~ds1 …`.
    pub fn find(text: &str) -> Option<Version> {
        text.split_whitespace().find_map(|word| {
            let rest = word.strip_prefix('v').unwrap_or(word);
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let core: &str = rest
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?;
            let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
            let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            Some(Version {
                major,
                minor,
                patch,
            })
        })
    }

    fn of(kube: &KubeVersion) -> Version {
        Version {
            major: kube.major,
            minor: kube.minor,
            patch: kube.patch,
        }
    }

    fn display(self, component: Component) -> String {
        match component {
            Component::Kubernetes => format!("v{}.{}.{}", self.major, self.minor, self.patch),
            _ => format!("{}.{}.{}", self.major, self.minor, self.patch),
        }
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The bundle's version could not be read (why): nothing to compare with what runs.
    Unknown(String),
    /// To an older major or minor: never.
    Downgrade,
    /// To an older patch of the same minor: only with `--allow-downgrade`.
    PatchDowngrade,
    /// More than one minor up at once.
    MinorSkip,
    /// Another major version.
    MajorChange,
}

/// What the bundle would do to one binary on one host, when allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Upgrade,
    /// A patch downgrade the operator allowed.
    PatchDowngrade,
}

/// The rules, for one component on one host.
pub fn judge(
    component: Component,
    running: Version,
    bundle: Version,
    allow_downgrade: bool,
) -> Result<Change, Rule> {
    use std::cmp::Ordering::*;
    if running.major != bundle.major {
        return match (component, bundle.major.cmp(&running.major)) {
            (_, Less) => Err(Rule::Downgrade),
            // containerd 1.x to 2.x is an ordinary upgrade; Kubernetes and etcd have no such path.
            (Component::Containerd, _) => Ok(Change::Upgrade),
            _ => Err(Rule::MajorChange),
        };
    }
    match bundle.minor.cmp(&running.minor) {
        Less => Err(Rule::Downgrade),
        Greater => match component.minor_step() {
            Some(step) if bundle.minor - running.minor > step => Err(Rule::MinorSkip),
            _ => Ok(Change::Upgrade),
        },
        Equal => match bundle.patch.cmp(&running.patch) {
            Equal => Ok(Change::Same),
            Greater => Ok(Change::Upgrade),
            Less if allow_downgrade => Ok(Change::PatchDowngrade),
            Less => Err(Rule::PatchDowngrade),
        },
    }
}

/// One refused change, worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub host: String,
    pub binary: String,
    pub component: Component,
    pub running: Version,
    /// `None` when [`Rule::Unknown`].
    pub bundle: Option<Version>,
    pub rule: Rule,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.component;
        let name = c.name();
        let running = self.running.display(c);
        let Some(bundle) = self.bundle else {
            let why = match &self.rule {
                Rule::Unknown(why) => why.as_str(),
                _ => "unknown",
            };
            return write!(
                f,
                "{}: {} runs {name} {running}, and the bundle's {name} version cannot be read: \
                 {why}",
                self.host, self.binary
            );
        };
        let bundle = bundle.display(c);
        write!(
            f,
            "{}: {} runs {name} {running}, the bundle has {bundle}: ",
            self.host, self.binary
        )?;
        match &self.rule {
            Rule::Unknown(why) => write!(f, "{why}"),
            Rule::Downgrade => write!(
                f,
                "a downgrade, which ilha refuses ({}); use a bundle with {name} {running} or newer",
                match c {
                    Component::Etcd => "etcd's data may already be in the newer format",
                    Component::Kubernetes => "objects may already be stored at newer API versions",
                    Component::Containerd => "its state may already be in the newer format",
                }
            ),
            Rule::PatchDowngrade => write!(
                f,
                "a patch downgrade; use a bundle with {name} {running} or newer, or pass \
                 --allow-downgrade to go back to an older patch of {}.{}",
                self.running.major, self.running.minor
            ),
            Rule::MinorSkip => write!(
                f,
                "{name} goes up one minor at a time; install a bundle with {name} {}.{}.x first",
                if c == Component::Kubernetes { "v" } else { "" }.to_string()
                    + &self.running.major.to_string(),
                self.running.minor + 1
            ),
            Rule::MajorChange => write!(
                f,
                "another major version, which ilha does not upgrade to; use a bundle with {name} \
                 {}.x",
                if c == Component::Kubernetes { "v" } else { "" }.to_string()
                    + &self.running.major.to_string()
            ),
        }
    }
}

/// What one host has, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostBinaries {
    /// Guarded binary -> its `--version` output (stdout, lines joined), when installed.
    pub versions: BTreeMap<String, String>,
    /// [`BINARIES_RECORD`]: final path -> sha256 the last `binaries` step put there.
    pub record: BTreeMap<String, String>,
    /// Which of the bundle's binary paths exist on the host.
    pub present: BTreeSet<String>,
}

/// Where the `binaries` step puts one binary on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The host already has it (as recorded by the last `binaries` step): nothing to send.
    Unchanged,
    /// Another binary is live there: stage beside it, switched when its service restarts.
    Stage,
    /// Nothing there yet: straight to the final path.
    InPlace,
}

impl HostBinaries {
    pub fn placement(&self, path: &str, sha256: &str) -> Placement {
        if self.record.get(path).is_some_and(|s| s == sha256) && self.present.contains(path) {
            Placement::Unchanged
        } else if self.present.contains(path) {
            Placement::Stage
        } else {
            Placement::InPlace
        }
    }

    /// Parses the probe's output (see [`probe_script`]).
    pub fn parse(text: &str) -> HostBinaries {
        let mut host = HostBinaries::default();
        for line in text.lines() {
            let mut fields = line.splitn(3, '\t');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("V"), Some(binary), output) => {
                    host.versions
                        .insert(binary.to_string(), output.unwrap_or("").to_string());
                }
                (Some("R"), Some(record), None) => {
                    if let Some((sha, path)) = record.split_once("  ")
                        && sha.len() == 64
                        && sha.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        host.record.insert(path.to_string(), sha.to_string());
                    }
                }
                (Some("E"), Some(path), None) => {
                    host.present.insert(path.to_string());
                }
                _ => {}
            }
        }
        host
    }
}

/// One round trip: each guarded binary's `--version`, the record of the last `binaries` step,
/// and which of `paths` exist. Reads only.
pub fn probe_script(paths: &[String]) -> String {
    let mut s = String::from(
        "ask() { # BINARY: its --version, stdout only (warnings go to stderr), lines joined\n\
         \x20 f=",
    );
    let _ = write!(
        s,
        "{BIN_DIR}/$1\n\
         \x20 [ -x \"$f\" ] || return 0\n\
         \x20 out=$(timeout 20 \"$f\" --version 2>/dev/null </dev/null) || true\n\
         \x20 out=${{out//$'\\t'/ }}\n\
         \x20 printf 'V\\t%s\\t%s\\n' \"$1\" \"${{out//$'\\n'/ | }}\"\n\
         }}\n"
    );
    for (binary, _) in GUARDED {
        let _ = writeln!(s, "ask {binary}");
    }
    let _ = writeln!(
        s,
        "if [ -f {BINARIES_RECORD} ]; then while IFS= read -r l; do printf 'R\\t%s\\n' \"$l\"; \
         done < {BINARIES_RECORD}; fi"
    );
    if !paths.is_empty() {
        s.push_str("for f in");
        for path in paths {
            s.push(' ');
            s.push_str(&shell_quote(path));
        }
        s.push_str("; do if [ -e \"$f\" ]; then printf 'E\\t%s\\n' \"$f\"; fi; done\n");
    }
    s
}

/// What the hosts run, as the rest of `up` needs it.
#[derive(Debug, Default)]
pub struct OnHosts {
    pub hosts: BTreeMap<String, HostBinaries>,
}

impl OnHosts {
    /// What `host` has (nothing known: every binary goes in place, as on a fresh host).
    pub fn host(&self, host: &str) -> HostBinaries {
        self.hosts.get(host).cloned().unwrap_or_default()
    }
}

/// The comparison itself, without hosts or processes: every violation, and notes for the
/// operator (unreadable versions, allowed patch downgrades, upgrades that will roll).
pub fn check(
    hosts: &BTreeMap<String, HostBinaries>,
    bundle: &BTreeMap<Component, Result<Version, String>>,
    allow_downgrade: bool,
) -> (Vec<Violation>, Vec<String>) {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut upgrades: BTreeMap<(Component, Version, Version), BTreeSet<&str>> = BTreeMap::new();
    for (host, found) in hosts {
        for (binary, component) in GUARDED {
            let Some(output) = found.versions.get(*binary) else {
                continue;
            };
            let Some(running) = Version::find(output) else {
                notes.push(format!(
                    "{host}: {BIN_DIR}/{binary} --version said {output:?}: no version to compare; \
                     it will be replaced by the bundle's"
                ));
                continue;
            };
            let bundle_version = match bundle.get(component) {
                Some(Ok(v)) => *v,
                Some(Err(why)) => {
                    // Cannot compare: refusing is the safe answer, with the reason.
                    violations.push(Violation {
                        host: host.clone(),
                        binary: binary.to_string(),
                        component: *component,
                        running,
                        bundle: None,
                        rule: Rule::Unknown(why.clone()),
                    });
                    continue;
                }
                None => continue,
            };
            match judge(*component, running, bundle_version, allow_downgrade) {
                Ok(Change::Same) => {}
                Ok(Change::Upgrade) => {
                    upgrades
                        .entry((*component, running, bundle_version))
                        .or_default()
                        .insert(host);
                }
                Ok(Change::PatchDowngrade) => notes.push(format!(
                    "{host}: {binary}: {} {} -> {} (patch downgrade, allowed by --allow-downgrade)",
                    component.name(),
                    running.display(*component),
                    bundle_version.display(*component)
                )),
                Err(rule) => violations.push(Violation {
                    host: host.clone(),
                    binary: binary.to_string(),
                    component: *component,
                    running,
                    bundle: Some(bundle_version),
                    rule,
                }),
            }
        }
    }
    for ((component, from, to), hosts) in upgrades {
        notes.push(format!(
            "{} {} -> {} on {}",
            component.name(),
            from.display(component),
            to.display(component),
            hosts.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    (violations, notes)
}

/// The bundle's own binary asked for its version on this machine.
async fn ask_bundle_binary(platform: &str, path: &Path) -> Result<Version, String> {
    let here = format!(
        "{}/{}",
        std::env::consts::OS,
        go_arch(std::env::consts::ARCH)
    );
    let bundle_os_arch: String = platform.split('/').take(2).collect::<Vec<_>>().join("/");
    if bundle_os_arch != here {
        return Err(format!(
            "the bundle is for {platform} and this machine is {here}, so its binary cannot be \
             asked here; run ilha from a {bundle_os_arch} machine"
        ));
    }
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(20), run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("running {} --version: {e}", path.display())),
        Err(_) => {
            return Err(format!(
                "{} --version did not answer in 20s",
                path.display()
            ));
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    Version::find(&text).ok_or_else(|| {
        format!(
            "{} --version printed no version ({}): {:?}",
            path.display(),
            output.status,
            text.trim()
        )
    })
}

/// Go's name for a Rust target architecture (what bundle platforms use).
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The guard: reads every host in one round trip, compares with the bundle, and refuses before
/// anything changes. Returns what each host has, for staging.
pub async fn guard(
    fleet: &Fleet,
    bundle: &InstallBundle,
    kubernetes: &KubeVersion,
    allow_downgrade: bool,
) -> anyhow::Result<OnHosts> {
    let mut paths: Vec<String> = bundle
        .requirements
        .all_binaries()
        .map(|b| super::steps::binary_destination(b.name))
        .collect();
    paths.sort();
    paths.dedup();
    let script = probe_script(&paths);
    // Each error names its host already.
    let hosts: BTreeMap<String, HostBinaries> = match fleet.run_all(&script).await.into_result() {
        Ok(outputs) => outputs
            .into_iter()
            .map(|(host, output)| (host, HostBinaries::parse(&output.stdout)))
            .collect(),
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!(
                "reading the versions installed on the hosts; nothing was changed:\n  {}",
                errors.join("\n  ")
            );
        }
    };

    // The bundle's versions, asked only of components some host already runs.
    let running: BTreeSet<Component> = hosts
        .values()
        .flat_map(|h| {
            GUARDED
                .iter()
                .filter(|(b, _)| h.versions.contains_key(*b))
                .map(|(_, c)| *c)
        })
        .collect();
    let mut versions = BTreeMap::new();
    for component in running {
        let version = match component {
            Component::Kubernetes => Ok(Version::of(kubernetes)),
            Component::Etcd | Component::Containerd => {
                let name = component.name();
                match bundle.binary(name) {
                    Ok((path, _)) => ask_bundle_binary(&bundle.index.platform, &path).await,
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        versions.insert(component, version);
    }

    let (violations, notes) = check(&hosts, &versions, allow_downgrade);
    if !notes.is_empty() {
        say("Versions:");
        for note in &notes {
            say(format!("  {note}"));
        }
    }
    if !violations.is_empty() {
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        bail!(
            "the bundle would downgrade or skip versions running on the hosts; nothing was \
             changed:\n  {}",
            lines.join("\n  ")
        );
    }
    Ok(OnHosts { hosts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::find(text).expect(text)
    }

    #[test]
    fn versions_are_read_from_what_each_binary_prints() {
        let etcd = "etcd Version: 3.4.23 | Git SHA: Not provided | Go Version: go1.19.8 | Go OS/Arch: linux/amd64";
        assert_eq!(
            v(etcd),
            Version {
                major: 3,
                minor: 4,
                patch: 23
            }
        );
        assert_eq!(v("Kubernetes v1.20.2"), v("1.20.2"));
        assert_eq!(v("Kubernetes v1.31.0-rc.1+dirty"), v("1.31.0"));
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"),
            v("1.6.20")
        );
        assert_eq!(v("containerd containerd.io v1.7.24 88bf19b2"), v("1.7.24"));
        assert_eq!(Version::find("go1.24.0 linux/amd64"), None);
        assert_eq!(Version::find(""), None);
        assert_eq!(Version::find("Kubernetes v1.20"), None);
    }

    #[test]
    fn kubernetes_never_goes_down_and_up_one_minor_at_a_time() {
        let k = Component::Kubernetes;
        assert_eq!(judge(k, v("1.20.2"), v("1.20.2"), false), Ok(Change::Same));
        assert_eq!(
            judge(k, v("1.20.2"), v("1.20.15"), false),
            Ok(Change::Upgrade)
        );
        assert_eq!(
            judge(k, v("1.20.2"), v("1.21.0"), false),
            Ok(Change::Upgrade)
        );
        assert_eq!(
            judge(k, v("1.20.2"), v("1.22.0"), false),
            Err(Rule::MinorSkip)
        );
        assert_eq!(
            judge(k, v("1.20.2"), v("1.30.0"), true),
            Err(Rule::MinorSkip)
        );
        assert_eq!(
            judge(k, v("1.21.0"), v("1.20.2"), false),
            Err(Rule::Downgrade)
        );
        // --allow-downgrade is for patches only: never a minor.
        assert_eq!(
            judge(k, v("1.21.0"), v("1.20.2"), true),
            Err(Rule::Downgrade)
        );
        assert_eq!(
            judge(k, v("1.20.5"), v("1.20.2"), false),
            Err(Rule::PatchDowngrade)
        );
        assert_eq!(
            judge(k, v("1.20.5"), v("1.20.2"), true),
            Ok(Change::PatchDowngrade)
        );
        assert_eq!(
            judge(k, v("1.20.2"), v("2.0.0"), false),
            Err(Rule::MajorChange)
        );
        assert_eq!(
            judge(k, v("2.0.0"), v("1.37.0"), true),
            Err(Rule::Downgrade)
        );
    }

    #[test]
    fn etcd_never_goes_down_and_up_one_minor_at_a_time() {
        let e = Component::Etcd;
        assert_eq!(
            judge(e, v("3.4.23"), v("3.5.16"), false),
            Ok(Change::Upgrade)
        );
        assert_eq!(
            judge(e, v("3.5.16"), v("3.4.23"), false),
            Err(Rule::Downgrade)
        );
        assert_eq!(
            judge(e, v("3.5.16"), v("3.4.23"), true),
            Err(Rule::Downgrade)
        );
        assert_eq!(
            judge(e, v("3.4.23"), v("3.6.0"), false),
            Err(Rule::MinorSkip)
        );
        assert_eq!(
            judge(e, v("3.5.16"), v("3.5.9"), false),
            Err(Rule::PatchDowngrade)
        );
        assert_eq!(
            judge(e, v("3.5.16"), v("3.5.9"), true),
            Ok(Change::PatchDowngrade)
        );
        assert_eq!(
            judge(e, v("3.5.16"), v("4.0.0"), false),
            Err(Rule::MajorChange)
        );
    }

    #[test]
    fn containerd_never_goes_down_but_may_jump() {
        let c = Component::Containerd;
        assert_eq!(
            judge(c, v("1.6.20"), v("1.7.24"), false),
            Ok(Change::Upgrade)
        );
        assert_eq!(
            judge(c, v("1.6.20"), v("2.0.0"), false),
            Ok(Change::Upgrade)
        );
        assert_eq!(
            judge(c, v("1.6.20"), v("1.4.0"), false),
            Err(Rule::Downgrade)
        );
        assert_eq!(
            judge(c, v("2.0.1"), v("1.7.24"), true),
            Err(Rule::Downgrade)
        );
        assert_eq!(
            judge(c, v("1.6.20"), v("1.6.12"), false),
            Err(Rule::PatchDowngrade)
        );
    }

    fn host(versions: &[(&str, &str)]) -> HostBinaries {
        HostBinaries {
            versions: versions
                .iter()
                .map(|(b, o)| (b.to_string(), o.to_string()))
                .collect(),
            ..HostBinaries::default()
        }
    }

    fn bundle(
        kube: &str,
        etcd: &str,
        containerd: &str,
    ) -> BTreeMap<Component, Result<Version, String>> {
        BTreeMap::from([
            (Component::Kubernetes, Ok(v(kube))),
            (Component::Etcd, Ok(v(etcd))),
            (Component::Containerd, Ok(v(containerd))),
        ])
    }

    #[test]
    fn the_refusal_names_host_binary_both_versions_the_rule_and_what_to_do() {
        let hosts = BTreeMap::from([
            (
                "node1".to_string(),
                host(&[("etcd", "etcd Version: 3.5.16 | Git SHA: x")]),
            ),
            (
                "node2".to_string(),
                host(&[("etcd", "etcd Version: 3.4.23")]),
            ),
            ("node3".to_string(), HostBinaries::default()),
        ]);
        let (violations, notes) = check(&hosts, &bundle("1.20.2", "3.4.23", "1.6.20"), false);
        assert_eq!(violations.len(), 1, "{violations:?}");
        let text = violations[0].to_string();
        assert_eq!(
            text,
            "node1: etcd runs etcd 3.5.16, the bundle has 3.4.23: a downgrade, which ilha refuses \
             (etcd's data may already be in the newer format); use a bundle with etcd 3.5.16 or newer"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn mixed_hosts_after_an_interrupted_run_are_judged_each_on_its_own() {
        // node1's control plane was switched to v1.21.1 before the run stopped; node2 still runs
        // v1.20.2. Finishing with the v1.21.1 bundle is fine everywhere...
        let hosts = BTreeMap::from([
            (
                "node1".to_string(),
                host(&[
                    ("kube-apiserver", "Kubernetes v1.21.1"),
                    ("kubelet", "Kubernetes v1.20.2"),
                ]),
            ),
            (
                "node2".to_string(),
                host(&[("kube-apiserver", "Kubernetes v1.20.2")]),
            ),
        ]);
        let (violations, notes) = check(&hosts, &bundle("1.21.1", "3.4.23", "1.6.20"), false);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(
            notes,
            ["Kubernetes v1.20.2 -> v1.21.1 on node1, node2"],
            "{notes:?}"
        );
        // ...going back to the v1.20.2 bundle is refused for node1's apiserver only...
        let (violations, _) = check(&hosts, &bundle("1.20.2", "3.4.23", "1.6.20"), false);
        let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].starts_with(
                "node1: kube-apiserver runs Kubernetes v1.21.1, the bundle has v1.20.2: a downgrade"
            ),
            "{text:?}"
        );
        // ...and a v1.22 bundle skips a minor for those still on v1.20.
        let (violations, _) = check(&hosts, &bundle("1.22.0", "3.4.23", "1.6.20"), false);
        let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "node1: kubelet runs Kubernetes v1.20.2, the bundle has v1.22.0: Kubernetes goes up \
                 one minor at a time; install a bundle with Kubernetes v1.21.x first",
                "node2: kube-apiserver runs Kubernetes v1.20.2, the bundle has v1.22.0: Kubernetes \
                 goes up one minor at a time; install a bundle with Kubernetes v1.21.x first",
            ]
        );
    }

    #[test]
    fn patch_downgrades_need_the_flag_and_are_noted_when_allowed() {
        let hosts = BTreeMap::from([(
            "node1".to_string(),
            host(&[(
                "containerd",
                "containerd github.com/containerd/containerd 1.6.24~ds1 x",
            )]),
        )]);
        let (violations, _) = check(&hosts, &bundle("1.20.2", "3.4.23", "1.6.20"), false);
        assert!(
            violations[0].to_string().contains(
                "a patch downgrade; use a bundle with containerd 1.6.24 or newer, or pass \
                 --allow-downgrade to go back to an older patch of 1.6"
            ),
            "{violations:?}"
        );
        let (violations, notes) = check(&hosts, &bundle("1.20.2", "3.4.23", "1.6.20"), true);
        assert!(violations.is_empty());
        assert_eq!(
            notes,
            [
                "node1: containerd: containerd 1.6.24 -> 1.6.20 (patch downgrade, allowed by --allow-downgrade)"
            ]
        );
    }

    #[test]
    fn an_unknown_bundle_version_is_refused_where_the_component_runs() {
        let hosts = BTreeMap::from([
            (
                "node1".to_string(),
                host(&[("etcd", "etcd Version: 3.4.23")]),
            ),
            ("node2".to_string(), host(&[("etcd", "garbage")])),
        ]);
        let mut versions = bundle("1.20.2", "3.4.23", "1.6.20");
        versions.insert(Component::Etcd, Err("the bundle is for linux/arm64".into()));
        let (violations, notes) = check(&hosts, &versions, false);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].host, "node1");
        assert_eq!(
            violations[0].to_string(),
            "node1: etcd runs etcd 3.4.23, and the bundle's etcd version cannot be read: the \
             bundle is for linux/arm64"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("node2: /usr/local/bin/etcd --version said \"garbage\"")),
            "{notes:?}"
        );
    }

    #[test]
    fn the_probe_reads_versions_record_and_presence_in_one_script() {
        let script = probe_script(&["/usr/local/bin/etcd".into(), "/opt/cni/bin/bridge".into()]);
        super::super::tests_support::assert_bash_syntax(&script);
        let text = "V\tetcd\tetcd Version: 3.4.23 | Git SHA: x\n\
                    V\tkubelet\t\n\
                    R\taaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  /usr/local/bin/etcd\n\
                    R\tshort  /usr/local/bin/kubelet\n\
                    E\t/usr/local/bin/etcd\n\
                    E\t/opt/cni/bin/bridge\n";
        let host = HostBinaries::parse(text);
        assert_eq!(host.versions["etcd"], "etcd Version: 3.4.23 | Git SHA: x");
        assert_eq!(host.versions["kubelet"], "");
        assert_eq!(host.record.len(), 1);
        let a = "a".repeat(64);
        assert_eq!(
            host.placement("/usr/local/bin/etcd", &a),
            Placement::Unchanged
        );
        assert_eq!(
            host.placement("/usr/local/bin/etcd", &"b".repeat(64)),
            Placement::Stage
        );
        assert_eq!(host.placement("/opt/cni/bin/bridge", &a), Placement::Stage);
        assert_eq!(
            host.placement("/usr/local/bin/kubelet", &a),
            Placement::InPlace
        );
    }

    #[tokio::test]
    async fn the_bundles_binary_is_asked_only_on_its_own_platform() {
        let dir = tempfile::tempdir().unwrap();
        let etcd = dir.path().join("etcd");
        std::fs::write(
            &etcd,
            "#!/bin/sh\necho 'etcd Version: 3.5.16'\necho 'Git SHA: x'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
        let here = format!(
            "{}/{}",
            std::env::consts::OS,
            go_arch(std::env::consts::ARCH)
        );
        assert_eq!(ask_bundle_binary(&here, &etcd).await, Ok(v("3.5.16")));
        let elsewhere = if here == "linux/amd64" {
            "linux/arm64/v8"
        } else {
            "linux/amd64"
        };
        let err = ask_bundle_binary(elsewhere, &etcd).await.unwrap_err();
        assert!(
            err.starts_with(&format!(
                "the bundle is for {elsewhere} and this machine is {here}"
            )),
            "{err}"
        );
        std::fs::write(&etcd, "#!/bin/sh\necho nothing\n").unwrap();
        let err = ask_bundle_binary(&here, &etcd).await.unwrap_err();
        assert!(err.contains("--version printed no version"), "{err}");
    }

    #[test]
    fn the_probe_runs_against_a_scratch_root() {
        // The script with BIN_DIR pointed at a scratch directory holding fake binaries.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        fake(
            "etcd",
            "echo 'etcd Version: 3.5.16'; echo 'Go Version: go1.24.0'",
        );
        fake(
            "kubelet",
            "echo 'Flag --x deprecated' >&2; echo 'Kubernetes v1.20.2'",
        );
        let present = bin.join("etcd").display().to_string();
        let absent = bin.join("runc").display().to_string();
        let record = dir.path().join("record");
        std::fs::write(&record, format!("{}  {present}\n", "c".repeat(64))).unwrap();
        let script = probe_script(&[present.clone(), absent.clone()])
            .replace(BIN_DIR, &bin.display().to_string())
            .replace(BINARIES_RECORD, &record.display().to_string());
        let host = HostBinaries::parse(&crate::cluster::tests_support::run_bash_ok(&script));
        assert_eq!(
            host.versions["etcd"],
            "etcd Version: 3.5.16 | Go Version: go1.24.0"
        );
        assert_eq!(host.versions["kubelet"], "Kubernetes v1.20.2");
        assert!(!host.versions.contains_key("containerd"));
        assert_eq!(host.present, BTreeSet::from([present.clone()]));
        assert_eq!(host.record[&present], "c".repeat(64));
        assert!(BINARIES_RECORD.starts_with(super::super::paths::ILHA_DIR));
    }
}
