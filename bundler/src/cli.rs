//! Command line: `keygen`, `build`, `inspect`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::build::{BuildOptions, MirrorOptions, build_through};
use crate::manifest::Platform;
use crate::mirror::{self, Rewrite};

#[derive(Debug, Parser)]
#[command(
    name = "ilha-bundler",
    version,
    about = "Builds signed ilha bundles from a manifest"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a minisign key pair: DIR/ilha.key and DIR/ilha.pub.
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Encrypt the secret key with the password in this file (first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Pull images and download files listed in MANIFEST into one signed bundle.
    Build {
        manifest: PathBuf,
        /// Secret key (ilha.key).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Password of an encrypted secret key (first line of the file).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Output file [default: bundles/<name>-<version>.tar.zst].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Registry (host:port) to reach over plain HTTP. Repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registries: Vec<String>,
        /// Platform to pick from multi-arch images [default: the manifest's, or linux/amd64].
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<Platform>,
        /// Downloads in flight at once.
        #[arg(long, default_value_t = 6)]
        jobs: usize,
        /// zstd level of the bundle (layers are compressed already: keep it low).
        #[arg(long, default_value_t = 1, hide = true)]
        zstd_level: i32,
        /// Fetch URLs starting with FROM from TO instead (longest FROM wins; wins over the
        /// manifest's `mirrors.files`). Repeatable.
        #[arg(long = "mirror", value_name = "FROM=TO", value_parser = mirror::parse_url_rule)]
        mirrors: Vec<Rewrite>,
        /// Pull images of registry[/path] FROM from TO instead, e.g.
        /// registry.k8s.io=nexus.example:8443/k8s (wins over `mirrors.registries`). Repeatable.
        #[arg(long = "registry-mirror", value_name = "FROM=TO", value_parser = mirror::parse_registry_rule)]
        registry_mirrors: Vec<Rewrite>,
    },
    /// Show a bundle's index (unverified; `ilha verify` checks signatures).
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read password file", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        bail!("{}: password file is empty", path.display());
    }
    Ok(password)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out, password_file } => {
            let password = password_file.as_deref().map(read_password).transpose()?;
            if password.is_none() {
                eprintln!(
                    "warning: no --password-file: the secret key is stored UNENCRYPTED; keep it safe"
                );
            }
            std::fs::create_dir_all(&out)
                .with_context(|| format!("{}: cannot create directory", out.display()))?;
            let (key, public) = ilha_format::generate_keypair(&out, password.as_deref())?;
            println!("secret key: {}", key.display());
            println!("public key: {}", public.display());
            Ok(())
        }
        Command::Build {
            manifest,
            key,
            password_file,
            out,
            insecure_registries,
            platform,
            jobs,
            zstd_level,
            mirrors,
            registry_mirrors,
        } => {
            let password = password_file.as_deref().map(read_password).transpose()?;
            let options = BuildOptions {
                manifest,
                key,
                password,
                out,
                insecure_registries,
                platform,
                jobs,
                zstd_level,
            };
            let mirrors = MirrorOptions {
                files: mirrors,
                registries: registry_mirrors,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let summary = runtime.block_on(async {
                let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!("interrupted: cleaning up");
                        let _ = cancel_tx.send(true);
                    }
                });
                build_through(&options, &mirrors, cancel_rx).await
            })?;
            let saved = summary.image_blobs_referenced - summary.image_blobs_stored;
            if !summary.mirrored.is_empty() {
                println!("through mirrors ({} sources):", summary.mirrored.len());
                for source in &summary.mirrored {
                    println!("  {source}");
                }
            }
            println!(
                "built {} ({} bytes), signature {}",
                summary.bundle.display(),
                summary.bundle_bytes,
                summary.signature.display()
            );
            println!(
                "images: {}, image blobs: {} stored ({} deduplicated), binaries: {}, files: {}",
                summary.images, summary.image_blobs_stored, saved, summary.binaries, summary.files
            );
            println!(
                "content: {} bytes, time: {:.2}s",
                summary.content_bytes,
                summary.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Inspect { file, json } => {
            let index = ilha_format::read_index(&file)?;
            // Same rendering as `ilha inspect`.
            let text = if json {
                ilha_format::inspect::render_json(&index)
            } else {
                ilha_format::inspect::render_text(&index)
            };
            print!("{text}");
            Ok(())
        }
    }
}
