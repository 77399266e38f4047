//! Kubernetes v1.20.2 built from Debian bookworm's `kubernetes` source package, cached by the
//! source's sha256 and our recipe's version.
//!
//! No reachable registry ships prebuilt kube-apiserver/kubelet/kubeadm, but Debian's source
//! package is the whole upstream tree with `vendor/`, so the lab builds it offline.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::{apt, cmd, fsutil};

pub const VERSION: &str = "v1.20.2";
/// The `make WHAT=cmd/...` targets, which are also the binaries' names.
pub const BINARIES: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];
/// The pause image's binary, built from `build/pause/linux/pause.c` of the same tree.
pub const PAUSE: &str = "pause";

/// Bump whenever anything below changes what comes out: it is part of the cache key.
const RECIPE: &str = "ilha-kubernetes-recipe/1";
const SOURCE_PACKAGE: &str = "kubernetes";
/// Fixed build date (v1.20.2's release day): with it a rebuild in the same directory gives the
/// same bytes (Go records the absolute build paths, so another `cache_dir` gives other bytes).
const SOURCE_DATE_EPOCH: &str = "1610496000";
const PAUSE_VERSION: &str = "v3.2-ilha";
/// v1.0.1 (vendored) breaks under Go >= 1.18: kubeadm init and `kubectl config set-credentials
/// --embed-certs` panic in reflect.mapiternext. Debian's golang-github-modern-go-reflect2-dev is v1.0.2.
const REFLECT2_VENDOR: &str = "vendor/github.com/modern-go/reflect2";
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev";
const INFO_FILE: &str = "BUILD-INFO.json";

/// What a finished build recorded; its presence marks the build complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub recipe: String,
    pub key: String,
    pub version: String,
    pub go: String,
    pub sources: Vec<SourceFile>,
    /// Binary name -> sha256 and size, including `pause`.
    pub binaries: BTreeMap<String, FileDigest>,
    pub build_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub size: u64,
}

/// A complete build in the cache.
#[derive(Debug, Clone)]
pub struct KubernetesBuild {
    /// `bin/` holds the seven binaries and `pause`.
    pub dir: PathBuf,
    pub info: BuildInfo,
}

impl KubernetesBuild {
    pub fn binary(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }
}

/// The cached build for the current source, building it first if needed (~8 min on 2 cores).
pub fn ensure(cache_dir: &Path) -> Result<KubernetesBuild> {
    let root = cache_dir.join("kubernetes");
    let source_dir = root.join("source");
    if !source_dir.is_dir() {
        apt::download_source(SOURCE_PACKAGE, &source_dir)?;
    }
    let sources = Sources::find(&source_dir)?;
    let key = sources.cache_key()?;
    let dir = root.join(format!("{VERSION}-{}", &key[..16]));
    if let Some(info) = read_info(&dir)? {
        return Ok(KubernetesBuild { dir, info });
    }
    let log = root.join(format!("build-{}.log", &key[..16]));
    eprintln!(
        "building Kubernetes {VERSION} from {} (several minutes; log: {})",
        sources.orig.display(),
        log.display()
    );
    build(&root, &sources, &key, &dir, &log)?;
    let info = read_info(&dir)?.ok_or_else(|| Error::Source {
        dir: dir.clone(),
        reason: format!("{INFO_FILE} missing right after the build"),
    })?;
    Ok(KubernetesBuild { dir, info })
}

fn read_info(dir: &Path) -> Result<Option<BuildInfo>> {
    let path = dir.join(INFO_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json { path, source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::io("read", path)(err)),
    }
}

/// The two files `apt-get source` fetched (the .dsc only lists them).
struct Sources {
    dir: PathBuf,
    orig: PathBuf,
    debian: PathBuf,
}

impl Sources {
    fn find(dir: &Path) -> Result<Sources> {
        let mut orig = Vec::new();
        let mut debian = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
            let path = entry.map_err(Error::io("read directory", dir))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".orig.tar.gz") {
                orig.push(path);
            } else if name.ends_with(".debian.tar.xz") {
                debian.push(path);
            }
        }
        match (orig.as_slice(), debian.as_slice()) {
            ([orig], [debian]) => Ok(Sources {
                dir: dir.to_path_buf(),
                orig: orig.clone(),
                debian: debian.clone(),
            }),
            _ => Err(Error::Source {
                dir: dir.to_path_buf(),
                reason: format!(
                    "expected exactly one *.orig.tar.gz and one *.debian.tar.xz, found {} and {} (remove the directory to fetch it again)",
                    orig.len(),
                    debian.len()
                ),
            }),
        }
    }

    fn files(&self) -> Result<Vec<SourceFile>> {
        [&self.orig, &self.debian]
            .into_iter()
            .map(|path| {
                let (sha256, _) = fsutil::sha256_file(path)?;
                Ok(SourceFile {
                    name: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into(),
                    sha256,
                })
            })
            .collect()
    }

    /// sha256 over the recipe version and `sha256sum`-style lines of both source files.
    fn cache_key(&self) -> Result<String> {
        let mut text = format!("{RECIPE}\n");
        for file in self.files()? {
            text.push_str(&format!("{}  {}\n", file.sha256, file.name));
        }
        Ok(fsutil::sha256_hex(text.as_bytes()))
    }
}

