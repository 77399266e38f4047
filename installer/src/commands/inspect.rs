//! `ilha inspect FILE [--json] [--pubkey PUB]`.

use anyhow::Context as _;

use crate::cli::InspectArgs;

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let index = match &args.pubkey {
        Some(pubkey) => {
            let pubkey = ilha_format::load_public_key(pubkey).context("loading the public key")?;
            ilha_format::verify(&args.file, &pubkey)
                .context("verification failed")?
                .index
        }
        None => ilha_format::read_index(&args.file).context("reading the bundle index")?,
    };
    // Plain text, never coloured: identical on a terminal and in a pipe.
    let out = if args.json {
        ilha_format::inspect::render_json(&index)
    } else {
        ilha_format::inspect::render_text(&index)
    };
    print!("{out}");
    Ok(())
}
