//! The lifecycle commands and options, end to end against a real Pebble: `revoke`,
//! `list`, `plan`, `account show|update|rollover|deactivate`, and the `issue` options
//! `--eab-kid`/`--eab-hmac-file` (and `ACME_BRIDGE_EAB_HMAC_KEY`), `--preferred-chain`,
//! `--reuse-key`, `--dns-check`/`--dns-check-timeout` and `--profile`.
//!
//! What the CA did is checked at the CA: Pebble's management interface
//! (`/cert-status-by-serial/<hex>`, `/roots/<n>`) and the requests Pebble logged.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use acme_bridge::policy::Reason;
use acme_bridge::report::{CertificateList, Plan};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::certs;
use crate::consumer::{self, Action, BINARY, Bridge, Finished};
use crate::harness::Pebble;

/// A guard against a hung command, not an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn config_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("acme-bridge-lifecycle-")
        .tempdir()
        .expect("temporary config dir")
}

/// One finished run of a command that reads nothing (`list`, `plan`, `revoke`,
/// `account …`).
pub(crate) struct Command {
    args: Vec<OsString>,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Command {
    pub(crate) fn context(&self) -> String {
        format!(
            "--- acme-bridge {:?} exited with {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }

    fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.context()
        );
        self
    }

    /// stdout, which must be exactly one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", self.context()))
    }

    /// stdout as the typed `list` document.
    fn list(&self) -> CertificateList {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not a `list` document: {e}\n{}", self.context()))
    }

    /// stdout as the typed `plan` document.
    fn plan(&self) -> Plan {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not a `plan` document: {e}\n{}", self.context()))
    }
}

/// `acme-bridge --config-dir CONFIG ARGS…` with stdin closed, to completion.
async fn command(config: &Path, args: &[&str]) -> Command {
    command_with_env(config, args, &[]).await
}

