//! Secrets encrypted at rest (`hardening: secrets_encryption`; CIS 1.2.33/1.2.34 of cis-1.20).
//!
//! Keys are made on the operator's side (32 random bytes from the OS) and kept in
//! `<state>/encryption/` (directory 0700, each key `NAME.key` 0600, base64) with a record,
//! `keys.json`, of the key names in the order the apiservers list them and each key's sha256, so
//! a key file changed or swapped by hand is refused before it could make Secrets unreadable.
//! Every master gets the same [`CONFIG_PATH`] (0600): one `aescbc` provider with the keys, then
//! `identity: {}` so Secrets written in plain text before stay readable. With the item off and
//! keys already made, identity comes first: Secrets are written in plain text again and the keys
//! stay as readers, so nothing written encrypted becomes unreadable.
//!
//! Kubernetes' order for a change of write key across several apiservers is followed: a key
//! becomes the write key only once every running apiserver can read it ([`intermediate`]),
//! then every Secret is rewritten ([`rewrite_script`], journaled with the config's digest), and
//! only then are retired keys dropped. `ilha secrets rotate-key` records a new key as the write
//! key with the old ones to drop after the rewrite, and runs `up`, which does all of that; an
//! interrupted rotation continues on the next `up` or `rotate-key`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::render::RemoteFile;

/// Where every master's kube-apiserver reads its `EncryptionConfiguration`.
pub const CONFIG_PATH: &str = "/etc/kubernetes/encryption-config.yaml";
/// Under the state directory.
pub const STATE_SUBDIR: &str = "encryption";
pub const RECORD_FILE: &str = "keys.json";
/// The journal entry (first master) of the last complete rewrite of every Secret.
pub const REWRITE_STEP: &str = "secrets-rewrite";
/// What etcd's raw value of a Secret starts with when written with an aescbc key.
pub const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
/// The command that starts a rotation (and continues one).
pub const ROTATE_COMMAND: &str = "secrets rotate-key";
/// AES-256.
const KEY_BYTES: usize = 32;

/// One provider of the rendered configuration, in order: the first writes, all read.
#[derive(Clone, PartialEq, Eq)]
pub enum Provider {
    Identity,
    Aescbc { name: String, secret: String },
}

impl std::fmt::Debug for Provider {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::Identity => write!(f, "identity"),
            Provider::Aescbc { name, .. } => write!(f, "aescbc:{name}"),
        }
    }
}

impl Provider {
    fn label(&self) -> String {
        format!("{self:?}")
    }
}

// The EncryptionConfiguration document, as kube-apiserver reads it -------------------------------

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionConfiguration {
    api_version: String,
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

/// One entry of `providers`: exactly one of the provider kinds is set. Kinds ilha never writes
/// (secretbox, kms, aesgcm) are kept to be refused by name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProviderConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    aescbc: Option<KeysConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Empty>,
    #[serde(flatten, skip_serializing)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Empty {}

/// The configuration file for `providers` (in order), mode 0600.
pub fn render(providers: &[Provider]) -> RemoteFile {
    let mut entries: Vec<ProviderConfig> = Vec::new();
    for provider in providers {
        match provider {
            Provider::Identity => entries.push(ProviderConfig {
                identity: Some(Empty {}),
                ..ProviderConfig::default()
            }),
            Provider::Aescbc { name, secret } => {
                let key = KeyConfig {
                    name: name.clone(),
                    secret: secret.clone(),
                };
                // Consecutive keys share one provider entry, as upstream's examples write them.
                match entries.last_mut().and_then(|e| e.aescbc.as_mut()) {
                    Some(aescbc) => aescbc.keys.push(key),
                    None => entries.push(ProviderConfig {
                        aescbc: Some(KeysConfig { keys: vec![key] }),
                        ..ProviderConfig::default()
                    }),
                }
            }
        }
    }
    let document = EncryptionConfiguration {
        api_version: "apiserver.config.k8s.io/v1".into(),
        kind: "EncryptionConfiguration".into(),
        resources: vec![ResourceConfig {
            resources: vec!["secrets".into()],
            providers: entries,
        }],
    };
    let text = serde_saphyr::to_string(&document).expect("plain data serialises");
    RemoteFile::new(
        CONFIG_PATH,
        0o600,
        format!(
            "# Written by ilha: Secrets encrypted at rest (the first provider writes).\n{text}"
        ),
    )
}

/// The providers of a configuration file found on `host` (`None`: no file there), in order.
/// Refuses what ilha never writes: other resources, other provider kinds.
pub fn parse_config(host: &str, text: &str) -> anyhow::Result<Vec<Provider>> {
    let what = || format!("{host}: {CONFIG_PATH}");
    let document: EncryptionConfiguration =
        serde_saphyr::from_str(text).with_context(|| format!("{}: not readable YAML", what()))?;
    if document.kind != "EncryptionConfiguration" {
        bail!(
            "{}: kind {:?}, not EncryptionConfiguration",
            what(),
            document.kind
        );
    }
    let mut providers = Vec::new();
    for resource in &document.resources {
        if resource.resources != ["secrets"] {
            bail!(
                "{}: encrypts {:?}; ilha writes this file for `secrets` only. Move it away \
                 (kube-apiserver reads it at start) or remove those resources, then run again",
                what(),
                resource.resources
            );
        }
        for entry in &resource.providers {
            if let Some(kind) = entry.other.keys().next() {
                bail!(
                    "{}: provider `{kind}` is not one ilha writes (aescbc, identity): Secrets \
                     written with it would become unreadable if ilha replaced the file. Rewrite \
                     them with aescbc or identity first, then run again",
                    what()
                );
            }
            if let Some(aescbc) = &entry.aescbc {
                for key in &aescbc.keys {
                    providers.push(Provider::Aescbc {
                        name: key.name.clone(),
                        secret: key.secret.clone(),
                    });
                }
            }
            if entry.identity.is_some() {
                providers.push(Provider::Identity);
            }
        }
    }
    Ok(providers)
}

/// What the apiservers must be given before `final_providers` may roll out one master at a time,
/// given the configuration running on each master that has its control plane already
/// (`on_hosts`; no file: plain text only). `None`: every running apiserver can already read
/// what the new write provider writes. Otherwise the new providers with each master's current
/// write provider first: once all run that, the new write provider may come first.
///
/// Refuses keys on a master that `final_providers` lacks: dropping a key nobody recorded would
/// leave the Secrets it encrypted unreadable.
pub fn intermediate(
    final_providers: &[Provider],
    on_hosts: &BTreeMap<String, Vec<Provider>>,
    record: &Path,
) -> anyhow::Result<Option<Vec<Provider>>> {
    for (host, providers) in on_hosts {
        for provider in providers {
            if let Provider::Aescbc { name, .. } = provider
                && !final_providers.contains(provider)
            {
                bail!(
                    "{host}: {CONFIG_PATH} holds key `{name}`, which {} does not (or holds with \
                     other bytes): Secrets encrypted with it would become unreadable. Copy the \
                     `{STATE_SUBDIR}` directory of the state directory that installed this cluster \
                     (or of a restore kit's state/) into place, then run again. Nothing was changed",
                    record.display()
                );
            }
        }
    }
    let Some(writer) = final_providers.first() else {
        return Ok(None);
    };
    let Some(current) = on_hosts
        .values()
        .find(|providers| !providers.contains(writer))
        .map(|providers| providers.first().cloned().unwrap_or(Provider::Identity))
    else {
        return Ok(None);
    };
    let mut staged = vec![current.clone()];
    staged.extend(final_providers.iter().filter(|p| **p != current).cloned());
    Ok(Some(staged))
}

// Keys on the operator's side ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// In the order the apiservers list them; the first writes while the item is on.
    keys: Vec<RecordedKey>,
    /// Keys a rotation (or a restore) keeps as readers until every Secret has been rewritten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drop_after_rewrite: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedKey {
    name: String,
    /// Of the 32 key bytes.
    sha256: String,
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    name: String,
    bytes: Vec<u8>,
}

