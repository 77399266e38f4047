//! One module per `ilha` subcommand.

pub mod backup;
pub mod inspect;
pub mod inventory;
pub mod kubeconfig;
pub mod remove;
pub mod reset;
pub mod restore;
pub mod secrets;
pub mod state;
pub mod up;
pub mod verify;