pub(crate) async fn command_with_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut all: Vec<OsString> = vec!["--config-dir".into(), config.into()];
    all.extend(args.iter().map(OsString::from));
    let mut cmd = tokio::process::Command::new(BINARY);
    cmd.args(&all)
        .env_remove("ACME_BRIDGE_CONFIG_DIR")
        .env_remove("ACME_BRIDGE_SERVER")
        .env_remove("ACME_BRIDGE_EAB_HMAC_KEY")
        .env_remove("ACME_BRIDGE_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = tokio::time::timeout(HANG_GUARD, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("acme-bridge {all:?} did not finish within {HANG_GUARD:?}"))
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
    Command {
        args: all,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `account ACTION --server DIR --ca-bundle CA EXTRA…`.
async fn account(pebble: &Pebble, config: &Path, action: &str, extra: &[&str]) -> Command {
    let ca = pebble
        .ca_bundle_path()
        .to_str()
        .expect("UTF-8 path")
        .to_owned();
    let mut args = vec![
        "account",
        action,
        "--server",
        pebble.directory_url(),
        "--ca-bundle",
        &ca,
    ];
    args.extend_from_slice(extra);
    command(config, &args).await
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn rfc3339(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

/// When a third of the lifetime `[not_before, not_after]` (Unix seconds) is left.
fn third_left(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before) / 3
}

/// `actual` within a second of `expected` (RFC 3339 output is whole seconds; the
/// lifetime's third is not).
fn assert_about(actual: i64, expected: i64, context: &str) {
    assert!(
        (actual - expected).abs() <= 1,
        "{actual} is not within 1 s of {expected}\n{context}"
    );
}

/// Pebble's view of a certificate: `{Status, Serial, Certificate, Reason?, RevokedAt?}`.
async fn cert_status(pebble: &Pebble, serial_hex: &str) -> Value {
    let path = format!("/cert-status-by-serial/{serial_hex}");
    let (status, body) = pebble.management(&path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("cert-status-by-serial answers JSON")
}

/// The leaf (first certificate) of a PEM file.
fn leaf_of(path: &Path) -> Vec<u8> {
    certs::pem_certificates_in(path)
        .first()
        .unwrap_or_else(|| panic!("{} holds no certificate", path.display()))
        .to_vec()
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a common name")
        .to_owned()
}

fn subject_cn(der: &[u8]) -> String {
    common_name(certs::parse(der).subject())
}

fn issuer_cn(der: &[u8]) -> String {
    common_name(certs::parse(der).issuer())
}

/// How many requests to `url`'s path Pebble has handled with `method`, from the
/// directory (`newAccount`, `newOrder`, …).
async fn requests_to(pebble: &Pebble, method: &str, resource: &str) -> usize {
    let directory = pebble.directory().await;
    let url = directory[resource]
        .as_str()
        .unwrap_or_else(|| panic!("the directory has no {resource}: {directory}"));
    pebble.requests_logged(method, url)
}

/// How many challenges were answered to Pebble so far (`POST /chalZ/…`).
fn challenge_answers(pebble: &Pebble) -> usize {
    pebble
        .pebble_log()
        .lines()
        .filter(|line| line.contains("POST /chalZ/ -> calling handler()"))
        .count()
}

fn run_text(run: &Finished) -> String {
    let mut text = run.stderr.clone();
    for message in &run.messages {
        text.push_str(&message.to_string());
    }
    text
}

// ---------------------------------------------------------------------------------
// revoke, list, plan (default lifetime)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_is_recorded_by_the_ca_and_shown_by_list_and_plan() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(&pebble, config.path(), &["-d", "revoke.test"]).await;
    let leaf = leaf_of(&run.certificate_path("cert_path"));
    let serial = certs::serial_hex(&leaf);
    assert_eq!(
        certs::normalize_hex(run.certificate()["serial"].as_str().expect("serial")),
        serial,
        "{}",
        run.context()
    );
    assert_eq!(cert_status(&pebble, &serial).await["Status"], "Valid");

    // Before: Pebble's default lifetime (years) is far from due.
    let listed = command(config.path(), &["list"]).await;
    listed.assert_exit(0);
    let list = listed.list();
    assert_eq!(list.format, 1);
    assert_eq!(list.certificates.len(), 1, "{}", listed.context());
    let entry = &list.certificates[0];
    assert_eq!(entry.name, "revoke.test");
    assert_eq!(entry.domains, ["revoke.test"]);
    assert_eq!(entry.version, 1);
    assert_eq!(certs::normalize_hex(&entry.serial), serial);
    assert!(entry.revoked.is_none(), "{}", listed.context());
    assert!(
        !listed.json()["certificates"][0]
            .as_object()
            .expect("entry")
            .contains_key("revoked")
    );
    assert_eq!(entry.server.as_deref(), Some(pebble.directory_url()));
    assert_eq!(entry.mode.as_deref(), Some("json"));
    let (not_before, not_after) = certs::validity(&leaf);
    assert_eq!(rfc3339(&entry.not_after).unix_timestamp(), not_after);
    assert_eq!(rfc3339(&entry.not_before).unix_timestamp(), not_before);
    let expected_days = (not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    assert!(
        (entry.days_left - expected_days).abs() <= 1 && entry.days_left > 30,
        "days_left {} vs {expected_days}\n{}",
        entry.days_left,
        listed.context()
    );
    assert!(!entry.renewal.should_renew, "{}", listed.context());
    assert_eq!(entry.renewal.reason, Reason::NotDue);
    assert_about(
        rfc3339(&entry.renewal.due_at).unix_timestamp(),
        third_left(not_before, not_after),
        &format!(
            "due when a third of the lifetime is left\n{}",
            listed.context()
        ),
    );
    assert_eq!(
        Path::new(&entry.cert_path),
        config.path().join("live/revoke.test/cert.pem")
    );

    let planned = command(config.path(), &["plan"]).await;
    planned.assert_exit(0);
    let plan = planned.plan();
    assert!(!plan.ari);
    assert_eq!(plan.certificates.len(), 1, "{}", planned.context());
    assert!(!plan.certificates[0].revoked);
    assert!(!plan.certificates[0].verdict.should_renew);
    assert_eq!(plan.certificates[0].verdict.reason, Reason::NotDue);

    // Revoke.
    let revoked = command(
        config.path(),
        &["revoke", "revoke.test", "--reason", "keyCompromise"],
    )
    .await;
    revoked.assert_exit(0);
    let doc = revoked.json();
    assert_eq!(doc["format"], 1, "{}", revoked.context());
    assert_eq!(doc["name"], "revoke.test", "{}", revoked.context());
    assert_eq!(
        certs::normalize_hex(doc["serial"].as_str().expect("serial")),
        serial
    );
    assert_eq!(doc["revoked"]["reason"], "keyCompromise");
    let at = rfc3339(doc["revoked"]["at"].as_str().expect("revoked.at"));
    assert!((OffsetDateTime::now_utc() - at).whole_seconds().abs() < 300);

    // The CA knows: revoked, reason keyCompromise (1).
    let status = cert_status(&pebble, &serial).await;
    assert_eq!(status["Status"], "Revoked", "{status}");
    assert_eq!(status["Reason"], 1, "keyCompromise is reason 1: {status}");

    // Recorded in renewal/NAME.json.
    let settings = read_json(&config.path().join("renewal/revoke.test.json"));
    assert_eq!(settings["revoked"]["reason"], "keyCompromise", "{settings}");

    // list and plan: revoked, due now.
    let listed = command(config.path(), &["list"]).await;
    listed.assert_exit(0);
    let list = listed.list();
    let entry = &list.certificates[0];
    let revocation = entry.revoked.as_ref().expect("list shows the revocation");
    assert_eq!(revocation.reason.as_deref(), Some("keyCompromise"));
    assert!(entry.renewal.should_renew, "{}", listed.context());
    assert_eq!(entry.renewal.reason, Reason::Revoked);
    assert_eq!(entry.renewal.reason_text, Reason::Revoked.describe());

    let planned = command(config.path(), &["plan", "revoke.test"]).await;
    planned.assert_exit(0);
    let plan = planned.plan();
    let entry = &plan.certificates[0];
    assert!(entry.revoked, "{}", planned.context());
    assert!(entry.verdict.should_renew);
    assert_eq!(entry.verdict.reason, Reason::Revoked);
    assert_eq!(planned.json()["certificates"][0]["reason"], "revoked");

    // Revoking again: the CA refuses (alreadyRevoked), exit 3, the record stays.
    let again = command(config.path(), &["revoke", "revoke.test"]).await;
    again.assert_exit(3);
    assert!(
        again.stderr.contains("alreadyRevoked"),
        "{}",
        again.context()
    );
    assert!(again.stdout.is_empty(), "{}", again.context());
    let settings = read_json(&config.path().join("renewal/revoke.test.json"));
    assert_eq!(settings["revoked"]["reason"], "keyCompromise", "{settings}");

    // An unknown name is a usage error, for revoke and for plan.
    command(config.path(), &["revoke", "nothing.test"])
        .await
        .assert_exit(2);
    command(config.path(), &["plan", "nothing.test"])
        .await
        .assert_exit(2);
}

#[tokio::test]
async fn revoke_signs_with_the_certificate_key_when_the_account_cannot() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut serials = Vec::new();
    for (name, key_type) in [("ec.test", "ec-p384"), ("rsa.test", "rsa2048")] {
        let run = consumer::issue_ok(
            &pebble,
            config.path(),
            &["-d", name, "--key-type", key_type],
        )
        .await;
        serials.push(certs::serial_hex(&leaf_of(
            &run.certificate_path("cert_path"),
        )));
    }
    let deactivated = account(&pebble, config.path(), "deactivate", &[]).await;
    deactivated.assert_exit(0);
    let kept = PathBuf::from(deactivated.json()["path"].as_str().expect("path"));

    // No account is stored any more: the certificate's own key (P-384) signs.
    let revoked = command(
        config.path(),
        &["revoke", "ec.test", "--reason", "superseded"],
    )
    .await;
    revoked.assert_exit(0);
    assert!(
        revoked.stderr.contains("certificate's own key"),
        "{}",
        revoked.context()
    );
    let status = cert_status(&pebble, &serials[0]).await;
    assert_eq!(status["Status"], "Revoked", "{status}");
    assert_eq!(status["Reason"], 4, "superseded is reason 4: {status}");

    // Another account is stored now, one that never ordered rsa.test: the CA
    // refuses it, and the certificate's own key (RSA) signs instead.
    let other = config_dir();
    consumer::issue_ok(&pebble, other.path(), &["-d", "other.test"]).await;
    let stored = config
        .path()
        .join(kept.parent().expect("account dir"))
        .join("account.json");
    let others = other.path().join(
        stored
            .strip_prefix(config.path())
            .expect("under the config dir"),
    );
    fs::copy(&others, &stored).expect("store the other account");
    let revoked = command(config.path(), &["revoke", "rsa.test"]).await;
    revoked.assert_exit(0);
    assert!(
        revoked.stderr.contains("may not revoke it"),
        "{}",
        revoked.context()
    );
    let status = cert_status(&pebble, &serials[1]).await;
    assert_eq!(status["Status"], "Revoked", "{status}");
    let listed = command(config.path(), &["list"]).await;
    listed.assert_exit(0);
    assert!(
        listed
            .list()
            .certificates
            .iter()
            .all(|c| c.revoked.is_some()),
        "{}",
        listed.context()
    );
}

// ---------------------------------------------------------------------------------
// plan with a short lifetime
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn plan_follows_the_lifetime_rule_and_renew_before_offline() {
    const LIFETIME: i64 = 240;
    let pebble = Pebble::builder()
        .certificate_validity_period(LIFETIME as u64)
        .start()
        .await;
    let config = config_dir();
    let run = consumer::issue_ok(&pebble, config.path(), &["-d", "short.test"]).await;
    let (not_before, not_after) = certs::validity(&leaf_of(&run.certificate_path("cert_path")));
    assert!(
        (not_after - not_before - LIFETIME).abs() <= 2,
        "Pebble issued for {}s",
        not_after - not_before
    );
    let log_before = pebble.pebble_log().lines().count();

    // A third of 240 s is 80 s: due 160 s after issuance, not now.
    let planned = command(config.path(), &["plan"]).await;
    planned.assert_exit(0);
    let plan = planned.plan();
    assert_eq!(plan.certificates.len(), 1, "{}", planned.context());
    let entry = &plan.certificates[0];
    assert_eq!(entry.name, "short.test");
    assert!(
        !entry.verdict.should_renew,
        "not due right after issuance\n{}",
        planned.context()
    );
    assert_eq!(entry.verdict.reason, Reason::NotDue);
    assert_about(
        rfc3339(&entry.verdict.due_at).unix_timestamp(),
        third_left(not_before, not_after),
        &planned.context(),
    );
    assert_eq!(entry.days_left, 0);
    assert!(!entry.revoked);
    assert!(entry.ari_window.is_none() && entry.ari_error.is_none());

    // Less than 300 s is left: due, because of --renew-before; longer than the whole
    // lifetime, so due since issuance.
    let planned = command(config.path(), &["plan", "--renew-before", "300s"]).await;
    planned.assert_exit(0);
    let entry = &planned.plan().certificates[0];
    assert!(entry.verdict.should_renew, "{}", planned.context());
    assert_eq!(entry.verdict.reason, Reason::RenewBefore);
    assert_eq!(
        rfc3339(&entry.verdict.due_at).unix_timestamp(),
        not_before,
        "{}",
        planned.context()
    );
    assert_eq!(planned.json()["certificates"][0]["reason"], "renew_before");

    // Absurdly long: the same verdict, a valid date, no panic (it overflowed `time`).
    let planned = command(config.path(), &["plan", "--renew-before", "20000years"]).await;
    planned.assert_exit(0);
    let entry = &planned.plan().certificates[0];
    assert!(entry.verdict.should_renew, "{}", planned.context());
    assert_eq!(entry.verdict.reason, Reason::RenewBefore);
    assert_eq!(
        rfc3339(&entry.verdict.due_at).unix_timestamp(),
        not_before,
        "{}",
        planned.context()
    );

    // More than 10 s is left: not due with --renew-before 10s, due 10 s before the end.
    let planned = command(
        config.path(),
        &["plan", "short.test", "--renew-before", "10s"],
    )
    .await;
    planned.assert_exit(0);
    let entry = &planned.plan().certificates[0];
    assert!(!entry.verdict.should_renew, "{}", planned.context());
    assert_eq!(entry.verdict.reason, Reason::NotDue);
    assert_eq!(
        rfc3339(&entry.verdict.due_at).unix_timestamp(),
        not_after - 10
    );

    // list gives the same offline verdict as plan without options.
    let listed = command(config.path(), &["list"]).await;
    listed.assert_exit(0);
    let list = listed.list();
    let entry = &list.certificates[0];
    assert_eq!(entry.days_left, 0, "{}", listed.context());
    assert!(!entry.renewal.should_renew);
    assert_eq!(entry.renewal.reason, Reason::NotDue);

    // Offline: Pebble saw none of this.
    assert_eq!(
        pebble.pebble_log().lines().count(),
        log_before,
        "plan and list must not contact the CA:\n{}",
        pebble.pebble_log()
    );

    // --ari asks the CA; Pebble offers no ARI: recorded per certificate, not fatal, and
    // the lifetime rule still decides.
    let planned = command(config.path(), &["plan", "--ari"]).await;
    planned.assert_exit(0);
    let plan = planned.plan();
    assert!(plan.ari, "{}", planned.context());
    let entry = &plan.certificates[0];
    assert!(entry.ari_window.is_none(), "{}", planned.context());
    assert!(
        entry
            .ari_error
            .as_deref()
            .is_some_and(|e| e.contains("ARI")),
        "{}",
        planned.context()
    );
    assert!(!entry.verdict.should_renew);
    assert_eq!(entry.verdict.reason, Reason::NotDue);
    assert!(
        pebble.pebble_log().lines().count() > log_before,
        "--ari read the directory"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_due() {
    let pebble = Pebble::builder()
        .certificate_validity_period(2)
        .start()
        .await;
    let config = config_dir();
    let run = consumer::issue_ok(&pebble, config.path(), &["-d", "expired.test"]).await;
    let (_, not_after) = certs::validity(&leaf_of(&run.certificate_path("cert_path")));
    // At most the two seconds of its lifetime.
    while OffsetDateTime::now_utc().unix_timestamp() <= not_after {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let planned = command(config.path(), &["plan"]).await;
    planned.assert_exit(0);
    let entry = &planned.plan().certificates[0];
    assert!(entry.verdict.should_renew, "{}", planned.context());
    assert_eq!(entry.verdict.reason, Reason::Expired);
    assert_eq!(rfc3339(&entry.verdict.due_at).unix_timestamp(), not_after);
    assert!(entry.days_left <= 0, "{}", planned.context());

    let listed = command(config.path(), &["list"]).await;
    listed.assert_exit(0);
    let entry = &listed.list().certificates[0];
    assert!(entry.renewal.should_renew, "{}", listed.context());
    assert_eq!(entry.renewal.reason, Reason::Expired);
}

// ---------------------------------------------------------------------------------
// External Account Binding
// ---------------------------------------------------------------------------------

const EAB_KID: &str = "acme-bridge-kid-1";

fn random_hmac_key() -> String {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).expect("random bytes");
    URL_SAFE_NO_PAD.encode(key)
}

/// Every file under `dir`, as text.
fn all_files_text(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(text) = fs::read_to_string(&path) {
                out.push_str(&text);
            }
        }
    }
    let mut out = String::new();
    walk(dir, &mut out);
    out
}

#[tokio::test]
async fn external_account_binding_when_the_ca_requires_it() {
    let key = random_hmac_key();
    let pebble = Pebble::builder()
        .config("externalAccountBindingRequired", json!(true))
        .config("externalAccountMACKeys", json!({ EAB_KID: key }))
        .start()
        .await;
    assert_eq!(
        pebble.directory().await["meta"]["externalAccountRequired"],
        true
    );
    let secrets = tempfile::tempdir().expect("secrets dir");
    let key_file = secrets.path().join("eab.key");
    fs::write(&key_file, format!("{key}\n")).expect("write the HMAC key file");
    let key_file_arg = key_file.to_str().expect("UTF-8 path");

    // Without EAB: a clear configuration error before any account is requested.
    let config = config_dir();
    let run = Bridge::issue(&pebble, config.path(), &["-d", "eab.test"])
        .finish()
        .await;
    run.assert_exit(2);
    run.assert_protocol_shape();
    let error = run.fatal_error();
    assert_eq!(error["kind"], "config", "{}", run.context());
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("External Account Binding")),
        "{}",
        run.context()
    );
    assert_eq!(requests_to(&pebble, "POST", "newAccount").await, 0);

    // --eab-kid without a key anywhere: usage error naming both ways to give it.
    let mut args = consumer::base_issue_args(&pebble, config.path());
    args.extend(
        ["--agree-tos", "-d", "eab.test", "--eab-kid", EAB_KID]
            .iter()
            .map(OsString::from),
    );
    let run = Bridge::spawn(args).finish().await;
    run.assert_exit(2);
    assert!(
        run.stderr.contains("--eab-hmac-file") && run.stderr.contains("ACME_BRIDGE_EAB_HMAC_KEY"),
        "{}",
        run.context()
    );

    // --eab-kid + --eab-hmac-file: bound, issued.
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "eab.test",
            "-v",
            "--eab-kid",
            EAB_KID,
            "--eab-hmac-file",
            key_file_arg,
        ],
    )
    .await;
    run.certificate();
    assert!(
        !run_text(&run).contains(&key),
        "the HMAC key leaked\n{}",
        run.context()
    );
    assert!(!all_files_text(config.path()).contains(&key));
    assert_eq!(
        pebble
            .pebble_log()
            .matches(&format!(
                "Successful newAccount Binding with CA using kid {EAB_KID:?}"
            ))
            .count(),
        1,
        "{}",
        pebble.pebble_log()
    );

    // The key in ACME_BRIDGE_EAB_HMAC_KEY, a new config dir (so a new account).
    let config = config_dir();
    let mut args = consumer::base_issue_args(&pebble, config.path());
    args.extend(
        [
            "--agree-tos",
            "-d",
            "eab-env.test",
            "-v",
            "--eab-kid",
            EAB_KID,
        ]
        .iter()
        .map(OsString::from),
    );
    let mut bridge = Bridge::spawn_with_env(args, &[("ACME_BRIDGE_EAB_HMAC_KEY", Path::new(&key))]);
    let challenges = bridge.until_awaiting().await;
    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    run.certificate();
    assert!(
        !run_text(&run).contains(&key),
        "the HMAC key leaked\n{}",
        run.context()
    );
    assert!(!all_files_text(config.path()).contains(&key));
    assert_eq!(
        pebble
            .pebble_log()
            .matches(&format!(
                "Successful newAccount Binding with CA using kid {EAB_KID:?}"
            ))
            .count(),
        2
    );

    // A wrong key: the CA refuses the binding (exit 3), and no account is stored.
    let wrong = random_hmac_key();
    let config = config_dir();
    let mut args = consumer::base_issue_args(&pebble, config.path());
    args.extend(
        ["--agree-tos", "-d", "eab-wrong.test", "--eab-kid", EAB_KID]
            .iter()
            .map(OsString::from),
    );
    let run = Bridge::spawn_with_env(args, &[("ACME_BRIDGE_EAB_HMAC_KEY", Path::new(&wrong))])
        .finish()
        .await;
    run.assert_exit(3);
    run.assert_protocol_shape();
    assert_eq!(run.fatal_error()["kind"], "ca", "{}", run.context());
    assert!(!run_text(&run).contains(&wrong), "{}", run.context());
    assert!(
        !all_files_text(config.path()).contains("key_pkcs8"),
        "no account is stored"
    );
}

