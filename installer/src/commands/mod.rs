//! One module per `ilha` subcommand.

pub mod inspect;
pub mod inventory;
pub mod up;
pub mod verify;
