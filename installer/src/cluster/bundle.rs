//! The bundle as the install uses it: verified (signature, then every entry) and extracted into
//! the state directory on every run, then checked against the cluster requirement list. Nothing
//! on any host changes before this has passed.

use std::path::{Component, Path, PathBuf};
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
        if let Err(err) = check_addon_names(&verified.index) {
            remove_dir_if_exists(&incoming)?;
            return Err(err.context(format!("the bundle {}", bundle.display())));
        }
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

    /// Whether the bundle carries a binary called `name`.
    pub fn has_binary(&self, name: &str) -> bool {
        self.index.binaries.iter().any(|b| b.name == name)
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
    /// `kubectl apply` once the API is up, in name order. Their names were checked by
    /// [`check_addon_names`] when the bundle was opened; one that is not a single file name is
    /// never returned.
    pub fn addons(&self) -> Vec<(String, PathBuf)> {
        let mut addons: Vec<(String, PathBuf)> = self
            .index
            .files
            .iter()
            .filter(|f| is_addon(&f.name) && addon_name_problem(&f.name).is_none())
            .map(|f| (f.name.clone(), self.dir.join(f.bundle_path())))
            .collect();
        addons.sort();
        addons
    }
}

fn is_addon(name: &str) -> bool {
    name.starts_with("addon-") && name.ends_with(".yaml")
}

/// Why an addon's name could leave ilha's directory on the host, where it is uploaded under that
/// name (`/var/lib/ilha/<name>`): it must be one plain file name.
fn addon_name_problem(name: &str) -> Option<String> {
    if let Err(reason) = ilha_format::names::check_artifact_name(name) {
        return Some(reason);
    }
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(c)), None) if c == name => None,
        _ => Some("it is not a single file name".into()),
    }
}

/// Every `addon-*.yaml` file of the bundle must be one file name inside ilha's directory.
/// `Index::validate` already refuses such names; this does not rely on it.
pub fn check_addon_names(index: &Index) -> anyhow::Result<()> {
    for file in index.files.iter().filter(|f| is_addon(&f.name)) {
        if let Some(reason) = addon_name_problem(&file.name) {
            bail!(
                "file {:?}: {reason}; an addon-*.yaml file is uploaded under its own name into \
                 ilha's directory on the host, so its name must be one plain file name: rebuild \
                 the bundle with that file renamed",
                file.name
            );
        }
    }
    Ok(())
}

