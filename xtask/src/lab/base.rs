//! The hosts' shared root filesystem: debootstrapped Debian bookworm, customised for the lab, cached.
//!
//! Two cached tarballs in `cache_dir/lab`: the raw debootstrap (keyed by suite and packages) and the
//! customised base (keyed by a hash of every customisation input, kernel included), plus the
//! unpacked base that the hosts' overlayfs uses as lower layer.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::cmd::{self, describe};
use super::{LabConfig, LabError, Result};

const SUITE: &str = "bookworm";
/// lab.sh's set plus what kubeadm/kubelet/kube-proxy look for on a node.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "iputils-ping",
    "netbase",
    "kmod",
    "iptables",
    "ca-certificates",
    "conntrack",
    "ethtool",
    "socat",
    "ebtables",
    // Hosts without root login: ilha's `ansible_become` runs every command through `sudo -n`.
    "sudo",
];
/// Bump when the customisation code changes in a way the file list below does not show.
const RECIPE_VERSION: &str = "ilha-lab-base 1";
/// Name of the guard chain inside every host.
pub const GUARD_CHAIN: &str = "ILHA-GUARD";
/// Per-host file (written at host creation) that tells the guard the lab's subnet.
pub const GUARD_ENV: &str = "etc/ilha-lab/guard.env";

/// Units that would fail, wait for a tty or do pointless work in a container.
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "e2scrub_reap.service",
    "systemd-pstore.service",
    "getty@.service",
    "console-getty.service",
];

// sshd's own unit would fail without host keys: make them at first boot, so each host has its own.
const SSH_HOST_KEYS_DROPIN: &str = "[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
";

