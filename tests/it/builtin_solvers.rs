//! The built-in solvers end to end, against a real Pebble: `--mode standalone`
//! (acme-bridge's own http-01 and tls-alpn-01 listeners) and `--mode webroot`
//! (token files in a document root that a small file server in this test serves).
//!
//! Pebble validates against the test's responders: challtestsrv's http-01 and
//! tls-alpn-01 listeners are off, Pebble's httpPort/tlsPort are ports the test
//! picks, and challtestsrv's DNS answers 127.0.0.1 for every name.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::certs;
use crate::consumer::BINARY;
use crate::harness::{Pebble, free_tcp_port};

/// A guard against a hung binary; not an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
}

/// `acme-bridge --config-dir CONFIG issue --server … --ca-bundle … --agree-tos EXTRA`.
fn command(pebble: &Pebble, config: &Path, extra: &[&str]) -> (tokio::process::Command, String) {
    let mut args: Vec<OsString> = vec![
        "issue".into(),
        "--server".into(),
        pebble.directory_url().into(),
        "--ca-bundle".into(),
        pebble.ca_bundle_path().into(),
        "--agree-tos".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    command_with(config, args)
}

/// `acme-bridge --config-dir CONFIG ARGS…` with stdin closed.
fn command_with(config: &Path, args: Vec<OsString>) -> (tokio::process::Command, String) {
    let mut args = args;
    args.splice(0..0, [OsString::from("--config-dir"), config.into()]);
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(&args)
        .env_remove("ACME_BRIDGE_CONFIG_DIR")
        .env_remove("ACME_BRIDGE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (command, format!("{args:?}"))
}

/// A finished run.
struct Run {
    args: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "--- acme-bridge {} exited with {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args,
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }

    fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.context()
        );
    }

    /// These modes have no protocol: stdout stays empty.
    fn assert_stdout_empty(&self) {
        assert!(
            self.stdout.is_empty(),
            "stdout must stay empty\n{}",
            self.context()
        );
    }

    /// stderr lines containing every one of `needles`.
    fn log_lines(&self, needles: &[&str]) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .collect()
    }
}

/// Runs `acme-bridge issue …` (see [`command`]) to completion.
async fn run_bridge(pebble: &Pebble, config: &Path, extra: &[&str]) -> Run {
    let (command, args) = command(pebble, config, extra);
    finish(command, args).await
}

/// Runs `acme-bridge --config-dir CONFIG renew --force NAME` to completion: the mode
/// and its addresses or document root come from what the issuance stored.
async fn renew(config: &Path, name: &str) -> Run {
    let args = ["renew", "--force", name].map(OsString::from).to_vec();
    let (command, args) = command_with(config, args);
    finish(command, args).await
}

