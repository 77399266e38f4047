use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret;
use ilha_format::KeyPair;
use ilha_format::digest::Sha256;
use tempfile::TempDir;

use super::*;
use crate::cluster::snapshot::SnapshotStatus;

fn sample_manifest() -> KitManifest {
    KitManifest {
        format: KIT_FORMAT.into(),
        cluster_name: "lab".into(),
        cluster_ca_sha256: "ab".repeat(32),
        created_at: 1_700_000_000,
        ilha_version: "0.1.0".into(),
        etcd: EtcdSummary {
            member: "m1".into(),
            snapshot: "etcd/snapshot.db".into(),
            sha256: "cd".repeat(32),
            status: SnapshotStatus {
                hash: 42,
                revision: 1234,
                total_keys: 567,
                total_size: 3 << 20,
            },
            initial_cluster: vec![
                ("m1".into(), "https://10.88.0.11:2380".into()),
                ("m2".into(), "https://10.88.0.12:2380".into()),
            ],
            drill: Drill {
                passed: true,
                revision: 1234,
                restored_keys: 567,
                live_keys: 567,
                seconds: 2.5,
                detail: String::new(),
            },
        },
        masters: vec!["m1".into(), "m2".into()],
        objects: vec![
            ObjectCount {
                resource: "namespaces".into(),
                count: 4,
            },
            ObjectCount {
                resource: "configmaps".into(),
                count: 17,
            },
        ],
        encryption: Encryption::None,
        files: Vec::new(),
    }
}

/// A staging tree with nested and empty directories, several modes, an empty file and a file
/// spanning many age chunks (64 KiB) and zstd blocks.
fn make_staging(root: &Path) -> PathBuf {
    let staging = root.join("staging");
    let put = |rel: &str, data: &[u8], mode: u32| {
        let path = staging.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let snapshot: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put("etcd/snapshot.db", &snapshot, 0o600);
    put(
        "masters/m1/etc/kubernetes/pki/ca.key",
        b"-----BEGIN KEY-----\n",
        0o600,
    );
    put(
        "masters/m1/etc/kubernetes/admin.conf",
        b"apiVersion: v1\n",
        0o644,
    );
    put("state/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
    put("objects/empty.yaml", b"", 0o644);
    fs::create_dir_all(staging.join("objects/no-crds")).unwrap();
    fs::set_permissions(staging.join("masters"), fs::Permissions::from_mode(0o750)).unwrap();
    staging
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
}

/// Every path under `root` with its kind, permission bits and content.
fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for child in fs::read_dir(&dir).unwrap() {
            let path = child.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                out.insert(rel, Node::Dir(mode));
                pending.push(path);
            } else {
                assert!(meta.is_file(), "{rel} is neither file nor directory");
                out.insert(rel, Node::File(mode, fs::read(&path).unwrap()));
            }
        }
    }
    out
}

struct Fixture {
    dir: TempDir,
    staging: PathBuf,
    keys: KeyPair,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new().unwrap();
        let staging = make_staging(dir.path());
        Fixture {
            dir,
            staging,
            keys: KeyPair::generate().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, name: &str, protection: &Protection) -> (PathBuf, KitManifest) {
        let kit = self.path(name);
        let m = write_kit(
            &kit,
            &self.staging,
            sample_manifest(),
            protection,
            &self.keys.secret,
        )
        .unwrap();
        (kit, m)
    }
    fn fresh_dest(&self, name: &str) -> PathBuf {
        let dest = self.path(name);
        fs::create_dir(&dest).unwrap();
        dest
    }
    fn open(&self, kit: &Path, unlock: &Unlock, dest: &str) -> Result<KitManifest, KitError> {
        open_kit(kit, &self.keys.public, unlock, &self.fresh_dest(dest))
    }
    fn pub_file(&self) -> PathBuf {
        let path = self.path("ilha.pub");
        fs::write(&path, self.keys.public.to_file_text()).unwrap();
        path
    }
}

