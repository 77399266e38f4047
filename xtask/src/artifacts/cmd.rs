//! Running the real tools (apt-get, dpkg-deb, make, skopeo...) and checking each exit status.
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{Error, Result};

/// `program arg arg...` for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd`, returns its stdout; a failure carries the tail of its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command,
            status: out.status,
            detail: tail(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stdout and stderr appended to `log`; a failure points at the log.
pub fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let command = describe(cmd);
    let open = || -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io("open log", log))
    };
    let mut header = open()?;
    std::io::Write::write_all(&mut header, format!("\n$ {command}\n").as_bytes())
        .map_err(Error::io("write log", log))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .status()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        return Err(Error::CommandFailed {
            command,
            status,
            detail: format!("see {}; last lines:\n{}", log.display(), tail(&text, 15)),
        });
    }
    Ok(())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
