//! One lab user at a time: an exclusive `flock` on `state_dir/lock`, held for the guard's life.
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

use rustix::fs::{FlockOperation, flock};

use super::{LabConfig, LabError, Result};

/// Dropping it releases the lock (closing the file does).
#[derive(Debug)]
pub struct LabLock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock(config: &LabConfig) -> Result<LabLock> {
    fs::create_dir_all(&config.state_dir).map_err(|e| LabError::io(&config.state_dir, e))?;
    let path = config.state_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io(&path, e))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!(
            "lab: {} is held by another user of the lab; waiting",
            path.display()
        );
        flock(&file, FlockOperation::LockExclusive).map_err(|e| LabError::io(&path, e.into()))?;
    }
    Ok(LabLock { _file: file, path })
}
