//! The cluster config's `hardening:` items `audit_log`, `component_flags`,
//! `protect_kernel_defaults` and `etcd_user` (all on by default) on real hosts, checked where
//! each lives: the flags of the running processes (/proc/PID/cmdline), the kubelet's live
//! configuration (configz), file owners and modes, etcd's user, an audit line for a request the
//! test makes (the Secret named, its value nowhere in the log), the kernel settings; a second
//! `up` changes nothing and `reset` takes off the audit log, the policy, the kernel-settings
//! file and the etcd user ilha made. The cluster is first made with `etcd_user: false` (etcd as
//! root, as before the item existed): the hardened `up` moves it to its user, data intact.
//!
//! One lab cluster: h1 master + etcd, h2 worker. Stand-ins: the lab runs Kubernetes v1.20.2 and
//! its etcd (3.4), the newest buildable here, so `seccompDefault` (kubelet 1.25 and later) is
//! checked absent, as rendered for 1.20; the unit tests in `cluster::hardening` pin the newer
//! versions. The lab's hosts share this machine's kernel, which already has the values the
//! kubelet's `protectKernelDefaults` requires (their /proc/sys is read-only): the test checks the
//! values and that ilha's file states them, not that ilha could change them.
use std::collections::BTreeMap;
use std::time::Instant;

use ilha_e2e::cluster::{
    eventually, fresh_lab, ilha, kubectl, lab_bundle, master_and_worker, text, write_config,
    write_inventory,
};

const MASTER: usize = 1;
const WORKER: usize = 2;

const CIPHERS: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,\
TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,\
TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305";

/// What the kubelet's `protectKernelDefaults` requires (kubelet 1.20's setupKernelTunables).
const KERNEL_DEFAULTS: [(&str, &str); 6] = [
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// The arguments of the running main process of `unit` on host `index`, one per entry.
fn cmdline(lab: &ilha_e2e::cluster::FreshLab, index: usize, unit: &str) -> Vec<String> {
    let out = lab
        .ssh_ok(
            index,
            &format!(
                "pid=$(systemctl show -p MainPID --value {unit}); [ \"$pid\" != 0 ] || \
                 {{ echo '{unit} not running' >&2; exit 1; }}; tr '\\0' '\\n' < /proc/$pid/cmdline"
            ),
        )
        .unwrap_or_else(|err| panic!("h{index}: {unit}'s command line: {err}"));
    out.lines().map(str::to_string).collect()
}

fn assert_flags(host: usize, unit: &str, args: &[String], wanted: &[&str]) {
    for flag in wanted {
        assert!(
            args.iter().any(|a| a == flag),
            "h{host}: {unit} runs without {flag}: {args:?}"
        );
    }
}

/// `stat -c '%a %U %G'` of each path on host `index`.
fn modes(
    lab: &ilha_e2e::cluster::FreshLab,
    index: usize,
    paths: &[&str],
) -> BTreeMap<String, String> {
    let out = lab
        .ssh_ok(index, &format!("stat -c '%n %a %U %G' {}", paths.join(" ")))
        .unwrap_or_else(|err| panic!("h{index}: stat: {err}"));
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(path, rest)| (path.to_string(), rest.to_string()))
        .collect()
}

/// The last lines of etcd's and kube-apiserver's journals on host `index`, for a failure.
fn journals(lab: &ilha_e2e::cluster::FreshLab, index: usize) -> String {
    lab.ssh_ok(
        index,
        "journalctl -u etcd -u kube-apiserver --no-pager -n 40 2>&1; \
         ls -ld /etc/kubernetes /etc/kubernetes/pki /etc/kubernetes/pki/etcd /var/lib/etcd 2>&1; true",
    )
    .unwrap_or_else(|err| format!("(journal unreadable: {err})"))
}