fn assert_round_trip(f: &Fixture, kit: &Path, written: &KitManifest, unlock: &Unlock) {
    let dest = f.fresh_dest("dest");
    let opened = open_kit(kit, &f.keys.public, unlock, &dest).unwrap();
    assert_eq!(&opened, written);
    assert_eq!(opened, read_manifest(kit).unwrap());
    assert_eq!(tree(&dest), tree(&f.staging));
    // The manifest lists exactly the staging files, with their real digests and modes.
    let listed: Vec<&str> = written.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        listed,
        [
            "etcd/snapshot.db",
            "masters/m1/etc/kubernetes/admin.conf",
            "masters/m1/etc/kubernetes/pki/ca.key",
            "objects/empty.yaml",
            "state/run.sh",
        ]
    );
    for file in &written.files {
        let data = fs::read(f.staging.join(&file.path)).unwrap();
        assert_eq!(file.sha256, Sha256::of(&data).to_string(), "{}", file.path);
        assert_eq!(file.size, data.len() as u64);
    }
    let run = written
        .files
        .iter()
        .find(|f| f.path == "state/run.sh")
        .unwrap();
    assert_eq!(run.mode, 0o755);
    let mode = fs::metadata(kit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the kit holds private keys");
}

#[test]
fn round_trip_unencrypted() {
    let f = Fixture::new();
    let (kit, m) = f.write("backup.tar.zst", &Protection::None);
    assert_eq!(m.encryption, Encryption::None);
    assert_eq!(m.format, KIT_FORMAT);
    assert_round_trip(&f, &kit, &m, &Unlock::None);
    let sig = fs::read_to_string(sig_path(&kit)).unwrap();
    assert!(
        sig.contains("trusted comment: ilha-kit:lab:1700000000\n"),
        "{sig}"
    );
}

