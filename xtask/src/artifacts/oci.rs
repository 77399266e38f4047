//! Single-layer OCI image layouts made in Rust, deterministically: sorted entries, mtime 0,
//! uid/gid 0, gzip without a timestamp. Same inputs, same digests.
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::error::{Error, Result};
use super::fsutil;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// skopeo (`oci:DIR:REF`) and `ctr images import` find images by this annotation.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One entry of the image's only layer; paths are relative (`bin/sh`).
#[derive(Debug, Clone)]
pub enum LayerEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl LayerEntry {
    fn path(&self) -> &str {
        match self {
            LayerEntry::Dir { path, .. }
            | LayerEntry::File { path, .. }
            | LayerEntry::Symlink { path, .. } => path,
        }
    }
}

/// What to build: the full reference recorded in the layout, the layer, the runtime config
/// (the image config's `config` object: Entrypoint, Cmd, Env, User...).
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub reference: String,
    pub entries: Vec<LayerEntry>,
    pub runtime_config: Value,
}

/// A written layout: `dir` holds `oci-layout`, `index.json`, `blobs/sha256/`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub reference: String,
    pub manifest_digest: String,
}

/// Writes (or leaves alone, if identical) the layout of `spec` at `dir`.
pub fn write_layout(spec: &ImageSpec, dir: &Path) -> Result<Layout> {
    let layer_tar = layer_tar(&spec.entries).map_err(Error::io("build layer for", dir))?;
    let diff_id = fsutil::sha256_hex(&layer_tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer_tar)
        .map_err(Error::io("gzip layer for", dir))?;
    let layer = gz.finish().map_err(Error::io("gzip layer for", dir))?;

    let config = to_json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": spec.runtime_config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    }));
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, &config),
        "layers": [descriptor(LAYER_MEDIA_TYPE, &layer)],
    }));
    let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, &manifest);
    manifest_descriptor["annotations"] = json!({ REF_NAME: spec.reference });
    let index = to_json(&json!({ "schemaVersion": 2, "manifests": [manifest_descriptor] }));
    let layout = Layout {
        dir: dir.to_path_buf(),
        reference: spec.reference.clone(),
        manifest_digest: format!("sha256:{}", fsutil::sha256_hex(&manifest)),
    };

    // The index names every blob by digest: an identical index means an identical layout.
    if std::fs::read(dir.join("index.json")).ok().as_deref() == Some(index.as_slice()) {
        return Ok(layout);
    }
    let staging = fsutil::partial(dir);
    fsutil::remove_dir_if_exists(&staging)?;
    let blobs = staging.join("blobs/sha256");
    fsutil::create_dir_all(&blobs)?;
    for blob in [&layer, &config, &manifest] {
        let path = blobs.join(fsutil::sha256_hex(blob));
        std::fs::write(&path, blob).map_err(Error::io("write", &path))?;
    }
    let files = [
        (
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
        ),
        ("index.json", index.as_slice()),
    ];
    for (name, bytes) in files {
        let path = staging.join(name);
        std::fs::write(&path, bytes).map_err(Error::io("write", &path))?;
    }
    fsutil::remove_dir_if_exists(dir)?;
    std::fs::rename(&staging, dir).map_err(Error::io("rename into", dir))?;
    Ok(layout)
}

fn to_json(value: &Value) -> Vec<u8> {
    // serde_json's map is ordered by key, so this is canonical enough to be deterministic.
    serde_json::to_vec(value).expect("a serde_json::Value always serialises")
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", fsutil::sha256_hex(blob)),
        "size": blob.len(),
    })
}

/// The layer as an uncompressed tar, entries sorted by path.
fn layer_tar(entries: &[LayerEntry]) -> std::io::Result<Vec<u8>> {
    let mut sorted: Vec<&LayerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            LayerEntry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            LayerEntry::File { path, mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())?;
            }
            LayerEntry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    builder.into_inner()
}
