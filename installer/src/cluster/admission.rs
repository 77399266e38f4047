//! Admission and pod security on kube-apiserver, by Kubernetes version (issue 14; the CIS rows
//! are in docs/hardening.md, "Admission and pod security").
//!
//! - Pod security (`hardening.pod_security`): up to 1.22 the `PodSecurityPolicy` plugin with two
//!   policies ([`pod_security_policies`]): `ilha-baseline`, PodSecurity's `baseline` level as a
//!   policy, for every service account and authenticated user, and `ilha-privileged` for
//!   kube-system's service accounts and the nodes. From 1.23 the built-in `PodSecurity` plugin
//!   (baseline enforced, restricted audited and warned, kube-system exempt): it is on by default
//!   there and needs no objects, while PodSecurityPolicy is deprecated (gone in 1.25), so 1.23 and
//!   1.24 use PodSecurity too and both ranges hold pods to the same bar.
//! - `EventRateLimit` (server-wide and per-namespace buckets) and, where the plugin exists (1.21+),
//!   `DenyServiceExternalIPs` (`hardening.component_flags`).
//! - Anonymous requests: from 1.32 an `AuthenticationConfiguration` lets them reach only the
//!   health endpoints (`hardening.component_flags`); before, `--anonymous-auth` stays at its
//!   default (the node-local API proxy and load balancers probe `/readyz` without credentials).
//!
//! `AlwaysPullImages` is never enabled: in an air gap images are pre-loaded on each node and
//! cannot be pulled again.

use std::fmt::Write as _;

use super::ClusterPlan;
use super::render::RemoteFile;
use crate::config::KubeVersion;

/// kube-apiserver's admission configuration (`--admission-control-config-file`).
pub const ADMISSION_CONFIG: &str = "/etc/kubernetes/admission-config.yaml";
/// kube-apiserver's authentication configuration (`--authentication-config`), from 1.32.
pub const AUTHENTICATION_CONFIG: &str = "/etc/kubernetes/authentication-config.yaml";
/// Where the PodSecurityPolicy objects are put on the first master before `kubectl apply`.
pub const POLICIES_FILE: &str = "/var/lib/ilha/pod-security-policies.yaml";
/// The journal entry (first master) saying the policies were applied, with their digest.
pub const POLICIES_JOURNAL_ID: &str = "pod-security-policies";

/// The default policy's name (PodSecurity `baseline` as a PodSecurityPolicy).
pub const BASELINE_POLICY: &str = "ilha-baseline";
/// The policy kube-system's service accounts and the nodes may use.
pub const PRIVILEGED_POLICY: &str = "ilha-privileged";
/// The ClusterRole granting `use` of [`PRIVILEGED_POLICY`]: bind it in a namespace to let its
/// service accounts run privileged pods (docs/hardening.md says how).
pub const PRIVILEGED_POLICY_ROLE: &str = "ilha:podsecuritypolicy:privileged";
const BASELINE_POLICY_ROLE: &str = "ilha:podsecuritypolicy:baseline";

/// The namespace exempt from pod security (its workloads are the cluster's own).
pub const EXEMPT_NAMESPACE: &str = "kube-system";

/// The first minor with the built-in PodSecurity admission enabled by default (beta).
const POD_SECURITY_FROM: (u64, u64) = (1, 23);
/// The first minor with the `DenyServiceExternalIPs` plugin.
const DENY_EXTERNAL_IPS_FROM: (u64, u64) = (1, 21);
/// The first minor whose PodSecurityPolicy knows the `ephemeral` volume type.
const PSP_EPHEMERAL_VOLUMES_FROM: (u64, u64) = (1, 21);
/// The first minor with `anonymous.conditions` in AuthenticationConfiguration on by default
/// (feature AnonymousAuthConfigurableEndpoints: alpha 1.31, beta 1.32, GA 1.34).
const ANONYMOUS_CONDITIONS_FROM: (u64, u64) = (1, 32);
/// The first minor with AuthenticationConfiguration in `apiserver.config.k8s.io/v1` (GA).
const AUTHENTICATION_CONFIG_V1_FROM: (u64, u64) = (1, 34);

/// The only paths anonymous requests may reach from 1.32: what probes ask.
pub const ANONYMOUS_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// EventRateLimit's buckets: `(type, qps, burst)`. The server-wide one protects etcd from an
/// event storm; the per-namespace one keeps one noisy namespace from using it all.
pub const EVENT_LIMITS: [(&str, u32, u32); 2] = [("Server", 500, 1000), ("Namespace", 50, 100)];
/// Namespaces whose buckets are remembered at once (least recently used ones are dropped).
const EVENT_NAMESPACE_CACHE: u32 = 2000;

