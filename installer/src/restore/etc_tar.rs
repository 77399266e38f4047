//! What `restore` may put back at `/` on a master: the kit's `/etc/kubernetes` tar, cleaned on
//! the operator's side. The host extracts as root with `tar -C /`, so a signed kit that holds
//! `root/.ssh/authorized_keys2`, a `..` path, a link or a setuid file would otherwise write it
//! there. Only regular files under `etc/kubernetes/` survive, owned by root, with their permission
//! bits (never set-id or sticky); everything else is dropped and named.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::Context as _;
use tar::{EntryType, Header};

/// The only subtree a kit's tar may write to, as tar names it.
pub const ROOT: &str = "etc/kubernetes";

/// What [`clean`] kept and dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Paths of the regular files written to the clean tar.
    pub kept: Vec<String>,
    /// `(entry name, why)` of every entry left out, directories aside (the host makes those).
    pub dropped: Vec<(String, String)>,
}

impl Cleaned {
    /// One line per dropped entry, for the operator.
    pub fn dropped_text(&self) -> String {
        self.dropped
            .iter()
            .map(|(name, why)| format!("{name:?} ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why `name` may not land under `/`, or its normalised path (`etc/kubernetes/...`).
fn check_name(name: &[u8]) -> Result<String, &'static str> {
    let name = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8")?;
    if name.starts_with('/') {
        return Err("absolute path");
    }
    // `a//b` and `./a` name the same file as `a/b` and `a`.
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("path contains `..`");
    }
    if parts.len() < 3 || parts[0] != "etc" || parts[1] != "kubernetes" {
        return Err("not under etc/kubernetes/");
    }
    Ok(parts.join("/"))
}

/// Reads the kit's tar `src` and writes `dst`, a tar holding only what may land on a master.
pub fn clean(src: &Path, dst: &Path) -> anyhow::Result<Cleaned> {
    let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(input));
    let output = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut builder = tar::Builder::new(BufWriter::new(output));
    let mut cleaned = Cleaned::default();
    let mut seen = HashSet::new();
    let read_err = || format!("reading {} (not a tar archive?)", src.display());
    for entry in archive.entries().with_context(read_err)? {
        let mut entry = entry.with_context(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().with_context(read_err)?;
        let why = match kind {
            // Parents are made on the host as needed; an entry for one would change the mode
            // or owner of a directory that is already there.
            EntryType::Directory => continue,
            EntryType::Regular | EntryType::Continuous => match check_name(&raw) {
                Err(why) => Some(why.to_string()),
                Ok(_) if mode & 0o6000 != 0 => Some(format!("set-id bits, mode {mode:o}")),
                Ok(path) if !seen.insert(path.clone()) => Some("appears twice".to_string()),
                Ok(path) => {
                    let mut header = Header::new_gnu();
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(entry.size());
                    // Permission bits only, never sticky: no set-id file is ever made as root.
                    header.set_mode(mode & 0o777);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_mtime(entry.header().mtime().unwrap_or(0));
                    builder
                        .append_data(&mut header, &path, &mut entry)
                        .with_context(|| format!("writing {}", dst.display()))?;
                    cleaned.kept.push(path);
                    None
                }
            },
            EntryType::Symlink => Some("symbolic link".to_string()),
            EntryType::Link => Some("hard link".to_string()),
            EntryType::Char | EntryType::Block => Some("device file".to_string()),
            EntryType::Fifo => Some("fifo".to_string()),
            other => Some(format!("tar entry type {other:?}")),
        };
        if let Some(why) = why {
            cleaned.dropped.push((name, why));
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", dst.display()))?;
    Ok(cleaned)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar as a hostile kit would hold it: the real files of a master, plus what must never
    /// land at `/`.
    pub(crate) fn hostile_tar(path: &Path) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        let mut add = |name: &str, kind: EntryType, mode: u32, data: &[u8], link: Option<&str>| {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_uid(1000);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            // `set_path` refuses `..`: the raw name field is what a hostile tar would carry.
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("etc/kubernetes/", EntryType::Directory, 0o755, b"", None);
        add(
            "etc/kubernetes/pki/",
            EntryType::Directory,
            0o755,
            b"",
            None,
        );
        add(
            "etc/kubernetes/pki/ca.key",
            EntryType::Regular,
            0o600,
            b"key",
            None,
        );
        add(
            "etc/kubernetes/admin.conf",
            EntryType::Regular,
            0o644,
            b"conf",
            None,
        );
        add(
            "root/.ssh/authorized_keys2",
            EntryType::Regular,
            0o644,
            b"ssh-ed25519 AAAA intruder",
            None,
        );
        add(
            "etc/kubernetes/../../root/x",
            EntryType::Regular,
            0o644,
            b"x",
            None,
        );
        add(
            "etc/kubernetes/ssh",
            EntryType::Symlink,
            0o777,
            b"",
            Some("/root/.ssh"),
        );
        add(
            "etc/kubernetes/pki/shell",
            EntryType::Regular,
            0o4755,
            b"#!/bin/sh\n",
            None,
        );
        add(
            "etc/kubernetes/pki/group-shell",
            EntryType::Regular,
            0o2755,
            b"#!/bin/sh\n",
            None,
        );
        add(
            "etc/kubernetes/hard",
            EntryType::Link,
            0o644,
            b"",
            Some("etc/shadow"),
        );
        add("/etc/passwd", EntryType::Regular, 0o644, b"root::0:0", None);
        add("etc/kubernetes", EntryType::Regular, 0o644, b"over", None);
        b.finish().unwrap();
    }

    #[test]
    fn only_plain_files_under_etc_kubernetes_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("in.tar"), dir.path().join("out.tar"));
        hostile_tar(&src);
        let cleaned = clean(&src, &dst).unwrap();
        assert_eq!(
            cleaned.kept,
            ["etc/kubernetes/pki/ca.key", "etc/kubernetes/admin.conf"]
        );
        let dropped: Vec<&str> = cleaned.dropped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            dropped,
            [
                "root/.ssh/authorized_keys2",
                "etc/kubernetes/../../root/x",
                "etc/kubernetes/ssh",
                "etc/kubernetes/pki/shell",
                "etc/kubernetes/pki/group-shell",
                "etc/kubernetes/hard",
                "/etc/passwd",
                "etc/kubernetes",
            ]
        );
        let text = cleaned.dropped_text();
        for why in [
            "not under etc/kubernetes/",
            "`..`",
            "symbolic link",
            "set-id bits, mode 4755",
            "set-id bits, mode 2755",
            "hard link",
            "absolute path",
        ] {
            assert!(text.contains(why), "{why}: {text}");
        }

        // The clean tar: regular files, root's, permission bits kept, nothing else.
        let mut archive = tar::Archive::new(File::open(&dst).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.entry_type(), EntryType::Regular);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            let mode = h.mode().unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = String::new();
            std::io::Read::read_to_string(&mut entry, &mut data).unwrap();
            seen.push((path, mode, data));
        }
        assert_eq!(
            seen,
            [
                ("etc/kubernetes/pki/ca.key".into(), 0o600, "key".into()),
                ("etc/kubernetes/admin.conf".into(), 0o644, "conf".into()),
            ]
        );
    }