fn build(root: &Path, sources: &Sources, key: &str, out: &Path, log: &Path) -> Result<()> {
    let started = Instant::now();
    if !Path::new(REFLECT2_DEBIAN).is_dir() {
        return Err(Error::Package {
            package: REFLECT2_PACKAGE.into(),
            reason: format!("{REFLECT2_DEBIAN} is missing: apt-get install {REFLECT2_PACKAGE}"),
        });
    }
    std::fs::write(log, format!("Kubernetes {VERSION} build, key {key}\n"))
        .map_err(Error::io("write", log))?;
    let work = root.join("work");
    fsutil::remove_dir_if_exists(&work)?;
    let home = work.join("home");
    fsutil::create_dir_all(&home)?;

    cmd::logged(
        Command::new("tar")
            .arg("-xzf")
            .arg(&sources.orig)
            .arg("-C")
            .arg(&work),
        log,
    )?;
    let tree = single_tree(&work, &sources.dir)?;
    cmd::logged(
        Command::new("tar")
            .arg("-xJf")
            .arg(&sources.debian)
            .arg("-C")
            .arg(&tree),
        log,
    )?;
    let series_path = tree.join("debian/patches/series");
    let series = std::fs::read_to_string(&series_path).map_err(Error::io("read", &series_path))?;
    for patch in series
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        cmd::logged(
            Command::new("patch")
                .args(["-p1", "--batch", "--forward", "-i"])
                .arg(Path::new("debian/patches").join(patch))
                .current_dir(&tree),
            log,
        )?;
    }
    let vendored = tree.join(REFLECT2_VENDOR);
    fsutil::remove_dir_if_exists(&vendored)?;
    cmd::logged(
        Command::new("cp")
            .arg("-r")
            .arg(REFLECT2_DEBIAN)
            .arg(&vendored),
        log,
    )?;

    let what: Vec<String> = BINARIES.iter().map(|b| format!("cmd/{b}")).collect();
    // A clean environment: nothing from the caller's shell (GOFLAGS, GOPATH...) leaks into the build.
    cmd::logged(
        Command::new("make")
            .arg(format!("WHAT={}", what.join(" ")))
            .current_dir(&tree)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &home)
            .env("KUBE_GIT_VERSION", VERSION)
            .env("KUBE_GIT_MAJOR", "1")
            .env("KUBE_GIT_MINOR", "20")
            .env("KUBE_GIT_TREE_STATE", "clean")
            .env("CGO_ENABLED", "0")
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH),
        log,
    )?;
    let pause = work.join(PAUSE);
    cmd::logged(
        Command::new("gcc")
            .args(["-static", "-Os"])
            .arg(format!("-DVERSION={PAUSE_VERSION}"))
            .arg("-o")
            .arg(&pause)
            .arg(tree.join("build/pause/linux/pause.c")),
        log,
    )?;
    cmd::logged(Command::new("strip").arg(&pause), log)?;

    let staging = fsutil::partial(out);
    fsutil::remove_dir_if_exists(&staging)?;
    let bin = staging.join("bin");
    fsutil::create_dir_all(&bin)?;
    let mut binaries = BTreeMap::new();
    for name in BINARIES.iter().chain([&PAUSE]) {
        let from = if *name == PAUSE {
            pause.clone()
        } else {
            tree.join("_output/bin").join(name)
        };
        let to = bin.join(name);
        std::fs::copy(&from, &to).map_err(Error::io("copy build output", &from))?;
        check_version(name, &to, log)?;
        let (sha256, size) = fsutil::sha256_file(&to)?;
        binaries.insert(name.to_string(), FileDigest { sha256, size });
    }
    let go = cmd::output(Command::new("go").arg("version"))?
        .trim()
        .to_string();
    let info = BuildInfo {
        recipe: RECIPE.into(),
        key: key.into(),
        version: VERSION.into(),
        go,
        sources: sources.files()?,
        binaries,
        build_seconds: started.elapsed().as_secs(),
    };
    let info_path = staging.join(INFO_FILE);
    let json = serde_json::to_vec_pretty(&info).map_err(|source| Error::Json {
        path: info_path.clone(),
        source,
    })?;
    std::fs::write(&info_path, json).map_err(Error::io("write", &info_path))?;
    fsutil::remove_dir_if_exists(out)?;
    std::fs::rename(&staging, out).map_err(Error::io("rename into", out))?;
    // The unpacked tree and Go's build cache are ~2 GB; the outputs are all we keep.
    fsutil::remove_dir_if_exists(&work)
}

/// The orig tarball unpacks into one `kubernetes-X.Y.Z/` directory.
fn single_tree(work: &Path, source_dir: &Path) -> Result<PathBuf> {
    let mut trees = Vec::new();
    for entry in std::fs::read_dir(work).map_err(Error::io("read directory", work))? {
        let path = entry.map_err(Error::io("read directory", work))?.path();
        if path.file_name().is_some_and(|n| n != "home") && path.is_dir() {
            trees.push(path);
        }
    }
    match trees.as_slice() {
        [tree] => Ok(tree.clone()),
        _ => Err(Error::Source {
            dir: source_dir.to_path_buf(),
            reason: format!(
                "the orig tarball unpacked into {} top-level directories, expected 1",
                trees.len()
            ),
        }),
    }
}

/// Every binary must report the version we asked for (proves the ldflags took effect).
fn check_version(name: &str, path: &Path, log: &Path) -> Result<()> {
    let mut command = Command::new(path);
    match name {
        PAUSE => command.arg("-v"),
        "kubectl" => command.args(["version", "--client"]),
        "kubeadm" => command.args(["version", "-o", "short"]),
        _ => command.arg("--version"),
    };
    let text = cmd::output(&mut command)?;
    let expected = if name == PAUSE {
        PAUSE_VERSION
    } else {
        VERSION
    };
    if !text.contains(expected) {
        return Err(Error::BadOutput {
            path: path.into(),
            reason: format!(
                "version output does not mention {expected}: {}",
                text.trim()
            ),
            log: log.into(),
        });
    }
    Ok(())
}