/// How pods are held to a security level on this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSecurityMechanism {
    /// `hardening.pod_security: false`.
    Off,
    /// Kubernetes up to 1.22: the PodSecurityPolicy plugin and ilha's policies.
    PodSecurityPolicy,
    /// Kubernetes 1.23 and later: the PodSecurity plugin and its admission configuration.
    PodSecurity,
}

pub fn mechanism(plan: &ClusterPlan) -> PodSecurityMechanism {
    let (major, minor) = POD_SECURITY_FROM;
    if !plan.config.hardening.pod_security {
        PodSecurityMechanism::Off
    } else if plan.version.at_least(major, minor) {
        PodSecurityMechanism::PodSecurity
    } else {
        PodSecurityMechanism::PodSecurityPolicy
    }
}

/// Whether the cluster's pods are admitted by PodSecurityPolicy (whose objects `up` applies).
pub fn uses_pod_security_policy(plan: &ClusterPlan) -> bool {
    mechanism(plan) == PodSecurityMechanism::PodSecurityPolicy
}

/// Whether kube-apiserver's PodSecurityPolicy plugin is on in a render: off only for the first
/// pass over a running cluster whose policies are not applied yet (with the plugin on and no
/// policy, every new pod is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyPlugin {
    On,
    NotYet,
}

fn version_at_least(version: &KubeVersion, (major, minor): (u64, u64)) -> bool {
    version.at_least(major, minor)
}

/// The admission plugins kube-apiserver enables, in the order of the flag.
pub fn admission_plugins(plan: &ClusterPlan, policy_plugin: PolicyPlugin) -> Vec<&'static str> {
    let mut plugins = vec!["NodeRestriction"];
    if plan.config.hardening.component_flags {
        plugins.push("EventRateLimit");
        if version_at_least(&plan.version, DENY_EXTERNAL_IPS_FROM) {
            plugins.push("DenyServiceExternalIPs");
        }
    }
    match mechanism(plan) {
        PodSecurityMechanism::Off => {}
        PodSecurityMechanism::PodSecurityPolicy => {
            if policy_plugin == PolicyPlugin::On {
                plugins.push("PodSecurityPolicy");
            }
        }
        PodSecurityMechanism::PodSecurity => plugins.push("PodSecurity"),
    }
    plugins
}

/// The `AdmissionConfiguration` holding the configured plugins' settings, if any has some.
pub fn admission_config(plan: &ClusterPlan) -> Option<RemoteFile> {
    let mut plugins = String::new();
    if plan.config.hardening.component_flags {
        let _ = write!(
            plugins,
            "- name: EventRateLimit\n  configuration:\n    \
             apiVersion: eventratelimit.admission.k8s.io/v1alpha1\n    kind: Configuration\n    \
             limits:\n"
        );
        for (kind, qps, burst) in EVENT_LIMITS {
            let _ = write!(
                plugins,
                "    - type: {kind}\n      qps: {qps}\n      burst: {burst}\n"
            );
            if kind != "Server" {
                let _ = writeln!(plugins, "      cacheSize: {EVENT_NAMESPACE_CACHE}");
            }
        }
    }
    if mechanism(plan) == PodSecurityMechanism::PodSecurity {
        // v1beta1 in 1.23 and 1.24, v1 from 1.25 (when PodSecurity went GA).
        let api = if plan.version.at_least(1, 25) {
            "v1"
        } else {
            "v1beta1"
        };
        let _ = write!(
            plugins,
            "- name: PodSecurity\n  configuration:\n    \
             apiVersion: pod-security.admission.config.k8s.io/{api}\n    \
             kind: PodSecurityConfiguration\n    \
             defaults:\n      \
             enforce: baseline\n      enforce-version: latest\n      \
             audit: restricted\n      audit-version: latest\n      \
             warn: restricted\n      warn-version: latest\n    \
             exemptions:\n      usernames: []\n      runtimeClasses: []\n      \
             namespaces: [{EXEMPT_NAMESPACE}]\n"
        );
    }
    if plugins.is_empty() {
        return None;
    }
    // apiserver.config.k8s.io/v1 has AdmissionConfiguration from 1.17, before ilha's oldest.
    let text = format!(
        "# Written by ilha; changes are overwritten by the next `ilha up`.\n\
         apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{plugins}"
    );
    Some(RemoteFile::new(ADMISSION_CONFIG, 0o600, text))
}

