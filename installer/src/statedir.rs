//! The state directory as a command holds it: one command at a time, and nothing left behind
//! by a command that changed nothing.
//!
//! The lock is an `flock` on `<state>/lock`, so it ends with the process however the process
//! ends; the file also names its holder (command, pid, machine, start time) for whoever is
//! refused. A holder line still there when the lock is free means the last run was killed
//! before it could clear it: the next run says so and carries on (finished steps are journaled
//! on the hosts). A state directory this command created is removed again when the command ends
//! without having changed a host ([`StateDir::keep`] not called): `ilha plan` or a refused `up`
//! in an empty directory leaves nothing there.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rustix::fs::{FlockOperation, flock};

use crate::ssh::lock::{Holder, LockMode};

/// The lock file inside the state directory (kept out of kits and copies).
pub const LOCK_FILE: &str = "lock";

/// A locked state directory; dropping it releases the lock (and removes the directory if this
/// command made it and changed nothing).
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    lock: File,
    /// The outermost directory this command made (`ilha-state/` for a default
    /// `ilha-state/<name>` made from nothing), removed if no host changed.
    created: Option<PathBuf>,
    keep: bool,
}

impl StateDir {
    /// Makes `path` (0700) if needed and locks it for `command`. Another live command holding
    /// it is an error naming that command.
    pub fn open(path: &Path, command: &str) -> anyhow::Result<StateDir> {
        let created = outermost_missing(path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating the state directory {}", path.display()))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = read_holder(&mut lock);
            bail!(
                "the state directory {} is in use by {}; wait for it to finish (one command at a \
                 time per state directory; the lock ends with its process, so there is nothing \
                 to clear by hand)",
                path.display(),
                if holder.is_empty() {
                    "another ilha command".to_string()
                } else {
                    holder
                }
            );
        }
        let earlier = read_holder(&mut lock);
        if !earlier.is_empty() {
            eprintln!(
                "note: the last command on {} did not end cleanly ({earlier}: killed, or its \
                 machine stopped); what it finished is journaled on the hosts and this run \
                 continues from there",
                path.display()
            );
        }
        let holder = Holder::this_process(command, LockMode::Exclusive);
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", holder.describe())
            .and_then(|()| lock.sync_data())
            .with_context(|| format!("writing {}", lock_path.display()))?;
        Ok(StateDir {
            path: path.to_path_buf(),
            lock,
            created,
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hosts are about to change: the directory now holds the cluster's state and stays.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

fn read_holder(lock: &mut File) -> String {
    let mut text = String::new();
    let _ = lock.rewind();
    let _ = lock.read_to_string(&mut text);
    text.trim().to_string()
}

/// The first of `path` and its ancestors that does not exist, counting from the root.
fn outermost_missing(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut missing = None;
    for ancestor in absolute.ancestors() {
        if ancestor.exists() {
            break;
        }
        missing = Some(ancestor.to_path_buf());
    }
    missing
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let (Some(created), false) = (&self.created, self.keep) {
            let _ = std::fs::remove_dir_all(created);
            return;
        }
        // A clean end: no holder line for the next run to warn about.
        let _ = self.lock.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_is_refused_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDir::open(&state, "up").unwrap();
        let error = StateDir::open(&state, "scale").unwrap_err().to_string();
        assert!(error.contains("is in use by `ilha up` from"), "{error}");
        assert!(
            error.contains(&format!("(pid {})", std::process::id())),
            "{error}"
        );
        drop(first);
        // Released: the next one takes it.
        let again = StateDir::open(&state, "scale").unwrap();
        drop(again);
    }

    #[test]
    fn a_directory_made_by_a_command_that_changed_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested/state");
        let opened = StateDir::open(&state, "plan").unwrap();
        std::fs::create_dir_all(state.join("bundle")).unwrap();
        std::fs::write(state.join("bundle/big"), vec![0u8; 4096]).unwrap();
        drop(opened);
        assert!(!state.exists());
        assert!(
            !dir.path().join("nested").exists(),
            "the parent it made too"
        );
        assert!(dir.path().exists());

        let mut kept = StateDir::open(&state, "up").unwrap();
        kept.keep();
        drop(kept);
        assert!(state.is_dir());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // An existing directory is never removed, kept or not.
        drop(StateDir::open(&state, "plan").unwrap());
        assert!(state.is_dir());
        assert_eq!(std::fs::read_to_string(state.join(LOCK_FILE)).unwrap(), "");
    }

    #[test]
    fn a_holder_line_left_by_a_killed_run_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOCK_FILE),
            "`ilha up` from x (pid 1), since then\n",
        )
        .unwrap();
        let opened = StateDir::open(dir.path(), "up").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(text.starts_with("`ilha up` from"), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(opened);
    }
}
