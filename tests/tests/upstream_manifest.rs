//! The upstream manifest, `manifests/kubernetes-v1.37.0.yaml`, built UNCHANGED through
//! `--mirror` / `--registry-mirror` rewrites pointing at the lab's mirror and registry
//! (`cargo xtask artifacts serve`; no lab hosts needed).
//!
//! Stand-ins: the mirror serves, under upstream's exact URL layout, file names, archive members
//! and checksum-file formats (dl.k8s.io's bare-hex `<bin>.sha256`, etcd's `SHA256SUMS` over
//! `etcd-v3.7.0-linux-amd64.tar.gz`, containerd's static archive and its `.sha256sum`, runc's PGP
//! clearsigned `runc.sha256sum`, the CNI `.tgz` and its `.sha256`), the lab's own bytes: the
//! Kubernetes v1.20.2 binaries the lab builds, Debian's etcd 3.4 / containerd / runc / CNI
//! binaries, and Debian's etcd 3.5.16 `etcdutl`, all under 1.37 names. The runc PGP signature is
//! a stand-in block too (the bundler reads the signed lines; it cannot check the signature
//! offline). The registry serves the lab's pause image as `registry.k8s.io/pause:3.10.2` and the
//! lab's busybox image as `registry.k8s.io/coredns/coredns:v1.14.6` (a stand-in: the lab has no
//! CoreDNS). See xtask/src/artifacts/upstream.rs.
//!
//! What is proven: the bundler's URL, checksum-file and archive handling of the real manifest,
//! unchanged, through mirrors; the bundle keeps the canonical names and sources; a tampered
//! checksum file fails the build naming the URLs. Not proven: anything about upstream's bytes.
use std::path::{Path, PathBuf};
use std::process::Command;

use ilha_bundler::build::{BuildSummary, MirrorOptions, build_through};
use ilha_bundler::mirror::{parse_registry_rule, parse_url_rule};
use ilha_e2e::cluster::build_options;
use xtask::artifacts::upstream::Published;
use xtask::artifacts::{self, Served};
use xtask::lab::LabConfig;

fn upstream_manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../manifests/kubernetes-{}.yaml",
        artifacts::upstream::KUBERNETES
    ))
}

fn mirror_options(upstream: &Published, extra_files: &[String]) -> MirrorOptions {
    let files = upstream
        .file_mirrors
        .iter()
        .map(|(from, to)| format!("{from}={to}"))
        .chain(extra_files.iter().cloned())
        .map(|arg| parse_url_rule(&arg).unwrap())
        .collect();
    let registries = upstream
        .registry_mirrors
        .iter()
        .map(|(from, to)| parse_registry_rule(&format!("{from}={to}")).unwrap())
        .collect();
    MirrorOptions { files, registries }
}