/// From 1.32: anonymous requests only to the health endpoints.
pub fn authentication_config(plan: &ClusterPlan) -> Option<RemoteFile> {
    if !plan.config.hardening.component_flags
        || !version_at_least(&plan.version, ANONYMOUS_CONDITIONS_FROM)
    {
        return None;
    }
    let api = if version_at_least(&plan.version, AUTHENTICATION_CONFIG_V1_FROM) {
        "v1"
    } else {
        "v1beta1"
    };
    let mut text = format!(
        "# Written by ilha; changes are overwritten by the next `ilha up`.\n\
         # Anonymous requests reach only the health endpoints (load balancers and ilha's\n\
         # node-local API proxy probe /readyz without credentials).\n\
         apiVersion: apiserver.config.k8s.io/{api}\nkind: AuthenticationConfiguration\n\
         anonymous:\n  enabled: true\n  conditions:\n"
    );
    for path in ANONYMOUS_PATHS {
        let _ = writeln!(text, "  - path: {path}");
    }
    Some(RemoteFile::new(AUTHENTICATION_CONFIG, 0o600, text))
}

/// kube-apiserver's admission and anonymous-auth flags.
pub fn apiserver_flags(plan: &ClusterPlan, policy_plugin: PolicyPlugin) -> Vec<String> {
    let mut flags = vec![format!(
        "--enable-admission-plugins={}",
        admission_plugins(plan, policy_plugin).join(",")
    )];
    if let Some(config) = admission_config(plan) {
        flags.push(format!("--admission-control-config-file={}", config.path));
    }
    // Privileged pods stay possible where pod security allows them (kube-system).
    flags.push("--allow-privileged=true".to_string());
    if let Some(config) = authentication_config(plan) {
        // Replaces --anonymous-auth (the two may not be given together).
        flags.push(format!("--authentication-config={}", config.path));
    }
    flags
}

/// The files kube-apiserver's flags above name.
pub fn apiserver_files(plan: &ClusterPlan) -> Vec<RemoteFile> {
    admission_config(plan)
        .into_iter()
        .chain(authentication_config(plan))
        .collect()
}

/// Every volume type PodSecurityPolicy knows in `version` but `hostPath` (PodSecurity's
/// baseline forbids only that one).
fn baseline_volumes(version: &KubeVersion) -> Vec<&'static str> {
    let mut volumes = vec![
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "persistentVolumeClaim",
        "projected",
        "secret",
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephFS",
        "cinder",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "iscsi",
        "nfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    if version_at_least(version, PSP_EPHEMERAL_VOLUMES_FROM) {
        volumes.push("ephemeral");
    }
    volumes
}

