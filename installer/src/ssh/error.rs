//! Errors, each naming the host (and command or file) it is about.
use std::fmt;
use std::path::PathBuf;

/// Why a host could not be connected to, read from ssh's exit and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// No route, refused, name not resolved.
    Unreachable,
    /// No answer within the connect timeout.
    TimedOut,
    /// Not in known_hosts and the policy is Strict.
    HostKeyUnknown,
    /// known_hosts holds another key for this host: possible impersonation.
    HostKeyChanged,
    /// The host refused every key offered.
    AuthRefused,
    /// Anything else ssh complained about (its message follows).
    Other,
}

impl ConnectFailure {
    /// Classifies ssh's stderr; ssh has no machine-readable failure codes (it exits 255 for all).
    pub fn classify(stderr: &str) -> ConnectFailure {
        let text = stderr.to_ascii_lowercase();
        if text.contains("remote host identification has changed")
            || text.contains("host key for") && text.contains("has changed")
        {
            ConnectFailure::HostKeyChanged
        } else if text.contains("host key is known for")
            || text.contains("host key verification failed")
        {
            ConnectFailure::HostKeyUnknown
        } else if text.contains("permission denied (") || text.contains("too many authentication") {
            ConnectFailure::AuthRefused
        } else if text.contains("timed out") {
            ConnectFailure::TimedOut
        } else if text.contains("no route to host")
            || text.contains("connection refused")
            || text.contains("network is unreachable")
            || text.contains("could not resolve hostname")
            || text.contains("name or service not known")
            || text.contains("connection closed by")
            || text.contains("connection reset")
        {
            ConnectFailure::Unreachable
        } else {
            ConnectFailure::Other
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::TimedOut => "timed out",
            ConnectFailure::HostKeyUnknown => "host key unknown (not in known_hosts)",
            ConnectFailure::HostKeyChanged => {
                "host key changed (does not match known_hosts: possible impersonation)"
            }
            ConnectFailure::AuthRefused => "authentication refused",
            ConnectFailure::Other => "ssh failed",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{target}: {failure}: {detail}")]
    Connect {
        /// `name (user@host:port)`.
        target: String,
        host: String,
        failure: ConnectFailure,
        detail: String,
    },
    #[error("{host}: `{command}` exited with {}: {stderr_tail}", exit_text(*code))]
    CommandFailed {
        host: String,
        /// First line of the script.
        command: String,
        code: Option<i32>,
        /// Last lines of its stderr.
        stderr_tail: String,
    },
    #[error("{host}: connection lost while running `{command}`: {detail}")]
    ConnectionLost {
        host: String,
        command: String,
        detail: String,
    },
    #[error("{host}: running ssh for `{command}`: {source}")]
    Ssh {
        host: String,
        command: String,
        #[source]
        source: openssh::Error,
    },
    #[error("{host}: {}: {source}", path.display())]
    LocalIo {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: {path}: sha256 {actual} on arrival, expected {expected}")]
    DigestMismatch {
        host: String,
        path: String,
        expected: String,
        actual: String,
    },
    /// Another `ilha` command holds the host (see `ssh::lock`).
    #[error("{host}: {detail}")]
    Locked { host: String, detail: String },
    /// The ssh user is not root and the inventory does not ask for sudo: every host command would
    /// fail. Found when the host is locked (the first command on it), before anything changes.
    #[error(
        "{host}: connected as `{user}` (uid {uid}), not root, and the inventory does not ask for sudo: set `ansible_become=true` for this host and give `{user}` a NOPASSWD sudo rule for root (for example `{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{user}), or connect as root with ansible_user=root"
    )]
    NotRoot {
        host: String,
        user: String,
        uid: String,
    },
    /// `ansible_become` is set and sudo would not run a command as root without a password (it
    /// asks for one, or the user may not use it). Found at the host lock, before any change.
    #[error(
        "{host}: `sudo -n` as `{user}` was refused ({detail}): ilha never types a password; give `{user}` a NOPASSWD rule for root, for example `{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{user} (then `sudo -n true` as {user} succeeds without a prompt), or connect as root with ansible_user=root"
    )]
    SudoRefused {
        host: String,
        user: String,
        /// sudo's own words: `sudo: a password is required`.
        detail: String,
    },
    /// `ansible_become` is set and the host has no `sudo` for the ssh user.
    #[error(
        "{host}: ansible_become is set but `sudo` is not installed for `{user}` ({detail}): install sudo and give `{user}` a NOPASSWD rule for root (`{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{user}), or connect as root with ansible_user=root"
    )]
    SudoMissing {
        host: String,
        user: String,
        detail: String,
    },
}

