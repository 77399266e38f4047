//! One module per `ilha` subcommand.

pub mod inspect;
pub mod verify;
