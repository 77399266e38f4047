//! `archive_member`: one file out of an upstream `.tar.gz`, the archive pinned by its own digest.

use crate::support::*;

/// A gzip'd tar like upstream release archives: a directory entry, regular files, a symlink.
fn release_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "./bin/", std::io::empty())
        .unwrap();
    for (path, seed, len) in [("./bin/containerd", 40, 90_000), ("./bin/ctr", 41, 40_000)] {
        let data = random_bytes(seed, len);
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, &data[..]).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "./bin/runc", "containerd")
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn archive_manifest(
    ws: &Workspace,
    url: &str,
    sum: &str,
    members: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut text = String::from("name: arch\nversion: '1'\nbinaries:\n");
    for (name, member) in members {
        text.push_str(&format!(
            "  - name: {name}\n    url: {url}\n    sha256_url: {sum}\n    archive_member: {member}\n"
        ));
    }
    ws.write_manifest(&text)
}

fn serve_archive(files: &FileServer, archive: &[u8]) -> (String, String) {
    let url = files.add(
        "/containerd-2.3.5-linux-amd64.tar.gz",
        Route::Body(archive.to_vec()),
    );
    let sum = files.add(
        "/containerd-2.3.5-linux-amd64.tar.gz.sha256sum",
        Route::Body(
            format!(
                "{}  containerd-2.3.5-linux-amd64.tar.gz\n",
                sha256_hex(archive)
            )
            .into_bytes(),
        ),
    );
    (url, sum)
}

#[test]
fn members_are_extracted_and_recorded_by_their_own_digest() {
    let files = FileServer::start();
    let archive = release_archive();
    let (url, sum) = serve_archive(&files, &archive);
    let ws = Workspace::new();
    // `bin/ctr` written without `./`: the tar's `./bin/ctr` is the same member.
    let manifest = archive_manifest(
        &ws,
        &url,
        &sum,
        &[("containerd", "./bin/containerd"), ("ctr", "bin/ctr")],
    );
    expect_success(&ws.build(&manifest, &[]));

    let index = ilha_format::read_index(&ws.bundle()).unwrap();
    let digest_of = |name: &str| {
        index
            .binaries
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} not in the index"))
    };
    let containerd = digest_of("containerd");
    assert_eq!(
        containerd.sha256.to_string(),
        sha256_hex(&random_bytes(40, 90_000))
    );
    assert_eq!(containerd.size, 90_000);
    assert_eq!(containerd.source, format!("{url}#bin/containerd"));
    assert_eq!(
        digest_of("ctr").sha256.to_string(),
        sha256_hex(&random_bytes(41, 40_000))
    );
    assert_ne!(
        containerd.sha256.to_string(),
        sha256_hex(&archive),
        "not the archive itself"
    );
    assert_eq!(
        files.hits("/containerd-2.3.5-linux-amd64.tar.gz"),
        1,
        "downloaded once for both members"
    );

    // The member's bytes are what the bundle holds, as a 0755 entry.
    let entry = index
        .entries
        .iter()
        .find(|e| e.sha256 == containerd.sha256)
        .unwrap();
    assert_eq!(entry.mode, 0o755);
    let pubkey = ilha_format::load_public_key(&ws.public_key()).unwrap();
    ilha_format::verify(&ws.bundle(), &pubkey).unwrap();
}

#[test]
fn a_missing_member_names_the_archive_and_the_member() {
    let files = FileServer::start();
    let (url, sum) = serve_archive(&files, &release_archive());
    let ws = Workspace::new();
    let manifest = archive_manifest(&ws, &url, &sum, &[("shim", "bin/containerd-shim-runc-v2")]);
    let err = expect_failure(&ws.build(&manifest, &[]));
    for needle in [
        "binary shim",
        "manifest.yaml:4:",
        url.as_str(),
        "member bin/containerd-shim-runc-v2",
        "no such member",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    ws.assert_out_clean();
}

#[test]
fn an_archive_with_another_digest_is_refused_before_extraction() {
    let files = FileServer::start();
    let archive = release_archive();
    let (_, sum) = serve_archive(&files, &archive);
    // The checksum file describes the real archive; the server now hands out another one.
    let mut tampered = archive.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 0xff;
    let url = files.add(
        "/containerd-2.3.5-linux-amd64.tar.gz",
        Route::Body(tampered.clone()),
    );
    let ws = Workspace::new();
    let manifest = archive_manifest(&ws, &url, &sum, &[("containerd", "bin/containerd")]);
    let err = expect_failure(&ws.build(&manifest, &[]));
    for needle in [
        "binary containerd (archive)",
        url.as_str(),
        "sha256 mismatch",
        &sha256_hex(&archive),
        &sha256_hex(&tampered),
    ] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    ws.assert_out_clean();
}

#[test]
fn a_member_that_is_a_link_or_a_directory_is_refused() {
    let files = FileServer::start();
    let (url, sum) = serve_archive(&files, &release_archive());
    for (member, kind) in [("bin/runc", "symbolic link"), ("bin", "directory")] {
        let ws = Workspace::new();
        let manifest = archive_manifest(&ws, &url, &sum, &[("x", member)]);
        let err = expect_failure(&ws.build(&manifest, &[]));
        assert!(
            err.contains(&format!("member {member}: is a {kind}, not a regular file")),
            "{member}: {err}"
        );
        ws.assert_out_clean();
    }
}
