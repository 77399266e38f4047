//! Many hosts at once, bounded, each host's result kept whatever the others do.
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use super::error::{FleetError, SshError};
use super::lock::{HostLock, current_holder};
use super::options::{SshOptions, Target};
use super::report::{HostOutcome, Report};
use super::session::{Output, Session, UploadSource, source_sha256};

/// Open sessions to a set of hosts, in inventory order, each host locked for this command
/// (`ssh::lock`) for as long as the fleet lives.
#[derive(Debug)]
pub struct Fleet {
    sessions: Vec<Session>,
    locks: Vec<HostLock>,
    max_parallel: usize,
}

impl Fleet {
    /// Connects to every target (at most `max_parallel` at once). If any fails, the error lists
    /// every host that failed with its reason, and the connections that did open are closed.
    pub async fn connect(targets: Vec<Target>, options: &SshOptions) -> Result<Fleet, FleetError> {
        let (fleet, failures) = Fleet::connect_available(targets, options).await;
        if failures.is_empty() {
            Ok(fleet)
        } else {
            fleet.close().await;
            Err(FleetError { failures })
        }
    }

    /// Connects to every target it can: the fleet of those that answered, and one error per host
    /// that did not (for callers that carry on with the others). A host another `ilha` command
    /// holds (`ssh::lock`) counts as one that did not answer, with [`SshError::Locked`].
    pub async fn connect_available(
        targets: Vec<Target>,
        options: &SshOptions,
    ) -> (Fleet, Vec<SshError>) {
        let max_parallel = options.max_parallel.max(1);
        let order: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let mut results: Vec<(usize, Result<Session, SshError>)> = stream::iter(
            targets.into_iter().enumerate(),
        )
        .map(|(index, target)| async move { (index, Session::connect(target, options).await) })
        .buffer_unordered(max_parallel)
        .collect()
        .await;
        results.sort_by_key(|(index, _)| *index);
        let mut connected = Vec::new();
        let mut failures = Vec::new();
        for (_, result) in results {
            match result {
                Ok(session) => connected.push(session),
                Err(error) => failures.push(error),
            }
        }
        let holder = current_holder();
        let holder = &holder;
        let locked: Vec<(Session, Result<HostLock, SshError>)> = stream::iter(connected)
            .map(|session| async move {
                let lock =
                    HostLock::acquire(session.target(), session.control_socket(), holder).await;
                (session, lock)
            })
            .buffer_unordered(max_parallel)
            .collect()
            .await;
        let mut sessions = Vec::new();
        let mut locks = Vec::new();
        for (session, lock) in locked {
            match lock {
                Ok(lock) => {
                    locks.push(lock);
                    sessions.push(session);
                }
                Err(error) => {
                    failures.push(error);
                    let _ = session.close().await;
                }
            }
        }
        // Inventory order again (buffer_unordered finishes in any order), failures too.
        sessions.sort_by_key(|s| order.iter().position(|n| n == s.name()));
        failures.sort_by_key(|e| order.iter().position(|n| n == e.host()));
        (
            Fleet {
                sessions,
                locks,
                max_parallel,
            },
            failures,
        )
    }

    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// The session of the host with this inventory name.
    pub fn session(&self, name: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.name() == name)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Runs `work` for every host, at most `max_parallel` at once; a failing host never stops the
    /// others. Results come back in inventory order with each host's elapsed time.
    pub async fn each<T, E, F>(&self, work: F) -> Report<T, E>
    where
        F: AsyncFn(&Target, &Session) -> Result<T, E>,
    {
        let started = Instant::now();
        let work = &work;
        let mut hosts: Vec<(usize, HostOutcome<T, E>)> =
            stream::iter(self.sessions.iter().enumerate())
                .map(|(index, session)| async move {
                    let host_started = Instant::now();
                    let result = work(session.target(), session).await;
                    (
                        index,
                        HostOutcome {
                            host: session.name().to_string(),
                            elapsed: host_started.elapsed(),
                            result,
                        },
                    )
                })
                .buffer_unordered(self.max_parallel)
                .collect()
                .await;
        hosts.sort_by_key(|(index, _)| *index);
        Report {
            hosts: hosts.into_iter().map(|(_, outcome)| outcome).collect(),
            elapsed: started.elapsed(),
        }
    }

    /// [`Session::run`] on every host.
    pub async fn run_all(&self, script: &str) -> Report<Output, SshError> {
        self.each(async |_, session| session.run(script).await)
            .await
    }

    /// [`Session::upload`] of the same source to every host.
    pub async fn upload_all(
        &self,
        source: UploadSource<'_>,
        remote_path: &str,
        mode: u32,
    ) -> Report<(), SshError> {
        // Hashed once here rather than once per host.
        let digest = source_sha256(source).await;
        self.each(async |_, session| match &digest {
            Ok(digest) => {
                session
                    .upload_with_digest(source, digest, remote_path, mode)
                    .await
            }
            Err((path, error)) => Err(SshError::LocalIo {
                host: session.name().to_string(),
                path: path.clone(),
                source: std::io::Error::new(error.kind(), error.to_string()),
            }),
        })
        .await
    }

    /// Lets go of every host's lock, then ends every connection (errors are ignored: a host
    /// already gone has nothing to close).
    pub async fn close(self) {
        stream::iter(self.locks)
            .for_each_concurrent(None, HostLock::release)
            .await;
        stream::iter(self.sessions)
            .for_each_concurrent(None, |session| async move {
                let _ = session.close().await;
            })
            .await;
    }
}
