//! End-to-end proofs: a manifest with every kind of entry builds a bundle that verifies,
//! extracts into a layout skopeo reads, deduplicates shared layers and is reproducible.

use std::path::Path;
use std::process::Command;

use crate::support::*;

struct Fixture {
    registry: Registry,
    files: FileServer,
    app_digest: String,
    multi_amd64: String,
    multi_arm64: String,
    /// Unique image blobs (manifests + configs + layers) the amd64 bundle must hold.
    unique_blobs_amd64: usize,
}

fn fixture() -> Fixture {
    let registry = Registry::start();
    let shared = random_bytes(1, 300_000);
    let (app_digest, multi_amd64, multi_arm64) = runtime().block_on(async {
        let (app, _) = registry
            .push_image(
                "team/app",
                "1.0",
                "amd64",
                &[shared.clone(), random_bytes(2, 200_000)],
            )
            .await;
        registry
            .push_image(
                "team/tool",
                "2.0",
                "amd64",
                &[shared.clone(), random_bytes(3, 100_000)],
            )
            .await;
        registry
            .push_image("k8s/pause", "3.2", "amd64", &[random_bytes(4, 5_000)])
            .await;
        let amd = registry
            .push_image("multi", "amd64-only", "amd64", &[random_bytes(5, 50_000)])
            .await;
        let arm = registry
            .push_image("multi", "arm64-only", "arm64", &[random_bytes(6, 60_000)])
            .await;
        registry
            .push_index(
                "multi",
                "1",
                &[
                    (amd.0.clone(), amd.1, "amd64"),
                    (arm.0.clone(), arm.1, "arm64"),
                ],
            )
            .await;
        (app, amd.0, arm.0)
    });
    // app: manifest+config+2 layers; tool: manifest+config+1 new layer (shared one counted once);
    // pause: 3; multi amd64: 3; app by digest: nothing new.
    let unique_blobs_amd64 = 4 + 3 + 3 + 3;

    let files = FileServer::start();
    let kubelet = random_bytes(10, 150_000);
    let kubectl = random_bytes(11, 80_000);
    files.add("/bin/kubelet", Route::Body(kubelet.clone()));
    files.add("/bin/kubectl", Route::Body(kubectl.clone()));
    files.add(
        "/bin/SHA256SUMS",
        Route::Body(
            format!(
                "{}  kubelet\n{}  kubectl\n",
                sha256_hex(&kubelet),
                sha256_hex(&kubectl)
            )
            .into_bytes(),
        ),
    );
    files.add(
        "/calico.yaml",
        Route::Body(b"kind: List\nitems: []\n".to_vec()),
    );
    Fixture {
        registry,
        files,
        app_digest,
        multi_amd64,
        multi_arm64,
        unique_blobs_amd64,
    }
}

fn manifest_text(fx: &Fixture) -> String {
    let r = &fx.registry.addr;
    let f = &fx.files;
    format!(
        r#"name: lab
version: 1.20.2-lab.1
images:
  - {r}/team/app:1.0
  - {r}/team/app@{app_digest}
  - {r}/team/tool:2.0
  - {r}/multi:1
  - name: registry.k8s.io/pause:3.2
    from: {r}/k8s/pause:3.2
binaries:
  - name: kubelet
    url: {kubelet}
    sha256_url: {sums}
  - name: kubectl
    url: {kubectl}
    sha256: {kubectl_sha}
files:
  - name: calico.yaml
    url: {calico}
    sha256: {calico_sha}
  - name: notes.txt
    path: ./notes.txt
    sha256: {notes_sha}
"#,
        app_digest = fx.app_digest,
        kubelet = f.url("/bin/kubelet"),
        kubectl = f.url("/bin/kubectl"),
        sums = f.url("/bin/SHA256SUMS"),
        kubectl_sha = sha256_hex(&random_bytes(11, 80_000)),
        calico = f.url("/calico.yaml"),
        calico_sha = sha256_hex(b"kind: List\nitems: []\n"),
        notes_sha = sha256_hex(b"hello\n"),
    )
}

fn extract(bundle: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run_tool(
        Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(bundle)
            .arg("-C")
            .arg(dest),
    );
}

