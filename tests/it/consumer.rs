//! A JSON-mode consumer: runs the real `acme-bridge` binary and speaks its protocol.
//!
//! Every line read from stdout must be JSON valid against `schema/output-v1.json`, and
//! every line the test sends as a *valid* reply must be valid against
//! `schema/input-v1.json`. Everything seen is recorded so assertions can print it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use crate::harness::Pebble;

/// The binary under test.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_acme-bridge");

/// The committed schema of what acme-bridge writes to stdout.
pub(crate) const OUTPUT_SCHEMA: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/schema/output-v1.json");

/// The committed schema of what a consumer writes to acme-bridge's stdin.
pub(crate) const INPUT_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/input-v1.json");

/// A guard against a hung binary: no single read waits longer than this.
/// It is not an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(90);

fn load_validator(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the committed schema {path}: {e}"));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a valid JSON Schema: {e}"))
}

fn output_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| load_validator(OUTPUT_SCHEMA))
}

fn input_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| load_validator(INPUT_SCHEMA))
}

fn schema_errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|error| format!("{} (at {})", error, error.instance_path()))
        .collect()
}

/// Panics unless `value` is valid against the input schema.
pub(crate) fn assert_valid_input(value: &Value) {
    let errors = schema_errors(input_validator(), value);
    assert!(
        errors.is_empty(),
        "a reply the test means to be valid does not match {INPUT_SCHEMA}: {value}\n{}",
        errors.join("\n")
    );
}

/// One `challenge` message as announced on stdout.
#[derive(Debug, Clone)]
pub(crate) struct Challenge(pub(crate) Value);

impl Challenge {
    fn str(&self, field: &str) -> &str {
        self.0[field]
            .as_str()
            .unwrap_or_else(|| panic!("challenge without string {field:?}: {}", self.0))
    }

    pub(crate) fn id(&self) -> &str {
        self.str("id")
    }

    pub(crate) fn domain(&self) -> &str {
        self.str("domain")
    }

    pub(crate) fn identifier(&self) -> &str {
        self.str("identifier")
    }

    pub(crate) fn challenge_type(&self) -> &str {
        self.str("challenge_type")
    }

    pub(crate) fn token(&self) -> &str {
        self.str("token")
    }

    pub(crate) fn key_authorization(&self) -> &str {
        self.str("key_authorization")
    }

    pub(crate) fn wildcard(&self) -> bool {
        self.0["wildcard"]
            .as_bool()
            .unwrap_or_else(|| panic!("challenge without boolean wildcard: {}", self.0))
    }

    /// `dns.name`: the TXT record's FQDN, with trailing dot.
    pub(crate) fn dns_name(&self) -> &str {
        self.0["dns"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("challenge without dns.name: {}", self.0))
    }

    /// `dns.value`: the TXT value.
    pub(crate) fn dns_value(&self) -> &str {
        self.0["dns"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("challenge without dns.value: {}", self.0))
    }

    /// Deploys this challenge through pebble-challtestsrv, the way a real consumer would
    /// deploy it to its DNS provider or web server.
    pub(crate) async fn publish(&self, pebble: &Pebble) {
        match self.challenge_type() {
            "dns-01" => pebble.set_txt(self.dns_name(), self.dns_value()).await,
            "http-01" => {
                let body = self.0["http"]["body"]
                    .as_str()
                    .unwrap_or_else(|| panic!("http-01 challenge without http.body: {}", self.0));
                pebble.add_http01(self.token(), body).await;
            }
            "tls-alpn-01" => {
                pebble
                    .add_tlsalpn01(self.identifier(), self.key_authorization())
                    .await;
            }
            other => panic!("unknown challenge_type {other}: {}", self.0),
        }
    }
}

/// What the scripted consumer does with one announced challenge.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Deploy it via challtestsrv, then reply `ready`.
    Publish,
    /// Publish this TXT value at the challenge's `dns.name` instead of the right one,
    /// then reply `ready` (dns-01 only).
    PublishTxt(String),
    /// Reply `failed` with this reason; deploy nothing.
    Fail(String),
    /// Do nothing: no deployment, no reply.
    Ignore,
}

