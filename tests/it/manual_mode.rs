//! Manual mode end to end, against a real Pebble, with acme-bridge inside a
//! pseudo-terminal that is its controlling terminal — the way a person runs it.
//!
//! The test plays the person: it reads the instructions from the terminal, publishes
//! what they say through challtestsrv (or serves the written certificate with the
//! `openssl s_server` line they print), then presses Enter.
//!
//! The pseudo-terminal comes from rustix (`openpt`, `grantpt`, `unlockpt`, `ptsname`);
//! `setsid --ctty` (util-linux) starts the binary in a new session with that terminal
//! as its controlling one, so `/dev/tty` is the pty — no `unsafe` `pre_exec` needed.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::certs;
use crate::consumer::BINARY;
use crate::harness::Pebble;

/// A guard against a hung binary or a missing line; not an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(90);

/// The question acme-bridge asks once everything is shown.
const PROMPT: &str = "Press Enter when";

fn config_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("acme-bridge-config-")
        .tempdir()
        .expect("temporary config dir")
}

/// `--config-dir DIR issue --mode manual --server … --ca-bundle … --agree-tos` + extra.
fn manual_args(pebble: &Pebble, config: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--config-dir".into(),
        config.into(),
        "issue".into(),
        "--mode".into(),
        "manual".into(),
        "--server".into(),
        pebble.directory_url().into(),
        "--ca-bundle".into(),
        pebble.ca_bundle_path().into(),
        "--agree-tos".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Opens a pseudo-terminal: (master, slave).
fn open_pty() -> (File, File) {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("posix_openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the pty's slave side");
    (File::from(master), File::from(slave))
}

/// What a finished run left behind.
struct Finished {
    status: ExitStatus,
    /// Everything shown on the terminal (carriage returns removed).
    screen: String,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn context(&self) -> String {
        format!(
            "exit: {}\n--- terminal ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.screen, self.stdout, self.stderr
        )
    }

    fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code}\n{}",
            self.context()
        );
    }
}

/// acme-bridge running inside a pseudo-terminal, with stdout and stderr piped apart.
struct TerminalRun {
    child: tokio::process::Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    screen_reader: std::thread::JoinHandle<()>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(mut pipe: R) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out).await;
        out
    })
}

impl TerminalRun {
    /// Starts the binary with the pty as stdin and controlling terminal. `typed_ahead`
    /// is in the terminal's input queue before the program even starts.
    fn spawn(args: &[OsString], typed_ahead: &[u8]) -> Self {
        let (mut master, slave) = open_pty();
        master.write_all(typed_ahead).expect("type ahead");
        let mut command = tokio::process::Command::new("setsid");
        command
            .arg("--ctty")
            .arg("--wait")
            .arg(BINARY)
            .args(args)
            .env_remove("ACME_BRIDGE_CONFIG_DIR")
            .env_remove("ACME_BRIDGE_LOG")
            .stdin(Stdio::from(slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start setsid --ctty {BINARY}: {e}"));
        // Only the child holds the slave side now: the master reads EOF (EIO) when it exits.
        drop(command);
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&screen);
        let mut reader = master.try_clone().expect("clone the pty master");
        let screen_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave descriptor is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            master,
            screen,
            screen_reader,
            stdout,
            stderr,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen")).replace('\r', "")
    }

    /// Waits until the terminal shows `needle`; returns the screen at that point.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the last output arrive.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let screen = self.screen();
                if screen.contains(needle) {
                    return screen;
                }
                panic!("acme-bridge exited ({status}) without showing {needle:?}\n{screen}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the terminal did not show {needle:?} within {HANG_GUARD:?}\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Types on the keyboard (a carriage return is the Enter key).
    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("write to the pty");
        self.master.flush().expect("flush the pty");
    }

    async fn finish(mut self) -> Finished {
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("acme-bridge did not exit\n{}", self.screen()))
            .expect("wait for acme-bridge");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.screen_reader.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bytes = |out: Result<Vec<u8>, _>| {
            String::from_utf8_lossy(&out.unwrap_or_default()).into_owned()
        };
        let screen = self.screen();
        let stdout = bytes(self.stdout.await);
        let stderr = bytes(self.stderr.await);
        Finished {
            status,
            screen,
            stdout,
            stderr,
        }
    }
}

