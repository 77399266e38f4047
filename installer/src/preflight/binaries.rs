//! What the bundle's binaries need of a host's C library, read on the operator's side from their
//! ELF headers (with the `object` crate): the highest `GLIBC_x.y` symbol version a binary
//! references (its `SHT_GNU_VERNEED` entries, what the loader checks at start), or that it is
//! static (no `PT_INTERP`, no `DT_NEEDED`: Go's static builds, `containerd-static`, ilha's own
//! proxy). Read once per bundle; each host's [`super::HostChecks`] carries the part for its roles.
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use ilha_format::cluster::{NodeRole, Requirements};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader};
use object::{FileKind, ReadCache, ReadRef, elf};

/// A glibc release, `2.36`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlibcVersion {
    pub major: u32,
    pub minor: u32,
}

impl GlibcVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        GlibcVersion { major, minor }
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for GlibcVersion {
    type Err = ();

    /// `2.36`, and `2.36.1` (the patch level does not change symbol versions).
    fn from_str(text: &str) -> Result<Self, ()> {
        let mut parts = text.trim().split('.');
        let major = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let minor = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        if parts.any(|p| p.parse::<u32>().is_err()) {
            return Err(());
        }
        Ok(GlibcVersion { major, minor })
    }
}

/// What one binary needs of the host's C library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibcNeed {
    /// Runs on any Linux host: no loader, no shared libraries.
    Static,
    /// Linked against glibc; `Some`: the newest `GLIBC_x.y` symbol version it references
    /// (`None`: it references none, any glibc does).
    Glibc(Option<GlibcVersion>),
    /// Linked against musl (its loader is `ld-musl-*`).
    Musl,
}

impl fmt::Display for LibcNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibcNeed::Static => f.write_str("static"),
            LibcNeed::Glibc(Some(version)) => write!(f, "glibc {version}"),
            LibcNeed::Glibc(None) => f.write_str("glibc"),
            LibcNeed::Musl => f.write_str("musl"),
        }
    }
}

/// The C library a host has, as the probe found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLibc {
    Glibc(GlibcVersion),
    Musl,
    /// Neither `getconf GNU_LIBC_VERSION`, `ldd` nor a musl loader answered.
    None,
}

impl fmt::Display for HostLibc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostLibc::Glibc(version) => write!(f, "glibc {version}"),
            HostLibc::Musl => f.write_str("musl"),
            HostLibc::None => f.write_str("no C library found"),
        }
    }
}

/// One binary a host will get, and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryNeed {
    /// The bundle's name for it: `containerd`.
    pub name: String,
    pub need: LibcNeed,
}

/// Reads what the ELF file at `path` needs of the C library. Only the headers, the program
/// headers and the version sections are read, not the whole file.
pub fn read_libc_need(path: &Path) -> anyhow::Result<LibcNeed> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let data = ReadCache::new(file);
    let kind = FileKind::parse(&data).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an ELF executable ({e}): the bundle's binaries must be Linux ELF files",
            path.display()
        )
    })?;
    let need = match kind {
        FileKind::Elf64 => libc_need::<elf::FileHeader64<object::Endianness>, _>(&data),
        FileKind::Elf32 => libc_need::<elf::FileHeader32<object::Endianness>, _>(&data),
        other => bail!(
            "{} is a {other:?} file, not an ELF executable: the bundle's binaries must be Linux ELF files",
            path.display()
        ),
    };
    need.map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable ELF executable ({e}): truncated or damaged?",
            path.display()
        )
    })
}

fn libc_need<'data, Elf: FileHeader<Endian = object::Endianness>, R: ReadRef<'data>>(
    data: R,
) -> object::read::Result<LibcNeed> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let mut interpreter = None;
    let mut needed = 0usize;
    for segment in header.program_headers(endian, data)? {
        if let Some(path) = segment.interpreter(endian, data)? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
        if let Some(entries) = segment.dynamic(endian, data)? {
            needed += entries
                .iter()
                .filter(|entry| i64::from(entry.tag32(endian).unwrap_or(0)) == elf::DT_NEEDED)
                .count();
        }
    }
    if interpreter.is_none() && needed == 0 {
        return Ok(LibcNeed::Static);
    }
    if interpreter
        .as_deref()
        .is_some_and(|i| i.contains("ld-musl"))
    {
        return Ok(LibcNeed::Musl);
    }
    let sections = header.sections(endian, data)?;
    let mut newest: Option<GlibcVersion> = None;
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((_file, mut auxes)) = needs.next()? {
            while let Some(aux) = auxes.next()? {
                let name = aux.name(endian, strings)?;
                // `GLIBC_2.34`; `GLIBC_PRIVATE` and other libraries' versions say nothing.
                let version = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.strip_prefix("GLIBC_"))
                    .and_then(|v| v.parse::<GlibcVersion>().ok());
                if let Some(version) = version {
                    newest = newest.max(Some(version));
                }
            }
        }
    }
    Ok(LibcNeed::Glibc(newest))
}