impl SshError {
    /// The host (inventory name) the error is about.
    pub fn host(&self) -> &str {
        match self {
            SshError::Connect { host, .. }
            | SshError::CommandFailed { host, .. }
            | SshError::ConnectionLost { host, .. }
            | SshError::Ssh { host, .. }
            | SshError::LocalIo { host, .. }
            | SshError::DigestMismatch { host, .. }
            | SshError::Locked { host, .. }
            | SshError::NotRoot { host, .. }
            | SshError::SudoRefused { host, .. }
            | SshError::SudoMissing { host, .. } => host,
        }
    }

    pub fn is_connection_lost(&self) -> bool {
        matches!(self, SshError::ConnectionLost { .. })
    }

    /// The host answered but ilha cannot act as root there (not root and no become, or sudo
    /// refused or missing): the operator fixes the user, not the network.
    pub fn is_privilege_problem(&self) -> bool {
        matches!(
            self,
            SshError::NotRoot { .. } | SshError::SudoRefused { .. } | SshError::SudoMissing { .. }
        )
    }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("code {code}"),
        None => "a signal".to_string(),
    }
}

/// Some hosts could not be connected to: every one is listed with its reason.
#[derive(Debug, thiserror::Error)]
pub struct FleetError {
    pub failures: Vec<SshError>,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let locked = self
            .failures
            .iter()
            .filter(|e| matches!(e, SshError::Locked { .. }))
            .count();
        let privilege = self
            .failures
            .iter()
            .filter(|e| e.is_privilege_problem())
            .count();
        if locked == self.failures.len() {
            write!(f, "{locked} host(s) in use by another ilha command:")?;
        } else if privilege == self.failures.len() {
            // They answered: the fix is the user or its sudo rule, not the network.
            write!(
                f,
                "{privilege} host(s) where ilha cannot run commands as root:"
            )?;
        } else {
            write!(f, "could not connect to {} host(s):", self.failures.len())?;
        }
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectFailure::{self, *};
    use super::{FleetError, SshError};

    #[test]
    fn hosts_refused_for_their_user_are_not_called_unreachable() {
        let sudo = SshError::SudoRefused {
            host: "h2".into(),
            user: "ops".into(),
            detail: "sudo: a password is required".into(),
        };
        let not_root = SshError::NotRoot {
            host: "h1".into(),
            user: "ops".into(),
            uid: "1000".into(),
        };
        let text = FleetError {
            failures: vec![not_root, sudo],
        }
        .to_string();
        assert!(
            text.starts_with("2 host(s) where ilha cannot run commands as root:\n  h1: connected as `ops` (uid 1000), not root"),
            "{text}"
        );
        assert!(
            text.contains("\n  h2: `sudo -n` as `ops` was refused"),
            "{text}"
        );
        let lost = SshError::Locked {
            host: "h3".into(),
            detail: "busy".into(),
        };
        let mixed = FleetError {
            failures: vec![lost],
        };
        assert!(mixed.to_string().starts_with("1 host(s) in use"));
    }

    #[test]
    fn classifies_real_ssh_messages() {
        let cases = [
            (
                "ssh: connect to host 10.88.0.99 port 22: No route to host",
                Unreachable,
            ),
            (
                "ssh: connect to host 10.88.0.11 port 2222: Connection refused",
                Unreachable,
            ),
            (
                "ssh: connect to host 192.0.2.1 port 22: Connection timed out",
                TimedOut,
            ),
            (
                "No ED25519 host key is known for 10.88.0.11 and you have requested strict checking.\r\nHost key verification failed.",
                HostKeyUnknown,
            ),
            (
                "@@@@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed.",
                HostKeyChanged,
            ),
            (
                "root@10.88.0.11: Permission denied (publickey).",
                AuthRefused,
            ),
            (
                "ssh: Could not resolve hostname nowhere: Name or service not known",
                Unreachable,
            ),
            ("something new", Other),
        ];
        for (stderr, expected) in cases {
            assert_eq!(ConnectFailure::classify(stderr), expected, "{stderr}");
        }
    }
}
