//! Running hooks: one external program per call, started directly from an argument
//! vector — never through a shell.
//!
//! Every hook convention (dehydrated, certbot, certbot-external-auth, `--deploy-hook`)
//! goes through [`Hook::run`]:
//!
//! - the program is checked once, up front ([`Hook::new`]): it must exist, be a file
//!   and have an executable bit, so a wrong path is a configuration error before any
//!   order is created;
//! - it inherits our environment plus the convention's variables; stdin is
//!   `/dev/null`;
//! - its stdout is captured (the first [`MAX_STDOUT`] bytes) and logged line by line;
//!   its stderr is logged line by line, and its last lines are kept for error
//!   messages. Neither ever reaches our stdout;
//! - it runs in a process group of its own; when it outlives its timeout, the whole
//!   group is killed (SIGKILL), so a hung `sleep` or `curl` started by a script goes
//!   too. The same happens when the run is abandoned (the future is dropped, e.g. on
//!   a signal). A hook that exits normally may leave background processes behind on
//!   purpose (a web server it started); they are not touched.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most of a hook's stdout that is kept (64 KiB); the rest is logged but
/// dropped. certbot once broke on huge `CERTBOT_AUTH_OUTPUT` values.
pub const MAX_STDOUT: usize = 64 * 1024;
/// The most of a hook's stderr kept for error messages (its end).
const STDERR_TAIL: usize = 2 * 1024;
/// Longer lines are logged in pieces of this size.
const MAX_LOG_LINE: usize = 4 * 1024;
/// How long to wait for a hook's output to end once the hook itself has exited
/// (a background process it started may keep the pipes open).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Why a hook could not be run to completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The program does not exist.
    #[error("{}: no such file{}", .path.display(), shell_hint(.path))]
    NotFound {
        /// The program.
        path: PathBuf,
    },
    /// The program is a directory or something else that is not a file.
    #[error("{}: not a file", .path.display())]
    NotAFile {
        /// The program.
        path: PathBuf,
    },
    /// The program has no executable bit.
    #[error("{}: not executable (chmod +x it; hooks are run directly, not through a shell)", .path.display())]
    NotExecutable {
        /// The program.
        path: PathBuf,
    },
    /// The program could not be started (bad `#!` line, permissions, …).
    #[error("cannot run {}: {source}", .path.display())]
    Spawn {
        /// The program.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The program did not exit in time and was killed with its process group.
    #[error("{label} ({}) did not finish within {} and was killed (--hook-timeout)", .path.display(), humantime::format_duration(*.after))]
    TimedOut {
        /// The program.
        path: PathBuf,
        /// What was being run.
        label: String,
        /// The timeout.
        after: Duration,
    },
    /// Waiting for the program failed.
    #[error("waiting for {}: {source}", .path.display())]
    Wait {
        /// The program.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// A hint for `--auth-hook 'python3 /x.py'`-style values written for a shell.
fn shell_hint(path: &Path) -> &'static str {
    let text = path.as_os_str().to_string_lossy();
    if text.contains(char::is_whitespace) {
        " (hooks are run directly, not through a shell: give the path of one executable, \
         e.g. a script with a #! line, without arguments)"
    } else {
        ""
    }
}

/// What a finished hook left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutput {
    /// The exit code; `None` when the hook was ended by a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Its stdout (lossy UTF-8), at most [`MAX_STDOUT`] bytes.
    pub stdout: String,
    /// Whether stdout was longer than [`MAX_STDOUT`] and was cut.
    pub stdout_truncated: bool,
    /// The end of its stderr (lossy UTF-8), for error messages.
    pub stderr_tail: String,
}

impl HookOutput {
    /// Whether the hook exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The certbot-external-auth convention: `NotImplemented` on stdout and a
    /// non-zero exit mean "this command is not implemented", which is not an error.
    pub fn not_implemented(&self) -> bool {
        !self.success() && self.stdout.trim() == "NotImplemented"
    }

    /// "exited with status 3" or "was killed by signal 9", plus the end of stderr.
    pub fn describe(&self) -> String {
        let mut text = match (self.code, self.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended without a status".to_owned(),
        };
        let tail = self.stderr_tail.trim();
        if !tail.is_empty() {
            text.push_str(": ");
            text.push_str(&tail.lines().collect::<Vec<_>>().join(" | "));
        }
        text
    }
}

/// One external program and how long one call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    program: PathBuf,
    timeout: Duration,
}

