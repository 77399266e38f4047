//! One host's life: overlayfs over the base, a launcher in its own cgroups running
//! `systemd-nspawn --boot` (again on reboot), power-off, power cut and the cleanup after.
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::base::{BaseImage, GUARD_ENV, write_file};
use super::cmd::{self, describe};
use super::net::netns_name;
use super::process;
use super::{LabConfig, LabError, Result};

/// How long a clean poweroff may take before the host's PID 1 is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// nspawn's options (see docs/lab.md for why each is there).
const NSPAWN_OPTIONS: &[&str] = &[
    "--boot",
    // No systemd on the machine to register with or to get a scope from: the launcher's own cgroup.
    "--register=no",
    "--keep-unit",
    "--console=read-only",
    "--link-journal=no",
    "--resolv-conf=off",
    // runc in a private netns needs them all.
    "--capability=all",
    // containerd/runc join session keyrings; kubelet loads BPF.
    "--system-call-filter=@keyring bpf",
    "--bind-ro=/dev/kmsg",
];

/// Joins its cgroups, records its PID, then boots the host, again after each in-host `reboot`
/// (nspawn exits 133) unless a stop was asked for.
const LAUNCHER_SCRIPT: &str = r#"
for f in $ILHA_CGROUP_PROCS; do
  echo $$ > "$f" || { echo "ilha-lab launcher: cannot join cgroup $f"; exit 97; }
done
echo $$ > "$ILHA_PID_FILE"
while :; do
  echo "ilha-lab launcher: boot $(date -u +%FT%TZ)"
  systemd-nspawn "$@"; rc=$?
  echo "ilha-lab launcher: systemd-nspawn exited $rc $(date -u +%FT%TZ)"
  if [ "$rc" = 133 ] && [ ! -e "$ILHA_STOP_FILE" ]; then continue; fi
  exit "$rc"
done
"#;

/// Where one host keeps its state under `state_dir/hosts/hN`.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub root: PathBuf,
    pub containerd: PathBuf,
    pub console_log: PathBuf,
    pub pid_file: PathBuf,
    pub stop_file: PathBuf,
    pub base_key: PathBuf,
}

impl HostPaths {
    pub fn new(config: &LabConfig, index: usize) -> HostPaths {
        let dir = config.hosts_dir().join(format!("h{index}"));
        HostPaths {
            upper: dir.join("upper"),
            work: dir.join("work"),
            root: dir.join("root"),
            containerd: dir.join("containerd"),
            console_log: dir.join("console.log"),
            pid_file: dir.join("launcher.pid"),
            stop_file: dir.join("stop"),
            base_key: dir.join("base"),
            dir,
        }
    }
}

pub fn machine_name(config: &LabConfig, index: usize) -> String {
    format!("{}-h{index}", config.prefix)
}

/// The launcher's PID if it is running (and really is this host's launcher, not a reused PID).
pub fn launcher_pid(config: &LabConfig, index: usize) -> Option<i32> {
    let paths = HostPaths::new(config, index);
    let pid: i32 = fs::read_to_string(&paths.pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let machine = format!("--machine={}", machine_name(config, index));
    (process::alive(pid) && process::cmdline(pid).contains(&machine)).then_some(pid)
}

/// Files each host gets in its upper layer before boot: identity, names, guard settings, root's key.
pub struct HostFiles<'a> {
    pub hostname: &'a str,
    pub etc_hosts: &'a str,
    pub subnet: &'a str,
    pub authorized_key: &'a str,
}

