//! The rules for the names a bundle gives to its binaries, files and images.
//!
//! One place, used both by the bundler when it reads a manifest and by [`crate::Index::validate`]
//! when a bundle is read: an index can never name something the bundler would have refused, even
//! when it was re-signed by hand. The installer puts these names into paths and shell scripts on
//! hosts, so the rules leave no room for a path separator, `..`, a leading `-` (read as an
//! option), whitespace, quotes or any other shell metacharacter.

/// Longest binary or file name, in bytes.
pub const MAX_ARTIFACT_NAME: usize = 100;
/// Longest repository part of an image reference (`registry/path`), as in the distribution spec.
pub const MAX_IMAGE_NAME: usize = 255;
/// Longest tag, as in the distribution spec.
pub const MAX_IMAGE_TAG: usize = 128;
/// Longest digest hex part (sha512 is 128).
pub const MAX_DIGEST_HEX: usize = 128;

/// A bundle name: `[a-z0-9-]+`.
pub fn check_bundle_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("bad bundle name {name:?}: use [a-z0-9-]+"));
    }
    Ok(())
}

/// A bundle version: not empty, without blanks, control characters or `/`.
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "bad version {version:?}: must be non-empty, without blanks or '/'"
        ));
    }
    Ok(())
}

/// A platform, `os/arch[/variant]`, each part of `[a-z0-9_]` (as in OCI image indexes).
pub fn check_platform(platform: &str) -> Result<(), String> {
    let parts: Vec<&str> = platform.split('/').collect();
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid_part(p)) {
        return Err(format!(
            "bad platform {platform:?}: expected os/arch[/variant], e.g. linux/amd64"
        ));
    }
    Ok(())
}

/// A binary or data file name: one path component of `[A-Za-z0-9._-]`, at most
/// [`MAX_ARTIFACT_NAME`] bytes, not starting with `.` or `-`, without `..`.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_ARTIFACT_NAME {
        return Err(format!(
            "the name is {} bytes long (at most {MAX_ARTIFACT_NAME})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed in a name: use [A-Za-z0-9._-] (one file name, no `/`)"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err("a name must not start with `.` or `-`".into());
    }
    if name.contains("..") {
        return Err("a name must not contain `..`".into());
    }
    Ok(())
}

