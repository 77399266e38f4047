//! What the cluster config's `hardening:` items `audit_log`, `component_flags`,
//! `protect_kernel_defaults` and `etcd_user` add to the rendered components, by Kubernetes
//! version, and the host-side script lines that go with them (docs/hardening.md, "Components",
//! maps each to its CIS check).
//!
//! [`render`](super::render) calls in here for one block per component, so the base flags and
//! fields stay readable there and every hardening choice is in one place.

use std::fmt::Write as _;

use super::ClusterPlan;
use super::HostPlan;
use super::paths::{ETCD_DATA_DIR, ETCD_PKI_DIR, ILHA_DIR, KUBERNETES_DIR, PKI_DIR, UNIT_DIR};
use super::render::RemoteFile;
use crate::ssh::shell_quote;

// ---------------------------------------------------------------------------------------------
// audit_log

pub const AUDIT_POLICY: &str = "/etc/kubernetes/audit-policy.yaml";
/// The audit log's directory: ilha's own (reset removes it), readable by root only.
pub const AUDIT_LOG_DIR: &str = "/var/log/kubernetes/audit";
/// Its parent, made by ilha where absent (reset removes it when empty and not recorded).
pub const AUDIT_LOG_PARENT: &str = "/var/log/kubernetes";
pub const AUDIT_LOG: &str = "/var/log/kubernetes/audit/audit.log";

/// Who did what, when, to which object; never a request or response body, so no Secret,
/// ConfigMap or token ever lands in the log. Reads of Events and the health and version probes
/// are left out: they are most of the traffic and say nothing about who changed what.
pub fn audit_policy() -> RemoteFile {
    let text = "# Written by ilha (hardening.audit_log): metadata only, never a request body.\n\
        apiVersion: audit.k8s.io/v1\n\
        kind: Policy\n\
        omitStages: [\"RequestReceived\"]\n\
        rules:\n\
        - level: None\n  \
          verbs: [\"get\", \"list\", \"watch\"]\n  \
          resources:\n  \
          - {group: \"\", resources: [\"events\"]}\n  \
          - {group: \"events.k8s.io\", resources: [\"events\"]}\n\
        - level: None\n  \
          nonResourceURLs: [\"/healthz*\", \"/livez*\", \"/readyz*\", \"/version\", \"/version/\"]\n\
        # Secrets, ConfigMaps and TokenReviews carry credentials: named, never shown.\n\
        - level: Metadata\n  \
          resources:\n  \
          - {group: \"\", resources: [\"secrets\", \"configmaps\"]}\n  \
          - {group: \"authentication.k8s.io\", resources: [\"tokenreviews\"]}\n\
        - level: Metadata\n";
    RemoteFile::new(AUDIT_POLICY, 0o600, text)
}

