//! Settings shared by the lab's hosts and its artifacts (see docs/lab.md).
use std::path::PathBuf;

/// Kubernetes' default ranges: the hosts' guard lets traffic to them through besides the lab /24.
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Plain-HTTP registry and file mirror on the machine's loopback (helper A serves them).
pub const REGISTRY_ADDR: &str = "127.0.0.1:5880";
pub const MIRROR_ADDR: &str = "127.0.0.1:5881";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Hosts, registry storage, mirror tree, lock, logs. `$ILHA_LAB_DIR` or `/var/lib/ilha-lab`.
    pub state_dir: PathBuf,
    /// Slow-to-make things that survive `wipe`. `$ILHA_CACHE_DIR` or `$HOME/.cache/ilha`.
    pub cache_dir: PathBuf,
    /// Start of every name made on the machine (netns, veth, bridge, cgroups). `$ILHA_LAB_PREFIX` or `ilha`.
    pub prefix: String,
    /// First three octets of the lab /24. `$ILHA_LAB_NET` or `10.88.0`.
    pub net: String,
}

impl Default for LabConfig {
    fn default() -> Self {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        LabConfig {
            state_dir: PathBuf::from("/var/lib/ilha-lab"),
            cache_dir: home.join(".cache/ilha"),
            prefix: "ilha".into(),
            net: "10.88.0".into(),
        }
    }
}

impl LabConfig {
    pub fn from_env() -> Self {
        let mut config = LabConfig::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(dir) = var("ILHA_LAB_DIR") {
            config.state_dir = dir.into();
        }
        if let Some(dir) = var("ILHA_CACHE_DIR") {
            config.cache_dir = dir.into();
        }
        if let Some(prefix) = var("ILHA_LAB_PREFIX") {
            config.prefix = prefix;
        }
        if let Some(net) = var("ILHA_LAB_NET") {
            config.net = net;
        }
        config
    }

    /// Names end up in interface names (15 bytes max: `{prefix}-h12-o`) and paths.
    pub fn validate(&self) -> crate::lab::Result<()> {
        use crate::lab::LabError::Invalid;
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 8
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !prefix_ok {
            return Err(Invalid {
                what: "ILHA_LAB_PREFIX (1-8 lowercase letters or digits)",
                value: self.prefix.clone(),
            });
        }
        let octets: Vec<&str> = self.net.split('.').collect();
        if octets.len() != 3 || !octets.iter().all(|o| o.parse::<u8>().is_ok()) {
            return Err(Invalid {
                what: "ILHA_LAB_NET (three octets, e.g. 10.88.0)",
                value: self.net.clone(),
            });
        }
        Ok(())
    }

    pub fn bridge(&self) -> String {
        format!("{}br0", self.prefix)
    }
    pub fn bridge_ip(&self) -> String {
        format!("{}.1", self.net)
    }
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.net)
    }
    /// Comment on every iptables rule the lab adds on the machine, so `down` finds them all.
    pub fn rule_comment(&self) -> String {
        format!("{}-lab", self.prefix)
    }
    pub fn lab_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("lab")
    }
    pub fn hosts_dir(&self) -> PathBuf {
        self.state_dir.join("hosts")
    }
    pub fn ssh_dir(&self) -> PathBuf {
        self.state_dir.join("ssh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prefix_and_net() {
        let config = LabConfig {
            prefix: "lab2".into(),
            net: "10.90.1".into(),
            ..LabConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(config.bridge(), "lab2br0");
        assert_eq!(config.bridge_ip(), "10.90.1.1");
        assert_eq!(config.subnet(), "10.90.1.0/24");
        assert_eq!(config.rule_comment(), "lab2-lab");
        assert_eq!(crate::lab::host_ip(&config, 3), "10.90.1.13");
        assert_eq!(crate::lab::net::host_index(&config, "lab2-h12"), Some(12));
        assert_eq!(crate::lab::net::host_index(&config, "ilha-h1"), None);
    }

    #[test]
    fn rejects_names_that_break_interfaces_or_addresses() {
        for (prefix, net) in [
            ("too-long-prefix", "10.88.0"),
            ("", "10.88.0"),
            ("ilha", "10.88"),
            ("ilha", "10.300.0"),
        ] {
            let config = LabConfig {
                prefix: prefix.into(),
                net: net.into(),
                ..LabConfig::default()
            };
            assert!(config.validate().is_err(), "{prefix} {net}");
        }
    }
}
