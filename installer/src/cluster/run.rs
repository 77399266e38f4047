//! `ilha plan` and `ilha up`: from bundle, inventory and config to a running cluster.
//!
//! Order of business, and the promise it keeps: everything that can be checked without changing
//! a host (bundle signature and digests, the requirement list, inventory and config, SSH to every
//! host, preflight on every host) is checked first, and a failure there leaves every host as it
//! was. Then phases run in order, hosts in parallel within a phase; each finished step is
//! journaled on its host, so a re-run skips it and an interrupted run continues.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use super::bundle::InstallBundle;
use super::journal::{self, Journal};
use super::paths::*;
use super::steps::{self, Content, Phase, ProxyBinary, Step};
use super::{
    ClusterPlan, HostPlan, admission, allocations, certs, images, kubelet_serving, membership,
    render, say, versions,
};
use crate::config::ClusterConfig;
use crate::inventory::Inventory;
use crate::pki::Pki;
use crate::preflight::{self, HostChecks, PortNeed};
use crate::ssh::{Fleet, Session, SshError, SshOptions, Target};

/// What `plan` and `up` are given.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub bundle: PathBuf,
    pub pubkey: PathBuf,
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
    /// Lets the version guard go back to an older patch release (never an older minor).
    pub allow_downgrade: bool,
}

/// One step's outcome on one host, for the summary.
#[derive(Debug, Clone)]
pub struct StepTiming {
    pub host: String,
    pub step: String,
    pub elapsed: Duration,
    pub changed: bool,
}

#[derive(Debug)]
pub struct UpReport {
    pub steps_run: usize,
    pub steps_skipped: usize,
    /// Node objects labelled or given their pod range, and addon sets applied, after the phases.
    pub cluster_changes: usize,
    pub timings: Vec<StepTiming>,
    pub admin_kubeconfig: PathBuf,
    /// The cluster's state directory (its CAs): named in every summary, since it is the one
    /// thing the operator must not lose or mix up.
    pub state_dir: PathBuf,
    pub elapsed: Duration,
    pub nodes_ready: usize,
    /// Secrets at rest, when the cluster has keys.
    pub encryption: Option<super::encryption::Outcome>,
}

impl UpReport {
    pub fn changed_nothing(&self) -> bool {
        self.steps_run == 0 && self.cluster_changes == 0
    }

    /// The closing summary: what changed, the slowest steps, how to reach the cluster.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.changed_nothing() {
            let _ = writeln!(
                out,
                "Nothing changed: all {} steps were already done on every host.",
                self.steps_skipped
            );
        } else {
            let _ = writeln!(
                out,
                "{} steps run, {} already done; {} cluster object update(s).",
                self.steps_run, self.steps_skipped, self.cluster_changes
            );
            // Which hosts changed, and how: what `scale` promises to keep small.
            let mut by_host: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for t in self.timings.iter().filter(|t| t.changed) {
                by_host.entry(&t.host).or_default().push(&t.step);
            }
            let _ = writeln!(out, "Hosts changed:");
            for (host, steps) in &by_host {
                let _ = writeln!(out, "  {host:<14} {}", steps.join(", "));
            }
            let mut slowest: Vec<&StepTiming> = self.timings.iter().filter(|t| t.changed).collect();
            slowest.sort_by_key(|t| std::cmp::Reverse(t.elapsed));
            let _ = writeln!(out, "Slowest steps:");
            for t in slowest.iter().take(10) {
                let _ = writeln!(
                    out,
                    "  {:>7.1}s  {:<14} {}",
                    t.elapsed.as_secs_f64(),
                    t.host,
                    t.step
                );
            }
        }
        if let Some(encryption) = &self.encryption {
            out.push_str(&encryption.render());
        }
        let _ = writeln!(
            out,
            "{} nodes Ready in {:.1}s.\nState directory: {}\nAdmin kubeconfig: {}\n  kubectl --kubeconfig {} get nodes",
            self.nodes_ready,
            self.elapsed.as_secs_f64(),
            self.state_dir.display(),
            self.admin_kubeconfig.display(),
            self.admin_kubeconfig.display()
        );
        out
    }
}

/// Everything resolved before a host is changed.
pub(super) struct Prepared {
    pub(super) plan: ClusterPlan,
    bundle: InstallBundle,
    pub(super) fleet: Fleet,
    pub(super) steps: BTreeMap<String, Vec<Step>>,
    pub(super) journals: BTreeMap<String, Journal>,
    pub(super) state_dir: PathBuf,
    /// Locked for this run; removed at the end if this run made it and changed no host.
    state: crate::statedir::StateDir,
    pki: Pki,
    /// etcd members that have started before (their `etcd` step is journaled).
    established_etcd: Vec<String>,
    /// etcd members joining a running cluster, in the order they join.
    joining_etcd: Vec<String>,
    /// Kubelets moving to ilha's serving certificates (`kubelet_serving`).
    kubelet_rollout: kubelet_serving::Rollout,
    /// The masters' control-plane steps with `--kubelet-certificate-authority`, run after the
    /// nodes phase when some running kubelet did not serve ilha's certificate yet.
    verifying_control_plane: BTreeMap<String, Step>,
    /// Secrets at rest: the key set and what must run before the control plane rolls.
    pub(super) encryption: super::encryption::Rollout,
    /// The PodSecurityPolicy objects, applied from the first master after the control plane.
    policies: Option<Step>,
    /// Masters whose control plane first runs without the PodSecurityPolicy plugin (a running
    /// cluster whose policies were never applied), with the step that turns it on once they are.
    policy_second_pass: BTreeMap<String, Step>,
}