// ---------------------------------------------------------------------------------
// --preferred-chain
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn preferred_chain_picks_the_alternate_chain_by_its_root_name() {
    let pebble = Pebble::builder()
        .env("PEBBLE_ALTERNATE_ROOTS", "2")
        .start()
        .await;
    let mut roots = Vec::new();
    for index in 0..3 {
        roots.push(pebble.root_pem(index).await);
    }
    let names: Vec<String> = roots
        .iter()
        .map(|pem| subject_cn(&certs::pem_certificates(pem.as_bytes())[0]))
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "three distinct roots: {names:?}");

    let config = config_dir();
    for (index, domain) in [(2, "alt-two.test"), (1, "alt-one.test")] {
        let run = consumer::issue_ok(
            &pebble,
            config.path(),
            &["-d", domain, "--preferred-chain", &names[index]],
        )
        .await;
        let leaf = leaf_of(&run.certificate_path("cert_path"));
        let chain = certs::pem_certificates_in(&run.certificate_path("chain_path"));
        let top = chain.last().expect("chain.pem holds the intermediates");
        assert_eq!(
            issuer_cn(top),
            names[index],
            "chain.pem leads to root {index}\n{}",
            run.context()
        );
        let leaf_der = rustls_pki_types::CertificateDer::from(leaf.clone());
        certs::verify_chain(&leaf_der, &chain, roots[index].as_bytes(), domain)
            .unwrap_or_else(|e| panic!("the chain verifies against root {index}: {e}"));
        assert!(
            certs::verify_chain(&leaf_der, &chain, roots[0].as_bytes(), domain).is_err(),
            "the alternate chain does not lead to the default root"
        );
        let fullchain = certs::pem_certificates_in(&run.certificate_path("fullchain_path"));
        assert_eq!(fullchain.len(), chain.len() + 1);
        assert_eq!(&*fullchain[0], leaf.as_slice());
        assert_eq!(&fullchain[1..], chain.as_slice());
        let settings = read_json(&config.path().join(format!("renewal/{domain}.json")));
        assert_eq!(settings["preferred_chain"], names[index].as_str());
    }

    // A name no chain has: the default chain, exit 0, and a warning.
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "alt-none.test",
            "--preferred-chain",
            "No Such Root CA",
        ],
    )
    .await;
    let leaf = leaf_of(&run.certificate_path("cert_path"));
    let chain = certs::pem_certificates_in(&run.certificate_path("chain_path"));
    assert_eq!(issuer_cn(chain.last().expect("intermediate")), names[0]);
    let leaf_der = rustls_pki_types::CertificateDer::from(leaf);
    certs::verify_chain(&leaf_der, &chain, roots[0].as_bytes(), "alt-none.test")
        .unwrap_or_else(|e| panic!("the default chain verifies against root 0: {e}"));
    assert!(
        run.stderr.contains("No Such Root CA") && run.stderr.contains("default chain"),
        "{}",
        run.context()
    );
}

