//! Kubelet serving certificates from ilha's CA, verified by kube-apiserver
//! (`hardening.kubelet_serving_certificates`), and how a running cluster moves to them.
//!
//! Without the item every kubelet serves a certificate it signed itself, which kube-apiserver
//! cannot verify: whoever answers on a node's port 10250 gets `exec`, `logs` and `port-forward`
//! traffic. With it, the kubelet step puts a leaf from the kubernetes CA in place
//! (`certs::kubelet_serving_files`, kubelet config `tlsCertFile`) and kube-apiserver gets
//! `--kubelet-certificate-authority`.
//!
//! The order matters on a cluster installed without the item: an apiserver that verifies before
//! some kubelet serves ilha's certificate breaks `exec` and `logs` to that node. So each kubelet
//! step records, once its kubelet restarted, what it serves (the journal's [`MARKER`] entry:
//! ilha's CA, or self-signed). When a running kubelet has not recorded ilha's CA yet:
//! - the control-plane phase keeps kube-apiserver as it is (its step rendered without the flag);
//! - the nodes phase restarts those kubelets one node at a time, each serving again through the
//!   API and Ready before the next;
//! - then the masters' control-plane step with the flag runs, one master at a time.
//!
//! A kubelet whose serving pair on the host is not the one ilha issued (changed by hand) has its
//! kubelet step run again, the same way, one node at a time.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::certs::{KUBELET_SERVING_CERT, KUBELET_SERVING_KEY};
use super::journal::{self, Journal};
use super::steps::Step;
use super::{ClusterPlan, HostPlan};
use crate::pki::{CaKind, Pki};

/// The journal entry each kubelet step records after its kubelet restarted.
pub const MARKER: &str = "kubelet-serving";

/// The [`MARKER`] digest of a kubelet serving a certificate it made itself.
fn self_signed_digest() -> String {
    hex::encode(Sha256::digest(b"kubelet serving: self-signed"))
}

/// The [`MARKER`] digest the kubelets of `plan` record: the kubernetes CA's when they serve its
/// certificates (any leaf of that CA verifies, so a renewal changes nothing here).
pub fn marker_digest(plan: &ClusterPlan, pki: &Pki) -> anyhow::Result<String> {
    if !plan.config.hardening.kubelet_serving_certificates {
        return Ok(self_signed_digest());
    }
    let ca = pki.ca(CaKind::Kubernetes)?;
    Ok(hex::encode(Sha256::digest(ca.cert_pem.as_bytes())))
}

/// The kubelet step's last line: records what its kubelet now serves.
pub fn marker_script(plan: &ClusterPlan, pki: &Pki) -> anyhow::Result<String> {
    Ok(journal::record_script(MARKER, &marker_digest(plan, pki)?) + "\n")
}

/// Prints `SHA256  PATH` for the kubelet's serving pair on a node (nothing for a missing file).
pub fn probe_script() -> String {
    format!(
        "for f in {KUBELET_SERVING_CERT} {KUBELET_SERVING_KEY}; do \
         if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done"
    )
}

/// How this run moves kubelets to (or keeps them on) ilha's certificates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Nodes whose kubelet restarts one at a time (nodes phase), in plan order.
    pub rolling: Vec<String>,
    /// kube-apiserver gets `--kubelet-certificate-authority` only after the nodes phase: some
    /// running kubelet does not serve ilha's certificate yet.
    pub verify_after_nodes: bool,
    /// Running kubelets not yet serving ilha's certificate (for the operator's messages).
    pub unverified: Vec<String>,
    /// Nodes whose serving pair on the host is not ilha's.
    pub changed_on_host: Vec<String>,
}

impl Rollout {
    /// Decides from the journals, the steps and what [`probe_script`] printed on each node.
    /// A kubelet step found done but whose kubelet must restart (serving pair changed on the
    /// host, or no record of ilha's CA) is marked stale in `journals`, so that it runs again.
    pub fn decide(
        plan: &ClusterPlan,
        marker: &str,
        journals: &mut BTreeMap<String, Journal>,
        steps: &BTreeMap<String, Vec<Step>>,
        probes: &BTreeMap<String, String>,
    ) -> Rollout {
        let mut rollout = Rollout::default();
        if !plan.config.hardening.kubelet_serving_certificates {
            return rollout;
        }
        for node in plan.nodes() {
            let Some(journal) = journals.get_mut(&node.name) else {
                continue;
            };
            // A kubelet that never ran starts with ilha's certificate: nothing to wait for.
            if !journal.has("kubelet") {
                continue;
            }
            let unverified = !journal.is_done(MARKER, marker);
            let kubelet_step = steps
                .get(&node.name)
                .and_then(|list| list.iter().find(|s| s.id == "kubelet"));
            let changed = kubelet_step.is_some_and(|step| {
                journal.is_done(step.id, &step.digest)
                    && !serving_pair_in_place(step, probes.get(&node.name).map(String::as_str))
            });
            if unverified || changed {
                if let Some(step) = kubelet_step {
                    journal.mark_stale(step.id);
                }
                rollout.rolling.push(node.name.clone());
            }
            if unverified {
                rollout.unverified.push(node.name.clone());
                rollout.verify_after_nodes = true;
            }
            if changed {
                rollout.changed_on_host.push(node.name.clone());
            }
        }
        rollout
    }
}

