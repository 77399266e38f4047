//! Integration tests of `ilha-bundler` against a local registry and file server.

mod build;
mod errors;
mod support;
