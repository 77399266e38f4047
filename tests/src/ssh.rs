//! How the suites reach the lab's hosts with `ilha::ssh`.
use std::time::Duration;

use ilha::ssh::{KnownHostsPolicy, SshOptions, Target};
use xtask::lab::Lab;

/// Lab hosts `hosts` (indices) as root, named `hN`.
pub fn targets(lab: &Lab, hosts: &[usize]) -> Vec<Target> {
    hosts
        .iter()
        .map(|&index| {
            let host = lab.host(index);
            Target::new(host.name, host.ip).with_user("root")
        })
        .collect()
}

/// The lab's ssh_config (its key, root) and its known_hosts, checked strictly; a short connect
/// timeout (the lab answers in milliseconds) and a 1 s keepalive so power cuts show quickly.
pub fn lab_options(lab: &Lab, connect_timeout: Duration) -> SshOptions {
    SshOptions {
        config_file: Some(lab.ssh_config().expect("lab ssh_config")),
        known_hosts_file: Some(lab.known_hosts()),
        known_hosts_policy: KnownHostsPolicy::Strict,
        connect_timeout,
        server_alive_interval: Duration::from_secs(1),
        ..SshOptions::default()
    }
}