/// Whether the host holds, byte for byte, the serving pair `kubelet_step` puts there.
fn serving_pair_in_place(kubelet_step: &Step, probe: Option<&str>) -> bool {
    let probe = probe.unwrap_or("");
    kubelet_step
        .uploads
        .iter()
        .filter(|u| u.remote_path == KUBELET_SERVING_CERT || u.remote_path == KUBELET_SERVING_KEY)
        .all(|u| {
            probe.lines().any(|line| {
                line.split_once("  ") == Some((u.sha256.as_str(), u.remote_path.as_str()))
            })
        })
}

/// Asks kube-apiserver for `node`'s kubelet health (`nodes/NAME/proxy/healthz`): the request
/// goes over the TLS connection `exec` and `logs` use, so with `--kubelet-certificate-authority`
/// it fails on a kubelet whose certificate is not ilha's.
fn through_api(node: &str) -> String {
    super::run::kubectl(&format!(
        "get --raw /api/v1/nodes/{}/proxy/healthz",
        crate::ssh::shell_quote(node)
    ))
}

/// Succeeds once `node`'s kubelet answers through kube-apiserver and the Node is Ready.
pub fn serving_and_ready_script(node: &str) -> String {
    format!(
        "{}\n[ \"$({})\" = True ] || {{ echo '{node}: not Ready yet' >&2; exit 1; }}\n",
        through_api(node),
        super::run::kubectl(&format!(
            "get node {} -o jsonpath='{{.status.conditions[?(@.type==\"Ready\")].status}}'",
            crate::ssh::shell_quote(node)
        )),
    )
}

/// Fails naming every node whose kubelet kube-apiserver cannot reach (or, verifying, cannot
/// verify), with kube-apiserver's error.
pub fn verified_script(nodes: &[&HostPlan]) -> String {
    let mut script = String::from("failed=0\n");
    for node in nodes {
        script.push_str(&format!(
            "if ! out=$({} 2>&1); then echo \"{name}: $out\" >&2; failed=1; fi\n",
            through_api(&node.name),
            name = node.name,
        ));
    }
    script.push_str("exit $failed\n");
    script
}

#[cfg(test)]
mod tests {
    use super::super::steps::Phase;
    use super::super::tests_support::{assert_bash_syntax, plan_for};
    use super::*;