/// The TXT records the instructions ask for, as (name, value), in order. Only the
/// instructions (up to the question) are read.
fn txt_records(screen: &str) -> Vec<(String, String)> {
    let instructions = screen.split(PROMPT).next().unwrap_or_default();
    let mut name: Option<String> = None;
    let mut records = Vec::new();
    for line in instructions.lines() {
        if let Some(rest) = line.strip_prefix("  _acme-challenge.") {
            let first = rest.split_whitespace().next().unwrap_or_default();
            name = Some(format!("_acme-challenge.{first}"));
        } else if let Some(value) = line.trim_start().strip_prefix("TXT  ") {
            let name = name.clone().expect("a TXT value under a name");
            records.push((name, value.trim().to_owned()));
        }
    }
    records
}

/// The value on the first line that starts (after indentation) with `label`.
fn labelled<'a>(screen: &'a str, label: &str) -> &'a str {
    screen
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no line starting with {label:?}\n{screen}"))
        .trim()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The live fullchain and key verify against Pebble's root for `names`.
async fn assert_issued(pebble: &Pebble, config: &Path, cert_name: &str, names: &[&str]) {
    let live = config.join("live").join(cert_name);
    let chain = certs::pem_certificates_in(&live.join("fullchain.pem"));
    assert!(chain.len() >= 2, "leaf and intermediate in fullchain.pem");
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(certs::dns_names(&chain[0]), expected);
    let key = std::fs::read(live.join("privkey.pem")).expect("privkey.pem");
    assert!(certs::key_matches_certificate(&key, &chain[0]));
    let roots = pebble.roots_pem().await;
    certs::verify_chain(
        &chain[0],
        &chain[1..],
        roots.as_bytes(),
        names[0].trim_start_matches("*."),
    )
    .expect("the issued chain verifies against Pebble's root");
}

#[tokio::test]
async fn dns01_wildcard_and_apex_are_shown_grouped_and_issued_after_one_enter() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(
        &pebble,
        config.path(),
        &[
            "-d",
            "manual.test",
            "-d",
            "*.manual.test",
            "--challenge",
            "dns-01",
        ],
    );
    // An Enter pressed before the question (here: before the program even starts)
    // must not count as the answer; if it did, the CA would look before the records
    // exist and the run would fail.
    let mut run = TerminalRun::spawn(&args, b"\r");
    let screen = run.wait_for(PROMPT).await;

    let records = txt_records(&screen);
    assert_eq!(records.len(), 2, "two TXT values\n{screen}");
    for (name, value) in &records {
        assert_eq!(
            name, "_acme-challenge.manual.test.",
            "the full FQDN\n{screen}"
        );
        assert_eq!(value.len(), 43, "a base64url SHA-256\n{screen}");
    }
    assert_ne!(records[0].1, records[1].1, "two different values");
    assert!(
        screen.contains("add BOTH TXT values to _acme-challenge.manual.test."),
        "both values are grouped under one name\n{screen}"
    );
    assert_eq!(
        screen.matches("\n  _acme-challenge.manual.test.").count(),
        1,
        "the name is shown once, as one group\n{screen}"
    );
    assert!(
        screen.contains("(for manual.test and *.manual.test)"),
        "{screen}"
    );
    assert!(
        screen.contains("check:  dig +short TXT _acme-challenge.manual.test.\n"),
        "{screen}"
    );
    assert!(
        !screen.lines().any(|l| l.trim() == "manual.test"),
        "never the bare domain as a record name\n{screen}"
    );
    // Nothing was asked of the CA yet.
    assert_eq!(
        pebble.txt_queries_for("_acme-challenge.manual.test").await,
        0
    );

    for (name, value) in &records {
        pebble.set_txt(name, value).await;
    }
    run.type_keys(b"\r");
    let done = run.finish().await;

    done.assert_exit(0);
    assert!(
        done.stdout.is_empty(),
        "stdout stays clean\n{}",
        done.context()
    );
    assert!(
        done.screen
            .contains("Asking the CA to validate 2 challenges."),
        "{}",
        done.context()
    );
    let cleanup = done
        .screen
        .split("==> Cleanup")
        .nth(1)
        .unwrap_or_else(|| panic!("no cleanup text\n{}", done.context()));
    assert!(
        cleanup.contains("_acme-challenge.manual.test.: remove these TXT values"),
        "{}",
        done.context()
    );
    for (_, value) in &records {
        assert!(
            cleanup.contains(&format!("TXT  {value}    (")),
            "cleanup names {value}\n{}",
            done.context()
        );
    }
    assert_eq!(
        cleanup.matches("— validated)").count(),
        2,
        "{}",
        done.context()
    );
    let fullchain = config.path().join("live/manual.test/fullchain.pem");
    assert!(
        done.screen.contains(&format!(
            "{}   certificate + intermediates",
            fullchain.display()
        )),
        "finish shows where the certificate is\n{}",
        done.context()
    );
    assert_issued(
        &pebble,
        config.path(),
        "manual.test",
        &["manual.test", "*.manual.test"],
    )
    .await;
    let settings = std::fs::read_to_string(config.path().join("renewal/manual.test.json"))
        .expect("renewal settings");
    assert!(settings.contains("\"manual\""), "mode stored: {settings}");
}

