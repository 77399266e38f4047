//! `--mirror` / `mirrors:` through the binary: sources fetched from the mirror, the canonical
//! URL kept in the bundle, what the summary prints, and bad or unused rules refused.

use crate::support::*;

/// Upstream is a host nobody listens on; the file server plays the mirror.
const UPSTREAM: &str = "https://upstream.invalid";

fn manifest(ws: &Workspace, mirrors: &str) -> std::path::PathBuf {
    ws.write_manifest(&format!(
        "name: mirrored\nversion: '1'\nbinaries:\n  - name: kubelet\n    url: {UPSTREAM}/release/kubelet\n    sha256_url: {UPSTREAM}/release/kubelet.sha256\n{mirrors}"
    ))
}

#[test]
fn command_line_mirror_wins_and_the_bundle_keeps_the_canonical_url() {
    let files = FileServer::start();
    let data = random_bytes(60, 30_000);
    files.add("/cli/release/kubelet", Route::Body(data.clone()));
    files.add(
        "/cli/release/kubelet.sha256",
        Route::Body(sha256_hex(&data).into_bytes()),
    );
    let ws = Workspace::new();
    // The manifest's rule points at a dead mirror: the command line's must win.
    let manifest = manifest(
        &ws,
        &format!(
            "mirrors:\n  files:\n    - {{from: '{UPSTREAM}', to: 'http://127.0.0.1:9/dead'}}\n"
        ),
    );
    let mirror = format!("{UPSTREAM}={}", files.url("/cli"));
    let output = ws.build(&manifest, &["--mirror", &mirror]);
    expect_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "through mirrors (2 sources):",
        &format!(
            "binary kubelet: {UPSTREAM}/release/kubelet from {}",
            files.url("/cli/release/kubelet")
        ),
        "binary kubelet (checksum file):",
        "(--mirror)",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in: {stdout}");
    }
    assert_eq!(files.hits("/cli/release/kubelet"), 1);
    let index = ilha_format::read_index(&ws.bundle()).unwrap();
    assert_eq!(
        index.binaries[0].source,
        format!("{UPSTREAM}/release/kubelet")
    );
    assert_eq!(index.binaries[0].sha256.to_string(), sha256_hex(&data));
}

#[test]
fn bad_and_unused_rules_are_refused_before_any_download() {
    let ws = Workspace::new();
    let manifest_path = manifest(&ws, "");
    let err = expect_failure(&ws.build(&manifest_path, &["--mirror", "https://upstream.invalid"]));
    assert!(err.contains("expected FROM=TO"), "{err}");
    let err = expect_failure(&ws.build(
        &manifest_path,
        &["--mirror", "upstream.invalid=http://127.0.0.1:9"],
    ));
    assert!(err.contains("is not a URL"), "{err}");
    let err = expect_failure(&ws.build(
        &manifest_path,
        &["--registry-mirror", "registry.k8s.io=https://nexus.example"],
    ));
    assert!(err.contains("without a scheme"), "{err}");

    // A rule that matches nothing, from the command line and from the manifest (with its line).
    let manifest_path = manifest(
        &ws,
        "mirrors:\n  registries:\n    - {from: quay.io, to: 'nexus.example:8443/quay'}\n",
    );
    let err = expect_failure(&ws.build(
        &manifest_path,
        &[
            "--mirror",
            "https://dl.k8s.io=http://127.0.0.1:9/k8s",
            "--mirror",
            &format!("{UPSTREAM}=http://127.0.0.1:9/x"),
        ],
    ));
    for needle in [
        "2 mirror rule(s) match no source",
        "https://dl.k8s.io => http://127.0.0.1:9/k8s (--mirror)",
        "quay.io => nexus.example:8443/quay (",
        "manifest.yaml:9:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    ws.assert_out_clean();
}
