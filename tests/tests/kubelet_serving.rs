//! Kubelet serving certificates from ilha's CA (`hardening.kubelet_serving_certificates`), on one
//! two-host cluster (h1 master + etcd, h2 worker), checked on the hosts themselves:
//! - installed with the item off, each kubelet serves a certificate it signed itself (port 10250
//!   seen with `openssl s_client`) and kube-apiserver does not verify them;
//! - `up` with the item on migrates the running cluster: kubelets restart one at a time with
//!   ilha's certificate, then kube-apiserver gets `--kubelet-certificate-authority`; a loop of
//!   `kubectl logs` on h1 during that `up` never sees an x509 error;
//! - afterwards each kubelet serves a certificate that `openssl s_client -verify_return_error`
//!   on the master accepts against the cluster CA, with the node's address among its SANs, the
//!   running kube-apiserver has the flag (`/proc/PID/cmdline`), `kubectl exec` and `logs` work
//!   into a pod on each node;
//! - a foreign certificate swapped in on h2 makes `kubectl logs` fail with an x509 error, and the
//!   next `up` puts ilha's back (logs work again); one more `up` changes nothing.
//! - `ilha plan` announces the migration and the certificate put back.
//!
//! Stand-in: the lab runs Kubernetes v1.20.2, the newest that can be built here.
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    LAB_EVICTION, eventually, fresh_lab, ilha, kubectl, lab_bundle, master_and_worker, text,
    up_args, write_inventory,
};
use xtask::lab::Lab;

const KUBECTL: &str =
    "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s";

/// A pod pinned to `node` (tolerating the master's taint) that logs one line and sleeps.
fn pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: talk-{node}, namespace: default}}
spec:
  nodeName: {node}
  tolerations: [{{operator: Exists}}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: talk
    image: ilha.test/busybox:1
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "echo hello-from-{node}; exec /bin/busybox sleep 3600"]
"#
    )
}

/// `openssl s_client` from h1 to `ip:10250`: the served certificate's issuer, subject and SANs,
/// and whether it verifies against the cluster CA for that address.
fn served_certificate(lab: &Lab, ip: &str) -> (String, bool) {
    let shown = lab
        .ssh_ok(
            1,
            &format!(
                "openssl s_client -connect {ip}:10250 </dev/null 2>/dev/null \
                 | openssl x509 -noout -issuer -subject -ext subjectAltName"
            ),
        )
        .unwrap_or_else(|e| panic!("reading the kubelet certificate at {ip}:10250: {e}"));
    let verified = lab
        .ssh(
            1,
            &format!(
                "openssl s_client -connect {ip}:10250 -CAfile /etc/kubernetes/pki/ca.crt \
                 -verify_return_error -verify_ip {ip} </dev/null"
            ),
        )
        .unwrap()
        .status
        .success();
    (shown, verified)
}

/// The running kube-apiserver's arguments, one per line, from its `/proc/PID/cmdline`.
fn apiserver_args(lab: &Lab) -> String {
    lab.ssh_ok(
        1,
        "tr '\\0' '\\n' < /proc/$(pgrep -xo kube-apiserver)/cmdline",
    )
    .unwrap()
}

fn logs(lab: &Lab, node: &str) -> std::process::Output {
    lab.ssh(1, &format!("{KUBECTL} logs talk-{node}")).unwrap()
}

fn assert_exec_and_logs(lab: &Lab, node: &str) {
    let out = kubectl(lab, 1, &format!("logs talk-{node}"));
    assert_eq!(out.trim(), format!("hello-from-{node}"));
    let out = kubectl(
        lab,
        1,
        &format!("exec talk-{node} -- /bin/busybox hostname"),
    );
    assert_eq!(out.trim(), format!("talk-{node}"));
}

