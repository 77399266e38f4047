//! The bundle every end-to-end suite uses: `manifests/lab.yaml` built by `ilha-bundler` from the
//! lab's own registry and mirror, then verified, must hold exactly what the lab built.
use std::path::PathBuf;

use ilha_bundler::build::build;
use ilha_e2e::cluster::build_options;
use xtask::artifacts;
use xtask::lab::LabConfig;

fn lab_manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/lab.yaml")
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_manifest_builds_a_bundle_holding_exactly_the_lab_artifacts() {
    let config = LabConfig::from_env();
    let served = tokio::task::spawn_blocking(move || artifacts::ensure_served(&config))
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("serving the lab's artifacts: {err:#}"));

    let work = tempfile::tempdir().unwrap();
    let (key, public) = ilha_format::sign::generate_keypair(work.path(), None).unwrap();
    let out = work.path().join("lab.tar.zst");
    let options = build_options(lab_manifest(), key, &served.registry.to_string(), &out);
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let summary = build(&options, cancel)
        .await
        .unwrap_or_else(|err| panic!("ilha-bundler build manifests/lab.yaml: {err:#}"));
    assert_eq!(summary.bundle, out);

    let pubkey = ilha_format::sign::load_public_key(&public).unwrap();
    let verified = ilha_format::verify::verify(&out, &pubkey)
        .unwrap_or_else(|err| panic!("verifying the lab bundle: {err:#}"));
    let index = verified.index;
    assert_eq!(index.name, "lab");

    // Every binary the lab built is in the bundle with the digest it has in the cache, and
    // nothing else is.
    let mut bundled: Vec<(String, String)> = index
        .binaries
        .iter()
        .map(|b| (b.name.clone(), b.sha256.to_string()))
        .collect();
    let mut built: Vec<(String, String)> = served
        .artifacts
        .binaries
        .iter()
        .map(|b| (b.name.clone(), b.sha256.clone()))
        .collect();
    bundled.sort();
    built.sort();
    assert_eq!(bundled, built, "binaries in the bundle vs the lab's build");

    // Images keep their canonical names and the exact manifests the lab built.
    let mut bundled: Vec<(String, String)> = index
        .images
        .iter()
        .map(|i| (i.name.clone(), i.manifest_digest.clone()))
        .collect();
    let mut built: Vec<(String, String)> = served
        .artifacts
        .images
        .iter()
        .map(|i| (i.name.clone(), i.layout.manifest_digest.clone()))
        .collect();
    bundled.sort();
    built.sort();
    assert_eq!(bundled, built, "images in the bundle vs the lab's build");
    for image in &index.images {
        assert!(
            image.source.starts_with("127.0.0.1:"),
            "{} was pulled from {}, not the lab registry",
            image.name,
            image.source
        );
    }
}
