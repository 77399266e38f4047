//! Operators' own credentials (`ilha kubeconfig`).
//!
//! The state directory's `admin.conf` is in `system:masters`: no RBAC rule can take its power
//! away and a client certificate cannot be revoked, so it is the break-glass credential, kept for
//! ilha's own work and for emergencies. Each person gets a kubeconfig of their own instead: a
//! client certificate for their name only (no group), short-lived (`--ttl`), authorized by one
//! ClusterRoleBinding `ilha:user:NAME` to a built-in role. Deleting that binding (`--revoke`)
//! leaves the certificate authenticating but allowed nothing, and the API's audit log names the
//! person, not "kubernetes-admin". Every issue is recorded in `<state>/users/NAME.json` (serial,
//! expiry, role, the certificate's sha256); the private key is written only to `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::cluster::run::kubectl;
use crate::config::ClusterConfig;
use crate::inventory::{Inventory, Role as HostRole};
use crate::pki::{CaKind, KeyPairPem, LeafSpec, Pki, Usage};
use crate::ssh::{Fleet, Session, SshOptions};

/// Where the records live, in the state directory.
pub const USERS_DIR: &str = "users";
/// The ClusterRoleBinding of user NAME is `ilha:user:NAME`.
pub const BINDING_PREFIX: &str = "ilha:user:";
/// Label on every binding ilha makes for a user, its value the user's name.
pub const USER_LABEL: &str = "ilha.io/user";
/// Bounds on `--ttl`: long enough to be usable, short enough that a lost file expires.
pub const MIN_TTL: Duration = Duration::minutes(5);
pub const MAX_TTL: Duration = Duration::days(365);

/// The built-in roles a user may be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AccessRole {
    /// Everything, in every namespace.
    ClusterAdmin,
    /// Read and write most objects, including RBAC inside namespaces, in every namespace.
    Admin,
    /// Read and write most objects in every namespace, no RBAC.
    Edit,
    /// Read most objects (not Secrets) in every namespace.
    View,
}

impl AccessRole {
    /// The ClusterRole Kubernetes ships for it.
    pub fn cluster_role(self) -> &'static str {
        match self {
            AccessRole::ClusterAdmin => "cluster-admin",
            AccessRole::Admin => "admin",
            AccessRole::Edit => "edit",
            AccessRole::View => "view",
        }
    }
}

/// A user name ilha issues for: it is the certificate's CN, a label value and part of the
/// binding's name, so lowercase letters, digits, `.`, `_` and `-`, at most 63 characters, never a
/// name Kubernetes gives meaning to.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let ok_ends = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(first, last)| first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "user name `{name}`: use 1-63 lowercase letters, digits, `.`, `_` or `-`, starting and ending with a letter or digit (it becomes the certificate's CN and a label)"
        ));
    }
    if name.starts_with("system") || name == "kubernetes-admin" || name == "admin" {
        return Err(format!(
            "user name `{name}`: names starting with `system` and `kubernetes-admin`/`admin` are Kubernetes' or ilha's own identities; choose the person's name"
        ));
    }
    Ok(())
}

/// `30m`, `8h`, `7d`: a whole number and one unit (m, h, d), within [`MIN_TTL`]..=[`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "--ttl {text}: give a whole number of minutes, hours or days, such as 30m, 8h or 7d"
        )
    };
    let unit_at = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let number: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0 && number.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    let ttl = match unit {
        "m" => Duration::minutes(number),
        "h" => Duration::hours(number),
        "d" => Duration::days(number),
        _ => return Err(bad()),
    };
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(format!(
            "--ttl {text}: must be between 5m and 365d (a credential that outlives its use is a risk; issue a new one when it expires)"
        ));
    }
    Ok(ttl)
}

/// What the state directory keeps of one user: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user: String,
    /// Every certificate issued, oldest first.
    pub issued: Vec<Issued>,
    /// When `--revoke` deleted the binding (RFC 3339); cleared by the next issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub role: AccessRole,
    /// RFC 3339, UTC.
    pub issued_at: String,
    pub not_after: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// sha256 of the certificate's DER, as `openssl x509 -fingerprint -sha256` prints it
    /// (without colons, lowercase).
    pub cert_sha256: String,
}

