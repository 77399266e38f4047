//! `ilha reset`: take off the hosts everything ilha put there, then compare each host with its
//! pre-install record and report what is still different.
//!
//! Order of business: inputs, the `--hosts` subset, SSH to each host, the records, confirmation
//! and (for etcd members) a snapshot are all settled before the first host changes; a failure
//! there changes nothing. Then hosts are torn down in parallel ([`reset_hosts`], which
//! `remove-node` uses too), each one captured again and compared with its record.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::journal::{self, Journal};
use super::record::{self, Difference, HostRecord};
use super::snapshot::{self, Snapshot};
use super::teardown::{self, Mode};
use super::{membership, say};
use crate::inventory::Inventory;
use crate::ssh::{Fleet, SshOptions};

/// What `ilha reset` is given.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
    /// Inventory names; empty: every host.
    pub only: Vec<String>,
    /// Confirmed already (`--yes`): do not ask.
    pub yes: bool,
    pub dry_run: bool,
    /// Go on without saving an etcd snapshot first.
    pub no_snapshot: bool,
}

/// How a host compares with its pre-install record after the teardown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    Matches,
    Differs(Vec<Difference>),
    /// Installed before ilha kept records: nothing to compare with.
    NoRecord,
    /// The host could not be captured again (the error).
    NotCompared(String),
}

/// One host's reset.
#[derive(Debug, Clone)]
pub struct HostReset {
    pub host: String,
    /// Actions the teardown reported done (0 when it failed: see `teardown_error`).
    pub actions: usize,
    /// The teardown's failed actions, if any failed.
    pub teardown_error: Option<String>,
    pub comparison: Comparison,
}

impl HostReset {
    /// Torn down without failure and nothing left that the record does not have.
    pub fn is_clean(&self) -> bool {
        self.teardown_error.is_none()
            && matches!(self.comparison, Comparison::Matches | Comparison::NoRecord)
    }
}

#[derive(Debug, Clone)]
pub struct ResetReport {
    /// In inventory order.
    pub hosts: Vec<HostReset>,
}

impl ResetReport {
    pub fn is_clean(&self) -> bool {
        self.hosts.iter().all(HostReset::is_clean)
    }

    /// Hosts with a failure or a difference.
    pub fn unclean_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| !h.is_clean())
            .map(|h| h.host.as_str())
            .collect()
    }

    /// One paragraph per host: what the teardown did and how the host compares with its record.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for host in &self.hosts {
            let done = match &host.teardown_error {
                None => format!("{} action(s) done", host.actions),
                Some(error) => format!("teardown FAILED:\n    {}", error.replace('\n', "\n    ")),
            };
            match &host.comparison {
                Comparison::Matches => {
                    let _ = writeln!(out, "{}: {done}; matches its pre-install record", host.host);
                }
                Comparison::NoRecord => {
                    let _ = writeln!(
                        out,
                        "{}: {done}; no record (installed before records existed): nothing to compare with",
                        host.host
                    );
                }
                Comparison::NotCompared(error) => {
                    let _ = writeln!(
                        out,
                        "{}: {done}; not compared with its record: {error}",
                        host.host
                    );
                }
                Comparison::Differs(differences) => {
                    let _ = writeln!(
                        out,
                        "{}: {done}; {} difference(s) from its pre-install record:",
                        host.host,
                        differences.len()
                    );
                    for difference in differences {
                        let _ = writeln!(out, "    {difference}");
                    }
                }
            }
        }
        out
    }
}

/// What `ilha reset` did.
#[derive(Debug)]
pub enum ResetOutcome {
    /// `--dry-run`: what each host would lose; nothing changed.
    DryRun(String),
    Done {
        snapshot: Option<Snapshot>,
        report: ResetReport,
    },
}