#[test]
fn round_trip_recipients_and_identity_errors() {
    let f = Fixture::new();
    let identity = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let recipients = vec![
        other.to_public().to_string(),
        identity.to_public().to_string(),
    ];
    let (kit, m) = f.write("enc.tar.zst", &Protection::Recipients(recipients));
    assert_eq!(m.encryption, Encryption::AgeRecipients);
    let id_file = f.path("id.txt");
    fs::write(
        &id_file,
        format!("# key\n{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    assert_round_trip(&f, &kit, &m, &Unlock::Identities(id_file));

    let err = f.open(&kit, &Unlock::None, "d1").unwrap_err();
    assert!(
        matches!(
            err,
            KitError::Locked {
                needed: Encryption::AgeRecipients,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--identity"), "{err}");
    let err = f
        .open(&kit, &Unlock::Passphrase("x".into()), "d2")
        .unwrap_err();
    assert!(err.to_string().contains("--identity"), "{err}");

    let stranger = f.path("stranger.txt");
    let key = age::x25519::Identity::generate().to_string();
    fs::write(&stranger, format!("{}\n", key.expose_secret())).unwrap();
    let err = f
        .open(&kit, &Unlock::Identities(stranger.clone()), "d3")
        .unwrap_err();
    assert!(
        matches!(err, KitError::NoMatchingIdentity { ref identities, .. } if *identities == stranger),
        "{err}"
    );

    let garbage = f.path("garbage.txt");
    fs::write(&garbage, "not an identity\n").unwrap();
    let err = f
        .open(&kit, &Unlock::Identities(garbage), "d4")
        .unwrap_err();
    assert!(matches!(err, KitError::IdentityFile { .. }), "{err}");
}

#[test]
fn round_trip_passphrase_and_wrong_passphrase() {
    let f = Fixture::new();
    let (kit, m) = f.write(
        "pass.tar.zst",
        &Protection::Passphrase("correct horse".into()),
    );
    assert_eq!(m.encryption, Encryption::AgePassphrase);
    assert_round_trip(&f, &kit, &m, &Unlock::Passphrase("correct horse".into()));

    let err = f
        .open(&kit, &Unlock::Passphrase("battery staple".into()), "d1")
        .unwrap_err();
    assert!(matches!(err, KitError::WrongPassphrase { .. }), "{err}");
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    let err = f.open(&kit, &Unlock::None, "d2").unwrap_err();
    assert!(
        matches!(
            err,
            KitError::Locked {
                needed: Encryption::AgePassphrase,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--passphrase-file"), "{err}");
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (the Makefile installs the tool)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn stock_tools_open_kits() {
    let f = Fixture::new();
    let pubkey = f.pub_file();

    let (plain, _) = f.write("plain.tar.zst", &Protection::None);
    run(Command::new("minisign")
        .arg("-Vm")
        .arg(&plain)
        .arg("-p")
        .arg(&pubkey));
    let listing = run(Command::new("tar").arg("--zstd").arg("-tf").arg(&plain));
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(listing.lines().next(), Some("kit.json"), "{listing}");
    let out = f.fresh_dest("plain-out");
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&plain)
        .arg("-C")
        .arg(&out));
    assert_eq!(tree(&out.join("payload")), tree(&f.staging));

    let identity = age::x25519::Identity::generate();
    let id_file = f.path("id.txt");
    fs::write(
        &id_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let (enc, _) = f.write(
        "enc.tar.zst",
        &Protection::Recipients(vec![identity.to_public().to_string()]),
    );
    run(Command::new("minisign")
        .arg("-Vm")
        .arg(&enc)
        .arg("-p")
        .arg(&pubkey));
    let listing = run(Command::new("tar").arg("--zstd").arg("-tf").arg(&enc));
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["kit.json", "payload.tar.zst.age"]
    );
    let out = f.fresh_dest("enc-out");
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&enc)
        .arg("-C")
        .arg(&out));
    run(Command::new("sh").current_dir(&out).arg("-ec").arg(format!(
        "age -d -i '{}' payload.tar.zst.age | tar --zstd -x",
        id_file.display()
    )));
    assert_eq!(tree(&out.join("payload")), tree(&f.staging));
}

#[test]
fn tampering_and_key_errors() {
    let f = Fixture::new();
    let (kit, _) = f.write("kit.tar.zst", &Protection::None);
    let original = fs::read(&kit).unwrap();
    let copy = f.path("copy.tar.zst");
    fs::copy(sig_path(&kit), sig_path(&copy)).unwrap();
    for at in [0, 100, original.len() / 2, original.len() - 1] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        fs::write(&copy, &bytes).unwrap();
        let err = verify_signature(&copy, &f.keys.public).unwrap_err();
        assert!(
            matches!(err, KitError::SignatureMismatch { .. }),
            "byte {at}: {err}"
        );
        let err = f
            .open(&copy, &Unlock::None, &format!("flip{at}"))
            .unwrap_err();
        assert!(
            matches!(err, KitError::SignatureMismatch { .. }),
            "byte {at}: {err}"
        );
    }
    fs::write(&copy, &original[..original.len() - 7]).unwrap();
    let err = verify_signature(&copy, &f.keys.public).unwrap_err();
    assert!(matches!(err, KitError::SignatureMismatch { .. }), "{err}");
    assert!(err.to_string().contains("altered or truncated"), "{err}");

    verify_signature(&kit, &f.keys.public).unwrap();
    let other = KeyPair::generate().unwrap();
    let err = verify_signature(&kit, &other.public).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KitError::OtherKey { .. }), "{err}");
    assert!(text.contains(&other.public.key_id()), "{text}");
    assert!(text.contains(&f.keys.public.key_id()), "{text}");

    fs::remove_file(sig_path(&copy)).unwrap();
    let err = verify_signature(&copy, &f.keys.public).unwrap_err();
    assert!(matches!(err, KitError::MissingSignature { .. }), "{err}");

    fs::write(sig_path(&copy), "hello\n").unwrap();
    let err = verify_signature(&copy, &f.keys.public).unwrap_err();
    assert!(matches!(err, KitError::BadSignatureFile { .. }), "{err}");

    // The destination must start empty: the manifest check says "nothing else is there".
    let dest = f.fresh_dest("busy");
    fs::write(dest.join("leftover"), "x").unwrap();
    let err = open_kit(&kit, &f.keys.public, &Unlock::None, &dest).unwrap_err();
    assert!(matches!(err, KitError::DestNotEmpty { .. }), "{err}");
}

/// One crafted outer entry: raw name bytes (no path validation), type, mode, data.
struct Raw {
    name: String,
    kind: tar::EntryType,
    link: Option<&'static str>,
    data: Vec<u8>,
}

fn raw_file(name: &str, data: &[u8]) -> Raw {
    Raw {
        name: name.into(),
        kind: tar::EntryType::Regular,
        link: None,
        data: data.to_vec(),
    }
}

/// A kit signed with the fixture key whose entries are exactly `entries` after kit.json: what a
/// compromised or buggy writer could produce. The manifest lists `payload/a.txt` ("good\n").
fn craft_kit(f: &Fixture, name: &str, entries: &[Raw]) -> PathBuf {
    let mut manifest = sample_manifest();
    manifest.files = vec![KitFile {
        path: "a.txt".into(),
        size: 5,
        sha256: Sha256::of(b"good\n").to_string(),
        mode: 0o644,
    }];
    let json = serde_json::to_vec_pretty(&manifest).unwrap();
    let mut tar = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).unwrap());
    let mut entries_with_manifest = vec![raw_file("kit.json", &json)];
    entries_with_manifest.extend(entries.iter().map(|r| Raw {
        name: r.name.clone(),
        kind: r.kind,
        link: r.link,
        data: r.data.clone(),
    }));
    for raw in &entries_with_manifest {
        let mut h = tar::Header::new_old();
        let field = &mut h.as_old_mut().name;
        field[..raw.name.len()].copy_from_slice(raw.name.as_bytes());
        h.set_entry_type(raw.kind);
        h.set_size(raw.data.len() as u64);
        h.set_mode(0o644);
        if let Some(link) = raw.link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        tar.append(&h, &raw.data[..]).unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let kit = f.path(name);
    fs::write(&kit, &bytes).unwrap();
    let sig = f
        .keys
        .secret
        .sign_bytes(&bytes, &trusted_comment(&manifest));
    fs::write(sig_path(&kit), sig.to_minisig_string()).unwrap();
    kit
}

#[test]
fn hostile_payloads_are_refused() {
    let f = Fixture::new();
    let good = raw_file("payload/a.txt", b"good\n");
    let outside = f.path("outside");
    let absolute = format!("{}/abs", outside.display());
    let symlink = Raw {
        name: "payload/link".into(),
        kind: tar::EntryType::Symlink,
        link: Some("../../outside"),
        data: Vec::new(),
    };
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        ("dotdot", vec![raw_file("payload/../x", b"bad\n")], "`..`"),
        (
            "absolute",
            vec![raw_file(&absolute, b"bad\n")],
            "absolute path",
        ),
        (
            "symlink",
            vec![symlink, raw_file("payload/link/x", b"bad\n")],
            "symbolic link",
        ),
        (
            "prefix",
            vec![raw_file("etc/shadow", b"bad\n")],
            "not under payload/",
        ),
        (
            "twice",
            vec![
                raw_file("payload/a.txt", b"good\n"),
                raw_file("payload/a.txt", b"good\n"),
            ],
            "appears twice",
        ),
    ];
    for (name, entries, reason) in cases {
        let kit = craft_kit(&f, &format!("{name}.tar.zst"), &entries);
        verify_signature(&kit, &f.keys.public).unwrap();
        let err = f
            .open(&kit, &Unlock::None, &format!("dest-{name}"))
            .unwrap_err();
        assert!(
            matches!(err, KitError::HostileEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }
    assert!(!outside.exists(), "something was written outside dest");
    assert!(!f.path("x").exists(), "payload/../x escaped");

    let extra = craft_kit(
        &f,
        "extra.tar.zst",
        &[good, raw_file("payload/b.txt", b"more\n")],
    );
    let err = f.open(&extra, &Unlock::None, "dest-extra").unwrap_err();
    assert!(
        matches!(err, KitError::UnexpectedFile { ref path, .. } if path == "b.txt"),
        "{err}"
    );

    let altered = craft_kit(
        &f,
        "altered.tar.zst",
        &[raw_file("payload/a.txt", b"evil\n")],
    );
    let err = f.open(&altered, &Unlock::None, "dest-altered").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KitError::AlteredFile { .. }), "{err}");
    assert!(text.contains(&Sha256::of(b"good\n").to_string()), "{text}");
    assert!(text.contains(&Sha256::of(b"evil\n").to_string()), "{text}");

    let missing = craft_kit(&f, "missing.tar.zst", &[]);
    let err = f.open(&missing, &Unlock::None, "dest-missing").unwrap_err();
    assert!(
        matches!(err, KitError::MissingFile { ref path, .. } if path == "a.txt"),
        "{err}"
    );

    // The crafted layout itself is sound: the same kit with only the good entry opens.
    let sound = craft_kit(&f, "sound.tar.zst", &[raw_file("payload/a.txt", b"good\n")]);
    f.open(&sound, &Unlock::None, "dest-sound").unwrap();
    assert_eq!(fs::read(f.path("dest-sound/a.txt")).unwrap(), b"good\n");
}