async fn finish(mut command: tokio::process::Command, args: String) -> Run {
    let output = tokio::time::timeout(HANG_GUARD, command.output())
        .await
        .unwrap_or_else(|_| panic!("acme-bridge {args} did not exit within {HANG_GUARD:?}"))
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
    Run {
        args,
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The live certificate of `name` verifies against Pebble's root for every domain.
async fn assert_issued(pebble: &Pebble, config: &Path, name: &str, domains: &[&str], run: &Run) {
    let live = config.join("live").join(name);
    let leaf = certs::pem_certificates_in(&live.join("cert.pem"));
    let intermediates = certs::pem_certificates_in(&live.join("chain.pem"));
    assert_eq!(leaf.len(), 1, "{}", run.context());
    let roots = pebble.roots_pem().await;
    for domain in domains {
        certs::verify_chain(&leaf[0], &intermediates, roots.as_bytes(), domain).unwrap_or_else(
            |e| {
                panic!(
                    "the chain does not verify for {domain}: {e}\n{}",
                    run.context()
                )
            },
        );
    }
}

/// Whether a listener can bind `127.0.0.1:port` right now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// How many times Pebble handled a POST to the directory's `resource` URL.
async fn posts_to(pebble: &Pebble, resource: &str) -> usize {
    let directory = pebble.directory().await;
    let url = directory[resource]
        .as_str()
        .unwrap_or_else(|| panic!("directory without {resource}: {directory}"));
    pebble.requests_logged("POST", url)
}

// --- standalone -----------------------------------------------------------------------

#[tokio::test]
async fn standalone_http01_is_validated_against_our_own_listener() {
    let http_port = free_tcp_port();
    let tls_port = free_tcp_port();
    let pebble = Pebble::builder()
        .own_responders(http_port, tls_port)
        .authz_reuse_percent(0)
        .start()
        .await;
    let config = temp_dir("acme-bridge-config-");
    let address = format!("127.0.0.1:{http_port}");

    let run = run_bridge(
        &pebble,
        config.path(),
        &[
            "--mode",
            "standalone",
            "--challenge",
            "http-01",
            "--http-address",
            &address,
            "-d",
            "a.test",
            "-d",
            "b.test",
        ],
    )
    .await;

    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(
        &pebble,
        config.path(),
        "a.test",
        &["a.test", "b.test"],
        &run,
    )
    .await;
    // Pebble fetched each token from our listener, which logged it.
    for host in ["a.test", "b.test"] {
        let served = run.log_lines(&[
            "http-01: 127.0.0.1:",
            "GET /.well-known/acme-challenge/",
            &format!("(Host {host}:{http_port}) -> 200"),
        ]);
        assert!(
            !served.is_empty(),
            "no request for {host} was served\n{}",
            run.context()
        );
    }
    assert!(
        !run.log_lines(&["stopped serving http-01 on", &address])
            .is_empty(),
        "{}",
        run.context()
    );
    assert!(
        port_is_free(http_port),
        "{address} is still taken\n{}",
        run.context()
    );

    // renew serves on the same address again, unattended.
    let renewed = renew(config.path(), "a.test").await;
    renewed.assert_exit(0);
    renewed.assert_stdout_empty();
    assert_eq!(
        std::fs::read_link(config.path().join("live/a.test/cert.pem")).expect("a link"),
        Path::new("../../archive/a.test/cert2.pem"),
        "{}",
        renewed.context()
    );
    assert_issued(
        &pebble,
        config.path(),
        "a.test",
        &["a.test", "b.test"],
        &renewed,
    )
    .await;
    for host in ["a.test", "b.test"] {
        let served = renewed.log_lines(&[
            "GET /.well-known/acme-challenge/",
            &format!("(Host {host}:{http_port}) -> 200"),
        ]);
        assert!(!served.is_empty(), "{host}\n{}", renewed.context());
    }
    assert!(port_is_free(http_port), "{}", renewed.context());
}

#[tokio::test]
async fn standalone_tls_alpn01_is_validated_against_our_own_listener() {
    let http_port = free_tcp_port();
    let tls_port = free_tcp_port();
    let pebble = Pebble::builder()
        .own_responders(http_port, tls_port)
        .start()
        .await;
    let config = temp_dir("acme-bridge-config-");
    let address = format!("127.0.0.1:{tls_port}");

    let run = run_bridge(
        &pebble,
        config.path(),
        &[
            "--mode",
            "standalone",
            "--challenge",
            "tls-alpn-01",
            "--tls-address",
            &address,
            "-d",
            "tls.test",
            "-d",
            "www.tls.test",
        ],
    )
    .await;

    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(
        &pebble,
        config.path(),
        "tls.test",
        &["tls.test", "www.tls.test"],
        &run,
    )
    .await;
    for sni in ["tls.test", "www.tls.test"] {
        let served = run.log_lines(&[
            "tls-alpn-01: 127.0.0.1:",
            &format!("SNI {sni}, ALPN acme-tls/1 -> challenge certificate served"),
        ]);
        assert!(
            !served.is_empty(),
            "no handshake for {sni}\n{}",
            run.context()
        );
    }
    assert!(
        port_is_free(tls_port),
        "{address} is still taken\n{}",
        run.context()
    );
}

#[tokio::test]
async fn standalone_refuses_dns01_before_any_order() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let run = run_bridge(
        &pebble,
        config.path(),
        &[
            "--mode",
            "standalone",
            "--challenge",
            "dns-01",
            "-d",
            "a.test",
        ],
    )
    .await;
    run.assert_exit(2);
    run.assert_stdout_empty();
    assert!(
        !run.log_lines(&["--mode standalone", "not dns-01"])
            .is_empty(),
        "{}",
        run.context()
    );
    assert_eq!(
        posts_to(&pebble, "newAccount").await,
        0,
        "{}",
        run.context()
    );
    assert_eq!(posts_to(&pebble, "newOrder").await, 0, "{}", run.context());
}

#[tokio::test]
async fn a_taken_port_fails_clearly_before_any_order() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("local address").to_string();

    for (challenge, flag) in [
        ("http-01", "--http-address"),
        ("tls-alpn-01", "--tls-address"),
    ] {
        let run = run_bridge(
            &pebble,
            config.path(),
            &[
                "--mode",
                "standalone",
                "--challenge",
                challenge,
                flag,
                &address,
                "-d",
                "a.test",
            ],
        )
        .await;
        run.assert_exit(2);
        run.assert_stdout_empty();
        let explained = run.log_lines(&[
            &format!("cannot listen on {address} to serve {challenge}"),
            &format!("is another web server running? use {flag}"),
        ]);
        assert_eq!(explained.len(), 1, "{}", run.context());
    }
    assert_eq!(posts_to(&pebble, "newAccount").await, 0);
    assert_eq!(posts_to(&pebble, "newOrder").await, 0);
}

