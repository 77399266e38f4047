//! The steps that bring one host to its planned state, in order, grouped in phases that run on
//! all hosts at once. A step is what it uploads plus the script that acts on it; its digest
//! covers both (and, for services, the certificates and binaries they use), so an unchanged
//! step is recognised from the host's journal and skipped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ilha_format::cluster::NodeRole;
use sha2::{Digest, Sha256};

use super::bundle::InstallBundle;
use super::paths::*;
use super::render::{self, RemoteFile};
use super::{ClusterPlan, HostPlan, certs, hardening};
use crate::pki::Pki;

/// Phases run one after another; within a phase, hosts run in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Binaries, certificates, kernel settings: every host.
    Prepare,
    /// etcd members start and form a quorum.
    Etcd,
    /// kube-apiserver, controller-manager and scheduler on the masters.
    ControlPlane,
    /// containerd, images, pod network, kubelet, kube-proxy on every node.
    Nodes,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Prepare,
        Phase::Etcd,
        Phase::ControlPlane,
        Phase::Nodes,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare hosts",
            Phase::Etcd => "etcd",
            Phase::ControlPlane => "control plane",
            Phase::Nodes => "nodes",
        }
    }
}

/// Where an upload's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A local file whose sha256 is already known (a bundle entry, the image archive).
    File {
        path: PathBuf,
        sha256: String,
    },
}

#[derive(Debug, Clone)]
pub struct Upload {
    pub remote_path: String,
    pub mode: u32,
    pub content: Content,
    pub sha256: String,
}

impl Upload {
    fn file(file: RemoteFile) -> Upload {
        let sha256 = hex::encode(Sha256::digest(&file.content));
        Upload {
            remote_path: file.path,
            mode: file.mode,
            content: Content::Bytes(file.content),
            sha256,
        }
    }

