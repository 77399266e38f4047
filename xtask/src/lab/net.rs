//! The machine's side of the lab network: one bridge, one netns + veth per host, FORWARD rules
//! that keep every packet inside the lab, and the kernel tunables kubelet insists on.
use std::fs;
use std::path::Path;

use super::cmd::{self, run_args, succeeds};
use super::{LabConfig, LabError, Result};

/// kubelet refuses to start unless these are already set; `/proc/sys` is read-only inside the hosts
/// and `vm.*`/`kernel.*` are shared with the machine, so set them here.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Limits the hosts share, being one kernel and one uid 0: every kubelet, containerd and systemd
/// takes inotify instances from the same per-user budget (128 by default), and kubelet dies with
/// "inotify_init: too many open files" past about ten nodes. Raised, never lowered.
pub const SHARED_MINIMUMS: &[(&str, u64)] = &[
    ("fs/inotify/max_user_instances", 8192),
    ("fs/inotify/max_user_watches", 1048576),
];

pub fn set_sysctls() -> Result<()> {
    for (key, value) in KUBELET_SYSCTLS {
        let path = Path::new("/proc/sys").join(key);
        let current = fs::read_to_string(&path).map_err(|e| LabError::io(&path, e))?;
        if current.trim() != *value {
            fs::write(&path, value).map_err(|e| LabError::io(&path, e))?;
        }
    }
    for (key, minimum) in SHARED_MINIMUMS {
        let path = Path::new("/proc/sys").join(key);
        let current = fs::read_to_string(&path).map_err(|e| LabError::io(&path, e))?;
        if current.trim().parse::<u64>().is_ok_and(|v| v < *minimum) {
            fs::write(&path, minimum.to_string()).map_err(|e| LabError::io(&path, e))?;
        }
    }
    Ok(())
}

pub fn netns_name(config: &LabConfig, index: usize) -> String {
    format!("{}-h{index}", config.prefix)
}

pub fn veth_name(config: &LabConfig, index: usize) -> String {
    format!("{}-h{index}-o", config.prefix)
}

pub fn link_exists(name: &str) -> Result<bool> {
    succeeds("ip", ["link", "show", "dev", name])
}

/// The FORWARD rules, each tagged with the lab's comment.
fn forward_rules(config: &LabConfig) -> Vec<Vec<String>> {
    let bridge = config.bridge();
    let comment = config.rule_comment();
    let rule = |args: &[&str]| -> Vec<String> {
        let mut rule: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        rule.extend(["-m", "comment", "--comment", &comment, "-j"].map(String::from));
        rule
    };
    let mut rules = vec![
        // Nothing from or to the bridge is ever routed elsewhere.
        rule(&["-i", &bridge, "!", "-o", &bridge]),
        rule(&["-o", &bridge, "!", "-i", &bridge]),
        // Host to host (bridged frames traverse FORWARD when br_netfilter is on).
        rule(&["-i", &bridge, "-o", &bridge]),
    ];
    rules[0].push("DROP".into());
    rules[1].push("DROP".into());
    rules[2].push("ACCEPT".into());
    rules
}

/// Routes to the lab subnet that are not ours mean someone else uses it.
fn foreign_route(config: &LabConfig) -> Result<Option<String>> {
    let routes = run_args("ip", ["-4", "-o", "route", "show", "table", "all"])?;
    let bridge = config.bridge();
    let subnet_prefix = format!("{}.", config.net);
    Ok(routes
        .lines()
        .find(|line| {
            let dst = line
                .split_whitespace()
                .find(|w| !matches!(*w, "local" | "broadcast" | "unicast"))
                .unwrap_or("");
            dst.starts_with(&subnet_prefix) && !line.contains(&format!("dev {bridge} "))
        })
        .map(str::to_string))
}

pub fn bridge_up(config: &LabConfig) -> Result<()> {
    let bridge = config.bridge();
    if let Some(route) = foreign_route(config)? {
        return Err(LabError::SubnetTaken {
            net: config.net.clone(),
            route,
        });
    }
    if !link_exists(&bridge)? {
        run_args("ip", ["link", "add", &bridge, "type", "bridge"])?;
        run_args(
            "ip",
            [
                "addr",
                "add",
                &format!("{}/24", config.bridge_ip()),
                "dev",
                &bridge,
            ],
        )?;
        run_args("ip", ["link", "set", &bridge, "up"])?;
    }
    // Inserted in reverse so they end up in order at the top of FORWARD.
    for rule in forward_rules(config).iter().rev() {
        let mut check = vec!["-w".to_string(), "-C".into(), "FORWARD".into()];
        check.extend(rule.iter().cloned());
        if !succeeds("iptables", &check)? {
            let mut insert = vec!["-w".to_string(), "-I".into(), "FORWARD".into()];
            insert.extend(rule.iter().cloned());
            run_args("iptables", &insert)?;
        }
    }
    Ok(())
}

