//! One `ilha` command at a time on a host, whoever runs it and from whichever state directory.
//!
//! The lock is an `flock` on `/run/ilha/host.lock` held by a shell on the host for as long as its
//! standard input stays open. ilha keeps the other end of that pipe (through the host's SSH
//! master), so the lock ends with ilha however ilha ends: a clean exit, an error, Ctrl-C or
//! `kill -9` (the pipe closes, the shell reads end-of-file and exits), and with a reboot (`/run`
//! is a tmpfs). Commands that change hosts take it exclusively; read-only ones (`plan`,
//! `backup list`) take it shared, so they never run beside a change but not beside each other.
//! The channel also keeps the SSH master busy, which is what lets masters end on their own once
//! ilha is gone (see `Session::connect`'s `ControlPersist`).
//!
//! Each holder leaves a line naming itself (command, operator machine, pid, start time, its pid
//! on the host) in `/run/ilha/holders/`, so a refused command says who holds the host and how to
//! clear a lock whose holder is gone.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::error::SshError;
use super::options::Target;
use super::session::{SUDO_ARGS, shell_quote};

/// Where the lock lives on every host (a tmpfs: a reboot releases everything).
pub const LOCK_DIR: &str = "/run/ilha";

/// Shared for commands that only read hosts, exclusive for those that change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Who is asking, as other operators will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub command: String,
    pub mode: LockMode,
    /// The operator's machine (its host name) and user.
    pub operator: String,
    pub pid: u32,
    /// When it started, UTC.
    pub started: String,
}

impl Holder {
    /// This process, running `command`.
    pub fn this_process(command: &str, mode: LockMode) -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown-host".to_string());
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown-user".to_string());
        Holder {
            command: command.to_string(),
            mode,
            operator: format!("{user}@{host}"),
            pid: std::process::id(),
            started: crate::clock::utc_time(crate::clock::unix_now()),
        }
    }

    /// `` `ilha up` from ana@laptop (pid 4242), since ... ``: how every lock names its holder.
    pub fn describe(&self) -> String {
        format!(
            "`ilha {}` from {} (pid {}), since {}",
            self.command, self.operator, self.pid, self.started
        )
    }
}

static COMMAND: OnceLock<Holder> = OnceLock::new();

/// Names the command this process runs: every fleet it connects then locks its hosts in `mode`.
/// Set once, by the command-line dispatch.
pub fn set_command(command: &str, mode: LockMode) {
    let _ = COMMAND.set(Holder::this_process(command, mode));
}

/// The holder set by [`set_command`]; without one (a library user, a test), hosts are held
/// shared, so nothing that changes hosts can run beside it.
pub fn current_holder() -> Holder {
    COMMAND
        .get()
        .cloned()
        .unwrap_or_else(|| Holder::this_process("(library)", LockMode::Shared))
}

/// Line that ends the lock script's answer.
const HELD: &str = "ilha-lock: held";
const BUSY: &str = "ilha-lock: busy";
/// Answer of a shell not running as root: it could not create the lock (and no later command
/// would work either), so this is said plainly rather than as a busy lock.
const NOT_ROOT: &str = "ilha-lock: not-root";

/// Answers of the shell run as the ssh user before sudo, when become is asked: sudo is missing,
/// or it refused to run `bash` as root without a password. Said before anything else runs.
const NO_SUDO: &str = "ilha-lock: no-sudo";
const SUDO_REFUSED: &str = "ilha-lock: sudo-refused";

