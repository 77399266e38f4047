//! The upstream manifest's layout on the lab's mirror and registry, with stand-in bytes.
//!
//! `manifests/kubernetes-v1.37.0.yaml` names upstream's URLs, file names, archive members and
//! checksum-file formats. Under `mirror_root/upstream/<host>/<path>` the mirror serves the very
//! same paths, so `ilha-bundler build --mirror https://dl.k8s.io=http://127.0.0.1:5881/upstream/
//! dl.k8s.io ...` builds that manifest unchanged. The bytes are stand-ins: the lab's Kubernetes
//! v1.20.2 and Debian binaries under the 1.37 names (etcdutl from Debian's etcd 3.5.16, the
//! newest etcd available here), the lab's pause image under the upstream pause tag and the lab's
//! busybox image under the CoreDNS name. What this proves is the bundler's handling of the real
//! manifest's URLs, checksum files and archives, not the upstream bytes.
//!
//! Archives are deterministic (sorted members, fixed owner and mtime, gzip without timestamp),
//! so serving twice publishes the same digests.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::{Artifacts, Image, fsutil, registry, registry_addr};

/// Directory under the mirror root; one subdirectory per upstream host.
pub const ROOT: &str = "upstream";

pub const KUBERNETES: &str = "v1.37.0";
pub const ETCD: &str = "v3.7.0";
pub const CONTAINERD: &str = "2.3.4";
pub const RUNC: &str = "v1.4.3";
pub const CNI: &str = "v1.9.1";
pub const PAUSE: &str = "registry.k8s.io/pause:3.10.2";
pub const COREDNS: &str = "registry.k8s.io/coredns/coredns:v1.14.6";

/// Kubernetes binaries the manifest takes from dl.k8s.io.
const KUBE_BINARIES: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];
const CONTAINERD_BINARIES: [&str; 3] = ["containerd", "containerd-shim-runc-v2", "ctr"];
const CNI_BINARIES: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];

/// A fixed mtime for archive members (containerd v2.3.4's tag date), so archives are reproducible.
const MTIME: u64 = 1_786_556_851;

/// What was published: each binary's stand-in (name -> sha256 and where it came from), and the
/// prefixes to rewrite.
#[derive(Debug, Clone)]
pub struct Published {
    pub standins: BTreeMap<String, StandIn>,
    /// (upstream prefix, mirror prefix), for `--mirror`.
    pub file_mirrors: Vec<(String, String)>,
    /// (upstream registry, lab registry path), for `--registry-mirror`.
    pub registry_mirrors: Vec<(String, String)>,
    /// Stand-in images: (upstream reference, lab image it is a copy of).
    pub images: Vec<(String, Image)>,
    pub root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StandIn {
    pub sha256: String,
    pub origin: String,
}

/// A file to publish: relative to `ROOT`, its bytes.
struct Planned {
    path: String,
    bytes: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io("read", path))
}

