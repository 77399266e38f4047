//! `ilha backup --schedule`: etcd snapshots taken on the masters themselves by a systemd timer,
//! with retention, and `ilha backup list` to see what each master holds.
//!
//! Each etcd member gets a script ([`SCRIPT_PATH`]) run by a oneshot service, started by a timer.
//! The script writes `BACKUP_DIR/etcd-<UTC stamp>-<hostname>.db` only after etcd's own
//! `snapshot status` (etcdutl's, or etcd 3.4's etcdctl's, chosen on the host at each run) has
//! read it, with the status JSON next to it, then keeps the newest `keep`.
//! A failed run fails the service, so `systemctl is-failed` and the journal show it.
//!
//! [`BACKUP_DIR`] is the operator's data: `ilha reset` removes the script and the units (they are
//! listed in [`INSTALLED_FILES`]) but never the snapshots.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};

use crate::cluster::membership::etcdctl;
use crate::cluster::paths::{BIN_DIR, ETCD_PKI_DIR, ILHA_DIR, INSTALLED_FILES, UNIT_DIR};
use crate::cluster::render::RemoteFile;
use crate::cluster::snapshot::{parse_status, snapshot_tool_functions};
use crate::ssh::{Fleet, Session, UploadSource, shell_quote};

/// Where the snapshots are kept, on each master.
pub const BACKUP_DIR: &str = "/var/backups/ilha";
/// The script the service runs (also usable by hand: same snapshot, same retention).
pub const SCRIPT_PATH: &str = "/usr/local/sbin/ilha-etcd-snapshot";
pub const SERVICE: &str = "ilha-etcd-snapshot.service";
pub const TIMER: &str = "ilha-etcd-snapshot.timer";

/// Our snapshot files, and only them: operator files in the directory are never counted nor
/// removed.
const SNAPSHOT_GLOB: &str =
    "etcd-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*";

/// When and how many snapshots each master keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// A systemd `OnCalendar=` expression.
    pub on_calendar: String,
    /// Snapshots kept per master, the newest ones (at least 1).
    pub keep: usize,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            on_calendar: "hourly".to_string(),
            keep: 24,
        }
    }
}