#[tokio::test]
async fn http01_instructions_give_url_file_and_content() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(&pebble, config.path(), &["-d", "web.manual.test"]);
    let mut run = TerminalRun::spawn(&args, b"");
    let screen = run.wait_for(PROMPT).await;

    let url = screen
        .lines()
        .find_map(|l| l.strip_prefix("  http://web.manual.test/.well-known/acme-challenge/"))
        .unwrap_or_else(|| panic!("no URL line\n{screen}"));
    let token = url.split_whitespace().next().expect("token").to_owned();
    let content = labelled(&screen, "content:").to_owned();
    assert!(
        content.starts_with(&format!("{token}.")),
        "the key authorization is token.thumbprint\n{screen}"
    );
    assert_eq!(
        labelled(&screen, "file:").split_whitespace().next(),
        Some(format!(".well-known/acme-challenge/{token}").as_str()),
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "check:    curl http://web.manual.test/.well-known/acme-challenge/{token}\n"
        )),
        "{screen}"
    );

    pebble.add_http01(&token, &content).await;
    run.type_keys(b"\r");
    let done = run.finish().await;

    done.assert_exit(0);
    assert!(done.stdout.is_empty(), "{}", done.context());
    assert!(
        done.screen.contains(&format!(
            "remove .well-known/acme-challenge/{token} from the web root of web.manual.test    (validated)"
        )),
        "{}",
        done.context()
    );
    assert_issued(
        &pebble,
        config.path(),
        "web.manual.test",
        &["web.manual.test"],
    )
    .await;
}

