//! `ilha state`: the operator-side state directory. `state recover` rebuilds a lost one from the
//! cluster's hosts.

use crate::commands::up::{HostsArgs, runtime};
use crate::state::recover::{self, RecoverRequest};

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Rebuild a lost state directory (the cluster config's `state_dir`) from the hosts: the CAs
    /// and keys, every certificate, the pod ranges, etcd membership and pre-install records, so
    /// that `ilha up` finds every step done. Never overwrites a state directory with a PKI.
    Recover(RecoverArgs),
}

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub hosts: HostsArgs,
}

pub fn run(args: &StateArgs) -> anyhow::Result<()> {
    match &args.command {
        StateCommand::Recover(args) => {
            let request = RecoverRequest {
                inventory: args.hosts.inventory.clone(),
                config: args.hosts.config.clone(),
                ssh: args.hosts.ssh.options(),
            };
            let report = runtime()?.block_on(recover::recover(&request))?;
            print!("{report}");
            Ok(())
        }
    }
}
