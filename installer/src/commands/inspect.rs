//! `ilha inspect FILE [--json] [--pubkey PUB]`.

use anyhow::Context as _;

use crate::cli::InspectArgs;

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    // A restore kit opens with its manifest; anything else is read as a bundle.
    if let Ok(manifest) = crate::backup::kit::read_manifest(&args.file) {
        if let Some(pubkey) = &args.pubkey {
            let pubkey = ilha_format::load_public_key(pubkey).context("loading the public key")?;
            crate::backup::kit::verify_signature(&args.file, &pubkey)
                .context("verification failed")?;
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest).expect("plain data serializes")
            );
        } else {
            print!("{}", crate::backup::kit::render_inspect(&manifest));
        }
        return Ok(());
    }
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