/// Runs acme-bridge in a new session without a controlling terminal, stdin from
/// /dev/null: like cron or a systemd timer.
async fn without_a_terminal(args: &[OsString]) -> std::process::Output {
    let output = tokio::process::Command::new("setsid")
        .arg("--wait")
        .arg(BINARY)
        .args(args)
        .env_remove("ACME_BRIDGE_CONFIG_DIR")
        .env_remove("ACME_BRIDGE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(HANG_GUARD, output)
        .await
        .expect("acme-bridge exits")
        .expect("run setsid acme-bridge")
}

/// Reads the http-01 instructions on the terminal, serves what they say through
/// challtestsrv and presses Enter.
async fn follow_http01_instructions(pebble: &Pebble, run: &mut TerminalRun, domain: &str) {
    let screen = run.wait_for(PROMPT).await;
    let prefix = format!("  http://{domain}/.well-known/acme-challenge/");
    let token = screen
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no URL line\n{screen}"))
        .to_owned();
    let content = labelled(&screen, "content:").to_owned();
    pebble.add_http01(&token, &content).await;
    run.type_keys(b"\r");
}

#[tokio::test]
async fn a_manual_certificate_renews_at_a_terminal_and_not_from_a_timer() {
    let pebble = Pebble::builder().authz_reuse_percent(0).start().await;
    let config = config_dir();
    let domain = "again.manual.test";
    let mut run = TerminalRun::spawn(&manual_args(&pebble, config.path(), &["-d", domain]), b"");
    follow_http01_instructions(&pebble, &mut run, domain).await;
    run.finish().await.assert_exit(0);
    let live = config.path().join("live").join(domain).join("cert.pem");
    let renew_args: Vec<OsString> = vec![
        "--config-dir".into(),
        config.path().into(),
        "renew".into(),
        "--force".into(),
    ];

    // From a timer (no terminal): a clear refusal, exit 2, the certificate stays.
    let output = without_a_terminal(&renew_args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs a terminal") && stderr.contains(domain),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_link(&live).expect("a link"),
        Path::new(&format!("../../archive/{domain}/cert1.pem"))
    );

    // At a terminal: the same instructions, and a renewed certificate.
    let mut run = TerminalRun::spawn(&renew_args, b"");
    follow_http01_instructions(&pebble, &mut run, domain).await;
    let done = run.finish().await;
    done.assert_exit(0);
    assert_eq!(
        std::fs::read_link(&live).expect("a link"),
        Path::new(&format!("../../archive/{domain}/cert2.pem")),
        "{}",
        done.context()
    );
    assert_issued(&pebble, config.path(), domain, &[domain]).await;
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Kills (by PID) and reaps a child when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tls_alpn01_certificate_files_are_private_served_as_shown_and_removed() {
    // Pebble validates tls-alpn-01 on a port where the test serves the files
    // acme-bridge wrote, with the openssl command it printed.
    let port = free_port();
    let pebble = Pebble::builder()
        .config("tlsPort", serde_json::json!(port))
        .start()
        .await;
    let config = config_dir();
    let args = manual_args(
        &pebble,
        config.path(),
        &["-d", "alpn.manual.test", "--challenge", "tls-alpn-01"],
    );
    let mut run = TerminalRun::spawn(&args, b"");
    let screen = run.wait_for(PROMPT).await;

    let cert = PathBuf::from(labelled(&screen, "certificate:"));
    let key = PathBuf::from(labelled(&screen, "key:"));
    let dir = cert.parent().expect("a directory").to_owned();
    assert_eq!(key.parent(), Some(dir.as_path()));
    assert_eq!(mode_of(&dir), 0o700, "a private directory\n{screen}");
    assert_eq!(mode_of(&cert), 0o600);
    assert_eq!(mode_of(&key), 0o600);
    assert!(
        screen.contains(
            "openssl s_client -connect alpn.manual.test:443 -servername alpn.manual.test -alpn acme-tls/1"
        ),
        "{screen}"
    );
    let pem = std::fs::read(&cert).expect("certificate file");
    let der = certs::pem_certificates(&pem).remove(0);
    let fingerprint = certs::sha256(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        screen.contains(&format!("should print SHA256 Fingerprint={fingerprint}")),
        "{screen}"
    );

    // The "e.g." line, run as printed, except for the port.
    let serve = labelled(&screen, "e.g.:");
    let mut argv: Vec<String> = serve.split_whitespace().map(str::to_owned).collect();
    assert_eq!(argv[..2], ["openssl", "s_server"], "{screen}");
    let accept = argv.iter().position(|a| a == "-accept").expect("-accept") + 1;
    assert_eq!(argv[accept], "443");
    argv[accept] = format!("127.0.0.1:{port}");
    let server = KillOnDrop(
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    let listening = tokio::time::Instant::now() + HANG_GUARD;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            tokio::time::Instant::now() < listening,
            "openssl s_server did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    run.type_keys(b"\r");
    let done = run.finish().await;
    drop(server);

    done.assert_exit(0);
    assert!(done.stdout.is_empty(), "{}", done.context());
    assert!(
        done.screen
            .contains("stop serving the challenge certificate for alpn.manual.test on port 443"),
        "{}",
        done.context()
    );
    assert!(
        !dir.exists(),
        "the private directory is removed at cleanup\n{}",
        done.context()
    );
    assert!(
        done.screen
            .contains(&format!("{} were deleted", dir.display())),
        "{}",
        done.context()
    );
    assert_issued(
        &pebble,
        config.path(),
        "alpn.manual.test",
        &["alpn.manual.test"],
    )
    .await;
}

#[tokio::test]
async fn ctrl_d_aborts_with_cleanup_text_and_exit_4() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(
        &pebble,
        config.path(),
        &["-d", "abort.manual.test", "--challenge", "dns-01"],
    );
    let mut run = TerminalRun::spawn(&args, b"");
    let screen = run.wait_for(PROMPT).await;
    let records = txt_records(&screen);
    assert_eq!(records.len(), 1, "{screen}");
    assert_eq!(records[0].0, "_acme-challenge.abort.manual.test.");

    run.type_keys(&[0x04]); // Ctrl-D
    let done = run.finish().await;

    done.assert_exit(4);
    assert!(done.stdout.is_empty(), "{}", done.context());
    assert!(
        done.screen
            .contains("_acme-challenge.abort.manual.test.: remove this TXT value"),
        "{}",
        done.context()
    );
    assert!(
        done.screen.contains(&format!(
            "TXT  {}    (abort.manual.test — never sent to the CA)",
            records[0].1
        )),
        "{}",
        done.context()
    );
    assert!(
        done.screen.contains("aborted by the user"),
        "{}",
        done.context()
    );
    assert_eq!(
        pebble
            .txt_queries_for("_acme-challenge.abort.manual.test")
            .await,
        0,
        "the CA never looked"
    );
    assert!(!config.path().join("live/abort.manual.test").exists());
}

#[tokio::test]
async fn q_aborts_after_an_answer_that_is_not_understood() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(&pebble, config.path(), &["-d", "quit.manual.test"]);
    let mut run = TerminalRun::spawn(&args, b"");
    run.wait_for(PROMPT).await;

    run.type_keys(b"maybe\r");
    run.wait_for("Not understood").await;
    run.type_keys(b"q\r");
    let done = run.finish().await;

    done.assert_exit(4);
    assert!(done.screen.contains("==> Cleanup"), "{}", done.context());
    assert!(
        done.screen
            .contains("from the web root of quit.manual.test    (never sent to the CA)"),
        "{}",
        done.context()
    );
    assert!(
        done.screen.contains("aborted by the user"),
        "{}",
        done.context()
    );
}

#[tokio::test]
async fn the_deadline_ends_the_wait_with_cleanup() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(
        &pebble,
        config.path(),
        &[
            "-d",
            "late.manual.test",
            "--challenge",
            "dns-01",
            "--timeout",
            "2s",
        ],
    );
    let mut run = TerminalRun::spawn(&args, b"");
    let screen = run.wait_for(PROMPT).await;
    assert!(screen.contains("(--timeout 2s)"), "{screen}");
    let done = run.finish().await;

    done.assert_exit(4);
    assert!(done.screen.contains("Time is up"), "{}", done.context());
    assert!(
        done.screen
            .contains("_acme-challenge.late.manual.test.: remove this TXT value"),
        "{}",
        done.context()
    );
    assert_eq!(
        pebble
            .txt_queries_for("_acme-challenge.late.manual.test")
            .await,
        0
    );
}