fn record_path(state_dir: &Path, user: &str) -> PathBuf {
    state_dir.join(USERS_DIR).join(format!("{user}.json"))
}

fn read_record(state_dir: &Path, user: &str) -> anyhow::Result<Option<UserRecord>> {
    let path = record_path(state_dir, user);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{}: not a user record ilha wrote", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_record(state_dir: &Path, record: &UserRecord) -> anyhow::Result<()> {
    let dir = state_dir.join(USERS_DIR);
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making {}", dir.display()))?;
    }
    let path = record_path(state_dir, &record.user);
    let text = serde_json::to_string_pretty(record)? + "\n";
    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&Rfc3339)
        .expect("formatting a UTC time")
}

/// The ClusterRoleBinding that gives `user` `role` (JSON, which `kubectl apply` takes).
pub fn binding_manifest(user: &str, role: AccessRole) -> String {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": format!("{BINDING_PREFIX}{user}"),
            "labels": {USER_LABEL: user},
            "annotations": {"ilha.io/managed-by": "ilha kubeconfig"},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role.cluster_role(),
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })
    .to_string()
}

/// The API address the state directory's break-glass `admin.conf` uses: the one `up` chose for
/// the operator's machine.
fn operator_server(state_dir: &Path) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Kubeconfig {
        clusters: Vec<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        cluster: Cluster,
    }
    #[derive(Deserialize)]
    struct Cluster {
        server: String,
    }
    let path = state_dir.join("admin.conf");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: not found; `ilha up` writes it (is the cluster config's state_dir this cluster's?)",
            path.display()
        )
    })?;
    let parsed: Kubeconfig = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a kubeconfig: {e}", path.display()))?;
    parsed
        .clusters
        .into_iter()
        .next()
        .map(|c| c.cluster.server)
        .with_context(|| format!("{}: no cluster in it", path.display()))
}

/// One reachable control-plane host, after checking the hosts belong to this state directory
/// (a certificate from the wrong CA would be refused, or worse, from the right one for the wrong
/// cluster).
async fn master_fleet(
    inventory: &Inventory,
    config: &ClusterConfig,
    ssh: &SshOptions,
    command: &str,
) -> anyhow::Result<Fleet> {
    let masters: Vec<String> = inventory
        .with_role(HostRole::ControlPlane)
        .map(|h| h.name.clone())
        .collect();
    let wanted = crate::cluster::run::targets(inventory)
        .into_iter()
        .filter(|t| masters.contains(&t.name))
        .collect();
    let (fleet, failures) = Fleet::connect_available(wanted, ssh).await;
    if fleet.sessions().is_empty() {
        fleet.close().await;
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        bail!(
            "no control-plane host answered; nothing was changed:\n  {}",
            reasons.join("\n  ")
        );
    }
    if let Err(e) = crate::cluster::identity::guard(&fleet, config, command).await {
        fleet.close().await;
        return Err(e);
    }
    Ok(fleet)
}

fn first_session(fleet: &Fleet) -> &Session {
    fleet.sessions().first().expect("checked: one connected")
}

pub struct IssueRequest<'a> {
    pub inventory: &'a Inventory,
    pub config: &'a ClusterConfig,
    pub ssh: &'a SshOptions,
    pub user: &'a str,
    pub role: AccessRole,
    pub ttl: Duration,
    pub out: &'a Path,
}

