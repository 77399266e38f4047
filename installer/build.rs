//! Builds `ilha-apiproxy` (the node-local API proxy the installer uploads to every worker) as a
//! static executable, for the installer to embed with `include_bytes!`.
//!
//! Static because workers may run an older C library than the operator's machine (Debian 11,
//! Ubuntu 20.04, RHEL 8): a static binary has no GLIBC_2.x symbol requirement at all. A nested
//! `cargo build` with an explicit `--target` keeps `+crt-static` away from proc-macros and build
//! scripts, and its own target directory (shared by debug and release builds of the installer)
//! keeps it clear of the outer build's lock. Its profile is set here through the environment
//! (size over speed, LTO, stripped) and so changes nothing for the rest of the workspace.
//!
//! `ILHA_APIPROXY_BINARY=/path` embeds a prebuilt binary instead (cross builds, packagers).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("installer/ is inside the workspace");
    let crate_dir = root.join("apiproxy");
    for watched in [
        crate_dir.join("src"),
        crate_dir.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=ILHA_APIPROXY_BINARY");

    let out_dir = PathBuf::from(env("OUT_DIR"));
    let embedded = out_dir.join("ilha-apiproxy");
    let source = match std::env::var_os("ILHA_APIPROXY_BINARY") {
        Some(prebuilt) => PathBuf::from(prebuilt),
        None => build_static(root, &out_dir),
    };
    std::fs::copy(&source, &embedded).unwrap_or_else(|err| {
        panic!(
            "cannot copy {} to {}: {err}",
            source.display(),
            embedded.display()
        )
    });
    println!(
        "cargo:rustc-env=ILHA_APIPROXY_BINARY={}",
        embedded.display()
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

fn build_static(root: &Path, out_dir: &Path) -> PathBuf {
    let target = env("TARGET");
    if !target.ends_with("-linux-gnu") {
        panic!(
            "ilha-apiproxy is built static for *-linux-gnu targets only, not {target}: build it \
             yourself and point ILHA_APIPROXY_BINARY at it"
        );
    }
    let target_dir = shared_target_dir(out_dir).join("ilha-apiproxy-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "ilha-apiproxy",
            "--bin",
            "ilha-apiproxy",
        ])
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags and wrappers (clippy's, a coverage tool's) are not for this one.
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false");
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run cargo to build ilha-apiproxy: {err}"));
    if !output.status.success() {
        panic!(
            "building the static ilha-apiproxy failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    target_dir
        .join(&target)
        .join("release")
        .join("ilha-apiproxy")
}

/// The outer build's target directory (the ancestor of OUT_DIR holding cargo's CACHEDIR.TAG),
/// so that debug and release builds of the installer share one build of the proxy; OUT_DIR
/// itself when it cannot be found.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_path_buf()
}