// ---------------------------------------------------------------------------------
// --reuse-key
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn reuse_key_keeps_the_private_key_across_issuances() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let archive = config.path().join("archive/reuse.test");
    let privkey = |n: u32| -> Vec<u8> {
        let path = archive.join(format!("privkey{n}.pem"));
        fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let cert = |n: u32| -> Vec<u8> { leaf_of(&archive.join(format!("cert{n}.pem"))) };

    consumer::issue_ok(&pebble, config.path(), &["-d", "reuse.test", "--reuse-key"]).await;
    let run =
        consumer::issue_ok(&pebble, config.path(), &["-d", "reuse.test", "--reuse-key"]).await;
    assert_eq!(run.certificate()["version"], 2);
    assert_eq!(privkey(1), privkey(2), "--reuse-key kept the key");
    assert_ne!(certs::serial_hex(&cert(1)), certs::serial_hex(&cert(2)));
    assert!(certs::key_matches_certificate(&privkey(2), &cert(2)));
    let settings = read_json(&config.path().join("renewal/reuse.test.json"));
    assert_eq!(settings["reuse_key"], true, "{settings}");

    let run = consumer::issue_ok(&pebble, config.path(), &["-d", "reuse.test"]).await;
    assert_eq!(run.certificate()["version"], 3);
    assert_ne!(privkey(2), privkey(3), "without --reuse-key a new key");
    assert!(certs::key_matches_certificate(&privkey(3), &cert(3)));
    let settings = read_json(&config.path().join("renewal/reuse.test.json"));
    assert_eq!(settings["reuse_key"], false, "{settings}");
}