fn remove_dir_if_exists(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ilha_format::index::{blob_path, image_blob_path};
    use ilha_format::{ArtifactRecord, Entry, ImageRecord, KeyPair, Sha256};

    const TOOL: &[u8] = b"#!/bin/sh\necho hi\n";
    const MANIFEST: &[u8] = b"{}";

    fn artifact(name: &str) -> ArtifactRecord {
        ArtifactRecord {
            name: name.into(),
            sha256: Sha256::of(TOOL),
            size: TOOL.len() as u64,
            source: "./tool".into(),
        }
    }

    /// An index with a binary, an addon file and an image, all valid.
    fn index() -> Index {
        let (t, m) = (Sha256::of(TOOL), Sha256::of(MANIFEST));
        let mut index = Index::new("crafted", "1", "linux/amd64");
        index.entries = vec![
            Entry {
                path: blob_path(&t),
                sha256: t,
                size: TOOL.len() as u64,
                mode: 0o755,
            },
            Entry {
                path: image_blob_path(&m),
                sha256: m,
                size: MANIFEST.len() as u64,
                mode: 0o644,
            },
        ];
        index.binaries.push(artifact("kubelet"));
        index.files.push(artifact("addon-x.yaml"));
        index.images.push(ImageRecord {
            name: "registry.k8s.io/pause:3.2".into(),
            source: "registry.k8s.io/pause:3.2".into(),
            manifest_digest: m.to_oci(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 2,
            layers: 0,
        });
        index
    }

    /// A bundle holding `index` signed by `keys` (whatever the index says: the packer would
    /// refuse to write an invalid one), as a careless or compromised signer could make it.
    fn signed_bundle(keys: &KeyPair, index: &Index, out: &Path) {
        let index_bytes = index.to_json_bytes();
        let sig = keys
            .secret
            .sign_bytes(&index_bytes, &index.trusted_comment())
            .to_minisig_string();
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data).unwrap();
        };
        add("ilha-index.json", &index_bytes, 0o644);
        add("ilha-index.json.minisig", sig.as_bytes(), 0o644);
        add(&blob_path(&Sha256::of(TOOL)), TOOL, 0o755);
        add(&image_blob_path(&Sha256::of(MANIFEST)), MANIFEST, 0o644);
        let tar = tar.into_inner().unwrap();
        std::fs::write(out, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    }

    #[test]
    fn opening_refuses_a_resigned_index_with_unsafe_names() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyPair::generate().unwrap();
        let pubkey = dir.path().join("ilha.pub");
        std::fs::write(&pubkey, keys.public.to_file_text()).unwrap();
        let bundle = dir.path().join("crafted.tar.zst");
        let state = dir.path().join("state");

        // The construction itself passes verification: what stops it is the missing cluster.
        signed_bundle(&keys, &index(), &bundle);
        let err = format!(
            "{:#}",
            InstallBundle::open(&bundle, &pubkey, &state).unwrap_err()
        );
        assert!(err.contains("declares no cluster"), "{err}");

        type Edit = fn(&mut Index);
        let cases: [(&str, Edit); 5] = [
            (r#"binary "../x""#, |i| i.binaries[0].name = "../x".into()),
            (r#"binary "a/b""#, |i| i.binaries[0].name = "a/b".into()),
            (r#"file "..""#, |i| i.files[0].name = "..".into()),
            (r#"file "addon-../../../etc/cron.d/x.yaml""#, |i| {
                i.files[0].name = "addon-../../../etc/cron.d/x.yaml".into()
            }),
            (r#"image "registry.k8s.io/pause:$(reboot)""#, |i| {
                i.images[0].name = "registry.k8s.io/pause:$(reboot)".into()
            }),
        ];
        for (named, edit) in cases {
            let mut hostile = index();
            edit(&mut hostile);
            signed_bundle(&keys, &hostile, &bundle);
            let err = format!(
                "{:#}",
                InstallBundle::open(&bundle, &pubkey, &state).unwrap_err()
            );
            assert!(
                err.contains("failed verification") && err.contains(&format!("index: {named}: ")),
                "{named}: {err}"
            );
            // Nothing new extracted; what the last good run left is untouched.
            assert!(!state.join("bundle.new").exists());
            assert_eq!(
                std::fs::read(state.join("bundle/ilha-index.json")).unwrap(),
                index().to_json_bytes()
            );
        }
    }

    #[test]
    fn an_addon_name_must_stay_in_its_directory() {
        check_addon_names(&index()).unwrap();
        for bad in [
            "addon-../../../etc/cron.d/x.yaml",
            "addon-a/b.yaml",
            "addon-\n.yaml",
            "addon-..yaml",
        ] {
            let mut hostile = index();
            hostile.files.push(artifact(bad));
            let err = check_addon_names(&hostile).unwrap_err().to_string();
            assert!(err.starts_with(&format!("file {bad:?}: ")), "{bad}: {err}");
            let bundle = InstallBundle {
                source: PathBuf::from("b"),
                dir: PathBuf::from("/state/bundle"),
                index: hostile,
                version: "v1.20.2".parse().unwrap(),
                requirements: requirements(&ilha_format::cluster::ClusterSpec {
                    kubernetes_version: "v1.20.2".into(),
                    network: ilha_format::cluster::Network::Bridge,
                })
                .unwrap(),
                verify_time: Duration::ZERO,
                summary: String::new(),
            };
            let names: Vec<String> = bundle.addons().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["addon-x.yaml"], "{bad}");
        }
    }
}
