//! Command-line parsing, logging set-up, and error/exit-code policy.
//!
//! Exit codes: 0 success; 1 any error (bad bundle, bad signature, I/O...); 2 usage error (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "ilha",
    version,
    about = "Verify ilha bundles and install Kubernetes from them, offline."
)]
pub struct Cli {
    /// More logs on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a bundle completely: signatures, every entry's size and sha256, nothing extra.
    Verify(VerifyArgs),
    /// List what a bundle or a restore kit contains.
    Inspect(InspectArgs),
    /// Read an inventory (Kubespray INI or YAML) and show its hosts and roles.
    Inventory(commands::inventory::InventoryArgs),
    /// Show what `up` would do on each host (bundle verified, hosts checked), changing nothing.
    Plan(commands::up::ClusterArgs),
    /// Build or complete the cluster: verify the bundle, preflight every host, then install.
    /// Idempotent: a second run changes nothing; after a failure it continues where it stopped.
    Up(commands::up::ClusterArgs),
    /// Bring hosts added to the inventory into the running cluster: only new hosts are installed;
    /// existing ones get the minimum change (routes, proxy lists), one at a time for etcd and the
    /// control plane. New etcd members join one by one with a health check in between.
    Scale(commands::up::ClusterArgs),
    /// Drain and remove nodes from Kubernetes (and etcd members from etcd), then remove what ilha
    /// installed on them. Refuses to break etcd's quorum or remove the last control-plane host.
    RemoveNode(commands::remove::RemoveNodeArgs),
    /// Remove everything ilha put on the hosts (units, binaries, data, containers, pod network,
    /// iptables chains), then compare each host with its pre-install record.
    Reset(commands::reset::ResetArgs),
    /// Write a signed restore kit: an etcd snapshot proven by a restore drill, /etc/kubernetes of
    /// every master, the state directory and every object through the API. `--schedule` installs
    /// periodic snapshots on the etcd members instead; `backup list` shows them.
    Backup(commands::backup::BackupArgs),
    /// Restore a kit: etcd disaster recovery on the same masters, or (`--objects`) the dumped
    /// objects into a new cluster. The kit is verified completely before any host is touched.
    Restore(commands::restore::RestoreArgs),
    /// The operator-side state directory: `state recover` rebuilds a lost one from the hosts.
    State(commands::state::StateArgs),
    /// A person's own kubeconfig: a short-lived certificate for their name, bound to a built-in
    /// role through RBAC, revocable (`--revoke`); the state directory's admin.conf stays the
    /// break-glass credential.
    Kubeconfig(commands::kubeconfig::KubeconfigArgs),
    /// Secrets encrypted at rest: `secrets rotate-key` moves every Secret to a new key.
    Secrets(commands::secrets::SecretsArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle (`.tar.zst`). Every entry is checked against the signed index; `FILE.minisig`
    /// next to it, when present, must be from the same key and name the same bundle.
    pub file: PathBuf,
    /// The minisign public key (`ilha.pub`) the bundle must be signed with.
    #[arg(long, env = "ILHA_PUBKEY")]
    pub pubkey: PathBuf,
    /// Also verify the whole-file signature `FILE.minisig` over every byte of the file (one more
    /// BLAKE2b pass, what `minisign -Vm FILE -p PUB` does); fails when `FILE.minisig` is missing.
    #[arg(long)]
    pub file_signature: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The bundle (`.tar.zst`).
    pub file: PathBuf,
    /// Verify the whole bundle with this public key before listing it. Without it the listing is
    /// read from the index as is, unverified.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print the index and totals as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints `error: ...` then one `caused by: ...` line per underlying cause.
pub fn report_error(err: &anyhow::Error) {
    let mut chain = err.chain();
    if let Some(top) = chain.next() {
        eprintln!("error: {top}");
    }
    for cause in chain {
        eprintln!("caused by: {cause}");
    }
}

pub fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2; --help/--version exit 0.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some((name, mode)) = host_lock(&cli.command) {
        crate::ssh::lock::set_command(name, mode);
    }
    let result = match cli.command {
        Command::Verify(args) => commands::verify::run(&args),
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Inventory(args) => commands::inventory::run(&args),
        Command::Plan(args) => commands::up::run_plan(&args),
        Command::Up(args) => commands::up::run_up(&args),
        Command::Scale(args) => commands::up::run_scale(&args),
        Command::RemoveNode(args) => commands::remove::run(&args),
        Command::Reset(args) => commands::reset::run(&args),
        Command::Backup(args) => commands::backup::run(&args),
        Command::Restore(args) => commands::restore::run(&args),
        Command::State(args) => commands::state::run(&args),
        Command::Kubeconfig(args) => commands::kubeconfig::run(&args),
        Command::Secrets(args) => commands::secrets::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err);
            // Stopped by Ctrl-C or SIGTERM: the status a shell expects (130, 143).
            ExitCode::from(crate::interrupt::exit_code().unwrap_or(1))
        }
    }
}

/// How each command that reaches hosts holds them (`ssh::lock`): exclusively when it may change
/// them, shared when it only reads.
fn host_lock(command: &Command) -> Option<(&'static str, crate::ssh::lock::LockMode)> {
    use crate::ssh::lock::LockMode::{Exclusive, Shared};
    Some(match command {
        Command::Plan(_) => ("plan", Shared),
        Command::Up(_) => ("up", Exclusive),
        Command::Scale(_) => ("scale", Exclusive),
        Command::RemoveNode(_) => ("remove-node", Exclusive),
        Command::Reset(_) => ("reset", Exclusive),
        Command::Backup(_) => ("backup", Exclusive),
        Command::Restore(_) => ("restore", Exclusive),
        // Reads hosts only; its state directory does not exist yet.
        Command::State(_) => ("state recover", Shared),
        Command::Kubeconfig(args) if args.list => ("kubeconfig --list", Shared),
        Command::Kubeconfig(_) => ("kubeconfig", Exclusive),
        Command::Secrets(_) => (crate::cluster::encryption::ROTATE_COMMAND, Exclusive),
        Command::Verify(_) | Command::Inspect(_) | Command::Inventory(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
