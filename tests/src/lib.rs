//! Shared helpers for the end-to-end suites.
//!
//! Every suite that uses the lab's hosts starts with [`lab`]: it takes the lab's lock (so parallel
//! test binaries and threads never share hosts) and makes sure the hosts are up.
use std::ops::Deref;

pub mod apiserver;
pub mod cluster;
pub mod ssh;

use xtask::lab::{Lab, LabConfig, LabLock};

/// The lab, held exclusively until dropped.
pub struct LabSession {
    lab: Lab,
    _lock: LabLock,
}

impl Deref for LabSession {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// Takes the lab's lock (waiting for other users) without touching the hosts.
pub fn lab_locked() -> LabSession {
    let lab = Lab::new(LabConfig::from_env());
    let lock = lab
        .lock()
        .unwrap_or_else(|err| panic!("taking the lab's lock: {err}"));
    LabSession { lab, _lock: lock }
}

/// Takes the lab's lock, then boots hosts h1..h`hosts` that aren't up and waits for their sshd.
pub fn lab(hosts: usize) -> LabSession {
    let session = lab_locked();
    session
        .up(hosts)
        .unwrap_or_else(|err| panic!("bringing the lab up with {hosts} hosts: {err}"));
    session
}

/// Boots host `index` again when dropped, even by a panic, so later tests find it up.
pub struct RestartOnDrop<'a> {
    pub lab: &'a Lab,
    pub index: usize,
}

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.lab.start(self.index) {
            eprintln!("booting h{} again: {err}", self.index);
        }
    }
}