#[test]
fn read_manifest_refuses_non_kits() {
    let f = Fixture::new();
    let (kit, written) = f.write("kit.tar.zst", &Protection::None);
    assert_eq!(read_manifest(&kit).unwrap(), written);

    // A bundle starts with its index.
    let bundle = f.path("bundle.tar.zst");
    let mut tar = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    tar.append_data(&mut h, "ilha-index.json", &b"{}"[..])
        .unwrap();
    fs::write(&bundle, tar.into_inner().unwrap().finish().unwrap()).unwrap();
    let err = read_manifest(&bundle).unwrap_err();
    assert!(matches!(err, KitError::NotAKit { .. }), "{err}");
    assert!(err.to_string().contains("ilha-index.json"), "{err}");

    let text = f.path("notes.txt");
    fs::File::create(&text)
        .unwrap()
        .write_all(b"just some text, long enough to be read\n")
        .unwrap();
    let err = read_manifest(&text).unwrap_err();
    assert!(matches!(err, KitError::NotAKit { .. }), "{err}");

    let mut future = sample_manifest();
    future.format = "ilha-restore-kit/2".into();
    let mut value = serde_json::to_value(&future).unwrap();
    value.as_object_mut().unwrap().remove("etcd");
    let json = serde_json::to_vec(&value).unwrap();
    let newer = f.path("newer.tar.zst");
    let mut tar = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    tar.append_data(&mut h, "kit.json", &json[..]).unwrap();
    fs::write(&newer, tar.into_inner().unwrap().finish().unwrap()).unwrap();
    let err = read_manifest(&newer).unwrap_err();
    assert!(
        matches!(err, KitError::UnknownFormat { ref found, .. } if found == "ilha-restore-kit/2"),
        "{err}"
    );
}