impl ScheduleSpec {
    /// What can be checked without a host: the value goes into a unit file line, so no line
    /// breaks or control characters (they would add lines of their own).
    fn validate(&self) -> anyhow::Result<()> {
        if self.keep == 0 {
            bail!("--keep 0 would delete every snapshot: keep at least 1");
        }
        let value = self.on_calendar.trim();
        if value.is_empty() {
            bail!(
                "the OnCalendar expression is empty (systemd's `hourly`, `daily`, `*-*-* 02:30` ...)"
            );
        }
        if value.chars().any(char::is_control) {
            bail!(
                "OnCalendar {:?} holds a line break or control character: not a calendar expression",
                self.on_calendar
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// What goes on each member

/// The script, service and timer put on each etcd member.
pub fn render(spec: &ScheduleSpec) -> Vec<RemoteFile> {
    vec![
        RemoteFile::new(
            SCRIPT_PATH,
            0o755,
            snapshot_script(spec.keep, BACKUP_DIR, etcdctl, &snapshot_tool_functions()),
        ),
        RemoteFile::new(format!("{UNIT_DIR}/{SERVICE}"), 0o644, service_unit()),
        RemoteFile::new(
            format!("{UNIT_DIR}/{TIMER}"),
            0o644,
            timer_unit(spec.on_calendar.trim()),
        ),
    ]
}

fn service_unit() -> String {
    format!(
        "# Written by ilha (`ilha backup --schedule`); changes are overwritten when it runs again.\n\
         [Unit]\n\
         Description=etcd snapshot into {BACKUP_DIR} (ilha)\n\
         After=etcd.service\n\n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={SCRIPT_PATH}\n\
         # A snapshot streams the whole database: yield to etcd and the control plane.\n\
         Nice=10\n\
         IOSchedulingClass=best-effort\n\
         IOSchedulingPriority=7\n\
         # A oneshot has no start timeout by default: a hung etcdctl would block every later run.\n\
         TimeoutStartSec=15min\n"
    )
}

fn timer_unit(on_calendar: &str) -> String {
    format!(
        "# Written by ilha (`ilha backup --schedule`); changes are overwritten when it runs again.\n\
         [Unit]\n\
         Description=Scheduled etcd snapshots into {BACKUP_DIR} (ilha)\n\n\
         [Timer]\n\
         OnCalendar={on_calendar}\n\
         # A run missed while the host was down happens when it is back.\n\
         Persistent=true\n\
         # The masters do not all snapshot in the same second.\n\
         RandomizedDelaySec=60\n\
         Unit={SERVICE}\n\n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// The snapshot script; `etcdctl` makes the etcdctl command line for its arguments and `tools`
/// is [`snapshot_tool_functions`] (the real ones on hosts, fakes in tests). The tool that reads
/// snapshots is chosen at each run, so a host given etcdutl later uses it from then on.
fn snapshot_script(
    keep: usize,
    dir: &str,
    etcdctl: impl Fn(&str) -> String,
    tools: &str,
) -> String {
    SCRIPT
        .replace("@DIR@", &shell_quote(dir))
        .replace("@KEEP@", &keep.to_string())
        .replace("@GLOB@", &shell_quote(SNAPSHOT_GLOB))
        .replace("@SAVE@", &etcdctl("snapshot save \"$part\""))
        .replace("@TOOLS@\n", tools)
}

const SCRIPT: &str = r#"#!/bin/bash
# Written by ilha (`ilha backup --schedule`), run by ilha-etcd-snapshot.service: an etcd snapshot
# of this member into the directory below, the newest ones kept. Fails (and says why on stderr,
# in the journal) when etcd cannot give or read the snapshot.
set -euo pipefail
umask 077
dir=@DIR@
keep=@KEEP@
ours=@GLOB@
# etcdutl reads snapshots where the host has it; etcdctl only up to etcd 3.5. Chosen before the
# snapshot is taken: a host that cannot read one does not take one.
@TOOLS@

mkdir -p -- "$dir"
# The snapshots hold every Secret of the cluster.
chmod 0700 -- "$dir"
# A run that died (power cut, killed) leaves partial files behind: never a backup.
find "$dir" -maxdepth 1 -type f -name "$ours.part" -printf 'removed leftover %f\n' -delete

host=$(uname -n)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# Two runs within one second (a manual start right after the timer's) would share a name.
while [ -e "$dir/etcd-$stamp-$host.db" ]; do
  sleep 1
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
done
name=etcd-$stamp-$host
part=$dir/$name.db.part
# etcdctl itself writes to "$part.part" before renaming it to "$part".
trap 'rm -f -- "$part" "$part.part" "$dir/$name.json.part"' EXIT

@SAVE@
if ! status=$(snapshot_status "$part"); then
  echo "etcd cannot read the snapshot it just wrote; deleted it" >&2
  exit 1
fi
keys=$(sed -n 's/.*"totalKey":\([0-9]*\).*/\1/p' <<<"$status")
if [ -z "$keys" ] || [ "$keys" -eq 0 ]; then
  echo "the snapshot holds no keys (status: $status); deleted it" >&2
  exit 1
fi
chmod 0600 -- "$part"
printf '%s\n' "$status" > "$dir/$name.json.part"
mv -f -- "$part" "$dir/$name.db"
mv -f -- "$dir/$name.json.part" "$dir/$name.json"
trap - EXIT

# Retention: the newest $keep by name (the stamp sorts them), the one just made always among them.
kept=1
while read -r file; do
  [ "$file" != "$name.db" ] || continue
  if [ "$kept" -lt "$keep" ]; then
    kept=$((kept + 1))
    continue
  fi
  rm -f -- "$dir/$file" "$dir/${file%.db}.json"
  echo "removed $file (keeping the newest $keep)"
done < <(find "$dir" -maxdepth 1 -type f -name "$ours.db" -printf '%f\n' | sort -r)
echo "saved $dir/$name.db: $status"
"#;

// ---------------------------------------------------------------------------------------------
// Installing

/// What a member says before anything is installed on it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Readiness {
    /// `systemd-analyze calendar`'s complaint about the expression.
    calendar_error: Option<String>,
    etcd_member: bool,
    /// ilha installed this host (its file list, which `reset` reads, exists).
    ilha_host: bool,
}

fn readiness_script(on_calendar: &str) -> String {
    format!(
        r#"if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "calendar_error=systemd-analyze is not installed: cannot check the expression"
elif ! out=$(systemd-analyze calendar -- {value} 2>&1); then
  printf 'calendar_error=%s\n' "$(printf '%s' "$out" | tr '\n' ' ')"
fi
if [ -x {BIN_DIR}/etcdctl ] && [ -f {ETCD_PKI_DIR}/healthcheck-client.crt ]; then echo etcd_member=yes; fi
if [ -d {ILHA_DIR} ]; then echo ilha_host=yes; fi
"#,
        value = shell_quote(on_calendar),
    )
}

fn parse_readiness(stdout: &str) -> Readiness {
    let mut readiness = Readiness::default();
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("calendar_error", text)) => {
                readiness.calendar_error = Some(text.trim().to_string());
            }
            Some(("etcd_member", "yes")) => readiness.etcd_member = true,
            Some(("ilha_host", "yes")) => readiness.ilha_host = true,
            _ => {}
        }
    }
    readiness
}

/// Why `host` cannot take the schedule (empty: it can).
fn problems(host: &str, spec: &ScheduleSpec, readiness: &Readiness) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(error) = &readiness.calendar_error {
        problems.push(format!(
            "{host}: OnCalendar {:?} is not a systemd calendar expression ({error}); \
             try `hourly`, `daily`, `*-*-* 02:30` or see `man systemd.time`",
            spec.on_calendar
        ));
    }
    if !readiness.etcd_member {
        problems.push(format!(
            "{host}: not an etcd member ilha installed (no {BIN_DIR}/etcdctl or \
             {ETCD_PKI_DIR}/healthcheck-client.crt): snapshots are taken on etcd members"
        ));
    } else if !readiness.ilha_host {
        problems.push(format!(
            "{host}: no {ILHA_DIR}: not installed by ilha, so `ilha reset` would not remove the timer"
        ));
    }
    problems
}

fn sessions<'a>(fleet: &'a Fleet, hosts: &[String]) -> anyhow::Result<Vec<&'a Session>> {
    if hosts.is_empty() {
        bail!("no etcd member given");
    }
    let missing: Vec<&str> = hosts
        .iter()
        .filter(|host| fleet.session(host).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!("not connected to {}", missing.join(", "));
    }
    Ok(hosts
        .iter()
        .filter_map(|host| fleet.session(host))
        .collect())
}

