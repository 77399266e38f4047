//! `ilha remove-node`: take nodes out of the cluster without breaking it.

use std::time::Duration;

use crate::cluster::remove::{RemoveRequest, remove_nodes};
use crate::commands::up::{HostsArgs, runtime};

#[derive(Debug, clap::Args)]
pub struct RemoveNodeArgs {
    /// The hosts to remove (inventory names). They stay in the inventory for this command; take
    /// them out afterwards.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// Remove even when it leaves etcd without its quorum's worth of members or the cluster
    /// without a control-plane host.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Go on without first saving an etcd snapshot to the state directory (when an etcd member
    /// is removed).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Seconds `kubectl drain` may take per node.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub drain_timeout: u64,
}

pub fn run(args: &RemoveNodeArgs) -> anyhow::Result<()> {
    let request = RemoveRequest {
        names: args.names.clone(),
        inventory: args.hosts.inventory.clone(),
        config: args.hosts.config.clone(),
        ssh: args.hosts.ssh.options(),
        force: args.force,
        yes: args.yes,
        no_snapshot: args.no_snapshot,
        drain_timeout: Duration::from_secs(args.drain_timeout),
    };
    let report = runtime()?.block_on(remove_nodes(&request))?;
    print!("{report}{}", args.hosts.state_dir_line());
    Ok(())
}