/// The remote command that takes the lock: [`lock_script`] under `bash -c`, through `sudo -n`
/// when `sudo` (become, ssh user not root). sudo is tried first with the very command every
/// later step uses (`bash`), so a rule that asks for a password, or does not allow `bash`, is
/// reported here, on first contact, naming sudo's own words.
fn lock_command(holder: &Holder, sudo: bool) -> String {
    let script = shell_quote(&lock_script(holder));
    if !sudo {
        return format!("bash -c {script}");
    }
    let sudo = format!("sudo {}", SUDO_ARGS.join(" "));
    let outer = format!(
        r#"set -u
who="$(id -u) $(id -un 2>/dev/null || echo '?')"
if ! command -v sudo >/dev/null 2>&1; then
  echo "{NO_SUDO} $who sudo: command not found in PATH=$PATH"
  exit 0
fi
if ! why=$({sudo} bash -c true 2>&1 </dev/null); then
  echo "{SUDO_REFUSED} $who $(printf '%s' "$why" | tr '
' ' ')"
  exit 0
fi
exec {sudo} bash -c {script}
"#
    );
    format!("bash -c {}", shell_quote(&outer))
}

/// The script run on the host. It answers one line, then (when held) waits for end-of-file.
/// The lock's file descriptor is closed for `cat`, so only this shell holds the lock: killing
/// it (as the refusal message says) releases it.
fn lock_script(holder: &Holder) -> String {
    let flag = match holder.mode {
        LockMode::Shared => "-s",
        LockMode::Exclusive => "-x",
    };
    format!(
        r#"set -u
if [ "$(id -u)" != 0 ]; then
  echo "{NOT_ROOT} $(id -u) $(id -un 2>/dev/null || echo '?')"
  exit 0
fi
umask 022
mkdir -p {LOCK_DIR}/holders
if ! command -v flock >/dev/null 2>&1; then
  echo "flock(1) is not installed on this host (package util-linux): ilha needs it to lock the host" >&2
  exit 69
fi
exec 9>>{LOCK_DIR}/host.lock
if flock -n {flag} 9; then
  mine={LOCK_DIR}/holders/$$
  trap 'rm -f "$mine"' EXIT
  printf '%s pid-on-host=%s\n' {holder} "$$" > "$mine"
  echo '{HELD}'
  cat >/dev/null 9>&-
else
  echo '{BUSY}'
  for f in {LOCK_DIR}/holders/*; do
    [ -f "$f" ] || continue
    pid=${{f##*/}}
    if kill -0 "$pid" 2>/dev/null; then cat "$f"; else rm -f "$f"; fi
  done
  exit 0
fi
"#,
        holder = shell_quote(&format!(
            "{} [{}]",
            holder.describe(),
            mode_word(holder.mode)
        )),
    )
}

/// The error a [`NO_SUDO`] or [`SUDO_REFUSED`] answer stands for (`TAG UID USER WORDS...`, the
/// user as the host knows it); `None` for any other line.
fn sudo_answer(host: &str, first: &str) -> Option<SshError> {
    for (tag, missing) in [(NO_SUDO, true), (SUDO_REFUSED, false)] {
        let Some(rest) = first.strip_prefix(tag) else {
            continue;
        };
        let mut words = rest.trim().splitn(3, ' ');
        let _uid = words.next();
        let user = words.next().unwrap_or("?").to_string();
        let detail = words.next().unwrap_or("").trim().to_string();
        let host = host.to_string();
        return Some(if missing {
            SshError::SudoMissing { host, user, detail }
        } else {
            SshError::SudoRefused { host, user, detail }
        });
    }
    None
}

fn mode_word(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "shared",
        LockMode::Exclusive => "exclusive",
    }
}

/// A held lock on one host; dropping it ends the channel and so the lock.
#[derive(Debug)]
pub struct HostLock {
    host: String,
    stdin: Option<ChildStdin>,
    child: Child,
}

