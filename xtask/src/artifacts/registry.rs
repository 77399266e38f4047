//! Debian's `docker-registry` on 127.0.0.1:5880 and a static HTTP mirror on 127.0.0.1:5881
//! (`python3 -m http.server`: threaded, so concurrent downloads don't queue), and pushing images.
use std::path::Path;
use std::process::Command;

use super::daemon::{self, Daemon};
use super::error::Result;
use super::{Image, cmd, fsutil, mirror_addr, registry_addr};
use crate::lab::LabConfig;

pub fn registry_daemon(config: &LabConfig) -> Daemon {
    Daemon {
        name: "registry",
        addr: registry_addr(),
        pid_file: config.state_dir.join("run/registry.pid"),
        log: config.state_dir.join("registry/registry.log"),
        probe_path: "/v2/",
        cmdline_marker: "docker-registry",
    }
}

pub fn mirror_daemon(config: &LabConfig) -> Daemon {
    Daemon {
        name: "mirror",
        addr: mirror_addr(),
        pid_file: config.state_dir.join("run/mirror.pid"),
        log: config.state_dir.join("mirror.log"),
        probe_path: "/",
        cmdline_marker: "http.server",
    }
}

/// Starts the registry unless it runs; storage in `state_dir/registry/data`.
pub fn ensure_running(config: &LabConfig) -> Result<bool> {
    let dir = config.state_dir.join("registry");
    let data = dir.join("data");
    fsutil::create_dir_all(&data)?;
    let addr = registry_addr();
    let yaml = format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        data.display()
    );
    let config_file = dir.join("config.yml");
    if std::fs::read(&config_file).ok().as_deref() != Some(yaml.as_bytes()) {
        fsutil::write_atomic(&config_file, yaml.as_bytes())?;
    }
    let mut command = Command::new("docker-registry");
    command.arg("serve").arg(&config_file);
    registry_daemon(config).ensure(command)
}

/// Starts the HTTP mirror on `root` unless it runs.
pub fn ensure_mirror_running(config: &LabConfig, root: &Path) -> Result<bool> {
    let addr = mirror_addr();
    let mut command = Command::new("python3");
    command
        .args(["-m", "http.server", "--bind"])
        .arg(addr.ip().to_string())
        .arg("--directory")
        .arg(root)
        .arg(addr.port().to_string());
    mirror_daemon(config).ensure(command)
}

/// `skopeo copy` of the image's OCI layout to the lab registry. skopeo skips blobs the
/// registry has, and keeps our manifest byte for byte (same digest as the layout).
pub fn push(image: &Image) -> Result<()> {
    let (_, path) = image
        .registry_ref
        .split_once('/')
        .expect("registry_ref is HOST/REPOSITORY:TAG");
    let (repository, tag) = path.rsplit_once(':').expect("registry_ref has a tag");
    let present = daemon::registry_manifest_digest(registry_addr(), repository, tag);
    if present.as_deref() == Some(image.layout.manifest_digest.as_str()) {
        return Ok(());
    }
    let source = format!(
        "oci:{}:{}",
        image.layout.dir.display(),
        image.layout.reference
    );
    let dest = format!("docker://{}", image.registry_ref);
    let mut command = Command::new("skopeo");
    command
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(&source)
        .arg(&dest);
    cmd::output(&mut command).map(|_| ())
}
