//! `ilha`: the air-gapped side. The binary is a thin wrapper over `cli::main`; each concern has
//! its own module so later phases (`plan`, `up`) can reuse them.

pub mod access;
pub mod apiproxy;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod fsutil;
pub mod interrupt;
pub mod inventory;
pub mod kubeconfig;
pub mod pki;
pub mod preflight;
pub mod restore;
pub mod ssh;
pub mod state;
pub mod statedir;