/// netns + veth (eth0 inside) + address + default route via the bridge (kubelet and etcd want one;
/// the machine drops what would leave).
pub fn host_net_up(config: &LabConfig, index: usize, ip: &str) -> Result<()> {
    let netns = netns_name(config, index);
    let veth = veth_name(config, index);
    if Path::new("/run/netns").join(&netns).exists() && link_exists(&veth)? {
        return Ok(());
    }
    host_net_down(config, index)?;
    run_args("ip", ["netns", "add", &netns])?;
    run_args(
        "ip",
        [
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ],
    )?;
    run_args(
        "ip",
        ["link", "set", &veth, "master", &config.bridge(), "up"],
    )?;
    run_args(
        "ip",
        [
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ],
    )?;
    run_args("ip", ["-n", &netns, "link", "set", "lo", "up"])?;
    run_args("ip", ["-n", &netns, "link", "set", "eth0", "up"])?;
    run_args(
        "ip",
        [
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &config.bridge_ip(),
        ],
    )?;
    Ok(())
}

pub fn host_net_down(config: &LabConfig, index: usize) -> Result<()> {
    let veth = veth_name(config, index);
    if link_exists(&veth)? {
        run_args("ip", ["link", "del", &veth])?;
    }
    let netns = netns_name(config, index);
    if Path::new("/run/netns").join(&netns).exists() {
        run_args("ip", ["netns", "del", &netns])?;
    }
    Ok(())
}

/// The lab's netns names present on the machine (`{prefix}-hN`).
pub fn lab_netns(config: &LabConfig) -> Result<Vec<String>> {
    let listing = run_args("ip", ["netns", "list"])?;
    Ok(listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| host_index(config, name).is_some())
        .map(str::to_string)
        .collect())
}

/// The lab's veth names present on the machine (`{prefix}-hN-o`).
pub fn lab_veths(config: &LabConfig) -> Result<Vec<String>> {
    let listing = run_args("ip", ["-o", "link", "show"])?;
    Ok(listing
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| {
            name.strip_suffix("-o")
                .is_some_and(|n| host_index(config, n).is_some())
        })
        .map(str::to_string)
        .collect())
}

/// `ilha-h3` -> Some(3).
pub fn host_index(config: &LabConfig, name: &str) -> Option<usize> {
    name.strip_prefix(&config.prefix)?
        .strip_prefix("-h")?
        .parse()
        .ok()
}

/// iptables rules on the machine that carry the lab's comment, as `-A ...` lines.
pub fn lab_rules(config: &LabConfig) -> Result<Vec<String>> {
    let comment = config.rule_comment();
    let mut rules = Vec::new();
    for table in ["filter", "nat", "mangle", "raw"] {
        let listing = run_args("iptables", ["-w", "-t", table, "-S"])?;
        rules.extend(
            listing
                .lines()
                .filter(|l| l.starts_with("-A ") && l.contains(&comment))
                .map(|l| format!("-t {table} {l}")),
        );
    }
    Ok(rules)
}

/// Removes every iptables rule tagged with the lab's comment, the veths, the netns and the bridge.
pub fn all_down(config: &LabConfig) -> Result<()> {
    for veth in lab_veths(config)? {
        run_args("ip", ["link", "del", &veth])?;
    }
    for netns in lab_netns(config)? {
        run_args("ip", ["netns", "del", &netns])?;
    }
    let bridge = config.bridge();
    if link_exists(&bridge)? {
        run_args("ip", ["link", "del", &bridge])?;
    }
    for rule in lab_rules(config)? {
        // "-t filter -A FORWARD ..." -> "-t filter -D FORWARD ..."; the comment has no spaces.
        let args: Vec<String> = rule
            .split_whitespace()
            .map(|w| {
                if w == "-A" {
                    "-D".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        let mut delete = vec!["-w".to_string()];
        delete.extend(args);
        cmd::run_args("iptables", &delete)?;
    }
    Ok(())
}