fn prepare_upper(paths: &HostPaths, files: &HostFiles) -> Result<()> {
    for dir in [&paths.upper, &paths.work, &paths.root, &paths.containerd] {
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    }
    let upper = &paths.upper;
    // Directories made here replace the lower's metadata: keep Debian's modes.
    for (dir, mode) in [("etc", 0o755), ("root", 0o700), ("root/.ssh", 0o700)] {
        let path = upper.join(dir);
        fs::create_dir_all(&path).map_err(|e| LabError::io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| LabError::io(&path, e))?;
    }
    // Identity and names only when the host is made: what runs on it may change them later.
    let machine_id = upper.join("etc/machine-id");
    let created = fs::read_to_string(&machine_id).is_ok_and(|id| id.trim().len() == 32);
    if !created {
        write_file(
            &upper.join("etc/hostname"),
            &format!("{}\n", files.hostname),
            0o644,
        )?;
        write_file(&upper.join("etc/hosts"), files.etc_hosts, 0o644)?;
        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(|e| LabError::io("/proc/sys/kernel/random/uuid", e))?;
        write_file(
            &machine_id,
            &format!("{}\n", uuid.trim().replace('-', "")),
            0o444,
        )?;
    }
    write_file(
        &upper.join(GUARD_ENV),
        &format!("LAB_SUBNET={}\n", files.subnet),
        0o644,
    )?;
    // The lab's key must work; keys others added stay.
    let authorized = upper.join("root/.ssh/authorized_keys");
    let mut keys = fs::read_to_string(&authorized).unwrap_or_default();
    if !keys
        .lines()
        .any(|l| l.trim() == files.authorized_key.trim())
    {
        if !keys.is_empty() && !keys.ends_with('\n') {
            keys.push('\n');
        }
        keys.push_str(files.authorized_key.trim());
        keys.push('\n');
        write_file(&authorized, &keys, 0o600)?;
    }
    Ok(())
}