/// A running `acme-bridge` process with piped stdio.
pub(crate) struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdin_closed_by_process: bool,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: JoinHandle<()>,
    messages: Vec<Value>,
    conversation: Vec<String>,
    started: Instant,
    args: Vec<OsString>,
}

/// `issue --mode json --server DIR_URL --ca-bundle CA` for `pebble`: no global options,
/// no `--agree-tos`, no domain.
pub(crate) fn issue_args(pebble: &Pebble) -> Vec<OsString> {
    issue_args_for(pebble.directory_url(), pebble.ca_bundle_path())
}

/// [`issue_args`] for any ACME server (acme2certifier, ...): `issue --mode json --server
/// DIRECTORY_URL --ca-bundle CA_BUNDLE`.
pub(crate) fn issue_args_for(directory_url: &str, ca_bundle: &Path) -> Vec<OsString> {
    vec![
        "issue".into(),
        "--mode".into(),
        "json".into(),
        "--server".into(),
        directory_url.into(),
        "--ca-bundle".into(),
        ca_bundle.into(),
    ]
}

/// `--config-dir DIR` followed by [`issue_args`].
pub(crate) fn base_issue_args(pebble: &Pebble, config_dir: &Path) -> Vec<OsString> {
    let mut args = vec!["--config-dir".into(), config_dir.into()];
    args.extend(issue_args(pebble));
    args
}