impl Key {
    fn provider(&self) -> Provider {
        Provider::Aescbc {
            name: self.name.clone(),
            secret: base64::engine::general_purpose::STANDARD.encode(&self.bytes),
        }
    }
    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// The state directory's `encryption/` rebuilt from the configurations found on the masters
/// (`ilha state recover`): every aescbc key any master lists, in the order of the first master
/// that has a configuration and then the others', as `(path relative to the state directory,
/// content, mode)`. Empty when no master has a configuration. Two masters naming one key with
/// different bytes are refused: which of them encrypted which Secrets cannot be told.
pub fn recovered_files(
    configs: &[(String, Vec<Provider>)],
) -> anyhow::Result<Vec<(String, Vec<u8>, u32)>> {
    let mut keys: Vec<(String, String, String)> = Vec::new(); // name, secret, host
    for (host, providers) in configs {
        for provider in providers {
            let Provider::Aescbc { name, secret } = provider else {
                continue;
            };
            match keys.iter().find(|(n, _, _)| n == name) {
                Some((_, known, first)) if known != secret => bail!(
                    "{host} and {first}: key `{name}` has different bytes in their {CONFIG_PATH}: \
                     which one encrypted which Secrets cannot be told; put one file on every \
                     master, or copy the `{STATE_SUBDIR}` directory from a kit's state/"
                ),
                Some(_) => {}
                None => keys.push((name.clone(), secret.clone(), host.clone())),
            }
        }
    }
    let mut files = Vec::new();
    let mut record = Record {
        keys: Vec::new(),
        drop_after_rewrite: Vec::new(),
    };
    for (name, secret, host) in &keys {
        if !valid_name(name) {
            bail!("{host}: {CONFIG_PATH}: key name {name:?} is not one ilha writes");
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .ok()
            .filter(|b| b.len() == KEY_BYTES)
            .with_context(|| {
                format!("{host}: {CONFIG_PATH}: key `{name}` is not base64 of {KEY_BYTES} bytes")
            })?;
        record.keys.push(RecordedKey {
            name: name.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        files.push((
            format!("{STATE_SUBDIR}/{name}.key"),
            format!("{secret}\n").into_bytes(),
            0o600,
        ));
    }
    if !files.is_empty() {
        let text = serde_json::to_string_pretty(&record).expect("plain data") + "\n";
        files.push((
            format!("{STATE_SUBDIR}/{RECORD_FILE}"),
            text.into_bytes(),
            0o600,
        ));
    }
    Ok(files)
}

/// The cluster's keys, as recorded in `<state>/encryption/`.
#[derive(Clone)]
pub struct KeySet {
    dir: PathBuf,
    keys: Vec<Key>,
    drop_after_rewrite: Vec<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("dir", &self.dir)
            .field("keys", &self.names())
            .field("drop_after_rewrite", &self.drop_after_rewrite)
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl KeySet {
    pub fn dir_of(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_SUBDIR)
    }

    pub fn record_path(&self) -> PathBuf {
        self.dir.join(RECORD_FILE)
    }

    /// The key set recorded under `state_dir`, `None` when none was ever made. Every key file
    /// is checked: owner-only, base64 of 32 bytes, the bytes the record says.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<KeySet>> {
        let dir = Self::dir_of(state_dir);
        let record_path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&record_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", record_path.display())),
        };
        let record: Record = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a key record of ilha (restore it from a backup kit's state/{STATE_SUBDIR}/)",
                record_path.display()
            )
        })?;
        if record.keys.is_empty() {
            bail!("{}: lists no key", record_path.display());
        }
        let mut keys = Vec::new();
        for recorded in &record.keys {
            if !valid_name(&recorded.name) {
                bail!(
                    "{}: key name {:?} is not lowercase letters, digits and dashes",
                    record_path.display(),
                    recorded.name
                );
            }
            if keys.iter().any(|k: &Key| k.name == recorded.name) {
                bail!(
                    "{}: key `{}` is listed twice",
                    record_path.display(),
                    recorded.name
                );
            }
            let key = read_key(&dir, &recorded.name)?;
            if key.sha256() != recorded.sha256 {
                bail!(
                    "{}: sha256 {} is not {}, the one {} recorded when the key was made: the key \
                     was changed, and Secrets encrypted with the recorded key would be \
                     unreadable with it. Put the original file back (a backup kit's \
                     state/{STATE_SUBDIR}/ has it)",
                    key_path(&dir, &recorded.name).display(),
                    key.sha256(),
                    recorded.sha256,
                    record_path.display()
                );
            }
            keys.push(key);
        }
        for name in &record.drop_after_rewrite {
            if !keys.iter().any(|k| &k.name == name) {
                bail!(
                    "{}: drop_after_rewrite names `{name}`, which is not one of its keys",
                    record_path.display()
                );
            }
        }
        if record.drop_after_rewrite.contains(&keys[0].name) {
            bail!(
                "{}: the write key `{}` is also to be dropped",
                record_path.display(),
                keys[0].name
            );
        }
        Ok(Some(KeySet {
            dir,
            keys,
            drop_after_rewrite: record.drop_after_rewrite,
        }))
    }

