//! The operator-side state directory as a whole: `recover` rebuilds a lost one from the hosts.

pub mod recover;
