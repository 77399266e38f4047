//! The lab's two images: Kubernetes 1.20's sandbox image (pause) and a small busybox test app.
use std::path::Path;

use serde_json::json;

use super::error::{Error, Result};
use super::oci::{ImageSpec, LayerEntry};

/// An image the lab makes: its canonical name (what containerd sees) and its path in the lab
/// registry (`127.0.0.1:5880/<registry_path>`).
#[derive(Debug, Clone, Copy)]
pub struct ImageName {
    pub name: &'static str,
    pub registry_path: &'static str,
    /// Directory name under `cache_dir/images`.
    pub slug: &'static str,
}

/// What kubelet 1.20 uses as its sandbox image by default.
pub const PAUSE: ImageName = ImageName {
    name: "k8s.gcr.io/pause:3.2",
    registry_path: "k8s/pause:3.2",
    slug: "pause",
};

/// A test application: busybox (sh, httpd, nc...). Serves `/www` on port 80 by default.
pub const BUSYBOX: ImageName = ImageName {
    name: "ilha.test/busybox:1",
    registry_path: "ilha/busybox:1",
    slug: "busybox",
};

pub const IMAGES: [ImageName; 2] = [PAUSE, BUSYBOX];

/// Page served by the busybox image's default command; tests look for it.
pub const BUSYBOX_INDEX_HTML: &str = "ilha busybox test app\n";

/// Applets linked into `/bin`. Not `wget`: Debian's static busybox wget segfaults.
const BUSYBOX_APPLETS: &[&str] = &[
    "cat", "date", "echo", "env", "false", "grep", "head", "hostname", "httpd", "id", "ip", "ls",
    "mkdir", "mount", "nc", "netstat", "ping", "printf", "ps", "rm", "sed", "sh", "sleep", "tail",
    "test", "true", "uname", "wc",
];

pub fn pause_spec(pause_binary: &Path) -> Result<ImageSpec> {
    let data = std::fs::read(pause_binary).map_err(Error::io("read", pause_binary))?;
    Ok(ImageSpec {
        reference: PAUSE.name.into(),
        entries: vec![LayerEntry::File {
            path: "pause".into(),
            mode: 0o755,
            data,
        }],
        // As upstream's pause image: nobody's uid, the binary as entrypoint.
        runtime_config: json!({ "User": "65535:65535", "Entrypoint": ["/pause"] }),
    })
}

pub fn busybox_spec(busybox_binary: &Path) -> Result<ImageSpec> {
    let data = std::fs::read(busybox_binary).map_err(Error::io("read", busybox_binary))?;
    let dir = |path: &str, mode| LayerEntry::Dir {
        path: path.into(),
        mode,
    };
    let file = |path: &str, text: &str| LayerEntry::File {
        path: path.into(),
        mode: 0o644,
        data: text.as_bytes().to_vec(),
    };
    let mut entries = vec![
        dir("bin", 0o755),
        dir("dev", 0o755),
        dir("etc", 0o755),
        dir("proc", 0o555),
        dir("sys", 0o555),
        dir("tmp", 0o1777),
        dir("www", 0o755),
        LayerEntry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data,
        },
        file(
            "etc/passwd",
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        file("www/index.html", BUSYBOX_INDEX_HTML),
    ];
    entries.extend(BUSYBOX_APPLETS.iter().map(|applet| LayerEntry::Symlink {
        path: format!("bin/{applet}"),
        target: "busybox".into(),
    }));
    Ok(ImageSpec {
        reference: BUSYBOX.name.into(),
        entries,
        runtime_config: json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/httpd", "-f", "-v", "-p", "80", "-h", "/www"],
            "ExposedPorts": { "80/tcp": {} },
        }),
    })
}