/// The control-plane step's lines for the audit log: its directory root's only, and the log made
/// 0600 before kube-apiserver opens it (its log rotation creates a new file with the mode of the
/// one it moves aside; left to itself, kube-apiserver 1.20 makes it 0644).
pub fn audit_log_dir_script(plan: &ClusterPlan) -> String {
    if !plan.config.hardening.audit_log {
        return String::new();
    }
    format!(
        "mkdir -p {AUDIT_LOG_DIR}\nchmod 700 {AUDIT_LOG_DIR}\n\
         [ -e {AUDIT_LOG} ] || : > {AUDIT_LOG}\nchmod 600 {AUDIT_LOG}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// component_flags

/// TLS 1.2 suites with forward secrecy and an AEAD cipher, the list kube-bench's strong-cipher
/// checks accept for the kubelet (a subset of the apiserver's). TLS 1.3 suites are not
/// configurable in Go and are all strong.
pub const CIPHER_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
];
pub const TLS_MIN_VERSION: &str = "VersionTLS12";
/// Terminated pods kept before the controller-manager deletes the oldest (default 12500: an
/// etcd full of finished pods on a small cluster).
pub const TERMINATED_POD_GC_THRESHOLD: u32 = 1000;
/// Processes one pod may run: a fork bomb in a pod cannot starve the node.
pub const POD_PIDS_LIMIT: u32 = 4096;
/// The first minor whose kubelet has `seccompDefault` without a feature gate to turn on
/// (`SeccompDefault` beta and on by default from 1.25, GA 1.27; alpha, off, from 1.22).
pub const SECCOMP_DEFAULT_FROM: (u64, u64) = (1, 25);

/// kube-apiserver's hardening flags, in one block after its base flags.
pub fn apiserver_flags(plan: &ClusterPlan) -> Vec<String> {
    let h = plan.config.hardening;
    let mut flags = Vec::new();
    if h.component_flags {
        flags.extend([
            "--profiling=false".to_string(),
            format!("--tls-min-version={TLS_MIN_VERSION}"),
            format!("--tls-cipher-suites={}", CIPHER_SUITES.join(",")),
        ]);
    }
    if h.audit_log {
        flags.extend([
            format!("--audit-policy-file={AUDIT_POLICY}"),
            format!("--audit-log-path={AUDIT_LOG}"),
            "--audit-log-maxage=30".to_string(),
            "--audit-log-maxbackup=10".to_string(),
            "--audit-log-maxsize=100".to_string(),
        ]);
    }
    flags
}

pub fn controller_manager_flags(plan: &ClusterPlan) -> Vec<String> {
    if !plan.config.hardening.component_flags {
        return Vec::new();
    }
    vec![
        "--profiling=false".to_string(),
        format!("--terminated-pod-gc-threshold={TERMINATED_POD_GC_THRESHOLD}"),
    ]
}

pub fn scheduler_flags(plan: &ClusterPlan) -> Vec<String> {
    if !plan.config.hardening.component_flags {
        return Vec::new();
    }
    vec!["--profiling=false".to_string()]
}

/// etcd's `--cipher-suites` (etcd 3.3 and later; every etcd ilha installs has it). With only
/// TLS 1.2 suites listed, TLS 1.0 and 1.1 cannot be negotiated either.
pub fn etcd_flags(plan: &ClusterPlan) -> Vec<String> {
    if !plan.config.hardening.component_flags {
        return Vec::new();
    }
    vec![format!("--cipher-suites={}", CIPHER_SUITES.join(","))]
}

/// The KubeletConfiguration fields hardening adds, each only where the version has it.
pub fn kubelet_config_fields(plan: &ClusterPlan) -> String {
    let h = plan.config.hardening;
    let mut text = String::new();
    if h.protect_kernel_defaults {
        // The kubelet refuses to start when a setting below differs; the system step sets them.
        text.push_str("protectKernelDefaults: true\n");
    }
    if h.component_flags {
        let _ = writeln!(text, "tlsMinVersion: {TLS_MIN_VERSION}");
        text.push_str("tlsCipherSuites:\n");
        for suite in CIPHER_SUITES {
            let _ = writeln!(text, "- {suite}");
        }
        let _ = writeln!(text, "podPidsLimit: {POD_PIDS_LIMIT}");
        // 0: no limit on the events the kubelet records (CIS 1.20 4.2.9 asks for 0, newer
        // benchmarks for any value >= 0); the apiserver protects itself from floods.
        text.push_str("eventRecordQPS: 0\n");
        text.push_str("makeIPTablesUtilChains: true\n");
        text.push_str("readOnlyPort: 0\n");
        let (major, minor) = SECCOMP_DEFAULT_FROM;
        if plan.version.at_least(major, minor) {
            text.push_str("seccompDefault: true\n");
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// protect_kernel_defaults

pub const KERNEL_DEFAULTS_CONF: &str = "/etc/sysctl.d/90-ilha-kubelet.conf";

/// The kernel settings a kubelet with `protectKernelDefaults` requires, as it checks them at
/// start (kubelet's `setupKernelTunables`, the same list from 1.20 to today).
pub const KERNEL_DEFAULTS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

pub fn kernel_defaults_conf() -> RemoteFile {
    let mut text = String::from(
        "# Written by ilha (hardening.protect_kernel_defaults): what the kubelet's\n\
         # protectKernelDefaults requires; it refuses to start when one differs.\n",
    );
    for (key, value) in KERNEL_DEFAULTS {
        let _ = writeln!(text, "{key} = {value}");
    }
    RemoteFile::new(KERNEL_DEFAULTS_CONF, 0o644, text)
}

/// The system step's lines: each setting that differs is written now (the file applies at
/// boot). Where it cannot be written (a container's read-only /proc/sys) a value that already
/// matches is fine; one that differs stops the step, naming host, key and both values.
pub fn kernel_defaults_script(plan: &ClusterPlan, host: &HostPlan) -> String {
    if !plan.config.hardening.protect_kernel_defaults {
        return String::new();
    }
    let mut script = format!(
        "kernel_default() {{ # KEY WANTED\n  \
           local now\n  \
           now=$(sysctl -n \"$1\" 2>/dev/null) || {{ echo {host}: \"cannot read kernel setting $1 (the kubelet's protectKernelDefaults needs it at $2)\" >&2; exit 1; }}\n  \
           [ \"$now\" = \"$2\" ] && return 0\n  \
           sysctl -qw \"$1=$2\" 2>/dev/null && return 0\n  \
           echo {host}: \"kernel setting $1 is $now and cannot be set here; the kubelet's protectKernelDefaults needs $2 ({KERNEL_DEFAULTS_CONF}): set it on the host's kernel (sysctl -w $1=$2), or turn off hardening.protect_kernel_defaults\" >&2\n  \
           exit 1\n\
         }}\n",
        host = shell_quote(&host.name),
    );
    for (key, value) in KERNEL_DEFAULTS {
        let _ = writeln!(script, "kernel_default {key} {value}");
    }
    script
}

// ---------------------------------------------------------------------------------------------
// etcd_user

pub const ETCD_USER: &str = "etcd";
/// Present when ilha made the `etcd` user (absent: the host had one before): reset removes the
/// user only then.
pub const ETCD_USER_MADE: &str = "/var/lib/ilha/etcd-user-made";

/// The unit's `[Service]` lines that run etcd as its own user. `StateDirectory`: systemd makes
/// the data directory (etcd's, 0700) when it is missing, as etcd running as root used to (a
/// member whose data was lost then starts empty, as before, instead of failing to start).
pub fn etcd_service_lines(plan: &ClusterPlan) -> &'static str {
    if plan.config.hardening.etcd_user {
        "User=etcd\nGroup=etcd\nStateDirectory=etcd\nStateDirectoryMode=0700\n"
    } else {
        ""
    }
}

/// The system step's lines on an etcd member: the `etcd` system user and group, made when
/// absent (and that remembered for reset).
pub fn etcd_user_script(plan: &ClusterPlan, host: &HostPlan) -> String {
    if !plan.config.hardening.etcd_user || !host.is_etcd() {
        return String::new();
    }
    format!(
        "if ! getent passwd {ETCD_USER} >/dev/null; then\n  \
           nologin=$(command -v nologin || echo /bin/false)\n  \
           getent group {ETCD_USER} >/dev/null || groupadd --system {ETCD_USER}\n  \
           useradd --system --gid {ETCD_USER} --home-dir {ETCD_DATA_DIR} --no-create-home \
         --shell \"$nologin\" --comment 'etcd (ilha)' {ETCD_USER}\n  \
           mkdir -p {ILHA_DIR}\n  \
           touch {ETCD_USER_MADE}\n\
         fi\n\
         getent group {ETCD_USER} >/dev/null || {{ echo {host}: 'user {ETCD_USER} exists but group {ETCD_USER} does not: etcd runs as {ETCD_USER}:{ETCD_USER}; add the group (groupadd --system {ETCD_USER}) or turn off hardening.etcd_user' >&2; exit 1; }}\n",
        host = shell_quote(&host.name),
    )
}

/// Keys only etcd reads: its server and peer keys, owned by it, 0600. The directories on the
/// way (made under ilha's umask 077) get search permission for others, not read: etcd opens
/// the files it is told, nobody lists them, and the directories stay root's (CIS 1.1.19).
fn etcd_key_lines() -> String {
    format!(
        "chmod 711 {KUBERNETES_DIR} {PKI_DIR} {ETCD_PKI_DIR}\n\
         chown {ETCD_USER}:{ETCD_USER} {ETCD_PKI_DIR}/server.key {ETCD_PKI_DIR}/peer.key\n\
         chmod 600 {ETCD_PKI_DIR}/server.key {ETCD_PKI_DIR}/peer.key\n"
    )
}

/// The certificates step's lines on an etcd member: new keys arrive root's and go straight to
/// etcd (it reads them at every TLS handshake, not only at start).
pub fn etcd_certificates_script(plan: &ClusterPlan, host: &HostPlan) -> String {
    if !plan.config.hardening.etcd_user || !host.is_etcd() {
        return String::new();
    }
    etcd_key_lines()
}

/// Owner and mode of the data directory (and, where etcd ran as root before, everything in it).
pub fn etcd_data_dir_lines() -> String {
    format!(
        "mkdir -p {ETCD_DATA_DIR}\n\
         chown -R {ETCD_USER}:{ETCD_USER} {ETCD_DATA_DIR}\n\
         chmod 700 {ETCD_DATA_DIR}\n"
    )
}

/// For scripts that make a new data directory as root (restore): where the installed unit runs
/// etcd as its user, the directory becomes that user's, as the etcd step leaves it.
pub fn restored_data_dir_owner_lines() -> String {
    format!(
        "if grep -qx 'User={ETCD_USER}' {UNIT_DIR}/etcd.service 2>/dev/null; then\n  \
         chown -R {ETCD_USER}:{ETCD_USER} {ETCD_DATA_DIR}\nfi\n"
    )
}

/// For restore's putting back of a kit's `/etc/kubernetes` (extracted as root's): etcd's keys go
/// back to etcd where the installed unit runs it as its user.
pub fn restored_keys_owner_lines() -> String {
    format!(
        "if grep -qx 'User={ETCD_USER}' {UNIT_DIR}/etcd.service 2>/dev/null; then\n  \
         for key in {ETCD_PKI_DIR}/server.key {ETCD_PKI_DIR}/peer.key; do\n    \
         [ ! -e \"$key\" ] || chown {ETCD_USER}:{ETCD_USER} \"$key\"\n  done\nfi\n"
    )
}

/// The etcd step's script. With `etcd_user`, etcd is stopped before its files change owner (a
/// running root etcd would keep making root's files) and started once they are etcd's: an etcd
/// that ran as root migrates on the next `up`, one member at a time like every etcd restart.
/// `--no-block`: a member's start completes only once a quorum is up.
pub fn etcd_restart_script(plan: &ClusterPlan) -> String {
    let reload = "systemctl daemon-reload\nsystemctl enable --quiet etcd.service\n";
    if !plan.config.hardening.etcd_user {
        return format!("{reload}systemctl restart --no-block etcd.service\n");
    }
    format!(
        "{reload}systemctl stop etcd.service\n{}{}systemctl start --no-block etcd.service\n",
        etcd_data_dir_lines(),
        etcd_key_lines()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::render::{
        apiserver_unit, controller_manager_unit, etcd_unit, kubelet_config, scheduler_unit,
    };
    use crate::cluster::tests_support::{assert_bash_syntax, plan_for};
    use crate::config::Hardening;

    fn text(file: &RemoteFile) -> String {
        String::from_utf8(file.content.clone()).unwrap()
    }

    fn all_off() -> Hardening {
        Hardening {
            audit_log: false,
            secrets_encryption: false,
            pod_security: false,
            kubelet_serving_certificates: false,
            protect_kernel_defaults: false,
            component_flags: false,
            etcd_user: false,
        }
    }

    /// The flags of one rendered unit, one per line as `exec_start` writes them.
    fn flags(unit: &str) -> Vec<String> {
        unit.lines()
            .map(|l| l.trim().trim_end_matches(" \\").to_string())
            .filter(|l| l.starts_with("--"))
            .collect()
    }

    const APISERVER_HARDENING: [&str; 8] = [
        "--profiling=false",
        "--tls-min-version=VersionTLS12",
        "--audit-policy-file=/etc/kubernetes/audit-policy.yaml",
        "--audit-log-path=/var/log/kubernetes/audit/audit.log",
        "--audit-log-maxage=30",
        "--audit-log-maxbackup=10",
        "--audit-log-maxsize=100",
        "--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,\
         TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,\
         TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    ];

    #[test]
    fn apiserver_gets_audit_profiling_and_tls_flags_on_every_version() {
        for version in ["v1.20.2", "v1.34.1"] {
            let plan = plan_for(version);
            let unit = flags(&text(&apiserver_unit(&plan, &plan.hosts[0])));
            for flag in APISERVER_HARDENING {
                assert!(unit.iter().any(|f| f == flag), "{version}: {flag} missing");
            }
        }
    }

    #[test]
    fn each_item_off_leaves_its_flags_out() {
        let mut plan = plan_for("v1.20.2");
        plan.config.hardening = Hardening {
            audit_log: false,
            ..Hardening::default()
        };
        let unit = text(&apiserver_unit(&plan, &plan.hosts[0]));
        assert!(!unit.contains("--audit-"), "{unit}");
        assert!(unit.contains("--profiling=false"));

        plan.config.hardening = Hardening {
            component_flags: false,
            ..Hardening::default()
        };
        let unit = text(&apiserver_unit(&plan, &plan.hosts[0]));
        assert!(unit.contains("--audit-log-path="));
        for absent in ["--profiling", "--tls-min-version", "--tls-cipher-suites"] {
            assert!(!unit.contains(absent), "{absent} in\n{unit}");
        }
        assert!(!text(&controller_manager_unit(&plan)).contains("--profiling"));
        assert!(!text(&controller_manager_unit(&plan)).contains("--terminated-pod-gc-threshold"));
        assert!(!text(&scheduler_unit(&plan)).contains("--profiling"));
        assert!(!text(&etcd_unit(&plan, &plan.hosts[0])).contains("--cipher-suites"));
        let config = text(&kubelet_config(&plan, &plan.hosts[3]));
        for absent in [
            "tlsMinVersion",
            "tlsCipherSuites",
            "podPidsLimit",
            "eventRecordQPS",
            "readOnlyPort",
            "seccompDefault",
        ] {
            assert!(!config.contains(absent), "{absent} in\n{config}");
        }
        assert!(config.contains("protectKernelDefaults: true"));

        plan.config.hardening = all_off();
        assert!(!text(&kubelet_config(&plan, &plan.hosts[3])).contains("protectKernelDefaults"));
        let etcd = text(&etcd_unit(&plan, &plan.hosts[0]));
        assert!(!etcd.contains("User=etcd"), "{etcd}");
        assert_eq!(etcd_user_script(&plan, &plan.hosts[0]), "");
        assert_eq!(etcd_certificates_script(&plan, &plan.hosts[0]), "");
        assert_eq!(kernel_defaults_script(&plan, &plan.hosts[3]), "");
        assert_eq!(audit_log_dir_script(&plan), "");
        assert_eq!(
            etcd_restart_script(&plan),
            "systemctl daemon-reload\nsystemctl enable --quiet etcd.service\n\
             systemctl restart --no-block etcd.service\n"
        );
    }

    #[test]
    fn controller_manager_and_scheduler_flags() {
        for version in ["v1.20.2", "v1.34.1"] {
            let plan = plan_for(version);
            let cm = flags(&text(&controller_manager_unit(&plan)));
            assert!(cm.contains(&"--profiling=false".to_string()), "{cm:?}");
            assert!(cm.contains(&"--terminated-pod-gc-threshold=1000".to_string()));
            let scheduler = flags(&text(&scheduler_unit(&plan)));
            assert!(scheduler.contains(&"--profiling=false".to_string()));
        }
    }

    #[test]
    fn etcd_runs_as_its_user_with_strong_ciphers() {
        let plan = plan_for("v1.20.2");
        let unit = text(&etcd_unit(&plan, &plan.hosts[0]));
        assert!(
            unit.contains(
                "\nUser=etcd\nGroup=etcd\nStateDirectory=etcd\nStateDirectoryMode=0700\n"
            ),
            "{unit}"
        );
        assert_eq!(
            ETCD_DATA_DIR, "/var/lib/etcd",
            "StateDirectory=etcd names it"
        );
        assert!(flags(&unit).contains(&format!("--cipher-suites={}", CIPHER_SUITES.join(","))));
    }

    #[test]
    fn kubelet_fields_follow_the_version() {
        let old = plan_for("v1.20.2");
        let config = text(&kubelet_config(&old, &old.hosts[3]));
        for field in [
            "\nprotectKernelDefaults: true\n",
            "\ntlsMinVersion: VersionTLS12\n",
            "\ntlsCipherSuites:\n- TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n",
            "\npodPidsLimit: 4096\n",
            "\neventRecordQPS: 0\n",
            "\nmakeIPTablesUtilChains: true\n",
            "\nreadOnlyPort: 0\n",
        ] {
            assert!(config.contains(field), "{field} missing from\n{config}");
        }
        // 1.20-1.24: seccompDefault is absent or behind a gate that is off.
        assert!(!config.contains("seccompDefault"), "{config}");
        let gated = plan_for("v1.24.17");
        assert!(!text(&kubelet_config(&gated, &gated.hosts[3])).contains("seccompDefault"));
        for version in ["v1.25.0", "v1.34.1"] {
            let plan = plan_for(version);
            let config = text(&kubelet_config(&plan, &plan.hosts[3]));
            assert!(config.contains("\nseccompDefault: true\n"), "{version}");
            assert!(config.contains("\nprotectKernelDefaults: true\n"));
        }
        // Still one YAML mapping with every field once.
        let value: serde_json::Value = serde_saphyr::from_str(&config).unwrap();
        assert_eq!(value["tlsCipherSuites"].as_array().unwrap().len(), 6);
        assert_eq!(value["readOnlyPort"].as_u64(), Some(0));
    }

    #[test]
    fn audit_policy_never_logs_bodies() {
        let policy = text(&audit_policy());
        let value: serde_json::Value = serde_saphyr::from_str(&policy).unwrap();
        assert_eq!(value["apiVersion"].as_str(), Some("audit.k8s.io/v1"));
        assert_eq!(value["kind"].as_str(), Some("Policy"));
        let rules = value["rules"].as_array().unwrap();
        for rule in rules {
            let level = rule["level"].as_str().unwrap();
            assert!(["None", "Metadata"].contains(&level), "{level}");
        }
        // Secrets are matched before the catch-all, at Metadata.
        let secrets = rules
            .iter()
            .position(|r| {
                r["resources"].as_array().is_some_and(|rs| {
                    rs.iter().any(|g| {
                        g["resources"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r.as_str() == Some("secrets"))
                    })
                })
            })
            .unwrap();
        assert_eq!(rules[secrets]["level"].as_str(), Some("Metadata"));
        assert_eq!(rules.last().unwrap()["level"].as_str(), Some("Metadata"));
        assert!(rules.last().unwrap()["resources"].is_null());
        assert_eq!(audit_policy().mode, 0o600);
        // Event reads are left out under both APIs that serve Events.
        let events = &rules[0];
        assert_eq!(events["level"].as_str(), Some("None"));
        let groups: Vec<&str> = events["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["group"].as_str().unwrap())
            .collect();
        assert_eq!(groups, ["", "events.k8s.io"]);
    }

    /// The audit log's directory and file, made in a scratch root: 0700 and 0600, an existing
    /// log kept.
    #[test]
    fn audit_log_is_made_root_only_before_the_apiserver_opens_it() {
        let plan = plan_for("v1.20.2");
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        let script = audit_log_dir_script(&plan).replace("/var/log", &format!("{r}/var/log"));
        crate::cluster::tests_support::run_bash_ok(&script);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| {
            std::fs::metadata(format!("{r}{p}"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(AUDIT_LOG_DIR), 0o700);
        assert_eq!(mode(AUDIT_LOG), 0o600);
        std::fs::write(format!("{r}{AUDIT_LOG}"), "kept\n").unwrap();
        std::fs::set_permissions(
            format!("{r}{AUDIT_LOG}"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        crate::cluster::tests_support::run_bash_ok(&script);
        assert_eq!(mode(AUDIT_LOG), 0o600);
        assert_eq!(
            std::fs::read_to_string(format!("{r}{AUDIT_LOG}")).unwrap(),
            "kept\n"
        );
    }

    #[test]
    fn kernel_defaults_file_lists_what_the_kubelet_checks() {
        let conf = text(&kernel_defaults_conf());
        for (key, value) in KERNEL_DEFAULTS {
            assert!(conf.contains(&format!("\n{key} = {value}\n")), "{conf}");
        }
        assert_eq!(KERNEL_DEFAULTS.len(), 6);
    }

    /// The kernel settings' script against a stand-in `sysctl`: a differing value is written;
    /// where writing fails, a matching value passes and a differing one stops, named.
    #[test]
    fn kernel_defaults_script_sets_accepts_or_names_the_difference() {
        let plan = plan_for("v1.20.2");
        let script = kernel_defaults_script(&plan, &plan.hosts[3]);
        assert_bash_syntax(&script);
        let run = |values: &str, writable: bool| {
            let dir = tempfile::tempdir().unwrap();
            let fake = dir.path().join("sysctl");
            // `sysctl -n KEY` prints the value from VALUES; `sysctl -qw K=V` logs, or fails.
            std::fs::write(
                &fake,
                format!(
                    "#!/bin/bash\nif [ \"$1\" = -n ]; then\n  \
                     printf '%s\\n' {values} | sed -n \"s/^$2=//p\"\n  exit 0\nfi\n\
                     {}\n",
                    if writable {
                        format!("echo \"$2\" >> {}/written; exit 0", dir.path().display())
                    } else {
                        "echo 'permission denied' >&2; exit 1".to_string()
                    }
                ),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let out = std::process::Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        dir.path().display(),
                        std::env::var("PATH").unwrap()
                    ),
                )
                .output()
                .unwrap();
            let written = std::fs::read_to_string(dir.path().join("written")).unwrap_or_default();
            (
                out.status.success(),
                written,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let wanted: Vec<String> = KERNEL_DEFAULTS
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let all_good = wanted.join(" ");
        // Everything already right, read-only /proc/sys: nothing written, success.
        let (ok, written, stderr) = run(&all_good, false);
        assert!(ok, "{stderr}");
        assert_eq!(written, "");
        // One differs and can be written: written.
        let differs = all_good.replace("kernel.panic=10", "kernel.panic=0");
        let (ok, written, stderr) = run(&differs, true);
        assert!(ok, "{stderr}");
        assert_eq!(written, "kernel.panic=10\n");
        // One differs and cannot be written: stops, naming host, key and both values.
        let (ok, _, stderr) = run(&differs, false);
        assert!(!ok);
        assert!(
            stderr.contains(
                "node4: kernel setting kernel.panic is 0 and cannot be set here; the kubelet's \
                 protectKernelDefaults needs 10"
            ),
            "{stderr}"
        );
    }

    #[test]
    fn etcd_scripts_only_on_members_and_valid_bash() {
        let plan = plan_for("v1.20.2");
        let member = &plan.hosts[0];
        let worker = &plan.hosts[3];
        assert_eq!(etcd_user_script(&plan, worker), "");
        assert_eq!(etcd_certificates_script(&plan, worker), "");
        let user = etcd_user_script(&plan, member);
        assert!(user.contains("useradd --system --gid etcd"), "{user}");
        assert!(user.contains(&format!("touch {ETCD_USER_MADE}")));
        let restart = etcd_restart_script(&plan);
        // Stopped before the owner changes, started after.
        let stop = restart.find("systemctl stop etcd.service").unwrap();
        let chown = restart.find("chown -R etcd:etcd /var/lib/etcd").unwrap();
        let start = restart
            .find("systemctl start --no-block etcd.service")
            .unwrap();
        assert!(stop < chown && chown < start, "{restart}");
        assert!(restart.contains("chmod 700 /var/lib/etcd\n"));
        assert!(restart.contains("chown etcd:etcd /etc/kubernetes/pki/etcd/server.key"));
        // etcd reaches its files through root's directories, which ilha makes 0700.
        assert!(
            restart.contains(
                "chmod 711 /etc/kubernetes /etc/kubernetes/pki /etc/kubernetes/pki/etcd\n"
            )
        );
        for script in [user, restart, etcd_certificates_script(&plan, member)] {
            assert_bash_syntax(&script);
        }
    }
}