// nspawn mounts the v1 controller hierarchies read-only; runc and kubelet must write them.
const CGROUP_RW_UNIT: &str = "[Unit]
Description=Lab: make cgroup v1 controller hierarchies writable
DefaultDependencies=no
Before=sysinit.target
ConditionPathIsMountPoint=/sys/fs/cgroup/memory

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*; do [ -L \"$d\" ] || ! mountpoint -q \"$d\" || mount -o remount,bind,rw \"$d\"; done'

[Install]
WantedBy=sysinit.target
";

// Nothing leaves a host by eth0 unless it is for the lab, its pods or its services.
const GUARD_SCRIPT: &str = "#!/bin/sh
# Lab guard: eth0 carries traffic only to the lab /24, pods and services; the rest is REJECTed
# (TCP gets a reset, the rest an ICMP error: callers fail at once; the counters show who tried).
set -eu
. /etc/ilha-lab/guard.env
iptables -w -N ILHA-GUARD 2>/dev/null || iptables -w -F ILHA-GUARD
for dst in \"$LAB_SUBNET\" 10.244.0.0/16 10.96.0.0/12; do
  iptables -w -A ILHA-GUARD -d \"$dst\" -j RETURN
done
iptables -w -A ILHA-GUARD -p tcp -j REJECT --reject-with tcp-reset
iptables -w -A ILHA-GUARD -j REJECT --reject-with icmp-admin-prohibited
for chain in OUTPUT FORWARD; do
  iptables -w -C \"$chain\" -o eth0 -j ILHA-GUARD 2>/dev/null || iptables -w -I \"$chain\" 1 -o eth0 -j ILHA-GUARD
done
";

const GUARD_UNIT: &str = "[Unit]
Description=Lab guard: traffic only to the lab, pod and service ranges
DefaultDependencies=no
Before=network-pre.target sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/ilha-guard

[Install]
WantedBy=sysinit.target
";

/// Kernel options that are built in here, as the paths modprobe would look for.
const BUILTIN_MODULES: &[(&str, &str)] = &[
    ("CONFIG_OVERLAY_FS", "kernel/fs/overlayfs/overlay.ko"),
    ("CONFIG_BRIDGE", "kernel/net/bridge/bridge.ko"),
    (
        "CONFIG_BRIDGE_NETFILTER",
        "kernel/net/bridge/br_netfilter.ko",
    ),
    ("CONFIG_VETH", "kernel/drivers/net/veth.ko"),
    (
        "CONFIG_NF_CONNTRACK",
        "kernel/net/netfilter/nf_conntrack.ko",
    ),
    ("CONFIG_NF_NAT", "kernel/net/netfilter/nf_nat.ko"),
    (
        "CONFIG_IP_NF_IPTABLES",
        "kernel/net/ipv4/netfilter/ip_tables.ko",
    ),
    (
        "CONFIG_IP_NF_FILTER",
        "kernel/net/ipv4/netfilter/iptable_filter.ko",
    ),
    (
        "CONFIG_IP_NF_NAT",
        "kernel/net/ipv4/netfilter/iptable_nat.ko",
    ),
    ("CONFIG_VXLAN", "kernel/drivers/net/vxlan/vxlan.ko"),
    ("CONFIG_IP_SET", "kernel/net/netfilter/ipset/ip_set.ko"),
    ("CONFIG_NF_TABLES", "kernel/net/netfilter/nf_tables.ko"),
];

/// One customisation step; the list of them is hashed to key the cache.
enum Entry {
    File {
        path: String,
        mode: u32,
        content: String,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The unpacked, customised base the hosts boot from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Hash of the customisation inputs (hex, 16 chars).
    pub key: String,
    pub rootfs: PathBuf,
}

struct Recipe {
    kernel: String,
    entries: Vec<Entry>,
}

impl Recipe {
    fn current() -> Result<Recipe> {
        let kernel = cmd::run_args("uname", ["-r"])?.trim().to_string();
        let mut entries = vec![
            Entry::File {
                path: "etc/systemd/system/ssh.service.d/ilha-host-keys.conf".into(),
                mode: 0o644,
                content: SSH_HOST_KEYS_DROPIN.into(),
            },
            Entry::File {
                path: "etc/resolv.conf".into(),
                mode: 0o644,
                content: "# ilha lab: air-gapped, no DNS\n".into(),
            },
            // Empty: systemd makes a fresh one per host at first boot (hosts get theirs written anyway).
            Entry::File {
                path: "etc/machine-id".into(),
                mode: 0o444,
                content: String::new(),
            },
            Entry::Symlink {
                path: "var/lib/dbus/machine-id".into(),
                target: "/etc/machine-id".into(),
            },
            Entry::File {
                path: "etc/systemd/system/ilha-cgroup-rw.service".into(),
                mode: 0o644,
                content: CGROUP_RW_UNIT.into(),
            },
            Entry::Symlink {
                path: "etc/systemd/system/sysinit.target.wants/ilha-cgroup-rw.service".into(),
                target: "/etc/systemd/system/ilha-cgroup-rw.service".into(),
            },
            Entry::File {
                path: "usr/local/sbin/ilha-guard".into(),
                mode: 0o755,
                content: GUARD_SCRIPT.into(),
            },
            Entry::File {
                path: "etc/systemd/system/ilha-guard.service".into(),
                mode: 0o644,
                content: GUARD_UNIT.into(),
            },
            Entry::Symlink {
                path: "etc/systemd/system/sysinit.target.wants/ilha-guard.service".into(),
                target: "/etc/systemd/system/ilha-guard.service".into(),
            },
            Entry::File {
                path: format!("lib/modules/{kernel}/modules.builtin"),
                mode: 0o644,
                content: builtin_modules()?,
            },
        ];
        for unit in MASKED_UNITS {
            entries.push(Entry::Symlink {
                path: format!("etc/systemd/system/{unit}"),
                target: "/dev/null".into(),
            });
        }
        Ok(Recipe { kernel, entries })
    }

    fn bootstrap_key() -> String {
        short_hash(&format!("{SUITE}\n{}", PACKAGES.join(",")))
    }

    fn key(&self) -> String {
        let mut text = format!(
            "{RECIPE_VERSION}\n{}\n{}\n",
            Self::bootstrap_key(),
            self.kernel
        );
        for entry in &self.entries {
            match entry {
                Entry::File {
                    path,
                    mode,
                    content,
                } => text.push_str(&format!("F {path} {mode:o} {}\n{content}\n", content.len())),
                Entry::Symlink { path, target } => text.push_str(&format!("L {path} {target}\n")),
            }
        }
        short_hash(&text)
    }

    fn apply(&self, root: &Path) -> Result<()> {
        // Per-host keys, generated at first boot by the ssh drop-in.
        let ssh_dir = root.join("etc/ssh");
        for entry in fs::read_dir(&ssh_dir).map_err(|e| LabError::io(&ssh_dir, e))? {
            let path = entry.map_err(|e| LabError::io(&ssh_dir, e))?.path();
            let is_host_key = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ssh_host_"));
            if is_host_key {
                fs::remove_file(&path).map_err(|e| LabError::io(&path, e))?;
            }
        }
        for entry in &self.entries {
            match entry {
                Entry::File {
                    path,
                    mode,
                    content,
                } => write_file(&root.join(path), content, *mode)?,
                Entry::Symlink { path, target } => {
                    let link = root.join(path);
                    create_parent(&link)?;
                    match fs::symlink_metadata(&link) {
                        Ok(_) => fs::remove_file(&link).map_err(|e| LabError::io(&link, e))?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(LabError::io(&link, e)),
                    }
                    std::os::unix::fs::symlink(target, &link)
                        .map_err(|e| LabError::io(&link, e))?;
                }
            }
        }
        cmd::run(
            Command::new("chroot")
                .arg(root)
                .args(["depmod", &self.kernel]),
        )?;
        Ok(())
    }
}

pub(crate) fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_parent(path)?;
    fs::write(path, content).map_err(|e| LabError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| LabError::io(path, e))
}

pub(crate) fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    Ok(())
}

fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// `modules.builtin` lines for the options this kernel has built in, so `modprobe overlay` etc. succeed.
fn builtin_modules() -> Result<String> {
    let config = if Path::new("/proc/config.gz").exists() {
        cmd::run_args("zcat", ["/proc/config.gz"])?
    } else {
        String::new()
    };
    let mut lines = String::new();
    for line in config.lines() {
        if let Some((option, "y")) = line.split_once('=')
            && let Some((_, path)) = BUILTIN_MODULES.iter().find(|(o, _)| *o == option)
        {
            lines.push_str(path);
            lines.push('\n');
        }
    }
    Ok(lines)
}

