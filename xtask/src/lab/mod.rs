//! Real hosts on one machine: `systemd-nspawn --boot` over an overlayfs of one debootstrapped
//! Debian, each in its own network namespace on one bridge, with power cut and boot.
//! See docs/lab.md for how it works and why.
pub mod base;
pub mod cli;
mod cmd;
mod error;
pub mod host;
mod lock;
pub mod net;
pub mod process;
pub mod ssh;

mod config;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use cmd::{check_root, check_tools, debian_packages};
pub use config::{LabConfig, MIRROR_ADDR, POD_CIDR, REGISTRY_ADDR, SERVICE_CIDR};
pub use error::{LabError, Result};
pub use lock::LabLock;

/// How long a host may take from boot to accepting SSH before it gets one power-cut and boot.
pub const SSH_DEADLINE: Duration = Duration::from_secs(45);

/// A lab host: `hN` at `NET.(10+N)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub index: usize,
    pub name: String,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub host: Host,
    pub running: bool,
    pub ssh_ok: bool,
}

pub(crate) fn host_ip(config: &LabConfig, index: usize) -> String {
    format!("{}.{}", config.net, 10 + index)
}

/// The lab. Methods don't lock: take [`Lab::lock`] first when others may use the same lab.
#[derive(Debug, Clone)]
pub struct Lab {
    config: LabConfig,
}

impl Lab {
    pub fn new(config: LabConfig) -> Lab {
        Lab { config }
    }

    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// Exclusive use of the lab until the guard is dropped (waits if someone else has it).
    pub fn lock(&self) -> Result<LabLock> {
        lock::lock(&self.config)
    }

    pub fn host(&self, index: usize) -> Host {
        Host {
            index,
            name: format!("h{index}"),
            ip: host_ip(&self.config, index),
        }
    }

    fn checks(&self) -> Result<()> {
        check_root()?;
        self.config.validate()?;
        check_tools()
    }

    /// Builds or unpacks the hosts' base (cached; see [`base::ensure`]).
    pub fn base(&self) -> Result<base::BaseImage> {
        self.checks()?;
        base::ensure(&self.config)
    }

    /// Boots hosts 1..=n that aren't running and waits for every one's sshd. No-op when all are up.
    pub fn up(&self, n: usize) -> Result<Vec<Host>> {
        if n == 0 || n > 200 {
            return Err(LabError::Invalid {
                what: "host count (1-200)",
                value: n.to_string(),
            });
        }
        self.checks()?;
        let base = base::ensure(&self.config)?;
        net::set_sysctls()?;
        let public_key = ssh::ensure_key(&self.config)?;
        net::bridge_up(&self.config)?;
        ssh::write_config(&self.config, n)?;
        let hosts: Vec<usize> = (1..=n).collect();
        for &index in &hosts {
            net::host_net_up(&self.config, index, &host_ip(&self.config, index))?;
            self.boot_one(&base, index, n, &public_key)?;
        }
        self.wait_all(&base, &hosts, n, &public_key)?;
        Ok(hosts.into_iter().map(|i| self.host(i)).collect())
    }

    /// Written once per host: lists at least h1..h9 so a lab grown later still resolves.
    fn etc_hosts(&self, n: usize) -> String {
        let mut text = String::from("127.0.0.1 localhost\n");
        for index in 1..=n.max(9) {
            text.push_str(&format!("{} h{index}\n", host_ip(&self.config, index)));
        }
        text
    }

    fn boot_one(&self, base: &base::BaseImage, index: usize, n: usize, key: &str) -> Result<bool> {
        let name = format!("h{index}");
        let etc_hosts = self.etc_hosts(n);
        let subnet = self.config.subnet();
        host::boot(
            &self.config,
            base,
            index,
            &host::HostFiles {
                hostname: &name,
                etc_hosts: &etc_hosts,
                subnet: &subnet,
                authorized_key: key,
            },
        )
    }