/// Puts the script and units on each of `hosts` (etcd members), starts the timer and takes a
/// first snapshot right away. Every host is checked first (the calendar expression by the host's
/// own systemd): a refusal installs nothing anywhere. Returns one line per host.
pub async fn install(
    fleet: &Fleet,
    hosts: &[String],
    spec: &ScheduleSpec,
) -> anyhow::Result<String> {
    spec.validate()?;
    let sessions = sessions(fleet, hosts)?;

    let check = readiness_script(spec.on_calendar.trim());
    let checks = futures_util::future::join_all(
        sessions
            .iter()
            .map(|session| session.run_script("check the snapshot schedule", &check)),
    )
    .await;
    let mut refusals = Vec::new();
    for (session, result) in sessions.iter().zip(checks) {
        match result {
            Ok(output) => refusals.extend(problems(
                session.name(),
                spec,
                &parse_readiness(&output.stdout),
            )),
            Err(error) => refusals.push(error.to_string()),
        }
    }
    if !refusals.is_empty() {
        bail!(
            "not scheduling etcd snapshots; nothing was installed:\n  {}",
            refusals.join("\n  ")
        );
    }

    let files = render(spec);
    let results =
        futures_util::future::join_all(sessions.iter().map(|session| install_on(session, &files)))
            .await;
    let mut failures = Vec::new();
    let mut installed = Vec::new();
    for (session, result) in sessions.iter().zip(results) {
        match result {
            Ok(()) => installed.push(session.name().to_string()),
            Err(error) => failures.push(format!("{}: {error:#}", session.name())),
        }
    }
    if !failures.is_empty() {
        let done = if installed.is_empty() {
            String::new()
        } else {
            format!("\n(installed and snapshotted on {})", installed.join(", "))
        };
        bail!(
            "scheduling etcd snapshots failed on {} host(s):\n  {}{done}",
            failures.len(),
            failures.join("\n  ")
        );
    }

    let listed = list(fleet, hosts).await?;
    let mut out = String::new();
    for host in &listed {
        let _ = write!(
            out,
            "{}: snapshots {} into {BACKUP_DIR}, the newest {} kept",
            host.host, spec.on_calendar, spec.keep
        );
        if let Some(next) = host.timer.as_ref().and_then(|t| t.next.as_deref()) {
            let _ = write!(out, "; next run {next}");
        }
        match host.snapshots.first() {
            Some(first) => {
                let _ = writeln!(
                    out,
                    "; first snapshot {}: revision {}, {} keys, {}",
                    first.file,
                    first.revision,
                    first.total_keys,
                    ilha_format::inspect::human_bytes(first.size)
                );
            }
            None => {
                let _ = writeln!(out, "; no snapshot found after the first run");
            }
        }
    }
    Ok(out)
}