    const CA: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn sha(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// A kubelet step putting `cert` and `key` in place, as `steps::host_steps` builds it.
    fn kubelet_step(cert: &str, key: &str) -> Step {
        let uploads = [(KUBELET_SERVING_CERT, cert), (KUBELET_SERVING_KEY, key)]
            .into_iter()
            .map(|(path, content)| super::super::steps::Upload {
                remote_path: path.to_string(),
                mode: 0o600,
                content: super::super::steps::Content::Bytes(content.as_bytes().to_vec()),
                sha256: sha(content),
            })
            .collect();
        Step::new("kubelet", Phase::Nodes, uploads, String::new(), &[])
    }

    fn journal(lines: &[(&str, &str)]) -> Journal {
        Journal::parse(
            &lines
                .iter()
                .map(|(step, digest)| format!("{step}\t{digest}\t1\n"))
                .collect::<String>(),
        )
    }

    fn probe(cert: &str, key: &str) -> String {
        format!(
            "{}  {KUBELET_SERVING_CERT}\n{}  {KUBELET_SERVING_KEY}\n",
            sha(cert),
            sha(key)
        )
    }

    /// Two nodes (node1 master, node4 worker) of the seed's layout, with `journals` and probes.
    fn decide(
        plan: &ClusterPlan,
        journals: Vec<(&str, Journal)>,
        probes: Vec<(&str, String)>,
    ) -> (
        Rollout,
        BTreeMap<String, Journal>,
        BTreeMap<String, Vec<Step>>,
    ) {
        let mut journals: BTreeMap<String, Journal> = journals
            .into_iter()
            .map(|(n, j)| (n.to_string(), j))
            .collect();
        let steps: BTreeMap<String, Vec<Step>> = plan
            .nodes()
            .map(|n| (n.name.clone(), vec![kubelet_step("cert", "key")]))
            .collect();
        let probes = probes
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        let rollout = Rollout::decide(plan, CA, &mut journals, &steps, &probes);
        (rollout, journals, steps)
    }

    fn two_nodes() -> ClusterPlan {
        let mut plan = plan_for("v1.20.2");
        plan.hosts
            .retain(|h| h.name == "node1" || h.name == "node4");
        plan
    }

    #[test]
    fn a_fresh_cluster_verifies_from_the_start() {
        let plan = two_nodes();
        let (rollout, _, _) = decide(
            &plan,
            vec![("node1", Journal::default()), ("node4", Journal::default())],
            vec![],
        );
        assert_eq!(rollout, Rollout::default());
    }

    #[test]
    fn running_self_signed_kubelets_roll_before_the_apiserver_verifies() {
        let plan = two_nodes();
        let step = kubelet_step("cert", "key");
        // node1 ran its kubelet before the item existed; node4 recorded self-signed (item off).
        let (rollout, journals, _) = decide(
            &plan,
            vec![
                ("node1", journal(&[("kubelet", OLD)])),
                (
                    "node4",
                    journal(&[("kubelet", &step.digest), (MARKER, &self_signed_digest())]),
                ),
            ],
            vec![("node4", probe("cert", "key"))],
        );
        assert_eq!(rollout.rolling, ["node1", "node4"]);
        assert_eq!(rollout.unverified, ["node1", "node4"]);
        assert!(rollout.verify_after_nodes);
        assert!(rollout.changed_on_host.is_empty());
        // node4's kubelet step was done: it runs again (still an update, not a first install).
        assert!(!journals["node4"].is_done("kubelet", &step.digest));
        assert!(journals["node4"].has("kubelet"));
    }

    #[test]
    fn kubelets_serving_ilhas_certificate_change_nothing() {
        let plan = two_nodes();
        let step = kubelet_step("cert", "key");
        let done = journal(&[("kubelet", &step.digest), (MARKER, CA)]);
        let (rollout, journals, _) = decide(
            &plan,
            vec![("node1", done.clone()), ("node4", done.clone())],
            vec![
                ("node1", probe("cert", "key")),
                ("node4", probe("cert", "key")),
            ],
        );
        assert_eq!(rollout, Rollout::default());
        assert!(journals["node1"].is_done("kubelet", &step.digest));
        // A kubelet step that runs again for another reason (a new binary) restarts with the
        // others, in parallel: the apiserver keeps verifying.
        let (rollout, _, _) = decide(
            &plan,
            vec![
                ("node1", journal(&[("kubelet", OLD), (MARKER, CA)])),
                ("node4", done),
            ],
            vec![("node4", probe("cert", "key"))],
        );
        assert_eq!(rollout, Rollout::default());
    }

    #[test]
    fn a_serving_pair_changed_on_the_host_is_put_back_one_node_at_a_time() {
        let plan = two_nodes();
        let step = kubelet_step("cert", "key");
        let done = journal(&[("kubelet", &step.digest), (MARKER, CA)]);
        let (rollout, journals, _) = decide(
            &plan,
            vec![("node1", done.clone()), ("node4", done)],
            vec![
                ("node1", probe("cert", "key")),
                ("node4", probe("foreign cert", "foreign key")),
            ],
        );
        assert_eq!(rollout.rolling, ["node4"]);
        assert_eq!(rollout.changed_on_host, ["node4"]);
        assert!(!rollout.verify_after_nodes, "the apiserver keeps verifying");
        assert!(!journals["node4"].is_done("kubelet", &step.digest));
        assert!(journals["node1"].is_done("kubelet", &step.digest));
        // A missing key is a change too.
        let only_cert = format!("{}  {KUBELET_SERVING_CERT}\n", sha("cert"));
        assert!(!serving_pair_in_place(&step, Some(&only_cert)));
        assert!(!serving_pair_in_place(&step, None));
        assert!(serving_pair_in_place(&step, Some(&probe("cert", "key"))));
    }

    #[test]
    fn the_item_off_decides_nothing_and_records_self_signed() {
        let mut plan = two_nodes();
        plan.config.hardening.kubelet_serving_certificates = false;
        let (rollout, _, _) = decide(&plan, vec![("node1", journal(&[("kubelet", OLD)]))], vec![]);
        assert_eq!(rollout, Rollout::default());
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open_or_init(dir.path()).unwrap();
        assert_eq!(marker_digest(&plan, &pki).unwrap(), self_signed_digest());
        plan.config.hardening.kubelet_serving_certificates = true;
        let on = marker_digest(&plan, &pki).unwrap();
        assert_ne!(on, self_signed_digest());
        assert_eq!(
            on,
            sha(&pki.ca(CaKind::Kubernetes).unwrap().cert_pem),
            "the CA's digest: a renewed leaf is still verified"
        );
        // The journal keeps only well-formed records: the marker is one.
        let recorded = Journal::parse(&format!("{MARKER}\t{on}\t1\n"));
        assert!(recorded.is_done(MARKER, &on));
    }

    #[test]
    fn scripts_parse_and_name_the_node() {
        let plan = two_nodes();
        let nodes: Vec<&HostPlan> = plan.nodes().collect();
        let verified = verified_script(&nodes);
        assert_bash_syntax(&verified);
        assert!(verified.contains("get --raw /api/v1/nodes/'node4'/proxy/healthz 2>&1"));
        assert!(verified.contains("echo \"node4: $out\" >&2"));
        let ready = serving_and_ready_script("node4");
        assert_bash_syntax(&ready);
        assert!(ready.contains("/api/v1/nodes/'node4'/proxy/healthz"));
        assert_bash_syntax(&probe_script());
    }
}