    #[test]
    fn gnu_tar_extracts_nothing_else_from_a_cleaned_tar() {
        // What the host does with it, against a scratch root.
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("in.tar"), dir.path().join("out.tar"));
        hostile_tar(&src);
        clean(&src, &dst).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--skip-old-files", "-xpf"])
            .arg(&dst)
            .arg(ROOT)
            .status()
            .unwrap();
        assert!(status.success());
        let mut found = Vec::new();
        for entry in walk(&root) {
            let rel = entry.strip_prefix(&root).unwrap().display().to_string();
            found.push(rel);
        }
        found.sort();
        assert_eq!(
            found,
            [
                "etc",
                "etc/kubernetes",
                "etc/kubernetes/admin.conf",
                "etc/kubernetes/pki",
                "etc/kubernetes/pki/ca.key",
            ]
        );
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                out.extend(walk(&p));
            }
        }
        out
    }

    /// A hostile tar inside a kit signed with the right key opens like any kit (the signature
    /// says who made it, not that it is harmless): the filter is what keeps it off the masters.
    #[test]
    fn a_signed_kit_with_a_hostile_tar_is_cleaned_and_each_entry_named() {
        use crate::backup::kit::{self, KitManifest, Protection, Unlock};
        use crate::backup::run::etc_kubernetes_path;
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let tar = staging.join(etc_kubernetes_path("m1"));
        std::fs::create_dir_all(tar.parent().unwrap()).unwrap();
        hostile_tar(&tar);
        let (secret, public) = ilha_format::generate_keypair(dir.path(), None).unwrap();
        let key = ilha_format::load_secret_key(&secret, None).unwrap();
        let pubkey = ilha_format::load_public_key(&public).unwrap();
        let manifest: KitManifest = serde_json::from_value(serde_json::json!({
            "format": kit::KIT_FORMAT, "cluster_name": "lab", "cluster_ca_sha256": "ab",
            "created_at": 0, "ilha_version": "0", "masters": ["m1"], "objects": [],
            "etcd": {"member": "m1", "snapshot": "etcd/snapshot.db", "sha256": "cd",
                     "status": {"hash": 1, "revision": 2, "totalKey": 3, "totalSize": 4},
                     "initial_cluster": [], "drill": {"passed": true, "revision": 2,
                     "restored_keys": 3, "live_keys": 3, "seconds": 1.0, "detail": ""}}
        }))
        .unwrap();
        let kit_path = dir.path().join("kit.tar.zst");
        let protection = Protection::Passphrase("p".into());
        kit::write_kit(&kit_path, &staging, manifest, &protection, &key).unwrap();
        let opened = dir.path().join("opened");
        std::fs::create_dir(&opened).unwrap();
        kit::open_kit(&kit_path, &pubkey, &Unlock::Passphrase("p".into()), &opened).unwrap();
        let cleaned = clean(
            &opened.join(etc_kubernetes_path("m1")),
            &dir.path().join("clean.tar"),
        )
        .unwrap();
        let text = cleaned.dropped_text();
        for entry in [
            "\"root/.ssh/authorized_keys2\" (not under etc/kubernetes/)",
            "\"etc/kubernetes/../../root/x\" (path contains `..`)",
            "\"etc/kubernetes/ssh\" (symbolic link)",
            "\"etc/kubernetes/pki/shell\" (set-id bits, mode 4755)",
        ] {
            assert!(text.contains(entry), "{entry} not in: {text}");
        }
        assert_eq!(cleaned.kept.len(), 2);
    }

    #[test]
    fn names_are_checked_component_by_component() {
        assert_eq!(
            check_name(b"etc/kubernetes/pki/ca.crt"),
            Ok("etc/kubernetes/pki/ca.crt".into())
        );
        assert_eq!(
            check_name(b"./etc/kubernetes//a"),
            Ok("etc/kubernetes/a".into())
        );
        assert_eq!(
            check_name(b"etc/kubernetes-evil/a"),
            Err("not under etc/kubernetes/")
        );
        assert_eq!(
            check_name(b"etc/kubernetes/"),
            Err("not under etc/kubernetes/")
        );
        assert_eq!(
            check_name(b"etc//kubernetes/a"),
            Ok("etc/kubernetes/a".into())
        );
    }
}