/// Issues `user` a kubeconfig: the binding first (so the file works the moment it exists), then
/// the file (0600, never over an existing one), then the record.
pub async fn issue(request: &IssueRequest<'_>) -> anyhow::Result<String> {
    let IssueRequest {
        inventory,
        config,
        ssh,
        user,
        role,
        ttl,
        out,
    } = *request;
    check_user_name(user).map_err(anyhow::Error::msg)?;
    if out.exists() {
        bail!(
            "{}: already exists; a kubeconfig holds a private key and is never overwritten (remove it or choose another --out)",
            out.display()
        );
    }
    let state_dir = &config.state_dir;
    let server = operator_server(state_dir)?;
    // Refuses a state directory without the cluster's CA rather than making a new one.
    crate::backup::run::cluster_ca_sha256(state_dir)?;
    let pki = Pki::open_or_init(&state_dir.join("pki"))?;
    let spec = LeafSpec {
        common_name: user.to_string(),
        organizations: Vec::new(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        usage: Usage::Client,
    };
    let client = pki.issue_unstored(CaKind::Kubernetes, &format!("user-{user}"), &spec, ttl)?;
    let ca = pki.ca(CaKind::Kubernetes)?;
    let (serial, not_after, cert_sha256) = describe(&client)?;

    let fleet = master_fleet(inventory, config, ssh, "kubeconfig").await?;
    let session = first_session(&fleet);
    let script = format!(
        "{} <<'ILHA_BINDING'\n{}\nILHA_BINDING\n",
        kubectl("apply -f -"),
        binding_manifest(user, role)
    );
    let applied = session
        .run_script(&format!("binding {BINDING_PREFIX}{user}"), &script)
        .await;
    let master = session.name().to_string();
    fleet.close().await;
    applied.with_context(|| {
        format!("{master}: applying {BINDING_PREFIX}{user}; no kubeconfig was written")
    })?;

    let text =
        crate::kubeconfig::render(&config.cluster_name, &server, &ca.cert_pem, &client, user);
    // 0600 before the first byte: it holds the user's private key.
    crate::fsutil::write_atomic(out, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", out.display()))?;
    let mut record = read_record(state_dir, user)?.unwrap_or(UserRecord {
        user: user.to_string(),
        issued: Vec::new(),
        revoked: None,
    });
    record.revoked = None;
    record.issued.push(Issued {
        role,
        issued_at: now_rfc3339(),
        not_after: not_after.clone(),
        serial: serial.clone(),
        cert_sha256,
    });
    write_record(state_dir, &record)?;
    Ok(format!(
        "{}: kubeconfig for `{user}` (role {}, through ClusterRoleBinding {BINDING_PREFIX}{user} applied from {master}), valid until {not_after}, serial {serial}\n\
         Recorded in {}. Take it away with: ilha kubeconfig --revoke {user}\n",
        out.display(),
        role.cluster_role(),
        record_path(state_dir, user).display(),
    ))
}

/// Serial (hex), notAfter (RFC 3339) and sha256 (hex) of a freshly issued certificate.
fn describe(client: &KeyPairPem) -> anyhow::Result<(String, String, String)> {
    use sha2::Digest as _;
    let (_, pem) = x509_parser::pem::parse_x509_pem(client.cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("reading the certificate just issued: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("reading the certificate just issued: {e}"))?;
    let serial = cert.raw_serial_as_string().replace(':', "");
    let not_after = cert
        .validity()
        .not_after
        .to_datetime()
        .format(&Rfc3339)
        .context("formatting notAfter")?;
    let sha256 = hex::encode(sha2::Sha256::digest(&pem.contents));
    Ok((serial, not_after, sha256))
}

/// Deletes `user`'s binding: their certificates still authenticate until they expire, but are
/// allowed nothing. Checked with the API's own answer for the user.
pub async fn revoke(
    inventory: &Inventory,
    config: &ClusterConfig,
    ssh: &SshOptions,
    user: &str,
) -> anyhow::Result<String> {
    check_user_name(user).map_err(anyhow::Error::msg)?;
    let state_dir = &config.state_dir;
    let record = read_record(state_dir, user)?;
    let fleet = master_fleet(inventory, config, ssh, "kubeconfig --revoke").await?;
    let session = first_session(&fleet);
    // `auth can-i` exits 1 for "no": its answer is read from stdout.
    let script = format!(
        "{}\n{} || true\n",
        kubectl(&format!(
            "delete clusterrolebinding {BINDING_PREFIX}{user} --ignore-not-found"
        )),
        kubectl(&format!("auth can-i get pods --all-namespaces --as={user}")),
    );
    let output = session.run_script(&format!("revoke {user}"), &script).await;
    let master = session.name().to_string();
    fleet.close().await;
    let output = output.with_context(|| format!("{master}: deleting {BINDING_PREFIX}{user}"))?;
    let deleted = output.stdout.contains("deleted");
    let still_allowed = output.stdout.lines().any(|l| l.trim() == "yes");
    if still_allowed {
        bail!(
            "{master}: {BINDING_PREFIX}{user} is gone but `{user}` may still read pods: another binding names this user (look with `kubectl get clusterrolebindings,rolebindings -A -o wide | grep {user}`)"
        );
    }
    if record.is_none() && !deleted {
        bail!(
            "no user `{user}`: the state directory has no record and the cluster no binding for it"
        );
    }
    if let Some(mut record) = record {
        record.revoked = Some(now_rfc3339());
        write_record(state_dir, &record)?;
    }
    Ok(format!(
        "`{user}`: {} on the cluster (from {master}); their certificates are allowed nothing now and expire on their own.\n",
        if deleted {
            format!("ClusterRoleBinding {BINDING_PREFIX}{user} deleted")
        } else {
            format!("no ClusterRoleBinding {BINDING_PREFIX}{user} was left")
        }
    ))
}

/// Every user the state directory has issued for, with the cluster's bindings beside them.
pub async fn list(
    inventory: &Inventory,
    config: &ClusterConfig,
    ssh: &SshOptions,
) -> anyhow::Result<String> {
    let dir = config.state_dir.join(USERS_DIR);
    let mut records = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let path = entry?.path();
            if let Some(user) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                && let Some(record) = read_record(&config.state_dir, user)?
            {
                records.push(record);
            }
        }
    }
    let fleet = master_fleet(inventory, config, ssh, "kubeconfig --list").await?;
    let session = first_session(&fleet);
    let script = kubectl(&format!(
        "get clusterrolebindings -l {USER_LABEL} -o jsonpath='{{range .items[*]}}{{.metadata.labels.ilha\\.io/user}} {{.roleRef.name}}{{\"\\n\"}}{{end}}'"
    ));
    let output = session.run(&script).await;
    fleet.close().await;
    let bindings: Vec<(String, String)> = output?
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect();
    Ok(render_list(&records, &bindings))
}

/// The table `--list` prints: one line per user, recorded or bound.
pub fn render_list(records: &[UserRecord], bindings: &[(String, String)]) -> String {
    let mut users: Vec<&str> = records
        .iter()
        .map(|r| r.user.as_str())
        .chain(bindings.iter().map(|(u, _)| u.as_str()))
        .collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return "No user kubeconfigs issued (ilha kubeconfig --user NAME --out FILE).\n".into();
    }
    let mut text = format!(
        "{:<24} {:<14} {:<22} {}\n",
        "USER", "ROLE", "NEWEST EXPIRES", "ACCESS"
    );
    for user in users {
        let record = records.iter().find(|r| r.user == user);
        let binding = bindings.iter().find(|(u, _)| u == user);
        let newest = record.and_then(|r| r.issued.last());
        let role = binding
            .map(|(_, r)| r.as_str())
            .or(newest.map(|i| i.role.cluster_role()))
            .unwrap_or("-");
        let expires = newest.map(|i| i.not_after.as_str()).unwrap_or("-");
        let access = match (binding, record) {
            (Some(_), Some(_)) => "bound".to_string(),
            (Some(_), None) => "bound, but not issued from this state directory".to_string(),
            (None, Some(r)) => match &r.revoked {
                Some(when) => format!("revoked {when}"),
                None => {
                    "no binding on the cluster (run `ilha kubeconfig --user` again to restore it)"
                        .to_string()
                }
            },
            (None, None) => unreachable!("listed users come from one or the other"),
        };
        let _ = writeln!(text, "{user:<24} {role:<14} {expires:<22} {access}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_and_never_kubernetes_own() {
        for good in ["alice", "bob.smith", "ops_1", "a", "x-9"] {
            assert_eq!(check_user_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "-bob",
            "bob-",
            "a b",
            "alice@corp",
            "a:b",
            &"a".repeat(64),
        ] {
            let err = check_user_name(bad).unwrap_err();
            assert!(err.contains("1-63 lowercase"), "{bad}: {err}");
        }
        for reserved in ["system", "system-admin", "kubernetes-admin", "admin"] {
            let err = check_user_name(reserved).unwrap_err();
            assert!(
                err.contains("Kubernetes' or ilha's own"),
                "{reserved}: {err}"
            );
        }
    }

    #[test]
    fn ttl_takes_minutes_hours_days_within_bounds() {
        assert_eq!(parse_ttl("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_ttl("8h"), Ok(Duration::hours(8)));
        assert_eq!(parse_ttl("365d"), Ok(Duration::days(365)));
        for bad in ["", "h", "8", "8s", "-1h", "+8h", "1.5h", "8 h", "0m"] {
            let err = parse_ttl(bad).unwrap_err();
            assert!(err.contains("such as 30m, 8h or 7d"), "{bad}: {err}");
        }
        for out_of_range in ["4m", "366d"] {
            let err = parse_ttl(out_of_range).unwrap_err();
            assert!(err.contains("between 5m and 365d"), "{out_of_range}: {err}");
        }
    }

    #[test]
    fn the_binding_names_the_user_alone_and_the_built_in_role() {
        let manifest: serde_json::Value =
            serde_json::from_str(&binding_manifest("alice", AccessRole::View)).unwrap();
        assert_eq!(manifest["metadata"]["name"], "ilha:user:alice");
        assert_eq!(manifest["metadata"]["labels"]["ilha.io/user"], "alice");
        assert_eq!(manifest["roleRef"]["name"], "view");
        assert_eq!(
            manifest["subjects"],
            serde_json::json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}])
        );
    }

    #[test]
    fn an_issued_certificate_has_the_user_alone_and_the_asked_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open_or_init(&dir.path().join("pki")).unwrap();
        let spec = LeafSpec {
            common_name: "alice".into(),
            organizations: Vec::new(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            usage: Usage::Client,
        };
        let issued = pki
            .issue_unstored(CaKind::Kubernetes, "user-alice", &spec, Duration::hours(2))
            .unwrap();
        let (serial, not_after, sha) = describe(&issued).unwrap();
        assert!(!serial.is_empty() && sha.len() == 64);
        let not_after = OffsetDateTime::parse(&not_after, &Rfc3339).unwrap();
        let left = not_after - OffsetDateTime::now_utc();
        assert!(
            left > Duration::minutes(115) && left <= Duration::hours(2),
            "{left}"
        );
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.subject().to_string(), "CN=alice", "no group, no O");
        // Nothing of it is kept: only the CA and what `up` stores live in the PKI directory.
        let kept: Vec<_> = walk(&dir.path().join("pki"));
        assert!(
            kept.iter().all(|p| !p.contains("alice")),
            "the user's key or certificate was stored: {kept:?}"
        );
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
        out
    }

    #[test]
    fn the_list_says_who_is_bound_revoked_or_unknown() {
        let issued = |role| Issued {
            role,
            issued_at: "2026-12-07T04:00:00Z".into(),
            not_after: "2026-12-08T04:00:00Z".into(),
            serial: "01".into(),
            cert_sha256: "ab".into(),
        };
        let records = vec![
            UserRecord {
                user: "alice".into(),
                issued: vec![issued(AccessRole::View)],
                revoked: Some("2026-12-07T05:00:00Z".into()),
            },
            UserRecord {
                user: "bob".into(),
                issued: vec![issued(AccessRole::ClusterAdmin)],
                revoked: None,
            },
            UserRecord {
                user: "carol".into(),
                issued: vec![issued(AccessRole::Edit)],
                revoked: None,
            },
        ];
        let bindings = vec![
            ("bob".to_string(), "cluster-admin".to_string()),
            ("mallory".to_string(), "cluster-admin".to_string()),
        ];
        let text = render_list(&records, &bindings);
        let line = |user: &str| {
            text.lines()
                .find(|l| l.starts_with(user))
                .unwrap_or_else(|| panic!("{user} missing:\n{text}"))
                .to_string()
        };
        assert!(
            line("alice").contains("revoked 2026-12-07T05:00:00Z"),
            "{text}"
        );
        assert!(
            line("bob").contains("cluster-admin") && line("bob").ends_with("bound"),
            "{text}"
        );
        assert!(
            line("carol").contains("no binding on the cluster"),
            "{text}"
        );
        assert!(
            line("mallory").contains("not issued from this state directory"),
            "{text}"
        );
        assert!(render_list(&[], &[]).starts_with("No user kubeconfigs"));
    }
}