    fn local(remote_path: String, mode: u32, path: PathBuf, sha256: String) -> Upload {
        Upload {
            remote_path,
            mode,
            content: Content::File {
                path,
                sha256: sha256.clone(),
            },
            sha256,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Stable name, recorded in the journal (`kubelet`, `control-plane`).
    pub id: &'static str,
    pub phase: Phase,
    pub uploads: Vec<Upload>,
    /// Runs after the uploads (bash, `set -euo pipefail`).
    pub script: String,
    pub digest: String,
    /// Digests of what the step depends on, kept so a variant of it can be made
    /// ([`Step::with_file`]).
    depends_on: Vec<String>,
}

impl Step {
    pub(crate) fn new(
        id: &'static str,
        phase: Phase,
        uploads: Vec<Upload>,
        script: String,
        depends_on: &[&str],
    ) -> Step {
        let mut hasher = Sha256::new();
        hasher.update(id.as_bytes());
        for upload in &uploads {
            hasher.update(
                format!(
                    "\0{}\0{:o}\0{}",
                    upload.remote_path, upload.mode, upload.sha256
                )
                .as_bytes(),
            );
        }
        hasher.update(b"\0script\0");
        hasher.update(script.as_bytes());
        for dependency in depends_on {
            hasher.update(b"\0dep\0");
            hasher.update(dependency.as_bytes());
        }
        Step {
            id,
            phase,
            uploads,
            script,
            digest: hex::encode(hasher.finalize()),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// The same step with `file` uploaded instead of the upload to the same path, in its place
    /// (or last, in addition), its digest recomputed: a staged variant of a step
    /// (`cluster::encryption`) has the digest of the step built with that file.
    pub fn with_file(&self, file: RemoteFile) -> Step {
        if self.uploads.iter().any(|u| u.remote_path == file.path) {
            return self.replacing(file);
        }
        let mut uploads = self.uploads.clone();
        uploads.push(Upload::file(file));
        let deps: Vec<&str> = self.depends_on.iter().map(String::as_str).collect();
        Step::new(self.id, self.phase, uploads, self.script.clone(), &deps)
    }

    /// The same step with the upload to `file.path` carrying `file` instead (a new digest).
    pub fn replacing(&self, file: RemoteFile) -> Step {
        let uploads = self
            .uploads
            .iter()
            .map(|upload| {
                if upload.remote_path == file.path {
                    Upload::file(file.clone())
                } else {
                    upload.clone()
                }
            })
            .collect();
        let depends_on: Vec<&str> = self.depends_on.iter().map(String::as_str).collect();
        Step::new(
            self.id,
            self.phase,
            uploads,
            self.script.clone(),
            &depends_on,
        )
    }

    /// Bytes this step sends.
    pub fn upload_bytes(&self) -> u64 {
        self.uploads
            .iter()
            .map(|u| match &u.content {
                Content::Bytes(b) => b.len() as u64,
                Content::File { path, .. } => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            })
            .sum()
    }
}

/// CNI plugins live in their own directory; runc where containerd's config points.
pub(crate) fn binary_destination(name: &str) -> String {
    match name {
        "bridge" | "host-local" | "loopback" | "portmap" => format!("{CNI_BIN_DIR}/{name}"),
        "runc" => RUNC.to_string(),
        _ => format!("{BIN_DIR}/{name}"),
    }
}

fn roles_of(host: &HostPlan) -> Vec<NodeRole> {
    let mut roles = Vec::new();
    if host.is_etcd() {
        roles.push(NodeRole::Etcd);
    }
    if host.is_control_plane() {
        roles.push(NodeRole::ControlPlane);
    }
    if host.is_node() {
        roles.push(NodeRole::Node);
    }
    roles
}

/// The binaries `host` gets, each once: the required ones of its roles, then the optional ones
/// (etcdutl below Kubernetes 1.34) the bundle carries (`in_bundle`).
fn binary_names(
    requirements: &ilha_format::cluster::Requirements,
    host: &HostPlan,
    in_bundle: impl Fn(&str) -> bool,
) -> Vec<&'static str> {
    requirements.installed_on(&roles_of(host), in_bundle)
}

/// The step whose restart puts `binary` to use on `host`: there, and only there, the binary
/// staged by the `binaries` step replaces the live one, so the rolling gates of the etcd and
/// control-plane phases also gate new binaries. `None`: switched in the `binaries` step itself.
fn switched_by(binary: &str, host: &HostPlan) -> Option<&'static str> {
    Some(match binary {
        "etcd" | "etcdctl" | "etcdutl" if host.is_etcd() => "etcd",
        "kube-apiserver" | "kube-controller-manager" | "kube-scheduler"
            if host.is_control_plane() =>
        {
            "control-plane"
        }
        // ilha's own health checks on a master use kubectl: it changes with its apiserver.
        "kubectl" if host.is_control_plane() => "control-plane",
        "kubectl" | "kubelet" if host.is_node() => "kubelet",
        "kube-proxy" if host.is_node() => "kube-proxy",
        // The runtime and the plugins it executes for each new pod.
        "containerd"
        | "containerd-shim-runc-v2"
        | "ctr"
        | "runc"
        | "bridge"
        | "host-local"
        | "loopback"
        | "portmap"
            if host.is_node() =>
        {
            "containerd"
        }
        _ => return None,
    })
}

/// Shell function the restarting steps use: the bundle's binary staged beside PATH (by the
/// `binaries` step, on a host that already ran another one) replaces it, by rename, just before
/// the restart. Nothing staged: the binary went in place (a fresh host) or was already switched
/// (a re-run). A staged file that is not the bundle's stops the step before any restart.
const SWITCH_STAGED: &str = r#"switch_staged() { # PATH SHA256
  if [ -e "$1.ilha-new" ]; then
    if ! printf '%s  %s\n' "$2" "$1.ilha-new" | sha256sum --check --status; then
      echo "$1.ilha-new is not the bundle's binary (sha256 $2): it was changed outside ilha; remove it and run ilha up again" >&2
      exit 96
    fi
    mv -f "$1.ilha-new" "$1"
  fi
}
"#;

/// The switch lines of `step` for `host`, prepended to its script (empty when it owns none).
fn switch_script(step: &str, host: &HostPlan, binaries: &[Upload]) -> String {
    let mut script = String::new();
    for upload in binaries {
        let name = upload
            .remote_path
            .rsplit('/')
            .next()
            .unwrap_or(&upload.remote_path);
        if switched_by(name, host) == Some(step) {
            let _ = writeln!(
                script,
                "switch_staged {} {}",
                crate::ssh::shell_quote(&upload.remote_path),
                upload.sha256
            );
        }
    }
    if script.is_empty() {
        script
    } else {
        format!("{SWITCH_STAGED}{script}")
    }
}

/// The `binaries` step's script: records what each final path holds once switched
/// ([`versions::BINARIES_RECORD`]) and lists the final paths for `reset` (the uploads themselves
/// may go to staged paths).
fn binaries_script(binaries: &[Upload]) -> String {
    use super::versions::BINARIES_RECORD;
    let mut record = String::new();
    for upload in binaries {
        let _ = writeln!(record, "{}  {}", upload.sha256, upload.remote_path);
    }
    let finals: Vec<String> = binaries
        .iter()
        .map(|u| crate::ssh::shell_quote(&u.remote_path))
        .collect();
    format!(
        "mkdir -p {ILHA_DIR}\n\
         t=$(mktemp {BINARIES_RECORD}.ilha-tmp.XXXXXX)\n\
         cat > \"$t\" <<'ILHA_EOF'\n{record}ILHA_EOF\n\
         mv -f \"$t\" {BINARIES_RECORD}\n\
         printf '%s\\n' {} >> {INSTALLED_FILES}\n",
        finals.join(" ")
    )
}

/// Where the `binaries` step of one host sends each binary, given what the host has (read by
/// the version guard): nothing for a binary the host's record says is already there; beside the
/// live one ([`versions::STAGED_SUFFIX`]) when another binary is live at its path and a later
/// step switches it; in place otherwise. The step's digest stays the one of the final paths, so
/// where a binary travels never makes a step look changed.
pub fn stage_binaries(
    steps: &mut [Step],
    host: &HostPlan,
    on_host: &super::versions::HostBinaries,
) {
    use super::versions::{Placement, STAGED_SUFFIX};
    let Some(step) = steps.iter_mut().find(|s| s.id == "binaries") else {
        return;
    };
    step.uploads.retain_mut(|upload| {
        let name = upload
            .remote_path
            .rsplit('/')
            .next()
            .unwrap_or(&upload.remote_path)
            .to_string();
        match on_host.placement(&upload.remote_path, &upload.sha256) {
            Placement::Unchanged => false,
            Placement::Stage if switched_by(&name, host).is_some() => {
                upload.remote_path.push_str(STAGED_SUFFIX);
                true
            }
            Placement::Stage | Placement::InPlace => true,
        }
    });
}

fn restart_units(units: &[&str]) -> String {
    let list = units.join(" ");
    format!("systemctl daemon-reload\nsystemctl enable --quiet {list}\nsystemctl restart {list}\n")
}

/// Where clusters installed before `ilha-apiproxy` existed have the whole `ilha` binary, which
/// their unit ran as `ilha apiproxy`.
const LEGACY_APIPROXY_BINARY: &str = "/usr/local/bin/ilha";

/// Restarts the proxy on its new unit and, on a worker upgraded from `ilha apiproxy`, removes
/// the old 122 MB binary. Only when the unit systemd still has loaded (no daemon-reload yet)
/// ran it, so an `ilha` the operator put there for another reason stays.
fn apiproxy_script(legacy: &str) -> String {
    format!(
        "legacy=$(systemctl show -p ExecStart --value ilha-apiproxy.service 2>/dev/null \\\n  \
         | grep -cF 'path={legacy} ;' || true)\n{}\
         if [ \"$legacy\" != 0 ]; then rm -f {legacy}; fi\n",
        restart_units(&["ilha-apiproxy.service"])
    )
}

/// The node-local API proxy's executable (`ilha::apiproxy::BINARY`, static, embedded).
pub struct ProxyBinary {
    pub bytes: &'static [u8],
    pub sha256: String,
}

impl ProxyBinary {
    pub fn embedded() -> Self {
        Self {
            bytes: crate::apiproxy::BINARY,
            sha256: crate::apiproxy::sha256(),
        }
    }
}

/// Every step for `host`, in order.
pub fn host_steps(
    plan: &ClusterPlan,
    bundle: &InstallBundle,
    pki: &Pki,
    host: &HostPlan,
    images_archive: &(PathBuf, String),
    apiproxy: &ProxyBinary,
) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();

