//! `cargo xtask lab ...`: thin layer over [`crate::lab::Lab`]; every command holds the lab's lock.
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;

use super::{Lab, LabConfig};

/// `cargo xtask lab ...`
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build (debootstrap + customise) or unpack the hosts' base; cached in $ILHA_CACHE_DIR.
    Base,
    /// Boot hosts h1..hN and wait for their sshd (no-op for hosts already up).
    Up {
        #[arg(short = 'n', long = "hosts", default_value_t = 6)]
        hosts: usize,
    },
    /// Power off every host; remove mounts, cgroups, netns, veths, bridge, iptables rules. State kept.
    Down,
    /// `down`, then delete every host's state (the base cache stays).
    Wipe,
    /// Table of hosts: IP, running, SSH answering.
    Status,
    /// SSH into host N as root (a shell, or run CMD).
    Ssh {
        host: usize,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Power cut: SIGKILL host N's PID 1 (its state is kept).
    Kill { host: usize },
    /// Boot host N and wait for its sshd.
    Start { host: usize },
    /// Clean poweroff of host N.
    Stop { host: usize },
    /// Print the path of an ssh_config for `ssh -F FILE root@IP`.
    SshConfig,
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let lab = Lab::new(LabConfig::from_env());
    if let LabCommand::Ssh { host, command } = &args.command {
        // No lock: a shell into a host must not stop tests or other commands from running.
        let status = lab
            .ssh_command(*host)
            .args(command)
            .status()
            .with_context(|| format!("running ssh to h{host}"))?;
        std::process::exit(status.code().unwrap_or(255));
    }
    if let LabCommand::Status = args.command {
        // Read-only: answers even while a test suite holds the lab.
        return print_status(&lab);
    }
    let _lock = lab.lock()?;
    let started = Instant::now();
    match args.command {
        LabCommand::Base => {
            let base = lab.base()?;
            println!("base {} ready: {}", base.key, base.rootfs.display());
        }
        LabCommand::Up { hosts } => {
            let hosts = lab.up(hosts)?;
            let list: Vec<String> = hosts
                .iter()
                .map(|h| format!("{}={}", h.name, h.ip))
                .collect();
            println!(
                "up: {} ({:.1} s)",
                list.join(" "),
                started.elapsed().as_secs_f64()
            );
            println!(
                "ssh -F {} root@{}",
                lab.ssh_config()?.display(),
                hosts[0].ip
            );
        }
        LabCommand::Down => {
            lab.down()?;
            println!("down ({:.1} s)", started.elapsed().as_secs_f64());
        }
        LabCommand::Wipe => {
            lab.wipe()?;
            println!("wiped ({:.1} s)", started.elapsed().as_secs_f64());
        }
        LabCommand::Status => unreachable!("handled above"),
        LabCommand::Kill { host } => {
            lab.kill(host)?;
            println!("h{host}: power cut");
        }
        LabCommand::Start { host } => {
            let host = lab.start(host)?;
            println!(
                "{} up at {} ({:.1} s)",
                host.name,
                host.ip,
                started.elapsed().as_secs_f64()
            );
        }
        LabCommand::Stop { host } => {
            lab.stop(host)?;
            println!("h{host}: powered off");
        }
        LabCommand::SshConfig => println!("{}", lab.ssh_config()?.display()),
        LabCommand::Ssh { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn print_status(lab: &Lab) -> anyhow::Result<()> {
    println!("{:<5} {:<15} {:<8} SSH", "HOST", "IP", "RUNNING");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for status in lab.status()? {
        println!(
            "{:<5} {:<15} {:<8} {}",
            status.host.name,
            status.host.ip,
            yes_no(status.running),
            yes_no(status.ssh_ok)
        );
    }
    Ok(())
}
