//! One host's multiplexed connection: scripts, uploads, downloads.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use openssh::{KnownHosts, SessionBuilder, Stdio};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::error::{ConnectFailure, SshError};
use super::options::{KnownHostsPolicy, SshOptions, Target};

/// Exit code the upload script uses when the digest on arrival is wrong.
const DIGEST_MISMATCH_EXIT: i32 = 97;
const DIGEST_MISMATCH_TAG: &str = "ilha-sha256-mismatch";
/// How long an idle SSH master stays up (see `Session::connect`).
const MASTER_IDLE_LIMIT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(30).unwrap();
/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL_LINES: usize = 10;

/// What a script printed (it exited 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// What to upload: bytes in memory or a local file (streamed, never loaded whole).
#[derive(Debug, Clone, Copy)]
pub enum UploadSource<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

enum Input<'a> {
    Null,
    Bytes(&'a [u8]),
    File(std::fs::File),
}

enum Sink {
    Capture,
    File(std::fs::File),
}

/// A connection to one host (an ssh ControlMaster); closed when dropped.
#[derive(Debug)]
pub struct Session {
    target: Target,
    inner: openssh::Session,
}

impl Session {
    /// Connects (starts the ControlMaster) with the options' host key policy and timeouts.
    pub async fn connect(target: Target, options: &SshOptions) -> Result<Session, SshError> {
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(match options.known_hosts_policy {
                KnownHostsPolicy::Strict => KnownHosts::Strict,
                KnownHostsPolicy::AcceptNew => KnownHosts::Add,
            })
            .connect_timeout(options.connect_timeout)
            .server_alive_interval(options.server_alive_interval)
            // A master outlives an `ilha` that was killed outright (kill -9, a crash) by at most
            // this long: while ilha runs, its host lock keeps the master busy (`ssh::lock`).
            .control_persist(openssh::ControlPersist::IdleFor(MASTER_IDLE_LIMIT))
            .control_directory(
                options
                    .control_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir),
            );
        // The openssh crate has no `-o` passthrough: extra options go in a config file of their
        // own that then includes the operator's, so they win as `-o` would (ssh keeps the first
        // value it reads) and the operator's `Host` entries still apply. Kept until connected.
        let extra_config = if target.extra_options.is_empty() {
            None
        } else {
            Some(write_extra_config(&target, options.config_file.as_deref())?)
        };
        if let Some(file) = &extra_config {
            builder.config_file(file.path());
        } else if let Some(file) = &options.config_file {
            builder.config_file(file);
        }
        if let Some(file) = &target.identity_file {
            builder.keyfile(file);
        }
        if !target.jump_hosts.is_empty() {
            builder.jump_hosts(&target.jump_hosts);
        }
        if let Some(file) = &options.known_hosts_file {
            builder.user_known_hosts_file(file);
        }
        if let Some(user) = &target.user {
            builder.user(user.clone());
        }
        if let Some(port) = target.port {
            builder.port(port);
        }
        match builder.connect(&target.host).await {
            Ok(inner) => {
                crate::interrupt::register_master(inner.control_socket());
                Ok(Session { target, inner })
            }
            Err(openssh::Error::Connect(error)) => {
                let stderr = error.to_string();
                Err(SshError::Connect {
                    target: target.to_string(),
                    host: target.name.clone(),
                    failure: ConnectFailure::classify(&stderr),
                    detail: connect_detail(&stderr),
                })
            }
            Err(source) => Err(SshError::Ssh {
                host: target.name.clone(),
                command: "connect".to_string(),
                source,
            }),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The master's control socket, for commands run beside the `openssh` crate's (`ssh::lock`).
    pub fn control_socket(&self) -> &Path {
        self.inner.control_socket()
    }

    /// The host's inventory name.
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Runs `script` with `bash -c` under `set -euo pipefail`; a non-zero exit is an error naming
    /// the host, the script's first line, the exit code and the end of its stderr.
    pub async fn run(&self, script: &str) -> Result<Output, SshError> {
        self.exec(&first_line(script), script, Input::Null, Sink::Capture)
            .await
    }

    /// [`Session::run`] for scripts of any length: the script travels on stdin (`bash -s`), not
    /// on the command line, whose single-argument limit is 128 KiB. `label` names it in errors.
    pub async fn run_script(&self, label: &str, script: &str) -> Result<Output, SshError> {
        let full = format!("set -euo pipefail\n{script}");
        self.exec(
            label,
            "exec bash -s",
            Input::Bytes(full.as_bytes()),
            Sink::Capture,
        )
        .await
    }

    /// Puts `source` at `remote_path` with `mode`: written to `remote_path.tmp.XXXXXX`, its sha256
    /// checked on the host, then renamed, so the path never holds a partial or corrupt file.
    /// Missing parent directories are made.
    pub async fn upload(
        &self,
        source: UploadSource<'_>,
        remote_path: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        let digest = source_sha256(source)
            .await
            .map_err(|(path, e)| self.local_io(&path, e))?;
        self.upload_with_digest(source, &digest, remote_path, mode)
            .await
    }

    /// [`Session::upload`] with the source's sha256 already known (hashed once for many hosts).
    pub(crate) async fn upload_with_digest(
        &self,
        source: UploadSource<'_>,
        expected: &str,
        remote_path: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        let input = match source {
            UploadSource::Bytes(bytes) => Input::Bytes(bytes),
            UploadSource::File(path) => {
                Input::File(std::fs::File::open(path).map_err(|e| self.local_io(path, e))?)
            }
        };
        let dst = shell_quote(remote_path);
        let script = format!(
            r#"dst={dst}
mkdir -p -- "$(dirname -- "$dst")"
tmp=$(mktemp -- "$dst.tmp.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod {mode:o} -- "$tmp"
actual=$(sha256sum < "$tmp")
actual=${{actual%% *}}
if [ "$actual" != {expected} ]; then
  echo "{DIGEST_MISMATCH_TAG} $actual" >&2
  exit {DIGEST_MISMATCH_EXIT}
fi
mv -f -- "$tmp" "$dst"
trap - EXIT
"#
        );
        let label = format!("upload to {remote_path}");
        match self.exec(&label, &script, input, Sink::Capture).await {
            Err(SshError::CommandFailed {
                code: Some(DIGEST_MISMATCH_EXIT),
                stderr_tail,
                ..
            }) if stderr_tail.contains(DIGEST_MISMATCH_TAG) => Err(SshError::DigestMismatch {
                host: self.target.name.clone(),
                path: remote_path.to_string(),
                expected: expected.to_string(),
                actual: stderr_tail
                    .split_whitespace()
                    .skip_while(|word| *word != DIGEST_MISMATCH_TAG)
                    .nth(1)
                    .unwrap_or("?")
                    .to_string(),
            }),
            other => other.map(|_| ()),
        }
    }

    /// Copies `remote_path` to `local` (streamed to a temp file next to it, renamed once its sha256
    /// matches the host's).
    pub async fn download(&self, remote_path: &str, local: &Path) -> Result<(), SshError> {
        let dir = match local.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| self.local_io(&dir, e))?;
        let sink = temp
            .as_file()
            .try_clone()
            .map_err(|e| self.local_io(temp.path(), e))?;
        let quoted = shell_quote(remote_path);
        // The host's digest goes to stderr so the file needs one round trip.
        let script = format!("sha256sum < {quoted} >&2\ncat < {quoted}");
        let label = format!("download of {remote_path}");
        let output = self
            .exec(&label, &script, Input::Null, Sink::File(sink))
            .await?;
        let expected = output
            .stderr
            .lines()
            .last()
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        let actual = file_sha256(temp.path().to_path_buf())
            .await
            .map_err(|e| self.local_io(temp.path(), e))?;
        if actual != expected {
            return Err(SshError::DigestMismatch {
                host: self.target.name.clone(),
                path: local.display().to_string(),
                expected,
                actual,
            });
        }
        temp.persist(local)
            .map_err(|e| self.local_io(local, e.error))?;
        Ok(())
    }

    /// Ends the ControlMaster (dropping the session does the same, synchronously).
    pub async fn close(self) -> Result<(), SshError> {
        crate::interrupt::forget_master(self.inner.control_socket());
        let host = self.target.name;
        self.inner.close().await.map_err(|source| SshError::Ssh {
            host,
            command: "close".to_string(),
            source,
        })
    }

    async fn exec(
        &self,
        label: &str,
        script: &str,
        input: Input<'_>,
        sink: Sink,
    ) -> Result<Output, SshError> {
        let ssh_error = |source| SshError::Ssh {
            host: self.target.name.clone(),
            command: label.to_string(),
            source,
        };
        // With become, the same `bash -c` runs under `sudo -n`: sudo passes stdin, stdout and
        // the exit status through, and never prompts (a rule asking for a password fails at
        // once, see `failed`).
        let (program, args) = remote_shell(&self.target);
        let mut command = self.inner.command(program);
        command
            .args(args)
            .arg("-c")
            .arg(prelude(script))
            .stderr(Stdio::piped());
        let bytes = match input {
            Input::Null => {
                command.stdin(Stdio::null());
                None
            }
            Input::Bytes(bytes) => {
                command.stdin(Stdio::piped());
                Some(bytes)
            }
            Input::File(file) => {
                command.stdin(Stdio::from(file));
                None
            }
        };
        match sink {
            Sink::Capture => command.stdout(Stdio::piped()),
            Sink::File(file) => command.stdout(Stdio::from(file)),
        };
        let mut child = command.spawn().await.map_err(ssh_error)?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let feed = async move {
            if let (Some(mut stdin), Some(bytes)) = (stdin, bytes) {
                // A script that stops reading early shows up in its exit status, not here.
                let _ = stdin.write_all(bytes).await;
                let _ = stdin.shutdown().await;
            }
        };
        let ((), stdout, stderr) = tokio::join!(feed, read_all(stdout), read_all(stderr));
        let status = child.wait().await;
        let output = Output { stdout, stderr };
        match status {
            Ok(status) if status.success() => Ok(output),
            Ok(status) => Err(self.failed(label, exit_code(status), &output.stderr)),
            // 127 (command not found) is a script's failure like any other.
            Err(openssh::Error::Remote(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(self.failed(label, Some(127), &output.stderr))
            }
            // ssh's 255 is either its own failure or the script's `exit 255`: the master tells.
            Err(openssh::Error::RemoteProcessTerminated) => match self.inner.check().await {
                Ok(()) => Err(self.failed(label, Some(255), &output.stderr)),
                Err(error) => Err(SshError::ConnectionLost {
                    host: self.target.name.clone(),
                    command: label.to_string(),
                    detail: lost_detail(&error, &output.stderr),
                }),
            },
            Err(source) => Err(ssh_error(source)),
        }
    }

    fn failed(&self, label: &str, code: Option<i32>, stderr: &str) -> SshError {
        if self.target.uses_sudo() {
            match sudo_failure(code, stderr) {
                Some(SudoFailure::Refused(detail)) => {
                    return SshError::SudoRefused {
                        host: self.target.name.clone(),
                        user: self.target.user_name().to_string(),
                        detail,
                    };
                }
                Some(SudoFailure::Missing(detail)) => {
                    return SshError::SudoMissing {
                        host: self.target.name.clone(),
                        user: self.target.user_name().to_string(),
                        detail,
                    };
                }
                None => {}
            }
        }
        SshError::CommandFailed {
            host: self.target.name.clone(),
            command: label.to_string(),
            code,
            stderr_tail: tail(stderr, STDERR_TAIL_LINES),
        }
    }

    fn local_io(&self, path: &Path, source: std::io::Error) -> SshError {
        SshError::LocalIo {
            host: self.target.name.clone(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `sudo -n --`: never prompt (fail instead), and nothing after is one of sudo's options.
pub(crate) const SUDO_ARGS: [&str; 2] = ["-n", "--"];

/// The program and arguments that run a script on `target` (its `-c SCRIPT` follows): `bash`,
/// or `sudo -n -- bash` with become.
pub(crate) fn remote_shell(target: &Target) -> (&'static str, &'static [&'static str]) {
    if target.uses_sudo() {
        ("sudo", &["-n", "--", "bash"])
    } else {
        ("bash", &[])
    }
}

/// Why sudo itself (not the command it ran) failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SudoFailure {
    /// sudo ran but would not run the command without a password: its line, as printed.
    Refused(String),
    /// No sudo on the host: the shell's line.
    Missing(String),
}

/// Reads sudo's own refusal from a failed command's exit code and stderr. sudo exits 1 with a
/// `sudo: ...` line when it refuses; the ssh user's shell exits 127 naming `sudo` when it has
/// none. A script's own failure never matches: its stderr has no such line.
pub(crate) fn sudo_failure(code: Option<i32>, stderr: &str) -> Option<SudoFailure> {
    const REFUSALS: [&str; 5] = [
        "a password is required",
        "is not in the sudoers file",
        "may not run sudo",
        "is not allowed to execute",
        "a terminal is required",
    ];
    let lines = || stderr.lines().map(str::trim);
    match code {
        Some(1) => lines()
            .find(|line| {
                // Most of sudo's refusals start `sudo: `; "USER is not in the sudoers file" may not.
                (line.starts_with("sudo: ") || line.contains("sudoers"))
                    && REFUSALS.iter().any(|words| line.contains(words))
            })
            .map(|line| SudoFailure::Refused(line.to_string())),
        Some(127) => lines()
            .find(|line| {
                line.contains("sudo: command not found") || line.contains("sudo: not found")
            })
            .map(|line| SudoFailure::Missing(line.to_string())),
        _ => None,
    }
}

/// What `bash -c` runs on a host. `umask 077`: nothing a script makes (an archive, a snapshot,
/// a directory) is readable by others unless the script sets its mode (`chmod`, as uploads do).
fn prelude(script: &str) -> String {
    format!("set -euo pipefail\numask 077\n{script}")
}

/// The sha256 (hex) of what an upload sends; a file is hashed off the async threads.
pub(crate) async fn source_sha256(
    source: UploadSource<'_>,
) -> Result<String, (PathBuf, std::io::Error)> {
    match source {
        UploadSource::Bytes(bytes) => Ok(hex::encode(Sha256::digest(bytes))),
        UploadSource::File(path) => file_sha256(path.to_path_buf())
            .await
            .map_err(|e| (path.to_path_buf(), e)),
    }
}

/// Streams the file through sha256, 1 MiB at a time, on a blocking thread.
async fn file_sha256(path: PathBuf) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
}

async fn read_all(stream: Option<impl AsyncRead + Unpin>) -> String {
    let mut bytes = Vec::new();
    if let Some(mut stream) = stream {
        // A read error means the connection went away; the exit status says so.
        let _ = stream.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn exit_code(status: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

fn first_line(script: &str) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    if script.trim().lines().count() > 1 {
        format!("{line} …")
    } else {
        line.to_string()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The lines of a failed connect that say why, without the banner art.
fn connect_detail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('@'))
        .collect();
    lines[lines.len().saturating_sub(2)..].join(" / ")
}

fn lost_detail(master: &openssh::Error, stderr: &str) -> String {
    let master = match master {
        openssh::Error::Connect(e) | openssh::Error::Master(e) => e.to_string(),
        other => other.to_string(),
    };
    let stderr = tail(stderr, 2).replace('\n', " / ");
    if stderr.is_empty() {
        master
    } else {
        format!("{master} ({stderr})")
    }
}

/// `'it'\''s'`: one word for the remote shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn extra_config_text(extra_options: &[String], config_file: Option<&Path>) -> String {
    let mut text = String::from("# written by ilha for one connection\n");
    for option in extra_options {
        text.push_str(option);
        text.push('\n');
    }
    match config_file {
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
            text.push_str(&format!("Include \"{}\"\n", file.display()));
        }
        None => text.push_str("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n"),
    }
    text
}

/// A one-connection ssh_config: `target`'s extra options, then an `Include` of the config ssh
/// would have read (`--ssh-config`'s file, else the user's and the system's).
fn write_extra_config(
    target: &Target,
    config_file: Option<&Path>,
) -> Result<tempfile::NamedTempFile, SshError> {
    use std::io::Write;
    let text = extra_config_text(&target.extra_options, config_file);
    let io_error = |path: PathBuf| {
        let host = target.name.clone();
        move |source: std::io::Error| SshError::LocalIo { host, path, source }
    };
    let mut file = tempfile::Builder::new()
        .prefix("ilha-ssh-config")
        .tempfile()
        .map_err(io_error(std::env::temp_dir()))?;
    let path = file.path().to_path_buf();
    file.write_all(text.as_bytes()).map_err(io_error(path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_options_come_before_the_operators_config() {
        let options = vec!["ProxyCommand=ssh -W %h:%p -q bastion".to_string()];
        assert_eq!(
            extra_config_text(&options, Some(Path::new("/lab/ssh_config"))),
            "# written by ilha for one connection\nProxyCommand=ssh -W %h:%p -q bastion\nInclude \"/lab/ssh_config\"\n"
        );
        assert!(
            extra_config_text(&options, None)
                .ends_with("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n")
        );
    }

    #[test]
    fn first_line_marks_longer_scripts() {
        assert_eq!(first_line("hostname"), "hostname");
        assert_eq!(first_line("\n  apt-get update\nfoo\n"), "apt-get update …");
    }

    #[test]
    fn scripts_make_owner_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(prelude(
                "umask; touch f; mkdir d; stat -c %a f d; bash -c umask",
            ))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["0077", "600", "700", "0077"]
        );
    }

    #[test]
    fn become_wraps_every_script_in_sudo_unless_the_user_is_root() {
        let ops = Target::new("h1", "10.0.0.1").with_user("ops");
        assert_eq!(remote_shell(&ops), ("bash", &[][..]));
        let ops = ops.with_become_root(true);
        assert_eq!(remote_shell(&ops), ("sudo", &["-n", "--", "bash"][..]));
        assert_eq!(SUDO_ARGS, ["-n", "--"]);
        // root needs no sudo (and may have none): become from root runs bash as is.
        let root = Target::new("h1", "10.0.0.1")
            .with_user("root")
            .with_become_root(true);
        assert_eq!(remote_shell(&root), ("bash", &[][..]));
    }

    /// A real `sudo -n -- bash -c PRELUDE` (a stand-in sudo that checks its options and runs
    /// the rest, as sudo does for a NOPASSWD rule): stdin, stdout and the exit code pass through.
    #[test]
    fn the_wrapped_command_streams_and_keeps_the_exit_code() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sudo = dir.path().join("sudo");
        std::fs::write(
            &sudo,
            "#!/bin/sh
[ \"$1\" = -n ] && [ \"$2\" = -- ] || { echo \"bad options: $*\" >&2; exit 2; }
shift 2
export SUDO_USER=ops
exec \"$@\"
",
        )
        .unwrap();
        std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
        let target = Target::new("h1", "10.0.0.1")
            .with_user("ops")
            .with_become_root(true);
        let (program, args) = remote_shell(&target);
        let mut child = std::process::Command::new(dir.path().join(program))
            .args(args)
            .arg("-c")
            .arg(prelude("tr a-z A-Z; echo \"as $SUDO_USER\"; exit 7"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"streamed\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "STREAMED\nas ops\n");
        assert_eq!(out.status.code(), Some(7));
    }

    #[test]
    fn sudo_refusals_are_told_from_script_failures() {
        let refused = sudo_failure(Some(1), "sudo: a password is required\n");
        assert_eq!(
            refused,
            Some(SudoFailure::Refused("sudo: a password is required".into()))
        );
        assert_eq!(
            sudo_failure(Some(1), "ops is not in the sudoers file.\n"),
            Some(SudoFailure::Refused(
                "ops is not in the sudoers file.".into()
            ))
        );
        assert_eq!(
            sudo_failure(Some(127), "bash: line 1: sudo: command not found\n"),
            Some(SudoFailure::Missing(
                "bash: line 1: sudo: command not found".into()
            ))
        );
        assert_eq!(
            sudo_failure(Some(127), "sh: 1: sudo: not found\n"),
            Some(SudoFailure::Missing("sh: 1: sudo: not found".into()))
        );
        // The script's own failures stay the script's.
        assert_eq!(sudo_failure(Some(1), "grep: x: No such file\n"), None);
        assert_eq!(
            sudo_failure(Some(2), "sudo: a password is required\n"),
            None
        );
        assert_eq!(
            sudo_failure(Some(127), "bash: kubectl: command not found\n"),
            None
        );
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }
}
