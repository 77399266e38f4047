//! `ilha-bundler`: turns a manifest into one signed, content-addressed bundle.

pub mod build;
pub mod cli;
pub mod download;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod mirror;
pub mod progress;
pub mod registry;

pub use build::{BuildOptions, BuildSummary, MirrorOptions, build, build_through};
pub use error::Error;
