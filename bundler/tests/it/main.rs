//! Integration tests of `ilha-bundler` against a local registry and file server.

mod archive;
mod build;
mod cluster;
mod errors;
mod mirrors;
mod support;