/// Lays out the upstream tree under `mirror_root/upstream` and pushes the stand-in images.
pub fn populate(mirror_root: &Path, artifacts: &Artifacts) -> Result<Published> {
    // Debian's etcd 3.5 stands in for the upstream archive's etcdutl (etcd 3.4 has none).
    let etcdutl = artifacts.newer_etcd.etcdutl.as_path();
    let mut standins = BTreeMap::new();
    let mut plan = Vec::new();
    // Published as they are (hard-linked by the mirror's `place`, never read again).
    let mut linked: Vec<(String, &super::Binary)> = Vec::new();
    let mut binary = |name: &str| -> Result<&super::Binary> {
        let found = artifacts.binary(name).ok_or_else(|| Error::Source {
            dir: mirror_root.into(),
            reason: format!("the lab built no {name}"),
        })?;
        standins.insert(
            name.to_owned(),
            StandIn {
                sha256: found.sha256.clone(),
                origin: found.origin.clone(),
            },
        );
        Ok(found)
    };

    // dl.k8s.io: the binary and `<binary>.sha256` holding the bare digest, no newline.
    let kube_dir = format!("dl.k8s.io/release/{KUBERNETES}/bin/linux/amd64");
    for name in KUBE_BINARIES {
        let found = binary(name)?;
        plan.push(Planned {
            path: format!("{kube_dir}/{name}.sha256"),
            bytes: found.sha256.clone().into_bytes(),
        });
        linked.push((format!("{kube_dir}/{name}"), found));
    }

    // etcd: etcd-vX-linux-amd64.tar.gz with a top directory, and `SHA256SUMS`.
    let etcd_top = format!("etcd-{ETCD}-linux-amd64");
    let mut members = Vec::new();
    for name in ["etcd", "etcdctl"] {
        members.push((format!("{etcd_top}/{name}"), read(&binary(name)?.path)?));
    }
    let etcdutl_bytes = read(etcdutl)?;
    let etcdutl_standin = StandIn {
        sha256: fsutil::sha256_hex(&etcdutl_bytes),
        origin: format!(
            "etcd {} from Debian ({})",
            super::newer_etcd::VERSION,
            etcdutl.display()
        ),
    };
    members.push((format!("{etcd_top}/etcdutl"), etcdutl_bytes));
    let etcd_archive = tar_gz(&[&format!("{etcd_top}/")], &members)?;
    let etcd_dir = format!("github.com/etcd-io/etcd/releases/download/{ETCD}");
    let etcd_name = format!("{etcd_top}.tar.gz");
    plan.push(Planned {
        path: format!("{etcd_dir}/SHA256SUMS"),
        bytes: format!("{}  {etcd_name}\n", fsutil::sha256_hex(&etcd_archive)).into_bytes(),
    });
    plan.push(Planned {
        path: format!("{etcd_dir}/{etcd_name}"),
        bytes: etcd_archive,
    });

    // containerd: the static archive, members bin/*, and `<archive>.sha256sum`.
    let mut members = Vec::new();
    for name in CONTAINERD_BINARIES {
        members.push((format!("bin/{name}"), read(&binary(name)?.path)?));
    }
    let containerd_archive = tar_gz(&["bin/"], &members)?;
    let containerd_name = format!("containerd-static-{CONTAINERD}-linux-amd64.tar.gz");
    let containerd_dir =
        format!("github.com/containerd/containerd/releases/download/v{CONTAINERD}");
    plan.push(Planned {
        path: format!("{containerd_dir}/{containerd_name}.sha256sum"),
        bytes: format!(
            "{}  {containerd_name}\n",
            fsutil::sha256_hex(&containerd_archive)
        )
        .into_bytes(),
    });
    plan.push(Planned {
        path: format!("{containerd_dir}/{containerd_name}"),
        bytes: containerd_archive,
    });

    // runc: `runc.amd64` and the clearsigned `runc.sha256sum`.
    let runc = binary("runc")?;
    let runc_dir = format!("github.com/opencontainers/runc/releases/download/{RUNC}");
    plan.push(Planned {
        path: format!("{runc_dir}/runc.sha256sum"),
        bytes: clearsigned_sums(&[(&runc.sha256, "runc.amd64")]).into_bytes(),
    });
    linked.push((format!("{runc_dir}/runc.amd64"), runc));

    // CNI plugins: a `.tgz` of `./<plugin>` made with `tar -C dir .`, and `<archive>.sha256`.
    let mut members = Vec::new();
    for name in CNI_BINARIES {
        members.push((format!("./{name}"), read(&binary(name)?.path)?));
    }
    let cni_archive = tar_gz(&["./"], &members)?;
    let cni_name = format!("cni-plugins-linux-amd64-{CNI}.tgz");
    let cni_dir = format!("github.com/containernetworking/plugins/releases/download/{CNI}");
    plan.push(Planned {
        path: format!("{cni_dir}/{cni_name}.sha256"),
        bytes: format!("{}  {cni_name}\n", fsutil::sha256_hex(&cni_archive)).into_bytes(),
    });
    plan.push(Planned {
        path: format!("{cni_dir}/{cni_name}"),
        bytes: cni_archive,
    });

    standins.insert("etcdutl".into(), etcdutl_standin);
    let root = mirror_root.join(ROOT);
    for file in &plan {
        let dest = root.join(&file.path);
        if let Some(dir) = dest.parent() {
            fsutil::create_dir_all(dir)?;
        }
        super::mirror::write_if_changed(&dest, &file.bytes)?;
    }
    for (path, found) in &linked {
        let dest = root.join(path);
        if let Some(dir) = dest.parent() {
            fsutil::create_dir_all(dir)?;
        }
        super::mirror::place(&found.path, &dest, &found.sha256, found.size)?;
    }
    fsutil::write_atomic(
        &root.join("STAND-INS"),
        standins
            .iter()
            .map(|(name, s)| format!("{name}: {} {}\n", s.sha256, s.origin))
            .collect::<String>()
            .as_bytes(),
    )?;

    // The registry: the lab's pause and busybox images under the upstream names.
    let mut images = Vec::new();
    for (upstream, lab_name) in [
        (PAUSE, super::images::PAUSE.name),
        (COREDNS, super::images::BUSYBOX.name),
    ] {
        let lab = artifacts.image(lab_name).ok_or_else(|| Error::Source {
            dir: mirror_root.into(),
            reason: format!("the lab built no image {lab_name}"),
        })?;
        let standin = Image {
            name: upstream.to_owned(),
            registry_ref: format!("{}/{upstream}", registry_addr()),
            layout: lab.layout.clone(),
        };
        registry::push(&standin)?;
        images.push((upstream.to_owned(), standin));
    }

    let mirror = super::mirror_addr();
    Ok(Published {
        standins,
        file_mirrors: ["dl.k8s.io", "github.com"]
            .iter()
            .map(|host| {
                (
                    format!("https://{host}"),
                    format!("http://{mirror}/{ROOT}/{host}"),
                )
            })
            .collect(),
        registry_mirrors: vec![(
            "registry.k8s.io".into(),
            format!("{}/registry.k8s.io", registry_addr()),
        )],
        images,
        root,
    })
}