    /// The recorded key set; with the item on and none recorded, a new one with one key.
    pub fn load_or_init(state_dir: &Path, enabled: bool) -> anyhow::Result<Option<KeySet>> {
        if let Some(set) = Self::load(state_dir)? {
            return Ok(Some(set));
        }
        if !enabled {
            return Ok(None);
        }
        let mut set = KeySet {
            dir: Self::dir_of(state_dir),
            keys: Vec::new(),
            drop_after_rewrite: Vec::new(),
        };
        set.add_write_key()?;
        set.save()?;
        Ok(Some(set))
    }

    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    pub fn write_key(&self) -> &str {
        &self.keys[0].name
    }

    pub fn to_drop(&self) -> &[String] {
        &self.drop_after_rewrite
    }

    /// The providers the apiservers get: the keys then identity while the item is on; identity
    /// first (plain text written, the keys still read) while it is off.
    pub fn providers(&self, encrypt: bool) -> Vec<Provider> {
        let keys = self.keys.iter().map(Key::provider);
        if encrypt {
            keys.chain([Provider::Identity]).collect()
        } else {
            [Provider::Identity].into_iter().chain(keys).collect()
        }
    }

    /// A new key, made here, becomes the write key (written to its file, not yet to the record).
    /// Its name is never one used before in this directory, so a kit's key of the same name is
    /// always the same key.
    fn add_write_key(&mut self) -> anyhow::Result<String> {
        ensure_private_dir(&self.dir)?;
        let mut highest = 0u64;
        let mut consider = |name: &str| {
            if let Some(n) = name.strip_prefix("key").and_then(|n| n.parse::<u64>().ok()) {
                highest = highest.max(n);
            }
        };
        for key in &self.keys {
            consider(&key.name);
        }
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".key") {
                consider(stem);
            }
        }
        let name = format!("key{}", highest + 1);
        let mut bytes = vec![0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
        let path = key_path(&self.dir, &name);
        let text = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))?;
        self.keys.insert(
            0,
            Key {
                name: name.clone(),
                bytes,
            },
        );
        Ok(name)
    }

    /// Starts a rotation: a new write key, every older key kept as a reader until every Secret
    /// has been rewritten. Refused while one is under way (it is continued instead).
    pub fn rotate(&mut self) -> anyhow::Result<String> {
        if !self.drop_after_rewrite.is_empty() {
            bail!(
                "a rotation to `{}` is under way (keys {} still to drop): it is continued, not \
                 started again",
                self.write_key(),
                self.drop_after_rewrite.join(", ")
            );
        }
        let old: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        let name = self.add_write_key()?;
        self.drop_after_rewrite = old;
        self.save()?;
        Ok(name)
    }

    /// Once every Secret has been rewritten with the write key: the retired keys leave the set.
    /// Returns their names. Their files stay in the directory (older kits name them too).
    pub fn drop_retired(&mut self) -> Vec<String> {
        let gone = std::mem::take(&mut self.drop_after_rewrite);
        self.keys.retain(|k| !gone.contains(&k.name));
        gone
    }

    /// Keys of `other` (a kit's state directory) this set lacks, added as readers to drop once
    /// every Secret has been rewritten with the write key: a snapshot taken before a rotation
    /// needs them. Returns their names. A key of the same name with other bytes is refused.
    pub fn adopt_readers(&mut self, other: &KeySet) -> anyhow::Result<Vec<String>> {
        let mut added = Vec::new();
        for key in &other.keys {
            match self.keys.iter().find(|k| k.name == key.name) {
                Some(ours) if ours.bytes == key.bytes => {}
                Some(_) => bail!(
                    "key `{}` of {} is not the key of that name in {}: the two state directories \
                     are not of one cluster",
                    key.name,
                    other.record_path().display(),
                    self.record_path().display()
                ),
                None => {
                    let path = key_path(&self.dir, &key.name);
                    let text = format!(
                        "{}\n",
                        base64::engine::general_purpose::STANDARD.encode(&key.bytes)
                    );
                    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
                        .with_context(|| format!("writing {}", path.display()))?;
                    self.keys.push(key.clone());
                    self.drop_after_rewrite.push(key.name.clone());
                    added.push(key.name.clone());
                }
            }
        }
        Ok(added)
    }

    /// Writes the record (atomically, 0600).
    pub fn save(&self) -> anyhow::Result<()> {
        ensure_private_dir(&self.dir)?;
        let record = Record {
            keys: self
                .keys
                .iter()
                .map(|k| RecordedKey {
                    name: k.name.clone(),
                    sha256: k.sha256(),
                })
                .collect(),
            drop_after_rewrite: self.drop_after_rewrite.clone(),
        };
        let text = serde_json::to_string_pretty(&record).expect("plain data") + "\n";
        let path = self.record_path();
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} owner-only", dir.display()))
}

