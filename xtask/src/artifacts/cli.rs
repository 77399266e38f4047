//! `cargo xtask artifacts build | serve | stop | manifest [--check]`
use std::time::Instant;

use anyhow::Context;

use crate::lab::LabConfig;

#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {
    #[command(subcommand)]
    command: ArtifactsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ArtifactsCommand {
    /// Build (or find in the cache) Kubernetes, the Debian binaries and the images.
    Build,
    /// Build if needed, then start the registry (127.0.0.1:5880) and mirror (127.0.0.1:5881) and push the images.
    Serve,
    /// Stop the registry and the mirror.
    Stop,
    /// Rewrite manifests/lab.yaml if it is stale (with --check: fail instead).
    Manifest {
        #[arg(long)]
        check: bool,
    },
}

pub fn run(args: ArtifactsArgs) -> anyhow::Result<()> {
    let config = LabConfig::from_env();
    let started = Instant::now();
    match args.command {
        ArtifactsCommand::Build => {
            let built = super::ensure_built(&config).context("artifacts build")?;
            for binary in &built.binaries {
                println!("{:<26} {}  {}", binary.name, binary.sha256, binary.origin);
            }
            for image in &built.images {
                println!(
                    "{:<26} {}  {}",
                    image.name,
                    image.layout.manifest_digest,
                    image.layout.dir.display()
                );
            }
            println!(
                "built in {:.1}s (cache: {})",
                started.elapsed().as_secs_f64(),
                config.cache_dir.display()
            );
        }
        ArtifactsCommand::Serve => {
            let (served, _upstream) =
                super::ensure_upstream_served(&config).context("artifacts serve")?;
            println!(
                "registry  http://{}  ({} images)",
                served.registry,
                served.artifacts.images.len()
            );
            println!(
                "mirror    http://{}  ({} binaries, tree {})",
                served.mirror,
                served.artifacts.binaries.len(),
                served.mirror_root.display()
            );
            println!("served in {:.1}s", started.elapsed().as_secs_f64());
        }
        ArtifactsCommand::Stop => {
            let stopped = super::stop(&config).context("artifacts stop")?;
            if stopped.is_empty() {
                println!("nothing was running");
            } else {
                println!("stopped {}", stopped.join(", "));
            }
        }
        ArtifactsCommand::Manifest { check } => {
            let path = super::manifest::path();
            if check {
                anyhow::ensure!(
                    super::manifest::is_current(&path)?,
                    "{} is stale: run `cargo xtask artifacts manifest`",
                    path.display()
                );
            } else if super::manifest::write(&path)? {
                println!("wrote {}", path.display());
            } else {
                println!("{} is up to date", path.display());
            }
        }
    }
    Ok(())
}
