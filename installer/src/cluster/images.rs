//! The images every node imports into containerd: the bundle's OCI image layout, repacked as one
//! uncompressed OCI archive (what `ctr images import` reads), built once on the operator's side.
//! Every image in the bundle goes to every node: any pod may land on any node, and the images'
//! shared layers are stored once in the archive anyway.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Writes the archive to `out` and returns it with its sha256, hashed while it is written (the
/// uploads need the digest; reading the file back would double the I/O). The archive lives in
/// the freshly extracted bundle directory, so it is rebuilt from verified content on every run.
pub fn archive(layout_dir: &Path, out: &Path) -> anyhow::Result<(PathBuf, String)> {
    let tmp = out.with_extension("tar.tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let hashing = ilha_format::Sha256Writer::new(BufWriter::with_capacity(1 << 20, file));
    let mut builder = tar::Builder::new(hashing);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut paths = Vec::new();
    collect(layout_dir, layout_dir, &mut paths)?;
    paths.sort();
    for relative in &paths {
        let full = layout_dir.join(relative);
        builder
            .append_path_with_name(&full, relative)
            .with_context(|| format!("adding {} to the image archive", full.display()))?;
    }
    let mut hashing = builder
        .into_inner()
        .context("finishing the image archive")?;
    hashing.flush()?;
    let (buffered, digest, _size) = hashing.finish();
    buffered
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
    Ok((out.to_path_buf(), digest.to_string()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_the_layout_in_order_and_reports_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("images");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(layout.join("oci-layout"), "{}").unwrap();
        std::fs::write(layout.join("index.json"), "{}").unwrap();
        std::fs::write(layout.join("blobs/sha256/ab"), "x").unwrap();
        let out = dir.path().join("images.tar");
        let (path, sha256) = archive(&layout, &out).unwrap();
        assert_eq!(path, out);
        let names: Vec<String> = tar::Archive::new(File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["blobs/sha256/ab", "index.json", "oci-layout"]);
        let (on_disk, _) = ilha_format::digest::sha256_file(&out).unwrap();
        assert_eq!(sha256, on_disk.to_string());
        // Same layout, same bytes: the digest does not depend on when or where it was built.
        let again = dir.path().join("again.tar");
        assert_eq!(archive(&layout, &again).unwrap().1, sha256);
    }
}
