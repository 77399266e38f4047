//! The staging directory: everything the bundle will hold, laid out as in the bundle, next to the
//! output file (so the final pack reads local files and nothing needs copying twice).
//!
//! Blobs are content-addressed; [`Staging::claim`] makes sure a blob shared by several images (or
//! several artifacts) is fetched and stored once.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ilha_format::{PackSource, Sha256};
use serde::Serialize;

use crate::error::{Error, Result};

/// OCI annotation naming an image inside an image layout.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

pub struct Staging {
    dir: tempfile::TempDir,
    claimed: Mutex<HashSet<String>>,
    /// path_in_bundle -> source; BTreeMap so the pack input is sorted regardless of fetch order.
    stored: Mutex<BTreeMap<String, PackSource>>,
    tmp_counter: AtomicU64,
}

impl Staging {
    /// Creates `.ilha-staging-XXXX` in the directory of `out` (removed when dropped).
    pub fn new_for(out: &Path) -> Result<Self> {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix(".ilha-staging-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        for sub in ["tmp", "blobs/sha256", "images/blobs/sha256"] {
            let p = dir.path().join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        Ok(Staging {
            dir,
            claimed: Mutex::new(HashSet::new()),
            stored: Mutex::new(BTreeMap::new()),
            tmp_counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// True for the first caller wanting `path_in_bundle`; that caller must store it.
    pub fn claim(&self, path_in_bundle: &str) -> bool {
        self.claimed
            .lock()
            .expect("staging lock")
            .insert(path_in_bundle.to_owned())
    }

    /// A fresh path to download into before the content is verified.
    pub fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join("tmp").join(format!("part-{n}"))
    }

    /// Moves a verified temp file to its place and records it for packing.
    pub fn commit(
        &self,
        tmp: &Path,
        path_in_bundle: &str,
        sha256: Sha256,
        size: u64,
        executable: bool,
    ) -> Result<()> {
        let dest = self.dir.path().join(path_in_bundle);
        std::fs::rename(tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        self.record(path_in_bundle, dest, sha256, size, executable);
        Ok(())
    }

    /// Writes small generated content (e.g. `images/index.json`) and records it.
    pub fn write(&self, path_in_bundle: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.dir.path().join(path_in_bundle);
        std::fs::write(&dest, bytes).map_err(|e| Error::io(&dest, e))?;
        self.record(
            path_in_bundle,
            dest,
            Sha256::of(bytes),
            bytes.len() as u64,
            false,
        );
        Ok(())
    }

    fn record(&self, path: &str, dest: PathBuf, sha256: Sha256, size: u64, executable: bool) {
        let mut stored = self.stored.lock().expect("staging lock");
        let entry = stored.entry(path.to_owned()).or_insert_with(|| PackSource {
            path_in_bundle: path.to_owned(),
            source_file: dest,
            sha256,
            size,
            executable,
        });
        // Same content as a binary and as a data file: stored once, executable wins.
        entry.executable |= executable;
    }

    /// Marks an already stored blob executable (a binary sharing content with a data file).
    pub fn mark_executable(&self, path_in_bundle: &str) {
        if let Some(s) = self
            .stored
            .lock()
            .expect("staging lock")
            .get_mut(path_in_bundle)
        {
            s.executable = true;
        }
    }

    /// Size of a stored entry.
    pub fn size_of(&self, path_in_bundle: &str) -> Option<u64> {
        self.stored
            .lock()
            .expect("staging lock")
            .get(path_in_bundle)
            .map(|s| s.size)
    }

    /// Everything to pack, sorted by path.
    pub fn sources(&self) -> Vec<PackSource> {
        self.stored
            .lock()
            .expect("staging lock")
            .values()
            .cloned()
            .collect()
    }
}

/// `images/index.json` of the OCI image layout.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<LayoutDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LayoutDescriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    annotations: BTreeMap<&'static str, &'a str>,
}

/// One image as listed in `images/index.json`.
pub struct LayoutImage<'a> {
    pub name: &'a str,
    pub media_type: &'a str,
    pub manifest_digest: Sha256,
    pub manifest_size: u64,
}

/// Writes `images/oci-layout` and `images/index.json` (images sorted by name) into staging.
pub fn write_layout_index(staging: &Staging, images: &[LayoutImage<'_>]) -> Result<()> {
    let mut sorted: Vec<&LayoutImage> = images.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    let index = LayoutIndex {
        schema_version: 2,
        media_type: "application/vnd.oci.image.index.v1+json",
        manifests: sorted
            .iter()
            .map(|img| LayoutDescriptor {
                media_type: img.media_type,
                digest: img.manifest_digest.to_oci(),
                size: img.manifest_size,
                annotations: BTreeMap::from([(REF_NAME_ANNOTATION, img.name)]),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&index).expect("layout index serialises");
    bytes.push(b'\n');
    staging.write("images/oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}\n")?;
    staging.write("images/index.json", &bytes)
}
