//! `ilha restore KIT`: opens the kit (signature, decryption, every file's sha256) before
//! anything else, checks it belongs to this cluster, then recovers etcd on the same masters or
//! restores the objects into a new cluster.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::etcd::{Recovery, recover};
use super::objects::{self as restore_objects, RestoreOptions};
use crate::backup::kit::{self, KitManifest, Unlock};
use crate::backup::run::{
    KIT_KEY_DIR, OBJECTS_DIR, OPENED_PREFIX, cluster_ca_sha256, private_staging,
};
use crate::cluster::run::load_inputs;
use crate::cluster::say;
use crate::ssh::SshOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// etcd disaster recovery on the masters the kit came from.
    Etcd,
    /// The dumped objects into the cluster the config names (a new one, typically).
    Objects { dry_run: bool },
}

#[derive(Debug)]
pub struct RestoreRequest {
    pub kit: PathBuf,
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
    /// The kit signing key's public half; default `<state>/kit-key/ilha.pub`.
    pub pubkey: Option<PathBuf>,
    pub unlock: Unlock,
    pub mode: Mode,
    pub yes: bool,
}

fn public_key(
    request: &RestoreRequest,
    state_dir: &Path,
) -> anyhow::Result<ilha_format::PublicKey> {
    let path = match &request.pubkey {
        Some(path) => path.clone(),
        None => {
            let default = state_dir
                .join(KIT_KEY_DIR)
                .join(ilha_format::sign::PUBLIC_KEY_FILE);
            if !default.exists() {
                bail!(
                    "no public key to check {} with: pass --pubkey (the `ilha.pub` of the key that \
                     signed it; `ilha backup` made it in <state>/{KIT_KEY_DIR}/ unless --key was given)",
                    request.kit.display()
                );
            }
            default
        }
    };
    ilha_format::load_public_key(&path).with_context(|| format!("loading {}", path.display()))
}

/// A kit is restored only onto the cluster it names; objects go anywhere (that is their point),
/// but the name must still be the config's, so a kit is not applied to the wrong cluster by a slip.
fn check_cluster(manifest: &KitManifest, cluster_name: &str, kit: &Path) -> anyhow::Result<()> {
    if manifest.cluster_name != cluster_name {
        bail!(
            "{} is a kit of cluster {:?}, and the cluster config names {:?}: it is from another \
             cluster. Nothing was changed",
            kit.display(),
            manifest.cluster_name,
            cluster_name
        );
    }
    Ok(())
}

pub async fn restore(request: &RestoreRequest) -> anyhow::Result<String> {
    let (inventory, config) = load_inputs(&request.inventory, request.config.as_deref())?;
    let mut state = crate::statedir::StateDir::open(&config.state_dir, "restore")?;
    state.keep();
    let pubkey = public_key(request, &config.state_dir)?;
    // Inside the state directory: it is on the operator's disk (the kit may be on read-only
    // media) and as private as what the kit holds; removed on every exit path.
    let opened = private_staging(&config.state_dir, OPENED_PREFIX)?;
    say(format!("Opening {} ...", request.kit.display()));
    let manifest = kit::open_kit(&request.kit, &pubkey, &request.unlock, opened.path())
        .with_context(|| format!("{}: refused; nothing was changed", request.kit.display()))?;
    say(format!(
        "  signature, decryption and all {} files check out",
        manifest.files.len()
    ));
    check_cluster(&manifest, &config.cluster_name, &request.kit)?;

    match request.mode {
        Mode::Etcd => {
            if let Ok(ours) = cluster_ca_sha256(&config.state_dir)
                && ours != manifest.cluster_ca_sha256
            {
                bail!(
                    "{} is a kit of another cluster named {:?}: its CA (sha256 {}) is not the one in {} ({ours}). \
                     Nothing was changed (a kit restores its objects into another cluster with --objects)",
                    request.kit.display(),
                    manifest.cluster_name,
                    manifest.cluster_ca_sha256,
                    config.state_dir.join("pki").display()
                );
            }
            recover(&Recovery {
                inventory: &inventory,
                config: &config,
                ssh: &request.ssh,
                manifest: &manifest,
                payload: opened.path(),
                yes: request.yes,
            })
            .await
        }
        Mode::Objects { dry_run } => {
            let admin = config.state_dir.join("admin.conf");
            let client = crate::backup::objects::client_from_kubeconfig(&admin)
                .await
                .with_context(|| format!("connecting with {}", admin.display()))?;
            let report = restore_objects::restore(
                &client,
                &opened.path().join(OBJECTS_DIR),
                &RestoreOptions { dry_run },
            )
            .await?;
            let failures = report.failures();
            if failures > 0 {
                bail!("{report}{failures} object(s) could not be restored (above)");
            }
            Ok(report.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kit_of_another_cluster_is_refused_by_name() {
        let manifest: KitManifest = serde_json::from_value(serde_json::json!({
            "format": kit::KIT_FORMAT, "cluster_name": "prod", "cluster_ca_sha256": "ab",
            "created_at": 0, "ilha_version": "0", "masters": [], "objects": [],
            "etcd": {"member": "n1", "snapshot": "etcd/snapshot.db", "sha256": "cd",
                     "status": {"hash": 1, "revision": 2, "totalKey": 3, "totalSize": 4},
                     "initial_cluster": [], "drill": {"passed": true, "revision": 2,
                     "restored_keys": 3, "live_keys": 3, "seconds": 1.0, "detail": ""}}
        }))
        .unwrap();
        let err = check_cluster(&manifest, "lab", Path::new("k.tar.zst")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("\"prod\"") && text.contains("\"lab\""),
            "{text}"
        );
        check_cluster(&manifest, "prod", Path::new("k.tar.zst")).unwrap();
    }
}
