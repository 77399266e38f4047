//! Ctrl-C and SIGTERM: finish what is in flight, start nothing new, leave nothing behind.
//!
//! The first signal only raises a flag. Every loop that starts work on hosts (steps, waits)
//! asks [`check`] before starting, so no new step begins; steps already running end (or, when
//! a terminal's Ctrl-C also ended their `ssh`, fail and are not journaled, so the next run does
//! them again). The command then unwinds normally: host locks are released, SSH masters closed,
//! staging removed by its guards, and the error says where to resume. A second signal stops at
//! once, but still closes every SSH master and removes every registered staging path first: an
//! authenticated root master to every host must not outlive the command.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static MASTERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Wakes [`notified`] when the first signal comes.
static NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Exit status of a command stopped by a signal, as shells report it (128 + the signal).
pub fn exit_code() -> Option<u8> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(128u8.saturating_add(signal as u8)),
    }
}

/// The signal's name, once one came.
pub fn requested() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        SIGINT => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// The error every interrupted loop returns; the command adds where to resume.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}: no new step was started")]
pub struct Interrupted {
    pub signal: &'static str,
}

/// `Err(Interrupted)` once a signal came: call before starting anything on a host.
pub fn check() -> Result<(), Interrupted> {
    match requested() {
        Some(signal) => Err(Interrupted { signal }),
        None => Ok(()),
    }
}

/// Returns once a signal has come: for work that only reads hosts (a backup) and may simply be
/// abandoned, rather than waited for, when the operator asks to stop.
pub async fn notified() {
    loop {
        let wake = NOTIFY.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if requested().is_some() {
            return;
        }
        wake.await;
    }
}

/// Listens for SIGINT and SIGTERM on the current tokio runtime.
pub fn listen() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM: a signal will stop ilha at once");
        return;
    };
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                _ = int.recv() => SIGINT,
                _ = term.recv() => SIGTERM,
            };
            if SIGNAL
                .compare_exchange(0, received, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                NOTIFY.notify_waiters();
                eprintln!(
                    "\n{}: finishing the steps in flight, starting nothing new (again to stop at once)",
                    requested().unwrap_or("signal")
                );
            } else {
                stop_now();
            }
        }
    });
}

/// The second signal: close every SSH master and remove staging, then exit.
fn stop_now() -> ! {
    let masters = std::mem::take(&mut *MASTERS.lock().unwrap_or_else(|p| p.into_inner()));
    for socket in &masters {
        close_master(socket);
    }
    let staging = std::mem::take(&mut *STAGING.lock().unwrap_or_else(|p| p.into_inner()));
    for path in &staging {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
    eprintln!(
        "stopped at once: {} SSH connection(s) closed, {} staging path(s) removed; steps cut \
         short are not journaled and run again next time",
        masters.len(),
        staging.len()
    );
    std::process::exit(exit_code().unwrap_or(130).into());
}

/// `ssh -O exit` on one master's control socket.
fn close_master(socket: &Path) {
    let _ = std::process::Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-o", "BatchMode=yes", "-O", "exit", "none"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// An SSH master to close if ilha has to stop at once.
pub fn register_master(socket: &Path) {
    MASTERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(socket.to_path_buf());
}

/// The master was closed normally.
pub fn forget_master(socket: &Path) {
    MASTERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| s != socket);
}

/// A staging path (file or directory) removed when dropped, and by a stop at once.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    pub fn new(path: impl Into<PathBuf>) -> Staging {
        let path = path.into();
        STAGING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.clone());
        Staging { path, keep: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path is now a result, not staging: keep it.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        STAGING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s != &self.path);
        if !self.keep {
            let _ =
                std::fs::remove_dir_all(&self.path).or_else(|_| std::fs::remove_file(&self.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(scratch.join("deep")).unwrap();
        drop(Staging::new(&scratch));
        assert!(!scratch.exists());
        let result = dir.path().join("result");
        std::fs::write(&result, "x").unwrap();
        Staging::new(&result).keep();
        assert!(result.exists());
        assert!(STAGING.lock().unwrap().iter().all(|p| p != &result));
    }
}
