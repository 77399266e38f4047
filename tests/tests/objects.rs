//! `ilha backup`'s object dump and `ilha restore --objects`, through the `ilha` library, against
//! real kube-apiserver v1.20.2 + etcd fixtures on loopback (no lab, no controllers).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use ilha::backup::objects::{
    DumpOptions, NAMESPACES_FILE, NODES_FILE, client_from_kubeconfig, dump,
};
use ilha::restore::objects::{NodeOutcome, Outcome, RestoreOptions, restore};
use ilha_e2e::apiserver::ApiServer;
use serde_json::{Value, json};

/// The two tests start several API servers each; one at a time keeps the timings honest on a
/// small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// ConfigMap values YAML 1.1 (kubectl) would misread if written plainly, and block-scalar traps.
fn tricky_data() -> Value {
    json!({
        "on": "on", "yes": "yes", "y": "y", "octal": "0755", "float": "1e3", "time": "12:30",
        "tilde": "~", "null": "null", "empty": "", "leading": "  indented", "tab": "a\tb",
        "crlf": "one\r\ntwo", "trailing": "line with trailing spaces   \nnext\n",
        "script": "#!/bin/sh\nset -eu\necho \"hello: world\" # not a comment\n",
        "unicode": "ação ✓",
        "long": "a long line with spaces that goes on and on well past the eighty characters where folding would start",
    })
}

/// Everything the dump must carry, and what it must leave out (named `excluded-*` or made the
/// way the cluster makes its own).
fn seed_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "payments"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tools"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"disk": "ssd", "zone": "a"},
            "annotations": {"example.com/rack": "r1"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"zone": "b"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "shop",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}, "data": tricky_data()}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tool-config", "namespace": "tools"},
            "data": {"level": "debug"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": "shop"},
            "data": {"ca.crt": "old cluster CA"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "excluded-owned", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "uid": "6f9f4c1e-0000-4000-8000-000000000001", "controller": true}]}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password", "namespace": "shop"},
            "type": "Opaque", "stringData": {"password": "s3cret"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "excluded-token", "namespace": "shop",
            "annotations": {"kubernetes.io/service-account.name": "builder"}},
            "type": "kubernetes.io/service-account-token", "data": {"token": "b2xk"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": "shop"},
            "secrets": [{"name": "excluded-token"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": "shop"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "shop"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "shop-auditor"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "shop-auditor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shop-auditor"},
            "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "shop"}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.19", "ports": [{"containerPort": 80}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "manual"},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-data"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                "hostPath": {"path": "/srv/data"}, "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data",
                    "uid": "0ld0ld00-0000-4000-8000-000000000002"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-orphan"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                "hostPath": {"path": "/srv/orphan"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "tools", "name": "gone"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "shop",
            "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "pv-data",
                "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "shop"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "migrate", "image": "busybox", "command": ["true"]}]}}}}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}}}}}}]}}),
    ]
}

fn widget() -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "shop"},
        "spec": {"size": 3, "color": "blue"}})
}

fn list(items: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn get_json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let text = server.kubectl_ok(&all, None);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {all:?}: {e}: {text}"))
}

fn seed(server: &ApiServer) {
    server.kubectl_ok(&["create", "-f", "-"], Some(&list(&seed_objects())));
    server.kubectl_ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/widgets.example.com",
        ],
        None,
    );
    server.kubectl_ok(&["create", "-f", "-"], Some(&list(&[widget()])));
}

