//! Admission and pod security on a real cluster (issue 14), checked on the hosts over SSH.
//!
//! One lab cluster, h1 master + etcd and h2 worker, Kubernetes 1.20 (the newest that builds here;
//! 1.21+ plugins and 1.23+ PodSecurity are proven by the unit tests of `cluster::admission` only,
//! said plainly). First `up` with `hardening: {pod_security: false}`, as a cluster installed
//! before pod security existed, with a Deployment running; then `up` with the defaults migrates
//! it: the PodSecurityPolicy objects are applied with the plugin still off, then kube-apiserver
//! restarts with it on. Then, on the hosts:
//! - the running kube-apiserver's flags (/proc/PID/cmdline): the plugins and the admission
//!   configuration file (0600);
//! - as an ordinary user of namespace default (a service account with `edit` there, impersonated
//!   by the admin: cluster admins may use every policy, which is how PodSecurityPolicy works), a
//!   privileged pod, a hostPath pod and a hostNetwork pod are refused with the policy's message;
//!   an ordinary pod runs under `ilha-baseline`; the Deployment made before the migration still
//!   gets new pods;
//! - a kube-system service account's privileged pod is admitted (`ilha-privileged`) and runs;
//! - a Service with externalIPs is admitted: 1.20 has no DenyServiceExternalIPs (1.21+);
//! - a burst of 400 Events in one namespace is refused past the namespace bucket (429, "limit
//!   reached on type Namespace");
//! - `plan` says the bridge network does not enforce NetworkPolicy; a last `up` changes nothing.
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    FreshLab, eventually, fresh_lab, ilha, kubectl, lab_bundle, text, up_args, write_config,
    write_inventory,
};

const KUBECTL: &str =
    "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s";
/// An ordinary user of namespace default, and one of kube-system.
const USER: &str = "system:serviceaccount:default:tester";
const SYSTEM_USER: &str = "system:serviceaccount:kube-system:tester";

/// A pod of the lab's busybox in `namespace`, with `spec_extra` (indented as pod spec fields)
/// and `container_extra` (as container fields).
fn pod(name: &str, namespace: &str, spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n\
         {spec_extra}  containers:\n  - name: main\n    image: ilha.test/busybox:1\n    \
         imagePullPolicy: Never\n    command: [/bin/busybox, sleep, \"3600\"]\n{container_extra}"
    )
}