async fn install_on(session: &Session, files: &[RemoteFile]) -> anyhow::Result<()> {
    // Listed before they are written, so a run that stops halfway leaves nothing `reset` misses.
    let mut record = String::from("printf '%s\\n'");
    for file in files {
        record.push(' ');
        record.push_str(&shell_quote(&file.path));
    }
    let _ = write!(record, " >> {INSTALLED_FILES}");
    session
        .run(&record)
        .await
        .context("recording the files for `ilha reset`")?;
    for file in files {
        session
            .upload(UploadSource::Bytes(&file.content), &file.path, file.mode)
            .await?;
    }
    // `restart`: a timer already running keeps its old schedule otherwise. `start` of a oneshot
    // waits for the snapshot to be taken.
    let activate = format!(
        "systemctl daemon-reload\n\
         systemctl enable --quiet {TIMER}\n\
         systemctl restart {TIMER}\n\
         if ! systemctl start {SERVICE}; then\n\
         \x20 journalctl -u {SERVICE} -n 8 --no-pager -o cat >&2 || true\n\
         \x20 exit 1\n\
         fi\n"
    );
    session
        .run_script("start the etcd snapshot timer", &activate)
        .await
        .with_context(|| format!("the first snapshot failed (see `journalctl -u {SERVICE}`)"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listing

/// What one master holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshots {
    pub host: String,
    /// Newest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// `None`: the timer is not installed.
    pub timer: Option<TimerState>,
}

/// One snapshot file in [`BACKUP_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// File name within [`BACKUP_DIR`].
    pub file: String,
    /// Unix time the file was written.
    pub taken_at: u64,
    pub size: u64,
    /// From the status JSON next to it; 0 when that file is missing (etcd revisions start at 1).
    pub revision: u64,
    pub total_keys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerState {
    pub on_calendar: String,
    /// When it fires next, as systemd says it; `None` when the timer is not active.
    pub next: Option<String>,
    /// How the last run (since boot) ended; `None` when it has not run.
    pub last_result: Option<String>,
}

/// One `key=value` line per fact; snapshots as `snapshot=FILE<TAB>MTIME<TAB>SIZE<TAB>JSON`.
fn list_script() -> String {
    format!(
        r#"dir={dir}
ours={glob}
timer={UNIT_DIR}/{TIMER}
show() {{ systemctl show -p "$2" --value "$1" 2>/dev/null || true; }}
if [ -f "$timer" ]; then
  echo timer=installed
  printf 'on_calendar=%s\n' "$(sed -n 's/^OnCalendar=//p' "$timer" | head -n 1)"
  printf 'timer_active=%s\n' "$(systemctl is-active {TIMER} 2>/dev/null || true)"
  printf 'next=%s\n' "$(show {TIMER} NextElapseUSecRealtime)"
  printf 'service_state=%s\n' "$(show {SERVICE} ActiveState)"
  printf 'service_result=%s\n' "$(show {SERVICE} Result)"
  printf 'service_status=%s\n' "$(show {SERVICE} ExecMainStatus)"
  printf 'service_ended=%s\n' "$(show {SERVICE} ExecMainExitTimestamp)"
else
  echo timer=absent
fi
if [ -d "$dir" ]; then
  while read -r file; do
    read -r mtime size < <(stat -c '%Y %s' -- "$dir/$file")
    json=
    if [ -f "$dir/${{file%.db}}.json" ]; then json=$(tr -d '\n\t' < "$dir/${{file%.db}}.json"); fi
    printf 'snapshot=%s\t%s\t%s\t%s\n' "$file" "$mtime" "$size" "$json"
  done < <(find "$dir" -maxdepth 1 -type f -name "$ours.db" -printf '%f\n')
fi
"#,
        dir = shell_quote(BACKUP_DIR),
        glob = shell_quote(SNAPSHOT_GLOB),
    )
}

/// systemd's "no value" spellings.
fn present(value: &str) -> Option<String> {
    let value = value.trim();
    match value {
        "" | "n/a" | "0" => None,
        _ => Some(value.to_string()),
    }
}

/// Reads what [`list_script`] printed on `host`.
fn parse_list(host: &str, stdout: &str) -> anyhow::Result<HostSnapshots> {
    let mut facts = std::collections::BTreeMap::new();
    let mut snapshots = Vec::new();
    for (index, line) in stdout.lines().enumerate() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key != "snapshot" {
            facts.insert(key, value);
            continue;
        }
        let bad = || {
            format!(
                "{host}: line {} of the snapshot listing: {line:?}",
                index + 1
            )
        };
        let mut fields = value.splitn(4, '\t');
        let (Some(file), Some(mtime), Some(size), json) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            bail!("{}: expected FILE, MTIME, SIZE, JSON", bad());
        };
        let taken_at = mtime.parse().with_context(bad)?;
        let size = size.parse().with_context(bad)?;
        let (revision, total_keys) = match json.map(str::trim).filter(|j| !j.is_empty()) {
            Some(json) => {
                let status = parse_status(json).with_context(|| {
                    format!("{host}: {BACKUP_DIR}/{}", file.replace(".db", ".json"))
                })?;
                (status.revision, status.total_keys)
            }
            None => (0, 0),
        };
        snapshots.push(SnapshotEntry {
            file: file.to_string(),
            taken_at,
            size,
            revision,
            total_keys,
        });
    }
    snapshots.sort_by(|a, b| (b.taken_at, &b.file).cmp(&(a.taken_at, &a.file)));

    let fact = |key: &str| facts.get(key).copied().unwrap_or("");
    let timer = match fact("timer") {
        "installed" => Some(TimerState {
            on_calendar: fact("on_calendar").trim().to_string(),
            next: if fact("timer_active") == "active" {
                present(fact("next"))
            } else {
                None
            },
            last_result: last_result(
                fact("service_state"),
                fact("service_result"),
                fact("service_status"),
                fact("service_ended"),
            ),
        }),
        "absent" => None,
        other => bail!("{host}: unexpected snapshot listing (timer={other:?}):\n{stdout}"),
    };
    Ok(HostSnapshots {
        host: host.to_string(),
        snapshots,
        timer,
    })
}