    // Prepare ---------------------------------------------------------------------------------
    let mut system_script = format!("mkdir -p {ILHA_DIR} {KUBERNETES_DIR} {PKI_DIR}\n");
    let mut system_uploads = Vec::new();
    if host.is_node() {
        system_uploads.push(Upload::file(render::sysctl_conf()));
        system_script.push_str(&format!(
            "mkdir -p {KUBELET_DIR} {KUBE_PROXY_DIR} {CNI_CONF_DIR} {CNI_BIN_DIR}\n\
             sysctl -qw net.ipv4.ip_forward=1\n"
        ));
        if plan.config.hardening.protect_kernel_defaults {
            system_uploads.push(Upload::file(hardening::kernel_defaults_conf()));
            system_script.push_str(&hardening::kernel_defaults_script(plan, host));
        }
    }
    // Before the certificates step, which gives etcd its keys.
    system_script.push_str(&hardening::etcd_user_script(plan, host));
    steps.push(Step::new(
        "system",
        Phase::Prepare,
        system_uploads,
        system_script,
        &[],
    ));

    let mut binaries = Vec::new();
    for name in binary_names(&bundle.requirements, host, |name| bundle.has_binary(name)) {
        let (path, sha256) = bundle.binary(name)?;
        binaries.push(Upload::local(binary_destination(name), 0o755, path, sha256));
    }
    let binary_uploads = binaries.clone();
    let binaries = Step::new(
        "binaries",
        Phase::Prepare,
        binaries,
        binaries_script(&binary_uploads),
        &[],
    );
    let binaries_digest = binaries.digest.clone();
    steps.push(binaries);
    let switch = |step: &str| switch_script(step, host, &binary_uploads);

    let cert_files = certs::files_for(pki, plan, host)?;
    let certificates = Step::new(
        "certificates",
        Phase::Prepare,
        cert_files.into_iter().map(Upload::file).collect(),
        // Unchanged ("true") where there is nothing to do: the digest, and so every service's
        // restart, follows only real changes.
        match hardening::etcd_certificates_script(plan, host) {
            keys if keys.is_empty() => "true".into(),
            keys => keys,
        },
        &[],
    );
    let certs_digest = certificates.digest.clone();
    steps.push(certificates);
    // Services restart when their binaries or certificates change.
    let deps = [binaries_digest.as_str(), certs_digest.as_str()];

    // etcd ------------------------------------------------------------------------------------
    if host.is_etcd() {
        // The run waits for cluster health afterwards (see `etcd_restart_script`).
        steps.push(Step::new(
            "etcd",
            Phase::Etcd,
            vec![Upload::file(render::etcd_unit(plan, host))],
            switch("etcd") + &hardening::etcd_restart_script(plan),
            &deps,
        ));
    }

    // Control plane ---------------------------------------------------------------------------
    if host.is_control_plane() {
        let mut uploads = vec![
            Upload::file(render::apiserver_unit(plan, host)),
            Upload::file(render::controller_manager_unit(plan)),
            Upload::file(render::scheduler_unit(plan)),
        ];
        if plan.config.hardening.audit_log {
            uploads.push(Upload::file(hardening::audit_policy()));
        }
        // Admission and authentication configs the apiserver's flags name.
        uploads.extend(
            super::admission::apiserver_files(plan)
                .into_iter()
                .map(Upload::file),
        );
        // A new encryption config restarts the apiserver with the rest of the control plane.
        // Last: a staged variant (`Step::with_file`) that adds it then has the digest of the
        // step built with it.
        uploads.extend(plan.encryption.clone().map(Upload::file));
        steps.push(Step::new(
            "control-plane",
            Phase::ControlPlane,
            uploads,
            switch("control-plane")
                + &hardening::audit_log_dir_script(plan)
                + &restart_units(&[
                    "kube-apiserver.service",
                    "kube-controller-manager.service",
                    "kube-scheduler.service",
                ]),
            &deps,
        ));
    }