fn read_key(dir: &Path, name: &str) -> anyhow::Result<Key> {
    let path = key_path(dir, name);
    let meta = std::fs::metadata(&path).with_context(|| {
        format!(
            "{}: the key `{name}` listed in {} is missing (a backup kit's state/{STATE_SUBDIR}/ has it)",
            path.display(),
            dir.join(RECORD_FILE).display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: mode {mode:03o} lets others read a Secrets encryption key; make it owner-only \
             (`chmod 600 {}`) and consider the key disclosed (`ilha secrets rotate-key`)",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("{}: not base64", path.display()))?;
    if bytes.len() != KEY_BYTES {
        bail!(
            "{}: {} bytes, an aescbc key has {KEY_BYTES}",
            path.display(),
            bytes.len()
        );
    }
    Ok(Key {
        name: name.to_string(),
        bytes,
    })
}

// On the cluster ----------------------------------------------------------------------------------

/// The journal digest of a rewrite under `config`: any change of the providers asks for one.
pub fn rewrite_digest(config: &RemoteFile) -> String {
    hex::encode(Sha256::digest(&config.content))
}

/// Prints the configuration on a master (nothing when there is none).
pub fn read_config_script() -> String {
    format!("cat {CONFIG_PATH} 2>/dev/null || true")
}

/// Rewrites every Secret, one namespace at a time (what `kubectl replace` sends is read back in
/// one list per namespace), so each is stored with the current write provider. A namespace whose
/// replace fails (a Secret changed meanwhile: a conflict) is read and replaced again, up to five
/// times. Prints `rewritten N`.
pub fn rewrite_script() -> String {
    use super::paths::{ADMIN_CONF, BIN_DIR};
    format!(
        r#"k() {{ {BIN_DIR}/kubectl --kubeconfig={ADMIN_CONF} --request-timeout=60s "$@"; }}
total=0
for ns in $(k get namespaces -o jsonpath='{{.items[*].metadata.name}}'); do
  attempt=1
  while :; do
    list=$(k -n "$ns" get secrets -o json)
    case "$list" in *'"kind": "Secret"'*) ;; *) break ;; esac
    if out=$(printf '%s' "$list" | k replace -f - 2>&1); then
      n=$(printf '%s\n' "$out" | grep -c ' replaced$' || true)
      total=$((total + n))
      break
    fi
    if [ "$attempt" -ge 5 ]; then
      printf 'namespace %s: Secrets could not be rewritten after %s attempts:\n%s\n' "$ns" "$attempt" "$out" >&2
      exit 1
    fi
    attempt=$((attempt + 1))
    sleep 1
  done
done
echo "rewritten $total"
"#
    )
}

/// The count `rewrite_script` printed.
pub fn parse_rewritten(host: &str, stdout: &str) -> anyhow::Result<usize> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("rewritten "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("{host}: rewriting Secrets printed no count: {stdout:?}"))
}

/// What this run did about encryption at rest, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Providers in effect, first writes (e.g. `aescbc:key2, identity`).
    pub providers: String,
    pub staged: bool,
    pub rewritten: Option<usize>,
    pub dropped: Vec<String>,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.staged || self.rewritten.is_some() || !self.dropped.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = format!("Secrets at rest: {}", self.providers);
        if self.staged {
            out.push_str("; the new write key was first added as a reader on every apiserver");
        }
        if let Some(n) = self.rewritten {
            out.push_str(&format!("; {n} Secret(s) rewritten"));
        }
        if !self.dropped.is_empty() {
            out.push_str(&format!(
                "; key(s) dropped after the rewrite: {}",
                self.dropped.join(", ")
            ));
        }
        out.push('\n');
        out
    }
}