/// `kubectl create` of `manifest` on h1 as `user`: (succeeded, stdout + stderr).
fn create_as(lab: &FreshLab, user: &str, manifest: &str) -> (bool, String) {
    let out = lab
        .ssh(
            1,
            &format!("{KUBECTL} --as={user} create -f - <<'EOF'\n{manifest}\nEOF"),
        )
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn assert_refused(lab: &FreshLab, user: &str, manifest: &str, why: &str) {
    let (ok, out) = create_as(lab, user, manifest);
    assert!(
        !ok,
        "admitted, should be refused ({why}):\n{manifest}\n{out}"
    );
    assert!(
        out.contains("PodSecurityPolicy: unable to admit pod") && out.contains(why),
        "refused, but not with the policy's message `{why}`:\n{out}"
    );
}

fn wait_running(lab: &FreshLab, namespace: &str, name: &str) {
    eventually(
        &format!("pod {namespace}/{name} Running"),
        Duration::from_secs(120),
        || {
            let phase = kubectl(
                lab,
                1,
                &format!("-n {namespace} get pod {name} -o jsonpath={{.status.phase}}"),
            );
            (phase.trim() == "Running").then_some(())
        },
    );
}

fn policy_of(lab: &FreshLab, namespace: &str, name: &str) -> String {
    kubectl(
        lab,
        1,
        &format!(
            "-n {namespace} get pod {name} -o jsonpath='{{.metadata.annotations.kubernetes\\.io/psp}}'"
        ),
    )
    .trim()
    .to_string()
}

#[test]
fn pod_security_refuses_privileged_pods_outside_kube_system_and_a_running_cluster_migrates() {
    let bundle = lab_bundle();
    let lab = fresh_lab(2);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(
        &lab,
        work.path(),
        &ilha_e2e::cluster::master_and_worker(),
        None,
    );
    let config = write_config(work.path(), "pod-security");
    let inventory = inventory.to_str().unwrap();
    let config = config.to_str().unwrap();
    let defaults = std::fs::read_to_string(config).unwrap();
    let args = up_args(
        bundle.bundle.to_str().unwrap(),
        bundle.pubkey.to_str().unwrap(),
        inventory,
        config,
    );

    // A cluster as ilha made it before pod security, with a workload in namespace default.
    std::fs::write(
        config,
        format!("{defaults}hardening:\n  pod_security: false\n"),
    )
    .unwrap();
    let started = Instant::now();
    let up = ilha(&lab, &args);
    assert!(up.status.success(), "ilha up failed:\n{}", text(&up));
    eprintln!(
        "BENCH ilha up, 2 hosts, pod security off: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let cmdline =
        "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value kube-apiserver)/cmdline";
    let flags = lab.ssh_ok(1, cmdline).unwrap();
    assert!(
        flags
            .lines()
            .any(|l| l == "--enable-admission-plugins=NodeRestriction,EventRateLimit"),
        "{flags}"
    );
    lab.ssh_ok(
        1,
        &format!(
            "{KUBECTL} create deployment early --image=ilha.test/busybox:1 -- /bin/busybox sleep 3600\n\
             {KUBECTL} rollout status deployment/early --timeout=120s"
        ),
    )
    .unwrap();

    // The defaults: pod security on. plan says what will happen, and what is not enforced.
    std::fs::write(config, &defaults).unwrap();
    let mut plan_args = args.clone();
    plan_args[0] = "plan";
    let planned = ilha(&lab, &plan_args);
    let planned_text = text(&planned);
    assert!(planned.status.success(), "{planned_text}");
    assert!(
        planned_text.contains("network policy: NOT enforced")
            && planned_text.contains("pod security: PodSecurityPolicy")
            && planned_text.contains(
                "then restart kube-apiserver with the PodSecurityPolicy plugin on h1, one at a time"
            ),
        "{planned_text}"
    );
    let started = Instant::now();
    let up = ilha(&lab, &args);
    let out = text(&up);
    assert!(up.status.success(), "ilha up failed:\n{out}");
    eprintln!(
        "BENCH ilha up migrating to pod security: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let applied = out
        .find("PodSecurityPolicy objects applied")
        .unwrap_or_else(|| panic!("{out}"));
    let restarted = out
        .find("h1: kube-apiserver restarted with the PodSecurityPolicy plugin and ready")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        applied < restarted,
        "the plugin went on before its policies:\n{out}"
    );

    // The running apiserver's flags and its admission configuration.
    let flags = lab.ssh_ok(1, cmdline).unwrap();
    for flag in [
        "--enable-admission-plugins=NodeRestriction,EventRateLimit,PodSecurityPolicy",
        "--admission-control-config-file=/etc/kubernetes/admission-config.yaml",
        "--allow-privileged=true",
    ] {
        assert!(flags.lines().any(|l| l == flag), "{flag} missing:\n{flags}");
    }
    assert!(!flags.contains("AlwaysPullImages"), "{flags}");
    let config_file = lab
        .ssh_ok(
            1,
            "stat -c '%a %U' /etc/kubernetes/admission-config.yaml && \
             cat /etc/kubernetes/admission-config.yaml",
        )
        .unwrap();
    assert!(config_file.starts_with("600 root\n"), "{config_file}");
    assert!(
        config_file.contains("name: EventRateLimit")
            && config_file.contains("type: Namespace")
            && config_file.contains("burst: 100"),
        "{config_file}"
    );
    let policies = kubectl(&lab, 1, "get podsecuritypolicies -o name");
    assert!(
        policies.contains("ilha-baseline") && policies.contains("ilha-privileged"),
        "{policies}"
    );

    // Ordinary users: a service account of each namespace with `edit` there.
    lab.ssh_ok(
        1,
        &format!(
            "for ns in default kube-system; do\n  \
             {KUBECTL} -n $ns create serviceaccount tester\n  \
             {KUBECTL} -n $ns create rolebinding tester-edit --clusterrole=edit \
             --serviceaccount=$ns:tester\ndone"
        ),
    )
    .unwrap();

    assert_refused(
        &lab,
        USER,
        &pod(
            "privileged",
            "default",
            "",
            "    securityContext: {privileged: true}\n",
        ),
        "Privileged containers are not allowed",
    );
    assert_refused(
        &lab,
        USER,
        &pod(
            "hostpath",
            "default",
            "  volumes: [{name: host, hostPath: {path: /etc}}]\n",
            "    volumeMounts: [{name: host, mountPath: /host}]\n",
        ),
        "hostPath volumes are not allowed to be used",
    );
    assert_refused(
        &lab,
        USER,
        &pod("hostnet", "default", "  hostNetwork: true\n", ""),
        "Host network is not allowed to be used",
    );

    let (ok, out) = create_as(&lab, USER, &pod("ordinary", "default", "", ""));
    assert!(ok, "an ordinary pod was refused:\n{out}");
    wait_running(&lab, "default", "ordinary");
    assert_eq!(policy_of(&lab, "default", "ordinary"), "ilha-baseline");

    // The workload from before the migration still gets pods (its ReplicaSet, a kube-system
    // controller, creates them under the baseline policy).
    kubectl(&lab, 1, "scale deployment early --replicas=2");
    kubectl(&lab, 1, "rollout status deployment/early --timeout=120s");

    let (ok, out) = create_as(
        &lab,
        SYSTEM_USER,
        &pod(
            "privileged",
            "kube-system",
            "",
            "    securityContext: {privileged: true}\n",
        ),
    );
    assert!(ok, "a privileged pod in kube-system was refused:\n{out}");
    wait_running(&lab, "kube-system", "privileged");
    assert_eq!(
        policy_of(&lab, "kube-system", "privileged"),
        "ilha-privileged"
    );

    // 1.20 has no DenyServiceExternalIPs (from 1.21): a Service with externalIPs is admitted.
    assert!(!flags.contains("DenyServiceExternalIPs"), "{flags}");
    kubectl(
        &lab,
        1,
        "create service clusterip outside --tcp=80:80 --dry-run=client -o yaml \
         | sed 's/^spec:/spec:\\n  externalIPs: [192.0.2.10]/' > /root/outside.yaml",
    );
    kubectl(&lab, 1, "create -f /root/outside.yaml");

    // A burst of Events in one namespace: past the bucket (burst 100, 50/s), refused with 429.
    let burst = lab
        .ssh(
            1,
            &format!(
                "{KUBECTL} create namespace burst >/dev/null\n\
                 for i in $(seq 1 400); do printf 'apiVersion: v1\\nkind: Event\\nmetadata: \
                 {{name: burst-%s, namespace: burst}}\\ninvolvedObject: {{kind: ConfigMap, \
                 name: burst, namespace: burst, apiVersion: v1}}\\nreason: Burst\\nmessage: burst\\ntype: Normal\\n\
                 ---\\n' $i; done > /root/burst.yaml\n\
                 {KUBECTL} create -f /root/burst.yaml 2>&1 | grep -c 'limit reached on type Namespace for key burst' || true"
            ),
        )
        .unwrap();
    let refused: usize = String::from_utf8_lossy(&burst.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let stored = kubectl(&lab, 1, "-n burst get events -o name")
        .lines()
        .count();
    eprintln!("NOTE 400 events in a burst: {refused} refused by EventRateLimit, {stored} stored");
    assert!(
        refused > 0 && stored < 400 && refused + stored == 400,
        "EventRateLimit did not limit the burst: {refused} refused, {stored} stored"
    );

    // Everything in place: another `up` changes nothing.
    let again = ilha(&lab, &args);
    let out = text(&again);
    assert!(again.status.success(), "{out}");
    assert!(out.contains("Nothing changed"), "{out}");
}