    // Nodes -----------------------------------------------------------------------------------
    if host.is_node() {
        steps.push(Step::new(
            "containerd",
            Phase::Nodes,
            vec![
                Upload::file(render::containerd_config(plan)),
                Upload::file(render::containerd_unit()),
            ],
            switch("containerd") + &restart_units(&["containerd.service"]),
            &deps,
        ));
        let (archive, archive_sha) = images_archive;
        let import = images_script(&bundle.index.images, &bundle.requirements.images);
        steps.push(Step::new(
            "images",
            Phase::Nodes,
            vec![Upload::local(
                IMAGES_ARCHIVE.to_string(),
                0o644,
                archive.clone(),
                archive_sha.clone(),
            )],
            import,
            &deps,
        ));
        let mut network = vec![
            Upload::file(render::routes_script(plan, host)),
            Upload::file(render::routes_unit()),
        ];
        if let Some(conflist) = render::cni_conflist(plan, host) {
            network.push(Upload::file(conflist));
        }
        steps.push(Step::new(
            "pod-network",
            Phase::Nodes,
            network,
            restart_units(&["ilha-routes.service"]),
            &deps,
        ));
        if host.needs_api_proxy()
            && matches!(
                plan.config.api_endpoint,
                crate::config::ApiEndpoint::NodeLocal
            )
        {
            steps.push(Step::new(
                "api-proxy",
                Phase::Nodes,
                vec![
                    Upload {
                        remote_path: render::APIPROXY_BINARY.to_string(),
                        mode: 0o755,
                        content: Content::Bytes(apiproxy.bytes.to_vec()),
                        sha256: apiproxy.sha256.clone(),
                    },
                    Upload::file(render::apiproxy_unit(plan)),
                ],
                apiproxy_script(LEGACY_APIPROXY_BINARY),
                &deps,
            ));
        }
        let mut kubelet = vec![
            Upload::file(render::kubelet_config(plan, host)),
            Upload::file(render::kubelet_unit(plan, host)),
        ];
        if plan.config.hardening.kubelet_serving_certificates {
            kubelet.extend(
                certs::kubelet_serving_files(pki, host)?
                    .into_iter()
                    .map(Upload::file),
            );
        }
        // Once restarted, the kubelet serves what the marker says (see `kubelet_serving`).
        let serving = super::kubelet_serving::marker_script(plan, pki)?;
        steps.push(Step::new(
            "kubelet",
            Phase::Nodes,
            kubelet,
            switch("kubelet") + &restart_units(&["kubelet.service"]) + &serving,
            &deps,
        ));
        steps.push(Step::new(
            "kube-proxy",
            Phase::Nodes,
            vec![
                Upload::file(render::kube_proxy_config(plan, host)),
                Upload::file(render::kube_proxy_unit()),
            ],
            switch("kube-proxy") + &restart_units(&["kube-proxy.service"]),
            &deps,
        ));
    }
    Ok(steps)
}

/// The label containerd's CRI plugin reads to report an image as pinned (CRI `Image.pinned`).
/// containerd knows it from 1.7.0 (1.6.22 on the 1.6 branch), and honours it on an image made
/// outside CRI, as `ctr images import` makes them, from 1.7.10 (and the 1.6 backport, containerd
/// PR #9382). A kubelet that reads `pinned` never garbage-collects the image: the field reaches
/// kubelet's image GC from 1.29 (and the September 2023 patch releases of 1.25-1.28; 1.23-1.28 as
/// first released dropped it). The lab's containerd 1.6.20 predates the label and its kubelet
/// 1.20 the field, and newer ones cannot be built here: on the lab the label is carried and
/// checked, not acted on. Kubelet 1.20 keeps from its image GC only the image its
/// `--pod-infra-container-image` names (default `k8s.gcr.io/pause:3.2`, the pause image the
/// bundle has for 1.20).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";

/// The images step's script: import the archive, check every image of the bundle is there, then
/// label pinned the images the cluster itself needs (`required`: the pause image), so that an
/// air-gapped node, which can never pull them again, does not lose them to image GC. Every image
/// name is quoted as one shell word wherever it appears (the index's validation already keeps
/// shell metacharacters out of them; this does not rely on it).
fn images_script(
    images: &[ilha_format::ImageRecord],
    required: &[ilha_format::cluster::RequiredImage],
) -> String {
    let ctr = format!("{BIN_DIR}/ctr --namespace k8s.io");
    // The lists are captured first: `ctr … | grep -q` under pipefail fails whenever grep
    // exits before ctr has written everything.
    let mut import = format!(
        "{ctr} images import {IMAGES_ARCHIVE} >/dev/null\n\
         present=$({ctr} images list --quiet)\n"
    );
    for image in images {
        let _ = writeln!(
            import,
            "grep -Fxq {} <<<\"$present\" || {{ echo {} >&2; exit 1; }}",
            crate::ssh::shell_quote(&image.name),
            crate::ssh::shell_quote(&format!("image {} missing after import", image.name)),
        );
    }
    // The bundle's own names for them (a name may also pin the digest).
    let to_pin: Vec<&str> = images
        .iter()
        .map(|image| image.name.as_str())
        .filter(|name| required.iter().any(|r| r.is_satisfied_by(name)))
        .collect();
    for name in &to_pin {
        let _ = writeln!(
            import,
            "{ctr} images label {} {PINNED_LABEL} >/dev/null",
            crate::ssh::shell_quote(name),
        );
    }
    if !to_pin.is_empty() {
        let (key, value) = PINNED_LABEL.split_once('=').expect("key=value");
        let _ = writeln!(
            import,
            "pinned=$({ctr} images list --quiet {})",
            crate::ssh::shell_quote(&format!("labels.\"{key}\"=={value}")),
        );
        for name in &to_pin {
            let _ = writeln!(
                import,
                "grep -Fxq {} <<<\"$pinned\" || {{ echo {} >&2; exit 1; }}",
                crate::ssh::shell_quote(name),
                crate::ssh::shell_quote(&format!(
                    "image {name} is not labelled {PINNED_LABEL} after `ctr images label`"
                )),
            );
        }
    }
    import.push_str(&format!("rm -f {IMAGES_ARCHIVE}\n"));
    import
}

