//! The files ilha writes on hosts: systemd units and component configs, rendered from the plan.
//!
//! Flags and config fields that differ between Kubernetes releases are chosen here, by version,
//! and nowhere else; the tests pin both the lab's v1.20 and a current release.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::paths::*;
use super::{ClusterPlan, HostPlan, admission, hardening, ip_port};
use crate::config::KubeVersion;

/// A file to put on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

impl RemoteFile {
    pub fn new(path: impl Into<String>, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        RemoteFile {
            path: path.into(),
            mode,
            content: content.into(),
        }
    }
}

/// `ExecStart=` with one flag per continuation line, the way people read unit files.
fn exec_start(binary: &str, flags: &[String]) -> String {
    let mut line = format!("ExecStart={binary}");
    for flag in flags {
        line.push_str(" \\\n  ");
        line.push_str(flag);
    }
    line
}

fn unit(description: &str, after: &str, exec: String, service_extra: &str) -> String {
    format!(
        "# Written by ilha; changes are overwritten by the next `ilha up`.\n\
         [Unit]\nDescription={description}\nAfter={after}\nWants=network-online.target\n\n\
         [Service]\n{exec}\n{service_extra}Restart=always\nRestartSec=2\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// Unit files and component configs: root's only (CIS 1.1.1-1.1.9, 4.1.1, 4.1.9 of the newer
/// benchmarks ask for 600; the older ones' 644 is met too). Only root (systemd, the
/// components) reads them.
pub const UNIT_MODE: u32 = 0o600;
pub const CONFIG_MODE: u32 = 0o600;

fn unit_path(name: &str) -> String {
    format!("{UNIT_DIR}/{name}")
}

// ---------------------------------------------------------------------------------------------
// etcd

pub fn etcd_peer_url(host: &HostPlan) -> String {
    format!("https://{}", ip_port(host.peer_ip, 2380))
}

fn etcd_client_url(ip: IpAddr) -> String {
    format!("https://{}", ip_port(ip, 2379))
}

/// Every etcd member's client URL, for kube-apiserver and etcdctl.
pub fn etcd_endpoints(plan: &ClusterPlan) -> String {
    plan.etcd_members()
        .map(|m| etcd_client_url(m.peer_ip))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn etcd_unit(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    // A member keeps the bootstrap it was first started with (see `membership`).
    let (initial_cluster, state) = match &host.etcd_bootstrap {
        Some(boot) => (boot.initial_cluster_flag(), boot.state.flag()),
        None => (
            plan.etcd_members()
                .map(|m| format!("{}={}", m.name, etcd_peer_url(m)))
                .collect::<Vec<_>>()
                .join(","),
            "new",
        ),
    };
    let pki = ETCD_PKI_DIR;
    let mut flags = vec![
        format!("--name={}", host.name),
        format!("--data-dir={ETCD_DATA_DIR}"),
        format!(
            "--listen-client-urls={},{}",
            etcd_client_url("127.0.0.1".parse().expect("literal")),
            etcd_client_url(host.ip)
        ),
        format!("--advertise-client-urls={}", etcd_client_url(host.peer_ip)),
        format!("--listen-peer-urls=https://{}", ip_port(host.ip, 2380)),
        format!("--initial-advertise-peer-urls={}", etcd_peer_url(host)),
        format!("--initial-cluster={initial_cluster}"),
        // Only read when the data directory is empty: re-runs keep the existing cluster.
        format!("--initial-cluster-state={state}"),
        format!("--initial-cluster-token={}", plan.config.cluster_name),
        format!("--cert-file={pki}/server.crt"),
        format!("--key-file={pki}/server.key"),
        "--client-cert-auth=true".to_string(),
        format!("--trusted-ca-file={pki}/ca.crt"),
        format!("--peer-cert-file={pki}/peer.crt"),
        format!("--peer-key-file={pki}/peer.key"),
        "--peer-client-cert-auth=true".to_string(),
        format!("--peer-trusted-ca-file={pki}/ca.crt"),
        "--snapshot-count=10000".to_string(),
    ];
    flags.extend(hardening::etcd_flags(plan));
    // Type=notify: systemd calls etcd started once it has joined a quorum.
    let text = unit(
        "etcd (ilha)",
        "network-online.target",
        exec_start(&format!("{BIN_DIR}/etcd"), &flags),
        &format!(
            "Type=notify\nTimeoutStartSec=0\nLimitNOFILE=65536\n{}",
            hardening::etcd_service_lines(plan)
        ),
    );
    RemoteFile::new(unit_path("etcd.service"), UNIT_MODE, text)
}

// ---------------------------------------------------------------------------------------------
// Control plane

pub fn apiserver_unit(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    apiserver_unit_with(plan, host, admission::PolicyPlugin::On)
}

/// kube-apiserver's unit with the PodSecurityPolicy plugin on or not yet (the first pass over a
/// running cluster whose policies are not applied yet; see `admission`).
pub fn apiserver_unit_with(
    plan: &ClusterPlan,
    host: &HostPlan,
    policy_plugin: admission::PolicyPlugin,
) -> RemoteFile {
    let c = &plan.config;
    let pki = PKI_DIR;
    let mut flags = vec![
        format!("--advertise-address={}", host.ip),
        "--bind-address=0.0.0.0".to_string(),
        format!("--secure-port={}", c.api_port),
        format!("--etcd-servers={}", etcd_endpoints(plan)),
        format!("--etcd-cafile={pki}/etcd/ca.crt"),
        format!("--etcd-certfile={pki}/apiserver-etcd-client.crt"),
        format!("--etcd-keyfile={pki}/apiserver-etcd-client.key"),
        format!("--client-ca-file={pki}/ca.crt"),
        format!("--tls-cert-file={pki}/apiserver.crt"),
        format!("--tls-private-key-file={pki}/apiserver.key"),
        format!("--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt"),
        format!("--kubelet-client-key={pki}/apiserver-kubelet-client.key"),
        "--kubelet-preferred-address-types=InternalIP,Hostname".to_string(),
        "--authorization-mode=Node,RBAC".to_string(),
        format!("--service-cluster-ip-range={}", c.service_cidr),
        format!("--service-account-key-file={pki}/sa.pub"),
        format!("--service-account-signing-key-file={pki}/sa.key"),
        format!(
            "--service-account-issuer=https://kubernetes.default.svc.{}",
            c.dns_domain
        ),
        format!("--proxy-client-cert-file={pki}/front-proxy-client.crt"),
        format!("--proxy-client-key-file={pki}/front-proxy-client.key"),
        format!("--requestheader-client-ca-file={pki}/front-proxy-ca.crt"),
        "--requestheader-allowed-names=front-proxy-client".to_string(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-username-headers=X-Remote-User".to_string(),
    ];
    if plan.config.hardening.kubelet_serving_certificates {
        // Kubelets serve certificates from this CA (`certs::kubelet_serving_files`): exec, logs
        // and port-forward then go only to the real kubelet (CIS 1.2.5).
        flags.push(format!("--kubelet-certificate-authority={pki}/ca.crt"));
    }
    if let Some(config) = &plan.encryption {
        // Secrets at rest (`cluster::encryption`): the flag exists in every supported version.
        flags.push(format!("--encryption-provider-config={}", config.path));
    }
    // Admission plugins, pod security and anonymous access: by version, in `admission`.
    flags.extend(admission::apiserver_flags(plan, policy_plugin));
    if !plan.version.at_least(1, 24) {
        // Before 1.24 an unauthenticated HTTP port 8080 is open unless turned off; the flag
        // itself is gone from 1.24 on (passing it there is a startup error).
        flags.push("--insecure-port=0".to_string());
    }
    // Audit log, profiling, TLS floor and ciphers (hardening: audit_log, component_flags).
    flags.extend(hardening::apiserver_flags(plan));
    // The API's state is in etcd: stopping need not wait for the 60 s drain (a restart would
    // otherwise take over a minute).
    let text = unit(
        "kube-apiserver (ilha)",
        "network-online.target etcd.service",
        exec_start(&format!("{BIN_DIR}/kube-apiserver"), &flags),
        "TimeoutStopSec=5\nLimitNOFILE=65536\n",
    );
    RemoteFile::new(unit_path("kube-apiserver.service"), UNIT_MODE, text)
}

/// What kube-controller-manager and kube-scheduler share: one kubeconfig for the API, for
/// authenticating and authorizing their own clients, serving on loopback only, with leader
/// election so that one instance of each acts at a time across the masters.
fn client_flags(kubeconfig_file: &str) -> Vec<String> {
    let kubeconfig = format!("{KUBERNETES_DIR}/{kubeconfig_file}");
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".to_string(),
        "--leader-elect=true".to_string(),
    ]
}

pub fn controller_manager_unit(plan: &ClusterPlan) -> RemoteFile {
    let c = &plan.config;
    let pki = PKI_DIR;
    let mut flags = client_flags("controller-manager.conf");
    flags.extend([
        format!("--cluster-name={}", c.cluster_name),
        // ilha hands out node pod ranges itself (stable across runs, known before kubelets
        // register, so CNI configs and routes are written up front).
        "--allocate-node-cidrs=false".to_string(),
        format!("--cluster-cidr={}", c.pod_cidr),
        format!("--cluster-signing-cert-file={pki}/ca.crt"),
        format!("--cluster-signing-key-file={pki}/ca.key"),
        format!("--root-ca-file={pki}/ca.crt"),
        format!("--service-account-private-key-file={pki}/sa.key"),
        format!("--service-cluster-ip-range={}", c.service_cidr),
        "--use-service-account-credentials=true".to_string(),
        "--controllers=*,bootstrapsigner,tokencleaner".to_string(),
        format!("--requestheader-client-ca-file={pki}/front-proxy-ca.crt"),
        format!("--client-ca-file={pki}/ca.crt"),
    ]);
    flags.extend(hardening::controller_manager_flags(plan));
    let text = unit(
        "kube-controller-manager (ilha)",
        "kube-apiserver.service",
        exec_start(&format!("{BIN_DIR}/kube-controller-manager"), &flags),
        "",
    );
    RemoteFile::new(
        unit_path("kube-controller-manager.service"),
        UNIT_MODE,
        text,
    )
}

pub fn scheduler_unit(plan: &ClusterPlan) -> RemoteFile {
    let mut flags = client_flags("scheduler.conf");
    flags.extend(hardening::scheduler_flags(plan));
    let text = unit(
        "kube-scheduler (ilha)",
        "kube-apiserver.service",
        exec_start(&format!("{BIN_DIR}/kube-scheduler"), &flags),
        "",
    );
    RemoteFile::new(unit_path("kube-scheduler.service"), UNIT_MODE, text)
}

// ---------------------------------------------------------------------------------------------
// Container runtime

pub fn containerd_config(plan: &ClusterPlan) -> RemoteFile {
    let text = format!(
        r#"# Written by ilha.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Without CAP_SYS_RESOURCE (containers, some VMs) runc cannot lower its own OOM score; with
  # this containerd never asks it to go below the parent's, which works everywhere.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{CNI_CONF_DIR}"
"#,
        pause = plan.pause_image
    );
    RemoteFile::new(CONTAINERD_CONFIG, CONFIG_MODE, text)
}

pub fn containerd_unit() -> RemoteFile {
    let text = format!(
        "# Written by ilha; changes are overwritten by the next `ilha up`.\n\
         [Unit]\nDescription=containerd (ilha)\nAfter=network.target\n\n\
         [Service]\nExecStartPre=-/sbin/modprobe overlay\nExecStart={BIN_DIR}/containerd\n\
         Type=notify\nDelegate=yes\nKillMode=process\nRestart=always\nRestartSec=2\n\
         LimitNOFILE=infinity\nTasksMax=infinity\nOOMScoreAdjust=-999\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    RemoteFile::new(unit_path("containerd.service"), UNIT_MODE, text)
}

// ---------------------------------------------------------------------------------------------
// kubelet and kube-proxy

const MASTER_TAINT: &str = "node-role.kubernetes.io/master";

/// The first Kubernetes minor whose KubeletConfiguration has `failCgroupV1` (KEP-4569, cgroup
/// v1 in maintenance mode; default false).
pub const FAIL_CGROUP_V1_FIELD_FROM: (u64, u64) = (1, 31);
/// From this minor `failCgroupV1` defaults to true: the kubelet refuses to start on cgroup v1.
pub const FAIL_CGROUP_V1_DEFAULT_TRUE_FROM: (u64, u64) = (1, 35);

/// Whether the kubelet of `version`, given the cluster config's `kubelet_fail_cgroup_v1`,
/// refuses to start on a cgroup v1 host. Before 1.31 the field does not exist: never.
pub fn kubelet_refuses_cgroup_v1(version: &KubeVersion, fail_cgroup_v1: Option<bool>) -> bool {
    let (major, minor) = FAIL_CGROUP_V1_FIELD_FROM;
    if !version.at_least(major, minor) {
        return false;
    }
    let (major, minor) = FAIL_CGROUP_V1_DEFAULT_TRUE_FROM;
    fail_cgroup_v1.unwrap_or(version.at_least(major, minor))
}

pub fn kubelet_config(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    let c = &plan.config;
    let mut text = format!(
        "# Written by ilha.\n\
         apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         authentication:\n  anonymous: {{enabled: false}}\n  webhook: {{enabled: true}}\n  \
         x509: {{clientCAFile: {PKI_DIR}/ca.crt}}\n\
         authorization: {{mode: Webhook}}\n\
         cgroupDriver: systemd\n\
         clusterDNS: [\"{dns}\"]\n\
         clusterDomain: {domain}\n\
         resolvConf: /etc/resolv.conf\n\
         failSwapOn: false\n\
         nodeStatusUpdateFrequency: 4s\n\
         rotateCertificates: false\n\
         serverTLSBootstrap: false\n",
        dns = c.dns_service_ip(),
        domain = c.dns_domain,
    );
    if plan.version.at_least(1, 27) {
        // The flag is deprecated from 1.27; the field appeared then.
        let _ = writeln!(text, "containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}");
    }
    if host.tainted_master() && plan.version.at_least(1, 23) {
        let _ = writeln!(
            text,
            "registerWithTaints:\n- {{key: {MASTER_TAINT}, effect: NoSchedule}}"
        );
    }
    let (major, minor) = FAIL_CGROUP_V1_FIELD_FROM;
    if let Some(fail) = c.kubelet_fail_cgroup_v1
        && plan.version.at_least(major, minor)
    {
        let _ = writeln!(text, "failCgroupV1: {fail}");
    }
    text.push_str(&hardening::kubelet_config_fields(plan));
    if c.hardening.kubelet_serving_certificates {
        // ilha's CA signs it (`certs::kubelet_serving_files`), not the kubelet itself (CIS 4.2.10).
        let _ = writeln!(
            text,
            "tlsCertFile: {}\ntlsPrivateKeyFile: {}",
            super::certs::KUBELET_SERVING_CERT,
            super::certs::KUBELET_SERVING_KEY
        );
    }
    if !c.kubelet_eviction_hard.is_empty() {
        text.push_str("evictionHard:\n");
        for (signal, threshold) in &c.kubelet_eviction_hard {
            let _ = writeln!(text, "  {signal}: \"{threshold}\"");
        }
    }
    RemoteFile::new(format!("{KUBELET_DIR}/config.yaml"), CONFIG_MODE, text)
}

pub fn kubelet_unit(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    let mut flags = vec![
        format!("--config={KUBELET_DIR}/config.yaml"),
        format!("--kubeconfig={KUBERNETES_DIR}/kubelet.conf"),
        format!("--hostname-override={}", host.name),
        format!("--node-ip={}", host.ip),
    ];
    if !plan.version.at_least(1, 24) {
        // Before 1.24 the default runtime is the built-in dockershim.
        flags.push("--container-runtime=remote".to_string());
    }
    if !plan.version.at_least(1, 27) {
        flags.push(format!(
            "--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}"
        ));
    }
    if host.tainted_master() && !plan.version.at_least(1, 23) {
        flags.push(format!("--register-with-taints={MASTER_TAINT}=:NoSchedule"));
    }
    if !plan.version.at_least(1, 29) {
        // Up to 1.28 the kubelet's image GC spares only this image, whatever the runtime marks
        // pinned (from 1.29 it reads CRI's `pinned`, which the images step's label sets): an air
        // gap cannot pull the pause image back once collected.
        flags.push(format!("--pod-infra-container-image={}", plan.pause_image));
    }
    // kubelet's in-tree AWS credential provider (gone in 1.27) probes the cloud metadata address
    // at every start: a 6 s stall and packets to 169.254.169.254, which an air gap must not send.
    let text = unit(
        "kubelet (ilha)",
        "containerd.service",
        exec_start(&format!("{BIN_DIR}/kubelet"), &flags),
        "Environment=AWS_EC2_METADATA_DISABLED=true\n",
    )
    .replace(
        "Wants=network-online.target",
        "Wants=network-online.target\nRequires=containerd.service",
    );
    RemoteFile::new(unit_path("kubelet.service"), UNIT_MODE, text)
}

pub fn kube_proxy_config(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    let text = format!(
        "# Written by ilha.\n\
         apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         clientConnection:\n  kubeconfig: {KUBERNETES_DIR}/kube-proxy.conf\n\
         hostnameOverride: {name}\n\
         bindAddress: 0.0.0.0\n\
         clusterCIDR: {pods}\n\
         mode: iptables\n\
         # 0: leave the host's nf_conntrack_max alone; it can only be set from the first network\n\
         # namespace, and kube-proxy crash-loops where it cannot.\n\
         conntrack:\n  maxPerCore: 0\n",
        name = host.name,
        pods = plan.config.pod_cidr,
    );
    RemoteFile::new(format!("{KUBE_PROXY_DIR}/config.yaml"), CONFIG_MODE, text)
}

pub fn kube_proxy_unit() -> RemoteFile {
    let flags = vec![format!("--config={KUBE_PROXY_DIR}/config.yaml")];
    let text = unit(
        "kube-proxy (ilha)",
        "network-online.target",
        exec_start(&format!("{BIN_DIR}/kube-proxy"), &flags),
        "",
    );
    RemoteFile::new(unit_path("kube-proxy.service"), UNIT_MODE, text)
}

// ---------------------------------------------------------------------------------------------
// Pod network: bridge + host-local on each node, static routes between nodes

pub fn cni_conflist(plan: &ClusterPlan, host: &HostPlan) -> Option<RemoteFile> {
    let cidr = host.pod_cidr?;
    let name = format!("{}-bridge", plan.config.cluster_name);
    let text = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "{name}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{cidr}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#
    );
    Some(RemoteFile::new(
        format!("{CNI_CONF_DIR}/10-ilha-bridge.conflist"),
        CONFIG_MODE,
        text,
    ))
}

/// The routes script's line naming the service range it routes (`reset` reads it back).
pub const ROUTES_SERVICE_RANGE: &str = "service_range=";
/// The routes script's line naming the node's cluster address, the service route's source.
pub const ROUTES_NODE_ADDRESS: &str = "node_address=";

/// A script that routes every other node's pod range to that node and the service range to this
/// node's cluster interface, run at boot by a unit (and again by every `up` that changes it).
///
/// The service route: a host-network client (a CNI agent, a node-local DNS cache, `kubectl` on
/// a master) connecting to a ClusterIP needs a route for it when the socket connects, before
/// kube-proxy's DNAT in the nat OUTPUT chain rewrites the address. With a default route any
/// address has one; without (common in air gaps) the kernel answers "Network is unreachable".
/// It goes on every node, whether or not it has a default route: the script then does not
/// depend on what the host looked like when `up` ran, and a default route that goes later
/// breaks nothing. Where a default route exists (on this interface or another), a connection
/// to a Service now starts from the cluster address instead of the default interface's; kube-proxy
/// masquerades Service traffic from outside the pod range (its `clusterCIDR`), so what leaves the
/// host carries the address of the interface towards the endpoint either way. NodePorts are the
/// node's own addresses, untouched. A ClusterIP no Service holds is no longer sent to the
/// default gateway: it fails on the host (no neighbour answers on the cluster interface).
pub fn routes_script(plan: &ClusterPlan, host: &HostPlan) -> RemoteFile {
    let mut text = format!(
        "#!/bin/sh\n# Written by ilha: the service range is reached through this node's cluster \
         interface, each node's pod range through that node.\nset -e\n\
         sysctl -qw net.ipv4.ip_forward=1\n\
         # Host-network clients need a route to a ClusterIP before kube-proxy rewrites it (there is\n\
         # none without a default route). The interface is looked up now: names change across boots.\n\
         {ROUTES_SERVICE_RANGE}{range}\n{ROUTES_NODE_ADDRESS}{address}\n\
         dev=$(ip -o addr show to \"$node_address\" | awk '{{ print $2; exit }}')\n\
         if [ -z \"$dev\" ]; then\n  \
           echo \"ilha-routes: no interface has $node_address (this node's cluster address, the \
         inventory's ip=): the service range $service_range is not routed; give the host its \
         address back, or fix ip= and run ilha up\" >&2\n  \
           exit 1\n\
         fi\n\
         ip route replace \"$service_range\" dev \"$dev\" src \"$node_address\"\n",
        range = plan.config.service_cidr,
        address = host.ip,
    );
    for other in plan.nodes().filter(|n| n.name != host.name) {
        if let Some(cidr) = other.pod_cidr {
            let _ = writeln!(
                text,
                "ip route replace {cidr} via {} # {}",
                other.peer_ip, other.name
            );
        }
    }
    RemoteFile::new(ROUTES_SCRIPT, 0o755, text)
}

pub fn routes_unit() -> RemoteFile {
    let text = format!(
        "# Written by ilha.\n[Unit]\nDescription=ilha: routes to the service range and the other nodes' pod ranges\n\
         After=network-online.target\nWants=network-online.target\nBefore=kubelet.service\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={ROUTES_SCRIPT}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    RemoteFile::new(unit_path("ilha-routes.service"), UNIT_MODE, text)
}

// ---------------------------------------------------------------------------------------------
// Node-local API proxy (workers)

/// The static `ilha-apiproxy` (`ilha::apiproxy::BINARY`), not the whole `ilha`.
pub const APIPROXY_BINARY: &str = "/usr/local/bin/ilha-apiproxy";

/// Client connections one worker's proxy carries at once (kubelet, kube-proxy and host-network
/// agents need a few dozen); each costs two descriptors, hence `LimitNOFILE` below.
const APIPROXY_MAX_CONNECTIONS: usize = 1024;

pub fn apiproxy_unit(plan: &ClusterPlan) -> RemoteFile {
    let mut flags = vec![
        format!(
            "--listen={}",
            ip_port("127.0.0.1".parse().expect("literal"), plan.config.api_port)
        ),
        "--ca=-".to_string(),
        format!("--max-connections={APIPROXY_MAX_CONNECTIONS}"),
    ];
    for master in plan.control_plane() {
        flags.push(format!(
            "--backend={}",
            ip_port(master.peer_ip, plan.config.api_port)
        ));
    }
    // Sandboxing that systemd 239 (RHEL 8) already knows, so older workers get it too. The
    // proxy runs as a transient unprivileged user (6443 needs no capability); systemd opens the
    // cluster CA for it as stdin, so it needs no read access to /etc/kubernetes/pki, and
    // ProtectSystem=strict leaves the whole file system read-only to it.
    let sandbox = format!(
        "StandardInput=file:{PKI_DIR}/ca.crt\nStandardOutput=journal\nStandardError=journal\n\
         LimitNOFILE={}\n\
         DynamicUser=yes\nNoNewPrivileges=yes\nCapabilityBoundingSet=\nAmbientCapabilities=\n\
         ProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes\n\
         ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\n\
         RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\nRestrictNamespaces=yes\n\
         RestrictRealtime=yes\nLockPersonality=yes\nMemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\nUMask=0077\n",
        2 * APIPROXY_MAX_CONNECTIONS + 1024
    );
    let text = unit(
        "ilha node-local proxy to every kube-apiserver",
        "network-online.target",
        exec_start(APIPROXY_BINARY, &flags),
        &sandbox,
    )
    .replace(
        "[Install]",
        "[Install]\nRequiredBy=kubelet.service kube-proxy.service",
    );
    RemoteFile::new(unit_path("ilha-apiproxy.service"), UNIT_MODE, text)
}

/// Kernel settings every node needs (routing between pods and nodes).
pub fn sysctl_conf() -> RemoteFile {
    RemoteFile::new(
        "/etc/sysctl.d/90-ilha.conf",
        0o644,
        "# Written by ilha: nodes route pod traffic.\nnet.ipv4.ip_forward = 1\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests_support::plan_for;

    fn text(file: &RemoteFile) -> String {
        String::from_utf8(file.content.clone()).unwrap()
    }

    #[test]
    fn apiserver_insecure_port_flag_only_before_1_24() {
        let old = plan_for("v1.20.2");
        let new = plan_for("v1.34.1");
        let m = &old.hosts[0];
        assert!(text(&apiserver_unit(&old, m)).contains("--insecure-port=0"));
        assert!(!text(&apiserver_unit(&new, &new.hosts[0])).contains("--insecure-port"));
    }

    #[test]
    fn apiserver_talks_to_every_etcd_member() {
        let plan = plan_for("v1.20.2");
        let unit = text(&apiserver_unit(&plan, &plan.hosts[0]));
        assert!(unit.contains(
            "--etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379"
        ));
        assert!(unit.contains("TimeoutStopSec=5"));
    }

    #[test]
    fn kubelet_runtime_and_taints_follow_the_version() {
        let old = plan_for("v1.20.2");
        let master = &old.hosts[0];
        let worker = &old.hosts[3];
        let unit = text(&kubelet_unit(&old, master));
        assert!(unit.contains("--container-runtime=remote"));
        assert!(
            unit.contains("--container-runtime-endpoint=unix:///run/containerd/containerd.sock")
        );
        assert!(unit.contains("--register-with-taints=node-role.kubernetes.io/master=:NoSchedule"));
        assert!(unit.contains("AWS_EC2_METADATA_DISABLED=true"));
        assert!(!text(&kubelet_unit(&old, worker)).contains("register-with-taints"));
        assert!(!text(&kubelet_config(&old, master)).contains("containerRuntimeEndpoint"));
        assert!(unit.contains(&format!("--pod-infra-container-image={}", old.pause_image)));
        let last_spared_by_flag = plan_for("v1.28.15");
        assert!(
            text(&kubelet_unit(&last_spared_by_flag, master))
                .contains("--pod-infra-container-image")
        );

        let new = plan_for("v1.34.1");
        let master = &new.hosts[0];
        let unit = text(&kubelet_unit(&new, master));
        assert!(!unit.contains("--container-runtime"));
        assert!(!unit.contains("--register-with-taints"));
        assert!(!unit.contains("--pod-infra-container-image"));
        let config = text(&kubelet_config(&new, master));
        assert!(
            config.contains("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock")
        );
        assert!(config.contains("registerWithTaints:"));
        assert!(!text(&kubelet_config(&new, &new.hosts[3])).contains("registerWithTaints"));
    }

    #[test]
    fn kubelet_fail_cgroup_v1_rendered_only_when_set_and_known() {
        let mut plan = plan_for("v1.35.0");
        assert!(!text(&kubelet_config(&plan, &plan.hosts[3])).contains("failCgroupV1"));
        plan.config.kubelet_fail_cgroup_v1 = Some(false);
        assert!(text(&kubelet_config(&plan, &plan.hosts[3])).contains("\nfailCgroupV1: false\n"));
        plan.config.kubelet_fail_cgroup_v1 = Some(true);
        assert!(text(&kubelet_config(&plan, &plan.hosts[3])).contains("\nfailCgroupV1: true\n"));
        // 1.30's kubelet has no such field (strict decoding would reject it).
        let mut old = plan_for("v1.30.4");
        old.config.kubelet_fail_cgroup_v1 = Some(false);
        assert!(!text(&kubelet_config(&old, &old.hosts[3])).contains("failCgroupV1"));
        let mut first = plan_for("v1.31.0");
        first.config.kubelet_fail_cgroup_v1 = Some(false);
        assert!(text(&kubelet_config(&first, &first.hosts[3])).contains("failCgroupV1: false"));
    }

    #[test]
    fn which_kubelets_refuse_cgroup_v1() {
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert!(!kubelet_refuses_cgroup_v1(&v("v1.20.2"), None));
        assert!(!kubelet_refuses_cgroup_v1(&v("v1.30.9"), Some(true)));
        assert!(!kubelet_refuses_cgroup_v1(&v("v1.34.3"), None));
        assert!(kubelet_refuses_cgroup_v1(&v("v1.31.0"), Some(true)));
        assert!(kubelet_refuses_cgroup_v1(&v("v1.35.0"), None));
        assert!(kubelet_refuses_cgroup_v1(&v("v1.37.1"), None));
        assert!(!kubelet_refuses_cgroup_v1(&v("v1.37.1"), Some(false)));
    }

    #[test]
    fn kubelet_eviction_thresholds_only_when_configured() {
        let mut plan = plan_for("1.20.2");
        assert!(!text(&kubelet_config(&plan, &plan.hosts[3])).contains("evictionHard"));
        plan.config
            .kubelet_eviction_hard
            .insert("imagefs.available".into(), "5%".into());
        plan.config
            .kubelet_eviction_hard
            .insert("memory.available".into(), "100Mi".into());
        let config = text(&kubelet_config(&plan, &plan.hosts[3]));
        assert!(
            config.ends_with(
                "evictionHard:\n  imagefs.available: \"5%\"\n  memory.available: \"100Mi\"\n"
            ),
            "{config}"
        );
    }

    #[test]
    fn kubelet_serving_certificates_are_used_and_verified_only_with_the_item() {
        let mut plan = plan_for("v1.20.2");
        let (master, worker) = (&plan.hosts[0], &plan.hosts[3]);
        let config = text(&kubelet_config(&plan, worker));
        assert!(
            config.contains(
                "\ntlsCertFile: /etc/kubernetes/pki/kubelet-server.crt\n\
                 tlsPrivateKeyFile: /etc/kubernetes/pki/kubelet-server.key\n"
            ),
            "{config}"
        );
        let parsed: serde_json::Value =
            serde_saphyr::from_str(&config).expect("kubelet config is YAML");
        assert_eq!(
            parsed["tlsCertFile"],
            "/etc/kubernetes/pki/kubelet-server.crt"
        );
        let unit = text(&apiserver_unit(&plan, master));
        assert!(
            unit.contains("--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt"),
            "{unit}"
        );
        plan.config.hardening.kubelet_serving_certificates = false;
        let (master, worker) = (&plan.hosts[0], &plan.hosts[3]);
        assert!(!text(&kubelet_config(&plan, worker)).contains("tlsCertFile"));
        assert!(!text(&kubelet_config(&plan, worker)).contains("tlsPrivateKeyFile"));
        assert!(!text(&apiserver_unit(&plan, master)).contains("--kubelet-certificate-authority"));
    }

    #[test]
    fn etcd_initial_cluster_names_every_member() {
        let plan = plan_for("v1.20.2");
        let unit = text(&etcd_unit(&plan, &plan.hosts[1]));
        assert!(unit.contains("--name=node2"));
        assert!(unit.contains(
            "--initial-cluster=node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380,node3=https://10.0.0.3:2380"
        ));
        assert!(unit.contains("Type=notify"));
    }

    #[test]
    fn routes_go_to_every_other_node_and_cni_uses_the_own_range() {
        let plan = plan_for("v1.20.2");
        let h4 = &plan.hosts[3];
        let script = text(&routes_script(&plan, h4));
        assert_eq!(script.matches("ip route replace 10.244.").count(), 5);
        assert!(!script.contains("# node4"));
        assert!(script.contains("ip route replace 10.244.0.0/24 via 10.0.0.1 # node1"));
        let cni = text(&cni_conflist(&plan, h4).unwrap());
        assert!(cni.contains("\"subnet\": \"10.244.3.0/24\""));
        serde_json::from_str::<serde_json::Value>(&cni).expect("conflist is JSON");
    }

    /// Runs the routes script of `host` under `sh` with stand-ins for `ip` and `sysctl` that log
    /// their arguments; `ip -o addr show to ADDRESS` answers with `addresses` (as `ip` prints
    /// them). Returns the exit status, the log and stderr.
    fn run_routes_script(
        plan: &ClusterPlan,
        host: &HostPlan,
        addresses: &str,
    ) -> (bool, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let fake = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{name} $*\" >> {}\n{body}", log.display()),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        fake("sysctl", "");
        fake(
            "ip",
            &format!(
                "[ \"$1 $2 $3\" = '-o addr show' ] && printf '%s' {}\nexit 0\n",
                crate::ssh::shell_quote(addresses)
            ),
        );
        let script = text(&routes_script(plan, host));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        (
            out.status.success(),
            std::fs::read_to_string(&log).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn the_service_range_goes_to_the_interface_holding_the_cluster_address() {
        let mut plan = plan_for("v1.20.2");
        plan.config.service_cidr = "10.233.0.0/18".parse().unwrap();
        let h4 = plan.hosts[3].clone();
        let (ok, log, stderr) = run_routes_script(
            &plan,
            &h4,
            "3: ens4    inet 10.0.0.4/24 brd 10.0.0.255 scope global ens4\\       valid_lft forever preferred_lft forever\n",
        );
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "sysctl -qw net.ipv4.ip_forward=1");
        assert_eq!(lines[1], "ip -o addr show to 10.0.0.4");
        assert_eq!(
            lines[2],
            "ip route replace 10.233.0.0/18 dev ens4 src 10.0.0.4"
        );
        // Then the five other nodes' pod ranges, through them.
        assert_eq!(lines[3], "ip route replace 10.244.0.0/24 via 10.0.0.1");
        assert_eq!(lines.len(), 8, "{log}");

        // The address on no interface: nothing routed, the failure names address and range.
        let (ok, log, stderr) = run_routes_script(&plan, &h4, "");
        assert!(!ok);
        assert!(!log.contains("route replace"), "{log}");
        assert!(
            stderr.contains("no interface has 10.0.0.4 (this node's cluster address, the inventory's ip=): the service range 10.233.0.0/18 is not routed"),
            "{stderr}"
        );
    }

    #[test]
    fn apiproxy_spreads_over_every_master() {
        let plan = plan_for("v1.20.2");
        let unit = text(&apiproxy_unit(&plan));
        assert!(
            unit.contains("ExecStart=/usr/local/bin/ilha-apiproxy \\\n"),
            "{unit}"
        );
        assert!(unit.contains("--listen=127.0.0.1:6443"));
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert!(unit.contains(&format!("--backend={ip}:6443")), "{unit}");
        }
    }

    #[test]
    fn apiproxy_runs_sandboxed_unprivileged_and_reads_the_ca_from_stdin() {
        let plan = plan_for("v1.20.2");
        let unit = text(&apiproxy_unit(&plan));
        let service: Vec<&str> = unit
            .split("[Service]")
            .nth(1)
            .and_then(|rest| rest.split("[Install]").next())
            .unwrap()
            .lines()
            .collect();
        for line in [
            "--ca=-",
            "StandardInput=file:/etc/kubernetes/pki/ca.crt",
            // Output would otherwise follow stdin, into the CA file.
            "StandardOutput=journal",
            "StandardError=journal",
            "LimitNOFILE=3072",
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
        ] {
            assert!(
                service
                    .iter()
                    .any(|l| l.trim().trim_end_matches(" \\") == line),
                "{line} missing from\n{unit}"
            );
        }
        assert!(unit.contains("--max-connections=1024"), "{unit}");
        assert!(!unit.contains("User=root") && !unit.contains("AmbientCapabilities=CAP"));
    }

    #[test]
    fn containerd_uses_the_bundles_pause_image() {
        let plan = plan_for("v1.20.2");
        let config = text(&containerd_config(&plan));
        assert!(config.contains("sandbox_image = \"k8s.gcr.io/pause:3.2\""));
        assert!(config.contains("restrict_oom_score_adj = true"));
    }
}
