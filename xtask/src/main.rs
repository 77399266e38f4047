//! `cargo xtask`: the project's own lab and chores.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ilha's lab: real hosts, a registry and Kubernetes binaries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Real hosts: up, down, status, ssh, kill (power cut), start (boot), wipe.
    Lab(xtask::lab::cli::LabArgs),
    /// The internet's stand-in: build Kubernetes and friends, serve them, write manifests/lab.yaml.
    Artifacts(xtask::artifacts::cli::ArtifactsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => xtask::lab::cli::run(args),
        Command::Artifacts(args) => xtask::artifacts::cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