#[test]
fn hardening_is_on_by_default_where_each_item_lives_and_reset_takes_it_off() {
    let bundle = lab_bundle();
    let lab = fresh_lab(2);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &master_and_worker(), None);
    let config_path = write_config(work.path(), "hardened");
    let default_config = std::fs::read_to_string(&config_path).unwrap();
    let inventory = inventory.to_str().unwrap();
    let config = config_path.to_str().unwrap();
    let args = [
        "up",
        bundle.bundle.to_str().unwrap(),
        "--pubkey",
        bundle.pubkey.to_str().unwrap(),
        "-i",
        inventory,
        "-c",
        config,
    ];
    // No etcd user before: ilha makes it (and so reset removes it).
    assert!(
        lab.ssh(MASTER, "getent passwd etcd").unwrap().status.code() == Some(2),
        "the lab's base already has an etcd user"
    );

    // First a cluster whose etcd runs as root, as every cluster did before `etcd_user`.
    std::fs::write(
        &config_path,
        format!("{default_config}hardening:\n  etcd_user: false\n"),
    )
    .unwrap();
    let up = ilha(&lab, &args);
    assert!(
        up.status.success(),
        "ilha up (etcd_user: false) failed:\n{}\nh1's etcd and kube-apiserver:\n{}",
        text(&up),
        journals(&lab, MASTER)
    );
    let as_root = lab
        .ssh_ok(
            MASTER,
            "pid=$(systemctl show -p MainPID --value etcd); awk '/^Uid:/ { print $2 }' /proc/$pid/status; \
             stat -c '%U' /var/lib/etcd/member; getent passwd etcd || true",
        )
        .unwrap();
    assert_eq!(as_root, "0\nroot\n", "h1 with etcd_user: false");
    kubectl(
        &lab,
        MASTER,
        "create configmap before-migration --from-literal=kept=yes",
    );

    // The default config: etcd moves to its own user on this `up`.
    std::fs::write(&config_path, &default_config).unwrap();
    let started = Instant::now();
    let up = ilha(&lab, &args);
    assert!(
        up.status.success(),
        "ilha up (hardened) failed:\n{}\nh1's etcd and kube-apiserver:\n{}",
        text(&up),
        journals(&lab, MASTER)
    );
    eprintln!(
        "BENCH ilha up, 2 hosts, etcd moved to its own user: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        kubectl(
            &lab,
            MASTER,
            "get configmap before-migration -o jsonpath={.data.kept}"
        ),
        "yes",
        "the data written while etcd ran as root"
    );

    // Flags of the running control plane (CIS 1.2.x, 1.3.x, 1.4.x, 2.x).
    let apiserver = cmdline(&lab, MASTER, "kube-apiserver");
    assert_flags(
        MASTER,
        "kube-apiserver",
        &apiserver,
        &[
            "--profiling=false",
            "--tls-min-version=VersionTLS12",
            &format!("--tls-cipher-suites={CIPHERS}"),
            "--audit-policy-file=/etc/kubernetes/audit-policy.yaml",
            "--audit-log-path=/var/log/kubernetes/audit/audit.log",
            "--audit-log-maxage=30",
            "--audit-log-maxbackup=10",
            "--audit-log-maxsize=100",
        ],
    );
    assert_flags(
        MASTER,
        "kube-controller-manager",
        &cmdline(&lab, MASTER, "kube-controller-manager"),
        &["--profiling=false", "--terminated-pod-gc-threshold=1000"],
    );
    assert_flags(
        MASTER,
        "kube-scheduler",
        &cmdline(&lab, MASTER, "kube-scheduler"),
        &["--profiling=false"],
    );
    assert_flags(
        MASTER,
        "etcd",
        &cmdline(&lab, MASTER, "etcd"),
        &[&format!("--cipher-suites={CIPHERS}")],
    );

    // etcd runs as its own user; its data directory and keys are its, closed to others
    // (CIS 1.1.11, 1.1.12; 1.1.21 for the keys).
    let etcd_ids = lab
        .ssh_ok(
            MASTER,
            "pid=$(systemctl show -p MainPID --value etcd); \
             echo \"$(awk '/^Uid:/ { print $2 }' /proc/$pid/status) $(id -u etcd) $(id -gn etcd)\"",
        )
        .unwrap();
    let ids: Vec<&str> = etcd_ids.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "{etcd_ids}");
    assert_eq!(
        ids[0], ids[1],
        "h1: etcd runs as uid {}, not etcd's",
        ids[0]
    );
    assert_ne!(ids[0], "0", "h1: etcd runs as root");
    assert_eq!(ids[2], "etcd", "h1: etcd's group");
    let etcd_files = modes(
        &lab,
        MASTER,
        &[
            "/var/lib/etcd",
            "/var/lib/etcd/member",
            "/etc/kubernetes/pki/etcd/server.key",
            "/etc/kubernetes/pki/etcd/peer.key",
            "/etc/kubernetes/pki/etcd/healthcheck-client.key",
        ],
    );
    assert_eq!(
        etcd_files["/var/lib/etcd"], "700 etcd etcd",
        "{etcd_files:?}"
    );
    // etcd reaches its keys through root's directories: search only, no listing.
    for (dir, mode) in modes(
        &lab,
        MASTER,
        &[
            "/etc/kubernetes",
            "/etc/kubernetes/pki",
            "/etc/kubernetes/pki/etcd",
        ],
    ) {
        assert_eq!(mode, "711 root root", "h1: {dir}");
    }
    assert!(etcd_files["/var/lib/etcd/member"].ends_with(" etcd etcd"));
    assert_eq!(
        etcd_files["/etc/kubernetes/pki/etcd/server.key"],
        "600 etcd etcd"
    );
    assert_eq!(
        etcd_files["/etc/kubernetes/pki/etcd/peer.key"],
        "600 etcd etcd"
    );
    // etcdctl's key (root runs it) stays root's.
    assert_eq!(
        etcd_files["/etc/kubernetes/pki/etcd/healthcheck-client.key"],
        "600 root root"
    );
    let none_roots = lab
        .ssh_ok(MASTER, "find /var/lib/etcd ! -user etcd | head -5")
        .unwrap();
    assert_eq!(
        none_roots.trim(),
        "",
        "h1: files in /var/lib/etcd not etcd's"
    );

    // Units, component configs and kubeconfigs 0600 (cis-1.10+ 1.1.1-1.1.9, 1.1.13-1.1.17,
    // 4.1.1, 4.1.3, 4.1.5, 4.1.9); the audit log's directory root's only.
    let master_files = [
        "/etc/systemd/system/etcd.service",
        "/etc/systemd/system/kube-apiserver.service",
        "/etc/systemd/system/kube-controller-manager.service",
        "/etc/systemd/system/kube-scheduler.service",
        "/etc/systemd/system/kubelet.service",
        "/etc/systemd/system/kube-proxy.service",
        "/etc/systemd/system/containerd.service",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/kube-proxy.conf",
        "/etc/kubernetes/audit-policy.yaml",
        "/var/lib/kubelet/config.yaml",
        "/var/lib/kube-proxy/config.yaml",
        "/etc/cni/net.d/10-ilha-bridge.conflist",
        "/etc/containerd/config.toml",
    ];
    for (path, mode) in modes(&lab, MASTER, &master_files) {
        assert_eq!(mode, "600 root root", "h1: {path}");
    }
    let worker_files = [
        "/etc/systemd/system/kubelet.service",
        "/etc/systemd/system/kube-proxy.service",
        "/etc/systemd/system/ilha-apiproxy.service",
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/kube-proxy.conf",
        "/var/lib/kubelet/config.yaml",
        "/etc/cni/net.d/10-ilha-bridge.conflist",
    ];
    let on_worker = modes(&lab, WORKER, &worker_files);
    assert_eq!(on_worker.len(), worker_files.len(), "{on_worker:?}");
    for (path, mode) in on_worker {
        assert_eq!(mode, "600 root root", "h2: {path}");
    }
    let audit_dir = modes(&lab, MASTER, &["/var/log/kubernetes/audit"]);
    assert_eq!(audit_dir["/var/log/kubernetes/audit"], "700 root root");

    // The kubelet's live configuration (CIS 4.2.4, 4.2.6, 4.2.7, 4.2.9, 4.2.13; 1.12's 4.2.13
    // pod PIDs).
    for node in ["h1", "h2"] {
        // The hardened `up` restarted the kubelets; the node may still show Ready from before.
        let live: serde_json::Value = eventually(
            &format!("{node}'s kubelet answers configz"),
            std::time::Duration::from_secs(60),
            || {
                lab.ssh_ok(
                    MASTER,
                    &format!(
                        "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf \
                         --request-timeout=10s get --raw /api/v1/nodes/{node}/proxy/configz"
                    ),
                )
                .ok()
                .map(|raw| serde_json::from_str(&raw).unwrap())
            },
        );
        let config = &live["kubeletconfig"];
        assert_eq!(config["protectKernelDefaults"], true, "{node}: {config}");
        assert_eq!(config["tlsMinVersion"], "VersionTLS12", "{node}");
        let suites: Vec<&str> = config["tlsCipherSuites"]
            .as_array()
            .unwrap_or_else(|| panic!("{node}: no tlsCipherSuites: {config}"))
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(suites.join(","), CIPHERS, "{node}");
        assert_eq!(config["podPidsLimit"], 4096, "{node}");
        assert_eq!(config["eventRecordQPS"], 0, "{node}");
        assert_eq!(config["makeIPTablesUtilChains"], true, "{node}");
        assert!(
            config["readOnlyPort"].is_null() || config["readOnlyPort"] == 0,
            "{node}: readOnlyPort {}",
            config["readOnlyPort"]
        );
        // Kubelet 1.20 has no seccompDefault to turn on without a gate: not rendered.
        assert!(config["seccompDefault"].is_null() || config["seccompDefault"] == false);
    }
    let read_only_port = lab
        .ssh_ok(WORKER, "ss -Hltn 'sport = :10255' | wc -l")
        .unwrap();
    assert_eq!(
        read_only_port.trim(),
        "0",
        "h2: the kubelet's read-only port is open"
    );

    // The kernel settings protectKernelDefaults checks, on both nodes, and ilha's file for boot.
    for host in [MASTER, WORKER] {
        let keys: Vec<&str> = KERNEL_DEFAULTS.iter().map(|(k, _)| *k).collect();
        let now = lab
            .ssh_ok(host, &format!("sysctl {}", keys.join(" ")))
            .unwrap();
        let file = lab
            .ssh_ok(host, "cat /etc/sysctl.d/90-ilha-kubelet.conf")
            .unwrap();
        for (key, value) in KERNEL_DEFAULTS {
            let line = format!("{key} = {value}");
            assert!(
                now.lines().any(|l| l == line),
                "h{host}: {line} not in\n{now}"
            );
            assert!(
                file.lines().any(|l| l == line),
                "h{host}: {line} not in\n{file}"
            );
        }
    }

    // An audit line for a Secret the test reads: named, at Metadata, its value nowhere.
    let value = "ilha-audit-probe-value-7f3c";
    kubectl(
        &lab,
        MASTER,
        &format!("create secret generic audit-probe --from-literal=token={value}"),
    );
    kubectl(&lab, MASTER, "get secret audit-probe -o yaml");
    let line = eventually(
        "the audit log records the get of secret audit-probe",
        std::time::Duration::from_secs(30),
        || {
            let lines = lab
                .ssh_ok(
                    MASTER,
                    "grep -h '\"name\":\"audit-probe\"' /var/log/kubernetes/audit/audit.log || true",
                )
                .unwrap();
            lines
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|e| e["verb"] == "get" && e["objectRef"]["resource"] == "secrets")
        },
    );
    assert_eq!(line["level"], "Metadata", "{line}");
    assert_eq!(line["user"]["username"], "kubernetes-admin", "{line}");
    assert!(line["requestObject"].is_null() && line["responseObject"].is_null());
    let leaked = lab
        .ssh_ok(
            MASTER,
            &format!(
                "grep -c -e {value} -e $(printf %s {value} | base64) \
                 /var/log/kubernetes/audit/audit.log || true"
            ),
        )
        .unwrap();
    assert_eq!(leaked.trim(), "0", "the Secret's value is in the audit log");
    let log_mode = modes(&lab, MASTER, &["/var/log/kubernetes/audit/audit.log"]);
    assert_eq!(
        log_mode["/var/log/kubernetes/audit/audit.log"],
        "600 root root"
    );
    // Event reads and health probes are left out.
    kubectl(&lab, MASTER, "get events -A");
    kubectl(&lab, MASTER, "get --raw /healthz");
    let noise = lab
        .ssh_ok(
            MASTER,
            "grep -e '\"requestURI\":\"/healthz' -e '\"requestURI\":\"/readyz' \
             -e '\"requestURI\":\"/livez' -e '\"verb\":\"list\".*\"resource\":\"events\"' \
             /var/log/kubernetes/audit/audit.log | head -3 || true",
        )
        .unwrap();
    assert_eq!(noise, "", "health probes or event reads in the audit log");

    // A second run changes nothing.
    let second = ilha(&lab, &args);
    assert!(
        second.status.success() && text(&second).contains("Nothing changed"),
        "second ilha up:\n{}",
        text(&second)
    );

    // reset takes off what the hardening put on.
    let reset = ilha(&lab, &["reset", "-i", inventory, "-c", config, "--yes"]);
    assert!(
        reset.status.success(),
        "ilha reset failed:\n{}",
        text(&reset)
    );
    let gone = |index: usize| {
        lab.ssh_ok(
            index,
            "for p in /var/log/kubernetes /etc/kubernetes/audit-policy.yaml \
             /etc/sysctl.d/90-ilha-kubelet.conf; do [ -e $p ] && echo \"still there: $p\"; done; \
             getent passwd etcd >/dev/null && echo 'still there: user etcd'; \
             getent group etcd >/dev/null && echo 'still there: group etcd'; true",
        )
        .unwrap()
    };
    assert_eq!(gone(MASTER), "", "h1 after reset");
    assert_eq!(gone(WORKER), "", "h2 after reset");
}
