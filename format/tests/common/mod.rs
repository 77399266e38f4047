//! Helpers shared by the integration tests: a small but complete bundle, and crafted archives.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ilha_format::index::{blob_path, image_blob_path};
use ilha_format::sign::KeyPair;
use ilha_format::{
    ArtifactRecord, Entry, ImageRecord, Index, NoProgress, PackSource, Sha256, pack,
};

/// Deterministic pseudo-random bytes (xorshift64*), so tests need no RNG crate.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: KeyPair,
    pub index: Index,
    pub sources: Vec<PackSource>,
    pub bundle: PathBuf,
}

fn add(
    dir: &Path,
    sources: &mut Vec<PackSource>,
    path: String,
    data: &[u8],
    executable: bool,
) -> (Sha256, u64) {
    let digest = Sha256::of(data);
    let file = dir.join(format!("src-{}", sources.len()));
    fs::write(&file, data).unwrap();
    sources.push(PackSource {
        path_in_bundle: path,
        source_file: file,
        sha256: digest,
        size: data.len() as u64,
        executable,
    });
    (digest, data.len() as u64)
}

/// Sources for a bundle with one OCI image (manifest, config, two layers), two binaries sharing
/// content, and one data file.
pub fn sources(dir: &Path) -> (Index, Vec<PackSource>) {
    let mut sources = Vec::new();
    let mut index = Index::new("lab", "1.0.0-test", "linux/amd64");
    let layer1 = noise(1, 300_000);
    let layer2 = b"compressible layer ".repeat(10_000);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let (l1, s1) = add(dir, &mut sources, String::new(), &layer1, false);
    let (l2, s2) = add(dir, &mut sources, String::new(), &layer2, false);
    let (c, sc) = add(dir, &mut sources, String::new(), &config, false);
    sources[0].path_in_bundle = image_blob_path(&l1);
    sources[1].path_in_bundle = image_blob_path(&l2);
    sources[2].path_in_bundle = image_blob_path(&c);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{c}","size":{sc}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{l1}","size":{s1}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{l2}","size":{s2}}}]}}"#
    );
    let (m, sm) = add(dir, &mut sources, String::new(), manifest.as_bytes(), false);
    sources[3].path_in_bundle = image_blob_path(&m);
    let oci_index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{m}","size":{sm},"annotations":{{"org.opencontainers.image.ref.name":"registry.k8s.io/pause:3.2"}}}}]}}"#
    );
    add(
        dir,
        &mut sources,
        "images/index.json".into(),
        oci_index.as_bytes(),
        false,
    );
    add(
        dir,
        &mut sources,
        "images/oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        false,
    );
    index.images.push(ImageRecord {
        name: "registry.k8s.io/pause:3.2".into(),
        source: "127.0.0.1:5880/k8s/pause:3.2".into(),
        manifest_digest: m.to_oci(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: s1 + s2 + sc + sm,
        layers: 2,
    });
    let tool = noise(7, 200_000);
    for name in ["kubelet", "kubelet-copy"] {
        let (d, s) = add(dir, &mut sources, String::new(), &tool, true);
        sources.last_mut().unwrap().path_in_bundle = blob_path(&d);
        index.binaries.push(ArtifactRecord {
            name: name.into(),
            sha256: d,
            size: s,
            source: format!("http://127.0.0.1:5881/{name}"),
        });
    }
    let yaml = b"apiVersion: v1\nkind: ConfigMap\n".repeat(100);
    let (d, s) = add(dir, &mut sources, String::new(), &yaml, false);
    sources.last_mut().unwrap().path_in_bundle = blob_path(&d);
    index.files.push(ArtifactRecord {
        name: "calico.yaml".into(),
        sha256: d,
        size: s,
        source: "./calico.yaml".into(),
    });
    (index, sources)
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyPair::generate().unwrap();
    let (index, sources) = sources(dir.path());
    let bundle = dir.path().join("lab.tar.zst");
    pack(
        index.clone(),
        sources.clone(),
        &keys.secret,
        &bundle,
        &NoProgress,
    )
    .unwrap();
    Fixture {
        dir,
        keys,
        index,
        sources,
        bundle,
    }
}

pub fn sig_path(bundle: &Path) -> PathBuf {
    PathBuf::from(format!("{}.minisig", bundle.display()))
}

/// One raw tar member for crafted archives.
pub struct Member {
    pub header: tar::Header,
    pub data: Vec<u8>,
}

/// A regular file member, with the path bytes written raw (the tar crate refuses `..` and `/`).
pub fn member(path: &str, data: &[u8], mode: u32) -> Member {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    set_raw_path(&mut header, path);
    Member {
        header,
        data: data.to_vec(),
    }
}

pub fn set_raw_path(header: &mut tar::Header, path: &str) {
    let name = &mut header.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_cksum();
}

/// Index entry describing `data` at `path` (what a signer would have declared).
pub fn entry(path: &str, data: &[u8], mode: u32) -> Entry {
    Entry {
        path: path.into(),
        sha256: Sha256::of(data),
        size: data.len() as u64,
        mode,
    }
}

/// A tar stream: signed index + signature, then `members`, then `tail` (normally the end marker).
pub fn craft_tar(keys: &KeyPair, index: &Index, members: &[Member], tail: &[u8]) -> Vec<u8> {
    let index_bytes = index.to_json_bytes();
    let sig = keys
        .secret
        .sign_bytes(&index_bytes, &index.trusted_comment())
        .to_minisig_string();
    let mut out = Vec::new();
    let mut push = |header: &tar::Header, data: &[u8]| {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    };
    push(
        &member("ilha-index.json", &index_bytes, 0o644).header,
        &index_bytes,
    );
    push(
        &member("ilha-index.json.minisig", sig.as_bytes(), 0o644).header,
        sig.as_bytes(),
    );
    for m in members {
        push(&m.header, &m.data);
    }
    out.extend_from_slice(tail);
    out
}

pub const END: [u8; 1024] = [0u8; 1024];

pub fn zstd_file(path: &Path, tar: &[u8]) {
    let compressed = zstd::encode_all(tar, 3).unwrap();
    fs::File::create(path)
        .unwrap()
        .write_all(&compressed)
        .unwrap();
}

/// An index listing exactly `entries` (no images/binaries/files records).
pub fn bare_index(entries: Vec<Entry>) -> Index {
    let mut index = Index::new("crafted", "1", "linux/amd64");
    index.entries = entries;
    index
}

pub fn decompress(path: &Path) -> Vec<u8> {
    zstd::decode_all(fs::File::open(path).unwrap()).unwrap()
}