/// What every binary of a bundle needs, read once; each host then takes the part its roles get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleNeeds {
    pub binaries: BTreeMap<String, LibcNeed>,
}

impl BundleNeeds {
    /// Reads every `(name, path)`; the first file that is not a readable ELF executable is an
    /// error naming the binary.
    pub fn read<'a>(
        binaries: impl IntoIterator<Item = (&'a str, &'a Path)>,
    ) -> anyhow::Result<BundleNeeds> {
        let mut needs = BundleNeeds::default();
        for (name, path) in binaries {
            let need = read_libc_need(path)
                .with_context(|| format!("reading what the bundle's `{name}` needs"))?;
            needs.binaries.insert(name.to_string(), need);
        }
        Ok(needs)
    }

    /// Reads every binary of the bundle's requirement list the bundle carries, optional ones
    /// included (each once, whatever the hosts).
    pub fn of_bundle(
        bundle: &crate::cluster::bundle::InstallBundle,
    ) -> anyhow::Result<BundleNeeds> {
        let paths = bundle
            .requirements
            .all_binaries()
            .filter(|b| bundle.has_binary(b.name))
            .map(|b| Ok((b.name, bundle.binary(b.name)?.0)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        BundleNeeds::read(paths.iter().map(|(name, path)| (*name, path.as_path())))
    }

    /// The binaries the inventory's `host` gets, by its roles.
    pub fn for_host(
        &self,
        requirements: &Requirements,
        host: &crate::inventory::Host,
    ) -> Vec<BinaryNeed> {
        use crate::inventory::Role;
        let mut roles = Vec::new();
        if host.has_role(Role::Etcd) {
            roles.push(NodeRole::Etcd);
        }
        if host.has_role(Role::ControlPlane) {
            roles.push(NodeRole::ControlPlane);
        }
        if host.is_kubernetes_node() {
            roles.push(NodeRole::Node);
        }
        self.for_roles(requirements, &roles)
    }

    /// The binaries a host with `roles` gets ([`Requirements::installed_on`], what the
    /// `binaries` install step installs), with what each needs.
    pub fn for_roles(&self, requirements: &Requirements, roles: &[NodeRole]) -> Vec<BinaryNeed> {
        requirements
            .installed_on(roles, |name| self.binaries.contains_key(name))
            .into_iter()
            .filter_map(|name| {
                self.binaries.get(name).map(|need| BinaryNeed {
                    name: name.to_string(),
                    need: *need,
                })
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    /// `$ILHA_CACHE_DIR`, else `~/.cache/ilha`: where the lab's artifacts are (xtask's rule).
    fn cache_dir() -> PathBuf {
        std::env::var_os("ILHA_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ilha")
            })
    }

    /// The one directory under `cache/parent` whose name starts with `prefix`. `make test` builds
    /// the lab's artifacts before `cargo test`, so under CI it must be there; elsewhere a
    /// machine that never built them skips (saying so).
    fn cached(parent: &str, prefix: &str) -> Option<PathBuf> {
        let dir = cache_dir().join(parent);
        let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
        });
        if found.is_none() {
            let message = format!(
                "{}/{prefix}* is missing: `cargo xtask artifacts build` makes it",
                dir.display()
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message} (CI=true: the lab's artifacts must exist at unit-test time)"
            );
            eprintln!("skipped: {message}");
        }
        found
    }

    fn need(path: PathBuf) -> LibcNeed {
        read_libc_need(&path).unwrap_or_else(|e| panic!("{e:#}"))
    }

    const GLIBC_2_34: LibcNeed = LibcNeed::Glibc(Some(GlibcVersion::new(2, 34)));

    /// The lab's Kubernetes v1.20.2, built from Debian's source package: static Go binaries.
    #[test]
    fn the_labs_kubernetes_binaries_are_static() {
        let Some(dir) = cached("kubernetes", "v1.20.2-") else {
            return;
        };
        for name in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kubelet",
            "kube-proxy",
        ] {
            assert_eq!(need(dir.join("bin").join(name)), LibcNeed::Static, "{name}");
        }
    }

    /// Debian 12's containerd, runc, etcd and CNI plugins: dynamic, and (Go's cgo runtime)
    /// referencing at most GLIBC_2.34. Measured, not assumed: a rebuild needing more fails here.
    #[test]
    fn debian_12_packages_need_glibc_2_34() {
        let cases = [
            ("containerd_", "usr/bin/containerd"),
            ("containerd_", "usr/bin/containerd-shim-runc-v2"),
            ("containerd_", "usr/bin/ctr"),
            ("runc_", "usr/sbin/runc"),
            ("etcd-server_3.4", "usr/bin/etcd"),
            ("etcd-client_3.4", "usr/bin/etcdctl"),
            ("containernetworking-plugins_", "usr/lib/cni/bridge"),
            ("containernetworking-plugins_", "usr/lib/cni/host-local"),
        ];
        for (package, file) in cases {
            let Some(dir) = cached("debs", package) else {
                return;
            };
            assert_eq!(need(dir.join(file)), GLIBC_2_34, "{package} {file}");
        }
    }

    /// Debian 13's etcd 3.5.16 (`cargo xtask artifacts build` unpacks it for the upgrade tests):
    /// still GLIBC_2.34, so it runs on the lab's Debian 12 (glibc 2.36).
    #[test]
    fn debian_13_etcd_3_5_needs_glibc_2_34() {
        let Some(dir) = cached("", "etcd-3.5.") else {
            return;
        };
        for name in ["etcd", "etcdctl", "etcdutl"] {
            assert_eq!(
                need(dir.join("root/usr/bin").join(name)),
                GLIBC_2_34,
                "{name}"
            );
        }
    }

    /// The test binary itself: built here against this machine's glibc, never static by default.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn this_test_binary_is_dynamic_glibc() {
        let me = std::env::current_exe().unwrap();
        assert!(matches!(need(me), LibcNeed::Glibc(Some(_))));
    }

    #[test]
    fn not_elf_truncated_and_empty_files_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("kubelet");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let err = format!("{:#}", read_libc_need(&script).unwrap_err());
        assert!(
            err.contains("kubelet") && err.contains("not an ELF"),
            "{err}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let err = format!("{:#}", read_libc_need(&empty).unwrap_err());
        assert!(err.contains("empty") && err.contains("not an ELF"), "{err}");

        // A 64-bit ELF header cut after its identification bytes: recognised, then unreadable.
        let cut = dir.path().join("cut");
        std::fs::write(&cut, b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0").unwrap();
        let err = format!("{:#}", read_libc_need(&cut).unwrap_err());
        assert!(
            err.contains("cut") && err.contains("truncated or damaged"),
            "{err}"
        );

        // A real binary cut short: its program headers point past the end.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let half = dir.path().join("half");
        std::fs::write(&half, &me[..200]).unwrap();
        let err = format!("{:#}", read_libc_need(&half).unwrap_err());
        assert!(err.contains("half"), "{err}");

        let missing = dir.path().join("nothing-here");
        let err = format!("{:#}", read_libc_need(&missing).unwrap_err());
        assert!(err.contains("nothing-here"), "{err}");
    }

    #[test]
    fn bundle_needs_name_the_binary_that_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("blob");
        std::fs::write(&bad, "not a program").unwrap();
        let err = format!(
            "{:#}",
            BundleNeeds::read([("containerd", bad.as_path())]).unwrap_err()
        );
        assert!(err.contains("the bundle's `containerd`"), "{err}");
    }

    #[test]
    fn glibc_versions_parse_and_order() {
        let v = |s: &str| s.parse::<GlibcVersion>().unwrap();
        assert!(v("2.9") < v("2.17"));
        assert!(v("2.36") < v("2.38"));
        assert_eq!(v("2.36.1"), v("2.36"));
        assert!("2".parse::<GlibcVersion>().is_err());
        assert!("PRIVATE".parse::<GlibcVersion>().is_err());
        assert!("2.x".parse::<GlibcVersion>().is_err());
        assert_eq!(v("2.36").to_string(), "2.36");
    }

    #[test]
    fn each_role_gets_its_binaries_once() {
        let requirements = ilha_format::cluster::requirements(&ilha_format::cluster::ClusterSpec {
            kubernetes_version: "v1.20.2".into(),
            network: ilha_format::cluster::Network::Bridge,
        })
        .unwrap();
        let mut needs = BundleNeeds::default();
        for binary in &requirements.binaries {
            needs
                .binaries
                .insert(binary.name.to_string(), LibcNeed::Static);
        }
        needs.binaries.insert("containerd".into(), GLIBC_2_34);
        let names = |roles: &[NodeRole]| -> Vec<String> {
            needs
                .for_roles(&requirements, roles)
                .into_iter()
                .map(|b| b.name)
                .collect()
        };
        let etcd = names(&[NodeRole::Etcd]);
        assert!(etcd.contains(&"etcd".to_string()));
        assert!(!etcd.contains(&"kubelet".to_string()));
        let master = names(&[NodeRole::ControlPlane, NodeRole::Node]);
        assert_eq!(
            master.iter().filter(|n| *n == "kubectl").count(),
            1,
            "{master:?}"
        );
        assert!(master.contains(&"containerd".to_string()));
        assert!(!master.contains(&"etcd".to_string()));
        let worker = needs.for_roles(&requirements, &[NodeRole::Node]);
        assert!(worker.contains(&BinaryNeed {
            name: "containerd".into(),
            need: GLIBC_2_34
        }));
        // etcdutl is optional for 1.20: judged on etcd hosts only when the bundle carries it.
        assert!(!etcd.contains(&"etcdutl".to_string()));
        needs.binaries.insert("etcdutl".into(), GLIBC_2_34);
        let etcd = needs.for_roles(&requirements, &[NodeRole::Etcd]);
        assert!(etcd.contains(&BinaryNeed {
            name: "etcdutl".into(),
            need: GLIBC_2_34
        }));
        let worker = needs.for_roles(&requirements, &[NodeRole::Node]);
        assert!(!worker.iter().any(|b| b.name == "etcdutl"), "{worker:?}");
    }
}
