//! `manifests/lab.yaml`: the bundle manifest of everything the lab serves. It is static and
//! committed (URLs and checksum-file URLs only, no digests), so Debian rebuilding a package does
//! not change it; this module renders it from the catalog so tests can check the committed copy.
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::{catalog, fsutil, images, mirror_addr, registry_addr};

/// The bundle's version: Kubernetes' plus our own revision of the lab's contents.
pub const VERSION: &str = "1.20.2-lab.1";

/// `manifests/lab.yaml` in this repository.
pub fn path() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .unwrap_or(xtask_dir)
        .join("manifests/lab.yaml")
}

pub fn render() -> String {
    let mirror = mirror_addr();
    let mut out = String::from(
        "# The lab's bundle: every source is the lab's own registry or HTTP mirror on 127.0.0.1,\n\
         # started by `cargo xtask artifacts serve` (see docs/lab-artifacts.md).\n\
         # Generated from xtask/src/artifacts/catalog.rs by `cargo xtask artifacts manifest`;\n\
         # a test checks this file matches.\n",
    );
    let cluster = catalog::lab_cluster();
    out.push_str(&format!(
        "name: lab\nversion: {VERSION}\nplatform: linux/amd64\n\
         cluster:\n  kubernetes_version: {}\n  network: {}\nimages:\n",
        cluster.kubernetes_version, cluster.network
    ));
    for image in images::IMAGES {
        out.push_str(&format!(
            "  - name: {}\n    from: {}/{}\n",
            image.name,
            registry_addr(),
            image.registry_path
        ));
    }
    out.push_str("binaries:\n");
    for binary in catalog::mirrored_binaries() {
        out.push_str(&format!(
            "  - name: {}\n    url: http://{mirror}/{}\n    sha256_url: http://{mirror}/{}\n",
            binary.name,
            binary.url_path(),
            binary.checksum_path()
        ));
    }
    // A local addon, so the e2e suite proves `ilha up` applies a bundle's addons.
    out.push_str("files:\n  - name: addon-lab-check.yaml\n    path: lab/addon-lab-check.yaml\n");
    out
}

/// Whether the committed file matches [`render`].
pub fn is_current(path: &Path) -> Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text == render()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io("read", path)(err)),
    }
}

/// Rewrites the file if it differs; returns whether it changed.
pub fn write(path: &Path) -> Result<bool> {
    if is_current(path)? {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fsutil::create_dir_all(dir)?;
    }
    fsutil::write_atomic(path, render().as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_manifest_is_current_and_points_only_at_loopback() {
        let path = path();
        assert!(
            is_current(&path).unwrap(),
            "{} is stale: run `cargo xtask artifacts manifest`",
            path.display()
        );
        let text = render();
        let sources: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().trim_start_matches("- ").split_once(": "))
            .filter(|(key, _)| ["url", "sha256_url", "from"].contains(key))
            .map(|(_, value)| value)
            .collect();
        assert_eq!(sources.len(), 2 + 2 * 17);
        for source in sources {
            let host = source.trim_start_matches("http://");
            assert!(
                host.starts_with("127.0.0.1:"),
                "{source} points outside 127.0.0.1"
            );
        }
        assert!(text.contains(
            "sha256_url: http://127.0.0.1:5881/release/v1.20.2/bin/linux/amd64/kubelet.sha256\n"
        ));
        assert!(
            text.contains("cluster:\n  kubernetes_version: v1.20.2\n  network: bridge\n"),
            "{text}"
        );
        assert!(
            !text.contains("sha256: "),
            "digests would go stale when Debian rebuilds"
        );
    }
}