/// An image reference in the distribution grammar, `[domain[:port]/]path[:tag][@algorithm:hex]`:
/// lowercase path components separated by `.`, `_`, `__` or dashes; a tag of `[A-Za-z0-9_.-]`;
/// a digest of letters, digits, `+._-` and hex. IPv6 registry literals (`[::1]:5000/…`) are not
/// accepted: brackets are shell glob characters. Everything else (blanks, newlines, quotes, `$`,
/// `;`, `|`, `&`, backquotes…) falls outside the grammar.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("the reference is empty".into());
    }
    if let Some(c) = reference.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '+'))
    }) {
        return Err(format!(
            "{c:?} is not allowed in an image reference ([A-Za-z0-9._/:@+-] only)"
        ));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag's `:` comes after the last `/`; a `:` before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if name.len() > MAX_IMAGE_NAME {
        return Err(format!(
            "the repository name is {} bytes long (at most {MAX_IMAGE_NAME})",
            name.len()
        ));
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let has_more = name.contains('/');
    if !(is_path_component(first) || has_more && is_domain(first)) {
        return Err(format!(
            "{first:?} is neither a registry host[:port] nor a lowercase path component"
        ));
    }
    for component in components {
        if !is_path_component(component) {
            return Err(format!(
                "path component {component:?} must be lowercase letters and digits, \
                 separated by `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or `-+`, always followed by an alphanumeric (checked by
        // the loop, since the component ends alphanumeric).
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !bytes.get(i).is_some_and(|&b| alnum(b)) {
            return false;
        }
    }
    true
}

/// `host[:port]`, the host being DNS labels (`[A-Za-z0-9]` with inner `-`) joined by `.`.
fn is_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty()
        || b.len() > MAX_IMAGE_TAG
        || !word(b[0])
        || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
    {
        return Err(format!(
            "tag {tag:?} must be 1-{MAX_IMAGE_TAG} of [A-Za-z0-9_.-], not starting with `.` or `-`"
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "digest {digest:?} must be algorithm:hex (e.g. sha256: and 64 hex digits)"
        ))
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad();
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            let b = part.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    let hex_ok =
        (32..=MAX_DIGEST_HEX).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !algorithm_ok || !hex_ok {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_and_versions() {
        assert_eq!(check_bundle_name("lab-2"), Ok(()));
        assert_eq!(check_version("1.0.0-test+x"), Ok(()));
        for bad in ["", "Lab", "a b", "a/b", "a_b"] {
            assert!(check_bundle_name(bad).is_err(), "{bad}");
        }
        for bad in ["", "1 0", "1/0", "1\n"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms() {
        for ok in ["linux/amd64", "linux/arm64/v8", "linux/ppc64le"] {
            assert_eq!(check_platform(ok), Ok(()), "{ok}");
        }
        for bad in [
            "linux",
            "linux/",
            "Linux/amd64",
            "linux/amd64/v8/x",
            "linux/amd 64",
            "a/b;c",
        ] {
            assert!(check_platform(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_names() {
        for ok in [
            "kubelet",
            "containerd-shim-runc-v2",
            "addon-lab-check.yaml",
            "notes.txt",
            "a_b.C-9",
            &"x".repeat(MAX_ARTIFACT_NAME),
        ] {
            assert_eq!(check_artifact_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("..", "start with"),
            (".", "start with"),
            ("../x", "'/'"),
            ("a/b", "'/'"),
            ("/etc/passwd", "'/'"),
            (".hidden", "start with"),
            ("-rf", "start with"),
            ("a..b", "`..`"),
            ("a b", "' '"),
            ("a\nb", "'\\n'"),
            ("a\0b", "'\\0'"),
            ("a'b", "'\\''"),
            ("$(reboot)", "'$'"),
            ("a\\b", "'\\\\'"),
            ("café", "'é'"),
            (&"x".repeat(MAX_ARTIFACT_NAME + 1), "bytes long"),
        ] {
            let err = check_artifact_name(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn image_references() {
        let hex = "a".repeat(64);
        for ok in [
            "registry.k8s.io/pause:3.2".to_string(),
            "k8s.gcr.io/pause:3.2".into(),
            "registry.k8s.io/coredns/coredns:v1.12.0".into(),
            "ilha.test/busybox:1".into(),
            "docker.io/library/busybox:latest".into(),
            "127.0.0.1:5880/k8s/pause:3.2".into(),
            "localhost:5000/a__b/c-d.e---f:Tag_1.x-y".into(),
            "busybox".into(),
            "Registry.Example/a".into(),
            format!("registry.k8s.io/pause@sha256:{hex}"),
            format!("registry.k8s.io/pause:3.2@sha256:{hex}"),
            format!("h:1/x@sha512+b64u.x-y_z:{}", "0".repeat(128)),
        ] {
            assert_eq!(check_image_reference(&ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("registry.k8s.io/pause:$(reboot)", "'$'"),
            ("registry.k8s.io/pause:3.2\nrm -rf /", "'\\n'"),
            ("registry.k8s.io/pause 3.2", "' '"),
            ("registry.k8s.io/pause:3.2;reboot", "';'"),
            ("registry.k8s.io/pa'use:3.2", "'\\''"),
            ("registry.k8s.io/pause:`id`", "'`'"),
            ("[::1]:5000/pause:3.2", "'['"),
            ("registry.k8s.io/Pause:3.2", "path component"),
            ("registry.k8s.io/../pause:3.2", "path component"),
            ("registry.k8s.io//pause", "path component"),
            ("registry.k8s.io/pause/", "path component"),
            ("registry.k8s.io/-pause", "path component"),
            ("registry.k8s.io/pause:", "tag"),
            ("registry.k8s.io/pause:-x", "tag"),
            ("registry.k8s.io/pause:.x", "tag"),
            ("registry.k8s.io/pause@sha256:abc", "digest"),
            ("registry.k8s.io/pause@:abc", "digest"),
            ("registry.k8s.io/pause@sha256", "digest"),
            ("host:port/x", "registry host"),
            ("-x.io/pause", "registry host"),
            ("UPPER", "registry host"),
        ] {
            let err = check_image_reference(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = format!("r.io/{}:1", "a".repeat(MAX_IMAGE_NAME));
        assert!(
            check_image_reference(&long)
                .unwrap_err()
                .contains("bytes long")
        );
        let long_tag = format!("r.io/a:{}", "t".repeat(MAX_IMAGE_TAG + 1));
        assert!(
            check_image_reference(&long_tag)
                .unwrap_err()
                .contains("tag")
        );
    }
}
