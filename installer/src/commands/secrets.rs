//! `ilha secrets`: Secrets encrypted at rest (`cluster::encryption`).

use crate::cluster::run;

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Encrypt Secrets with a new key: made here, added as a reader on every master, made the
    /// write key (apiservers restarted one at a time), every Secret rewritten, then the old key
    /// dropped. An interrupted rotation continues with the same command (or `ilha up`).
    RotateKey(super::up::ClusterArgs),
}

pub fn run(args: &SecretsArgs) -> anyhow::Result<()> {
    match &args.command {
        SecretsCommand::RotateKey(cluster) => {
            let report = super::up::runtime()?.block_on(run::rotate_key(&cluster.request()))?;
            print!("{}", report.render());
            Ok(())
        }
    }
}