/// Capabilities PodSecurity's baseline lets a container add (the runtime's defaults).
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The PodSecurityPolicy objects and their RBAC (Kubernetes up to 1.22), `None` elsewhere.
///
/// A pod is admitted when its creator or its service account may `use` a policy in the pod's
/// namespace that allows it. `ilha-baseline` is bound cluster-wide to every service account and
/// authenticated user; `ilha-privileged` to kube-system's service accounts in kube-system only (a
/// RoleBinding: the controllers, which are kube-system accounts, get nothing more elsewhere) and
/// to the nodes. Cluster admins (`system:masters`) may use every policy, as RBAC lets them do
/// anything.
pub fn pod_security_policies(plan: &ClusterPlan) -> Option<RemoteFile> {
    if !uses_pod_security_policy(plan) {
        return None;
    }
    let list = |items: &[&str]| items.join(", ");
    let text = format!(
        r#"# Written by ilha: pod security up to Kubernetes 1.22 (docs/hardening.md).
# ilha-baseline is PodSecurity's baseline level (the one 1.23+ enforces): no privileged
# containers, host namespaces, hostPath volumes, host ports or added capabilities beyond the
# runtime's defaults.
apiVersion: policy/v1beta1
kind: PodSecurityPolicy
metadata:
  name: {BASELINE_POLICY}
spec:
  privileged: false
  allowPrivilegeEscalation: true
  allowedCapabilities: [{caps}]
  volumes: [{volumes}]
  hostNetwork: false
  hostIPC: false
  hostPID: false
  runAsUser: {{rule: RunAsAny}}
  seLinux: {{rule: RunAsAny}}
  supplementalGroups: {{rule: RunAsAny}}
  fsGroup: {{rule: RunAsAny}}
---
apiVersion: policy/v1beta1
kind: PodSecurityPolicy
metadata:
  name: {PRIVILEGED_POLICY}
spec:
  privileged: true
  allowPrivilegeEscalation: true
  allowedCapabilities: ["*"]
  volumes: ["*"]
  hostNetwork: true
  hostPorts: [{{min: 0, max: 65535}}]
  hostIPC: true
  hostPID: true
  runAsUser: {{rule: RunAsAny}}
  seLinux: {{rule: RunAsAny}}
  supplementalGroups: {{rule: RunAsAny}}
  fsGroup: {{rule: RunAsAny}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {BASELINE_POLICY_ROLE}
rules:
- apiGroups: [policy]
  resources: [podsecuritypolicies]
  verbs: [use]
  resourceNames: [{BASELINE_POLICY}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {PRIVILEGED_POLICY_ROLE}
rules:
- apiGroups: [policy]
  resources: [podsecuritypolicies]
  verbs: [use]
  resourceNames: [{PRIVILEGED_POLICY}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {BASELINE_POLICY_ROLE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {BASELINE_POLICY_ROLE}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:serviceaccounts"}}
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {PRIVILEGED_POLICY_ROLE}
  namespace: {EXEMPT_NAMESPACE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {PRIVILEGED_POLICY_ROLE}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:serviceaccounts:{EXEMPT_NAMESPACE}"}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: "ilha:podsecuritypolicy:nodes"
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {PRIVILEGED_POLICY_ROLE}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}}
"#,
        caps = list(&BASELINE_CAPABILITIES),
        volumes = list(&baseline_volumes(&plan.version)),
    );
    Some(RemoteFile::new(POLICIES_FILE, 0o644, text))
}

/// One line for `plan`: what holds pods to a security level, and what does not (NetworkPolicy).
pub fn plan_summary(plan: &ClusterPlan) -> String {
    let pods = match mechanism(plan) {
        PodSecurityMechanism::Off => {
            "pod security: off (hardening.pod_security: false)".to_string()
        }
        PodSecurityMechanism::PodSecurityPolicy => format!(
            "pod security: PodSecurityPolicy (Kubernetes {} has no PodSecurity admission on by \
             default): {BASELINE_POLICY} (baseline) for everyone, {PRIVILEGED_POLICY} in \
             {EXEMPT_NAMESPACE}",
            plan.version
        ),
        PodSecurityMechanism::PodSecurity => format!(
            "pod security: PodSecurity admission, baseline enforced, restricted audited and \
             warned, {EXEMPT_NAMESPACE} exempt"
        ),
    };
    format!(
        "{pods}\nnetwork policy: NOT enforced: the pod network (bridge) accepts NetworkPolicy \
         objects but nothing applies them (docs/hardening.md, CIS 5.3.1/5.3.2)\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::render::apiserver_unit;
    use crate::cluster::tests_support::plan_for;

    fn text(file: &RemoteFile) -> String {
        String::from_utf8(file.content.clone()).unwrap()
    }

    fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_multiple(text).unwrap_or_else(|err| panic!("{err}\n{text}"))
    }

    fn unit(plan: &ClusterPlan) -> String {
        text(&apiserver_unit(plan, &plan.hosts[0]))
    }

    fn flag<'a>(unit: &'a str, name: &str) -> Option<&'a str> {
        unit.lines()
            .map(|l| l.trim().trim_end_matches('\\').trim())
            .find_map(|l| l.strip_prefix(&format!("--{name}=")))
    }

    #[test]
    fn v1_20_uses_pod_security_policy_event_rate_limit_and_no_external_ip_plugin() {
        let plan = plan_for("v1.20.2");
        let unit = unit(&plan);
        assert_eq!(
            flag(&unit, "enable-admission-plugins"),
            Some("NodeRestriction,EventRateLimit,PodSecurityPolicy"),
            "{unit}"
        );
        assert_eq!(
            flag(&unit, "admission-control-config-file"),
            Some(ADMISSION_CONFIG)
        );
        assert!(!unit.contains("AlwaysPullImages"));
        assert!(!unit.contains("--authentication-config"));
        assert!(!unit.contains("PodSecurity,") && !unit.ends_with("PodSecurity"));
        let config = text(&admission_config(&plan).unwrap());
        let doc = &yaml_docs(&config)[0];
        assert_eq!(doc["apiVersion"], "apiserver.config.k8s.io/v1");
        assert_eq!(doc["kind"], "AdmissionConfiguration");
        let plugins = doc["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1, "{config}");
        let limits = &plugins[0]["configuration"];
        assert_eq!(
            limits["apiVersion"],
            "eventratelimit.admission.k8s.io/v1alpha1"
        );
        let kinds: Vec<&str> = limits["limits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Server", "Namespace"]);
        assert_eq!(limits["limits"][1]["burst"], 100);
        assert_eq!(admission_config(&plan).unwrap().mode, 0o600);
    }

    #[test]
    fn the_policies_for_1_20_are_baseline_for_everyone_and_privileged_in_kube_system() {
        let plan = plan_for("v1.20.2");
        let file = pod_security_policies(&plan).expect("1.20 uses PodSecurityPolicy");
        let docs = yaml_docs(&text(&file));
        let named = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
                .clone()
        };
        let baseline = named("PodSecurityPolicy", BASELINE_POLICY);
        let spec = &baseline["spec"];
        assert_eq!(spec["privileged"], false);
        for host in ["hostNetwork", "hostIPC", "hostPID"] {
            assert_eq!(spec[host], false, "{host}");
        }
        assert!(
            spec.get("hostPorts").is_none(),
            "baseline forbids host ports"
        );
        let volumes: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(volumes.contains(&"persistentVolumeClaim") && volumes.contains(&"secret"));
        assert!(!volumes.contains(&"hostPath") && !volumes.contains(&"*"));
        // 1.20's PodSecurityPolicy refuses volume types it does not know.
        assert!(!volumes.contains(&"ephemeral"));
        assert!(
            !spec["allowedCapabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "SYS_ADMIN" || c == "NET_RAW" || c == "*")
        );
        let privileged = named("PodSecurityPolicy", PRIVILEGED_POLICY);
        assert_eq!(privileged["spec"]["privileged"], true);

        let everyone = named("ClusterRoleBinding", BASELINE_POLICY_ROLE);
        let groups: Vec<&str> = everyone["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(groups, ["system:serviceaccounts", "system:authenticated"]);
        // Privileged only inside kube-system: a RoleBinding, not a ClusterRoleBinding.
        let kube_system = named("RoleBinding", PRIVILEGED_POLICY_ROLE);
        assert_eq!(kube_system["metadata"]["namespace"], "kube-system");
        assert_eq!(
            kube_system["subjects"][0]["name"],
            "system:serviceaccounts:kube-system"
        );
        assert_eq!(
            named("ClusterRoleBinding", "ilha:podsecuritypolicy:nodes")["subjects"][0]["name"],
            "system:nodes"
        );
        let role = named("ClusterRole", PRIVILEGED_POLICY_ROLE);
        assert_eq!(role["rules"][0]["verbs"][0], "use");
        assert_eq!(role["rules"][0]["resourceNames"][0], PRIVILEGED_POLICY);

        // 1.21 and 1.22 know generic ephemeral volumes; 1.23 on needs no policy objects.
        let v122 = text(&pod_security_policies(&plan_for("v1.22.17")).unwrap());
        assert!(v122.contains("vsphereVolume, ephemeral]"), "{v122}");
        assert!(pod_security_policies(&plan_for("v1.23.0")).is_none());
    }

    #[test]
    fn the_policy_plugin_waits_for_its_policies_on_the_first_pass() {
        let plan = plan_for("v1.20.2");
        let first = apiserver_flags(&plan, PolicyPlugin::NotYet);
        assert_eq!(
            first[0],
            "--enable-admission-plugins=NodeRestriction,EventRateLimit"
        );
        assert_eq!(
            apiserver_flags(&plan, PolicyPlugin::On)[0],
            "--enable-admission-plugins=NodeRestriction,EventRateLimit,PodSecurityPolicy"
        );
        // PodSecurity needs no objects: the same on both passes.
        let new = plan_for("v1.23.0");
        assert_eq!(
            apiserver_flags(&new, PolicyPlugin::NotYet),
            apiserver_flags(&new, PolicyPlugin::On)
        );
    }

    #[test]
    fn from_1_21_external_ips_are_denied_and_from_1_23_pod_security_is_configured() {
        let v121 = plan_for("v1.21.14");
        assert_eq!(
            admission_plugins(&v121, PolicyPlugin::On),
            [
                "NodeRestriction",
                "EventRateLimit",
                "DenyServiceExternalIPs",
                "PodSecurityPolicy"
            ]
        );
        for (version, api) in [
            ("v1.23.0", "v1beta1"),
            ("v1.24.17", "v1beta1"),
            ("v1.25.0", "v1"),
            ("v1.34.1", "v1"),
        ] {
            let plan = plan_for(version);
            assert_eq!(
                admission_plugins(&plan, PolicyPlugin::On),
                [
                    "NodeRestriction",
                    "EventRateLimit",
                    "DenyServiceExternalIPs",
                    "PodSecurity"
                ],
                "{version}"
            );
            let config = text(&admission_config(&plan).unwrap());
            let doc = &yaml_docs(&config)[0];
            let pod_security = doc["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "PodSecurity")
                .unwrap_or_else(|| panic!("{version}: {config}"));
            let c = &pod_security["configuration"];
            assert_eq!(
                c["apiVersion"],
                format!("pod-security.admission.config.k8s.io/{api}"),
                "{version}"
            );
            assert_eq!(c["defaults"]["enforce"], "baseline");
            assert_eq!(c["defaults"]["audit"], "restricted");
            assert_eq!(c["defaults"]["warn"], "restricted");
            assert_eq!(c["exemptions"]["namespaces"][0], "kube-system");
        }
    }

    #[test]
    fn anonymous_requests_reach_only_health_endpoints_from_1_32() {
        for version in ["v1.20.2", "v1.31.9"] {
            let plan = plan_for(version);
            assert!(authentication_config(&plan).is_none(), "{version}");
            let unit = unit(&plan);
            assert!(!unit.contains("--authentication-config"), "{version}");
            // The default (anonymous on) stays: probes use /readyz without credentials.
            assert!(!unit.contains("--anonymous-auth"), "{version}");
        }
        for (version, api) in [("v1.32.0", "v1beta1"), ("v1.34.1", "v1")] {
            let plan = plan_for(version);
            let file = authentication_config(&plan).unwrap();
            assert_eq!(file.mode, 0o600);
            let doc = &yaml_docs(&text(&file))[0];
            assert_eq!(doc["apiVersion"], format!("apiserver.config.k8s.io/{api}"));
            assert_eq!(doc["kind"], "AuthenticationConfiguration");
            assert_eq!(doc["anonymous"]["enabled"], true);
            let paths: Vec<&str> = doc["anonymous"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["path"].as_str().unwrap())
                .collect();
            assert_eq!(paths, ANONYMOUS_PATHS);
            let unit = unit(&plan);
            assert_eq!(
                flag(&unit, "authentication-config"),
                Some(AUTHENTICATION_CONFIG)
            );
            assert!(!unit.contains("--anonymous-auth"), "{unit}");
        }
    }

    #[test]
    fn items_off_render_nothing_of_theirs() {
        let mut plan = plan_for("v1.20.2");
        plan.config.hardening.pod_security = false;
        assert_eq!(
            admission_plugins(&plan, PolicyPlugin::On),
            ["NodeRestriction", "EventRateLimit"]
        );
        assert!(pod_security_policies(&plan).is_none());
        assert!(plan_summary(&plan).contains("pod security: off"));
        plan.config.hardening.component_flags = false;
        assert_eq!(
            admission_plugins(&plan, PolicyPlugin::On),
            ["NodeRestriction"]
        );
        assert!(admission_config(&plan).is_none());
        let unit = unit(&plan);
        assert!(!unit.contains("--admission-control-config-file"), "{unit}");
        assert_eq!(
            flag(&unit, "enable-admission-plugins"),
            Some("NodeRestriction")
        );

        let mut new = plan_for("v1.34.1");
        new.config.hardening.component_flags = false;
        assert!(authentication_config(&new).is_none());
        assert_eq!(
            admission_plugins(&new, PolicyPlugin::On),
            ["NodeRestriction", "PodSecurity"]
        );
        let config = text(&admission_config(&new).unwrap());
        assert!(!config.contains("EventRateLimit"), "{config}");
        new.config.hardening.pod_security = false;
        assert!(admission_config(&new).is_none());
        assert!(apiserver_files(&new).is_empty());
    }

    #[test]
    fn plan_says_network_policy_is_not_enforced() {
        let summary = plan_summary(&plan_for("v1.20.2"));
        assert!(
            summary.contains("network policy: NOT enforced"),
            "{summary}"
        );
        assert!(
            summary.contains("pod security: PodSecurityPolicy"),
            "{summary}"
        );
        assert!(plan_summary(&plan_for("v1.30.0")).contains("pod security: PodSecurity admission"));
    }
}
