//! `ilha remove-node`: the seed's `remove-node.yml`, with its safety checks made explicit.
//!
//! Everything that can refuse is checked before the first change: the names are in the inventory,
//! a control-plane host stays, etcd keeps enough members for its quorum, a snapshot of etcd is
//! on the operator's side. Then, per host: cordon and drain, delete the Node, remove the etcd
//! member (before its etcd stops, so the cluster never counts a dead member), and reset the host.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::membership::{self, Member};
use super::run::{kubectl, load_inputs, targets};
use super::say;
use crate::inventory::{Inventory, Role};
use crate::ssh::{Fleet, Session, SshOptions};

#[derive(Debug, Clone)]
pub struct RemoveRequest {
    pub names: Vec<String>,
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
    pub force: bool,
    pub yes: bool,
    pub no_snapshot: bool,
    pub drain_timeout: Duration,
}

/// The names, checked against the inventory; the error names the inventory file.
fn check_names(inventory: &Inventory, names: &[String]) -> anyhow::Result<()> {
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !inventory.hosts.iter().any(|h| &h.name == *n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: no host named {} (remove-node works on hosts still listed in the inventory)",
            inventory.source.display(),
            unknown.join(", ")
        );
    }
    Ok(())
}

/// The members etcd answers for: the member list, and which of them answer a health check.
async fn etcd_view(elder: &Session) -> anyhow::Result<(Vec<Member>, Vec<String>)> {
    let list = elder
        .run(&membership::etcdctl("-w json member list"))
        .await
        .with_context(|| format!("{}: listing etcd members", elder.name()))?
        .stdout;
    let members = membership::parse_member_list(&list)?;
    let mut script = String::new();
    for m in &members {
        if let Some(url) = m.client_urls.first() {
            let _ = writeln!(
                script,
                "if {} >/dev/null 2>&1; then echo {}; fi",
                membership::etcdctl_at(url, "3s", "endpoint health"),
                crate::ssh::shell_quote(&m.name)
            );
        }
    }
    script.push_str("true\n");
    let healthy = elder
        .run_script("etcd health", &script)
        .await?
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    Ok((members, healthy))
}