// ---------------------------------------------------------------------------------
// account show | update | rollover | deactivate
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn account_show_update_rollover_and_deactivate() {
    let pebble = Pebble::start().await;
    let config = config_dir();

    let none = account(&pebble, config.path(), "show", &[]).await;
    none.assert_exit(2);
    assert!(none.stderr.contains("no account"), "{}", none.context());

    consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "account.test", "--email", "first@example.test"],
    )
    .await;
    let issued_by = read_json(&config.path().join("renewal/account.test.json"))["account"]
        .as_str()
        .expect("account URL in the settings")
        .to_owned();
    assert_eq!(requests_to(&pebble, "POST", "newAccount").await, 1);

    // show: offline, the stored URL.
    let shown = account(&pebble, config.path(), "show", &[]).await;
    shown.assert_exit(0);
    let doc = shown.json();
    assert_eq!(doc["url"], issued_by.as_str(), "{}", shown.context());
    assert_eq!(doc["directory"], pebble.directory_url());
    assert_eq!(doc["contact"], json!(["mailto:first@example.test"]));
    let account_file = PathBuf::from(doc["path"].as_str().expect("path"));
    assert!(account_file.is_file(), "{}", shown.context());
    let stored = read_json(&account_file);
    assert_eq!(stored["url"], issued_by.as_str());

    // update --email.
    let updated = account(
        &pebble,
        config.path(),
        "update",
        &["--email", "new@example.test"],
    )
    .await;
    updated.assert_exit(0);
    assert_eq!(
        updated.json()["contact"],
        json!(["mailto:new@example.test"])
    );
    assert!(
        pebble
            .pebble_log()
            .contains("POST /my-account/ -> calling handler()"),
        "the update reached the CA"
    );
    let shown = account(&pebble, config.path(), "show", &[]).await;
    shown.assert_exit(0);
    assert_eq!(
        shown.json()["contact"],
        json!(["mailto:new@example.test"]),
        "{}",
        shown.context()
    );
    assert_eq!(shown.json()["url"], issued_by.as_str());
    let after_update = read_json(&account_file);
    assert_eq!(
        after_update["credentials"]["key_pkcs8"], stored["credentials"]["key_pkcs8"],
        "update keeps the key"
    );

    // rollover: a new key in account.json, same URL.
    let rolled = account(&pebble, config.path(), "rollover", &[]).await;
    rolled.assert_exit(0);
    assert_eq!(
        rolled.json()["url"],
        issued_by.as_str(),
        "{}",
        rolled.context()
    );
    let after_rollover = read_json(&account_file);
    assert_ne!(
        after_rollover["credentials"]["key_pkcs8"], after_update["credentials"]["key_pkcs8"],
        "rollover stores a new key"
    );
    assert_eq!(after_rollover["url"], issued_by.as_str());
    assert_eq!(
        after_rollover["contact"],
        json!(["mailto:new@example.test"])
    );

    // The CA no longer accepts the old key: a copy of the old account.json is refused.
    let stale = config_dir();
    let stale_file = stale.path().join(
        account_file
            .strip_prefix(config.path())
            .expect("under the config dir"),
    );
    fs::create_dir_all(stale_file.parent().expect("parent")).expect("mkdir");
    fs::write(&stale_file, after_update.to_string()).expect("write the old account");
    let refused = account(
        &pebble,
        stale.path(),
        "update",
        &["--email", "x@example.test"],
    )
    .await;
    refused.assert_exit(3);

    // The next issuance uses the rolled key with the same account.
    consumer::issue_ok(&pebble, config.path(), &["-d", "account.test"]).await;
    assert_eq!(
        read_json(&config.path().join("renewal/account.test.json"))["account"],
        issued_by.as_str()
    );
    assert_eq!(
        requests_to(&pebble, "POST", "newAccount").await,
        1,
        "no new account after the rollover"
    );

    // deactivate: gone locally (kept aside), refused by the CA, and the next issuance
    // registers a new account.
    let deactivated = account(&pebble, config.path(), "deactivate", &[]).await;
    deactivated.assert_exit(0);
    let doc = deactivated.json();
    assert_eq!(doc["status"], "deactivated", "{}", deactivated.context());
    assert_eq!(doc["url"], issued_by.as_str());
    assert!(!account_file.exists(), "account.json is moved aside");
    let kept = PathBuf::from(doc["path"].as_str().expect("path"));
    assert!(kept.is_file(), "{}", deactivated.context());
    account(&pebble, config.path(), "show", &[])
        .await
        .assert_exit(2);

    let dead = config_dir();
    let dead_file = dead.path().join(
        account_file
            .strip_prefix(config.path())
            .expect("under the config dir"),
    );
    fs::create_dir_all(dead_file.parent().expect("parent")).expect("mkdir");
    fs::copy(&kept, &dead_file).expect("copy the deactivated account");
    account(
        &pebble,
        dead.path(),
        "update",
        &["--email", "x@example.test"],
    )
    .await
    .assert_exit(3);

    consumer::issue_ok(&pebble, config.path(), &["-d", "account.test"]).await;
    let new_url = read_json(&config.path().join("renewal/account.test.json"))["account"]
        .as_str()
        .expect("account URL")
        .to_owned();
    assert_ne!(new_url, issued_by, "a new account after deactivation");
    assert_eq!(requests_to(&pebble, "POST", "newAccount").await, 2);
    let shown = account(&pebble, config.path(), "show", &[]).await;
    shown.assert_exit(0);
    assert_eq!(shown.json()["url"], new_url.as_str());
}

