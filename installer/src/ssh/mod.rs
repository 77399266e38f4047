//! SSH fan-out: one multiplexed connection per host through the system `ssh` (so the operator's
//! `~/.ssh/config`, agent, ProxyJump and known_hosts apply), commands and file transfers run on
//! many hosts in parallel with bounded concurrency, and per-host results that never hide a failure.
//! See docs/ssh.md.
mod error;
mod fleet;
pub mod lock;
mod options;
mod report;
mod session;

pub use error::{ConnectFailure, FleetError, SshError};
pub use fleet::Fleet;
pub use options::{KnownHostsPolicy, SshOptions, Target};
pub use report::{HostOutcome, Report};
pub use session::{Output, Session, UploadSource, shell_quote};