fn last_result(state: &str, result: &str, status: &str, ended: &str) -> Option<String> {
    if state == "activating" {
        return Some("running now".to_string());
    }
    let ended = present(ended)?;
    Some(if result == "success" {
        format!("succeeded {ended}")
    } else {
        format!("FAILED ({result}, exit status {status}) {ended}; see `journalctl -u {SERVICE}`")
    })
}

/// The snapshots on each of `hosts` and the state of their timers.
pub async fn list(fleet: &Fleet, hosts: &[String]) -> anyhow::Result<Vec<HostSnapshots>> {
    let sessions = sessions(fleet, hosts)?;
    let script = list_script();
    let outputs = futures_util::future::join_all(
        sessions
            .iter()
            .map(|session| session.run_script("list etcd snapshots", &script)),
    )
    .await;
    let mut listed = Vec::new();
    let mut failures = Vec::new();
    for (session, output) in sessions.iter().zip(outputs) {
        match output
            .map_err(anyhow::Error::from)
            .and_then(|output| parse_list(session.name(), &output.stdout))
        {
            Ok(host) => listed.push(host),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "listing etcd snapshots failed:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(listed)
}

// ---------------------------------------------------------------------------------------------
// Showing

/// A table per host, newest snapshot first.
pub fn render_list(list: &[HostSnapshots]) -> String {
    let mut out = String::new();
    for host in list {
        match &host.timer {
            Some(timer) => {
                let next = timer.next.as_deref().unwrap_or("none (timer not active)");
                let last = timer.last_result.as_deref().unwrap_or("not run since boot");
                let _ = writeln!(
                    out,
                    "{}: OnCalendar={}, next run {next}, last run {last}",
                    host.host, timer.on_calendar
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}: no scheduled snapshots (timer not installed)",
                    host.host
                );
            }
        }
        if host.snapshots.is_empty() {
            let _ = writeln!(out, "  no snapshots in {BACKUP_DIR}");
            continue;
        }
        let width = host
            .snapshots
            .iter()
            .map(|s| s.file.len())
            .chain([4])
            .max()
            .unwrap_or(4);
        let _ = writeln!(
            out,
            "  {:<width$}  {:<19}  {:>10}  {:>10}  {:>8}",
            "FILE", "TAKEN", "SIZE", "REVISION", "KEYS"
        );
        for s in &host.snapshots {
            // 0: the status JSON next to the file is missing.
            let unknown = |n: u64| {
                if n == 0 {
                    "?".to_string()
                } else {
                    n.to_string()
                }
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {:<19}  {:>10}  {:>10}  {:>8}",
                s.file,
                crate::clock::utc_time(s.taken_at),
                ilha_format::inspect::human_bytes(s.size),
                unknown(s.revision),
                unknown(s.total_keys)
            );
        }
        let _ = writeln!(
            out,
            "  {} snapshot(s) in {BACKUP_DIR}",
            host.snapshots.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file<'a>(files: &'a [RemoteFile], path: &str) -> &'a RemoteFile {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not rendered"))
    }

    fn text(file: &RemoteFile) -> &str {
        std::str::from_utf8(&file.content).unwrap()
    }

    #[test]
    fn units_carry_the_schedule_and_run_the_script() {
        let spec = ScheduleSpec {
            on_calendar: "*-*-* 02:30".to_string(),
            keep: 7,
        };
        let files = render(&spec);
        assert_eq!(files.len(), 3);
        let timer = text(file(&files, "/etc/systemd/system/ilha-etcd-snapshot.timer"));
        assert!(timer.contains("\nOnCalendar=*-*-* 02:30\n"), "{timer}");
        assert!(timer.contains("\nPersistent=true\n"), "{timer}");
        assert!(timer.contains("\nRandomizedDelaySec=60\n"), "{timer}");
        assert!(timer.contains("\nWantedBy=timers.target\n"), "{timer}");
        assert!(
            timer.contains("\nUnit=ilha-etcd-snapshot.service\n"),
            "{timer}"
        );
        let service = text(file(
            &files,
            "/etc/systemd/system/ilha-etcd-snapshot.service",
        ));
        assert!(service.contains("\nType=oneshot\n"), "{service}");
        assert!(
            service.contains("\nExecStart=/usr/local/sbin/ilha-etcd-snapshot\n"),
            "{service}"
        );
        // Started by the timer only: an [Install] section would start it at boot too.
        assert!(!service.contains("[Install]"), "{service}");
        let script = file(&files, SCRIPT_PATH);
        assert_eq!(script.mode, 0o755);
        let script = text(script);
        assert!(script.contains("\nkeep=7\n"), "{script}");
        assert!(script.contains("\ndir='/var/backups/ilha'\n"), "{script}");
        assert!(
            script.contains("--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt"),
            "{script}"
        );
        assert!(script.contains("snapshot save \"$part\""), "{script}");
        assert_eq!(ScheduleSpec::default().on_calendar, "hourly");
        assert_eq!(ScheduleSpec::default().keep, 24);
    }

    #[test]
    fn the_script_is_valid_bash() {
        let files = render(&ScheduleSpec::default());
        let script = String::from_utf8(file(&files, SCRIPT_PATH).content.clone()).unwrap();
        crate::cluster::tests_support::assert_bash_syntax(&script);
    }

    #[test]
    fn specs_that_cannot_be_a_unit_line_are_refused_before_any_host() {
        let keep0 = ScheduleSpec {
            keep: 0,
            ..ScheduleSpec::default()
        };
        assert!(
            keep0
                .validate()
                .unwrap_err()
                .to_string()
                .contains("keep at least 1")
        );
        let injected = ScheduleSpec {
            on_calendar: "hourly\nExecStart=/bin/evil".to_string(),
            keep: 3,
        };
        let err = injected.validate().unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
        let empty = ScheduleSpec {
            on_calendar: "  ".to_string(),
            keep: 3,
        };
        assert!(empty.validate().is_err());
        ScheduleSpec::default().validate().unwrap();
    }

    #[test]
    fn a_bad_calendar_is_refused_naming_the_value_and_the_host() {
        let spec = ScheduleSpec {
            on_calendar: "every tuesday-ish".to_string(),
            keep: 2,
        };
        let readiness = parse_readiness(
            "calendar_error=Failed to parse calendar specification 'every tuesday-ish': Invalid argument \n\
             etcd_member=yes\nilha_host=yes\n",
        );
        let problems = problems("node1", &spec, &readiness);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("node1: OnCalendar \"every tuesday-ish\" is not"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("Invalid argument"), "{}", problems[0]);

        let worker = parse_readiness("");
        let problems = super::problems("node4", &ScheduleSpec::default(), &worker);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("node4: not an etcd member"),
            "{}",
            problems[0]
        );
        let fine = parse_readiness("etcd_member=yes\nilha_host=yes\n");
        assert!(super::problems("node1", &ScheduleSpec::default(), &fine).is_empty());
    }

    /// The readiness check and the listing as bash would read them.
    #[test]
    fn remote_scripts_are_valid_bash() {
        for script in [readiness_script("it's hourly"), list_script()] {
            crate::cluster::tests_support::assert_bash_syntax(&script);
        }
    }

    // ----- the script, run here against a fake etcdctl

    /// A stand-in for etcdctl: `snapshot save P` writes P.part then renames it (as etcdctl
    /// does) with the content of $FAKE_CONTENT; `snapshot status P` fails on "corrupt".
    const FAKE_ETCDCTL: &str = r#"#!/bin/bash
set -eu
echo "$(basename "$0") $*" >> "$(dirname "$0")/calls"
if [ "$1" = version ]; then
  echo "etcdctl version: ${FAKE_VERSION:-3.4.23}"
  exit 0
fi
if [ "$2" = save ]; then
  printf '%s' "${FAKE_CONTENT:-good}" > "$3.part"
  mv "$3.part" "$3"
  echo "Snapshot saved at $3"
  exit 0
fi
# -w json snapshot status P
if [ "$(cat "$5")" = corrupt ]; then
  echo "Error: snapshot file has wrong hash" >&2
  exit 1
fi
n=$(cat "$(dirname "$0")/counter" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$(dirname "$0")/counter"
if [ "$(cat "$5")" = empty ]; then keys=0; else keys=$((100 + n)); fi
echo "{\"hash\":123,\"revision\":$((1000 + n)),\"totalKey\":$keys,\"totalSize\":4096}"
"#;

    struct Sandbox {
        _root: tempfile::TempDir,
        dir: std::path::PathBuf,
        script: std::path::PathBuf,
    }

    fn sandbox(keep: usize) -> Sandbox {
        sandbox_with(keep, &["etcdctl"])
    }

    /// The script with the stand-in as each of `tools` (`etcdctl`, `etcdutl`) in its bin
    /// directory; etcdctl saves.
    fn sandbox_with(keep: usize, tools: &[&str]) -> Sandbox {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        for tool in tools {
            let fake = root.path().join(tool);
            std::fs::write(&fake, FAKE_ETCDCTL).unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let fake = root.path().join("etcdctl");
        let dir = root.path().join("backups");
        let script = root.path().join("ilha-etcd-snapshot");
        let fake = fake.display().to_string();
        let tools = snapshot_tool_functions().replace(BIN_DIR, &root.path().display().to_string());
        let text = snapshot_script(
            keep,
            dir.to_str().unwrap(),
            |args| format!("{fake} {args}"),
            &tools,
        );
        std::fs::write(&script, text).unwrap();
        Sandbox {
            _root: root,
            dir,
            script,
        }
    }

    fn run(sandbox: &Sandbox, content: &str) -> std::process::Output {
        run_as(sandbox, content, "3.4.23")
    }

    fn run_as(sandbox: &Sandbox, content: &str, etcdctl_version: &str) -> std::process::Output {
        std::process::Command::new("bash")
            .arg(&sandbox.script)
            .env("FAKE_CONTENT", content)
            .env("FAKE_VERSION", etcdctl_version)
            .output()
            .unwrap()
    }

    fn calls(sandbox: &Sandbox) -> String {
        std::fs::read_to_string(sandbox.script.with_file_name("calls")).unwrap_or_default()
    }

    /// The timer's script reads the snapshot with etcdutl where the host has it, with etcdctl
    /// on etcd 3.4 and 3.5 without it, and on etcd 3.6 without etcdutl takes no snapshot and
    /// says why (in the journal, the service failed).
    #[test]
    fn the_script_reads_snapshots_with_the_hosts_tool() {
        let with_etcdutl = sandbox_with(3, &["etcdctl", "etcdutl"]);
        let out = run_as(&with_etcdutl, "good", "3.6.5");
        assert!(out.status.success(), "{out:?}");
        let log = calls(&with_etcdutl);
        assert!(log.contains("etcdctl snapshot save "), "{log}");
        assert!(log.contains("etcdutl -w json snapshot status "), "{log}");
        assert!(!log.contains("etcdctl -w json snapshot status"), "{log}");

        let etcd35 = sandbox(3);
        let out = run_as(&etcd35, "good", "3.5.16");
        assert!(out.status.success(), "{out:?}");
        assert!(calls(&etcd35).contains("etcdctl -w json snapshot status "));

        let etcd36 = sandbox(3);
        let out = run_as(&etcd36, "good", "3.6.5");
        assert_eq!(
            out.status.code(),
            Some(crate::cluster::snapshot::NO_SNAPSHOT_TOOL)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("etcdutl is missing") && stderr.contains("version 3.6.5"),
            "{stderr}"
        );
        let log = calls(&etcd36);
        assert!(!log.contains("snapshot"), "no snapshot taken: {log}");
        assert!(!etcd36.dir.exists(), "nothing written");
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn ours(names: &[String], extension: &str) -> Vec<String> {
        names
            .iter()
            .filter(|n| n.starts_with("etcd-2") && n.ends_with(extension))
            .cloned()
            .collect()
    }

    #[test]
    fn the_script_keeps_the_newest_and_leaves_other_files_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let sandbox = sandbox(2);
        std::fs::create_dir_all(&sandbox.dir).unwrap();
        let dir = &sandbox.dir;
        // A crashed run's leftovers, and the operator's own files.
        std::fs::write(dir.join("etcd-20000101T000000Z-old.db.part"), "x").unwrap();
        std::fs::write(dir.join("etcd-20000101T000000Z-old.db.part.part"), "x").unwrap();
        std::fs::write(dir.join("etcd-manual.db"), "mine").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();

        let mut made = Vec::new();
        for _ in 0..3 {
            let out = run(&sandbox, "good");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            let saved = stdout
                .lines()
                .find_map(|l| l.strip_prefix("saved "))
                .unwrap_or_else(|| panic!("{stdout}"));
            made.push(
                saved
                    .split(':')
                    .next()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        let names = names(dir);
        let dbs = ours(&names, ".db");
        // The two newest of three, each with its status JSON.
        assert_eq!(dbs, [made[1].clone(), made[2].clone()], "{names:?}");
        assert_eq!(ours(&names, ".json").len(), 2, "{names:?}");
        let status = std::fs::read_to_string(dir.join(made[2].replace(".db", ".json"))).unwrap();
        assert_eq!(parse_status(&status).unwrap().revision, 1003);
        assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");
        assert!(names.contains(&"etcd-manual.db".to_string()));
        assert!(names.contains(&"notes.txt".to_string()));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&dir.join(&made[2])), 0o600);
    }

    #[test]
    fn the_script_never_removes_the_snapshot_it_just_made() {
        let sandbox = sandbox(1);
        std::fs::create_dir_all(&sandbox.dir).unwrap();
        // Stamped in the future (a clock that went back): sorts first, yet the new one stays.
        let future = "etcd-29991231T000000Z-h.db";
        std::fs::write(sandbox.dir.join(future), "x").unwrap();
        let out = run(&sandbox, "good");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names = names(&sandbox.dir);
        let dbs = ours(&names, ".db");
        assert_eq!(dbs.len(), 1, "{names:?}");
        assert_ne!(dbs[0], future);
    }

    #[test]
    fn a_snapshot_etcd_cannot_read_is_deleted_and_the_run_fails() {
        let sandbox = sandbox(3);
        let out = run(&sandbox, "good");
        assert!(out.status.success());
        let before = names(&sandbox.dir);
        for bad in ["corrupt", "empty"] {
            let out = run(&sandbox, bad);
            assert!(!out.status.success(), "{bad} must fail the run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("deleted it"), "{stderr}");
            assert_eq!(names(&sandbox.dir), before, "{bad}: nothing new may stay");
        }
    }

    // ----- listing

    const LISTING: &str = "timer=installed\n\
        on_calendar=hourly\n\
        timer_active=active\n\
        next=Thu 2026-11-26 13:00:41 UTC\n\
        service_state=inactive\n\
        service_result=success\n\
        service_status=0\n\
        service_ended=Thu 2026-11-26 12:00:07 UTC\n\
        snapshot=etcd-20261126T110003Z-node1.db\t1795690803\t3250208\t{\"hash\":1,\"revision\":5800,\"totalKey\":1290,\"totalSize\":3250208}\n\
        snapshot=etcd-20261126T120003Z-node1.db\t1795694403\t3260416\t{\"hash\":2,\"revision\":5821,\"totalKey\":1291,\"totalSize\":3260416}\n\
        snapshot=etcd-20261126T100003Z-node1.db\t1795687203\t812\t\n";

    #[test]
    fn the_listing_is_read_newest_first() {
        let host = parse_list("node1", LISTING).unwrap();
        assert_eq!(
            host.timer,
            Some(TimerState {
                on_calendar: "hourly".to_string(),
                next: Some("Thu 2026-11-26 13:00:41 UTC".to_string()),
                last_result: Some("succeeded Thu 2026-11-26 12:00:07 UTC".to_string()),
            })
        );
        let files: Vec<&str> = host.snapshots.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "etcd-20261126T120003Z-node1.db",
                "etcd-20261126T110003Z-node1.db",
                "etcd-20261126T100003Z-node1.db"
            ]
        );
        assert_eq!(
            host.snapshots[0],
            SnapshotEntry {
                file: "etcd-20261126T120003Z-node1.db".to_string(),
                taken_at: 1_795_694_403,
                size: 3_260_416,
                revision: 5821,
                total_keys: 1291,
            }
        );
        // Without its JSON: listed, revision unknown.
        assert_eq!(host.snapshots[2].revision, 0);
    }

    #[test]
    fn a_failed_run_and_an_absent_timer_are_told_apart() {
        let failed = LISTING
            .replace("service_state=inactive", "service_state=failed")
            .replace("service_result=success", "service_result=exit-code")
            .replace("service_status=0", "service_status=1");
        let host = parse_list("node1", &failed).unwrap();
        let last = host.timer.unwrap().last_result.unwrap();
        assert!(
            last.starts_with("FAILED (exit-code, exit status 1)"),
            "{last}"
        );

        let never = parse_list(
            "node2",
            "timer=installed\non_calendar=daily\ntimer_active=inactive\nnext=\n\
             service_state=inactive\nservice_result=success\nservice_status=0\nservice_ended=n/a\n",
        )
        .unwrap();
        let timer = never.timer.unwrap();
        assert_eq!((timer.next, timer.last_result), (None, None));

        let absent = parse_list("node3", "timer=absent\n").unwrap();
        assert_eq!(absent.timer, None);
        assert!(absent.snapshots.is_empty());

        let err = parse_list(
            "node1",
            "timer=absent\nsnapshot=etcd-x.db\tnot-a-time\t1\t\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("node1: line 2"), "{err:#}");
        let err = parse_list("node1", "ssh banner\n").unwrap_err();
        assert!(err.to_string().starts_with("node1: unexpected"), "{err}");
    }

    #[test]
    fn render_list_shows_a_table_per_host() {
        let node1 = parse_list("node1", LISTING).unwrap();
        let node2 = parse_list("node2", "timer=absent\n").unwrap();
        let text = render_list(&[node1, node2]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node1: OnCalendar=hourly, next run Thu 2026-11-26 13:00:41 UTC, last run succeeded Thu 2026-11-26 12:00:07 UTC"
        );
        assert!(
            lines[1].contains("FILE") && lines[1].contains("REVISION"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("  etcd-20261126T120003Z-node1.db  2026-11-26 12:00:03"),
            "{text}"
        );
        assert!(
            lines[2].contains("3.1 MiB") && lines[2].contains("5821") && lines[2].contains("1291"),
            "{text}"
        );
        assert!(
            lines[4].contains("812 B") && lines[4].trim_end().ends_with('?'),
            "{text}"
        );
        assert_eq!(lines[5], "  3 snapshot(s) in /var/backups/ilha");
        assert_eq!(
            lines[6],
            "node2: no scheduled snapshots (timer not installed)"
        );
        assert_eq!(lines[7], "  no snapshots in /var/backups/ilha");
    }
}