#[tokio::test]
async fn a_signal_during_validation_cleans_up_and_frees_the_port() {
    // Pebble validates on a port where connections are accepted by the kernel and
    // never answered, so the run is still waiting for the CA when the signal comes.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let stall_port = stall.local_addr().expect("local address").port();
    let tls_port = free_tcp_port();
    let pebble = Pebble::builder()
        .own_responders(stall_port, tls_port)
        .start()
        .await;
    let config = temp_dir("acme-bridge-config-");
    let port = free_tcp_port();
    let address = format!("127.0.0.1:{port}");

    let (mut command, args) = command(
        &pebble,
        config.path(),
        &[
            "--mode",
            "standalone",
            "--http-address",
            &address,
            "-d",
            "sig.test",
        ],
    );
    let mut child = command.spawn().expect("start acme-bridge");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut stderr = String::new();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("acme-bridge {args} never asked the CA\n{stderr}"))
            .expect("read stderr")
            .unwrap_or_else(|| panic!("acme-bridge {args} ended early\n{stderr}"));
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("asking the CA to validate") {
            break;
        }
    }
    assert!(
        !port_is_free(port),
        "our listener is up while the CA validates"
    );
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill(1)");
    assert!(killed.success());
    let status = tokio::time::timeout(HANG_GUARD, child.wait())
        .await
        .expect("acme-bridge exits after SIGTERM")
        .expect("wait");
    while let Ok(Some(line)) = lines.next_line().await {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(
        stderr.contains(&format!("stopped serving http-01 on {address}")),
        "{stderr}"
    );
    assert!(port_is_free(port), "{address} is still taken\n{stderr}");
    drop(stall);
}

// --- webroot --------------------------------------------------------------------------

/// One request the test's file server answered: path, status, and the file's mode.
type Served = Vec<(String, u16, Option<u32>)>;

/// A minimal HTTP/1.1 file server for a document root, standing in for the user's
/// web server. Stops when dropped.
struct FileServer {
    served: Arc<Mutex<Served>>,
    task: JoinHandle<()>,
}

impl FileServer {
    async fn start(root: &Path, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the file server's port");
        let served = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&served);
        let root = root.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let root = root.clone();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, mode, body) = match resolve(&root, &path) {
                        Some(file) => match std::fs::read(&file) {
                            Ok(body) => {
                                let mode = std::fs::metadata(&file)
                                    .map(|m| m.permissions().mode() & 0o777)
                                    .ok();
                                (200u16, mode, body)
                            }
                            Err(_) => (404, None, b"not found".to_vec()),
                        },
                        None => (404, None, b"not found".to_vec()),
                    };
                    log.lock().expect("log").push((path, status, mode));
                    let head = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        if status == 200 { "OK" } else { "Not Found" },
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { served, task }
    }

    fn served(&self) -> Served {
        self.served.lock().expect("log").clone()
    }

    /// Stops serving and waits until the port is released.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file under `root` for a request path, refusing anything that leaves it.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.strip_prefix('/')?;
    if relative
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

/// Every entry below a directory: relative path → (mode, contents for files).
type Snapshot = BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>;

