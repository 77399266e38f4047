//! Getting Debian packages and source packages through the machine's own apt.
use std::path::Path;
use std::process::Command;

use super::cmd;
use super::error::{Error, Result};
use super::fsutil;

/// Where we add the deb-src entry when the machine has none (the name marks it as ours).
pub const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/ilha-deb-src.sources";
const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const SUITE: &str = "bookworm";

/// `apt-get source --download-only PACKAGE` into `dir` (made through a `.partial` sibling so an
/// interrupted download is never mistaken for a complete one).
pub fn download_source(package: &str, dir: &Path) -> Result<()> {
    ensure_deb_src()?;
    let tmp = fsutil::partial(dir);
    fsutil::remove_dir_if_exists(&tmp)?;
    fsutil::create_dir_all(&tmp)?;
    cmd::output(
        Command::new("apt-get")
            .args(["source", "--download-only", package])
            .current_dir(&tmp),
    )?;
    std::fs::rename(&tmp, dir).map_err(Error::io("rename into", dir))
}

/// `apt-get download PACKAGE` into `dir`; returns the .deb's path.
pub fn download_deb(package: &str, dir: &Path) -> Result<std::path::PathBuf> {
    fsutil::create_dir_all(dir)?;
    cmd::output(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir),
    )?;
    find_deb(package, dir)?.ok_or_else(|| Error::Package {
        package: package.into(),
        reason: format!("apt-get download left no .deb in {}", dir.display()),
    })
}

/// The newest-looking `PACKAGE_*.deb` in `dir`, if any.
pub fn find_deb(package: &str, dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let prefix = format!("{package}_");
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io("read directory", dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found.pop())
}

/// A .deb's control field (`Version`, `Package`...).
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let mut command = Command::new("dpkg-deb");
    command.arg("-f").arg(deb).arg(field);
    Ok(cmd::output(&mut command)?.trim().to_string())
}

/// `apt-get download PACKAGE=VERSION...` into `dir` from another suite (`trixie`) of the mirror
/// the machine's apt already uses, through a private apt setup under `root` (its own sources
/// list, lists and cache): the machine's sources and lists are never changed.
pub fn download_from_suite(
    suite: &str,
    packages: &[(&str, &str)],
    root: &Path,
    dir: &Path,
) -> Result<()> {
    let (uri, signed_by) = system_mirror()?;
    let parts = root.join("sources.list.d");
    for sub in ["lists/partial", "cache/archives/partial"] {
        fsutil::create_dir_all(&root.join(sub))?;
    }
    fsutil::create_dir_all(&parts)?;
    fsutil::create_dir_all(dir)?;
    let mut stanza = format!("Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\n");
    if let Some(keyring) = signed_by {
        stanza.push_str(&format!("Signed-By: {keyring}\n"));
    }
    fsutil::write_atomic(
        &parts.join(format!("ilha-{suite}.sources")),
        stanza.as_bytes(),
    )?;
    let private = |command: &mut Command| {
        command
            .arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", parts.display()))
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                root.join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", root.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    private(&mut update);
    cmd::output(update.arg("update"))?;
    let mut download = Command::new("apt-get");
    private(&mut download);
    download.arg("download").current_dir(dir);
    for (package, version) in packages {
        download.arg(format!("{package}={version}"));
    }
    cmd::output(&mut download).map(|_| ())
}

/// The first `deb` entry for the machine's own suite in its apt sources: the only Debian mirror
/// this machine may reach.
fn system_mirror() -> Result<(String, Option<String>)> {
    let mut files = vec![std::path::PathBuf::from(SOURCES_LIST)];
    if let Ok(entries) = std::fs::read_dir(SOURCES_DIR) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter(|f| {
            let name = f.to_string_lossy();
            name.ends_with(".list") || name.ends_with(".sources")
        })
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|text| bookworm_mirror(&text))
        .ok_or_else(|| {
            Error::AptSources(format!(
                "no `deb` entry for {SUITE} in {SOURCES_LIST} or {SOURCES_DIR}/ to take the mirror from"
            ))
        })
}

/// `apt-get source` needs a deb-src entry; a stock Debian 12 has none. Add one for bookworm
/// pointing at the mirror apt already uses (the only Debian mirror we may reach).
fn ensure_deb_src() -> Result<()> {
    let mut files = vec![std::path::PathBuf::from(SOURCES_LIST)];
    if let Ok(entries) = std::fs::read_dir(SOURCES_DIR) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut mirror = None;
    for file in &files {
        let name = file.to_string_lossy();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if has_deb_src(&text) {
            return Ok(());
        }
        if mirror.is_none() {
            mirror = bookworm_mirror(&text);
        }
    }
    let (uri, signed_by) = mirror.ok_or_else(|| {
        Error::AptSources(format!(
            "no deb-src entry and no `deb` entry for {SUITE} to derive one from in {SOURCES_LIST} or {SOURCES_DIR}/"
        ))
    })?;
    let mut stanza = format!("Types: deb-src\nURIs: {uri}\nSuites: {SUITE}\nComponents: main\n");
    if let Some(keyring) = signed_by {
        stanza.push_str(&format!("Signed-By: {keyring}\n"));
    }
    fsutil::write_atomic(Path::new(DEB_SRC_FILE), stanza.as_bytes())?;
    cmd::output(Command::new("apt-get").arg("update")).map(|_| ())
}

fn has_deb_src(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("deb-src ")
            || (line.starts_with("Types:") && line.split_whitespace().any(|t| t == "deb-src"))
    })
}

/// The URI (and keyring) of the first `deb` entry for bookworm, in one-line or deb822 style.
fn bookworm_mirror(text: &str) -> Option<(String, Option<String>)> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"deb") {
            let rest: Vec<&str> = words[1..]
                .iter()
                .copied()
                .skip_while(|w| w.starts_with('['))
                .filter(|w| !w.ends_with(']'))
                .collect();
            if rest.len() >= 2 && rest[1] == SUITE {
                return Some((rest[0].to_string(), None));
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let types = field("Types").unwrap_or_default();
        let suites = field("Suites").unwrap_or_default();
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == SUITE)
        {
            let uri = field("URIs")?.split_whitespace().next()?.to_string();
            return Some((uri, field("Signed-By")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_deb_src_from_deb822_and_one_line_styles() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\nTypes: deb\nURIs: http://sec\nSuites: bookworm-security\n";
        assert_eq!(
            bookworm_mirror(deb822),
            Some(("http://deb.debian.org/debian".into(), Some("/k.gpg".into())))
        );
        let list = "deb [arch=amd64] http://m/debian bookworm main\n";
        assert_eq!(
            bookworm_mirror(list),
            Some(("http://m/debian".into(), None))
        );
        assert!(has_deb_src("Types: deb deb-src\n"));
        assert!(has_deb_src("deb-src http://m/debian bookworm main\n"));
        assert!(!has_deb_src(deb822));
    }
}