// ---------------------------------------------------------------------------------
// --dns-check
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn dns_check_waits_for_published_records_and_stops_before_the_ca() {
    let pebble = Pebble::start().await;
    let servers = format!("servers={}", pebble.dns_addr());

    // Published: checked, then validated by the CA.
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "checked.test",
            "-d",
            "*.checked.test",
            "--challenge",
            "dns-01",
            "--dns-check",
            &servers,
            "--dns-check-timeout",
            "30s",
        ],
    )
    .await;
    for challenge in run.challenges() {
        assert_eq!(run.cleanup_for(challenge.id())["outcome"], "valid");
    }
    // The check asked challtestsrv at least once besides Pebble's two validations.
    assert!(
        pebble.txt_queries_for("_acme-challenge.checked.test").await >= 3,
        "{:?}",
        pebble
            .dns_request_history("_acme-challenge.checked.test")
            .await
    );
    let settings = read_json(&config.path().join("renewal/checked.test.json"));
    assert_eq!(settings["dns_check"], servers.as_str(), "{settings}");

    // Reported ready but never published: the check gives up, the CA is never asked.
    let answers_before = challenge_answers(&pebble);
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "unpublished.test",
            "--challenge",
            "dns-01",
            "--dns-check",
            &servers,
            "--dns-check-timeout",
            "3s",
        ],
    );
    let challenges = bridge.until_awaiting().await;
    for challenge in &challenges {
        bridge.ready(challenge.id()).await;
    }
    let run = bridge.finish().await;
    run.assert_exit(4);
    run.assert_protocol_shape();
    let error = run.fatal_error();
    assert_eq!(error["kind"], "challenge", "{}", run.context());
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("DNS propagation check")),
        "{}",
        run.context()
    );
    for challenge in &challenges {
        assert_eq!(
            run.cleanup_for(challenge.id())["outcome"],
            "not_validated",
            "{}",
            run.context()
        );
    }
    assert!(
        pebble
            .txt_queries_for("_acme-challenge.unpublished.test")
            .await
            >= 1,
        "the check did look"
    );
    assert_eq!(
        challenge_answers(&pebble),
        answers_before,
        "no challenge was answered to the CA"
    );
    assert!(!config.path().join("live/unpublished.test").exists());
}