impl Hook {
    /// Checks that `program` exists, is a file and has an executable bit, and makes
    /// its path absolute. No `PATH` search: hooks are paths.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Result<Self, RunnerError> {
        let program = program.into();
        let program = std::path::absolute(&program).unwrap_or(program);
        let meta = match std::fs::metadata(&program) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunnerError::NotFound { path: program });
            }
            Err(source) => {
                return Err(RunnerError::Spawn {
                    path: program,
                    source,
                });
            }
        };
        if !meta.is_file() {
            return Err(RunnerError::NotAFile { path: program });
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(RunnerError::NotExecutable { path: program });
        }
        Ok(Self { program, timeout })
    }

    /// The program's absolute path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// How long one call may take before it is killed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs the program with `args` and our environment plus `env`, and waits for it
    /// (at most the timeout). `label` names the call in the log. A non-zero exit is
    /// not an error here: look at [`HookOutput::code`].
    pub async fn run<A: AsRef<OsStr>>(
        &self,
        args: &[A],
        env: &[(String, String)],
        label: &str,
    ) -> Result<HookOutput, RunnerError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        tracing::debug!(
            "{label}: running {} {}",
            self.program.display(),
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = command.spawn().map_err(|source| RunnerError::Spawn {
            path: self.program.clone(),
            source,
        })?;
        // Killed with its group when this function is left early (timeout, or the
        // future dropped) while the child has not been reaped.
        let mut group = GroupGuard(child.id());

        let stdout = Arc::new(Mutex::new(Captured::head(MAX_STDOUT)));
        let stderr = Arc::new(Mutex::new(Captured::tail(STDERR_TAIL)));
        let readers = [
            child
                .stdout
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, label.to_owned(), Arc::clone(&stdout)))),
            child
                .stderr
                .take()
                .map(|pipe| tokio::spawn(pump(pipe, label.to_owned(), Arc::clone(&stderr)))),
        ];

        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                group.disarm();
                status
            }
            Ok(Err(source)) => {
                group.kill();
                let _ = child.start_kill();
                return Err(RunnerError::Wait {
                    path: self.program.clone(),
                    source,
                });
            }
            Err(_elapsed) => {
                tracing::warn!(
                    "{label}: no exit after {}; killing its process group",
                    humantime::format_duration(self.timeout)
                );
                group.kill();
                let _ = child.start_kill();
                let _ = child.wait().await;
                drain(readers, label).await;
                return Err(RunnerError::TimedOut {
                    path: self.program.clone(),
                    label: label.to_owned(),
                    after: self.timeout,
                });
            }
        };
        drain(readers, label).await;

        let (stdout, stdout_truncated) = {
            let captured = lock(&stdout);
            (
                String::from_utf8_lossy(&captured.data).into_owned(),
                captured.dropped > 0,
            )
        };
        if stdout_truncated {
            tracing::warn!(
                "{label}: stdout was longer than {} KiB; only the first {} KiB are kept",
                MAX_STDOUT / 1024,
                MAX_STDOUT / 1024
            );
        }
        let stderr_tail = String::from_utf8_lossy(&lock(&stderr).data).into_owned();
        let output = HookOutput {
            code: status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            stdout,
            stdout_truncated,
            stderr_tail,
        };
        tracing::debug!("{label}: {}", output.describe());
        Ok(output)
    }
}

/// Waits for the output readers to reach the end of the pipes, but not forever: a
/// background process the hook started may hold them open.
async fn drain(readers: [Option<tokio::task::JoinHandle<()>>; 2], label: &str) {
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
            abort.abort();
            tracing::debug!(
                "{label}: a process it left behind still holds its output open; no longer reading it"
            );
        }
    }
}

