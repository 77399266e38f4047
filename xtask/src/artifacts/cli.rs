/// `cargo xtask artifacts ...`
#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {}

pub fn run(_args: ArtifactsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
