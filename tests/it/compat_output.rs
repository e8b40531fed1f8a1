//! `--protocol certbot-external-auth` end to end, against a real Pebble: a consumer
//! written for the certbot plugin — it reads `perform_challenge` lines, publishes
//! through challtestsrv and answers each with a bare newline — gets a certificate,
//! and sees exactly the plugin's messages, with its bugs fixed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tempfile::TempDir;

use crate::certs;
use crate::consumer::{BINARY, base_issue_args};
use crate::harness::Pebble;

/// A consumer as users wrote them for certbot-external-auth: one line out per
/// `perform_challenge` line in. It records every line it reads in TRANSCRIPT.
/// Behaviours: `solve` publishes and answers every challenge; `close-after-first`
/// answers the first and then closes its stdout (acme-bridge's stdin).
const CONSUMER: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request

api, transcript, behaviour = sys.argv[1], sys.argv[2], sys.argv[3]

def call(path, body):
    request = urllib.request.Request(
        api + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()

closed = False
with open(transcript, "w") as out:
    for line in sys.stdin:
        out.write(line)
        out.flush()
        msg = json.loads(line)
        if msg["cmd"] == "perform_challenge":
            if closed:
                continue
            if msg["type"] == "dns-01":
                call("/set-txt", {"host": msg["txt_domain"] + ".", "value": msg["validation"]})
            elif msg["type"] == "http-01":
                call("/add-http01", {"token": msg["token"], "content": msg["validation"]})
            sys.stdout.write("\n")
            sys.stdout.flush()
            if behaviour == "close-after-first":
                os.close(1)
                closed = True
        elif msg["cmd"] == "cleanup":
            if msg["type"] == "dns-01":
                call("/clear-txt", {"host": "_acme-challenge." + msg["domain"] + "."})
            elif msg["type"] == "http-01":
                call("/del-http01", {"token": msg["token"]})
"#;

/// The fields of each message, in the plugin's order.
const PERFORM_DNS: &[&str] = &[
    "cmd",
    "type",
    "domain",
    "token",
    "validation",
    "txt_domain",
    "key_auth",
];
const PERFORM_HTTP: &[&str] = &[
    "cmd",
    "type",
    "domain",
    "token",
    "validation",
    "uri",
    "command",
    "key_auth",
];
const CLEANUP: &[&str] = &[
    "cmd",
    "type",
    "status",
    "domain",
    "token",
    "validation",
    "key_auth",
    "validated",
    "error",
];
const DEPLOY_CERT: &[&str] = &[
    "cmd",
    "domain",
    "cert_path",
    "key_path",
    "chain_path",
    "fullchain_path",
    "timestamp",
    "cert_timestamp",
];
const REPORT: &[&str] = &["cmd", "messages"];
const REPORT_ENTRY: &[&str] = &["priority", "on_crash", "lines"];

/// A finished run: every line the consumer read, acme-bridge's exit status, stderr.
struct Run {
    lines: Vec<String>,
    messages: Vec<Value>,
    status: ExitStatus,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "--- exit: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status,
            self.lines.join("\n"),
            self.stderr
        )
    }

    fn with_cmd(&self, cmd: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["cmd"] == cmd).collect()
    }

    fn cmds(&self) -> Vec<&str> {
        self.messages
            .iter()
            .map(|m| m["cmd"].as_str().unwrap_or("?"))
            .collect()
    }

    fn assert_keys(&self, message: &Value, expected: &[&str]) {
        let keys: Vec<&str> = message
            .as_object()
            .unwrap_or_else(|| panic!("{message} is not an object\n{}", self.context()))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected, "{message}\n{}", self.context());
    }
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
}

