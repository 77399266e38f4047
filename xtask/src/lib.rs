//! The ilha lab, as a library: the end-to-end suites and `cargo xtask` share it.
//!
//! - [`lab`]: N real hosts (`systemd-nspawn --boot`) on one bridge, with power-cut and boot.
//! - [`artifacts`]: what the internet would give the bundler: Kubernetes binaries built from Debian's
//!   source package, etcd/containerd/runc/CNI from Debian's packages, images in a local registry and
//!   files on a local HTTP mirror.

pub mod artifacts;
pub mod lab;
