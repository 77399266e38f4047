//! `ilha backup`: a signed restore kit, scheduled snapshots on the masters, and their list.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::backup::kit::{self, Protection, Unlock};
use crate::backup::objects::DumpOptions;
use crate::backup::run::{BackupRequest, backup};
use crate::backup::schedule::{self, ScheduleSpec};
use crate::cluster::run::{load_inputs, targets};
use crate::commands::up::{HostsArgs, runtime};
use crate::inventory::Role;
use crate::ssh::Fleet;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// `list`: show the scheduled snapshots on each etcd member and their timer, instead of
    /// writing a kit.
    #[arg(value_parser = ["list"], value_name = "list")]
    pub list: Option<String>,
    #[command(flatten)]
    pub hosts: HostsArgs,
    /// The kit to write (`.tar.zst`; `KIT.minisig` is written next to it). Never overwritten.
    #[arg(long, value_name = "KIT", required_unless_present_any = ["schedule", "list"], conflicts_with = "list")]
    pub out: Option<PathBuf>,
    /// minisign secret key that signs the kit; default: `<state>/kit-key/ilha.key`, made on
    /// first use.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The password of an encrypted `--key`, first line of this file.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub key_password_file: Option<PathBuf>,
    /// Encrypt the kit to this age recipient (`age1…`), or to every recipient listed in this file.
    #[arg(
        long,
        value_name = "RECIPIENT|FILE",
        conflicts_with = "passphrase_file"
    )]
    pub encrypt_to: Option<String>,
    /// Encrypt the kit with the passphrase on the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Write the kit unencrypted (it holds the cluster's private keys and every Secret: anyone
    /// holding the file holds the cluster). A kit is encrypted unless this is given.
    #[arg(long, conflicts_with_all = ["encrypt_to", "passphrase_file"])]
    pub no_encrypt: bool,
    /// Also dump objects of these namespaces, which are left out by default (kube-system,
    /// kube-public, kube-node-lease).
    #[arg(long = "include-namespace", value_name = "NS")]
    pub include_namespaces: Vec<String>,
    /// Instead of a kit: install a systemd timer on every etcd member that takes a snapshot to
    /// /var/backups/ilha (checked with `snapshot status`), keeping the newest --keep.
    #[arg(long, conflicts_with_all = ["out", "key", "encrypt_to", "passphrase_file", "no_encrypt", "list"])]
    pub schedule: bool,
    /// When the timer fires (systemd OnCalendar).
    #[arg(
        long,
        default_value = "hourly",
        requires = "schedule",
        value_name = "CALENDAR"
    )]
    pub on_calendar: String,
    /// Snapshots kept on each member.
    #[arg(long, default_value_t = 24, requires = "schedule", value_name = "N")]
    pub keep: usize,
}

/// First line of a secret file (passphrases, key passwords).
pub(crate) fn read_secret_line(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("{}: the first line is empty", path.display());
    }
    Ok(line)
}

fn etcd_hosts(hosts: &HostsArgs) -> anyhow::Result<(Vec<String>, Vec<crate::ssh::Target>)> {
    let (inventory, _) = load_inputs(&hosts.inventory, hosts.config.as_deref())?;
    let names: Vec<String> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Etcd))
        .map(|h| h.name.clone())
        .collect();
    let wanted = targets(&inventory)
        .into_iter()
        .filter(|t| names.contains(&t.name))
        .collect();
    Ok((names, wanted))
}

pub fn run(args: &BackupArgs) -> anyhow::Result<()> {
    let hosts = &args.hosts;
    if args.list.is_some() {
        let (names, wanted) = etcd_hosts(hosts)?;
        let text = runtime()?.block_on(async {
            let fleet = Fleet::connect(wanted, &hosts.ssh.options()).await?;
            let listed = schedule::list(&fleet, &names).await;
            fleet.close().await;
            anyhow::Ok(schedule::render_list(&listed?))
        })?;
        print!("{text}");
        return Ok(());
    }
    if args.schedule {
        let spec = ScheduleSpec {
            on_calendar: args.on_calendar.clone(),
            keep: args.keep,
        };
        let (names, wanted) = etcd_hosts(hosts)?;
        let (_, config) = load_inputs(&hosts.inventory, hosts.config.as_deref())?;
        let text = runtime()?.block_on(async {
            let fleet = Fleet::connect(wanted, &hosts.ssh.options()).await?;
            crate::cluster::identity::guard(&fleet, &config, "backup --schedule").await?;
            let installed = schedule::install(&fleet, &names, &spec).await;
            fleet.close().await;
            installed
        })?;
        print!("{text}");
        return Ok(());
    }
    let protection = protection(args)?;
    let mut dump = DumpOptions::default();
    dump.skip_namespaces
        .retain(|ns| !args.include_namespaces.contains(ns));
    let request = BackupRequest {
        inventory: hosts.inventory.clone(),
        config: hosts.config.clone(),
        ssh: hosts.ssh.options(),
        out: args.out.clone().expect("required without --schedule"),
        key: args.key.clone(),
        key_password: args
            .key_password_file
            .as_deref()
            .map(read_secret_line)
            .transpose()?,
        protection,
        dump,
    };
    let report = runtime()?.block_on(backup(&request))?;
    print!("{report}{}", hosts.state_dir_line());
    Ok(())
}

/// How the kit is protected. Encrypted unless `--no-encrypt` says otherwise: no key is chosen
/// on the operator's behalf (one kept next to the kit or in the state directory would protect
/// nothing), so without a choice nothing is written.
fn protection(args: &BackupArgs) -> anyhow::Result<Protection> {
    Ok(
        match (&args.encrypt_to, &args.passphrase_file, args.no_encrypt) {
            (Some(recipients), _, _) => Protection::Recipients(kit::parse_recipients(recipients)?),
            (None, Some(file), _) => Protection::Passphrase(read_secret_line(file)?),
            (None, None, true) => Protection::None,
            (None, None, false) => bail!(
                "a restore kit holds the cluster's private keys and every Secret, so it is encrypted; \
             say how (nothing was written):\n  \
             --encrypt-to age1…    an age recipient, or a file of them (make one with \
             `age-keygen -o kit-identity.txt` and keep that file away from the kits: restore \
             needs it, `--identity`)\n  \
             --passphrase-file F   a passphrase on the first line of F (restore asks for the \
             same file)\n  \
             --no-encrypt          a plain kit (not recommended)"
            ),
        },
    )
}

/// How `restore` opens an encrypted kit.
pub(crate) fn unlock(
    identity: Option<&PathBuf>,
    passphrase_file: Option<&PathBuf>,
) -> anyhow::Result<Unlock> {
    Ok(match (identity, passphrase_file) {
        (Some(identity), _) => Unlock::Identities(identity.clone()),
        (None, Some(file)) => Unlock::Passphrase(read_secret_line(file)?),
        (None, None) => Unlock::None,
    })
}
