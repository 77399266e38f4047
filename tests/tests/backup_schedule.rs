//! `ilha backup --schedule` on a real one-host cluster (master + etcd + worker): a bad OnCalendar
//! is refused by the host's systemd with nothing installed; the timer and a first snapshot that
//! etcd itself reads back; retention keeps the newest 2 over more runs; a failing run is visible
//! to systemd and in the listing; `ilha reset` removes the timer but keeps the snapshots.
use std::time::Duration;

use ilha::backup::schedule::{self, BACKUP_DIR, SCRIPT_PATH, ScheduleSpec};
use ilha::cluster::membership::etcdctl;
use ilha::cluster::snapshot::parse_status;
use ilha::ssh::Fleet;
use ilha_e2e::cluster::{Member, fresh_lab, ilha, lab_bundle, text, write_config, write_inventory};
use ilha_e2e::ssh::{lab_options, targets};

/// Our snapshots on the host, oldest first (the names sort by time).
fn snapshot_files(lab: &xtask::lab::Lab) -> Vec<String> {
    let out = lab
        .ssh_ok(
            1,
            &format!(
                "cd {BACKUP_DIR} && ls -1 | grep -E '^etcd-[0-9]{{8}}T[0-9]{{6}}Z-.*\\.db$' || true"
            ),
        )
        .unwrap();
    let mut files: Vec<String> = out.lines().map(str::to_string).collect();
    files.sort();
    files
}

