//! `ilha verify FILE --pubkey PUB`.

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::VerifyArgs;

#[derive(Serialize)]
struct VerifyJson<'a> {
    ok: bool,
    bundle: String,
    name: &'a str,
    version: &'a str,
    entries: usize,
    content_bytes: u64,
    bundle_bytes: u64,
    images: usize,
    binaries: usize,
    files: usize,
    file_signature: ilha_format::FileSignature,
    elapsed_seconds: f64,
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let pubkey = ilha_format::load_public_key(&args.pubkey).context("loading the public key")?;
    tracing::debug!(key_id = %pubkey.key_id(), bundle = %args.file.display(), "verifying");
    let verified = ilha_format::verify(&args.file, &pubkey).context("verification failed")?;
    if args.json {
        let i = &verified.index;
        let out = VerifyJson {
            ok: true,
            bundle: args.file.display().to_string(),
            name: &i.name,
            version: &i.version,
            entries: i.entries.len(),
            content_bytes: verified.content_bytes,
            bundle_bytes: verified.bundle_bytes,
            images: i.images.len(),
            binaries: i.binaries.len(),
            files: i.files.len(),
            file_signature: verified.file_signature,
            elapsed_seconds: verified.elapsed.as_secs_f64(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", verified.summary_line());
    }
    Ok(())
}
