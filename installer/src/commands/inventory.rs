//! `ilha inventory show -i FILE [-c cluster.yaml] [--json]`: what ilha understands of an
//! inventory (and cluster config), before anything touches a host.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{ApiEndpoint, ClusterConfig};
use crate::inventory::{Host, Inventory, Role};

#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    #[command(subcommand)]
    pub command: InventoryCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum InventoryCommand {
    /// Parse and validate an inventory, then print its hosts and their roles.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The inventory: Kubespray INI (old `kube-master` or today's `kube_control_plane` names) or
    /// YAML (`hosts.yaml`).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The cluster config (YAML); checked against the inventory. Defaults apply without it.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print hosts, roles and the effective cluster config as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InventoryArgs) -> anyhow::Result<()> {
    match &args.command {
        InventoryCommand::Show(show) => run_show(show),
    }
}

#[derive(Serialize)]
struct ShowOutput<'a> {
    inventory: &'a Inventory,
    cluster: &'a ClusterConfig,
}

fn run_show(args: &ShowArgs) -> anyhow::Result<()> {
    let inventory = Inventory::load(&args.inventory)?;
    let config = ClusterConfig::load_or_default(args.config.as_deref(), &args.inventory)?;
    config.check_inventory(&inventory)?;
    for group in &inventory.unknown_groups {
        tracing::warn!(
            "{}:{}: group `{}` means nothing to ilha; its hosts get no role from it",
            inventory.source.display(),
            group.line,
            group.name
        );
    }
    let out = if args.json {
        let mut json = serde_json::to_string_pretty(&ShowOutput {
            inventory: &inventory,
            cluster: &config,
        })?;
        json.push('\n');
        json
    } else {
        render_text(&inventory, &config)
    };
    print!("{out}");
    Ok(())
}

fn render_text(inventory: &Inventory, config: &ClusterConfig) -> String {
    let dash = |ip: Option<std::net::IpAddr>| ip.map_or("-".to_string(), |ip| ip.to_string());
    let rows: Vec<[String; 5]> = inventory
        .hosts
        .iter()
        .map(|host: &Host| {
            [
                host.name.clone(),
                format!("{}@{}:{}", host.ssh_user, host.ssh_host, host.ssh_port),
                dash(host.ip),
                dash(host.access_ip),
                host.roles
                    .iter()
                    .map(Role::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let header = ["HOST", "SSH", "IP", "ACCESS_IP", "ROLES"].map(String::from);
    let mut widths = header.clone().map(|cell| cell.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let count = |role| inventory.with_role(role).count();
    let _ = writeln!(
        out,
        "\n{} hosts: {} control-plane, {} etcd, {} workers",
        inventory.hosts.len(),
        count(Role::ControlPlane),
        count(Role::Etcd),
        count(Role::Worker)
    );
    for group in &inventory.unknown_groups {
        let _ = writeln!(
            out,
            "unused group `{}` (line {}): ilha gives it no meaning",
            group.name, group.line
        );
    }
    let version = config
        .kubernetes_version
        .as_ref()
        .map_or("the bundle's".to_string(), ToString::to_string);
    let endpoint = match &config.api_endpoint {
        ApiEndpoint::NodeLocal => format!(
            "node-local (every node uses 127.0.0.1:{}, proxied to all control-plane hosts)",
            config.api_port
        ),
        ApiEndpoint::External { .. } => config.node_api_address(),
    };
    let _ = writeln!(
        out,
        "\ncluster {} (kubernetes {version}, dns domain {})\npods {}  services {}  network {}\nAPI endpoint {endpoint}\nstate in {}",
        config.cluster_name,
        config.dns_domain,
        config.pod_cidr,
        config.service_cidr,
        serde_json::to_value(config.network)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        config.state_dir.display(),
    );
    out
}