fn dump_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in dump_files(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_then_restore_into_new_clusters() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let source = ApiServer::start();
    seed(&source);

    // Dump.
    let client = client_from_kubeconfig(source.kubeconfig()).await.unwrap();
    let dir = tmp.path().join("dump");
    let report = dump(&client, &dir, &DumpOptions::default()).await.unwrap();
    let counts: BTreeMap<&str, usize> = report
        .counts
        .iter()
        .map(|(l, n)| (l.as_str(), *n))
        .collect();
    assert_eq!(counts["namespaces"], 3, "shop, tools, default: {counts:?}");
    assert_eq!(counts["nodes"], 2);
    assert_eq!(
        counts["configmaps"], 2,
        "app-config and tool-config only: {counts:?}"
    );
    assert_eq!(counts["secrets"], 1, "{counts:?}");
    assert_eq!(counts["services"], 2, "not default/kubernetes: {counts:?}");
    assert_eq!(
        counts["clusterroles.rbac.authorization.k8s.io"], 1,
        "no system roles: {counts:?}"
    );
    assert_eq!(
        counts["clusterrolebindings.rbac.authorization.k8s.io"], 1,
        "{counts:?}"
    );
    assert_eq!(counts["persistentvolumes"], 2);
    assert_eq!(counts["widgets.example.com"], 1);
    assert!(
        !counts.contains_key("priorityclasses.scheduling.k8s.io"),
        "{counts:?}"
    );
    assert!(
        !counts.contains_key("apiservices.apiregistration.k8s.io"),
        "{counts:?}"
    );
    assert!(
        !counts.contains_key("flowschemas.flowcontrol.apiserver.k8s.io"),
        "{counts:?}"
    );
    assert_eq!(report.total, counts.values().sum::<usize>());

    let files = dump_files(&dir);
    let expected_order = [
        NAMESPACES_FILE,
        NODES_FILE,
        "002-customresourcedefinitions.apiextensions.k8s.io.yaml",
        "003-serviceaccounts.yaml",
        "004-clusterroles.rbac.authorization.k8s.io.yaml",
        "005-roles.rbac.authorization.k8s.io.yaml",
        "006-clusterrolebindings.rbac.authorization.k8s.io.yaml",
        "007-rolebindings.rbac.authorization.k8s.io.yaml",
        "008-storageclasses.storage.k8s.io.yaml",
        "009-configmaps.yaml",
        "010-persistentvolumes.yaml",
        "011-persistentvolumeclaims.yaml",
        "012-secrets.yaml",
        "013-services.yaml",
        "014-deployments.apps.yaml",
        "015-jobs.batch.yaml",
        "016-widgets.example.com.yaml",
    ];
    assert_eq!(files, expected_order);
    let all_text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    for absent in [
        "kube-system",
        "kube-root-ca.crt",
        "excluded-",
        "system:",
        "uid:",
        "resourceVersion:",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "status:",
        "last-applied-configuration",
        "bind-completed",
        "controller-uid",
        "0ld0ld00",
    ] {
        assert!(
            !all_text.contains(absent),
            "the dump holds {absent:?}:\n{all_text}"
        );
    }
    let nodes_text = std::fs::read_to_string(dir.join(NODES_FILE)).unwrap();
    assert!(
        nodes_text.starts_with("# ") && nodes_text.contains("ilha restore --objects"),
        "{nodes_text}"
    );
    let services = std::fs::read_to_string(dir.join("013-services.yaml")).unwrap();
    assert_eq!(
        services.matches("clusterIP").count(),
        2,
        "headless keeps clusterIP(s): None only:\n{services}"
    );
    assert!(services.contains("nodePort: 30080"), "{services}");

    // kubectl accepts every file, and reads the values back as they were.
    for file in &files {
        source.kubectl_ok(
            &[
                "apply",
                "--dry-run=server",
                "-f",
                dir.join(file).to_str().unwrap(),
            ],
            None,
        );
    }
    source.kubectl_ok(
        &[
            "apply",
            "--dry-run=server",
            "-R",
            "-f",
            dir.to_str().unwrap(),
        ],
        None,
    );
    // One JSON object per document.
    let printed = source.kubectl_ok(
        &[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            dir.join("009-configmaps.yaml").to_str().unwrap(),
        ],
        None,
    );
    let parsed: Vec<Value> = serde_json::Deserializer::from_str(&printed)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let app_config = parsed
        .iter()
        .find(|i| i["metadata"]["name"] == "app-config")
        .expect("app-config in kubectl's reading");
    assert_eq!(app_config["data"], tricky_data());

    // Restore into a fresh cluster with one of the two nodes.
    let target = ApiServer::start();
    target.kubectl_ok(
        &["create", "-f", "-"],
        Some(&list(&[json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "old"}}})])),
    );
    let target_client = client_from_kubeconfig(target.kubeconfig()).await.unwrap();
    let started = Instant::now();
    let restored = restore(&target_client, &dir, &RestoreOptions::default())
        .await
        .unwrap();
    eprintln!(
        "restore of {} objects: {:.2} s\n{restored}",
        report.total,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(restored.failures(), 0, "{restored}");
    assert!(
        restored
            .objects
            .iter()
            .all(|o| o.outcome == Outcome::Created || o.object == "default"),
        "{restored}"
    );
    assert_eq!(
        restored.objects.len(),
        report.total - 2,
        "every object but the nodes"
    );
    let node_outcomes: Vec<(&str, &NodeOutcome)> = restored
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), &n.outcome))
        .collect();
    assert_eq!(
        node_outcomes,
        [("n1", &NodeOutcome::Patched), ("n2", &NodeOutcome::Missing)]
    );
    assert_eq!(restored.volumes_repointed, ["pv-data -> shop/data"]);
    assert_eq!(restored.volumes_without_claim, ["pv-orphan -> tools/gone"]);
    let text = restored.to_string();
    assert!(text.contains("n2"), "{text}");

    let volume = get_json(&target, &["pv", "pv-data"]);
    let claim = get_json(&target, &["pvc", "-n", "shop", "data"]);
    assert_eq!(volume["spec"]["claimRef"]["uid"], claim["metadata"]["uid"]);
    assert_eq!(claim["spec"]["volumeName"], "pv-data");
    assert_eq!(
        get_json(&target, &["configmap", "-n", "shop", "app-config"])["data"],
        tricky_data()
    );
    assert_eq!(
        get_json(&target, &["widget", "-n", "shop", "w1"])["spec"],
        json!({"size": 3, "color": "blue"})
    );
    assert_eq!(
        get_json(&target, &["deployment", "-n", "shop", "web"])["spec"]["replicas"],
        2
    );
    assert_eq!(
        get_json(&target, &["service", "-n", "shop", "db"])["spec"]["clusterIP"],
        "None"
    );
    assert_eq!(
        get_json(&target, &["service", "-n", "shop", "web"])["spec"]["ports"][0]["nodePort"],
        30080
    );
    assert!(get_json(&target, &["job", "-n", "shop", "migrate"])["spec"]["selector"]["matchLabels"]["controller-uid"].is_string());
    let n1 = get_json(&target, &["node", "n1"]);
    assert_eq!(
        n1["metadata"]["labels"],
        json!({"disk": "ssd", "zone": "a"})
    );
    assert_eq!(n1["metadata"]["annotations"]["example.com/rack"], "r1");
    // Merged with the cluster's own (the API server taints new nodes not-ready).
    let taints = n1["spec"]["taints"].as_array().unwrap();
    assert!(
        taints.contains(&json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"})),
        "{taints:?}"
    );
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready"),
        "{taints:?}"
    );
    assert!(
        target
            .kubectl()
            .args(["get", "node", "n2"])
            .output()
            .map(|o| !o.status.success())
            .unwrap()
    );

    // Again: nothing changes.
    let again = restore(&target_client, &dir, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(again.failures(), 0, "{again}");
    let changed: Vec<_> = again
        .objects
        .iter()
        .filter(|o| o.outcome != Outcome::Unchanged)
        .collect();
    assert!(
        changed.is_empty(),
        "second restore changed {changed:?}\n{again}"
    );
    assert_eq!(again.nodes[0].outcome, NodeOutcome::Unchanged);
    assert!(again.volumes_repointed.is_empty(), "{again}");

    // A dry run into a third cluster writes nothing and says what it would do.
    let third = ApiServer::start();
    third.kubectl_ok(
        &["create", "-f", "-"],
        Some(&list(&[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "shop"},
                "data": {"on": "off", "extra": "kept"}}),
        ])),
    );
    let third_client = client_from_kubeconfig(third.kubeconfig()).await.unwrap();
    let (keys_before, revision_before) = (third.etcd_keys(), third.etcd_revision());
    let dry = restore(&third_client, &dir, &RestoreOptions { dry_run: true })
        .await
        .unwrap();
    assert_eq!(third.etcd_keys(), keys_before);
    assert_eq!(
        third.etcd_revision(),
        revision_before,
        "a dry run wrote to etcd"
    );
    assert_eq!(dry.failures(), 0, "{dry}");
    let text = dry.to_string();
    eprintln!("{text}");
    let diff_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("    -") || l.starts_with("    +"))
        .collect();
    assert!(
        diff_lines
            .iter()
            .any(|l| l.starts_with("    -") && l.contains("off")),
        "{text}"
    );
    assert!(
        diff_lines
            .iter()
            .any(|l| l.starts_with("    +") && l.contains("1e3")),
        "{text}"
    );
    for line in [
        "create namespaces tools",
        "create configmaps tools/tool-config",
        "create persistentvolumes pv-data",
        "create deployments.apps shop/web",
        "create widgets.example.com shop/w1",
        "update configmaps shop/app-config",
        "update namespaces shop",
        "unchanged namespaces default",
        "re-point persistentvolume pv-data -> shop/data",
    ] {
        assert!(text.contains(line), "no {line:?} in the dry run:\n{text}");
    }

    // A malformed file: an error naming it, before anything is written.
    let broken = tmp.path().join("broken");
    copy_dir(&dir, &broken);
    std::fs::write(
        broken.join("009-configmaps.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [oops\n",
    )
    .unwrap();
    let err = restore(&third_client, &broken, &RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("009-configmaps.yaml"),
        "{err:#}"
    );
    assert_eq!(third.etcd_keys(), keys_before);

    // An object the API server refuses: named with its file, the others restored.
    let refused = tmp.path().join("refused");
    copy_dir(&dir, &refused);
    std::fs::write(
        refused.join("900-configmaps.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\n  namespace: shop\n",
    )
    .unwrap();
    let partial = restore(&third_client, &refused, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(partial.failures(), 1, "{partial}");
    let text = partial.to_string();
    assert!(
        text.contains("900-configmaps.yaml: shop/Not_A_Valid_Name: "),
        "{text}"
    );
    assert_eq!(
        get_json(&third, &["configmap", "-n", "tools", "tool-config"])["data"]["level"],
        "debug"
    );
}

/// `objects` as a multi-document YAML file (JSON is YAML).
fn write_documents(path: &Path, objects: impl Iterator<Item = Value>) {
    let text: Vec<String> = objects.map(|o| o.to_string()).collect();
    std::fs::write(path, text.join("\n---\n")).unwrap();
}

/// 10,000 ConfigMaps in 10 namespaces, created concurrently by `ilha restore` from a hand-made
/// dump (so restore is timed too), then dumped: the figure the backup's target (≤ 10 s) is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_of_ten_thousand_objects() {
    const NAMESPACES: usize = 10;
    const PER_NAMESPACE: usize = 1000;
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let made = tmp.path().join("made");
    std::fs::create_dir_all(&made).unwrap();
    write_documents(
        &made.join("000-namespaces.yaml"),
        (0..NAMESPACES).map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("load-{n}")}})),
    );
    write_documents(
        &made.join("002-configmaps.yaml"),
        (0..NAMESPACES).flat_map(|n| {
            (0..PER_NAMESPACE).map(move |i| {
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:04}"), "namespace": format!("load-{n}"),
                        "labels": {"app": "load", "shard": n.to_string()}},
                    "data": {"index": i.to_string(), "settings": "key=value\nother=thing\n"}})
            })
        }),
    );

    let server = ApiServer::start();
    let client = client_from_kubeconfig(server.kubeconfig()).await.unwrap();
    let started = Instant::now();
    let created = restore(&client, &made, &RestoreOptions::default())
        .await
        .unwrap();
    let restore_took = started.elapsed();
    assert_eq!(created.failures(), 0, "{created}");
    let created_count = created
        .objects
        .iter()
        .filter(|o| o.outcome == Outcome::Created)
        .count();
    assert_eq!(created_count, NAMESPACES * (PER_NAMESPACE + 1));

    let dir = tmp.path().join("dump");
    let started = Instant::now();
    let report = dump(&client, &dir, &DumpOptions::default()).await.unwrap();
    let dump_took = started.elapsed();
    let configmaps = report
        .counts
        .iter()
        .find(|(l, _)| l == "configmaps")
        .map(|(_, n)| *n);
    assert_eq!(configmaps, Some(NAMESPACES * PER_NAMESPACE));
    let bytes: u64 = dump_files(&dir)
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    eprintln!(
        "TIMING restore: {} objects created in {:.2} s",
        created.objects.len(),
        restore_took.as_secs_f64()
    );
    eprintln!(
        "TIMING dump: {} objects ({} KiB of YAML) dumped in {:.2} s",
        report.total,
        bytes / 1024,
        dump_took.as_secs_f64()
    );
}