    /// Waits for each host's sshd in parallel; a host that misses the deadline is power-cut and
    /// booted once more (seen: a host that boots without sshd answering).
    fn wait_all(&self, base: &base::BaseImage, hosts: &[usize], n: usize, key: &str) -> Result<()> {
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|&index| {
                    scope.spawn(move || {
                        if self.wait_ssh(index, SSH_DEADLINE)? {
                            return Ok(());
                        }
                        eprintln!(
                            "lab: h{index} has no sshd after {SSH_DEADLINE:?}: power cut and boot"
                        );
                        host::stop(&self.config, index, true)?;
                        self.boot_one(base, index, n, key)?;
                        if self.wait_ssh(index, SSH_DEADLINE)? {
                            return Ok(());
                        }
                        Err(LabError::SshTimeout {
                            host: format!("h{index}"),
                            ip: host_ip(&self.config, index),
                            seconds: SSH_DEADLINE.as_secs(),
                            log: host::HostPaths::new(&self.config, index).console_log,
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("ssh wait thread panicked"))
                .collect()
        });
        results.into_iter().collect()
    }

    /// Learns the host's keys (from its own files) and waits until `ssh true` works.
    fn wait_ssh(&self, index: usize, within: Duration) -> Result<bool> {
        let deadline = Instant::now() + within;
        let ip = host_ip(&self.config, index);
        let mut known = 0;
        while Instant::now() < deadline {
            let keys = ssh::host_public_keys(&self.config, index).len();
            if keys > 0 {
                if keys != known {
                    ssh::write_known_hosts(&self.config)?;
                    known = keys;
                }
                let probe = cmd::output(ssh::command(&self.config, &ip, Some(2)).arg("true"))?;
                if probe.status.success() {
                    // Key types written after our last look (ssh-keygen -A makes several).
                    ssh::write_known_hosts(&self.config)?;
                    return Ok(true);
                }
            }
            if host::launcher_pid(&self.config, index).is_none() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    }

    /// Clean poweroff of every host (then their PID 1 is killed after a short timeout), and removal
    /// of mounts, cgroups, netns, veths, bridge and iptables rules. Host state is kept.
    pub fn down(&self) -> Result<()> {
        check_root()?;
        self.config.validate()?;
        let mut hosts = ssh::existing_hosts(&self.config);
        for netns in net::lab_netns(&self.config)? {
            if let Some(index) = net::host_index(&self.config, &netns) {
                hosts.push(index);
            }
        }
        hosts.sort_unstable();
        hosts.dedup();
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|&index| scope.spawn(move || host::stop(&self.config, index, false)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("stop thread panicked"))
                .collect()
        });
        results.into_iter().collect::<Result<()>>()?;
        net::all_down(&self.config)
    }

    /// `down`, then delete every host's state (the base and other caches stay).
    pub fn wipe(&self) -> Result<()> {
        self.down()?;
        let dir = self.config.hosts_dir();
        // Nothing may still be mounted in there before deleting recursively.
        let mounts = process::mounts_under(&dir);
        if let Some(mount) = mounts.first() {
            return Err(LabError::Io {
                path: mount.clone(),
                source: std::io::Error::other("still mounted after down; not deleting host state"),
            });
        }
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LabError::io(&dir, e));
            }
            _ => {}
        }
        ssh::write_known_hosts(&self.config)
    }

    /// Power cut: SIGKILL the host's PID 1 (state kept, as after a real power loss).
    pub fn kill(&self, index: usize) -> Result<()> {
        check_root()?;
        self.known(index)?;
        host::stop(&self.config, index, true)
    }

    /// Clean poweroff of one host.
    pub fn stop(&self, index: usize) -> Result<()> {
        check_root()?;
        self.known(index)?;
        host::stop(&self.config, index, false)
    }

    /// Boots one host (the lab network comes up if needed) and waits for its sshd.
    pub fn start(&self, index: usize) -> Result<Host> {
        if index == 0 {
            return Err(LabError::NoSuchHost { index });
        }
        self.checks()?;
        let base = base::ensure(&self.config)?;
        net::set_sysctls()?;
        let key = ssh::ensure_key(&self.config)?;
        net::bridge_up(&self.config)?;
        let n = ssh::existing_hosts(&self.config)
            .last()
            .copied()
            .unwrap_or(0)
            .max(index);
        ssh::write_config(&self.config, n)?;
        net::host_net_up(&self.config, index, &host_ip(&self.config, index))?;
        self.boot_one(&base, index, n, &key)?;
        self.wait_all(&base, &[index], n, &key)?;
        Ok(self.host(index))
    }

    fn known(&self, index: usize) -> Result<()> {
        if ssh::existing_hosts(&self.config).contains(&index) {
            Ok(())
        } else {
            Err(LabError::NoSuchHost { index })
        }
    }

    /// Every host with state: running (launcher alive) and answering SSH.
    pub fn status(&self) -> Result<Vec<HostStatus>> {
        let hosts = ssh::existing_hosts(&self.config);
        let statuses = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|&index| {
                    scope.spawn(move || {
                        let running = host::launcher_pid(&self.config, index).is_some();
                        let ssh_ok = running
                            && cmd::output(
                                ssh::command(&self.config, &host_ip(&self.config, index), Some(2))
                                    .arg("true"),
                            )
                            .is_ok_and(|o| o.status.success());
                        HostStatus {
                            host: self.host(index),
                            running,
                            ssh_ok,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("status thread panicked"))
                .collect()
        });
        Ok(statuses)
    }

    /// Runs `script` on host `index` (by the remote shell) and returns its output, whatever its status.
    pub fn ssh(&self, index: usize, script: &str) -> Result<Output> {
        let host = self.host(index);
        let out = cmd::output(ssh::command(&self.config, &host.ip, None).arg(script))?;
        // 255 is ssh's own failure (connect, auth, host key), not the script's.
        if out.status.code() == Some(255) {
            return Err(ssh_error(&host, script, &out));
        }
        Ok(out)
    }

    /// Runs `script` on host `index`; non-zero exit is an error. Returns stdout.
    pub fn ssh_ok(&self, index: usize, script: &str) -> Result<String> {
        let host = self.host(index);
        let out = self.ssh(index, script)?;
        if !out.status.success() {
            return Err(ssh_error(&host, script, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Copies a local file to `remote` on host `index` (via `ssh cat >`, mode kept by `chmod`).
    pub fn copy_to(&self, index: usize, local: &Path, remote: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let host = self.host(index);
        let file = fs::File::open(local).map_err(|e| LabError::io(local, e))?;
        let mode = file
            .metadata()
            .map_err(|e| LabError::io(local, e))?
            .permissions()
            .mode()
            & 0o7777;
        let quoted = ssh::shell_quote(remote);
        let script = format!("cat > {quoted} && chmod {mode:o} {quoted}");
        let mut command = ssh::command(&self.config, &host.ip, None);
        command.arg(&script).stdin(Stdio::from(file));
        let out = command.output().map_err(|source| LabError::Spawn {
            command: cmd::describe(&command),
            source,
        })?;
        if !out.status.success() {
            return Err(ssh_error(&host, &script, &out));
        }
        Ok(())
    }

    /// Runs `script` (bash) as root inside host `index` without ssh: `nsenter` into the
    /// namespaces of the host's PID 1, as a console would. For tests that take root login away
    /// (`PermitRootLogin no`) or break sudo and still need to look at, or repair, the host.
    /// Returns the output whatever the script's status.
    pub fn exec(&self, index: usize, script: &str) -> Result<Output> {
        check_root()?;
        let host = self.host(index);
        let pid = host::leader_pid(&self.config, index).ok_or_else(|| LabError::NotRunning {
            host: host.name.clone(),
            index,
        })?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--target={pid}"))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"])
            // The host's own root and working directory, and a login-like environment: nothing
            // of the caller's (its PATH, its HOME) leaks into what the script sees.
            .args(["--root", "--wd", "--", "/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LC_ALL=C",
                "/bin/bash",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null());
        cmd::output(&mut command)
    }

    /// [`Lab::exec`]; a non-zero exit is an error. Returns stdout.
    pub fn exec_ok(&self, index: usize, script: &str) -> Result<String> {
        let out = self.exec(index, script)?;
        if !out.status.success() {
            return Err(LabError::Exec {
                host: self.host(index).name,
                script: script.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The lab's private key for root on every host.
    pub fn ssh_key(&self) -> PathBuf {
        ssh::SshFiles::new(&self.config).key
    }

    /// The lab's known_hosts (every host's keys, learnt from its own files at boot).
    pub fn known_hosts(&self) -> PathBuf {
        ssh::SshFiles::new(&self.config).known_hosts
    }

    /// An ssh_config file: `ssh -F FILE root@10.88.0.11` (or `ssh -F FILE h1`) works, with the lab
    /// key, as root, host keys checked against the lab's known_hosts.
    pub fn ssh_config(&self) -> Result<PathBuf> {
        ssh::write_config(&self.config, 0)
    }

    /// `ssh` as a `Command` aimed at host `index` (for interactive use or custom stdio).
    pub fn ssh_command(&self, index: usize) -> Command {
        ssh::command(&self.config, &self.host(index).ip, None)
    }
}

fn ssh_error(host: &Host, script: &str, out: &Output) -> LabError {
    LabError::Ssh {
        host: host.name.clone(),
        ip: host.ip.clone(),
        script: script.to_string(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}
