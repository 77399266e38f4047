//! One module per `ilha` subcommand.

pub mod inspect;
pub mod inventory;
pub mod remove;
pub mod reset;
pub mod up;
pub mod verify;