impl HostLock {
    /// Takes the lock on `host` through the master at `control_socket`. A lock another command
    /// holds is [`SshError::Locked`], naming who holds it and how to clear it.
    pub async fn acquire(
        target: &Target,
        control_socket: &Path,
        holder: &Holder,
    ) -> Result<HostLock, SshError> {
        let host = target.name.as_str();
        let mut child = Command::new("ssh")
            .arg("-S")
            .arg(control_socket)
            .args(["-o", "BatchMode=yes", "-T", "-p", "9", "none", "--"])
            .arg(lock_command(holder, target.uses_sudo()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal must not end the lock before ilha
            // has finished the steps in flight and let go of the host itself.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SshError::LocalIo {
                host: host.to_string(),
                path: "ssh".into(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let first = match first {
            Ok(Ok(Some(line))) => line,
            _ => {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        err.read_to_string(&mut stderr),
                    )
                    .await;
                }
                let _ = child.kill().await;
                return Err(SshError::Locked {
                    host: host.to_string(),
                    detail: format!(
                        "could not take the host lock ({LOCK_DIR}/host.lock): {}",
                        stderr.trim()
                    ),
                });
            }
        };
        if let Some(who) = first.strip_prefix(NOT_ROOT) {
            let _ = child.kill().await;
            let mut words = who.split_whitespace();
            return Err(SshError::NotRoot {
                host: host.to_string(),
                uid: words.next().unwrap_or("?").to_string(),
                user: words.next().unwrap_or("?").to_string(),
            });
        }
        if let Some(error) = sudo_answer(host, &first) {
            let _ = child.kill().await;
            return Err(error);
        }
        if first == HELD {
            let stdin = child.stdin.take();
            return Ok(HostLock {
                host: host.to_string(),
                stdin,
                child,
            });
        }
        let mut holders = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
        {
            holders.push(line);
        }
        let _ = child.kill().await;
        Err(SshError::Locked {
            host: host.to_string(),
            detail: busy_detail(&holders),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Ends the lock and waits (briefly) for the host's shell to go.
    pub async fn release(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What a refused command is told: who holds the host, and how to clear a lock whose holder
/// is gone.
fn busy_detail(holders: &[String]) -> String {
    if holders.is_empty() {
        return format!(
            "another command holds this host ({LOCK_DIR}/host.lock) but left no name; wait for \
             it, or find it on the host with `fuser -v {LOCK_DIR}/host.lock`"
        );
    }
    let mut lines = Vec::new();
    for line in holders {
        let (who, pid) = match line.rsplit_once(" pid-on-host=") {
            Some((who, pid)) => (who, pid.trim()),
            None => (line.as_str(), "?"),
        };
        lines.push(format!(
            "in use by {who}; wait for it to finish. If that run is gone (its machine crashed, \
             or its connection hangs), end its lock on the host: `kill {pid}`"
        ));
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(mode: LockMode) -> Holder {
        Holder {
            command: "up".into(),
            mode,
            operator: "ana@laptop".into(),
            pid: 4242,
            started: "2026-12-06 22:00:00 UTC".into(),
        }
    }

    #[test]
    fn the_script_is_valid_bash_and_quotes_the_holder() {
        let mut h = holder(LockMode::Exclusive);
        h.operator = "a'b$(touch /tmp/x)@c".into();
        let script = lock_script(&h);
        crate::cluster::tests_support::assert_bash_syntax(&script);
        assert!(script.contains("flock -n -x 9"), "{script}");
        assert!(
            lock_script(&holder(LockMode::Shared)).contains("flock -n -s 9"),
            "shared"
        );
        // The operator's text reaches the host only inside single quotes.
        assert!(
            script.contains(r#"'`ilha up` from a'\''b$(touch /tmp/x)@c"#),
            "{script}"
        );
    }

    #[test]
    fn a_refusal_names_the_holder_and_how_to_clear_it() {
        let detail = busy_detail(&[
            "`ilha up` from ana@laptop (pid 4242), since 2026-12-06 22:00:00 UTC [exclusive] pid-on-host=777".into(),
        ]);
        assert!(
            detail.contains("in use by `ilha up` from ana@laptop (pid 4242)"),
            "{detail}"
        );
        assert!(detail.contains("`kill 777`"), "{detail}");
        assert!(busy_detail(&[]).contains("fuser -v /run/ilha/host.lock"));
    }

    /// The command as the ssh user's shell runs it, with stand-ins for sudo: missing, asking
    /// for a password, and allowing (the lock then taken as the user sudo runs it as).
    #[test]
    fn with_become_sudo_is_tried_first_and_its_refusal_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let h = holder(LockMode::Exclusive);
        assert_eq!(
            lock_command(&h, false),
            format!("bash -c {}", shell_quote(&lock_script(&h)))
        );
        let scratch = tempfile::tempdir().unwrap();
        let command = lock_command(&h, true).replace(LOCK_DIR, scratch.path().to_str().unwrap());
        crate::cluster::tests_support::assert_bash_syntax(&command);
        let bin = tempfile::tempdir().unwrap();
        for tool in ["bash", "id", "tr"] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.exists())
                .unwrap_or_else(|| panic!("{tool} not found"));
            std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
        }
        let first_line = |path: &str| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .env("PATH", path)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        };
        let answer = first_line(bin.path().to_str().unwrap());
        assert!(answer.starts_with(NO_SUDO), "{answer}");
        match sudo_answer("h2", &answer) {
            Some(SshError::SudoMissing { host, detail, .. }) => {
                assert_eq!(host, "h2");
                assert!(detail.starts_with("sudo: command not found"), "{detail}");
            }
            other => panic!("{other:?}"),
        }

        let sudo = bin.path().join("sudo");
        std::fs::write(
            &sudo,
            "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
        let answer = first_line(bin.path().to_str().unwrap());
        match sudo_answer("h2", &answer) {
            Some(error @ SshError::SudoRefused { .. }) => {
                let user = std::process::Command::new("id")
                    .arg("-un")
                    .output()
                    .unwrap();
                let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
                assert_eq!(
                    error.to_string(),
                    format!(
                        "h2: `sudo -n` as `{user}` was refused (sudo: a password is required): ilha never types a password; give `{user}` a NOPASSWD rule for root, for example `{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{user} (then `sudo -n true` as {user} succeeds without a prompt), or connect as root with ansible_user=root"
                    )
                );
            }
            other => panic!("{answer}: {other:?}"),
        }

        // A NOPASSWD rule: sudo runs what it is given (checking it got `-n --` first).
        std::fs::write(
            &sudo,
            "#!/bin/sh\n[ \"$1 $2\" = '-n --' ] || exit 2\nshift 2\nexec \"$@\"\n",
        )
        .unwrap();
        let answer = first_line(&format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.path().display()
        ));
        assert!(
            answer == HELD || answer.starts_with(NOT_ROOT),
            "the lock script ran under sudo: {answer}"
        );
        assert_eq!(sudo_answer("h2", HELD).map(|e| e.to_string()), None);
    }

    /// The script itself, run against a scratch lock directory with the real `flock`: a second
    /// exclusive holder is refused and told who holds it; the first one's end frees the lock.
    #[test]
    fn the_lock_script_refuses_a_second_holder_and_frees_on_end_of_file() {
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().unwrap();
        let run = |mode| {
            let script = lock_script(&holder(mode)).replace(LOCK_DIR, dir.path().to_str().unwrap());
            std::process::Command::new("bash")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let first_line = |child: &mut std::process::Child| {
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            line.trim().to_string()
        };
        let mut first = run(LockMode::Exclusive);
        assert_eq!(first_line(&mut first), HELD);
        let second = run(LockMode::Shared).wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&second.stdout);
        assert!(text.starts_with(BUSY), "{text}");
        assert!(
            text.contains("`ilha up` from ana@laptop (pid 4242)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid-on-host={}", first.id())),
            "{text}"
        );
        // End of file on the holder's stdin: the lock and its holder file are gone.
        first.stdin.take().unwrap().flush().unwrap();
        first.wait().unwrap();
        let mut third = run(LockMode::Shared);
        assert_eq!(first_line(&mut third), HELD);
        let mut fourth = run(LockMode::Shared);
        assert_eq!(first_line(&mut fourth), HELD, "shared holders coexist");
        drop(third.stdin.take());
        drop(fourth.stdin.take());
        third.wait().unwrap();
        fourth.wait().unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("holders"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "holder files left: {left:?}");
    }
}
