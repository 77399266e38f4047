//! `ilha verify FILE --pubkey PUB [--file-signature]`.

use anyhow::Context as _;
use ilha_format::verify::{FileSignatureCheck, verify_with};
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
    let file_check = if args.file_signature {
        // Asked for explicitly: a missing `FILE.minisig` must not pass silently as "absent".
        let sig = format!("{}{}", args.file.display(), ilha_format::SIG_SUFFIX);
        let exists = std::path::Path::new(&sig)
            .try_exists()
            .with_context(|| format!("checking for {sig}"))?;
        anyhow::ensure!(exists, "--file-signature: {sig} does not exist");
        FileSignatureCheck::Full
    } else {
        // The embedded index signature plus every entry's digest bind the content; the whole-file
        // BLAKE2b pass would cost as much again.
        FileSignatureCheck::KeyIdOnly
    };
    let verified = verify_with(&args.file, &pubkey, file_check).context("verification failed")?;
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
