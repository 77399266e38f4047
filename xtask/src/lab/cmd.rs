//! Running the machine's tools: every failure names the command and carries its stderr.
use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use super::{LabError, Result};

pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs to completion and returns its output, whatever the exit status.
pub(crate) fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: describe(command),
            source,
        })
}

/// Runs to completion; a non-zero exit is an error. Returns stdout.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let out = output(command)?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: describe(command),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `run(Command::new(program).args(args))`.
pub(crate) fn run_args<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
}

/// True when it exits 0 (for probes such as `ip link show X`).
pub(crate) fn succeeds<I, S>(program: &str, args: I) -> Result<bool>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ok(output(Command::new(program).args(args))?.status.success())
}

/// Tools the lab shells out to, with the Debian package that ships each.
const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("zstd", "zstd"),
    ("tar", "tar"),
    ("setsid", "util-linux"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("chroot", "coreutils"),
];

pub fn debian_packages() -> Vec<&'static str> {
    let mut packages: Vec<&str> = TOOLS.iter().map(|(_, package)| *package).collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// Fails with the list of missing Debian packages rather than installing anything behind the user's back.
pub fn check_tools() -> Result<()> {
    let missing: Vec<&(&str, &str)> = TOOLS.iter().filter(|(tool, _)| !on_path(tool)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<String> = missing.iter().map(|(_, p)| p.to_string()).collect();
    packages.dedup();
    Err(LabError::MissingTools {
        tools: missing.iter().map(|(t, _)| t.to_string()).collect(),
        packages,
    })
}

pub fn check_root() -> Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}
