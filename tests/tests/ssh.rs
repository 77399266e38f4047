//! `ilha::ssh` against the lab's real hosts (root, never skipped): fan-out, uploads, host key
//! policy, unreachable and power-cut hosts, bounded concurrency.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ilha::ssh::{
    ConnectFailure, Fleet, KnownHostsPolicy, SshError, SshOptions, Target, UploadSource,
};
use ilha_e2e::{LabSession, RestartOnDrop, lab};
use sha2::{Digest, Sha256};
use xtask::lab::Lab;

const HOSTS: usize = 3;

fn targets(lab: &Lab, hosts: &[usize]) -> Vec<Target> {
    ilha_e2e::ssh::targets(lab, hosts)
}

fn lab_options(lab: &Lab) -> SshOptions {
    ilha_e2e::ssh::lab_options(lab, Duration::from_secs(5))
}

async fn connect_all(lab: &Lab, options: &SshOptions) -> Fleet {
    let hosts: Vec<usize> = (1..=HOSTS).collect();
    Fleet::connect(targets(lab, &hosts), options)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// Waits (30 s at most) until a host that was made silent answers SSH again.
struct AnswersAgainOnDrop<'a> {
    lab: &'a LabSession,
    index: usize,
}

impl Drop for AnswersAgainOnDrop<'_> {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let probe = self
                .lab
                .ssh_command(self.index)
                .args(["-o", "ConnectTimeout=2", "true"])
                .output();
            if probe.is_ok_and(|out| out.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("h{} still silent after 30 s", self.index);
    }
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut HashWriter(&mut hasher)).unwrap();
    hex::encode(hasher.finalize())
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `size` bytes that don't compress (xorshift), so ssh can't shortcut the transfer.
fn random_file(dir: &Path, size: usize) -> PathBuf {
    let path = dir.join("payload.bin");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    fs::write(&path, &bytes).unwrap();
    path
}

