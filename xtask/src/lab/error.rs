//! The lab's typed errors: each names the command, file or host it is about.
use std::path::PathBuf;

pub type Result<T, E = LabError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab must run as root (it makes bridges, namespaces, mounts and cgroups)")]
    NotRoot,
    #[error(
        "missing tools: {}; install the Debian packages with: apt-get install -y {}",
        tools.join(", "),
        packages.join(" ")
    )]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{net}.0/24 is already routed by something else (`{route}`): set ILHA_LAB_NET to a free /24"
    )]
    SubnetTaken { net: String, route: String },
    #[error("{value:?} is not a valid {what}")]
    Invalid { what: &'static str, value: String },
    #[error("host h{index} does not exist (hosts are numbered from 1)")]
    NoSuchHost { index: usize },
    #[error(
        "host {host} ({ip}) did not accept SSH within {seconds} s (after one power-cut and boot); see {}",
        log.display()
    )]
    SshTimeout {
        host: String,
        ip: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("host {host}: launcher did not start; see {}", log.display())]
    LauncherDidNotStart { host: String, log: PathBuf },
    #[error("host {host} is not running: boot it first (`cargo xtask lab start {index}`)")]
    NotRunning { host: String, index: usize },
    #[error("in {host} (nsenter, no ssh) {script:?} failed ({status}): {stderr}")]
    Exec {
        host: String,
        script: String,
        status: String,
        stderr: String,
    },
    #[error("ssh to {host} ({ip}) failed ({status}) running {script:?}: {stderr}")]
    Ssh {
        host: String,
        ip: String,
        script: String,
        status: String,
        stderr: String,
    },
    #[error(
        "host {host} was made from base {host_base} but the base is now {current}: run `cargo xtask lab wipe`"
    )]
    BaseChanged {
        host: String,
        host_base: String,
        current: String,
    },
    #[error("host {host}: processes still running in {} after power-off", cgroup.display())]
    HostWontDie { host: String, cgroup: PathBuf },
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.into(),
            source,
        }
    }
}
