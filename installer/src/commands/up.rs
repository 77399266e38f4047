//! `ilha plan` and `ilha up`: the arguments they share and the runtime they run on.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::run::{self, UpRequest};
use crate::ssh::{KnownHostsPolicy, SshOptions};

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The bundle (`.tar.zst`) made by `ilha-bundler build`.
    pub bundle: PathBuf,
    /// The minisign public key the bundle must be signed with.
    #[arg(long, env = "ILHA_PUBKEY")]
    pub pubkey: PathBuf,
    /// Let the bundle take Kubernetes, etcd or containerd back to an older patch release of the
    /// same minor (an older minor is always refused).
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub hosts: HostsArgs,
}

/// The hosts and the cluster config: what every command that reaches hosts is given.
#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    /// The inventory: Kubespray INI or YAML.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The cluster config (YAML); defaults apply without it. Its `state_dir` holds the cluster's
    /// PKI, pod ranges, pre-install records and snapshots.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// ssh_config file (`ssh -F`); default: ~/.ssh/config as ssh reads it.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// known_hosts file; default: ssh_config's (~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Learn the host key of hosts never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Most hosts worked on at once.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub parallel: usize,
    /// Seconds to wait for each host's SSH connection.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,
}

impl HostsArgs {
    /// `State directory: P`, the closing line of every command that works on a cluster: the
    /// one thing the operator must not lose or mix up.
    pub fn state_dir_line(&self) -> String {
        match crate::config::ClusterConfig::load_or_default(self.config.as_deref(), &self.inventory)
        {
            Ok(config) => format!("State directory: {}\n", config.state_dir.display()),
            Err(_) => String::new(),
        }
    }
}

impl SshArgs {
    pub fn options(&self) -> SshOptions {
        SshOptions {
            config_file: self.ssh_config.clone(),
            known_hosts_file: self.known_hosts.clone(),
            known_hosts_policy: if self.accept_new_host_keys {
                KnownHostsPolicy::AcceptNew
            } else {
                KnownHostsPolicy::Strict
            },
            connect_timeout: Duration::from_secs(self.connect_timeout),
            max_parallel: self.parallel.max(1),
            ..SshOptions::default()
        }
    }
}

impl ClusterArgs {
    pub(crate) fn request(&self) -> UpRequest {
        UpRequest {
            bundle: self.bundle.clone(),
            pubkey: self.pubkey.clone(),
            inventory: self.hosts.inventory.clone(),
            config: self.hosts.config.clone(),
            ssh: self.hosts.ssh.options(),
            allow_downgrade: self.allow_downgrade,
        }
    }
}

/// The runtime every command that reaches hosts runs on, listening for Ctrl-C and SIGTERM
/// (`crate::interrupt`): a first signal lets the command finish what is in flight.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    {
        let _entered = runtime.enter();
        crate::interrupt::listen();
    }
    Ok(runtime)
}

pub fn run_plan(args: &ClusterArgs) -> anyhow::Result<()> {
    let text = runtime()?.block_on(run::plan(&args.request()))?;
    print!("{text}");
    Ok(())
}

pub fn run_up(args: &ClusterArgs) -> anyhow::Result<()> {
    let report = runtime()?.block_on(run::up(&args.request()))?;
    print!("{}", report.render());
    Ok(())
}

pub fn run_scale(args: &ClusterArgs) -> anyhow::Result<()> {
    let report = runtime()?.block_on(run::scale(&args.request()))?;
    print!("{}", report.render());
    Ok(())
}