fn known_hosts_lines(lab: &Lab) -> Vec<String> {
    fs::read_to_string(lab.known_hosts())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_on_every_host_and_reports_failures_per_host() {
    let lab = lab(HOSTS);
    let options = lab_options(&lab);

    let started = Instant::now();
    let fleet = connect_all(&lab, &options).await;
    let connect_time = started.elapsed();

    let report = fleet.run_all("hostname").await;
    println!("{report}");
    let hostnames: Vec<(String, String)> = report
        .into_result()
        .unwrap_or_else(|errors| panic!("{errors:?}"))
        .into_iter()
        .map(|(host, output)| (host, output.stdout.trim().to_string()))
        .collect();
    assert_eq!(
        hostnames,
        [("h1", "h1"), ("h2", "h2"), ("h3", "h3")].map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Warm connections: what every later step pays per fan-out.
    let started = Instant::now();
    let trivial = fleet.run_all("true").await;
    let trivial_time = started.elapsed();
    assert!(trivial.all_ok(), "{trivial}");
    println!(
        "FIGURE connect {HOSTS} hosts: {:.3}s; trivial command on {HOSTS} hosts: {:.3}s",
        connect_time.as_secs_f64(),
        trivial_time.as_secs_f64()
    );

    // One host fails: the others' results stay, the error names host, command, code, stderr.
    let report = fleet
        .run_all("if [ \"$(hostname)\" = h2 ]; then echo 'disk on fire' >&2; exit 3; fi\necho fine")
        .await;
    println!("{report}");
    assert_eq!(report.successes().count(), 2, "{report}");
    let (host, error) = report.failures().next().unwrap();
    assert_eq!(host, "h2");
    match error {
        SshError::CommandFailed {
            host,
            command,
            code,
            stderr_tail,
        } => {
            assert_eq!(host, "h2");
            assert!(
                command.starts_with("if [ \"$(hostname)\" = h2 ]"),
                "{command}"
            );
            assert_eq!(*code, Some(3));
            assert_eq!(stderr_tail, "disk on fire");
        }
        other => panic!("expected CommandFailed, got {other}"),
    }
    assert!(report.to_string().contains("h2    FAILED"), "{report}");

    // `set -euo pipefail` is on: a failing step stops the script.
    let h1 = fleet.session("h1").unwrap();
    let error = h1.run("false | true\necho reached").await.unwrap_err();
    assert!(
        matches!(error, SshError::CommandFailed { code: Some(1), .. }),
        "{error}"
    );
    let error = h1.run("no-such-command-here").await.unwrap_err();
    assert!(
        matches!(&error, SshError::CommandFailed { code: Some(127), stderr_tail, .. } if stderr_tail.contains("not found")),
        "{error}"
    );
    // A script's own 255 is not mistaken for a lost connection.
    let error = h1.run("exit 255").await.unwrap_err();
    assert!(
        matches!(
            error,
            SshError::CommandFailed {
                code: Some(255),
                ..
            }
        ),
        "{error}"
    );
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_50_mb_to_every_host_checked_by_digest_and_downloads() {
    let lab = lab(HOSTS);
    let fleet = connect_all(&lab, &lab_options(&lab)).await;
    let dir = tempfile::tempdir().unwrap();
    let payload = random_file(dir.path(), 50 * 1024 * 1024);
    let digest = sha256_file(&payload);
    let remote = "/var/tmp/ilha-ssh-test/deep/payload.bin";
    fleet.run_all("rm -rf /var/tmp/ilha-ssh-test").await;

    let started = Instant::now();
    let report = fleet
        .upload_all(UploadSource::File(&payload), remote, 0o640)
        .await;
    let upload_time = started.elapsed();
    println!("{report}");
    assert!(report.all_ok(), "{report}");
    println!(
        "FIGURE upload 50 MiB to {HOSTS} hosts: {:.3}s",
        upload_time.as_secs_f64()
    );

    let check = fleet
        .run_all(&format!(
            "sha256sum < {remote}; stat -c %a {remote}; ls /var/tmp/ilha-ssh-test/deep"
        ))
        .await;
    for (host, output) in check.successes() {
        let lines: Vec<&str> = output.stdout.lines().collect();
        assert_eq!(lines[0], format!("{digest}  -"), "{host}");
        assert_eq!(lines[1], "640", "{host}");
        // No temp file left behind.
        assert_eq!(lines[2..], ["payload.bin"], "{host}");
    }
    assert!(check.all_ok(), "{check}");

    // Bytes replace the file atomically; a download brings them back intact.
    let h2 = fleet.session("h2").unwrap();
    h2.upload(UploadSource::Bytes(b"small\n"), remote, 0o600)
        .await
        .unwrap();
    let back = dir.path().join("back.txt");
    h2.download(remote, &back).await.unwrap();
    assert_eq!(fs::read(&back).unwrap(), b"small\n");
    let big_back = dir.path().join("big-back.bin");
    fleet
        .session("h1")
        .unwrap()
        .download(remote, &big_back)
        .await
        .unwrap();
    assert_eq!(sha256_file(&big_back), digest);

    // An upload into a place the host can't write names host and path.
    let error = h2
        .upload(UploadSource::Bytes(b"x"), "/proc/ilha-no", 0o600)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("h2: `upload to /proc/ilha-no` exited with code"),
        "{text}"
    );
    let error = h2
        .download("/nonexistent/file", &dir.path().join("none"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("No such file or directory"),
        "{error}"
    );
    assert!(!dir.path().join("none").exists());

    fleet.run_all("rm -rf /var/tmp/ilha-ssh-test").await;
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_key_refused_when_strict_learnt_with_accept_new() {
    let lab = lab(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    fs::write(&known_hosts, "").unwrap();
    let mut options = lab_options(&lab);
    options.known_hosts_file = Some(known_hosts.clone());
    let hosts: Vec<usize> = (1..=HOSTS).collect();

    let error = Fleet::connect(targets(&lab, &hosts), &options)
        .await
        .unwrap_err();
    println!("{error}");
    assert_eq!(error.failures.len(), HOSTS, "{error}");
    for (failure, index) in error.failures.iter().zip(1..) {
        assert_eq!(failure.host(), format!("h{index}"));
        assert!(
            matches!(
                failure,
                SshError::Connect {
                    failure: ConnectFailure::HostKeyUnknown,
                    ..
                }
            ),
            "{failure}"
        );
    }
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), "");

    options.known_hosts_policy = KnownHostsPolicy::AcceptNew;
    let fleet = Fleet::connect(targets(&lab, &hosts), &options)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(fleet.run_all("true").await.all_ok());
    fleet.close().await;

    // The learnt keys are the hosts' real ones: Strict now passes with that file.
    let learnt = fs::read_to_string(&known_hosts).unwrap();
    for index in 1..=HOSTS {
        assert!(
            learnt.contains(&lab.host(index).ip),
            "{} not learnt:\n{learnt}",
            lab.host(index).ip
        );
    }
    options.known_hosts_policy = KnownHostsPolicy::Strict;
    let fleet = Fleet::connect(targets(&lab, &hosts), &options)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_key_refused_under_both_policies() {
    let lab = lab(HOSTS);
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    // h1's address with h2's keys: what an impersonator of h1 would present.
    let h1 = lab.host(1);
    let mut text = String::new();
    for line in known_hosts_lines(&lab) {
        if let Some(key) = line.strip_prefix(&format!("h2,{} ", lab.host(2).ip)) {
            text.push_str(&format!("h1,{} {key}\n", h1.ip));
        }
    }
    assert!(!text.is_empty(), "no h2 keys in the lab's known_hosts");
    fs::write(&known_hosts, &text).unwrap();
    let mut options = lab_options(&lab);
    options.known_hosts_file = Some(known_hosts.clone());

    for policy in [KnownHostsPolicy::Strict, KnownHostsPolicy::AcceptNew] {
        options.known_hosts_policy = policy;
        let error = Fleet::connect(targets(&lab, &[1]), &options)
            .await
            .unwrap_err();
        println!("{policy:?}: {error}");
        assert_eq!(error.failures.len(), 1);
        assert!(
            matches!(
                &error.failures[0],
                SshError::Connect { host, failure: ConnectFailure::HostKeyChanged, .. } if host == "h1"
            ),
            "{policy:?}: {error}"
        );
        assert!(error.to_string().contains("h1 (root@"), "{error}");
    }
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), text);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_hosts_named_while_the_others_answer() {
    let lab = lab(HOSTS);
    let mut options = lab_options(&lab);
    options.connect_timeout = Duration::from_secs(3);
    let nowhere = Target::new("h99", format!("{}.99", lab.config().net)).with_user("root");

    // No machine at .99: named, with a reason; the others still connect and answer.
    let mut all = targets(&lab, &[1, 2, 3]);
    all.push(nowhere.clone());
    let started = Instant::now();
    let error = Fleet::connect(all.clone(), &options).await.unwrap_err();
    println!("{error} ({:.1}s)", started.elapsed().as_secs_f64());
    assert_eq!(error.failures.len(), 1, "{error}");
    assert!(
        matches!(
            &error.failures[0],
            SshError::Connect { host, failure: ConnectFailure::Unreachable | ConnectFailure::TimedOut, .. } if host == "h99"
        ),
        "{error}"
    );
    assert!(error.to_string().contains("h99 (root@10."), "{error}");

    let (fleet, failures) = Fleet::connect_available(all, &options).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].host(), "h99");
    let report = fleet.run_all("hostname").await;
    assert!(report.all_ok(), "{report}");
    assert_eq!(report.hosts.len(), 3);
    fleet.close().await;

    // A powered-off host: named too.
    lab.kill(3).unwrap();
    let _restart = RestartOnDrop {
        lab: &lab,
        index: 3,
    };
    let (fleet, failures) = Fleet::connect_available(targets(&lab, &[1, 2, 3]), &options).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    println!("{}", failures[0]);
    assert!(
        matches!(
            &failures[0],
            SshError::Connect { host, failure: ConnectFailure::Unreachable | ConnectFailure::TimedOut, .. } if host == "h3"
        ),
        "{}",
        failures[0]
    );
    let names: Vec<&str> = fleet.sessions().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["h1", "h2"]);
    assert!(fleet.run_all("true").await.all_ok());
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_power_cut_mid_command_is_named_quickly() {
    let lab = lab(HOSTS);
    let fleet = connect_all(&lab, &lab_options(&lab)).await;
    let _restart = RestartOnDrop {
        lab: &lab,
        index: 2,
    };
    let killer_lab: Lab = (*lab).clone();

    let (report, ()) = tokio::join!(
        fleet.run_all("if [ \"$(hostname)\" = h2 ]; then sleep 30; else sleep 3; fi\nhostname"),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::spawn_blocking(move || killer_lab.kill(2))
                .await
                .unwrap()
                .unwrap();
        }
    );
    println!("{report}");
    let h2 = report.get("h2").unwrap();
    let error = h2.result.as_ref().unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
    let text = error.to_string();
    assert!(text.starts_with("h2: connection lost"), "{text}");
    // ServerAliveInterval 1 s x CountMax 3, not the 30 s of the command.
    assert!(h2.elapsed < Duration::from_secs(12), "{:?}", h2.elapsed);
    println!(
        "FIGURE power cut noticed after {:.1}s (killed at 1s)",
        h2.elapsed.as_secs_f64()
    );
    for name in ["h1", "h3"] {
        let outcome = report.get(name).unwrap();
        assert_eq!(
            outcome.result.as_ref().unwrap().stdout.trim(),
            name,
            "{report}"
        );
    }
    // Later commands on the lost host fail at once with the same reason.
    let session = fleet.session("h2").unwrap();
    let started = Instant::now();
    let error = session.run("true").await.unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_host_is_declared_lost_by_keepalive() {
    let lab = lab(HOSTS);
    let fleet = connect_all(&lab, &lab_options(&lab)).await;
    let _answers = AnswersAgainOnDrop {
        lab: &lab,
        index: 2,
    };
    // From 1 s to 10 s, h2 drops its SSH traffic without a reset, as when a cable is pulled: only
    // the keepalives (ServerAliveInterval 1 s, CountMax 3) can tell. The host lifts the rules
    // itself (they live in the lab's netns, which outlives a power cut).
    let report = fleet
        .run_all(
            r#"if [ "$(hostname)" = h2 ]; then
  setsid sh -c 'rules="INPUT -p tcp --dport 22 -j DROP
OUTPUT -p tcp --sport 22 -j DROP"
sleep 1; echo "$rules" | while read -r rule; do iptables -I $rule; done
sleep 9; echo "$rules" | while read -r rule; do iptables -D $rule; done' </dev/null >/dev/null 2>&1 &
  sleep 30
else
  sleep 3
fi
hostname"#,
        )
        .await;
    println!("{report}");
    let h2 = report.get("h2").unwrap();
    let error = h2.result.as_ref().unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
    assert!(
        h2.elapsed > Duration::from_secs(2) && h2.elapsed < Duration::from_secs(12),
        "{:?}",
        h2.elapsed
    );
    println!(
        "FIGURE silent host declared lost after {:.1}s (silent from 1s)",
        h2.elapsed.as_secs_f64()
    );
    assert!(report.get("h1").unwrap().result.is_ok(), "{report}");
    assert!(report.get("h3").unwrap().result.is_ok(), "{report}");
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_bounds_concurrency() {
    let lab = lab(HOSTS);
    let mut times = Vec::new();
    for max_parallel in [1, 3] {
        let mut options = lab_options(&lab);
        options.max_parallel = max_parallel;
        let fleet = connect_all(&lab, &options).await;
        let report = fleet.run_all("sleep 1").await;
        assert!(report.all_ok(), "{report}");
        println!(
            "max_parallel={max_parallel}: {:.2}s",
            report.elapsed.as_secs_f64()
        );
        times.push(report.elapsed);
        fleet.close().await;
    }
    let (one, three) = (times[0], times[1]);
    assert!(one >= Duration::from_secs(3), "max_parallel=1 took {one:?}");
    assert!(
        three < Duration::from_millis(2500),
        "max_parallel=3 took {three:?}"
    );
    assert!(
        one.as_secs_f64() > 2.0 * three.as_secs_f64(),
        "{one:?} vs {three:?}"
    );
}
