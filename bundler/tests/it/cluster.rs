//! `cluster:`: a manifest declaring a cluster must carry everything `ilha_format::cluster`
//! requires, checked before any download; the spec ends up in the signed index.

use ilha_format::cluster::{self, ClusterSpec, Network};

use crate::support::*;

const CLUSTER: &str = "cluster:\n  kubernetes_version: v1.20.2\n  network: bridge\n";

#[test]
fn an_incomplete_cluster_is_refused_before_downloading_with_everything_it_lacks() {
    // Nothing listens here: any download attempt would fail with a connection error instead.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let ws = Workspace::new();
    let manifest = ws.write_manifest(&format!(
        "name: c\nversion: '1'\n{CLUSTER}binaries:\n  - name: kubelet\n    url: {dead}/kubelet\n    sha256: {}\n  - name: etcd\n    url: {dead}/etcd\n    sha256: {}\n",
        "1".repeat(64),
        "2".repeat(64)
    ));
    let err = expect_failure(&ws.build(&manifest, &[]));
    assert!(
        err.contains("manifest.yaml:4:")
            && err.contains("cluster v1.20.2 (bridge) needs 15 more item(s)"),
        "{err}"
    );
    for needle in [
        "binary `etcdctl` (needed on etcd hosts)",
        "binary `kube-apiserver` (needed on control-plane hosts)",
        "binary `kubectl` (needed on control-plane hosts and every node)",
        "binary `portmap` (needed on every node)",
        "image `k8s.gcr.io/pause:3.2`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(
        !err.contains("binary `kubelet`") && !err.contains("binary `etcd` "),
        "{err}"
    );
    assert!(
        !err.to_lowercase().contains("connect"),
        "a download was attempted: {err}"
    );
    ws.assert_out_clean();
}

#[test]
fn a_complete_cluster_is_recorded_in_the_signed_index() {
    let registry = Registry::start();
    runtime().block_on(async {
        registry
            .push_image("k8s/pause", "3.2", "amd64", &[random_bytes(50, 4_000)])
            .await;
    });
    let files = FileServer::start();
    let spec = ClusterSpec {
        kubernetes_version: "v1.20.2".into(),
        network: Network::Bridge,
    };
    let requirements = cluster::requirements(&spec).unwrap();
    let mut text = format!(
        "name: c\nversion: '1'\n{CLUSTER}images:\n  - name: k8s.gcr.io/pause:3.2\n    from: {}/k8s/pause:3.2\nbinaries:\n",
        registry.addr
    );
    for (seed, binary) in requirements.binaries.iter().enumerate() {
        let data = random_bytes(100 + seed as u64, 2_000 + seed);
        let url = files.add(&format!("/{}", binary.name), Route::Body(data.clone()));
        text.push_str(&format!(
            "  - name: {}\n    url: {url}\n    sha256: {}\n",
            binary.name,
            sha256_hex(&data)
        ));
    }
    let ws = Workspace::new();
    let manifest = ws.write_manifest(&text);
    expect_success(&ws.build(&manifest, &["--insecure-registry", &registry.addr]));

    let pubkey = ilha_format::load_public_key(&ws.public_key()).unwrap();
    let index = ilha_format::verify(&ws.bundle(), &pubkey).unwrap().index;
    assert_eq!(index.cluster.as_ref(), Some(&spec));
    assert!(cluster::missing(&spec, &index).is_empty());
    // What the installer will re-check: dropping a binary from the index is noticed.
    let mut tampered = index.clone();
    tampered.binaries.retain(|b| b.name != "runc");
    let found: Vec<String> = cluster::missing(&spec, &tampered)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found, ["binary `runc` (needed on every node)"]);
}

#[test]
fn bundles_without_a_cluster_have_no_cluster_field() {
    let files = FileServer::start();
    let data = random_bytes(60, 1_000);
    let url = files.add("/tool", Route::Body(data.clone()));
    let ws = Workspace::new();
    let manifest = ws.write_manifest(&format!(
        "name: plain\nversion: '1'\nbinaries:\n  - name: tool\n    url: {url}\n    sha256: {}\n",
        sha256_hex(&data)
    ));
    expect_success(&ws.build(&manifest, &[]));
    let index = ilha_format::read_index(&ws.bundle()).unwrap();
    assert_eq!(index.cluster, None);
    let out = bundler()
        .arg("inspect")
        .arg("--json")
        .arg(ws.bundle())
        .output()
        .unwrap();
    expect_success(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"cluster\""));
}