/// A reproducible `.tar.gz`: directories, then files (mode 0755), owner root, fixed mtime.
fn tar_gz(dirs: &[&str], files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Source {
        dir: PathBuf::from("<archive>"),
        reason: format!("building a tar.gz: {e}"),
    };
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gzip);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    };
    // Names are written as given: `tar -C dir .` stores `./bridge`, which the tar crate's
    // path setters would normalise away.
    let named = |mut h: tar::Header, path: &str| -> Result<tar::Header> {
        let name = &mut h.as_old_mut().name;
        if path.len() > name.len() {
            return Err(io(std::io::Error::other(format!(
                "member name too long: {path}"
            ))));
        }
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        Ok(h)
    };
    for dir in dirs {
        let h = named(header(tar::EntryType::Directory, 0o755, 0), dir)?;
        builder.append(&h, std::io::empty()).map_err(io)?;
    }
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, bytes) in sorted {
        let h = named(
            header(tar::EntryType::Regular, 0o755, bytes.len() as u64),
            path,
        )?;
        builder.append(&h, bytes.as_slice()).map_err(io)?;
    }
    let mut gzip = builder.into_inner().map_err(io)?;
    gzip.flush().map_err(io)?;
    gzip.finish().map_err(io)
}

/// runc's `runc.sha256sum` format: `sha256sum` lines in a PGP clearsigned message. The
/// signature block is a stand-in (not a valid signature): the bundler reads the signed lines
/// and cannot check upstream's PGP signature offline.
fn clearsigned_sums(lines: &[(&str, &str)]) -> String {
    let mut out = String::from("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n");
    for (sha256, name) in lines {
        out.push_str(&format!("{sha256}  {name}\n"));
    }
    out.push_str(
        "-----BEGIN PGP SIGNATURE-----\n\n\
         c3RhbmQtaW4gc2lnbmF0dXJlOiB0aGUgaWxoYSBsYWIgZG9lcyBub3Qgc2lnbiB0aGlz\n\
         =ilha\n\
         -----END PGP SIGNATURE-----\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `url`/`sha256_url` of the committed upstream manifest is a path this module serves,
    /// and its images are the ones pushed: the manifest and the lab layout cannot drift apart.
    #[test]
    fn the_upstream_manifest_names_exactly_what_is_served() {
        let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../manifests/kubernetes-{KUBERNETES}.yaml"));
        let text = std::fs::read_to_string(&manifest_path).unwrap();
        let kube_dir = format!("dl.k8s.io/release/{KUBERNETES}/bin/linux/amd64");
        let mut served: Vec<String> = KUBE_BINARIES
            .iter()
            .flat_map(|b| [format!("{kube_dir}/{b}"), format!("{kube_dir}/{b}.sha256")])
            .collect();
        served.extend([
            format!("github.com/etcd-io/etcd/releases/download/{ETCD}/etcd-{ETCD}-linux-amd64.tar.gz"),
            format!("github.com/etcd-io/etcd/releases/download/{ETCD}/SHA256SUMS"),
            format!("github.com/containerd/containerd/releases/download/v{CONTAINERD}/containerd-static-{CONTAINERD}-linux-amd64.tar.gz"),
            format!("github.com/containerd/containerd/releases/download/v{CONTAINERD}/containerd-static-{CONTAINERD}-linux-amd64.tar.gz.sha256sum"),
            format!("github.com/opencontainers/runc/releases/download/{RUNC}/runc.amd64"),
            format!("github.com/opencontainers/runc/releases/download/{RUNC}/runc.sha256sum"),
            format!("github.com/containernetworking/plugins/releases/download/{CNI}/cni-plugins-linux-amd64-{CNI}.tgz"),
            format!("github.com/containernetworking/plugins/releases/download/{CNI}/cni-plugins-linux-amd64-{CNI}.tgz.sha256"),
        ]);
        let mut named = Vec::new();
        for line in text.lines().map(str::trim) {
            let line = line.trim_start_matches("- ");
            if let Some(url) = line
                .strip_prefix("url: https://")
                .or_else(|| line.strip_prefix("sha256_url: https://"))
            {
                named.push(url.to_owned());
            }
        }
        named.sort();
        named.dedup();
        served.sort();
        assert_eq!(named, served);
        for image in [PAUSE, COREDNS] {
            assert!(text.contains(&format!("  - {image}\n")), "{image}");
        }
    }

    #[test]
    fn archives_are_reproducible_and_clearsigned_sums_are_readable() {
        let files = vec![
            ("./b".to_owned(), b"bee".to_vec()),
            ("./a".to_owned(), b"ay".to_vec()),
        ];
        let one = tar_gz(&["./"], &files).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(one, tar_gz(&["./"], &files).unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(one.as_slice()));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["./", "./a", "./b"]);
        let sums = clearsigned_sums(&[(&"ab".repeat(32), "runc.amd64")]);
        assert!(sums.starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"));
        assert!(sums.contains(&format!(
            "{}  runc.amd64\n-----BEGIN PGP SIGNATURE-----",
            "ab".repeat(32)
        )));
    }
}