// ---------------------------------------------------------------------------------
// --profile
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn profile_the_ca_does_not_offer_is_a_usage_error() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "profile.test", "--profile", "x"],
    )
    .finish()
    .await;
    run.assert_exit(2);
    run.assert_protocol_shape();
    let error = run.fatal_error();
    assert_eq!(error["kind"], "config", "{}", run.context());
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("offers no certificate profiles")),
        "{}",
        run.context()
    );
    assert_eq!(
        requests_to(&pebble, "POST", "newOrder").await,
        0,
        "no order is created"
    );
    assert!(!config.path().join("live/profile.test").exists());
}

/// `order begin` twice, then `order finish NAME`: one order at the CA, the same
/// challenge data both times, and a stored certificate at the end.
#[tokio::test]
async fn two_step_begin_twice_gives_one_order_and_finish_issues_it() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let ca = pebble.ca_bundle_path().to_str().expect("UTF-8").to_owned();
    let begin_args = [
        "order",
        "begin",
        "-d",
        "two.step.test",
        "-d",
        "*.two.step.test",
        "--challenge",
        "dns-01",
        "--server",
        pebble.directory_url(),
        "--ca-bundle",
        &ca,
        "--agree-tos",
    ];
    let schema: Value = serde_json::from_str(
        &fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/order-v1.json"))
            .expect("order schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");

    let first = command(config.path(), &begin_args).await;
    first.assert_exit(0);
    let first = first.json();
    assert!(
        validator.is_valid(&first),
        "order document breaks its schema: {first}"
    );
    assert_eq!(first["status"], "pending");
    assert_eq!(first["resumed"], false);
    assert_eq!(first["name"], "two.step.test");
    let record = "_acme-challenge.two.step.test";
    let values = first["challenge_data_dns"][record]
        .as_array()
        .unwrap_or_else(|| panic!("no challenge_data_dns for {record}: {first}"));
    assert_eq!(
        values.len(),
        2,
        "wildcard and apex share the record: {first}"
    );
    assert_eq!(
        first["challenge_data"]["*.two.step.test"]["dns-01"]["record"],
        record
    );

    let second = command(config.path(), &begin_args).await;
    second.assert_exit(0);
    let second = second.json();
    assert_eq!(second["resumed"], true, "{second}");
    assert_eq!(second["order_url"], first["order_url"]);
    assert_eq!(second["challenges"], first["challenges"]);
    assert_eq!(
        pebble.requests_logged("POST", "/order-plz"),
        1,
        "a second order was created"
    );

    for value in values {
        pebble
            .set_txt(&format!("{record}."), value.as_str().expect("a string"))
            .await;
    }
    let finished = command(config.path(), &["order", "finish", "two.step.test"]).await;
    finished.assert_exit(0);
    let certificate = finished.json();
    assert_eq!(certificate["name"], "two.step.test");
    let cert = config.path().join("live/two.step.test/cert.pem");
    let der = leaf_of(&cert);
    let mut names = certs::dns_names(&der);
    names.sort();
    assert_eq!(names, ["*.two.step.test", "two.step.test"]);
    assert!(
        !config.path().join("orders/two.step.test.json").exists(),
        "the pending order was not forgotten"
    );
    let again = command(config.path(), &["order", "finish", "two.step.test"]).await;
    again.assert_exit(2);
}

/// A pending order the CA no longer knows (expired, deleted) is replaced by a new
/// one instead of being handed out again.
#[tokio::test]
async fn two_step_begin_replaces_an_order_the_ca_no_longer_has() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let ca = pebble.ca_bundle_path().to_str().expect("UTF-8").to_owned();
    let begin_args = [
        "order",
        "begin",
        "-d",
        "gone.test",
        "--challenge",
        "dns-01",
        "--server",
        pebble.directory_url(),
        "--ca-bundle",
        &ca,
        "--agree-tos",
    ];
    let first = command(config.path(), &begin_args).await;
    first.assert_exit(0);
    let first = first.json();
    let state_path = config.path().join("orders/gone.test.json");
    let mut state = read_json(&state_path);
    let url = first["order_url"].as_str().expect("order_url");
    state["order_url"] = json!(format!("{url}-no-such-order"));
    fs::write(&state_path, state.to_string()).expect("rewrite the order state");

    let second = command(config.path(), &begin_args).await;
    second.assert_exit(0);
    let second = second.json();
    assert_eq!(second["resumed"], false, "{second}");
    assert_ne!(second["order_url"], first["order_url"]);
    assert_eq!(pebble.requests_logged("POST", "/order-plz"), 2);
}