/// The PodSecurityPolicy objects and their RBAC, applied from the first master once the API
/// serves (`None` where the cluster does not use PodSecurityPolicy). Journaled there like any
/// step, so an unchanged set is not applied again.
pub fn pod_security_policies_step(plan: &ClusterPlan) -> Option<Step> {
    use super::admission::{POLICIES_FILE, POLICIES_JOURNAL_ID, pod_security_policies};
    let file = pod_security_policies(plan)?;
    let apply = super::run::kubectl(&format!("apply -f {POLICIES_FILE}"));
    // The API has just become ready: a first refusal (RBAC still settling) is retried.
    let script = format!(
        "for attempt in 1 2 3 4 5 6 7 8 9 10; do
           if {apply}; then break; fi
           if [ \"$attempt\" = 10 ]; then echo 'kubectl apply -f {POLICIES_FILE} failed 10 times: \
         the PodSecurityPolicy objects are not in place (look at the message above)' >&2; exit 1; fi
           sleep 2
done
"
    );
    Some(Step::new(
        POLICIES_JOURNAL_ID,
        Phase::ControlPlane,
        vec![Upload::file(file)],
        script,
        &[],
    ))
}

/// The first step on every host: the cluster's identity (name and CA fingerprints), which every
/// later command compares with its state directory before changing the host (`identity`).
pub fn identity_step(identity: &super::identity::ClusterIdentity) -> Step {
    Step::new(
        "identity",
        Phase::Prepare,
        vec![Upload::file(RemoteFile::new(
            super::identity::IDENTITY_FILE,
            0o644,
            identity.to_json(),
        ))],
        "true".into(),
        &[],
    )
}

/// sha256 of a local file (hex), streamed.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let (digest, _size) = ilha_format::digest::sha256_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(digest.to_string())
}

#[cfg(test)]
mod images_step_tests {
    use super::*;

    fn image(name: &str) -> ilha_format::ImageRecord {
        ilha_format::ImageRecord {
            name: name.into(),
            source: name.into(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1,
            layers: 1,
        }
    }

    fn pause(reference: &str) -> ilha_format::cluster::RequiredImage {
        ilha_format::cluster::RequiredImage {
            purpose: ilha_format::cluster::ImagePurpose::Pause,
            reference: reference.into(),
        }
    }

    /// What a run of the images script did with a stand-in `ctr`.
    struct Run {
        status: Option<i32>,
        stderr: String,
        /// `(image, label)` of each `ctr images label`.
        labelled: Vec<(String, String)>,
        /// The filter of `ctr images list --quiet FILTER`, if one ran.
        filter: Option<String>,
    }

    /// Runs the whole script under bash in `cwd`, with a stand-in `ctr` that lists `present`
    /// as imported, records every label it is asked to set and, unless `labels_stick` is false,
    /// lists the labelled images for a filtered listing.
    fn run(script: &str, present: &str, labels_stick: bool, cwd: &Path) -> Run {
        let state = tempfile::tempdir().unwrap();
        let ctr = state.path().join("ctr");
        std::fs::write(
            &ctr,
            r#"#!/bin/bash
shift 2 # --namespace k8s.io
case "$2" in
  import) ;;
  label)
    printf '%s\t%s\0' "$3" "$4" >> "$STATE/labelled"
    [ "$LABELS_STICK" = 0 ] || printf '%s\n' "$3" >> "$STATE/pinned" ;;
  list)
    if [ $# -gt 3 ]; then
      printf '%s' "$4" > "$STATE/filter"
      cat "$STATE/pinned" 2>/dev/null || true
    else
      printf '%s\n' "$PRESENT"
    fi ;;
  *) exit 2 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let archive = state.path().join("images.tar");
        let script = script
            .replace(&format!("{BIN_DIR}/ctr "), &format!("{} ", ctr.display()))
            .replace(IMAGES_ARCHIVE, archive.to_str().unwrap());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .env("STATE", state.path())
            .env("PRESENT", present)
            .env("LABELS_STICK", if labels_stick { "1" } else { "0" })
            .current_dir(cwd)
            .output()
            .unwrap();
        let labelled = std::fs::read_to_string(state.path().join("labelled"))
            .unwrap_or_default()
            .split_terminator('\0')
            .map(|pair| {
                let (image, label) = pair.split_once('\t').unwrap();
                (image.to_string(), label.to_string())
            })
            .collect();
        Run {
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            labelled,
            filter: std::fs::read_to_string(state.path().join("filter")).ok(),
        }
    }

    #[test]
    fn the_import_labels_exactly_the_required_images_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let images = [
            image("ilha.test/busybox:1"),
            image("k8s.gcr.io/pause:3.2"),
            // Another pause, not the one this Kubernetes version requires.
            image("k8s.gcr.io/pause:3.1"),
        ];
        let script = images_script(&images, &[pause("k8s.gcr.io/pause:3.2")]);
        assert!(
            script.contains(
                "/usr/local/bin/ctr --namespace k8s.io images label 'k8s.gcr.io/pause:3.2' \
                 io.cri-containerd.pinned=pinned >/dev/null\n"
            ),
            "{script}"
        );
        let all = "ilha.test/busybox:1\nk8s.gcr.io/pause:3.2\nk8s.gcr.io/pause:3.1";
        let done = run(&script, all, true, dir.path());
        assert_eq!(done.status, Some(0), "{}", done.stderr);
        assert_eq!(
            done.labelled,
            [(
                "k8s.gcr.io/pause:3.2".to_string(),
                "io.cri-containerd.pinned=pinned".to_string()
            )]
        );
        assert_eq!(
            done.filter.as_deref(),
            Some(r#"labels."io.cri-containerd.pinned"==pinned"#)
        );

        // A label that does not take: the step fails, naming the image and the label.
        let done = run(&script, all, false, dir.path());
        assert_eq!(done.status, Some(1));
        assert_eq!(
            done.stderr,
            "image k8s.gcr.io/pause:3.2 is not labelled io.cri-containerd.pinned=pinned after \
             `ctr images label`\n"
        );

        // The bundle names the pause image with its digest too: that name is the one labelled.
        let pinned_by_digest = format!("k8s.gcr.io/pause:3.2@sha256:{}", "a".repeat(64));
        let script = images_script(
            &[image(&pinned_by_digest), image("ilha.test/busybox:1")],
            &[pause("k8s.gcr.io/pause:3.2")],
        );
        let done = run(
            &script,
            &format!("{pinned_by_digest}\nilha.test/busybox:1"),
            true,
            dir.path(),
        );
        assert_eq!(done.status, Some(0), "{}", done.stderr);
        assert_eq!(done.labelled.len(), 1);
        assert_eq!(done.labelled[0].0, pinned_by_digest);

        // Nothing required in the bundle (refused earlier, by the requirement list): no label,
        // no filtered listing.
        let script = images_script(
            &[image("ilha.test/busybox:1")],
            &[pause("k8s.gcr.io/pause:3.2")],
        );
        assert!(!script.contains(" images label "), "{script}");
        let done = run(&script, "ilha.test/busybox:1", true, dir.path());
        assert_eq!(done.status, Some(0), "{}", done.stderr);
        assert!(done.labelled.is_empty() && done.filter.is_none());
    }

    #[test]
    fn every_image_name_is_one_quoted_word() {
        let dir = tempfile::tempdir().unwrap();
        // A valid name, and one that only a hand-made index could carry (the index's validation
        // refuses it, see `ilha_format::names`): neither may run anything, even as the name of
        // the pause image.
        let valid = "registry.k8s.io/pause:3.2";
        let hostile = "it's$(touch pwned1)`touch pwned2`;touch pwned3\ntouch pwned4 '";
        assert!(ilha_format::names::check_image_reference(hostile).is_err());
        let script = images_script(&[image(valid), image(hostile)], &[pause(hostile)]);
        assert!(script.starts_with(&format!("{BIN_DIR}/ctr --namespace k8s.io images import ")));
        assert!(script.ends_with(&format!("rm -f {IMAGES_ARCHIVE}\n")));
        assert!(
            script.contains(
                "grep -Fxq 'registry.k8s.io/pause:3.2' <<<\"$present\" || \
                 { echo 'image registry.k8s.io/pause:3.2 missing after import' >&2; exit 1; }\n"
            ),
            "{script}"
        );

        // Both present: the checks pass, the hostile name is labelled as one word, nothing ran.
        let done = run(&script, &format!("{valid}\n{hostile}"), true, dir.path());
        assert_eq!(done.status, Some(0), "{}", done.stderr);
        assert_eq!(done.labelled.len(), 1);
        assert_eq!(done.labelled[0].0, hostile);
        // The hostile one missing: it is named literally, and still nothing ran.
        let done = run(&script, valid, true, dir.path());
        assert_eq!(done.status, Some(1));
        assert_eq!(
            done.stderr,
            format!("image {hostile} missing after import\n")
        );
        let ran: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(ran.is_empty(), "the image name ran commands: {ran:?}");
    }
}