#[tokio::test]
async fn without_a_terminal_it_exits_2_before_any_order() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let directory = pebble.directory().await;
    let args = manual_args(
        &pebble,
        config.path(),
        &["-d", "noterm.manual.test", "--challenge", "dns-01"],
    );
    let output = without_a_terminal(&args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout stays clean");
    assert!(
        stderr.contains("--mode manual needs a terminal") && stderr.contains("/dev/tty"),
        "a clear message: {stderr}"
    );
    assert!(
        !config.path().join("accounts").exists(),
        "no account was created"
    );
    for resource in ["newAccount", "newOrder"] {
        let url = directory[resource].as_str().expect("directory URL");
        assert_eq!(
            pebble.requests_logged("POST", url),
            0,
            "no {resource} request\n{}",
            pebble.pebble_log()
        );
    }
}

#[tokio::test]
async fn ctrl_c_interrupts_with_cleanup_text_and_exit_5() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = manual_args(
        &pebble,
        config.path(),
        &["-d", "intr.manual.test", "--challenge", "dns-01"],
    );
    let mut run = TerminalRun::spawn(&args, b"");
    let screen = run.wait_for(PROMPT).await;
    let records = txt_records(&screen);
    assert_eq!(records.len(), 1, "{screen}");

    run.type_keys(&[0x03]); // Ctrl-C: SIGINT from the terminal
    let done = run.finish().await;

    done.assert_exit(5);
    assert!(
        done.screen.contains(&format!(
            "TXT  {}    (intr.manual.test — never sent to the CA)",
            records[0].1
        )),
        "{}",
        done.context()
    );
    assert!(done.screen.contains("SIGINT"), "{}", done.context());
}