/// Every entry below `root`.
fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let relative = path.strip_prefix(root).expect("below root").to_owned();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(relative, (mode, None));
                walk(root, &path, out);
            } else {
                out.insert(relative, (mode, Some(std::fs::read(&path).expect("read"))));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Served token requests: (token, status, mode) for `/.well-known/acme-challenge/…`.
fn token_requests(served: &Served) -> Vec<(String, u16, Option<u32>)> {
    served
        .iter()
        .filter_map(|(path, status, mode)| {
            path.strip_prefix("/.well-known/acme-challenge/")
                .map(|token| (token.to_owned(), *status, *mode))
        })
        .collect()
}

#[tokio::test]
async fn webroot_http01_is_validated_through_the_web_server_and_leaves_no_trace() {
    let http_port = free_tcp_port();
    let tls_port = free_tcp_port();
    let pebble = Pebble::builder()
        .own_responders(http_port, tls_port)
        .authz_reuse_percent(0)
        .start()
        .await;
    let config = temp_dir("acme-bridge-config-");

    // A fresh document root: .well-known/acme-challenge is created and removed.
    let fresh = temp_dir("acme-bridge-webroot-");
    std::fs::write(fresh.path().join("index.html"), "hello\n").expect("index.html");
    // A document root that already has the challenge directory and other files.
    let existing = temp_dir("acme-bridge-webroot-");
    let challenge_dir = existing.path().join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge_dir).expect("challenge dir");
    std::fs::set_permissions(&challenge_dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(existing.path().join(".well-known/security.txt"), "x\n").expect("write");
    std::fs::write(challenge_dir.join("keep-me"), "not ours\n").expect("write");

    for (root, name) in [(&fresh, "w1.test"), (&existing, "w2.test")] {
        let before = snapshot(root.path());
        let server = FileServer::start(root.path(), http_port).await;
        let webroot = root.path().to_str().expect("UTF-8 path");
        let www = format!("www.{name}");
        let run = run_bridge(
            &pebble,
            config.path(),
            &[
                "--mode",
                "webroot",
                "--webroot",
                webroot,
                "-d",
                name,
                "-d",
                &www,
            ],
        )
        .await;
        let served = server.served();
        server.stop().await;

        run.assert_exit(0);
        run.assert_stdout_empty();
        assert_issued(&pebble, config.path(), name, &[name, &www], &run).await;
        let tokens = token_requests(&served);
        let ok: Vec<_> = tokens
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .collect();
        assert!(
            ok.len() >= 2,
            "Pebble did not fetch both tokens: {served:?}\n{}",
            run.context()
        );
        for (token, _, mode) in &ok {
            assert_eq!(*mode, Some(0o644), "{token} was not world-readable");
            assert!(
                !root
                    .path()
                    .join(".well-known/acme-challenge")
                    .join(token)
                    .exists(),
                "{token} was left behind"
            );
        }
        assert_eq!(
            snapshot(root.path()),
            before,
            "the document root changed\n{}",
            run.context()
        );
    }

    // renew writes into the document root it was issued with, and cleans up again.
    let before = snapshot(existing.path());
    let server = FileServer::start(existing.path(), http_port).await;
    let renewed = renew(config.path(), "w2.test").await;
    let served = server.served();
    server.stop().await;
    renewed.assert_exit(0);
    assert_eq!(
        std::fs::read_link(config.path().join("live/w2.test/cert.pem")).expect("a link"),
        Path::new("../../archive/w2.test/cert2.pem"),
        "{}",
        renewed.context()
    );
    assert!(
        token_requests(&served)
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .count()
            >= 2,
        "{served:?}\n{}",
        renewed.context()
    );
    assert_eq!(snapshot(existing.path()), before, "{}", renewed.context());
}

#[tokio::test]
async fn webroot_files_are_removed_when_validation_fails() {
    // Nothing serves the document root: Pebble finds every challenge invalid.
    let http_port = free_tcp_port();
    let tls_port = free_tcp_port();
    let pebble = Pebble::builder()
        .own_responders(http_port, tls_port)
        .start()
        .await;
    let config = temp_dir("acme-bridge-config-");
    let root = temp_dir("acme-bridge-webroot-");
    std::fs::write(root.path().join("index.html"), "hello\n").expect("index.html");
    let before = snapshot(root.path());

    let run = run_bridge(
        &pebble,
        config.path(),
        &[
            "--mode",
            "webroot",
            "--webroot",
            root.path().to_str().expect("UTF-8 path"),
            "-d",
            "down.test",
        ],
    )
    .await;

    run.assert_exit(4);
    run.assert_stdout_empty();
    assert!(
        !run.log_lines(&["wrote", ".well-known/acme-challenge/"])
            .is_empty(),
        "{}",
        run.context()
    );
    assert_eq!(snapshot(root.path()), before, "{}", run.context());
    assert!(!config.path().join("live/down.test").exists());
}

#[tokio::test]
async fn webroot_refuses_other_challenge_types_before_any_order() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let root = temp_dir("acme-bridge-webroot-");
    let webroot = root.path().to_str().expect("UTF-8 path");
    for challenge in ["dns-01", "tls-alpn-01"] {
        let run = run_bridge(
            &pebble,
            config.path(),
            &[
                "--mode",
                "webroot",
                "--webroot",
                webroot,
                "--challenge",
                challenge,
                "-d",
                "a.test",
            ],
        )
        .await;
        run.assert_exit(2);
        assert!(
            !run.log_lines(&["--mode webroot serves http-01 only", challenge])
                .is_empty(),
            "{}",
            run.context()
        );
    }
    let missing = root.path().join("missing");
    let run = run_bridge(
        &pebble,
        config.path(),
        &[
            "--mode",
            "webroot",
            "--webroot",
            missing.to_str().expect("UTF-8"),
            "-d",
            "a.test",
        ],
    )
    .await;
    run.assert_exit(2);
    assert!(
        !run.log_lines(&["--webroot", "is not an existing directory"])
            .is_empty(),
        "{}",
        run.context()
    );
    assert_eq!(posts_to(&pebble, "newOrder").await, 0);
    assert_eq!(std::fs::read_dir(root.path()).expect("read_dir").count(), 0);
}
