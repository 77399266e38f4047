//! `ilha kubeconfig`: a person's own, short-lived, revocable kubeconfig (see `crate::access`).

use std::path::PathBuf;

use crate::access::{self, AccessRole, IssueRequest};
use crate::cluster::run::load_inputs;
use crate::commands::up::{HostsArgs, runtime};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["user", "revoke", "list"])))]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// Issue a kubeconfig for this person (the certificate's CN; no group), bound to --role by
    /// the ClusterRoleBinding `ilha:user:NAME`.
    #[arg(long, value_name = "NAME", requires = "out")]
    pub user: Option<String>,
    /// The built-in role the user gets, in every namespace.
    #[arg(long, value_enum, default_value = "cluster-admin", requires = "user")]
    pub role: AccessRole,
    /// How long the certificate is valid: 30m, 8h, 7d (5m to 365d).
    #[arg(long, default_value = "24h", value_parser = access::parse_ttl, requires = "user")]
    pub ttl: time::Duration,
    /// Where to write the kubeconfig (0600; never overwritten).
    #[arg(long, value_name = "FILE", requires = "user")]
    pub out: Option<PathBuf>,
    /// Delete NAME's binding: their certificates are allowed nothing from now on.
    #[arg(long, value_name = "NAME")]
    pub revoke: Option<String>,
    /// Show the users issued from this state directory and their bindings on the cluster.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: &KubeconfigArgs) -> anyhow::Result<()> {
    let hosts = &args.hosts;
    let (inventory, config) = load_inputs(&hosts.inventory, hosts.config.as_deref())?;
    let ssh = hosts.ssh.options();
    let text = runtime()?.block_on(async {
        if let Some(user) = &args.user {
            access::issue(&IssueRequest {
                inventory: &inventory,
                config: &config,
                ssh: &ssh,
                user,
                role: args.role,
                ttl: args.ttl,
                out: args.out.as_deref().expect("clap: --user requires --out"),
            })
            .await
        } else if let Some(user) = &args.revoke {
            access::revoke(&inventory, &config, &ssh, user).await
        } else {
            access::list(&inventory, &config, &ssh).await
        }
    })?;
    print!("{text}");
    Ok(())
}