fn skopeo_inspect_digest(layout: &Path, name: &str) -> String {
    let out = run_tool(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{name}", layout.display())),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["Digest"].as_str().unwrap().to_owned()
}

#[test]
fn full_bundle_verifies_extracts_dedups_and_is_reproducible() {
    let fx = fixture();
    let ws = Workspace::new();
    std::fs::write(ws.path().join("notes.txt"), b"hello\n").unwrap();
    let manifest = ws.write_manifest(&manifest_text(&fx));
    let insecure = ["--insecure-registry", fx.registry.addr.as_str()];

    let output = ws.build(&manifest, &insecure);
    expect_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("images: 5"), "{stdout}");

    // Signature and content check by the format crate, and by the stock minisign CLI.
    let public = ilha_format::load_public_key(&ws.public_key()).unwrap();
    let verified = ilha_format::verify(&ws.bundle(), &public).expect("bundle verifies");
    let index = &verified.index;
    assert_eq!(index.name, "lab");
    assert_eq!(index.platform, "linux/amd64");
    assert_eq!(index.images.len(), 5);
    assert_eq!(index.binaries.len(), 2);
    assert_eq!(index.files.len(), 2);
    let multi = index
        .images
        .iter()
        .find(|i| i.name.ends_with("/multi:1"))
        .unwrap();
    assert_eq!(
        multi.manifest_digest, fx.multi_amd64,
        "linux/amd64 picked from the index"
    );
    let kubelet = index.binaries.iter().find(|b| b.name == "kubelet").unwrap();
    assert_eq!(
        kubelet.sha256.to_string(),
        sha256_hex(&random_bytes(10, 150_000))
    );
    let notes = index.files.iter().find(|f| f.name == "notes.txt").unwrap();
    assert_eq!(notes.source, "./notes.txt");
    run_tool(
        Command::new("minisign")
            .arg("-Vm")
            .arg(ws.bundle())
            .arg("-p")
            .arg(ws.public_key()),
    );

    // Extract with plain tar; skopeo reads every image from the layout.
    let extracted = ws.path().join("extracted");
    extract(&ws.bundle(), &extracted);
    let layout = extracted.join("images");
    for image in &index.images {
        assert_eq!(
            skopeo_inspect_digest(&layout, &image.name),
            image.manifest_digest,
            "{}",
            image.name
        );
    }
    assert!(
        index
            .images
            .iter()
            .any(|i| i.name == "registry.k8s.io/pause:3.2")
    );
    let copy_dest = ws.path().join("copied");
    run_tool(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!(
                "oci:{}:registry.k8s.io/pause:3.2",
                layout.display()
            ))
            .arg(format!("dir:{}", copy_dest.display())),
    );
    assert!(copy_dest.join("manifest.json").is_file());

    // The layer shared by app and tool (and everything of app@digest) is stored once.
    let blobs = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, fx.unique_blobs_amd64);
    let shared = sha256_hex(&random_bytes(1, 300_000));
    assert_eq!(
        index
            .entries
            .iter()
            .filter(|e| e.path.ends_with(&shared))
            .count(),
        1
    );
    // Binaries are executable.
    let mode = index
        .entries
        .iter()
        .find(|e| e.path == format!("blobs/sha256/{}", kubelet.sha256))
        .unwrap()
        .mode;
    assert_eq!(mode, 0o755);

    // Same manifest, same sources: byte-identical bundle and signature.
    let first = std::fs::read(ws.bundle()).unwrap();
    let first_sig = std::fs::read(ws.path().join("out/b.tar.zst.minisig")).unwrap();
    std::fs::remove_file(ws.bundle()).unwrap();
    expect_success(&ws.build(&manifest, &insecure));
    assert!(
        first == std::fs::read(ws.bundle()).unwrap(),
        "second build differs"
    );
    assert_eq!(
        first_sig,
        std::fs::read(ws.path().join("out/b.tar.zst.minisig")).unwrap()
    );

    // Only the bundle and its signature are left in the output dir.
    let mut left: Vec<_> = std::fs::read_dir(ws.out_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["b.tar.zst", "b.tar.zst.minisig"]);

    // inspect --json shows the same index.
    let out = bundler()
        .arg("inspect")
        .arg("--json")
        .arg(ws.bundle())
        .output()
        .unwrap();
    expect_success(&out);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown: ilha_format::Index = serde_json::from_value(shown["index"].clone()).unwrap();
    assert_eq!(&shown, index);
    let text = bundler().arg("inspect").arg(ws.bundle()).output().unwrap();
    expect_success(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("registry.k8s.io/pause:3.2"));
}

#[test]
fn platform_flag_picks_arm64_from_an_index() {
    let fx = fixture();
    let ws = Workspace::new();
    let manifest = ws.write_manifest(&format!(
        "name: arm\nversion: '1'\nimages:\n  - {}/multi:1\n",
        fx.registry.addr
    ));
    let output = ws.build(
        &manifest,
        &[
            "--insecure-registry",
            &fx.registry.addr,
            "--platform",
            "linux/arm64",
        ],
    );
    expect_success(&output);
    let public = ilha_format::load_public_key(&ws.public_key()).unwrap();
    let verified = ilha_format::verify(&ws.bundle(), &public).unwrap();
    assert_eq!(verified.index.platform, "linux/arm64");
    assert_eq!(verified.index.images[0].manifest_digest, fx.multi_arm64);
    let extracted = ws.path().join("x");
    extract(&ws.bundle(), &extracted);
    let name = format!("{}/multi:1", fx.registry.addr);
    assert_eq!(
        skopeo_inspect_digest(&extracted.join("images"), &name),
        fx.multi_arm64
    );
}

#[test]
fn encrypted_key_wrong_then_right_password() {
    let files = FileServer::start();
    let data = random_bytes(20, 1000);
    let url = files.add("/f", Route::Body(data.clone()));
    let ws = Workspace::new();
    let keys = ws.path().join("enc");
    let pw = ws.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    expect_success(
        &bundler()
            .args(["keygen", "--out"])
            .arg(&keys)
            .arg("--password-file")
            .arg(&pw)
            .output()
            .unwrap(),
    );
    // Refuses to overwrite.
    expect_failure(
        &bundler()
            .args(["keygen", "--out"])
            .arg(&keys)
            .output()
            .unwrap(),
    );
    let manifest = ws.write_manifest(&format!(
        "name: enc\nversion: '1'\nfiles:\n  - name: f\n    url: {url}\n    sha256: {}\n",
        sha256_hex(&data)
    ));
    let build_with = |password_file: &std::path::Path| {
        bundler()
            .arg("build")
            .arg(&manifest)
            .arg("--key")
            .arg(keys.join("ilha.key"))
            .arg("--password-file")
            .arg(password_file)
            .arg("--out")
            .arg(ws.bundle())
            .output()
            .unwrap()
    };
    let wrong = ws.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let err = expect_failure(&build_with(&wrong));
    assert!(
        err.contains("password") && err.contains("ilha.key"),
        "{err}"
    );
    ws.assert_out_clean();
    expect_success(&build_with(&pw));
    let public = ilha_format::load_public_key(&keys.join("ilha.pub")).unwrap();
    ilha_format::verify(&ws.bundle(), &public).unwrap();
}