#[cfg(test)]
mod apiproxy_script_tests {
    use super::*;

    /// Runs the script with a fake `systemctl` whose loaded unit ran `exec_path`.
    fn run_with_loaded_unit(exec_path: &str, legacy: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\n[ \"$1\" = show ] && echo '{{ path={exec_path} ; argv[]={exec_path} --listen=127.0.0.1:6443 ; }}'\nexit 0\n"
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("755")
            .arg(&fake)
            .status()
            .unwrap();
        let script = apiproxy_script(legacy.to_str().unwrap());
        super::super::tests_support::assert_bash_syntax(&script);
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let status = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn the_old_ilha_is_removed_only_when_the_loaded_unit_ran_it() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("ilha");
        std::fs::write(&legacy, "old").unwrap();
        run_with_loaded_unit("/usr/local/bin/ilha-apiproxy", &legacy);
        assert!(legacy.exists(), "removed though the unit ran ilha-apiproxy");
        run_with_loaded_unit(legacy.to_str().unwrap(), &legacy);
        assert!(!legacy.exists(), "the old binary is still there");
        // Already gone: the step still succeeds.
        run_with_loaded_unit(legacy.to_str().unwrap(), &legacy);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::{assert_bash_syntax, plan_for};
    use super::super::versions::HostBinaries;
    use super::*;

    fn sha(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// Binaries of a master + etcd host, as the `binaries` step lists them.
    fn uploads(names: &[(&str, &str)]) -> Vec<Upload> {
        names
            .iter()
            .map(|(name, content)| {
                Upload::local(
                    binary_destination(name),
                    0o755,
                    PathBuf::from(format!("/bundle/{name}")),
                    sha(content),
                )
            })
            .collect()
    }

    /// A staged variant (`cluster::encryption`) journals the digest the next run computes for the
    /// same file: the encryption config is the control-plane step's last upload.
    #[test]
    fn a_variant_with_another_file_has_the_digest_of_the_step_built_with_it() {
        let unit = RemoteFile::new("/etc/systemd/system/kube-apiserver.service", 0o644, "unit");
        let config =
            |text: &str| RemoteFile::new("/etc/kubernetes/encryption-config.yaml", 0o600, text);
        let build = |file: &str| {
            Step::new(
                "control-plane",
                Phase::ControlPlane,
                vec![Upload::file(unit.clone()), Upload::file(config(file))],
                "restart".into(),
                &["binaries-digest", "certs-digest"],
            )
        };
        let variant = build("key1").with_file(config("key2"));
        assert_eq!(variant.digest, build("key2").digest);
        assert_ne!(variant.digest, build("key1").digest);
        assert_eq!(variant.uploads.len(), 2);
        // Without the file before (a cluster from before encryption): added.
        let plain = Step::new(
            "control-plane",
            Phase::ControlPlane,
            vec![Upload::file(unit.clone())],
            "restart".into(),
            &["binaries-digest", "certs-digest"],
        );
        assert_eq!(plain.with_file(config("key2")).digest, build("key2").digest);
    }

    /// etcdutl goes to etcd hosts only: always from 1.34, below only when the bundle has it.
    #[test]
    fn etcdutl_is_installed_on_etcd_hosts_when_required_or_carried() {
        let requirements = |version: &str| {
            ilha_format::cluster::requirements(&ilha_format::cluster::ClusterSpec {
                kubernetes_version: version.into(),
                network: ilha_format::cluster::Network::Bridge,
            })
            .unwrap()
        };
        let plan = plan_for("v1.20.2");
        let master = plan.host("node1").unwrap();
        let worker = plan.host("node4").unwrap();
        let old = requirements("v1.20.2");
        let with = binary_names(&old, master, |_| true);
        assert_eq!(&with[..3], ["etcd", "etcdctl", "etcdutl"], "{with:?}");
        let without = binary_names(&old, master, |name| name != "etcdutl");
        assert!(!without.contains(&"etcdutl"), "{without:?}");
        assert_eq!(without.len() + 1, with.len());
        assert!(!binary_names(&old, worker, |_| true).contains(&"etcdutl"));
        let new = requirements("v1.37.1");
        assert!(binary_names(&new, master, |_| true).contains(&"etcdutl"));
        assert!(!binary_names(&new, worker, |_| true).contains(&"etcdutl"));
        let names = binary_names(&new, master, |_| true);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn replacing_an_upload_keeps_the_rest_and_makes_the_digest_of_a_fresh_step() {
        let plan = plan_for("v1.20.2");
        let master = plan.host("node1").unwrap();
        let files = |unit: RemoteFile| {
            let mut list = vec![
                Upload::file(unit),
                Upload::file(render::scheduler_unit(&plan)),
            ];
            list.extend(
                super::super::admission::apiserver_files(&plan)
                    .into_iter()
                    .map(Upload::file),
            );
            list
        };
        let final_unit = render::apiserver_unit(&plan, master);
        let first_unit = render::apiserver_unit_with(
            &plan,
            master,
            super::super::admission::PolicyPlugin::NotYet,
        );
        let deps = ["binaries-digest", "certs-digest"];
        let final_step = Step::new(
            "control-plane",
            Phase::ControlPlane,
            files(final_unit.clone()),
            "restart".into(),
            &deps,
        );
        let first = final_step.replacing(first_unit.clone());
        let expected = Step::new(
            "control-plane",
            Phase::ControlPlane,
            files(first_unit),
            "restart".into(),
            &deps,
        );
        assert_eq!(first.digest, expected.digest, "dependencies kept");
        assert_ne!(first.digest, final_step.digest);
        assert_eq!(first.uploads.len(), final_step.uploads.len());
        assert_eq!(first.replacing(final_unit).digest, final_step.digest);
        // The control-plane step carries the admission configuration the unit names.
        let host_files: Vec<String> = final_step
            .uploads
            .iter()
            .map(|u| u.remote_path.clone())
            .collect();
        assert!(host_files.contains(&super::super::admission::ADMISSION_CONFIG.to_string()));
    }

    #[test]
    fn each_restarting_step_switches_only_its_own_binaries() {
        let plan = plan_for("v1.20.2");
        let master = plan.host("node1").unwrap();
        let worker = plan.host("node4").unwrap();
        let all = uploads(&[
            ("etcd", "e"),
            ("etcdctl", "ec"),
            ("etcdutl", "eu"),
            ("kube-apiserver", "a"),
            ("kubectl", "k"),
            ("kubelet", "l"),
            ("runc", "r"),
            ("bridge", "b"),
        ]);
        let etcd = switch_script("etcd", master, &all);
        assert!(etcd.starts_with(SWITCH_STAGED), "{etcd}");
        assert!(etcd.ends_with(&format!(
            "switch_staged '/usr/local/bin/etcd' {}\nswitch_staged '/usr/local/bin/etcdctl' {}\n\
             switch_staged '/usr/local/bin/etcdutl' {}\n",
            sha("e"),
            sha("ec"),
            sha("eu")
        )));
        let cp = switch_script("control-plane", master, &all);
        assert!(
            cp.contains("'/usr/local/bin/kube-apiserver'")
                && cp.contains("'/usr/local/bin/kubectl'")
        );
        assert!(!cp.contains("etcd'") && !cp.contains("kubelet"), "{cp}");
        // On a master kubectl goes with the apiserver; on a worker with the kubelet.
        assert!(!switch_script("kubelet", master, &all).contains("kubectl"));
        let kubelet = switch_script("kubelet", worker, &all);
        assert!(
            kubelet.contains("'/usr/local/bin/kubectl'")
                && kubelet.contains("'/usr/local/bin/kubelet'")
        );
        let containerd = switch_script("containerd", worker, &all);
        assert!(
            containerd.contains("'/usr/local/sbin/runc'")
                && containerd.contains("'/opt/cni/bin/bridge'")
        );
        // A step that owns nothing gets no switch code (its digest is what it was).
        assert_eq!(switch_script("kube-proxy", worker, &all), "");
        assert_eq!(switch_script("etcd", worker, &all), "");
        for script in [etcd, cp, kubelet, containerd] {
            assert_bash_syntax(&script);
        }
    }

    #[test]
    fn staging_moves_changed_binaries_aside_and_keeps_the_digest() {
        let plan = plan_for("v1.20.2");
        let master = plan.host("node1").unwrap();
        let list = uploads(&[
            ("etcd", "new etcd"),
            ("etcdctl", "etcdctl"),
            ("kube-apiserver", "a"),
        ]);
        let step = Step::new(
            "binaries",
            Phase::Prepare,
            list.clone(),
            binaries_script(&list),
            &[],
        );
        let digest = step.digest.clone();

        // A fresh host: everything in place.
        let mut fresh = vec![step.clone()];
        stage_binaries(&mut fresh, master, &HostBinaries::default());
        let paths: Vec<&str> = fresh[0]
            .uploads
            .iter()
            .map(|u| u.remote_path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/usr/local/bin/etcd",
                "/usr/local/bin/etcdctl",
                "/usr/local/bin/kube-apiserver"
            ]
        );

        // A running host: etcd changed (staged), etcdctl unchanged (not sent), the apiserver
        // live but unrecorded (an install by an older ilha: staged, to be safe).
        let on_host = HostBinaries::parse(&format!(
            "R\t{}  /usr/local/bin/etcd\nR\t{}  /usr/local/bin/etcdctl\n\
             E\t/usr/local/bin/etcd\nE\t/usr/local/bin/etcdctl\nE\t/usr/local/bin/kube-apiserver\n",
            sha("old etcd"),
            sha("etcdctl")
        ));
        let mut running = vec![step.clone()];
        stage_binaries(&mut running, master, &on_host);
        let paths: Vec<&str> = running[0]
            .uploads
            .iter()
            .map(|u| u.remote_path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/usr/local/bin/etcd.ilha-new",
                "/usr/local/bin/kube-apiserver.ilha-new"
            ]
        );
        assert_eq!(
            running[0].digest, digest,
            "where binaries travel is not a change"
        );
        assert_eq!(fresh[0].digest, digest);
        // The record names the final paths, whatever the uploads' destinations.
        assert!(
            running[0]
                .script
                .contains(&format!("{}  /usr/local/bin/etcd\n", sha("new etcd")))
        );
        assert!(running[0].script.contains("'/usr/local/bin/etcd' '/usr/local/bin/etcdctl' '/usr/local/bin/kube-apiserver' >> /var/lib/ilha/files"));
        assert_bash_syntax(&running[0].script);
    }

    /// The `binaries` step's script and a restarting step's switch, run with bash against a
    /// scratch root: first install, staged upgrade, an interrupted re-run, a foreign staged file.
    #[test]
    fn staged_binaries_switch_by_rename_in_a_scratch_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        let plan = plan_for("v1.20.2");
        let master = plan.host("node1").unwrap();
        let list = uploads(&[("etcd", "etcd 3.5\n")]);
        let rooted = |script: &str| {
            script
                .replace("/usr/local/bin", &format!("{r}/usr/local/bin"))
                .replace("/var/lib/ilha", &format!("{r}/var/lib/ilha"))
        };
        let bash = |script: &str| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("set -euo pipefail\n{}", rooted(script)))
                .output()
                .unwrap()
        };
        std::fs::create_dir_all(root.path().join("usr/local/bin")).unwrap();
        let live = root.path().join("usr/local/bin/etcd");
        let staged = root.path().join("usr/local/bin/etcd.ilha-new");
        std::fs::write(&live, "etcd 3.4\n").unwrap();