async fn build_upstream(
    served: &Served,
    upstream: &Published,
    work: &Path,
    extra_files: &[String],
) -> (ilha_bundler::error::Result<BuildSummary>, PathBuf, PathBuf) {
    let (key, public) = ilha_format::sign::generate_keypair(work, None).unwrap();
    let out = work.join("kubernetes.tar.zst");
    let options = build_options(upstream_manifest(), key, &served.registry.to_string(), &out);
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let result = build_through(&options, &mirror_options(upstream, extra_files), cancel).await;
    (result, out, public)
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_manifest_builds_unchanged_through_mirrors() {
    let config = LabConfig::from_env();
    let (served, upstream) =
        tokio::task::spawn_blocking(move || artifacts::ensure_upstream_served(&config))
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("serving the lab's artifacts: {err:#}"));
    let manifest = ilha_bundler::manifest::load(&upstream_manifest()).unwrap();

    let work = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (result, out, public) = build_upstream(&served, &upstream, work.path(), &[]).await;
    let summary = result.unwrap_or_else(|err| panic!("building the upstream manifest: {err:#}"));
    eprintln!("built in {:.1}s", started.elapsed().as_secs_f64());

    // Every download, checksum file and image came through a mirror, and the summary says which.
    let urls = 2 * manifest.binaries.len();
    assert_eq!(
        summary.mirrored.len(),
        urls + manifest.images.len(),
        "{:#?}",
        summary.mirrored
    );
    for source in &summary.mirrored {
        assert!(
            source
                .fetched
                .starts_with("http://127.0.0.1:5881/upstream/")
                || source
                    .fetched
                    .starts_with("127.0.0.1:5880/registry.k8s.io/"),
            "{source}"
        );
        assert!(source.rule.origin.starts_with("--"), "{source}");
    }

    // The signature, by the stock minisign tool.
    run(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&public)
        .arg("-m")
        .arg(&out)
        .arg("-x")
        .arg(&summary.signature));
    let pubkey = ilha_format::sign::load_public_key(&public).unwrap();
    let index = ilha_format::verify::verify(&out, &pubkey)
        .unwrap_or_else(|err| panic!("verifying the bundle: {err:#}"))
        .index;

    // Canonical names and sources, and each member's digest is its stand-in's.
    assert_eq!(index.name, "kubernetes");
    assert_eq!(index.version, &artifacts::upstream::KUBERNETES[1..]);
    let standins = &upstream.standins;
    let mut names: Vec<&str> = index.binaries.iter().map(|b| b.name.as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = standins.keys().map(String::as_str).collect();
    expected.sort();
    assert_eq!(names, expected, "binaries in the bundle vs the stand-ins");
    for binary in &index.binaries {
        let standin = &standins[&binary.name];
        assert_eq!(
            binary.sha256.to_string(),
            standin.sha256,
            "{}: the bundle's digest vs its stand-in ({})",
            binary.name,
            standin.origin
        );
        assert!(
            binary.source.starts_with("https://dl.k8s.io/")
                || binary.source.starts_with("https://github.com/"),
            "{} records its canonical source, not the mirror: {}",
            binary.name,
            binary.source
        );
    }
    let etcdutl = index.binaries.iter().find(|b| b.name == "etcdutl").unwrap();
    assert!(
        etcdutl
            .source
            .ends_with("/etcd-v3.7.0-linux-amd64.tar.gz#etcd-v3.7.0-linux-amd64/etcdutl"),
        "{}",
        etcdutl.source
    );
    let mut images: Vec<(String, String)> = index
        .images
        .iter()
        .map(|i| (i.name.clone(), i.manifest_digest.clone()))
        .collect();
    images.sort();
    let mut standin_images: Vec<(String, String)> = upstream
        .images
        .iter()
        .map(|(name, image)| (name.clone(), image.layout.manifest_digest.clone()))
        .collect();
    standin_images.sort();
    assert_eq!(images, standin_images, "images vs the stand-ins pushed");
    for image in &index.images {
        assert_eq!(
            image.source, image.name,
            "canonical source of {}",
            image.name
        );
    }

    // The bundle's OCI layout, read by skopeo.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&out)
        .arg("-C")
        .arg(&unpacked));
    for (name, digest) in &images {
        let inspected = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{name}", unpacked.join("images").display())));
        let json: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(json["Digest"].as_str(), Some(digest.as_str()), "{name}");
    }
}

/// A checksum file on the mirror that does not match what it pins fails the build, naming the
/// checksum file's URL and the download's. The tampered copy lives in its own directory, reached
/// by a whole-URL `--mirror` rule (the longest prefix wins), so the shared tree is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_checksum_file_on_the_mirror_fails_the_build() {
    let config = LabConfig::from_env();
    let (served, upstream) =
        tokio::task::spawn_blocking(move || artifacts::ensure_upstream_served(&config))
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("serving the lab's artifacts: {err:#}"));
    let tampered_dir = format!("tampered-{}", std::process::id());
    let tampered_path = served
        .mirror_root
        .join(&tampered_dir)
        .join("kubelet.sha256");
    std::fs::create_dir_all(tampered_path.parent().unwrap()).unwrap();
    let wrong = "0123456789abcdef".repeat(4);
    std::fs::write(&tampered_path, &wrong).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(tampered_path.parent().unwrap().to_owned());

    let canonical = format!(
        "https://dl.k8s.io/release/{}/bin/linux/amd64/kubelet.sha256",
        artifacts::upstream::KUBERNETES
    );
    let tampered_url = served.mirror_url(&format!("{tampered_dir}/kubelet.sha256"));
    let work = tempfile::tempdir().unwrap();
    let (result, out, _) = build_upstream(
        &served,
        &upstream,
        work.path(),
        &[format!("{canonical}={tampered_url}")],
    )
    .await;
    let err = format!(
        "{:#}",
        result.expect_err("a tampered checksum file must fail")
    );
    let kubelet_mirror = served.mirror_url(&format!(
        "upstream/dl.k8s.io/release/{}/bin/linux/amd64/kubelet",
        artifacts::upstream::KUBERNETES
    ));
    for needle in [
        "binary kubelet",
        "sha256 mismatch",
        wrong.as_str(),
        tampered_url.as_str(),
        canonical.as_str(),
        kubelet_mirror.as_str(),
        &upstream.standins["kubelet"].sha256,
        "kubernetes-v1.37.0.yaml:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(!out.exists(), "no bundle is left behind");
}
