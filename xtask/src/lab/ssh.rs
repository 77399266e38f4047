//! SSH into the hosts with the system's `ssh`: the lab's key, host keys learnt from each host's
//! own files (not trusted on first use), and an ssh_config file others can use with `ssh -F`.
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::base::write_file;
use super::cmd;
use super::host::HostPaths;
use super::{LabConfig, LabError, Result};

/// Threads boot hosts in parallel; each rewrites known_hosts in full.
static KNOWN_HOSTS_WRITER: Mutex<()> = Mutex::new(());

pub struct SshFiles {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub config: PathBuf,
}

impl SshFiles {
    pub fn new(config: &LabConfig) -> SshFiles {
        let dir = config.ssh_dir();
        SshFiles {
            key: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
            config: dir.join("ssh_config"),
        }
    }
}

/// The lab's root key (made once, kept across wipes); returns the public key line.
pub fn ensure_key(config: &LabConfig) -> Result<String> {
    let files = SshFiles::new(config);
    let dir = config.ssh_dir();
    fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    if !files.key.exists() {
        cmd::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "ilha-lab", "-f"])
                .arg(&files.key),
        )?;
    }
    let public = files.key.with_extension("pub");
    fs::read_to_string(&public).map_err(|e| LabError::io(&public, e))
}

/// Host numbers that have state under `state_dir/hosts`.
pub fn existing_hosts(config: &LabConfig) -> Vec<usize> {
    let mut hosts: Vec<usize> = fs::read_dir(config.hosts_dir())
        .map(|dir| {
            dir.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix('h')?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    hosts.sort_unstable();
    hosts
}

/// Public host keys as the host wrote them (at first boot, into its upper layer).
pub fn host_public_keys(config: &LabConfig, index: usize) -> Vec<String> {
    let ssh_dir = HostPaths::new(config, index).upper.join("etc/ssh");
    let mut keys = Vec::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let path = ssh_dir.join(format!("ssh_host_{kind}_key.pub"));
        if let Ok(text) = fs::read_to_string(&path) {
            let fields: Vec<&str> = text.split_whitespace().collect();
            // A key being written right now is skipped and picked up on the next pass.
            if fields.len() >= 2 && text.ends_with('\n') {
                keys.push(format!("{} {}", fields[0], fields[1]));
            }
        }
    }
    keys
}

/// Rewrites known_hosts from every host's own key files, as `hN,IP type key`.
pub fn write_known_hosts(config: &LabConfig) -> Result<()> {
    let _guard = KNOWN_HOSTS_WRITER.lock().unwrap_or_else(|p| p.into_inner());
    let files = SshFiles::new(config);
    let mut text = String::new();
    for index in existing_hosts(config) {
        let ip = super::host_ip(config, index);
        for key in host_public_keys(config, index) {
            text.push_str(&format!("h{index},{ip} {key}\n"));
        }
    }
    let partial = files.known_hosts.with_extension("partial");
    write_file(&partial, &text, 0o644)?;
    fs::rename(&partial, &files.known_hosts).map_err(|e| LabError::io(&files.known_hosts, e))
}

/// An ssh_config for `ssh -F FILE root@IP` or `ssh -F FILE hN`: User root, the lab key, host keys
/// checked against the lab's known_hosts only.
pub fn write_config(config: &LabConfig, hosts: usize) -> Result<PathBuf> {
    let files = SshFiles::new(config);
    let mut text =
        String::from("# Written by `cargo xtask lab`: ssh -F THIS_FILE root@IP (or hN)\n");
    let count = hosts.max(existing_hosts(config).last().copied().unwrap_or(0));
    for index in 1..=count {
        text.push_str(&format!(
            "Host h{index}\n  HostName {}\n",
            super::host_ip(config, index)
        ));
    }
    text.push_str(&format!(
        "Host h* {net}.*
  User root
  IdentityFile {key}
  IdentitiesOnly yes
  UserKnownHostsFile {known}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
",
        net = config.net,
        key = files.key.display(),
        known = files.known_hosts.display(),
    ));
    write_file(&files.config, &text, 0o644)?;
    Ok(files.config)
}

/// `ssh -F lab_config root@IP` with a short connect timeout for probes.
pub fn command(config: &LabConfig, ip: &str, connect_timeout: Option<u32>) -> Command {
    let files = SshFiles::new(config);
    let mut command = Command::new("ssh");
    command.arg("-F").arg(&files.config);
    if let Some(seconds) = connect_timeout {
        command.arg("-o").arg(format!("ConnectTimeout={seconds}"));
    }
    command.arg(format!("root@{ip}"));
    command
}

/// `'it'\''s'`: a single-quoted word for the remote shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(super::shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