impl Bridge {
    /// Starts the binary with exactly these arguments.
    pub(crate) fn spawn<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::spawn_with_env(args, &[])
    }

    /// Starts the binary with these arguments and extra environment variables.
    pub(crate) fn spawn_with_env<I, S>(args: I, env: &[(&str, &Path)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(&args)
            .env_remove("ACME_BRIDGE_CONFIG_DIR")
            .env_remove("RUST_LOG")
            .env("RUST_BACKTRACE", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let stderr_task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("stderr buffer")
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        Self {
            child,
            stdin,
            stdin_closed_by_process: false,
            stdout,
            stderr,
            stderr_task,
            messages: Vec::new(),
            conversation: Vec::new(),
            started: Instant::now(),
            args,
        }
    }

    /// `acme-bridge --config-dir DIR issue ... --agree-tos` against `pebble`, plus `extra`
    /// (domains, `--challenge`, ...).
    pub(crate) fn issue(pebble: &Pebble, config_dir: &Path, extra: &[&str]) -> Self {
        let mut args = base_issue_args(pebble, config_dir);
        args.push("--agree-tos".into());
        args.extend(extra.iter().map(OsString::from));
        Self::spawn(args)
    }

    /// The process id (to send it signals).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("acme-bridge is still running")
    }

    /// Sends SIGTERM to this process only (by PID).
    pub(crate) fn terminate(&self) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// What the process printed on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Messages read so far.
    pub(crate) fn messages(&self) -> &[Value] {
        &self.messages
    }

    fn note(&mut self, event: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.conversation.push(format!("{at:7.3} {event}"));
    }

    fn context(&self) -> String {
        describe(&self.args, &self.conversation, &self.stderr(), None)
    }

    /// The next stdout line, parsed and validated against the output schema;
    /// `None` at end of output.
    pub(crate) async fn next_message(&mut self) -> Option<Value> {
        let line = match tokio::time::timeout(HANG_GUARD, self.stdout.next_line()).await {
            Ok(Ok(line)) => line?,
            Ok(Err(e)) => panic!("reading stdout: {e}\n{}", self.context()),
            Err(_) => panic!(
                "acme-bridge wrote nothing on stdout for {HANG_GUARD:?}\n{}",
                self.context()
            ),
        };
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "stdout line is not JSON ({e}): {line:?}\n{}",
                self.context()
            )
        });
        let errors = schema_errors(output_validator(), &value);
        assert!(
            errors.is_empty(),
            "stdout line does not match {OUTPUT_SCHEMA}: {line}\n{}\n{}",
            errors.join("\n"),
            self.context()
        );
        self.note(format!("stdout {line}"));
        self.messages.push(value.clone());
        Some(value)
    }

    /// The next message, which must exist and have `type` == `kind`.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        match self.next_message().await {
            Some(message) if message["type"] == kind => message,
            Some(other) => panic!(
                "expected a {kind:?} message, got {other}\n{}",
                self.context()
            ),
            None => panic!(
                "expected a {kind:?} message, stdout ended\n{}",
                self.context()
            ),
        }
    }

    /// Reads `hello`, every `challenge` and `awaiting`; returns the challenges.
    pub(crate) async fn until_awaiting(&mut self) -> Vec<Challenge> {
        let hello = self.expect("hello").await;
        assert_eq!(hello["protocol"], 1, "{}", self.context());
        let mut challenges = Vec::new();
        loop {
            let message = match self.next_message().await {
                Some(message) => message,
                None => panic!(
                    "stdout ended before an \"awaiting\" message\n{}",
                    self.context()
                ),
            };
            match message["type"].as_str() {
                Some("challenge") => challenges.push(Challenge(message)),
                Some("awaiting") => return challenges,
                _ => panic!(
                    "expected \"challenge\" or \"awaiting\", got {message}\n{}",
                    self.context()
                ),
            }
        }
    }

    /// Writes one line on stdin without any validation (for garbage).
    pub(crate) async fn send_raw(&mut self, line: &str) {
        let context = self.context();
        let Some(stdin) = self.stdin.as_mut() else {
            assert!(
                self.stdin_closed_by_process,
                "the test already closed stdin\n{context}"
            );
            self.note(format!(
                "stdin  {line}    <- not delivered: acme-bridge closed stdin"
            ));
            return;
        };
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        let written = match stdin.write_all(&bytes).await {
            Ok(()) => stdin.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.note(format!("stdin  {line}")),
            // The process may legitimately stop reading (e.g. it gave up after a `failed`
            // reply and exited). Whether that was right is for the test's assertions on
            // the finished run to decide, not for the writer.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.note(format!(
                    "stdin  {line}    <- not delivered: acme-bridge closed stdin"
                ));
                self.stdin = None;
                self.stdin_closed_by_process = true;
            }
            Err(e) => panic!("writing {line:?} to stdin: {e}\n{context}"),
        }
    }

    /// Writes one reply that must be valid against the input schema.
    pub(crate) async fn send(&mut self, reply: Value) {
        assert_valid_input(&reply);
        self.send_raw(&reply.to_string()).await;
    }

    /// `{"type":"ready","id":ID}`
    pub(crate) async fn ready(&mut self, id: &str) {
        self.send(json!({"type": "ready", "id": id})).await;
    }

    /// `{"type":"failed","id":ID,"reason":REASON}`
    pub(crate) async fn failed(&mut self, id: &str, reason: &str) {
        self.send(json!({"type": "failed", "id": id, "reason": reason}))
            .await;
    }

    /// Applies `decide` to every challenge, in the order they were announced.
    pub(crate) async fn act(
        &mut self,
        pebble: &Pebble,
        challenges: &[Challenge],
        mut decide: impl FnMut(&Challenge) -> Action,
    ) {
        for challenge in challenges {
            match decide(challenge) {
                Action::Publish => {
                    challenge.publish(pebble).await;
                    self.ready(challenge.id()).await;
                }
                Action::PublishTxt(value) => {
                    pebble.set_txt(challenge.dns_name(), &value).await;
                    self.ready(challenge.id()).await;
                }
                Action::Fail(reason) => self.failed(challenge.id(), &reason).await,
                Action::Ignore => {}
            }
        }
    }

    /// Closes stdin (the consumer's EOF).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads every remaining message, waits for the exit and returns the whole run.
    pub(crate) async fn finish(mut self) -> Finished {
        while self.next_message().await.is_some() {}
        let status = match tokio::time::timeout(HANG_GUARD, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for acme-bridge: {e}\n{}", self.context()),
            Err(_) => panic!(
                "acme-bridge closed stdout but did not exit\n{}",
                self.context()
            ),
        };
        self.note(format!("exit   {status}"));
        let _ = tokio::time::timeout(HANG_GUARD, &mut self.stderr_task).await;
        Finished {
            args: self.args.clone(),
            stderr: self.stderr(),
            messages: std::mem::take(&mut self.messages),
            conversation: std::mem::take(&mut self.conversation),
            status,
        }
    }
}