/// The inventory and the cluster config, checked against each other.
pub(crate) fn load_inputs(
    inventory: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(Inventory, ClusterConfig)> {
    let config = ClusterConfig::load_or_default(config, inventory)?;
    let inventory = Inventory::load(inventory)?;
    config.check_inventory(&inventory)?;
    Ok((inventory, config))
}

/// SSH targets for every host of the inventory, in inventory order.
pub(crate) fn targets(inventory: &Inventory) -> Vec<Target> {
    inventory
        .hosts
        .iter()
        .map(|h| {
            let target = Target::new(h.name.clone(), h.ssh_host.clone())
                .with_user(h.ssh_user.clone())
                .with_port(h.ssh_port)
                .with_become_root(h.become_root)
                .with_jump_hosts(h.ssh_args.jump_hosts.clone())
                .with_extra_options(h.ssh_args.options.clone());
            match &h.ssh_identity_file {
                Some(file) => target.with_identity_file(file.clone()),
                None => target,
            }
        })
        .collect()
}

/// Ports each role's services listen on, checked free by preflight (unless held by ilha's own
/// unit, on a re-run).
fn port_needs(host: &crate::inventory::Host, config: &ClusterConfig) -> Vec<PortNeed> {
    use crate::inventory::Role;
    let mut ports = Vec::new();
    if host.has_role(Role::Etcd) {
        ports.push(PortNeed {
            port: 2379,
            what: "etcd client",
            owner_unit: "etcd.service",
        });
        ports.push(PortNeed {
            port: 2380,
            what: "etcd peer",
            owner_unit: "etcd.service",
        });
    }
    if host.has_role(Role::ControlPlane) {
        ports.push(PortNeed {
            port: config.api_port,
            what: "kube-apiserver",
            owner_unit: "kube-apiserver.service",
        });
        ports.push(PortNeed {
            port: 10257,
            what: "kube-controller-manager",
            owner_unit: "kube-controller-manager.service",
        });
        ports.push(PortNeed {
            port: 10259,
            what: "kube-scheduler",
            owner_unit: "kube-scheduler.service",
        });
    } else if host.is_kubernetes_node() {
        ports.push(PortNeed {
            port: config.api_port,
            what: "node-local API proxy",
            owner_unit: "ilha-apiproxy.service",
        });
    }
    if host.is_kubernetes_node() {
        ports.push(PortNeed {
            port: 10250,
            what: "kubelet",
            owner_unit: "kubelet.service",
        });
        ports.push(PortNeed {
            port: 10256,
            what: "kube-proxy health",
            owner_unit: "kube-proxy.service",
        });
    }
    ports
}

/// Resolves everything; `scale` refuses hosts none of which was installed.
async fn prepare(request: &UpRequest, command: &'static str) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let require_cluster = command == "scale";
    let (inventory, config) = load_inputs(&request.inventory, request.config.as_deref())?;
    let state_dir = config.state_dir.clone();
    let state = crate::statedir::StateDir::open(&state_dir, command)?;

    say(format!("Verifying {} ...", request.bundle.display()));
    let bundle = InstallBundle::open(&request.bundle, &request.pubkey, &state_dir)?;
    say(format!("  {}", bundle.summary));
    let version = config.resolve_kubernetes_version(&bundle.version)?;
    // What the bundle's binaries need of a host's C library: read once, judged per host.
    let binary_needs = preflight::BundleNeeds::of_bundle(&bundle)?;

    say(format!("Connecting to {} hosts ...", inventory.hosts.len()));
    let fleet = Fleet::connect(targets(&inventory), &request.ssh)
        .await
        .context("cannot reach every host; nothing was changed")?;

    let platform_arch = bundle
        .index
        .platform
        .split('/')
        .nth(1)
        .unwrap_or("amd64")
        .to_string();
    let checks: Vec<HostChecks> = inventory
        .hosts
        .iter()
        .map(|h| HostChecks {
            host: h.name.clone(),
            expected_ip: h.ip,
            ports: port_needs(h, &config),
            arch: platform_arch.clone(),
            min_memory_mib: if h.is_kubernetes_node() || h.has_role(crate::inventory::Role::Etcd) {
                1024
            } else {
                512
            },
            min_disk_mib: 2048,
            needs_container_runtime: h.is_kubernetes_node(),
            binaries: binary_needs.for_host(&bundle.requirements, h),
            kubernetes_version: Some(version.clone()),
            kubelet_fail_cgroup_v1: config.kubelet_fail_cgroup_v1,
        })
        .collect();
    say("Preflight ...");
    let report = preflight::run(&fleet, &checks, SystemTime::now()).await;
    say(report.render());
    if !report.passed() {
        fleet.close().await;
        let failures: Vec<String> = report
            .failures()
            .map(|(host, check)| format!("  {host}: {}: {}", check.name, check.detail))
            .collect();
        bail!(
            "preflight failed; nothing was changed:\n{}",
            failures.join("\n")
        );
    }

    // Addresses: the inventory's `ip=`, else what preflight found on the host.
    let mut addresses: BTreeMap<String, IpAddr> = BTreeMap::new();
    for host in &inventory.hosts {
        let ip = match host.ip {
            Some(ip) => ip,
            None => report
                .hosts
                .iter()
                .find(|r| r.host == host.name)
                .and_then(|r| r.facts.detected_ip)
                .with_context(|| {
                    format!(
                        "{}: no `ip=` in {} (line {}) and no default-route address found on the host",
                        host.name,
                        inventory.source.display(),
                        host.line
                    )
                })?,
        };
        addresses.insert(host.name.clone(), ip);
    }
    let mut journals = read_journals(&fleet).await?;
    // Before anything is allocated, issued or pushed: these hosts must be this state
    // directory's cluster (or fresh), or the run would mint new CAs over a running cluster.
    super::identity::guard(&fleet, &config, command).await?;
    if require_cluster && journals.values().all(Journal::is_empty) {
        fleet.close().await;
        bail!(
            "no host of {} has been installed by ilha (no journal in {JOURNAL}): there is no \
             cluster to scale; `ilha up` builds one",
            inventory.source.display()
        );
    }
    let on_hosts = match versions::guard(&fleet, &bundle, &version, request.allow_downgrade).await {
        Ok(found) => found,
        Err(e) => {
            fleet.close().await;
            return Err(e);
        }
    };
    let node_names: Vec<&str> = inventory
        .kubernetes_nodes()
        .map(|h| h.name.as_str())
        .collect();
    let ranges = allocations::allocate(
        &state_dir,
        config.pod_cidr,
        config.node_cidr_prefix(),
        &node_names,
    )?;
    let mut hosts: Vec<HostPlan> = inventory
        .hosts
        .iter()
        .map(|h| {
            let ip = addresses[&h.name];
            HostPlan {
                name: h.name.clone(),
                ip,
                peer_ip: h.access_ip.unwrap_or(ip),
                roles: h.roles.clone(),
                pod_cidr: ranges.get(&h.name).copied(),
                etcd_bootstrap: None,
            }
        })
        .collect();
    let planned: Vec<membership::PlannedMember> = hosts
        .iter()
        .filter(|h| h.is_etcd())
        .map(|h| membership::PlannedMember {
            name: h.name.clone(),
            peer_url: render::etcd_peer_url(h),
            established: journals[&h.name].has("etcd"),
        })
        .collect();
    let established_etcd: Vec<String> = planned
        .iter()
        .filter(|m| m.established)
        .map(|m| m.name.clone())
        .collect();
    if established_etcd.is_empty() {
        inventory.check_odd_etcd()?;
    }
    let joining_etcd: Vec<String> = if established_etcd.is_empty() {
        Vec::new()
    } else {
        planned
            .iter()
            .filter(|m| !m.established)
            .map(|m| m.name.clone())
            .collect()
    };
    if !joining_etcd.is_empty() {
        // Growing etcd is only safe from a healthy cluster: checked before anything changes.
        let elder = fleet.session(&established_etcd[0]).expect("connected");
        elder
            .run(&membership::etcdctl("endpoint health --cluster"))
            .await
            .with_context(|| {
                format!(
                    "etcd must be healthy before {} can join; nothing was changed",
                    joining_etcd.join(", ")
                )
            })?;
    }
    let boot = membership::bootstrap(&state_dir, &planned)?;
    for host in &mut hosts {
        host.etcd_bootstrap = boot.get(&host.name).cloned();
    }
    // Read before anything changes: a key on a master that the state directory lacks stops here.
    let masters: Vec<String> = hosts
        .iter()
        .filter(|h| h.is_control_plane())
        .map(|h| h.name.clone())
        .collect();
    let rotate = command == super::encryption::ROTATE_COMMAND;
    let encryption = super::encryption::Rollout::prepare(
        &fleet, &state_dir, &config, &masters, &journals, rotate,
    )
    .await;
    let encryption = match encryption {
        Ok(rollout) => rollout,
        Err(e) => {
            fleet.close().await;
            return Err(e);
        }
    };
    let plan = ClusterPlan {
        config,
        version,
        pause_image: bundle.pause_image(),
        hosts,
        encryption: encryption.config.clone(),
    };

    let pki = Pki::open_or_init(&state_dir.join("pki"))
        .with_context(|| format!("opening the cluster PKI in {}", state_dir.display()))?;
    let (archive, archive_sha) =
        images::archive(&bundle.images_dir(), &bundle.dir.join("images.tar"))?;
    let apiproxy = ProxyBinary::embedded();
    let identity =
        super::identity::ClusterIdentity::of_state_dir(&state_dir, &plan.config.cluster_name)?
            .context("the state directory has no PKI right after it was made")?;
    let mut host_steps = BTreeMap::new();
    for host in &plan.hosts {
        let mut list = vec![steps::identity_step(&identity)];
        list.extend(steps::host_steps(
            &plan,
            &bundle,
            &pki,
            host,
            &(archive.clone(), archive_sha.clone()),
            &apiproxy,
        )?);
        steps::stage_binaries(&mut list, host, &on_hosts.host(&host.name));
        host_steps.insert(host.name.clone(), list);
    }
    let kubelet_rollout =
        kubelet_serving_rollout(&fleet, &plan, &pki, &mut journals, &host_steps).await?;
    let mut verifying_control_plane = BTreeMap::new();
    // Until every running kubelet serves ilha's certificate, kube-apiserver keeps not verifying
    // them: its steps before then are rendered without the item.
    let mut unverified = plan.clone();
    unverified.config.hardening.kubelet_serving_certificates = false;
    if kubelet_rollout.verify_after_nodes {
        for master in plan.control_plane() {
            let first = steps::host_steps(
                &unverified,
                &bundle,
                &pki,
                master,
                &(archive.clone(), archive_sha.clone()),
                &apiproxy,
            )?
            .into_iter()
            .find(|s| s.id == "control-plane")
            .expect("a control-plane host has a control-plane step");
            let slot = host_steps
                .get_mut(&master.name)
                .and_then(|list| list.iter_mut().find(|s| s.id == "control-plane"))
                .expect("a control-plane host has a control-plane step");
            verifying_control_plane.insert(master.name.clone(), std::mem::replace(slot, first));
        }
    }
    let policies = steps::pod_security_policies_step(&plan);
    let mut policy_second_pass = BTreeMap::new();
    if policies.is_some() && policies_pending(&plan, &journals) {
        for host in plan.control_plane() {
            let list = host_steps.get_mut(&host.name).expect("planned");
            if let Some(step) = list.iter_mut().find(|s| s.id == "control-plane") {
                // The same kubelet verification as the step it stands in for.
                let apiserver_plan = if kubelet_rollout.verify_after_nodes {
                    &unverified
                } else {
                    &plan
                };
                let first = step.replacing(render::apiserver_unit_with(
                    apiserver_plan,
                    host,
                    admission::PolicyPlugin::NotYet,
                ));
                policy_second_pass.insert(host.name.clone(), std::mem::replace(step, first));
            }
        }
    }

    tracing::debug!(elapsed = ?started.elapsed(), "prepared");
    Ok(Prepared {
        plan,
        bundle,
        fleet,
        steps: host_steps,
        journals,
        state_dir,
        state,
        pki,
        established_etcd,
        joining_etcd,
        kubelet_rollout,
        verifying_control_plane,
        encryption,
        policies,
        policy_second_pass,
    })
}

/// Reads each node's kubelet serving pair and decides the [`kubelet_serving::Rollout`].
async fn kubelet_serving_rollout(
    fleet: &Fleet,
    plan: &ClusterPlan,
    pki: &Pki,
    journals: &mut BTreeMap<String, Journal>,
    host_steps: &BTreeMap<String, Vec<Step>>,
) -> anyhow::Result<kubelet_serving::Rollout> {
    if !plan.config.hardening.kubelet_serving_certificates {
        return Ok(kubelet_serving::Rollout::default());
    }
    let probes = match fleet
        .run_all(&kubelet_serving::probe_script())
        .await
        .into_result()
    {
        Ok(outputs) => outputs
            .into_iter()
            .map(|(host, output)| (host, output.stdout))
            .collect(),
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!(
                "reading the kubelets' serving certificates: {}",
                errors.join("; ")
            )
        }
    };
    let marker = kubelet_serving::marker_digest(plan, pki)?;
    Ok(kubelet_serving::Rollout::decide(
        plan, &marker, journals, host_steps, &probes,
    ))
}