/// Kills a child's process group on drop unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// SIGKILL to the whole group (the child is its leader: `process_group(0)`).
    fn kill(&mut self) {
        if let Some(pid) = self.0.take()
            && let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            && let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        {
            tracing::debug!("cannot kill process group {}: {e}", pid.as_raw_nonzero());
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock(captured: &Mutex<Captured>) -> std::sync::MutexGuard<'_, Captured> {
    captured
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Part of one output stream: its beginning (stdout) or its end (stderr).
#[derive(Debug)]
struct Captured {
    data: Vec<u8>,
    limit: usize,
    keep_tail: bool,
    dropped: usize,
}

impl Captured {
    fn head(limit: usize) -> Self {
        Self {
            data: Vec::new(),
            limit,
            keep_tail: false,
            dropped: 0,
        }
    }

    fn tail(limit: usize) -> Self {
        Self {
            keep_tail: true,
            ..Self::head(limit)
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.keep_tail {
            self.data.extend_from_slice(bytes);
            if self.data.len() > self.limit {
                let excess = self.data.len() - self.limit;
                self.data.drain(..excess);
                self.dropped += excess;
            }
        } else {
            let room = self.limit.saturating_sub(self.data.len());
            let take = room.min(bytes.len());
            self.data.extend_from_slice(&bytes[..take]);
            self.dropped += bytes.len() - take;
        }
    }
}

/// Reads one pipe to its end: everything is logged line by line (prefixed with the
/// hook's label) and kept as `sink` decides.
async fn pump(mut pipe: impl AsyncRead + Unpin, label: String, sink: Arc<Mutex<Captured>>) {
    let mut buf = vec![0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lock(&sink).push(&buf[..n]);
        for &byte in &buf[..n] {
            if byte == b'\n' {
                log_line(&label, &line);
                line.clear();
            } else {
                line.push(byte);
                if line.len() >= MAX_LOG_LINE {
                    log_line(&label, &line);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        log_line(&label, &line);
    }
}

fn log_line(label: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    tracing::info!("[{label}] {text}");
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn paths_are_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(5);
        assert!(matches!(
            Hook::new(dir.path().join("missing"), t),
            Err(RunnerError::NotFound { .. })
        ));
        assert!(matches!(
            Hook::new(dir.path(), t),
            Err(RunnerError::NotAFile { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Hook::new(&plain, t),
            Err(RunnerError::NotExecutable { .. })
        ));
        let err = Hook::new("python3 /srv/auth.py", t)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not through a shell"), "{err}");
        let ok = Hook::new(script(dir.path(), "ok", "exit 0"), t).unwrap();
        assert!(ok.program().is_absolute());
    }

    #[test]
    fn argv_is_passed_verbatim_and_env_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Hook::new(
            script(
                dir.path(),
                "echo",
                r#"printf '%s|' "$@"; printf '%s' "$EXTRA"; echo oops >&2; exit 3"#,
            ),
            Duration::from_secs(10),
        )
        .unwrap();
        let out = runtime()
            .block_on(hook.run(
                &["a b", "$(touch x)", "*", ""],
                &[("EXTRA".to_owned(), "v;w".to_owned())],
                "test",
            ))
            .unwrap();
        assert_eq!(out.stdout, "a b|$(touch x)|*||v;w");
        assert_eq!(out.code, Some(3));
        assert!(!out.success());
        assert_eq!(out.stderr_tail.trim(), "oops");
        assert_eq!(out.describe(), "exited with status 3: oops");
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn stdout_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Hook::new(
            script(dir.path(), "big", "head -c 200000 /dev/zero | tr '\\0' a"),
            Duration::from_secs(10),
        )
        .unwrap();
        let out = runtime()
            .block_on(hook.run(&[] as &[&str], &[], "big"))
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), MAX_STDOUT);
        assert!(out.stdout_truncated);
    }

    #[test]
    fn not_implemented_needs_the_word_and_a_failure() {
        let out = |code, stdout: &str| HookOutput {
            code: Some(code),
            signal: None,
            stdout: stdout.into(),
            stdout_truncated: false,
            stderr_tail: String::new(),
        };
        assert!(out(1, "NotImplemented\n").not_implemented());
        assert!(!out(0, "NotImplemented\n").not_implemented());
        assert!(!out(1, "failed").not_implemented());
    }

    #[test]
    fn a_hung_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let hook = Hook::new(
            script(
                dir.path(),
                "hang",
                &format!("sleep 300 &\necho $! > {}\nwait", pid_file.display()),
            ),
            Duration::from_millis(700),
        )
        .unwrap();
        let started = Instant::now();
        let err = runtime()
            .block_on(hook.run(&[] as &[&str], &[], "hang"))
            .unwrap_err();
        assert!(matches!(err, RunnerError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background `sleep` was in the hook's group: it is gone (or a zombie
        // about to be reaped by init).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            assert!(Instant::now() < deadline, "sleep {pid} survived: {stat}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_background_process_holding_stdout_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("bg.pid");
        let hook = Hook::new(
            script(
                dir.path(),
                "bg",
                &format!(
                    "echo started\nsleep 30 &\necho $! > {}\nexit 0",
                    pid_file.display()
                ),
            ),
            Duration::from_secs(20),
        )
        .unwrap();
        let started = Instant::now();
        let out = runtime()
            .block_on(hook.run(&[] as &[&str], &[], "bg"))
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "started\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A hook that exits normally keeps what it started; the test cleans up.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
}