#[test]
fn kubelets_serve_certificates_from_ilhas_ca_and_a_running_cluster_migrates() {
    let bundle = lab_bundle();
    let lab = fresh_lab(2);
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &master_and_worker(), None);
    let config = work.path().join("cluster.yaml");
    let write_config = |item: Option<bool>| {
        let hardening = item.map_or(String::new(), |on| {
            format!("hardening:\n  kubelet_serving_certificates: {on}\n")
        });
        std::fs::write(
            &config,
            format!("cluster_name: serving\nstate_dir: state\n{LAB_EVICTION}{hardening}"),
        )
        .unwrap();
    };
    let args = up_args(
        bundle.bundle.to_str().unwrap(),
        bundle.pubkey.to_str().unwrap(),
        inventory.to_str().unwrap(),
        config.to_str().unwrap(),
    );
    let ips = [lab.host(1).ip.clone(), lab.host(2).ip.clone()];

    // 1. The item off: self-signed kubelets, an apiserver that does not verify them.
    write_config(Some(false));
    let out = ilha(&lab, &args);
    assert!(out.status.success(), "ilha up (item off):\n{}", text(&out));
    for (node, ip) in ["h1", "h2"].iter().zip(&ips) {
        let (shown, verified) = served_certificate(&lab, ip);
        assert!(
            shown.contains(&format!("issuer=CN = {node}-ca@")),
            "{node}: the kubelet signs its own certificate:\n{shown}"
        );
        assert!(
            !verified,
            "{node}: a self-signed kubelet verified:\n{shown}"
        );
    }
    assert!(!apiserver_args(&lab).contains("--kubelet-certificate-authority"));
    lab.ssh_ok(
        1,
        &format!(
            "cat > /root/talk.yaml <<'EOF'\n{}---\n{}EOF",
            pod("h1"),
            pod("h2")
        ),
    )
    .unwrap();
    kubectl(&lab, 1, "apply -f /root/talk.yaml");
    kubectl(
        &lab,
        1,
        "wait --for=condition=Ready pod/talk-h1 pod/talk-h2 --timeout=120s",
    );
    for node in ["h1", "h2"] {
        assert_exec_and_logs(&lab, node);
    }

    // 2. The item on: the migration, with `kubectl logs` running on h1 all along.
    lab.ssh_ok(
        1,
        &format!(
            "systemd-run --unit=logs-probe sh -c 'while true; do for n in h1 h2; do \
             if out=$({KUBECTL} logs talk-$n 2>&1); then echo \"ok $n\"; else echo \"failed $n: $out\"; fi; \
             done; sleep 0.3; done > /root/probe.log'"
        ),
    )
    .unwrap();
    write_config(None);
    let mut plan_args = args.clone();
    plan_args[0] = "plan";
    let planned = ilha(&lab, &plan_args);
    assert!(planned.status.success(), "ilha plan:\n{}", text(&planned));
    assert!(
        text(&planned).contains(
            "Kubelets serving self-signed certificates (h1, h2) restart one at a time with ilha's"
        ),
        "{}",
        text(&planned)
    );
    let migration = Instant::now();
    let out = ilha(&lab, &args);
    let migration = migration.elapsed();
    lab.ssh_ok(1, "systemctl stop logs-probe").unwrap();
    let said = text(&out);
    assert!(out.status.success(), "ilha up (migration):\n{said}");
    eprintln!(
        "BENCH kubelet serving migration, 2 hosts: {:.1}s",
        migration.as_secs_f64()
    );
    // One node at a time: h2's kubelet step starts only once h1 serves again and is Ready;
    // the apiserver verifies only after both.
    let at = |needle: &str| {
        said.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` missing from:\n{said}"))
    };
    let h1_serving = at("h1: kubelet serving ilha's certificate and Ready");
    let h2_kubelet = at(&format!("  {:<14} {:<14} done in", "h2", "kubelet"));
    let h2_serving = at("h2: kubelet serving ilha's certificate and Ready");
    let verifying = at("h1: kube-apiserver restarted verifying kubelets, ready");
    assert!(
        h1_serving < h2_kubelet && h2_kubelet < h2_serving && h2_serving < verifying,
        "{said}"
    );
    assert!(
        said.contains("kube-apiserver verifies every kubelet's serving certificate"),
        "{said}"
    );
    let probe = lab.ssh_ok(1, "cat /root/probe.log").unwrap();
    assert!(
        !probe.contains("x509") && !probe.contains("certificate"),
        "`kubectl logs` hit a certificate error during the migration:\n{probe}"
    );
    for node in ["h1", "h2"] {
        assert!(
            probe.matches(&format!("ok {node}\n")).count() >= 5,
            "the probe barely reached {node}:\n{probe}"
        );
    }

    // 3. On the hosts: ilha's certificates, verified; the flag on the running apiserver.
    for (node, ip) in ["h1", "h2"].iter().zip(&ips) {
        let (shown, verified) = served_certificate(&lab, ip);
        assert!(shown.contains("issuer=CN = kubernetes"), "{node}:\n{shown}");
        assert!(
            shown.contains(&format!(
                "subject=O = system:nodes, CN = system:node:{node}"
            )),
            "{node}:\n{shown}"
        );
        assert!(
            shown.contains(&format!("DNS:{node}")) && shown.contains(&format!("IP Address:{ip}")),
            "{node}: SANs:\n{shown}"
        );
        assert!(verified, "{node}: not verified against ca.crt:\n{shown}");
        let index = if *node == "h1" { 1 } else { 2 };
        let modes = lab
            .ssh_ok(
                index,
                "stat -c '%a %U %n' /etc/kubernetes/pki/kubelet-server.crt /etc/kubernetes/pki/kubelet-server.key",
            )
            .unwrap();
        assert_eq!(
            modes,
            "644 root /etc/kubernetes/pki/kubelet-server.crt\n\
             600 root /etc/kubernetes/pki/kubelet-server.key\n"
        );
        let config = lab
            .ssh_ok(index, "cat /var/lib/kubelet/config.yaml")
            .unwrap();
        assert!(
            config.contains("tlsCertFile: /etc/kubernetes/pki/kubelet-server.crt"),
            "{config}"
        );
    }
    let running = apiserver_args(&lab);
    assert!(
        running
            .lines()
            .any(|a| a == "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt"),
        "{running}"
    );
    for node in ["h1", "h2"] {
        assert_exec_and_logs(&lab, node);
    }

    // 4. A kubelet serving a foreign certificate is refused; `up` puts ilha's back.
    lab.ssh_ok(
        2,
        &format!(
            "cd /etc/kubernetes/pki && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
             -nodes -keyout kubelet-server.key -out kubelet-server.crt -days 2 -subj /CN=system:node:h2 \
             -addext subjectAltName=DNS:h2,IP:{} 2>/dev/null && systemctl restart kubelet",
            ips[1]
        ),
    )
    .unwrap();
    let refused = eventually(
        "kubectl logs into h2 refused",
        Duration::from_secs(60),
        || {
            let out = logs(&lab, "h2");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (!out.status.success() && stderr.contains("x509")).then_some(stderr)
        },
    );
    assert!(
        refused.contains("certificate signed by unknown authority"),
        "{refused}"
    );
    assert_exec_and_logs(&lab, "h1");
    let planned = text(&ilha(&lab, &plan_args));
    assert!(
        planned.contains("The kubelet serving certificate was changed on h2: ilha's is put back."),
        "{planned}"
    );
    let out = ilha(&lab, &args);
    let said = text(&out);
    assert!(
        out.status.success(),
        "ilha up (foreign certificate):\n{said}"
    );
    assert!(
        said.contains("h2: kubelet serving ilha's certificate and Ready"),
        "{said}"
    );
    let (shown, verified) = served_certificate(&lab, &ips[1]);
    assert!(
        verified && shown.contains("issuer=CN = kubernetes"),
        "{shown}"
    );
    assert_exec_and_logs(&lab, "h2");

    // 5. Nothing left to do.
    let out = ilha(&lab, &args);
    let said = text(&out);
    assert!(out.status.success(), "ilha up (again):\n{said}");
    assert!(said.contains("Nothing changed"), "{said}");
    eprintln!(
        "BENCH kubelet_serving suite (4 ups): {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
