//! Long-running helpers (registry, mirror) started detached, tracked by pid files, probed over HTTP.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd;
use super::error::{Error, Result};
use super::fsutil;

const START_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub pid_file: PathBuf,
    pub log: PathBuf,
    /// A path that answers 200 once the daemon serves.
    pub probe_path: &'static str,
    /// Text in `/proc/PID/cmdline` that proves a pid is still ours (pids get reused).
    pub cmdline_marker: &'static str,
}

impl Daemon {
    /// The pid from the pid file, if that process is alive and is ours.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie (state Z after the command name) is dead; the caller that spawned it may not reap it.
        let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(self.cmdline_marker);
        (state != "Z" && ours).then_some(pid)
    }

    fn answers(&self) -> bool {
        http_status(self.addr, self.probe_path) == Some(200)
    }

    /// Starts `command` unless our daemon already runs and answers. Returns whether it started one.
    pub fn ensure(&self, mut command: Command) -> Result<bool> {
        if self.running_pid().is_some() {
            if self.wait_until_answering(None)? {
                return Ok(false);
            }
            return Err(self.error("runs (pid file) but does not answer".into()));
        }
        if TcpStream::connect_timeout(&self.addr, Duration::from_millis(300)).is_ok() {
            return Err(self.error(format!(
                "the address is taken by a process that is not ours (no live pid in {})",
                self.pid_file.display()
            )));
        }
        if let Some(dir) = self.pid_file.parent() {
            fsutil::create_dir_all(dir)?;
        }
        if let Some(dir) = self.log.parent() {
            fsutil::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io("open log", &self.log))?;
        let log_err = log.try_clone().map_err(Error::io("open log", &self.log))?;
        let description = cmd::describe(&command);
        // Its own process group: a Ctrl-C aimed at `cargo xtask` or a test run must not end it.
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: description,
                source,
            })?;
        fsutil::write_atomic(&self.pid_file, format!("{}\n", child.id()).as_bytes())?;
        if self.wait_until_answering(Some(&mut child))? {
            Ok(true)
        } else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.pid_file);
            Err(self.error(format!(
                "did not answer GET {} within {}s",
                self.probe_path,
                START_DEADLINE.as_secs()
            )))
        }
    }

    fn wait_until_answering(&self, mut child: Option<&mut std::process::Child>) -> Result<bool> {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if self.answers() {
                return Ok(true);
            }
            if let Some(child) = child.as_deref_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let _ = std::fs::remove_file(&self.pid_file);
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(self.error(format!("exited ({status}):\n{}", cmd::tail(&text, 10))));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(false)
    }

    /// Ends our daemon (TERM, then KILL after a few seconds). Returns whether one was running.
    pub fn stop(&self) -> Result<bool> {
        let Some(pid) = self.running_pid() else {
            let _ = std::fs::remove_file(&self.pid_file);
            return Ok(false);
        };
        let target = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| self.error(format!("bad pid {pid}")))?;
        let _ = rustix::process::kill_process(target, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while self.running_pid().is_some() {
            if Instant::now() > deadline {
                let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
                std::thread::sleep(Duration::from_millis(200));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(true)
    }

    fn error(&self, reason: String) -> Error {
        Error::Daemon {
            name: self.name,
            addr: self.addr,
            reason,
            log: self.log.clone(),
        }
    }
}

/// The status code of `GET path` over plain HTTP/1.0, or None if nothing sensible answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let text = std::str::from_utf8(&head[..read]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The `Docker-Content-Digest` of `HEAD /v2/<repository>/manifests/<tag>` on a plain-HTTP
/// registry, or None if it lacks the manifest (or does not answer).
pub fn registry_manifest_digest(addr: SocketAddr, repository: &str, tag: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "HEAD /v2/{repository}/manifests/{tag} HTTP/1.0\r\nHost: {addr}\r\nAccept: {}\r\n\r\n",
        super::oci::MANIFEST_MEDIA_TYPE
    )
    .ok()?;
    let mut head = String::new();
    stream.read_to_string(&mut head).ok()?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("docker-content-digest")
            .then(|| value.trim().to_string())
    })
}