#[test]
fn staging_with_a_symlink_is_refused() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("/etc/passwd", f.staging.join("state/passwd")).unwrap();
    let err = write_kit(
        &f.path("k.tar.zst"),
        &f.staging,
        sample_manifest(),
        &Protection::None,
        &f.keys.secret,
    )
    .unwrap_err();
    assert!(
        matches!(err, KitError::Staging { ref path, .. } if path.ends_with("state/passwd")),
        "{err}"
    );
    assert!(!f.path("k.tar.zst").exists());
}

#[test]
fn parse_recipients_reads_strings_and_files() {
    let dir = TempDir::new().unwrap();
    let a = age::x25519::Identity::generate().to_public().to_string();
    let b = age::x25519::Identity::generate().to_public().to_string();
    assert_eq!(parse_recipients(&a).unwrap(), vec![a.clone()]);

    let file = dir.path().join("recipients.txt");
    fs::write(&file, format!("# ops team\n{a}\n\n  {b}  \n")).unwrap();
    assert_eq!(
        parse_recipients(file.to_str().unwrap()).unwrap(),
        [a.clone(), b]
    );

    fs::write(&file, format!("{a}\nage1nope\n")).unwrap();
    let err = parse_recipients(file.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    let err = parse_recipients("age1bogus").unwrap_err();
    assert!(matches!(err, KitError::BadRecipient { .. }), "{err}");
    let err = parse_recipients(dir.path().join("absent").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, KitError::BadRecipient { .. }), "{err}");

    // write_kit checks recipients before reading the staging directory.
    let f = Fixture::new();
    let err = write_kit(
        &f.path("k.tar.zst"),
        &f.staging,
        sample_manifest(),
        &Protection::Recipients(vec!["age1bogus".into()]),
        &f.keys.secret,
    )
    .unwrap_err();
    assert!(matches!(err, KitError::BadRecipient { .. }), "{err}");
}

#[test]
fn inspect_shows_what_an_operator_needs() {
    let f = Fixture::new();
    let (_, m) = f.write("kit.tar.zst", &Protection::None);
    let text = render_inspect(&m);
    for needle in [
        "\"lab\"",
        "2023-11-14 22:13:20 UTC",
        "0.1.0",
        "WARNING",
        "etcd/snapshot.db (from m1)",
        "revision 1234, 567 keys, 3.0 MiB",
        &"cd".repeat(32),
        "m1=https://10.88.0.11:2380, m2=https://10.88.0.12:2380",
        "passed: restored 567 keys at revision 1234",
        "masters:         m1, m2",
        "configmaps",
        "objects:         21",
        "5 files, 3.0 MiB",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let mut failed = m.clone();
    failed.etcd.drill.passed = false;
    failed.encryption = Encryption::AgePassphrase;
    let text = render_inspect(&failed);
    assert!(
        text.contains("FAILED") && text.contains("age, with a passphrase"),
        "{text}"
    );
}