/// The mirror apt already uses on this machine (deb822 or classic sources.list).
pub fn apt_mirror() -> String {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next());
    let classic = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_classic = classic.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("deb"))
            .then(|| words.find(|w| !w.starts_with('[')))
            .flatten()
    });
    from_deb822
        .or(from_classic)
        .unwrap_or("http://deb.debian.org/debian")
        .to_string()
}

fn tar_create(dir: &Path, tarball: &Path) -> Result<()> {
    let partial = tarball.with_extension("partial");
    cmd::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
            .args(["-I", "zstd -T0 -3", "-C"])
            .arg(dir)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    )?;
    fs::rename(&partial, tarball).map_err(|e| LabError::io(tarball, e))
}

fn tar_extract(tarball: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    cmd::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
            .args(["-I", "zstd", "-C"])
            .arg(dir)
            .arg("-xpf")
            .arg(tarball),
    )?;
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(dir, e)),
    }
}

fn debootstrap(into: &Path, log: &Path) -> Result<()> {
    let log_file = fs::File::create(log).map_err(|e| LabError::io(log, e))?;
    let log_err = log_file.try_clone().map_err(|e| LabError::io(log, e))?;
    let mut command = Command::new("debootstrap");
    command
        .args([
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
        ])
        .arg(SUITE)
        .arg(into)
        .arg(apt_mirror())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let status = command.status().map_err(|source| LabError::Spawn {
        command: describe(&command),
        source,
    })?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        return Err(LabError::Command {
            command: describe(&command),
            status: status.to_string(),
            stderr: format!(
                "see {}; last lines:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    }
    Ok(())
}

/// Key of the base as the current inputs would make it (cheap: no debootstrap).
pub fn current_key() -> Result<String> {
    Ok(Recipe::current()?.key())
}

/// Makes sure the customised base for the current inputs is unpacked, from the cheapest source:
/// the unpacked tree, the cached tarball, the cached debootstrap, or debootstrap itself.
pub fn ensure(config: &LabConfig) -> Result<BaseImage> {
    let recipe = Recipe::current()?;
    let key = recipe.key();
    let cache = config.lab_cache_dir();
    fs::create_dir_all(&cache).map_err(|e| LabError::io(&cache, e))?;
    let rootfs = cache.join(format!("base-{key}"));
    let ready = cache.join(format!("base-{key}.ready"));
    let image = BaseImage {
        key: key.clone(),
        rootfs: rootfs.clone(),
    };
    if ready.exists() && rootfs.join("usr/lib/systemd/systemd").exists() {
        return Ok(image);
    }
    let building = cache.join(format!("base-{key}.building"));
    remove_dir(&building)?;
    let base_tarball = cache.join(format!("base-{key}.tar.zst"));
    if base_tarball.exists() {
        eprintln!("lab: unpacking {}", base_tarball.display());
        tar_extract(&base_tarball, &building)?;
    } else {
        let bootstrap_tarball =
            cache.join(format!("debootstrap-{}.tar.zst", Recipe::bootstrap_key()));
        if bootstrap_tarball.exists() {
            eprintln!("lab: unpacking {}", bootstrap_tarball.display());
            tar_extract(&bootstrap_tarball, &building)?;
        } else {
            eprintln!(
                "lab: debootstrap {SUITE} from {} (about a minute; log: {})",
                apt_mirror(),
                cache.join("debootstrap.log").display()
            );
            debootstrap(&building, &cache.join("debootstrap.log"))?;
            tar_create(&building, &bootstrap_tarball)?;
        }
        eprintln!("lab: customising base {key}");
        recipe.apply(&building)?;
        tar_create(&building, &base_tarball)?;
    }
    remove_dir(&rootfs)?;
    fs::rename(&building, &rootfs).map_err(|e| LabError::io(&rootfs, e))?;
    fs::write(&ready, &key).map_err(|e| LabError::io(&ready, e))?;
    prune_other_bases(&cache, &key)?;
    Ok(image)
}

/// Removes bases made from older inputs (~400 MB each), except one still mounted under a host.
fn prune_other_bases(cache: &Path, key: &str) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let entries = fs::read_dir(cache).map_err(|e| LabError::io(cache, e))?;
    for entry in entries {
        let path = entry.map_err(|e| LabError::io(cache, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("base-") else {
            continue;
        };
        let other_key = rest.split('.').next().unwrap_or(rest);
        if other_key == key {
            continue;
        }
        let rootfs = cache.join(format!("base-{other_key}"));
        if mountinfo.contains(&format!("lowerdir={},", rootfs.display())) {
            continue;
        }
        if path.is_dir() {
            remove_dir(&path)?;
        } else {
            fs::remove_file(&path).map_err(|e| LabError::io(&path, e))?;
        }
    }
    Ok(())
}