/// The records of `hosts`, read (and checked) before anything changes.
fn load_records(
    state_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<Vec<(String, Option<HostRecord>)>> {
    hosts
        .iter()
        .map(|host| {
            let record = record::load(state_dir, host).with_context(|| {
                format!(
                    "{host}: its pre-install record is unreadable; nothing was changed (fix it, \
                     or delete {} to reset without comparing)",
                    record::record_path(state_dir, host).display()
                )
            })?;
            Ok((host.clone(), record))
        })
        .collect()
}

/// Tears down `hosts` (inventory names, connected in `fleet`) in parallel, then captures each
/// again and compares it with `<state_dir>/records/<host>.txt`. Fails, changing nothing, when a
/// record cannot be read; a host's own failure is in its [`HostReset`].
pub async fn reset_hosts(
    fleet: &Fleet,
    hosts: &[String],
    state_dir: &Path,
) -> anyhow::Result<ResetReport> {
    let records = load_records(state_dir, hosts)?;
    let report = fleet
        .each(async |target, session| {
            let Some((_, record)) = records.iter().find(|(name, _)| *name == target.name) else {
                return Ok(None);
            };
            let script = teardown::script(record.as_ref(), Mode::Remove);
            let (actions, teardown_error) = match session.run_script("reset", &script).await {
                Ok(output) => (teardown::actions(&output.stdout).len(), None),
                Err(error) => (0, Some(error.to_string())),
            };
            let comparison = match (record, record::capture(session).await) {
                (None, _) => Comparison::NoRecord,
                (Some(_), Err(error)) => Comparison::NotCompared(format!("{error:#}")),
                (Some(before), Ok((_, after))) => {
                    let differences = HostRecord::differences(before, &after);
                    if differences.is_empty() {
                        Comparison::Matches
                    } else {
                        Comparison::Differs(differences)
                    }
                }
            };
            Ok::<_, std::convert::Infallible>(Some(HostReset {
                host: target.name.clone(),
                actions,
                teardown_error,
                comparison,
            }))
        })
        .await;
    let mut done: Vec<HostReset> = report
        .hosts
        .into_iter()
        .filter_map(|outcome| match outcome.result {
            Ok(reset) => reset,
            Err(never) => match never {},
        })
        .collect();
    for host in hosts {
        if !done.iter().any(|h| &h.host == host) {
            done.push(HostReset {
                host: host.clone(),
                actions: 0,
                teardown_error: Some(format!("{host}: not connected")),
                comparison: Comparison::NotCompared("not connected".to_string()),
            });
        }
    }
    Ok(ResetReport { hosts: done })
}

/// What `--dry-run` prints: per host, what the teardown would do.
pub async fn dry_run_hosts(
    fleet: &Fleet,
    hosts: &[String],
    state_dir: &Path,
) -> anyhow::Result<String> {
    let records = load_records(state_dir, hosts)?;
    let report = fleet
        .each(async |target, session| {
            let Some((_, record)) = records.iter().find(|(name, _)| *name == target.name) else {
                return Ok(None);
            };
            let script = teardown::script(record.as_ref(), Mode::DryRun);
            let output = session.run_script("reset --dry-run", &script).await?;
            Ok::<_, crate::ssh::SshError>(Some((record.is_some(), output.stdout)))
        })
        .await;
    let mut out = String::new();
    let mut failures = Vec::new();
    for outcome in report.hosts {
        match outcome.result {
            Ok(None) => {}
            Ok(Some((has_record, stdout))) => {
                let lines = teardown::actions(&stdout);
                let note = if has_record {
                    ""
                } else {
                    " (no pre-install record: installed before records existed)"
                };
                if lines.is_empty() {
                    let _ = writeln!(out, "{}{note}: nothing to remove", outcome.host);
                } else {
                    let _ = writeln!(out, "{}{note}: {} action(s)", outcome.host, lines.len());
                    for line in lines {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
    if !failures.is_empty() {
        bail!(
            "listing what reset would remove:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(out)
}

/// The hosts `--hosts` names (every host without it), checked against the inventory.
fn selected_hosts(inventory: &Inventory, only: &[String]) -> anyhow::Result<Vec<String>> {
    if only.is_empty() {
        return Ok(inventory.hosts.iter().map(|h| h.name.clone()).collect());
    }
    let unknown: Vec<&str> = only
        .iter()
        .map(String::as_str)
        .filter(|name| inventory.host(name).is_none())
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
        bail!(
            "--hosts names {} not in {} (its hosts: {}); nothing was changed",
            unknown.join(", "),
            inventory.source.display(),
            known.join(", ")
        );
    }
    // Inventory order, each once.
    Ok(inventory
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|name| only.contains(name))
        .collect())
}

/// etcd members among `hosts` that have run etcd (their journal has the `etcd` step): those
/// whose data a snapshot would save.
async fn installed_etcd_members(
    fleet: &Fleet,
    inventory: &Inventory,
    hosts: &[String],
) -> anyhow::Result<Vec<String>> {
    let members: Vec<String> = inventory
        .etcd()
        .map(|h| h.name.clone())
        .filter(|name| hosts.contains(name))
        .collect();
    let report = fleet
        .each(async |target, session| {
            if !members.contains(&target.name) {
                return Ok(false);
            }
            let text = session.run(&journal::read_script()).await?.stdout;
            Ok::<_, crate::ssh::SshError>(Journal::parse(&text).has("etcd"))
        })
        .await;
    let mut installed = Vec::new();
    for outcome in report.hosts {
        if outcome
            .result
            .context("reading the journal of an etcd member")?
        {
            installed.push(outcome.host);
        }
    }
    Ok(installed)
}

/// `ilha reset`.
pub async fn reset(request: &ResetRequest) -> anyhow::Result<ResetOutcome> {
    let (inventory, config) =
        super::run::load_inputs(&request.inventory, request.config.as_deref())?;
    let state_dir = config.state_dir.clone();
    let hosts = selected_hosts(&inventory, &request.only)?;
    // Records are checked before connecting: a bad one stops here.
    load_records(&state_dir, &hosts)?;
    let targets: Vec<_> = super::run::targets(&inventory)
        .into_iter()
        .filter(|t| hosts.contains(&t.name))
        .collect();

    let mut state = crate::statedir::StateDir::open(&state_dir, "reset")?;
    say(format!("Connecting to {} host(s) ...", targets.len()));
    let fleet = Fleet::connect(targets, &request.ssh)
        .await
        .context("cannot reach every host to reset; nothing was changed")?;
    // Resetting another cluster's hosts by mistake is as final as it gets.
    super::identity::guard(&fleet, &config, "reset").await?;
    if !request.dry_run {
        state.keep();
    }
    let outcome = reset_connected(
        request,
        &inventory,
        &config.cluster_name,
        &state_dir,
        &fleet,
        &hosts,
    )
    .await;
    fleet.close().await;
    outcome
}

async fn reset_connected(
    request: &ResetRequest,
    inventory: &Inventory,
    cluster_name: &str,
    state_dir: &Path,
    fleet: &Fleet,
    hosts: &[String],
) -> anyhow::Result<ResetOutcome> {
    let etcd_members = if request.no_snapshot {
        Vec::new()
    } else {
        installed_etcd_members(fleet, inventory, hosts).await?
    };
    if request.dry_run {
        let mut text = String::new();
        if !etcd_members.is_empty() {
            let _ = writeln!(
                text,
                "would first save an etcd snapshot (from {}) to {}",
                etcd_members.join(" or "),
                state_dir.join("snapshots").display()
            );
        }
        text.push_str(&dry_run_hosts(fleet, hosts, state_dir).await?);
        let _ = writeln!(text, "Nothing was changed (--dry-run).");
        return Ok(ResetOutcome::DryRun(text));
    }

    if !request.yes {
        let mut question = format!(
            "ilha reset removes everything ilha installed on {} host(s) of cluster `{cluster_name}` \
             ({}): Kubernetes and etcd with their data, containers and images, the pod network \
             and its iptables chains.",
            hosts.len(),
            hosts.join(", ")
        );
        if hosts.len() < inventory.hosts.len() {
            question.push_str(
                " The other hosts keep running and are not told (no drain, no etcd member \
                 removal): `ilha remove-node` takes hosts out of a running cluster.",
            );
        }
        super::confirm(&question, cluster_name)?;
    }

    let snapshot = if etcd_members.is_empty() {
        None
    } else {
        say(format!(
            "Saving an etcd snapshot (from {}) ...",
            etcd_members.join(" or ")
        ));
        let saved = snapshot::save_from_any(fleet, &etcd_members, state_dir)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}\nrefusing to reset etcd members without a snapshot of their data; \
                     nothing was changed (`--no-snapshot` resets without one)"
                )
            })?;
        Some(saved)
    };

    say(format!("Resetting {} ...", hosts.join(", ")));
    let report = reset_hosts(fleet, hosts, state_dir).await?;
    // A reset member's data is gone: installed again, it starts afresh.
    for host in &report.hosts {
        let is_member = inventory
            .host(&host.host)
            .is_some_and(|h| h.has_role(crate::inventory::Role::Etcd));
        if is_member && host.teardown_error.is_none() {
            membership::forget(state_dir, &host.host)?;
        }
    }
    Ok(ResetOutcome::Done { snapshot, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::Change;

    fn inventory() -> Inventory {
        Inventory::parse(
            Path::new("inventory.ini"),
            "h1 ansible_ssh_host=10.0.0.1 ip=10.0.0.1\nh2 ansible_ssh_host=10.0.0.2 ip=10.0.0.2\n\
             h3 ansible_ssh_host=10.0.0.3 ip=10.0.0.3\n\
             [kube-master]\nh1\n[etcd]\nh1\n[kube-node]\nh2\nh3\n\
             [k8s-cluster:children]\nkube-master\nkube-node\n",
        )
        .unwrap()
    }

    #[test]
    fn hosts_are_every_host_or_the_named_ones_in_inventory_order() {
        let inv = inventory();
        assert_eq!(selected_hosts(&inv, &[]).unwrap(), ["h1", "h2", "h3"]);
        let only = ["h3".to_string(), "h1".to_string(), "h3".to_string()];
        assert_eq!(selected_hosts(&inv, &only).unwrap(), ["h1", "h3"]);
    }

    #[test]
    fn an_unknown_host_is_named_with_the_inventory() {
        let err = selected_hosts(&inventory(), &["h9".to_string(), "h2".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--hosts names h9 not in inventory.ini"),
            "{err}"
        );
        assert!(err.contains("its hosts: h1, h2, h3"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
    }

    #[test]
    fn a_bad_record_stops_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = record::record_path(dir.path(), "h2");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "not a record\n").unwrap();
        let err = load_records(dir.path(), &["h1".into(), "h2".into()]).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("h2: its pre-install record is unreadable"),
            "{text}"
        );
        assert!(text.contains("records/h2.txt:1"), "{text}");
        std::fs::remove_file(&path).unwrap();
        let loaded = load_records(dir.path(), &["h1".into()]).unwrap();
        assert!(loaded[0].1.is_none());
    }

    #[test]
    fn the_report_says_per_host_how_it_compares() {
        let before = HostRecord::parse("b", "== links ==\n1: lo: <LOOPBACK>\n").unwrap();
        let after = HostRecord::parse(
            "a",
            "== links ==\n1: lo: <LOOPBACK>\n5: cni0: <BROADCAST>\n",
        )
        .unwrap();
        let differences = HostRecord::differences(&before, &after);
        assert_eq!(differences[0].change, Change::Added("cni0".into()));
        let report = ResetReport {
            hosts: vec![
                HostReset {
                    host: "h1".into(),
                    actions: 143,
                    teardown_error: None,
                    comparison: Comparison::Matches,
                },
                HostReset {
                    host: "h2".into(),
                    actions: 97,
                    teardown_error: None,
                    comparison: Comparison::Differs(differences),
                },
                HostReset {
                    host: "h3".into(),
                    actions: 0,
                    teardown_error: Some(
                        "h3: `reset` exited with code 1: FAILED: remove /var/lib/kubelet".into(),
                    ),
                    comparison: Comparison::NoRecord,
                },
            ],
        };
        let text = report.render();
        assert!(
            text.contains("h1: 143 action(s) done; matches its pre-install record\n"),
            "{text}"
        );
        assert!(
            text.contains("h2: 97 action(s) done; 1 difference(s) from its pre-install record:\n    links: interface added since the record: cni0\n"),
            "{text}"
        );
        assert!(
            text.contains("h3: teardown FAILED:\n    h3: `reset` exited"),
            "{text}"
        );
        assert!(!report.is_clean());
        assert_eq!(report.unclean_hosts(), ["h2", "h3"]);
        let clean = ResetReport {
            hosts: vec![report.hosts[0].clone()],
        };
        assert!(clean.is_clean());
    }
}