/// Prepares and boots host `index`; returns false if it was already running. Does not wait for sshd.
pub fn boot(config: &LabConfig, base: &BaseImage, index: usize, files: &HostFiles) -> Result<bool> {
    let paths = HostPaths::new(config, index);
    let host = format!("h{index}");
    match fs::read_to_string(&paths.base_key) {
        Ok(key) if key.trim() != base.key => {
            return Err(LabError::BaseChanged {
                host,
                host_base: key.trim().to_string(),
                current: base.key.clone(),
            });
        }
        _ => {}
    }
    if launcher_pid(config, index).is_some() {
        return Ok(false);
    }
    // Leftovers of a launcher that died on its own (e.g. `poweroff` inside the host).
    cleanup(config, index)?;
    prepare_upper(&paths, files)?;
    fs::write(&paths.base_key, &base.key).map_err(|e| LabError::io(&paths.base_key, e))?;

    if !process::is_mount_point(&paths.root) {
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.rootfs.display(),
            paths.upper.display(),
            paths.work.display()
        );
        cmd::run(
            Command::new("mount")
                .args([
                    "-t",
                    "overlay",
                    &machine_name(config, index),
                    "-o",
                    &options,
                ])
                .arg(&paths.root),
        )?;
    }

    // A private cgroup in every hierarchy: PID 1 of the machine is not systemd, nobody else hands them out.
    let cgroups = process::own_cgroup_dirs(&machine_name(config, index));
    let mut procs_files = Vec::new();
    for dir in &cgroups {
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        // cgroup v1 cpuset: a new group has no CPUs or memory nodes until given its parent's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            if own.exists() {
                let parent = dir.parent().unwrap_or(dir).join(file);
                let value = fs::read_to_string(&parent).map_err(|e| LabError::io(&parent, e))?;
                fs::write(&own, value.trim()).map_err(|e| LabError::io(&own, e))?;
            }
        }
        procs_files.push(dir.join("cgroup.procs").display().to_string());
    }

    let _ = fs::remove_file(&paths.stop_file);
    let _ = fs::remove_file(&paths.pid_file);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.console_log)
        .map_err(|e| LabError::io(&paths.console_log, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| LabError::io(&paths.console_log, e))?;
    let mut launcher = Command::new("setsid");
    // --fork: the launcher is re-parented at once, so no caller ever has to reap it.
    launcher
        .args(["--fork", "sh", "-c", LAUNCHER_SCRIPT, "ilha-launcher"])
        .arg("-D")
        .arg(&paths.root)
        .arg(format!("--machine={}", machine_name(config, index)))
        .arg(format!("--hostname={host}"))
        .arg(format!(
            "--network-namespace-path=/run/netns/{}",
            netns_name(config, index)
        ))
        .arg(format!(
            "--bind={}:/var/lib/containerd",
            paths.containerd.display()
        ))
        .args(NSPAWN_OPTIONS)
        // net.* per host is writable (ip_forward, bridge-nf-call-iptables); the rest of /proc/sys stays ro.
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
        .env("ILHA_CGROUP_PROCS", procs_files.join(" "))
        .env("ILHA_PID_FILE", &paths.pid_file)
        .env("ILHA_STOP_FILE", &paths.stop_file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let status = launcher.status().map_err(|source| LabError::Spawn {
        command: describe(&launcher),
        source,
    })?;
    if !status.success() {
        return Err(LabError::Command {
            command: describe(&launcher),
            status: status.to_string(),
            stderr: format!("see {}", paths.console_log.display()),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while launcher_pid(config, index).is_none() {
        if Instant::now() > deadline {
            return Err(LabError::LauncherDidNotStart {
                host,
                log: paths.console_log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// The host's PID 1 (its systemd) as this machine numbers it, if the host is running.
pub fn leader_pid(config: &LabConfig, index: usize) -> Option<i32> {
    launcher_pid(config, index).and_then(|launcher| nspawn_and_leader(launcher).1)
}

/// The host's systemd-nspawn and its PID 1 (the container's systemd), if running.
fn nspawn_and_leader(launcher: i32) -> (Option<i32>, Option<i32>) {
    let nspawn = process::children(launcher)
        .into_iter()
        .find(|pid| process::comm(*pid) == "systemd-nspawn");
    let leader = nspawn.and_then(|n| process::children(n).into_iter().next());
    (nspawn, leader)
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while process::alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Clean poweroff (`hard == false`: SIGTERM to nspawn, which asks the host's systemd to power off;
/// after `STOP_TIMEOUT` its PID 1 is killed) or power cut (`hard`: SIGKILL the host's PID 1 at once,
/// which kills every process in its PID namespace). Then unmounts and removes its cgroups.
pub fn stop(config: &LabConfig, index: usize, hard: bool) -> Result<()> {
    let paths = HostPaths::new(config, index);
    if let Some(launcher) = launcher_pid(config, index) {
        fs::write(&paths.stop_file, b"").map_err(|e| LabError::io(&paths.stop_file, e))?;
        let (nspawn, leader) = nspawn_and_leader(launcher);
        match (hard, nspawn, leader) {
            (true, _, Some(leader)) => process::signal(leader, Signal::KILL),
            (_, Some(nspawn), _) => process::signal(nspawn, Signal::TERM),
            _ => process::signal(launcher, Signal::KILL),
        }
        // A running containerd task can make systemd-shutdown wait 90 s: don't.
        if !wait_gone(launcher, STOP_TIMEOUT) {
            if let Some(leader) = leader {
                process::signal(leader, Signal::KILL);
            }
            if !wait_gone(launcher, Duration::from_secs(5)) {
                for pid in [Some(launcher), nspawn].into_iter().flatten() {
                    process::signal(pid, Signal::KILL);
                }
                wait_gone(launcher, Duration::from_secs(5));
            }
        }
    }
    cleanup(config, index)
}

/// After the launcher is gone: wait for the host's last processes, unmount, remove cgroups.
pub fn cleanup(config: &LabConfig, index: usize) -> Result<()> {
    let paths = HostPaths::new(config, index);
    let name = machine_name(config, index);
    let host = format!("h{index}");
    let cgroups = process::find_cgroup_dirs(&name);
    // SIGKILLed processes exit asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    for dir in &cgroups {
        loop {
            let pids = process::cgroup_pids(dir);
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::HostWontDie {
                    host,
                    cgroup: dir.clone(),
                });
            }
            for pid in pids {
                process::signal(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    unmount_all(&paths.root)?;
    for dir in &cgroups {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = process::remove_cgroup_tree(dir) {
            if Instant::now() > deadline {
                return Err(LabError::io(dir, e));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let propagate = Path::new("/run/systemd/nspawn/propagate").join(&name);
    if propagate.exists() {
        fs::remove_dir_all(&propagate).map_err(|e| LabError::io(&propagate, e))?;
    }
    let _ = fs::remove_file(&paths.pid_file);
    let _ = fs::remove_file(&paths.stop_file);
    Ok(())
}

/// Unmounts everything at or below `dir`, deepest first; a busy mount is retried, then detached.
pub fn unmount_all(dir: &Path) -> Result<()> {
    let mut mounts = process::mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for mount in mounts {
        let mut unmounted = false;
        for _ in 0..6 {
            if cmd::output(Command::new("umount").arg(&mount))?
                .status
                .success()
            {
                unmounted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if !unmounted && process::is_mount_point(&mount) {
            cmd::run(Command::new("umount").arg("-l").arg(&mount))?;
        }
    }
    Ok(())
}