/// Runs `acme-bridge issue --agree-tos EXTRA` to completion: every challenge is handled by
/// `decide`, stdin stays open until the process exits.
pub(crate) async fn run(
    pebble: &Pebble,
    config_dir: &Path,
    extra: &[&str],
    decide: impl FnMut(&Challenge) -> Action,
) -> Finished {
    let mut bridge = Bridge::issue(pebble, config_dir, extra);
    let challenges = bridge.until_awaiting().await;
    bridge.act(pebble, &challenges, decide).await;
    bridge.finish().await
}

/// Issues a certificate, deploying every challenge; panics unless it succeeds.
pub(crate) async fn issue_ok(pebble: &Pebble, config_dir: &Path, extra: &[&str]) -> Finished {
    let run = run(pebble, config_dir, extra, |_| Action::Publish).await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    run
}

fn describe(
    args: &[OsString],
    conversation: &[String],
    stderr: &str,
    status: Option<&ExitStatus>,
) -> String {
    let mut out = format!("--- acme-bridge {args:?}");
    if let Some(status) = status {
        out.push_str(&format!(" exited with {status}"));
    }
    out.push_str("\n--- conversation (seconds since start, stream, line):\n");
    for line in conversation {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("--- stderr:\n");
    out.push_str(stderr);
    out
}

/// A finished run: every message, the exit status and stderr.
#[derive(Debug)]
pub(crate) struct Finished {
    args: Vec<OsString>,
    /// Every stdout message, in order (all schema-valid).
    pub(crate) messages: Vec<Value>,
    conversation: Vec<String>,
    /// Exit status.
    pub(crate) status: ExitStatus,
    /// Everything written to stderr.
    pub(crate) stderr: String,
}

impl Finished {
    /// A readable dump of the run for assertion messages.
    pub(crate) fn context(&self) -> String {
        describe(
            &self.args,
            &self.conversation,
            &self.stderr,
            Some(&self.status),
        )
    }

    /// Panics unless the process exited with `code`.
    pub(crate) fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.context()
        );
    }

    /// Every message of type `kind`.
    pub(crate) fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["type"] == kind).collect()
    }

    /// The `challenge` messages.
    pub(crate) fn challenges(&self) -> Vec<Challenge> {
        self.of_type("challenge")
            .into_iter()
            .cloned()
            .map(Challenge)
            .collect()
    }

    /// The `cleanup` message for challenge `id` (exactly one must exist).
    pub(crate) fn cleanup_for(&self, id: &str) -> &Value {
        let cleanups: Vec<_> = self
            .of_type("cleanup")
            .into_iter()
            .filter(|m| m["id"] == id)
            .collect();
        assert_eq!(
            cleanups.len(),
            1,
            "expected exactly one cleanup for {id}\n{}",
            self.context()
        );
        cleanups[0]
    }

    /// The last message, which must be the final `certificate`.
    pub(crate) fn certificate(&self) -> &Value {
        match self.messages.last() {
            Some(last) if last["type"] == "certificate" => last,
            _ => panic!(
                "the last message is not a \"certificate\"\n{}",
                self.context()
            ),
        }
    }

    /// The last message, which must be a fatal `error`.
    pub(crate) fn fatal_error(&self) -> &Value {
        match self.messages.last() {
            Some(last) if last["type"] == "error" && last["fatal"] == true => last,
            _ => panic!(
                "the last message is not a fatal \"error\"\n{}",
                self.context()
            ),
        }
    }

    /// The non-fatal `error` messages.
    pub(crate) fn non_fatal_errors(&self) -> Vec<&Value> {
        self.of_type("error")
            .into_iter()
            .filter(|m| m["fatal"] == false)
            .collect()
    }

    /// The protocol's ordering rules, for a run that got as far as `hello`:
    /// `hello` first; every `challenge` before `awaiting`, whose ids list them all;
    /// exactly one `cleanup` per challenge, repeating its fields (without `deadline`);
    /// exactly one final message (`certificate` or fatal `error`), last.
    pub(crate) fn assert_protocol_shape(&self) {
        let context = self.context();
        let first = self.messages.first().expect("at least one message");
        assert_eq!(first["type"], "hello", "hello comes first\n{context}");
        assert_eq!(first["protocol"], 1, "protocol version 1\n{context}");
        assert_eq!(first["program"], "acme-bridge", "{context}");
        assert_eq!(
            self.of_type("hello").len(),
            1,
            "exactly one hello\n{context}"
        );

        let challenges = self.challenges();
        let ids: Vec<&str> = challenges.iter().map(Challenge::id).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ids.len(),
            "challenge ids are unique\n{context}"
        );

        let awaiting = self.of_type("awaiting");
        if !challenges.is_empty() {
            assert_eq!(awaiting.len(), 1, "one awaiting message\n{context}");
            let awaiting_at = self
                .messages
                .iter()
                .position(|m| m["type"] == "awaiting")
                .expect("awaiting");
            let last_challenge_at = self
                .messages
                .iter()
                .rposition(|m| m["type"] == "challenge")
                .expect("challenge");
            assert!(
                last_challenge_at < awaiting_at,
                "all challenges are announced before awaiting\n{context}"
            );
            let awaited: Vec<&str> = awaiting[0]["ids"]
                .as_array()
                .expect("awaiting.ids")
                .iter()
                .map(|id| id.as_str().expect("string id"))
                .collect();
            assert_eq!(awaited, ids, "awaiting lists every challenge id\n{context}");
        }

        for challenge in &challenges {
            let cleanup = self.cleanup_for(challenge.id());
            for (key, value) in challenge.0.as_object().expect("object") {
                if key == "type" || key == "deadline" {
                    continue;
                }
                assert_eq!(
                    &cleanup[key], value,
                    "cleanup repeats the challenge's {key:?}\n{context}"
                );
            }
            // The set of outcomes is the output schema's business (already checked).
            let outcome = cleanup["outcome"].as_str().unwrap_or_default();
            if outcome == "invalid" {
                assert!(
                    cleanup["problem"].is_object(),
                    "an invalid cleanup carries the CA's problem\n{context}"
                );
            }
        }
        for cleanup in self.of_type("cleanup") {
            assert!(
                ids.iter().any(|id| cleanup["id"] == *id),
                "cleanup for an id that was never announced: {cleanup}\n{context}"
            );
        }

        let finals: Vec<usize> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m["type"] == "certificate" || (m["type"] == "error" && m["fatal"] == true)
            })
            .map(|(at, _)| at)
            .collect();
        assert_eq!(
            finals,
            [self.messages.len() - 1],
            "exactly one final message (certificate or fatal error), and it comes last\n{context}"
        );
    }

    /// The absolute path a `certificate` message gives for `field` (e.g. `cert_path`).
    pub(crate) fn certificate_path(&self, field: &str) -> PathBuf {
        let path = self.certificate()[field]
            .as_str()
            .unwrap_or_else(|| panic!("certificate.{field} missing\n{}", self.context()));
        let path = PathBuf::from(path);
        assert!(
            path.is_absolute(),
            "certificate.{field} is absolute\n{}",
            self.context()
        );
        path
    }
}
