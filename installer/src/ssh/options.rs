//! What to connect to and how.
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One host as the inventory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The inventory's name for the host (`node1`), used in every message.
    pub name: String,
    /// Address or ssh_config alias handed to `ssh`.
    pub host: String,
    /// `None` leaves the port to ssh_config (default 22).
    pub port: Option<u16>,
    /// `None` leaves the user to ssh_config (default: the local user).
    pub user: Option<String>,
    /// `ssh -i FILE` (with `IdentitiesOnly=yes`): the inventory's private key for this host.
    pub identity_file: Option<PathBuf>,
    /// `ssh -J`: bastions, in order.
    pub jump_hosts: Vec<String>,
    /// ssh_config lines `Key=Value` taking precedence over the operator's config, as `-o` does;
    /// already checked to leave host key checking and the control connection alone.
    pub extra_options: Vec<String>,
    /// `ansible_become`: every command runs as root through `sudo -n` (see [`Target::uses_sudo`]).
    pub become_root: bool,
}

impl Target {
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            host: host.into(),
            port: None,
            user: None,
            identity_file: None,
            jump_hosts: Vec::new(),
            extra_options: Vec::new(),
            become_root: false,
        }
    }

    pub fn with_become_root(mut self, become_root: bool) -> Target {
        self.become_root = become_root;
        self
    }

    /// Whether commands are wrapped in `sudo -n`: become is asked and the ssh user is not root
    /// already. Root asking for become needs no sudo (and such a host may not have sudo at all),
    /// so it is run as is, like Ansible's sudo from root.
    pub fn uses_sudo(&self) -> bool {
        self.become_root && self.user.as_deref() != Some("root")
    }

    /// The ssh user as messages name it (`?` when left to ssh_config).
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("?")
    }

    pub fn with_identity_file(mut self, file: impl Into<PathBuf>) -> Target {
        self.identity_file = Some(file.into());
        self
    }

    pub fn with_jump_hosts(mut self, hosts: Vec<String>) -> Target {
        self.jump_hosts = hosts;
        self
    }

    pub fn with_extra_options(mut self, options: Vec<String>) -> Target {
        self.extra_options = options;
        self
    }

    pub fn with_user(mut self, user: impl Into<String>) -> Target {
        self.user = Some(user.into());
        self
    }

    pub fn with_port(mut self, port: u16) -> Target {
        self.port = Some(port);
        self
    }
}

impl fmt::Display for Target {
    /// `node1 (root@10.0.0.1:22)`: the name the operator knows and what ssh was aimed at.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.name)?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, ")")
    }
}

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KnownHostsPolicy {
    /// The key must already be in known_hosts (`StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// Explicit opt-in: learn the key of a host never seen before, still refuse a changed one
    /// (`StrictHostKeyChecking=accept-new`).
    AcceptNew,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `ssh -F FILE`; `None` reads `~/.ssh/config` and `/etc/ssh/ssh_config` as ssh does.
    pub config_file: Option<PathBuf>,
    /// `UserKnownHostsFile`; `None` keeps ssh_config's (default `~/.ssh/known_hosts`).
    pub known_hosts_file: Option<PathBuf>,
    pub known_hosts_policy: KnownHostsPolicy,
    /// TCP connect and SSH handshake limit per host.
    pub connect_timeout: Duration,
    /// Keepalive period: a host that stops answering is declared lost after about
    /// `ServerAliveCountMax` (ssh default 3) of these.
    pub server_alive_interval: Duration,
    /// Most hosts connected to or worked on at once.
    pub max_parallel: usize,
    /// Where the control sockets live (`None`: the system temp dir). Unix socket paths are limited
    /// to ~100 bytes, so keep it short.
    pub control_dir: Option<PathBuf>,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            config_file: None,
            known_hosts_file: None,
            known_hosts_policy: KnownHostsPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            server_alive_interval: Duration::from_secs(5),
            max_parallel: 10,
            control_dir: None,
        }
    }
}