/// The summary's `aescbc:key2, identity`.
pub fn describe(providers: &[Provider]) -> String {
    providers
        .iter()
        .map(Provider::label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `up` does about encryption at rest, resolved before any host changes.
#[derive(Debug)]
pub struct Rollout {
    keys: Option<KeySet>,
    /// The item's switch (`hardening: secrets_encryption`).
    encrypt: bool,
    providers: Vec<Provider>,
    /// Every master's file; `None`: no keys were ever made (no file, no flag).
    pub config: Option<RemoteFile>,
    /// What masters whose apiserver runs already get first, one at a time, when the write
    /// provider is new to one of them ([`intermediate`]).
    staged: Option<Vec<Provider>>,
    /// Masters whose control plane has run before, in inventory order.
    running: Vec<String>,
}

impl Rollout {
    /// Loads (or, with the item on, makes) the key set and reads the configuration on every
    /// master whose control plane runs. Refuses, before any host changes, keys on a master that
    /// the state directory lacks.
    pub async fn prepare(
        fleet: &crate::ssh::Fleet,
        state_dir: &Path,
        config: &crate::config::ClusterConfig,
        masters: &[String],
        journals: &BTreeMap<String, super::journal::Journal>,
        rotate: bool,
    ) -> anyhow::Result<Rollout> {
        let encrypt = config.hardening.secrets_encryption;
        let mut keys = KeySet::load(state_dir)?;
        let running: Vec<String> = masters
            .iter()
            .filter(|m| journals.get(*m).is_some_and(|j| j.has("control-plane")))
            .cloned()
            .collect();
        let mut on_hosts = BTreeMap::new();
        for master in &running {
            let session = fleet.session(master).expect("connected");
            let text = session
                .run(&read_config_script())
                .await
                .with_context(|| format!("{master}: reading {CONFIG_PATH}"))?
                .stdout;
            let found = if text.trim().is_empty() {
                vec![Provider::Identity]
            } else {
                parse_config(master, &text)?
            };
            on_hosts.insert(master.clone(), found);
        }
        let record = KeySet::dir_of(state_dir).join(RECORD_FILE);
        // Checked with the keys as they are, so a refused cluster gets no new key either.
        let recorded = keys
            .as_ref()
            .map(|k| k.providers(encrypt))
            .unwrap_or_default();
        intermediate(&recorded, &on_hosts, &record)?;
        if keys.is_none() {
            keys = KeySet::load_or_init(state_dir, encrypt)?;
        }
        if rotate {
            let set = keys.as_mut().filter(|_| encrypt && !running.is_empty());
            let Some(set) = set else {
                bail!(
                    "`ilha {ROTATE_COMMAND}` needs a running cluster with \
                     `hardening: {{secrets_encryption: true}}` in its cluster config (it is {}; \
                     {} master(s) running): there is no key to rotate. Nothing was changed",
                    if encrypt { "on" } else { "off" },
                    running.len()
                );
            };
            if set.to_drop().is_empty() {
                let name = set.rotate()?;
                super::say(format!(
                    "Secrets encryption: new key `{name}` made in {}; key(s) {} kept as readers \
                     until every Secret is rewritten",
                    set.dir.display(),
                    set.to_drop().join(", ")
                ));
            } else {
                super::say(format!(
                    "Secrets encryption: continuing the rotation to `{}` (key(s) {} still to drop)",
                    set.write_key(),
                    set.to_drop().join(", ")
                ));
            }
        }
        let providers = keys
            .as_ref()
            .map(|k| k.providers(encrypt))
            .unwrap_or_default();
        let staged = intermediate(&providers, &on_hosts, &record)?;
        Ok(Rollout {
            config: keys.as_ref().map(|_| render(&providers)),
            keys,
            encrypt,
            providers,
            staged,
            running,
        })
    }
}

/// For `restore`: the configuration every master gets before its apiserver starts on the
/// kit's snapshot. Keys of the kit (`kit_state`, its copy of the state directory) that the state
/// directory no longer has (a rotation since the backup) come back into the record as readers to
/// drop after the next rewrite; the names of those are returned with the file. `None`: neither
/// has keys.
pub fn restore_config(
    state_dir: &Path,
    kit_state: &Path,
    encrypt: bool,
) -> anyhow::Result<Option<(RemoteFile, Vec<String>)>> {
    let kit = KeySet::load(kit_state).context("the kit's keys; nothing was changed")?;
    let Some(mut ours) = KeySet::load(state_dir)? else {
        return match kit {
            None => Ok(None),
            Some(kit) => bail!(
                "the kit's snapshot may hold Secrets encrypted with key(s) {} (its \
                 state/{STATE_SUBDIR}/), and {} has none: copy that directory into the state \
                 directory, then restore again. Nothing was changed",
                kit.names().join(", "),
                KeySet::dir_of(state_dir).display()
            ),
        };
    };
    let adopted = match &kit {
        Some(kit) => ours.adopt_readers(kit)?,
        None => Vec::new(),
    };
    if !adopted.is_empty() {
        ours.save()?;
    }
    Ok(Some((render(&ours.providers(encrypt)), adopted)))
}

/// The `control-plane` step of `master` with `file` as its encryption config.
fn control_plane_variant(
    prepared: &super::run::Prepared,
    master: &str,
    file: &RemoteFile,
) -> super::steps::Step {
    prepared.steps[master]
        .iter()
        .find(|s| s.id == "control-plane")
        .expect("a master has a control-plane step")
        .with_file(file.clone())
}

/// Runs `file` as the encryption config on `masters`, one at a time, each apiserver ready again
/// before the next: at every moment some apiserver serves and all read what any writes.
/// `resume`: a master whose journal (as read when the run began) has this variant is skipped,
/// which holds only before the control-plane phase has run in this run.
async fn roll(
    prepared: &super::run::Prepared,
    masters: &[String],
    file: &RemoteFile,
    what: &str,
    resume: bool,
    timings: &mut Vec<super::run::StepTiming>,
) -> anyhow::Result<()> {
    for master in masters {
        let step = control_plane_variant(prepared, master, file);
        if resume && prepared.journals[master].is_done(step.id, &step.digest) {
            continue;
        }
        let session = prepared.fleet.session(master).expect("connected");
        let started = std::time::Instant::now();
        super::run::run_step(session, &step)
            .await
            .with_context(|| {
                format!("{master}: {what}: restarting kube-apiserver with {CONFIG_PATH}")
            })?;
        super::run::wait_api_ready(prepared, master).await?;
        super::run::record_wait(timings, master, what, started);
        super::say(format!("  {master}: {what}, apiserver ready"));
    }
    Ok(())
}

/// Before the control plane rolls: a write provider new to a running master is first added as
/// a reader on each (Kubernetes' order for several apiservers).
pub(super) async fn stage(
    prepared: &super::run::Prepared,
    timings: &mut Vec<super::run::StepTiming>,
) -> anyhow::Result<()> {
    let rollout = &prepared.encryption;
    let Some(staged) = &rollout.staged else {
        return Ok(());
    };
    let what = format!("encryption: {} read first", describe(staged));
    roll(
        prepared,
        &rollout.running,
        &render(staged),
        &what,
        true,
        timings,
    )
    .await
}

/// After every node is Ready: every Secret rewritten with the write provider unless the first
/// master's journal has the rewrite for this configuration; then keys a rotation retires
/// leave every master (one at a time) and the record. `None`: the cluster has no keys.
pub(super) async fn finish(
    prepared: &super::run::Prepared,
    timings: &mut Vec<super::run::StepTiming>,
) -> anyhow::Result<Option<Outcome>> {
    let rollout = &prepared.encryption;
    let (Some(config), Some(keys)) = (&rollout.config, &rollout.keys) else {
        return Ok(None);
    };
    let masters: Vec<String> = prepared
        .plan
        .control_plane()
        .map(|m| m.name.clone())
        .collect();
    let first = &masters[0];
    let session = prepared.fleet.session(first).expect("connected");
    let mut outcome = Outcome {
        providers: describe(&rollout.providers),
        staged: rollout.staged.is_some(),
        ..Outcome::default()
    };
    if !prepared.journals[first].is_done(REWRITE_STEP, &rewrite_digest(config)) {
        let started = std::time::Instant::now();
        let out = session
            .run_script("rewrite every Secret", &rewrite_script())
            .await
            .with_context(|| {
                format!(
                    "{first}: rewriting every Secret with {}; run `ilha up` again to continue",
                    describe(&rollout.providers[..1])
                )
            })?;
        let count = parse_rewritten(first, &out.stdout)?;
        session
            .run(&super::journal::record_script(
                REWRITE_STEP,
                &rewrite_digest(config),
            ))
            .await?;
        super::run::record_wait(timings, first, "Secrets rewritten", started);
        super::say(format!(
            "  {count} Secret(s) rewritten, written with {}",
            describe(&rollout.providers[..1])
        ));
        outcome.rewritten = Some(count);
    }
    if !keys.to_drop().is_empty() {
        let mut keys = keys.clone();
        let dropped = keys.drop_retired();
        let providers = keys.providers(rollout.encrypt);
        let file = render(&providers);
        let what = format!("encryption: key(s) {} dropped", dropped.join(", "));
        // Always: the control-plane phase of this run may have changed what the journals hold
        // since they were read (a restore's readers put back, then the drop journaled earlier).
        roll(prepared, &masters, &file, &what, false, timings).await?;
        keys.save()?;
        // Every Secret was rewritten under the previous configuration, whose write provider this
        // one keeps: nothing is left for the dropped keys to read.
        session
            .run(&super::journal::record_script(
                REWRITE_STEP,
                &rewrite_digest(&file),
            ))
            .await?;
        outcome.providers = describe(&providers);
        outcome.dropped = dropped;
    }
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aescbc(name: &str, fill: u8) -> Provider {
        Provider::Aescbc {
            name: name.into(),
            secret: base64::engine::general_purpose::STANDARD.encode([fill; 32]),
        }
    }

    #[test]
    fn the_rendered_config_writes_with_the_first_key_and_still_reads_plain_text() {
        let file = render(&[aescbc("key2", 2), aescbc("key1", 1), Provider::Identity]);
        assert_eq!(file.path, "/etc/kubernetes/encryption-config.yaml");
        assert_eq!(file.mode, 0o600);
        let text = String::from_utf8(file.content.clone()).unwrap();
        let k2 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let k1 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert_eq!(
            text,
            format!(
                "# Written by ilha: Secrets encrypted at rest (the first provider writes).\n\
                 apiVersion: apiserver.config.k8s.io/v1\n\
                 kind: EncryptionConfiguration\n\
                 resources:\n\
                 - resources:\n\
                 \x20 - secrets\n\
                 \x20 providers:\n\
                 \x20 - aescbc:\n\
                 \x20     keys:\n\
                 \x20     - name: key2\n\
                 \x20       secret: {k2}\n\
                 \x20     - name: key1\n\
                 \x20       secret: {k1}\n\
                 \x20 - identity: {{}}\n"
            )
        );
        // What ilha writes, it reads back the same.
        assert_eq!(
            parse_config("m1", &text).unwrap(),
            [aescbc("key2", 2), aescbc("key1", 1), Provider::Identity]
        );
        // Item off with keys made: identity writes, the key still reads.
        let off = render(&[Provider::Identity, aescbc("key1", 1)]);
        let off = String::from_utf8(off.content).unwrap();
        assert!(
            off.find("identity: {}").unwrap() < off.find("name: key1").unwrap(),
            "{off}"
        );
    }

    #[test]
    fn the_apiserver_reads_the_config_only_when_keys_exist() {
        let mut plan = super::super::tests_support::plan_for("v1.20.2");
        let master = plan.host("node1").unwrap().clone();
        let flag = "--encryption-provider-config=/etc/kubernetes/encryption-config.yaml";
        let unit = |plan: &super::super::ClusterPlan| {
            String::from_utf8(super::super::render::apiserver_unit(plan, &master).content).unwrap()
        };
        assert!(!unit(&plan).contains("encryption-provider-config"));
        plan.encryption = Some(render(&[aescbc("key1", 1), Provider::Identity]));
        assert!(
            unit(&plan).contains(&format!("  {flag} \\\n")),
            "{}",
            unit(&plan)
        );
    }

    #[test]
    fn a_foreign_config_on_a_master_is_refused_naming_host_and_file() {
        let secretbox = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
            resources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      \
            - {name: k, secret: abc}\n  - identity: {}\n";
        let err = format!("{:#}", parse_config("m2", secretbox).unwrap_err());
        assert!(
            err.contains("m2: /etc/kubernetes/encryption-config.yaml: provider `secretbox`"),
            "{err}"
        );
        let configmaps = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
            resources:\n- resources: [secrets, configmaps]\n  providers:\n  - identity: {}\n";
        let err = format!("{:#}", parse_config("m2", configmaps).unwrap_err());
        assert!(
            err.contains("encrypts [\"secrets\", \"configmaps\"]"),
            "{err}"
        );
        let err = format!("{:#}", parse_config("m3", "kind: [").unwrap_err());
        assert!(err.contains("m3: /etc/kubernetes/encryption-config.yaml: not readable YAML"));
    }

    #[test]
    fn a_new_write_key_is_first_added_as_a_reader_on_running_masters() {
        let record = Path::new("/s/encryption/keys.json");
        let hosts = |list: &[(&str, Vec<Provider>)]| -> BTreeMap<String, Vec<Provider>> {
            list.iter()
                .map(|(h, p)| (h.to_string(), p.clone()))
                .collect()
        };
        // Turning it on over a running cluster (no file: plain text only).
        let on = [aescbc("key1", 1), Provider::Identity];
        let staged = intermediate(&on, &hosts(&[("m1", vec![]), ("m2", vec![])]), record)
            .unwrap()
            .unwrap();
        assert_eq!(staged, [Provider::Identity, aescbc("key1", 1)]);
        // Once both read key1 (the staged config runs), key1 may come first.
        let running = hosts(&[("m1", staged.clone()), ("m2", staged)]);
        assert_eq!(intermediate(&on, &running, record).unwrap(), None);
        // A fresh cluster: no master running, nothing staged.
        assert_eq!(intermediate(&on, &BTreeMap::new(), record).unwrap(), None);
        // Rotation: key2 added behind key1 first.
        let rotated = [aescbc("key2", 2), aescbc("key1", 1), Provider::Identity];
        let running = hosts(&[("m1", on.to_vec())]);
        assert_eq!(
            intermediate(&rotated, &running, record).unwrap().unwrap(),
            [aescbc("key1", 1), aescbc("key2", 2), Provider::Identity]
        );
        // Turning it off: identity is read everywhere already; no stage.
        let off = [Provider::Identity, aescbc("key1", 1)];
        assert_eq!(intermediate(&off, &running, record).unwrap(), None);
        // A key on a master that the record lacks (or has with other bytes): refused.
        let err = intermediate(&rotated, &hosts(&[("m2", vec![aescbc("key1", 9)])]), record)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("m2: /etc/kubernetes/encryption-config.yaml holds key `key1`, which /s/encryption/keys.json does not"),
            "{err}"
        );
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn recovered_keys_load_as_the_masters_listed_them_and_disagreements_are_refused() {
        let state = tempfile::tempdir().unwrap();
        let mut set = KeySet::load_or_init(state.path(), true).unwrap().unwrap();
        set.rotate().unwrap();
        // The masters' configurations: mid-rotation, one lists key2 first, one only key1.
        let both = set.providers(true);
        let old_only: Vec<Provider> = both
            .iter()
            .filter(|p| !matches!(p, Provider::Aescbc { name, .. } if name == "key2"))
            .cloned()
            .collect();
        let files =
            recovered_files(&[("m1".into(), old_only.clone()), ("m2".into(), both.clone())])
                .unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        for (relative, bytes, mode) in &files {
            assert_eq!(*mode, 0o600, "{relative}");
            let path = elsewhere.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            crate::fsutil::write_atomic(&path, bytes, *mode).unwrap();
        }
        let recovered = KeySet::load(elsewhere.path()).unwrap().unwrap();
        assert_eq!(recovered.names(), ["key1", "key2"]);
        assert_eq!(
            recovered
                .providers(true)
                .iter()
                .filter(|p| both.contains(p))
                .count(),
            3,
            "the same key bytes and identity"
        );
        assert!(
            recovered_files(&[("m1".into(), vec![Provider::Identity])])
                .unwrap()
                .is_empty()
        );
        let mut forged = both.clone();
        if let Some(Provider::Aescbc { secret, .. }) = forged.first_mut() {
            *secret = base64::engine::general_purpose::STANDARD.encode([7u8; KEY_BYTES]);
        }
        let err = recovered_files(&[("m1".into(), both), ("m2".into(), forged)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m2 and m1: key `key2` has different bytes"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_made_owner_only_recorded_and_rotated() {
        let state = tempfile::tempdir().unwrap();
        assert!(KeySet::load_or_init(state.path(), false).unwrap().is_none());
        assert!(!state.path().join("encryption").exists());
        let set = KeySet::load_or_init(state.path(), true).unwrap().unwrap();
        assert_eq!(set.names(), ["key1"]);
        let dir = state.path().join("encryption");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key1.key")), 0o600);
        assert_eq!(mode(&dir.join("keys.json")), 0o600);
        let text = std::fs::read_to_string(dir.join("key1.key")).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(bytes, [0u8; 32]);
        // Loading again gives the same key, not a new one.
        let again = KeySet::load_or_init(state.path(), true).unwrap().unwrap();
        assert_eq!(again.providers(true), set.providers(true));

        let mut set = again;
        assert_eq!(set.rotate().unwrap(), "key2");
        assert_eq!(set.names(), ["key2", "key1"]);
        assert_eq!(set.to_drop(), ["key1"]);
        let err = set.clone().rotate().unwrap_err().to_string();
        assert!(err.contains("a rotation to `key2` is under way"), "{err}");
        let loaded = KeySet::load(state.path()).unwrap().unwrap();
        assert_eq!(loaded.names(), ["key2", "key1"]);
        assert_eq!(loaded.to_drop(), ["key1"]);
        assert_eq!(set.drop_retired(), ["key1"]);
        set.save().unwrap();
        let loaded = KeySet::load(state.path()).unwrap().unwrap();
        assert_eq!(loaded.names(), ["key2"]);
        assert!(loaded.to_drop().is_empty());
        // A dropped key's name is never used again.
        let mut loaded = loaded;
        assert_eq!(loaded.rotate().unwrap(), "key3");
    }

    #[test]
    fn bad_or_tampered_key_files_are_refused_naming_the_file() {
        let state = tempfile::tempdir().unwrap();
        KeySet::load_or_init(state.path(), true).unwrap();
        let dir = state.path().join("encryption");
        let key = dir.join("key1.key");
        let original = std::fs::read(&key).unwrap();
        let err = |state: &Path| format!("{:#}", KeySet::load(state).unwrap_err());

        // Changed bytes (still a valid key): the record's sha256 catches it.
        let other = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        crate::fsutil::write_atomic(&key, other.as_bytes(), 0o600).unwrap();
        let e = err(state.path());
        assert!(
            e.starts_with(&format!("{}: sha256 ", key.display()))
                && e.contains("the key was changed"),
            "{e}"
        );
        // Not base64, too short.
        crate::fsutil::write_atomic(&key, b"not base64!\n", 0o600).unwrap();
        assert!(err(state.path()).contains(&format!("{}: not base64", key.display())));
        crate::fsutil::write_atomic(&key, b"AAAA\n", 0o600).unwrap();
        assert!(
            err(state.path())
                .contains(&format!("{}: 3 bytes, an aescbc key has 32", key.display()))
        );
        // Readable by others.
        crate::fsutil::write_atomic(&key, &original, 0o644).unwrap();
        let e = err(state.path());
        assert!(
            e.starts_with(&format!("{}: mode 644 lets others read", key.display())),
            "{e}"
        );
        // Missing.
        std::fs::remove_file(&key).unwrap();
        let e = err(state.path());
        assert!(
            e.starts_with(&format!("{}: the key `key1` listed in", key.display())),
            "{e}"
        );
        crate::fsutil::write_atomic(&key, &original, 0o600).unwrap();
        KeySet::load(state.path()).unwrap().unwrap();
        // A record that is not one.
        let record = dir.join("keys.json");
        crate::fsutil::write_atomic(&record, b"{\"keys\": 3}", 0o600).unwrap();
        assert!(err(state.path()).starts_with(&format!("{}: not a key record", record.display())));
        crate::fsutil::write_atomic(
            &record,
            b"{\"keys\": [{\"name\": \"../x\", \"sha256\": \"00\"}]}",
            0o600,
        )
        .unwrap();
        assert!(err(state.path()).contains("key name \"../x\" is not lowercase"));
    }

    #[test]
    fn a_kits_older_keys_come_back_as_readers_to_drop() {
        let kit = tempfile::tempdir().unwrap();
        let ours = tempfile::tempdir().unwrap();
        let old = KeySet::load_or_init(kit.path(), true).unwrap().unwrap();
        // Our state is the kit's, rotated since.
        copy_dir(
            &kit.path().join("encryption"),
            &ours.path().join("encryption"),
        );
        let mut current = KeySet::load(ours.path()).unwrap().unwrap();
        current.rotate().unwrap();
        current.drop_retired();
        current.save().unwrap();
        std::fs::remove_file(ours.path().join("encryption/key1.key")).unwrap();
        assert_eq!(current.names(), ["key2"]);
        assert_eq!(current.adopt_readers(&old).unwrap(), ["key1"]);
        assert_eq!(current.names(), ["key2", "key1"]);
        assert_eq!(current.to_drop(), ["key1"]);
        current.save().unwrap();
        let loaded = KeySet::load(ours.path()).unwrap().unwrap();
        assert_eq!(loaded.providers(true), current.providers(true));
        // Adopting again adds nothing; a same-named key with other bytes is refused.
        assert!(current.adopt_readers(&old).unwrap().is_empty());
        let foreign = tempfile::tempdir().unwrap();
        let foreign = KeySet::load_or_init(foreign.path(), true).unwrap().unwrap();
        let err = current.adopt_readers(&foreign).unwrap_err().to_string();
        assert!(
            err.contains("key `key1` of") && err.contains("not of one cluster"),
            "{err}"
        );
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    #[test]
    fn the_rewrite_counts_what_kubectl_replaced_and_retries_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kubectl");
        // A stand-in kubectl: namespaces a (two Secrets), b (none); the first replace in `a`
        // meets a conflict.
        std::fs::write(
            &bin,
            r#"#!/bin/bash
args="$*"
case "$args" in
  *"get namespaces"*) echo -n "a b" ;;
  *"-n a get secrets"*) echo '{"items": [{"kind": "Secret"}, {"kind": "Secret"}]}' ;;
  *"-n b get secrets"*) echo '{"items": []}' ;;
  *"replace -f -"*)
    cat > /dev/null
    if [ ! -e "$STATE/conflicted" ]; then touch "$STATE/conflicted"; echo 'Operation cannot be fulfilled: conflict' >&2; exit 1; fi
    echo "secret/s1 replaced"; echo "secret/s2 replaced" ;;
  *) exit 2 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = rewrite_script().replace("/usr/local/bin/kubectl", bin.to_str().unwrap());
        super::super::tests_support::assert_bash_syntax(&script);
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -euo pipefail\n{script}")])
            .env("STATE", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(parse_rewritten("m1", &stdout).unwrap(), 2);
        assert!(
            parse_rewritten("m1", "")
                .unwrap_err()
                .to_string()
                .starts_with("m1: ")
        );
    }
}