        // The binaries step: records what the final path will hold.
        let out = bash(&binaries_script(&list));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record = std::fs::read_to_string(root.path().join("var/lib/ilha/binaries")).unwrap();
        // (The scratch root shows in the record's paths too.)
        assert_eq!(
            record,
            format!("{}  {r}/usr/local/bin/etcd\n", sha("etcd 3.5\n"))
        );
        let on_host = HostBinaries::parse(
            &record
                .lines()
                .map(|l| format!("R\t{l}\n"))
                .collect::<String>(),
        );
        assert_eq!(
            on_host.placement(&format!("{r}/usr/local/bin/etcd"), &sha("etcd 3.5\n")),
            super::super::versions::Placement::InPlace,
            "recorded but absent: sent again"
        );

        // Staged upload done, switch not yet: the live binary is untouched until the restart.
        std::fs::write(&staged, "etcd 3.5\n").unwrap();
        let inode_before = std::fs::metadata(&live)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let switch = switch_script("etcd", master, &list);
        let out = bash(&switch);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "etcd 3.5\n");
        assert!(!staged.exists(), "switched by rename");
        let inode_after = std::fs::metadata(&live)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_ne!(
            inode_before, inode_after,
            "a rename, not a rewrite of the running file"
        );

        // A re-run after the switch (the restart was interrupted): nothing staged, a no-op.
        let out = bash(&switch);
        assert!(out.status.success());
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "etcd 3.5\n");

        // A staged file that is not the bundle's: refused before any restart, nothing moved.
        std::fs::write(&staged, "something else\n").unwrap();
        let out = bash(&(switch.clone() + "echo restarted\n"));
        assert_eq!(out.status.code(), Some(96));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("etcd.ilha-new is not the bundle's binary")
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("restarted"));
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "etcd 3.5\n");
    }
}