/// Whether the PodSecurityPolicy plugin must wait for its policies: a control plane already runs
/// (it may have workloads, whose new pods the plugin would refuse without a policy) and no master
/// has ever applied them. A new cluster starts with the plugin on: it has no pods until the
/// policies, applied as soon as the API serves, are in place.
fn policies_pending(plan: &ClusterPlan, journals: &BTreeMap<String, Journal>) -> bool {
    let masters = || plan.control_plane().map(|m| &journals[&m.name]);
    masters().any(|j| j.has("control-plane"))
        && !masters().any(|j| j.has(admission::POLICIES_JOURNAL_ID))
}

async fn read_journals(fleet: &Fleet) -> anyhow::Result<BTreeMap<String, Journal>> {
    match fleet.run_all(&journal::read_script()).await.into_result() {
        Ok(outputs) => Ok(outputs
            .into_iter()
            .map(|(host, output)| (host, Journal::parse(&output.stdout)))
            .collect()),
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!("reading the hosts' journals: {}", errors.join("; "))
        }
    }
}

/// `ilha plan`: what `up` would do on each host, changing nothing.
pub async fn plan(request: &UpRequest) -> anyhow::Result<String> {
    let prepared = prepare(request, "plan").await?;
    let mut out = String::new();
    let mut to_run = 0;
    for host in &prepared.plan.hosts {
        let journal = &prepared.journals[&host.name];
        let roles: Vec<String> = host.roles.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(
            out,
            "{} ({}, {}{})",
            host.name,
            host.ip,
            roles.join(", "),
            host.pod_cidr
                .map(|c| format!(", pods {c}"))
                .unwrap_or_default()
        );
        for step in &prepared.steps[&host.name] {
            let done = journal.is_done(step.id, &step.digest);
            if !done {
                to_run += 1;
            }
            let files: Vec<&str> = step
                .uploads
                .iter()
                .map(|u| u.remote_path.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {:<8} {:<14} {} file(s), {:.1} MiB{}",
                if done { "done" } else { "will run" },
                step.id,
                files.len(),
                step.upload_bytes() as f64 / (1024.0 * 1024.0),
                if done || files.len() > 4 {
                    String::new()
                } else {
                    format!(": {}", files.join(" "))
                }
            );
        }
    }
    let rollout = &prepared.kubelet_rollout;
    if rollout.verify_after_nodes {
        let _ = writeln!(
            out,
            "Kubelets serving self-signed certificates ({}) restart one at a time with ilha's; \
             then every master's control-plane step runs again, kube-apiserver verifying kubelets.",
            rollout.unverified.join(", ")
        );
    }
    if !rollout.changed_on_host.is_empty() {
        let _ = writeln!(
            out,
            "The kubelet serving certificate was changed on {}: ilha's is put back.",
            rollout.changed_on_host.join(", ")
        );
    }
    out.push_str(&admission::plan_summary(&prepared.plan));
    if let Some(policies) = &prepared.policies
        && !prepared.journals[&first_master(&prepared.plan).name]
            .is_done(policies.id, &policies.digest)
    {
        to_run += 1;
        let _ = writeln!(
            out,
            "  will run: apply the PodSecurityPolicy objects ({}) from {}{}",
            admission::POLICIES_FILE,
            first_master(&prepared.plan).name,
            if prepared.policy_second_pass.is_empty() {
                String::new()
            } else {
                format!(
                    ", then restart kube-apiserver with the PodSecurityPolicy plugin on {}, one \
                     at a time",
                    prepared
                        .policy_second_pass
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let _ = writeln!(
        out,
        "{to_run} step(s) to run. Nothing was changed (state: {}).",
        prepared.state_dir.display()
    );
    prepared.fleet.close().await;
    Ok(out)
}

/// Shell function the step scripts use to put a small file in place: decoded from base64 into a
/// temporary name next to it, its sha256 checked, then renamed, so the path never holds a
/// partial or corrupt file.
const PUT_FILE: &str = r#"put() { # PATH MODE SHA256, content as base64 on stdin
  mkdir -p "$(dirname "$1")"
  t=$(mktemp "$1.ilha-tmp.XXXXXX")
  base64 -d > "$t"
  if ! printf '%s  %s\n' "$3" "$t" | sha256sum --check --status; then
    rm -f "$t"; echo "$1: sha256 on arrival is not $3" >&2; exit 97
  fi
  chmod "$2" "$t"; mv -f "$t" "$1"
}
"#;

/// Runs one step on one host: large files (binaries, the image archive) are streamed unless
/// already in place; small ones travel inside the step's script, which then acts and journals
/// the step, all in one round trip.
pub(super) async fn run_step(session: &Session, step: &Step) -> Result<(), SshError> {
    let large: Vec<&steps::Upload> = step
        .uploads
        .iter()
        .filter(|u| matches!(u.content, Content::File { .. }))
        .collect();
    if !large.is_empty() {
        // Files already in place (an earlier, interrupted run) are not sent again.
        let mut check = String::from("for f in");
        for upload in &large {
            check.push(' ');
            check.push_str(&crate::ssh::shell_quote(&upload.remote_path));
        }
        check.push_str("; do if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done");
        let present = session.run(&check).await?.stdout;
        for upload in large {
            let in_place = present.lines().any(|l| {
                l.split_once("  ") == Some((upload.sha256.as_str(), upload.remote_path.as_str()))
            });
            if in_place {
                continue;
            }
            let Content::File { path, .. } = &upload.content else {
                unreachable!("filtered above")
            };
            session
                .upload_with_digest(
                    crate::ssh::UploadSource::File(path),
                    &upload.sha256,
                    &upload.remote_path,
                    upload.mode,
                )
                .await?;
        }
    }
    let mut script = String::from(PUT_FILE);
    for upload in &step.uploads {
        if let Content::Bytes(bytes) = &upload.content {
            use base64::Engine as _;
            let _ = write!(
                script,
                "put {} {:o} {} <<'ILHA_EOF'\n{}\nILHA_EOF\n",
                crate::ssh::shell_quote(&upload.remote_path),
                upload.mode,
                upload.sha256,
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
        }
    }
    script.push_str(&step.script);
    script.push('\n');
    if !step.uploads.is_empty() {
        script.push_str("printf '%s\\n'");
        for upload in &step.uploads {
            script.push(' ');
            script.push_str(&crate::ssh::shell_quote(&upload.remote_path));
        }
        script.push_str(&format!(" >> {INSTALLED_FILES}\n"));
    }
    script.push_str(&journal::record_script(step.id, &step.digest));
    script.push('\n');
    session
        .run_script(&format!("step {}", step.id), &script)
        .await?;
    Ok(())
}

/// Runs `phase`'s steps on the hosts named in `only` (each host that has some), in parallel.
async fn run_phase(
    prepared: &Prepared,
    phase: Phase,
    only: &[&str],
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    run_phase_with(prepared, &prepared.steps, phase, only, timings).await
}

/// [`run_phase`] with `host_steps` in place of the planned steps.
async fn run_phase_with(
    prepared: &Prepared,
    host_steps: &BTreeMap<String, Vec<Step>>,
    phase: Phase,
    only: &[&str],
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    let report = prepared
        .fleet
        .each(async |target, session| {
            let mut done = Vec::new();
            if !only.contains(&target.name.as_str()) {
                return Ok(done);
            }
            let journal = &prepared.journals[&target.name];
            let Some(steps) = host_steps.get(&target.name) else {
                return Ok(done);
            };
            for step in steps.iter().filter(|s| s.phase == phase) {
                if journal.is_done(step.id, &step.digest) {
                    done.push((step.id, Duration::ZERO, false));
                    continue;
                }
                // After Ctrl-C or SIGTERM no new step starts; the run ends below.
                if crate::interrupt::requested().is_some() {
                    break;
                }
                let started = Instant::now();
                if let Err(e) = run_step(session, step).await {
                    return Err((done, step.id, e));
                }
                let elapsed = started.elapsed();
                say(format!(
                    "  {:<14} {:<14} done in {:.1}s",
                    target.name,
                    step.id,
                    elapsed.as_secs_f64()
                ));
                done.push((step.id, elapsed, true));
            }
            Ok(done)
        })
        .await;
    let (mut run, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for outcome in report.hosts {
        let finished = match outcome.result {
            Ok(done) => done,
            Err((done, step, error)) => {
                failures.push(format!("{}: step `{step}`: {error}", outcome.host));
                done
            }
        };
        for (step, elapsed, changed) in finished {
            if changed {
                run += 1;
            } else {
                skipped += 1;
            }
            timings.push(StepTiming {
                host: outcome.host.clone(),
                step: step.to_string(),
                elapsed,
                changed,
            });
        }
    }
    if let Err(interrupted) = crate::interrupt::check() {
        // Steps a terminal's Ctrl-C cut short (their ssh ended with it) are not journaled.
        let cut: Vec<String> = failures
            .iter()
            .map(|f| f.split(": ").take(2).collect::<Vec<_>>().join(": "))
            .collect();
        bail!(
            "{interrupted} (phase `{}`, {run} step(s) finished in it{})",
            phase.title(),
            if cut.is_empty() {
                String::new()
            } else {
                format!("; cut short, to run again: {}", cut.join(", "))
            }
        );
    }
    if !failures.is_empty() {
        bail!(
            "phase `{}` failed:\n  {}\nSteps finished so far are journaled on each host; \
             fix the cause and run `ilha up` again to continue from here.",
            phase.title(),
            failures.join("\n  ")
        );
    }
    Ok((run, skipped))
}

/// Retries `script` on `session` until it succeeds or `timeout` passes.
pub(crate) async fn wait_for(
    session: &Session,
    what: &str,
    script: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        crate::interrupt::check()?;
        match session.run(script).await {
            Ok(out) => return Ok(out.stdout),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{}: {what} not reached within {}s: {e}",
                    session.name(),
                    timeout.as_secs()
                )
            }
            Err(e) if e.is_connection_lost() => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Health of the etcd members named (all must answer).
fn etcd_health_script(plan: &ClusterPlan, members: &[&str]) -> String {
    let endpoints: Vec<String> = members
        .iter()
        .filter_map(|name| plan.host(name))
        .map(|m| format!("https://{}", super::ip_port(m.peer_ip, 2379)))
        .collect();
    membership::etcdctl_at(&endpoints.join(","), "3s", "endpoint health")
}

/// `etcdctl member add` for `joiner` unless etcd already lists its peer URL (an earlier,
/// interrupted run added it).
async fn add_etcd_member(elder: &Session, joiner: &HostPlan) -> anyhow::Result<bool> {
    let url = render::etcd_peer_url(joiner);
    let list = elder
        .run(&membership::etcdctl("-w json member list"))
        .await?
        .stdout;
    let members = membership::parse_member_list(&list)
        .with_context(|| format!("{}: etcd member list", elder.name()))?;
    if members.iter().any(|m| m.peer_urls.contains(&url)) {
        return Ok(false);
    }
    elder
        .run(&membership::etcdctl(&format!(
            "member add {} --peer-urls={}",
            crate::ssh::shell_quote(&joiner.name),
            url
        )))
        .await
        .with_context(|| format!("adding {} to etcd", joiner.name))?;
    Ok(true)
}

/// `kubectl` as cluster admin on a control-plane host.
pub(crate) fn kubectl(args: &str) -> String {
    format!("{BIN_DIR}/kubectl --kubeconfig={ADMIN_CONF} --request-timeout=5s {args}")
}

/// `ilha up`.
pub async fn up(request: &UpRequest) -> anyhow::Result<UpReport> {
    install(request, "up").await
}

/// `ilha secrets rotate-key`: `up` with a new write key (`cluster::encryption`).
pub async fn rotate_key(request: &UpRequest) -> anyhow::Result<UpReport> {
    install(request, super::encryption::ROTATE_COMMAND).await
}

/// `ilha scale`: `up` on an inventory that grew, refusing when there is no cluster yet.
pub async fn scale(request: &UpRequest) -> anyhow::Result<UpReport> {
    install(request, "scale").await
}

pub(super) fn record_wait(timings: &mut Vec<StepTiming>, host: &str, what: &str, since: Instant) {
    timings.push(StepTiming {
        host: host.to_string(),
        step: format!("wait: {what}"),
        elapsed: since.elapsed(),
        changed: false,
    });
}

/// Whether `host` has run `step` before but must run it again (an update, not a first install).
fn is_update(prepared: &Prepared, host: &str, step: &str) -> bool {
    let journal = &prepared.journals[host];
    journal.has(step)
        && prepared.steps[host]
            .iter()
            .any(|s| s.id == step && !journal.is_done(s.id, &s.digest))
}

/// The etcd phase. A new cluster starts every member at once. A running one is changed one
/// member at a time with a health check after each: members whose unit, binary or certificates
/// changed restart in turn, then newcomers are added (`member add`) and started one by one.
async fn etcd_phase(
    prepared: &Prepared,
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    let plan = &prepared.plan;
    let all: Vec<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();
    let members: Vec<&str> = plan.etcd_members().map(|m| m.name.as_str()).collect();
    if prepared.established_etcd.is_empty() {
        let counts = run_phase(prepared, Phase::Etcd, &all, timings).await?;
        let first = prepared.fleet.session(members[0]).expect("connected");
        let t = Instant::now();
        wait_for(
            first,
            "etcd cluster health",
            &etcd_health_script(plan, &members),
            Duration::from_secs(120),
        )
        .await?;
        record_wait(timings, "cluster", "etcd healthy", t);
        say(format!("  etcd: {} members healthy", members.len()));
        return Ok(counts);
    }

    let rolling: Vec<&str> = prepared
        .established_etcd
        .iter()
        .map(String::as_str)
        .filter(|m| is_update(prepared, m, "etcd"))
        .chain(prepared.joining_etcd.iter().map(String::as_str))
        .collect();
    let rest: Vec<&str> = all
        .iter()
        .copied()
        .filter(|h| !rolling.contains(h))
        .collect();
    let (mut run, mut skipped) = run_phase(prepared, Phase::Etcd, &rest, timings).await?;
    let mut healthy: Vec<&str> = prepared
        .established_etcd
        .iter()
        .map(String::as_str)
        .collect();
    for name in rolling {
        let host = plan.host(name).expect("planned");
        let joining = !healthy.contains(&name);
        // An elder other than the member changing answers for the cluster (a one-member
        // cluster answers for itself once restarted).
        let elder_name = *healthy
            .iter()
            .find(|m| **m != name)
            .or(healthy.first())
            .expect("a running cluster has a member");
        let elder = prepared.fleet.session(elder_name).expect("connected");
        if joining && add_etcd_member(elder, host).await? {
            say(format!(
                "  etcd: {name} added as a member (via {elder_name})"
            ));
        }
        let (r, s) = run_phase(prepared, Phase::Etcd, &[name], timings).await?;
        run += r;
        skipped += s;
        if joining {
            healthy.push(name);
        }
        let t = Instant::now();
        wait_for(
            elder,
            &format!("etcd healthy with {name}"),
            &etcd_health_script(plan, &healthy),
            Duration::from_secs(120),
        )
        .await?;
        record_wait(timings, name, "etcd healthy", t);
        say(format!(
            "  etcd: {} members healthy after {name} {}",
            healthy.len(),
            if joining { "joined" } else { "restarted" }
        ));
    }
    Ok((run, skipped))
}

/// The control-plane phase: masters installed for the first time start together; masters whose
/// services changed restart one at a time, each ready again before the next.
async fn control_plane_phase(
    prepared: &Prepared,
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    let plan = &prepared.plan;
    let rolling: Vec<&str> = plan
        .control_plane()
        .map(|m| m.name.as_str())
        .filter(|m| is_update(prepared, m, "control-plane"))
        .collect();
    let rest: Vec<&str> = plan
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| !rolling.contains(h))
        .collect();
    let (mut run, mut skipped) = run_phase(prepared, Phase::ControlPlane, &rest, timings).await?;
    let t = Instant::now();
    for master in plan
        .control_plane()
        .filter(|m| !rolling.contains(&m.name.as_str()))
    {
        wait_api_ready(prepared, &master.name).await?;
    }
    record_wait(timings, "cluster", "API ready", t);
    for name in rolling {
        let (r, s) = run_phase(prepared, Phase::ControlPlane, &[name], timings).await?;
        run += r;
        skipped += s;
        let t = Instant::now();
        wait_api_ready(prepared, name).await?;
        record_wait(timings, name, "API ready", t);
        say(format!("  {name}: control plane restarted and ready"));
    }
    say("  kube-apiserver ready on every control-plane host");
    Ok((run, skipped))
}

pub(super) async fn wait_api_ready(prepared: &Prepared, master: &str) -> anyhow::Result<()> {
    let session = prepared.fleet.session(master).expect("connected");
    wait_for(
        session,
        "kube-apiserver /readyz",
        &kubectl("get --raw=/readyz"),
        Duration::from_secs(180),
    )
    .await?;
    Ok(())
}

async fn install(request: &UpRequest, command: &'static str) -> anyhow::Result<UpReport> {
    let started = Instant::now();
    let mut prepared = prepare(request, command).await?;
    crate::interrupt::check()?;
    // From here on hosts change: the state directory is the cluster's and stays.
    prepared.state.keep();
    let state_dir = prepared.state_dir.clone();
    match install_prepared(prepared, started).await {
        Ok(report) => Ok(report),
        Err(e) if crate::interrupt::requested().is_some() => Err(e.context(format!(
            "`ilha {command}` stopped early: finished steps are journaled on each host and \
             nothing else was started. Run `ilha {command}` again with the same inventory and \
             config to continue from there (state directory: {}).",
            state_dir.display()
        ))),
        Err(e) => Err(e),
    }
}

async fn install_prepared(prepared: Prepared, started: Instant) -> anyhow::Result<UpReport> {
    let plan = &prepared.plan;
    let mut timings = Vec::new();
    let (mut run, mut skipped) = (0, 0);
    let everyone: Vec<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();

    // What `reset` will compare against: each host as it was before ilha's first step on it.
    let fresh: Vec<String> = prepared
        .journals
        .iter()
        .filter(|(_, journal)| journal.is_empty())
        .map(|(host, _)| host.clone())
        .collect();
    if !fresh.is_empty() {
        super::record::record_before_install(&prepared.fleet, &fresh, &prepared.state_dir)
            .await
            .context("recording the hosts' state before the install; nothing was changed")?;
    }

    for phase in Phase::ALL {
        crate::interrupt::check()?;
        say(format!("Phase: {}", phase.title()));
        let (r, s) = match phase {
            Phase::Etcd => etcd_phase(&prepared, &mut timings).await?,
            Phase::ControlPlane => {
                // A new write key is first added as a reader on every running apiserver.
                super::encryption::stage(&prepared, &mut timings).await?;
                let (r, s) = control_plane_phase(&prepared, &mut timings).await?;
                let (pr, ps) = pod_security_policies(&prepared, &mut timings).await?;
                (r + pr, s + ps)
            }
            Phase::Nodes => nodes_phase(&prepared, &everyone, &mut timings).await?,
            Phase::Prepare => run_phase(&prepared, phase, &everyone, &mut timings).await?,
        };
        run += r;
        skipped += s;
    }
    run += verify_kubelets(&prepared, &mut timings).await?;

    let master = plan
        .control_plane()
        .next()
        .expect("validated: a control-plane host");
    let session = prepared.fleet.session(&master.name).expect("connected");
    let t = Instant::now();
    let nodes: Vec<&str> = plan.nodes().map(|n| n.name.as_str()).collect();
    let nodes_ready = wait_nodes_ready(session, &nodes, Duration::from_secs(240)).await?;
    record_wait(&mut timings, "cluster", "nodes Ready", t);
    let encryption = super::encryption::finish(&prepared, &mut timings).await?;
    let cluster_changes = finish_nodes(session, plan).await?
        + apply_addons(&prepared, session).await?
        + usize::from(encryption.as_ref().is_some_and(|e| e.changed()));
    if plan.config.hardening.kubelet_serving_certificates {
        let t = Instant::now();
        let nodes: Vec<&HostPlan> = plan.nodes().collect();
        wait_for(
            session,
            "kube-apiserver reaching every kubelet, verifying its certificate",
            &kubelet_serving::verified_script(&nodes),
            Duration::from_secs(60),
        )
        .await
        .context(
            "kube-apiserver cannot reach or verify the kubelets named above \
             (hardening.kubelet_serving_certificates): `ilha up` again puts ilha's serving \
             certificate back where it was changed; `journalctl -u kubelet` on the node says \
             why it does not serve",
        )?;
        record_wait(&mut timings, "cluster", "kubelets verified", t);
        say("  kube-apiserver verifies every kubelet's serving certificate");
    }

    let admin = prepared.state_dir.join("admin.conf");
    let text = certs::operator_admin_kubeconfig(&prepared.pki, plan)?;
    if std::fs::read_to_string(&admin).ok().as_deref() != Some(text.as_str()) {
        // 0600 before the first byte: it holds the cluster-admin key.
        crate::fsutil::write_atomic(&admin, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", admin.display()))?;
    }
    prepared.fleet.close().await;
    Ok(UpReport {
        steps_run: run,
        steps_skipped: skipped,
        cluster_changes,
        timings,
        // Written just above, so it exists: the canonical path is the one to copy.
        admin_kubeconfig: std::fs::canonicalize(&admin).unwrap_or(admin),
        state_dir: std::fs::canonicalize(&prepared.state_dir)
            .unwrap_or_else(|_| prepared.state_dir.clone()),
        elapsed: started.elapsed(),
        nodes_ready,
        encryption,
    })
}

/// The nodes phase: every node at once, except kubelets moving to ilha's serving certificate
/// (`kubelet_serving`): those go one node at a time, each serving through kube-apiserver and
/// Ready before the next, so that `exec` and `logs` keep working on the others.
async fn nodes_phase(
    prepared: &Prepared,
    everyone: &[&str],
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    let rolling = &prepared.kubelet_rollout.rolling;
    let rest: Vec<&str> = everyone
        .iter()
        .copied()
        .filter(|h| !rolling.iter().any(|r| r == h))
        .collect();
    let (mut run, mut skipped) = run_phase(prepared, Phase::Nodes, &rest, timings).await?;
    let Some(master) = prepared.plan.control_plane().next() else {
        return Ok((run, skipped));
    };
    let session = prepared.fleet.session(&master.name).expect("connected");
    for name in rolling {
        let (r, s) = run_phase(prepared, Phase::Nodes, &[name], timings).await?;
        run += r;
        skipped += s;
        let t = Instant::now();
        wait_for(
            session,
            &format!("the kubelet of {name} answering through kube-apiserver, Ready"),
            &kubelet_serving::serving_and_ready_script(name),
            Duration::from_secs(120),
        )
        .await?;
        record_wait(timings, name, "kubelet serving, Ready", t);
        say(format!(
            "  {name}: kubelet serving ilha's certificate and Ready"
        ));
    }
    Ok((run, skipped))
}

fn first_master(plan: &ClusterPlan) -> &HostPlan {
    plan.control_plane()
        .next()
        .expect("validated: a control-plane host")
}

/// Applies the PodSecurityPolicy objects from the first master (journaled there), then, on a
/// cluster whose control plane ran without the plugin, restarts each master's kube-apiserver with
/// it on, one at a time, each ready again before the next. Before the policies exist the plugin
/// would refuse every new pod.
async fn pod_security_policies(
    prepared: &Prepared,
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<(usize, usize)> {
    let Some(policies) = &prepared.policies else {
        return Ok((0, 0));
    };
    let master = &first_master(&prepared.plan).name;
    let (mut run, mut skipped) = (0, 0);
    if prepared.journals[master].is_done(policies.id, &policies.digest) {
        skipped += 1;
    } else {
        crate::interrupt::check()?;
        let session = prepared.fleet.session(master).expect("connected");
        let t = Instant::now();
        run_step(session, policies)
            .await
            .with_context(|| format!("{master}: applying {}", admission::POLICIES_FILE))?;
        timings.push(StepTiming {
            host: master.clone(),
            step: policies.id.to_string(),
            elapsed: t.elapsed(),
            changed: true,
        });
        run += 1;
        say(format!(
            "  {master}: PodSecurityPolicy objects applied ({})",
            admission::POLICIES_FILE
        ));
    }
    for host in prepared.plan.control_plane() {
        let Some(step) = prepared.policy_second_pass.get(&host.name) else {
            continue;
        };
        crate::interrupt::check()?;
        let only = BTreeMap::from([(host.name.clone(), vec![step.clone()])]);
        let (r, s) =
            run_phase_with(prepared, &only, Phase::ControlPlane, &[&host.name], timings).await?;
        run += r;
        skipped += s;
        let t = Instant::now();
        wait_api_ready(prepared, &host.name).await?;
        record_wait(timings, &host.name, "API ready", t);
        say(format!(
            "  {}: kube-apiserver restarted with the PodSecurityPolicy plugin and ready",
            host.name
        ));
    }
    Ok((run, skipped))
}

/// After the nodes phase, when kube-apiserver was kept from verifying kubelets: every master's
/// control-plane step with `--kubelet-certificate-authority`, one master at a time, each ready
/// again before the next. Returns the steps run.
async fn verify_kubelets(
    prepared: &Prepared,
    timings: &mut Vec<StepTiming>,
) -> anyhow::Result<usize> {
    let mut run = 0;
    for master in prepared.plan.control_plane() {
        let Some(step) = prepared.verifying_control_plane.get(&master.name) else {
            continue;
        };
        crate::interrupt::check()?;
        let session = prepared.fleet.session(&master.name).expect("connected");
        let started = Instant::now();
        run_step(session, step).await.with_context(|| {
            format!(
                "{}: step `control-plane` (kube-apiserver verifying kubelets); run `ilha up` \
                 again to continue",
                master.name
            )
        })?;
        timings.push(StepTiming {
            host: master.name.clone(),
            step: step.id.to_string(),
            elapsed: started.elapsed(),
            changed: true,
        });
        run += 1;
        wait_api_ready(prepared, &master.name).await?;
        say(format!(
            "  {}: kube-apiserver restarted verifying kubelets, ready",
            master.name
        ));
    }
    Ok(run)
}

/// Waits until every node named in `want` is Ready.
pub(crate) async fn wait_nodes_ready(
    session: &Session,
    want: &[&str],
    timeout: Duration,
) -> anyhow::Result<usize> {
    let script = kubectl(
        "get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}'",
    );
    let deadline = Instant::now() + timeout;
    loop {
        crate::interrupt::check()?;
        let out = session
            .run(&script)
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        let ready: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, status)| *status == "True")
            .map(|(name, _)| name)
            .collect();
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|n| !ready.contains(n))
            .collect();
        if missing.is_empty() {
            say(format!("  {} nodes Ready", want.len()));
            return Ok(want.len());
        }
        if Instant::now() >= deadline {
            bail!(
                "nodes not Ready within {}s: {} (look at `journalctl -u kubelet` on them)",
                timeout.as_secs(),
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Control-plane labels (kubelets may not set `node-role` labels on themselves) and each node's
/// pod range on its Node object. Returns how many nodes were changed.
async fn finish_nodes(session: &Session, plan: &ClusterPlan) -> anyhow::Result<usize> {
    // Label values are empty, so "labelled" is asked with a selector, not read with jsonpath.
    let out = session
        .run(&format!(
            "{}\necho ---\n{}",
            kubectl(
                "get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.spec.podCIDR}{\"\\n\"}{end}'"
            ),
            kubectl("get nodes -l node-role.kubernetes.io/control-plane -o name"),
        ))
        .await?
        .stdout;
    let (cidrs, labelled) = out.split_once("---").unwrap_or((out.as_str(), ""));
    let labelled: Vec<&str> = labelled
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node/"))
        .collect();
    let mut changed = 0;
    for line in cidrs.lines() {
        let Some((name, cidr)) = line.trim().split_once('=') else {
            continue;
        };
        let Some(host) = plan.host(name) else {
            continue;
        };
        let mut script = String::new();
        if host.is_control_plane() && !labelled.contains(&name) {
            script.push_str(&kubectl(&format!(
                "label node {name} node-role.kubernetes.io/control-plane= node-role.kubernetes.io/master= --overwrite\n"
            )));
        }
        if let (Some(range), true) = (host.pod_cidr, cidr.is_empty()) {
            script.push_str(&kubectl(&format!(
                "patch node {name} --type=merge -p '{{\"spec\":{{\"podCIDR\":\"{range}\",\"podCIDRs\":[\"{range}\"]}}}}'\n"
            )));
        }
        if !script.is_empty() {
            session.run(&script).await?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// `kubectl apply` of the bundle's `addon-*.yaml` files, when their content changed since the last
/// time (recorded in the first master's journal like any step).
async fn apply_addons(prepared: &Prepared, session: &Session) -> anyhow::Result<usize> {
    let addons = prepared.bundle.addons();
    if addons.is_empty() {
        return Ok(0);
    }
    let mut uploads = Vec::new();
    let mut script = String::new();
    for (name, path) in &addons {
        let remote = format!("{ILHA_DIR}/{name}");
        let sha256 = steps::file_sha256(path)?;
        script.push_str(&kubectl(&format!(
            "apply -f {}\n",
            crate::ssh::shell_quote(&remote)
        )));
        uploads.push((remote, path.clone(), sha256));
    }
    let digest = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for (remote, _, sha) in &uploads {
            h.update(format!("{remote}\0{sha}\0").as_bytes());
        }
        hex::encode(h.finalize())
    };
    if prepared.journals[session.name()].is_done("addons", &digest) {
        return Ok(0);
    }
    for (remote, path, sha256) in &uploads {
        session
            .upload_with_digest(crate::ssh::UploadSource::File(path), sha256, remote, 0o644)
            .await?;
    }
    session.run(&script).await?;
    session
        .run(&journal::record_script("addons", &digest))
        .await?;
    say(format!("  applied {} addon manifest(s)", addons.len()));
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(run: usize, cluster_changes: usize) -> UpReport {
        UpReport {
            steps_run: run,
            steps_skipped: 57 - run,
            cluster_changes,
            timings: vec![
                StepTiming {
                    host: "node1".into(),
                    step: "binaries".into(),
                    elapsed: Duration::from_secs(26),
                    changed: run > 0,
                },
                StepTiming {
                    host: "node4".into(),
                    step: "kubelet".into(),
                    elapsed: Duration::from_secs(2),
                    changed: run > 0,
                },
            ],
            admin_kubeconfig: PathBuf::from("/state/admin.conf"),
            state_dir: PathBuf::from("/state"),
            elapsed: Duration::from_secs(74),
            nodes_ready: 6,
            encryption: None,
        }
    }

    fn journal(steps: &[&str]) -> Journal {
        Journal::parse(
            &steps
                .iter()
                .map(|s| format!("{s}\t{}\t1700000000\n", "a".repeat(64)))
                .collect::<String>(),
        )
    }

    #[test]
    fn the_policy_plugin_waits_only_on_a_running_control_plane_without_policies() {
        let plan = super::super::tests_support::plan_for("v1.20.2");
        let journals = |master_steps: &[&str], other_master: &[&str]| {
            plan.hosts
                .iter()
                .map(|h| {
                    let steps = match h.name.as_str() {
                        "node1" => master_steps,
                        "node2" => other_master,
                        _ => &[][..],
                    };
                    (h.name.clone(), journal(steps))
                })
                .collect::<BTreeMap<_, _>>()
        };
        // A new cluster: the plugin goes on at once (no pods before the policies).
        assert!(!policies_pending(&plan, &journals(&[], &[])));
        // Installed before pod security (or with it off): first pass without the plugin.
        assert!(policies_pending(&plan, &journals(&["control-plane"], &[])));
        // Policies applied once (from whichever master was first then): the plugin stays on.
        assert!(!policies_pending(
            &plan,
            &journals(&["control-plane"], &[admission::POLICIES_JOURNAL_ID])
        ));
    }

    #[test]
    fn the_policies_step_applies_its_file_and_exists_only_up_to_1_22() {
        let plan = super::super::tests_support::plan_for("v1.20.2");
        let master = &plan.hosts[0];
        let policies = steps::pod_security_policies_step(&plan).expect("1.20");
        assert_eq!(policies.id, admission::POLICIES_JOURNAL_ID);
        assert!(
            policies
                .script
                .contains("apply -f /var/lib/ilha/pod-security-policies.yaml")
        );
        super::super::tests_support::assert_bash_syntax(&policies.script);
        assert_ne!(
            render::apiserver_unit(&plan, master),
            render::apiserver_unit_with(&plan, master, admission::PolicyPlugin::NotYet)
        );
        let newer = super::super::tests_support::plan_for("v1.23.0");
        assert!(steps::pod_security_policies_step(&newer).is_none());
    }

    #[test]
    fn a_run_that_changed_nothing_says_so() {
        let text = report(0, 0).render();
        assert!(text.starts_with("Nothing changed: all 57 steps"), "{text}");
        assert!(!text.contains("Slowest"), "{text}");
        // Labelling a node is a change even when every step was journaled.
        assert!(!report(0, 1).render().contains("Nothing changed"));
    }

    #[test]
    fn the_summary_lists_the_slowest_steps_first() {
        let text = report(57, 6).render();
        assert!(
            text.contains("Hosts changed:\n  node1          binaries\n  node4          kubelet\n"),
            "{text}"
        );
        let binaries = text.find("s  node1          binaries").expect(&text);
        let kubelet = text.find("s  node4          kubelet").expect(&text);
        assert!(binaries < kubelet, "{text}");
        assert!(
            text.contains("kubectl --kubeconfig /state/admin.conf get nodes"),
            "{text}"
        );
    }
}
