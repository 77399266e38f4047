//! `ilha restore KIT`: etcd disaster recovery, or the objects into a new cluster.

use std::path::PathBuf;

use crate::commands::backup::unlock;
use crate::commands::up::{HostsArgs, runtime};
use crate::restore::run::{Mode, RestoreRequest, restore};

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The restore kit (`.tar.zst`) written by `ilha backup`; `KIT.minisig` must be next to it.
    pub kit: PathBuf,
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// The public key the kit must be signed with; default: `<state>/kit-key/ilha.pub`.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// age identity file for a kit encrypted with --encrypt-to.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
    pub identity: Option<PathBuf>,
    /// The passphrase (first line) of a kit encrypted with --passphrase-file.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Restore the dumped objects into the cluster the config names (a new one), instead of
    /// recovering etcd on the kit's own masters.
    #[arg(long)]
    pub objects: bool,
    /// With --objects: print what would be created or changed, as a diff, writing nothing.
    #[arg(long, requires = "objects")]
    pub dry_run: bool,
    /// Do not ask for confirmation (etcd recovery).
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: &RestoreArgs) -> anyhow::Result<()> {
    let request = RestoreRequest {
        kit: args.kit.clone(),
        inventory: args.hosts.inventory.clone(),
        config: args.hosts.config.clone(),
        ssh: args.hosts.ssh.options(),
        pubkey: args.pubkey.clone(),
        unlock: unlock(args.identity.as_ref(), args.passphrase_file.as_ref())?,
        mode: if args.objects {
            Mode::Objects {
                dry_run: args.dry_run,
            }
        } else {
            Mode::Etcd
        },
        yes: args.yes,
    };
    let text = runtime()?.block_on(restore(&request))?;
    print!("{text}{}", args.hosts.state_dir_line());
    Ok(())
}