#[test]
fn scheduled_snapshots_are_taken_kept_listed_and_survive_reset() {
    let bundle = lab_bundle();
    let lab = fresh_lab(1);
    let work = tempfile::tempdir().unwrap();
    let layout = [Member {
        name: "h1",
        index: 1,
        groups: &["kube-master", "etcd", "kube-node"],
    }];
    let inventory = write_inventory(&lab, work.path(), &layout, None);
    let config = write_config(work.path(), "scheduled");
    let inventory = inventory.to_str().unwrap();
    let config = config.to_str().unwrap();
    let up = ilha(
        &lab,
        &[
            "up",
            bundle.bundle.to_str().unwrap(),
            "--pubkey",
            bundle.pubkey.to_str().unwrap(),
            "-i",
            inventory,
            "-c",
            config,
        ],
    );
    assert!(up.status.success(), "ilha up failed:\n{}", text(&up));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = runtime
        .block_on(Fleet::connect(
            targets(&lab, &[1]),
            &lab_options(&lab, Duration::from_secs(10)),
        ))
        .unwrap();
    let hosts = vec!["h1".to_string()];

    // A calendar systemd cannot read: refused by the host, naming the value; nothing installed.
    let bad = ScheduleSpec {
        on_calendar: "every tuesday-ish".to_string(),
        keep: 2,
    };
    let err = runtime
        .block_on(schedule::install(&fleet, &hosts, &bad))
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("h1: OnCalendar \"every tuesday-ish\" is not a systemd calendar expression"),
        "{err}"
    );
    assert!(err.contains("nothing was installed"), "{err}");
    let untouched = lab
        .ssh_ok(
            1,
            &format!(
                "ls /etc/systemd/system | grep -c ilha-etcd-snapshot || true; \
                 [ -e {SCRIPT_PATH} ] && echo script || echo no-script; \
                 [ -e {BACKUP_DIR} ] && echo dir || echo no-dir; \
                 grep -c ilha-etcd-snapshot /var/lib/ilha/files || true"
            ),
        )
        .unwrap();
    assert_eq!(
        untouched.split_whitespace().collect::<Vec<_>>(),
        ["0", "no-script", "no-dir", "0"],
        "a refused schedule changed h1"
    );

    // Installed with keep=2: a first snapshot right away, which etcd itself reads back.
    let spec = ScheduleSpec {
        on_calendar: "hourly".to_string(),
        keep: 2,
    };
    let outcome = runtime
        .block_on(schedule::install(&fleet, &hosts, &spec))
        .unwrap_or_else(|err| panic!("install: {err:#}"));
    eprintln!("{outcome}");
    assert!(
        outcome.starts_with("h1: snapshots hourly into /var/backups/ilha, the newest 2 kept"),
        "{outcome}"
    );
    assert!(outcome.contains("first snapshot etcd-"), "{outcome}");
    let first = snapshot_files(&lab);
    assert_eq!(first.len(), 1, "{first:?}");
    let status = lab
        .ssh_ok(
            1,
            &etcdctl(&format!(
                "-w json snapshot status {BACKUP_DIR}/{}",
                first[0]
            )),
        )
        .unwrap();
    let status = parse_status(&status).unwrap();
    assert!(status.total_keys > 0 && status.revision > 0, "{status:?}");
    let modes = lab
        .ssh_ok(
            1,
            &format!("stat -c %a {BACKUP_DIR} {BACKUP_DIR}/{}", first[0]),
        )
        .unwrap();
    assert_eq!(modes.split_whitespace().collect::<Vec<_>>(), ["700", "600"]);
    let listed_files = lab.ssh_ok(1, "sort -u /var/lib/ilha/files").unwrap();
    for path in [
        SCRIPT_PATH,
        "/etc/systemd/system/ilha-etcd-snapshot.service",
        "/etc/systemd/system/ilha-etcd-snapshot.timer",
    ] {
        assert!(
            listed_files.lines().any(|l| l == path),
            "{path} not in the files reset removes"
        );
    }
    let timers = lab
        .ssh_ok(1, "systemctl list-timers --all --no-pager")
        .unwrap();
    assert!(timers.contains("ilha-etcd-snapshot.timer"), "{timers}");

    // Two more runs, the cluster changing in between: the newest 2 stay.
    let mut newest = first[0].clone();
    for round in 0..2 {
        lab.ssh_ok(
            1,
            &format!(
                "/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf \
                 create configmap scheduled-{round} --from-literal=round={round}"
            ),
        )
        .unwrap();
        lab.ssh_ok(1, "systemctl start ilha-etcd-snapshot.service")
            .unwrap();
        let files = snapshot_files(&lab);
        assert!(files.last().unwrap() > &newest, "{files:?}");
        newest = files.last().unwrap().clone();
    }
    let kept = snapshot_files(&lab);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&first[0]), "the oldest must go: {kept:?}");
    assert_eq!(kept.last(), Some(&newest));
    let leftovers = lab
        .ssh_ok(
            1,
            &format!("ls {BACKUP_DIR} | grep -c -e '\\.part$' || true"),
        )
        .unwrap();
    assert_eq!(leftovers.trim(), "0");

    let listed = runtime
        .block_on(schedule::list(&fleet, &hosts))
        .unwrap_or_else(|err| panic!("list: {err:#}"));
    assert_eq!(listed.len(), 1);
    let h1 = &listed[0];
    let files: Vec<&str> = h1.snapshots.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(files, [kept[1].as_str(), kept[0].as_str()], "newest first");
    // The newer snapshot saw the configmaps: a later revision, more keys.
    assert!(
        h1.snapshots[0].revision > h1.snapshots[1].revision,
        "{:?}",
        h1.snapshots
    );
    assert!(h1.snapshots[0].total_keys > h1.snapshots[1].total_keys);
    assert!(h1.snapshots.iter().all(|s| s.size > 0));
    let timer = h1.timer.as_ref().expect("timer installed");
    assert_eq!(timer.on_calendar, "hourly");
    assert!(timer.next.is_some(), "{timer:?}");
    assert!(
        timer
            .last_result
            .as_deref()
            .is_some_and(|r| r.starts_with("succeeded")),
        "{timer:?}"
    );
    let table = schedule::render_list(&listed);
    eprintln!("{table}");
    assert!(
        table.contains(&kept[1]) && table.contains("2 snapshot(s)"),
        "{table}"
    );

    // A run that cannot reach etcd fails the service, visibly, and leaves the kept ones alone.
    let key = "/etc/kubernetes/pki/etcd/healthcheck-client.key";
    lab.ssh_ok(1, &format!("mv {key} {key}.away")).unwrap();
    let failed = lab.ssh(1, "systemctl start ilha-etcd-snapshot.service");
    lab.ssh_ok(1, &format!("mv {key}.away {key}")).unwrap();
    assert!(!failed.unwrap().status.success(), "the run must fail");
    let state = lab
        .ssh_ok(1, "systemctl is-failed ilha-etcd-snapshot.service || true")
        .unwrap();
    assert_eq!(state.trim(), "failed");
    assert_eq!(snapshot_files(&lab), kept);
    let listed = runtime.block_on(schedule::list(&fleet, &hosts)).unwrap();
    let last = listed[0].timer.as_ref().unwrap().last_result.clone();
    assert!(
        last.as_deref().is_some_and(|r| r.starts_with("FAILED")),
        "{last:?}"
    );
    runtime.block_on(fleet.close());

    // Reset takes the timer away and keeps the operator's snapshots.
    let reset = ilha(&lab, &["reset", "-i", inventory, "-c", config, "--yes"]);
    let report = text(&reset);
    assert!(reset.status.success(), "reset failed:\n{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("h1: ") && l.ends_with("matches its pre-install record")),
        "{report}"
    );
    let after = lab
        .ssh_ok(
            1,
            &format!(
                "find /etc/systemd/system -name 'ilha-etcd-snapshot*' | wc -l; \
                 [ -e {SCRIPT_PATH} ] && echo script || echo no-script; \
                 systemctl list-timers --all --no-pager | grep -c ilha-etcd-snapshot || true"
            ),
        )
        .unwrap();
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        ["0", "no-script", "0"],
        "reset left the schedule behind"
    );
    assert_eq!(snapshot_files(&lab), kept, "reset must keep {BACKUP_DIR}");
}
