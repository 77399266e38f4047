//! The bundle as the install uses it: verified (signature, then every entry) and extracted into
//! the state directory on every run, then checked against the cluster requirement list. Nothing
//! on any host changes before this has passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ilha_format::Index;
use ilha_format::cluster::{ImagePurpose, Requirements, missing, requirements};
use ilha_format::verify::{FileSignatureCheck, extract_with};

use crate::config::KubeVersion;

/// A verified, extracted bundle that holds everything its cluster needs.
#[derive(Debug)]
pub struct InstallBundle {
    pub source: PathBuf,
    pub dir: PathBuf,
    pub index: Index,
    pub version: KubeVersion,
    pub requirements: Requirements,
    pub verify_time: Duration,
    pub summary: String,
}

impl InstallBundle {
    /// Verifies `bundle` with `pubkey` and extracts it to `<state_dir>/bundle`, replacing what an
    /// earlier run left there only once the new copy is complete.
    pub fn open(bundle: &Path, pubkey: &Path, state_dir: &Path) -> anyhow::Result<InstallBundle> {
        let key = ilha_format::load_public_key(pubkey)
            .with_context(|| format!("loading the public key {}", pubkey.display()))?;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
        let dest = state_dir.join("bundle");
        let incoming = state_dir.join("bundle.new");
        remove_dir_if_exists(&incoming)?;
        let verified = extract_with(bundle, &key, &incoming, FileSignatureCheck::KeyIdOnly)
            .with_context(|| format!("the bundle {} failed verification", bundle.display()))?;
        remove_dir_if_exists(&dest)?;
        std::fs::rename(&incoming, &dest)
            .with_context(|| format!("moving the extracted bundle to {}", dest.display()))?;

        let index = verified.index.clone();
        let Some(spec) = index.cluster.clone() else {
            bail!(
                "{}: this bundle declares no cluster (its manifest has no `cluster:` section), so \
                 ilha cannot tell which Kubernetes it is for",
                bundle.display()
            );
        };
        let requirements = requirements(&spec)
            .with_context(|| format!("{}: the bundle's cluster section", bundle.display()))?;
        let lacking = missing(&spec, &index);
        if !lacking.is_empty() {
            let list: Vec<String> = lacking.iter().map(|m| format!("  - {m}")).collect();
            bail!(
                "{}: the bundle lacks what a Kubernetes {} cluster needs:\n{}",
                bundle.display(),
                spec.kubernetes_version,
                list.join("\n")
            );
        }
        let version: KubeVersion = spec
            .kubernetes_version
            .parse()
            .with_context(|| format!("{}: the bundle's Kubernetes version", bundle.display()))?;
        Ok(InstallBundle {
            source: bundle.to_path_buf(),
            dir: dest,
            summary: verified.summary_line(),
            verify_time: verified.elapsed,
            index,
            version,
            requirements,
        })
    }

    /// The extracted binary called `name`, and its sha256.
    pub fn binary(&self, name: &str) -> anyhow::Result<(PathBuf, String)> {
        let record = self
            .index
            .binaries
            .iter()
            .find(|b| b.name == name)
            .with_context(|| format!("the bundle has no binary `{name}`"))?;
        Ok((
            self.dir.join(record.bundle_path()),
            record.sha256.to_string(),
        ))
    }

    /// The sandbox image reference containerd must use.
    pub fn pause_image(&self) -> String {
        self.requirements.image(ImagePurpose::Pause).to_string()
    }

    /// The extracted OCI image layout.
    pub fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// Data files named `addon-*.yaml` (a network plugin, CoreDNS...): applied with
    /// `kubectl apply` once the API is up, in name order.
    pub fn addons(&self) -> Vec<(String, PathBuf)> {
        let mut addons: Vec<(String, PathBuf)> = self
            .index
            .files
            .iter()
            .filter(|f| f.name.starts_with("addon-") && f.name.ends_with(".yaml"))
            .map(|f| (f.name.clone(), self.dir.join(f.bundle_path())))
            .collect();
        addons.sort();
        addons
    }
}

fn remove_dir_if_exists(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