fn wait_with_deadline(child: &mut Child, what: &str, deadline: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `acme-bridge issue --protocol certbot-external-auth --agree-tos EXTRA` with
/// the consumer script on the other end of its stdin and stdout.
async fn run(pebble: &Pebble, config: &Path, behaviour: &str, extra: &[&str]) -> Run {
    let mut args: Vec<OsString> = base_issue_args(pebble, config);
    args.extend(
        ["--protocol", "certbot-external-auth", "--agree-tos"]
            .into_iter()
            .chain(extra.iter().copied())
            .map(OsString::from),
    );
    run_with(pebble, args, behaviour).await
}

/// Runs acme-bridge with `args` and the consumer script on the other end of its
/// stdin and stdout.
async fn run_with(pebble: &Pebble, args: Vec<OsString>, behaviour: &str) -> Run {
    let work = temp_dir("acme-bridge-compat-");
    let script = work.path().join("consumer.py");
    std::fs::write(&script, CONSUMER).expect("write the consumer");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let transcript = work.path().join("transcript.jsonl");
    let stderr_path = work.path().join("stderr.log");

    let mut bridge = Command::new(BINARY)
        .args(&args)
        .env_remove("ACME_BRIDGE_CONFIG_DIR")
        .env_remove("ACME_BRIDGE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
    let to_bridge = bridge.stdin.take().expect("piped stdin");
    let from_bridge = bridge.stdout.take().expect("piped stdout");
    let mut consumer = Command::new(&script)
        .args([
            OsString::from(pebble.challtestsrv_url()),
            transcript.clone().into_os_string(),
            OsString::from(behaviour),
        ])
        .stdin(Stdio::from(from_bridge))
        .stdout(Stdio::from(to_bridge))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));

    let (status, consumer_status) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = wait_with_deadline(&mut bridge, "acme-bridge", deadline);
        let consumer_status = wait_with_deadline(&mut consumer, "the consumer", deadline);
        (status, consumer_status)
    })
    .await
    .expect("waiting thread");

    let text = std::fs::read_to_string(&transcript).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let messages = lines
        .iter()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON: {e}\n{stderr}"))
        })
        .collect();
    let run = Run {
        lines,
        messages,
        status,
        stderr,
    };
    assert!(
        consumer_status.success(),
        "the consumer failed: {consumer_status}\n{}",
        run.context()
    );
    run
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn dns01_newline_consumer_gets_a_multi_name_certificate() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let before = unix_now();
    let run = run(
        &pebble,
        config.path(),
        "solve",
        &[
            "-d",
            "compat.test",
            "-d",
            "*.compat.test",
            "-d",
            "www.compat.test",
            "--challenge",
            "dns-01",
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", run.context());

    // Every stdout line is one of the plugin's messages; nothing of protocol v1.
    assert!(
        run.messages.iter().all(|m| m.get("cmd").is_some()),
        "{}",
        run.context()
    );
    assert_eq!(
        run.cmds(),
        [
            "perform_challenge",
            "perform_challenge",
            "perform_challenge",
            "cleanup",
            "cleanup",
            "cleanup",
            "deploy_cert",
            "report"
        ],
        "{}",
        run.context()
    );

    let performs = run.with_cmd("perform_challenge");
    let mut domains = Vec::new();
    for p in &performs {
        run.assert_keys(p, PERFORM_DNS);
        assert_eq!(p["type"], "dns-01");
        let domain = p["domain"].as_str().expect("domain");
        domains.push(domain.to_owned());
        assert_eq!(
            p["txt_domain"].as_str().unwrap(),
            format!("_acme-challenge.{domain}"),
            "{}",
            run.context()
        );
        let token = p["token"].as_str().unwrap();
        let key_auth = p["key_auth"].as_str().unwrap();
        assert!(key_auth.starts_with(&format!("{token}.")), "{p}");
        assert_eq!(
            p["validation"].as_str().unwrap(),
            URL_SAFE_NO_PAD.encode(certs::sha256(key_auth.as_bytes())),
            "{p}"
        );
    }
    // The wildcard is announced by its base name, as certbot passed it to the plugin.
    domains.sort();
    assert_eq!(domains, ["compat.test", "compat.test", "www.compat.test"]);

    let cleanups = run.with_cmd("cleanup");
    let performed: BTreeSet<&str> = performs
        .iter()
        .map(|p| p["token"].as_str().unwrap())
        .collect();
    let cleaned: BTreeSet<&str> = cleanups
        .iter()
        .map(|c| c["token"].as_str().unwrap())
        .collect();
    assert_eq!(performed, cleaned, "{}", run.context());
    for c in &cleanups {
        run.assert_keys(c, CLEANUP);
        assert_eq!(c["status"], "valid", "{}", run.context());
        assert_eq!(c["validated"], true);
        assert_eq!(c["error"], Value::Null);
        let p = performs
            .iter()
            .find(|p| p["token"] == c["token"])
            .expect("its perform_challenge");
        for field in ["type", "domain", "validation", "key_auth"] {
            assert_eq!(c[field], p[field], "{field}");
        }
    }

    // deploy_cert once for the certificate (the plugin sent one per name), with
    // `timestamp` where its README says, and no `port`.
    let deploys = run.with_cmd("deploy_cert");
    assert_eq!(deploys.len(), 1, "{}", run.context());
    let deploy = deploys[0];
    run.assert_keys(deploy, DEPLOY_CERT);
    assert!(deploy.get("port").is_none());
    assert_eq!(deploy["domain"], "compat.test");
    let live = config.path().join("live/compat.test");
    for (field, file) in [
        ("cert_path", "cert.pem"),
        ("key_path", "privkey.pem"),
        ("chain_path", "chain.pem"),
        ("fullchain_path", "fullchain.pem"),
    ] {
        let path = PathBuf::from(deploy[field].as_str().expect(field));
        assert_eq!(path, live.join(file), "{field}");
        assert!(path.is_file(), "{} exists", path.display());
    }
    let timestamp = deploy["timestamp"].as_i64().expect("integer timestamp");
    let cert_timestamp = deploy["cert_timestamp"]
        .as_i64()
        .expect("integer cert_timestamp");
    let after = unix_now();
    assert!(
        before <= timestamp && timestamp <= cert_timestamp && cert_timestamp <= after,
        "{before} <= {timestamp} <= {cert_timestamp} <= {after}"
    );

    // The certificate is real: every name, verified against Pebble's root.
    let chain = certs::pem_certificates_in(&live.join("fullchain.pem"));
    let mut names = certs::dns_names(&chain[0]);
    names.sort();
    assert_eq!(names, ["*.compat.test", "compat.test", "www.compat.test"]);
    certs::verify_chain(
        &chain[0],
        &chain[1..],
        pebble.roots_pem().await.as_bytes(),
        "www.compat.test",
    )
    .expect("the chain verifies");

    let report = run.messages.last().expect("a report");
    run.assert_keys(report, REPORT);
    let entries = report["messages"].as_array().expect("messages");
    assert_eq!(entries.len(), 1, "{report}");
    run.assert_keys(&entries[0], REPORT_ENTRY);
    assert_eq!(entries[0]["priority"], 1);
    assert_eq!(entries[0]["on_crash"], false);
    let lines: Vec<&str> = entries[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines[0].contains("compat.test, *.compat.test, www.compat.test"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&live.join("fullchain.pem").display().to_string())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn http01_newline_consumer_gets_a_certificate() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let run = run(
        &pebble,
        config.path(),
        "solve",
        &["-d", "web.compat.test", "--challenge", "http-01"],
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", run.context());
    assert_eq!(
        run.cmds(),
        ["perform_challenge", "cleanup", "deploy_cert", "report"],
        "{}",
        run.context()
    );
    let perform = run.with_cmd("perform_challenge")[0];
    run.assert_keys(perform, PERFORM_HTTP);
    let token = perform["token"].as_str().unwrap();
    assert_eq!(perform["type"], "http-01");
    assert_eq!(perform["domain"], "web.compat.test");
    assert_eq!(perform["validation"], perform["key_auth"]);
    assert_eq!(
        perform["uri"].as_str().unwrap(),
        format!("http://web.compat.test/.well-known/acme-challenge/{token}")
    );
    assert!(
        perform["command"]
            .as_str()
            .unwrap()
            .contains(&format!(".well-known/acme-challenge/{token}")),
        "{perform}"
    );
    let cleanup = run.with_cmd("cleanup")[0];
    run.assert_keys(cleanup, CLEANUP);
    assert_eq!(cleanup["status"], "valid");
    assert_eq!(cleanup["validated"], true);
    let deploy = run.with_cmd("deploy_cert")[0];
    run.assert_keys(deploy, DEPLOY_CERT);
    assert_eq!(deploy["domain"], "web.compat.test");
}

#[tokio::test]
async fn renew_runs_id_less_consumers_one_certificate_at_a_time() {
    let pebble = Pebble::builder().authz_reuse_percent(0).start().await;
    let config = temp_dir("acme-bridge-config-");
    let names = ["one.compat.test", "two.compat.test"];
    for name in names {
        let run = run(&pebble, config.path(), "solve", &["-d", name]).await;
        assert_eq!(run.status.code(), Some(0), "{}", run.context());
    }

    // Replies carry no id, so each renewal has stdin to itself: with room for two
    // at once, they still run one after the other, each from its
    // perform_challenge to its report.
    let args = ["--config-dir", "", "renew", "--force", "--parallel", "2"]
        .into_iter()
        .map(OsString::from)
        .enumerate()
        .map(|(i, a)| if i == 1 { config.path().into() } else { a })
        .collect();
    let run = run_with(&pebble, args, "solve").await;
    assert_eq!(run.status.code(), Some(0), "{}", run.context());
    assert_eq!(
        run.cmds(),
        [
            "perform_challenge",
            "cleanup",
            "deploy_cert",
            "report",
            "perform_challenge",
            "cleanup",
            "deploy_cert",
            "report"
        ],
        "{}",
        run.context()
    );
    let mut renewed: Vec<&str> = run
        .with_cmd("deploy_cert")
        .iter()
        .map(|m| m["domain"].as_str().expect("domain"))
        .collect();
    renewed.sort_unstable();
    assert_eq!(renewed, names, "{}", run.context());
    for name in names {
        let link = config.path().join("live").join(name).join("cert.pem");
        assert_eq!(
            std::fs::read_link(&link).expect("a link"),
            PathBuf::from(format!("../../archive/{name}/cert2.pem")),
            "{}",
            run.context()
        );
    }
}

#[tokio::test]
async fn stdin_closed_early_cleans_up_and_exits_4() {
    let pebble = Pebble::start().await;
    let config = temp_dir("acme-bridge-config-");
    let run = run(
        &pebble,
        config.path(),
        "close-after-first",
        &[
            "-d",
            "early.compat.test",
            "-d",
            "www.early.compat.test",
            "--challenge",
            "dns-01",
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(4), "{}", run.context());
    assert_eq!(
        run.cmds(),
        [
            "perform_challenge",
            "perform_challenge",
            "cleanup",
            "cleanup",
            "report"
        ],
        "{}",
        run.context()
    );
    assert!(run.with_cmd("deploy_cert").is_empty());
    let performs = run.with_cmd("perform_challenge");
    let cleanups = run.with_cmd("cleanup");
    let cleanup_of = |p: &Value| {
        *cleanups
            .iter()
            .find(|c| c["token"] == p["token"])
            .unwrap_or_else(|| panic!("no cleanup for {p}\n{}", run.context()))
    };
    for c in &cleanups {
        run.assert_keys(c, CLEANUP);
    }
    // The first was answered (the CA may or may not have decided yet); the second
    // never was.
    let first = cleanup_of(performs[0]);
    assert!(
        first["status"] == "valid" || first["status"] == "processing",
        "{first}"
    );
    let second = cleanup_of(performs[1]);
    assert_eq!(second["status"], "pending", "{}", run.context());
    assert_eq!(second["validated"], false);
    assert_eq!(second["error"], Value::Null);

    let report = run.messages.last().unwrap();
    run.assert_keys(report, REPORT);
    let entry = &report["messages"][0];
    run.assert_keys(entry, REPORT_ENTRY);
    assert_eq!(entry["priority"], 0);
    assert_eq!(entry["on_crash"], true);
    assert!(
        entry["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("stdin closed")),
        "{report}"
    );
    assert!(!config.path().join("live/early.compat.test").exists());
}

#[test]
fn protocol_is_refused_outside_json_mode() {
    let config = temp_dir("acme-bridge-config-");
    let output = Command::new(BINARY)
        .args(["--config-dir".as_ref(), config.path().as_os_str()])
        .args([
            "issue",
            "-d",
            "example.test",
            "--mode",
            "manual",
            "--protocol",
            "certbot-external-auth",
            "--server",
            "https://127.0.0.1:1/dir",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run acme-bridge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(stderr.contains("--protocol"), "{stderr}");
}
