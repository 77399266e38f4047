//! `ilha reset`: remove everything ilha put on the hosts.

use crate::cluster::reset::{self, ResetOutcome, ResetRequest};
use crate::commands::up::HostsArgs;

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// Only these hosts (inventory names, comma-separated); default: every host.
    #[arg(long = "hosts", value_delimiter = ',', value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// List what would be removed on each host, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on without first saving an etcd snapshot to the state directory (when etcd members
    /// are among the hosts).
    #[arg(long)]
    pub no_snapshot: bool,
}

pub fn run(args: &ResetArgs) -> anyhow::Result<()> {
    let request = ResetRequest {
        inventory: args.hosts.inventory.clone(),
        config: args.hosts.config.clone(),
        ssh: args.hosts.ssh.options(),
        only: args.only.clone(),
        yes: args.yes,
        dry_run: args.dry_run,
        no_snapshot: args.no_snapshot,
    };
    match crate::commands::up::runtime()?.block_on(reset::reset(&request))? {
        ResetOutcome::DryRun(listing) => print!("{listing}{}", args.hosts.state_dir_line()),
        ResetOutcome::Done { snapshot, report } => {
            if let Some(snapshot) = snapshot {
                println!("{snapshot}");
            }
            print!("{}{}", report.render(), args.hosts.state_dir_line());
            if !report.is_clean() {
                anyhow::bail!(
                    "reset is not complete on {}: see the report above; running `ilha reset` \
                     again retries what failed",
                    report.unclean_hosts().join(", ")
                );
            }
        }
    }
    Ok(())
}