pub async fn remove_nodes(request: &RemoveRequest) -> anyhow::Result<String> {
    let (inventory, config) = load_inputs(&request.inventory, request.config.as_deref())?;
    check_names(&inventory, &request.names)?;
    let removing = |name: &str| request.names.iter().any(|n| n == name);
    let staying_masters: Vec<&str> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::ControlPlane) && !removing(&h.name))
        .map(|h| h.name.as_str())
        .collect();
    if staying_masters.is_empty() && !request.force {
        bail!(
            "removing {} leaves no control-plane host: the cluster would have no API. \
             Nothing was changed (--force removes anyway)",
            request.names.join(", ")
        );
    }

    let mut state = crate::statedir::StateDir::open(&config.state_dir, "remove-node")?;
    say(format!("Connecting to {} hosts ...", inventory.hosts.len()));
    let (fleet, unreachable) = Fleet::connect_available(targets(&inventory), &request.ssh).await;
    super::identity::guard(&fleet, &config, "remove-node").await?;
    state.keep();
    for error in &unreachable {
        if removing(error.host()) {
            say(format!(
                "  {}: unreachable; it is removed from the cluster, but nothing on it can be cleaned ({error})",
                error.host()
            ));
        } else {
            say(format!("  warning: {error}"));
        }
    }
    let reachable = |name: &str| fleet.session(name).is_some();
    let admin = staying_masters.iter().copied().find(|m| reachable(m));
    let removing_etcd: Vec<&str> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Etcd) && removing(&h.name))
        .map(|h| h.name.as_str())
        .collect();
    let staying_etcd: Vec<String> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Etcd) && !removing(&h.name) && reachable(&h.name))
        .map(|h| h.name.clone())
        .collect();

    // etcd: the members left must hold a quorum of today's cluster.
    let mut etcd_members = Vec::new();
    if !removing_etcd.is_empty() {
        let Some(elder_name) = staying_etcd.first() else {
            bail!(
                "no etcd member that stays is reachable; cannot remove {} from etcd. Nothing was changed",
                removing_etcd.join(", ")
            );
        };
        let elder = fleet.session(elder_name).expect("reachable");
        let (members, healthy) = etcd_view(elder).await?;
        let healthy: Vec<&str> = healthy.iter().map(String::as_str).collect();
        if let Err(why) = membership::check_removal(&members, &removing_etcd, &healthy) {
            if !request.force {
                fleet.close().await;
                bail!("{why}. Nothing was changed (--force removes anyway)");
            }
            say(format!("  warning (--force): {why}"));
        }
        etcd_members = members;
        if request.no_snapshot {
            say("  no etcd snapshot taken (--no-snapshot)");
        } else {
            let snapshot = super::snapshot::save_from_any(&fleet, &staying_etcd, &config.state_dir)
                .await
                .context(
                    "an etcd snapshot must be saved before etcd members are removed; \
                     nothing was changed (--no-snapshot goes on without one)",
                )?;
            say(format!("  {snapshot}"));
        }
    }

    if !request.yes {
        super::confirm(
            &format!(
                "Remove {} from cluster {}? Their pods are evicted and everything ilha installed on them is deleted.",
                request.names.join(", "),
                config.cluster_name
            ),
            &config.cluster_name,
        )?;
    }

    let mut report = String::new();
    let mut unclean: Vec<String> = Vec::new();
    for name in &request.names {
        let host = inventory
            .hosts
            .iter()
            .find(|h| &h.name == name)
            .expect("checked");
        let mut done: Vec<String> = Vec::new();
        if host.is_kubernetes_node() {
            match admin {
                Some(admin) => {
                    let session = fleet.session(admin).expect("reachable");
                    done.extend(drain_and_delete(session, name, reachable(name), request).await?);
                }
                None => say(format!(
                    "  {name}: no control-plane host reachable; its Node object stays (delete it later with kubectl)"
                )),
            }
        }
        if host.has_role(Role::Etcd) {
            let member = etcd_members.iter().find(|m| &m.name == name);
            match (member, staying_etcd.first()) {
                (Some(member), Some(elder)) => {
                    let session = fleet.session(elder).expect("reachable");
                    session
                        .run(&membership::etcdctl(&format!(
                            "member remove {}",
                            member.hex_id()
                        )))
                        .await
                        .with_context(|| format!("removing {name} from etcd"))?;
                    done.push(format!("etcd member {} removed", member.hex_id()));
                }
                (None, _) => done.push("not an etcd member (any more)".to_string()),
                (Some(_), None) => {
                    bail!("{name}: no etcd member that stays is reachable to remove it")
                }
            }
            membership::forget(&config.state_dir, name)?;
        }
        if reachable(name) {
            let reset =
                super::reset::reset_hosts(&fleet, std::slice::from_ref(name), &config.state_dir)
                    .await
                    .with_context(|| {
                        format!("{name}: removed from the cluster, but its reset did not start")
                    })?;
            if reset.is_clean() {
                done.push("host reset".to_string());
            } else {
                unclean.push(reset.render());
                done.push("host reset INCOMPLETE (below)".to_string());
            }
        }
        say(format!("  {name}: {}", done.join("; ")));
        let _ = writeln!(report, "{name}: {}", done.join("; "));
    }
    fleet.close().await;
    if !unclean.is_empty() {
        bail!(
            "{report}removed from the cluster, but not everything on the host could be cleaned:\n{}",
            unclean.join("")
        );
    }
    let _ = writeln!(
        report,
        "Take {} out of {} and run `ilha up` with it: the other hosts then drop their routes \
         to its pods and their API proxies drop it.",
        request.names.join(", "),
        inventory.source.display()
    );
    Ok(report)
}

/// Cordon, drain and delete one Node. A host that cannot be reached cannot confirm its pods
/// stopped: the drain is given up after its timeout and the Node deleted anyway (its pods are
/// then garbage-collected and recreated elsewhere by their controllers).
async fn drain_and_delete(
    admin: &Session,
    name: &str,
    node_reachable: bool,
    request: &RemoveRequest,
) -> anyhow::Result<Vec<String>> {
    let quoted = crate::ssh::shell_quote(name);
    let exists = admin
        .run(&kubectl(&format!(
            "get node {quoted} -o name --ignore-not-found"
        )))
        .await?
        .stdout;
    if exists.trim().is_empty() {
        return Ok(vec!["no Node object".to_string()]);
    }
    let mut done = Vec::new();
    let drain = kubectl(&format!(
        "drain {quoted} --ignore-daemonsets --delete-emptydir-data --timeout={}s{}",
        request.drain_timeout.as_secs(),
        if request.force { " --force" } else { "" }
    ));
    match admin.run_script(&format!("drain {name}"), &drain).await {
        Ok(out) => {
            let evicted = out.stdout.lines().filter(|l| l.contains("evicted")).count();
            done.push(format!("drained ({evicted} pods evicted)"));
        }
        Err(e) if !node_reachable => {
            say(format!(
                "  {name}: drain did not finish ({e}); the host is unreachable, deleting its Node anyway"
            ));
            done.push("drain given up (host unreachable)".to_string());
        }
        Err(e) => bail!(
            "{name}: drain failed: {e}\nThe node is cordoned and nothing else was removed; \
             `kubectl uncordon {name}` undoes that (pods not managed by a controller block a \
             drain: delete them, or --force deletes them)"
        ),
    }
    admin
        .run(&kubectl(&format!("delete node {quoted}")))
        .await
        .with_context(|| format!("deleting Node {name}"))?;
    done.push("Node deleted".to_string());
    Ok(done)
}
