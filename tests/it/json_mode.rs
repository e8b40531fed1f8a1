//! JSON mode end to end, against a real Pebble: what the consumer sees, what it may
//! answer, what ends up on disk.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::certs::{self, KeyKind};
use crate::consumer::{self, Action, Bridge, Finished, base_issue_args};
use crate::harness::Pebble;

fn config_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("acme-bridge-config-")
        .tempdir()
        .expect("temporary config dir")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn rfc3339(value: &Value) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not an RFC 3339 string: {value}"));
    OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

/// Every `account.json` below `accounts/`.
fn account_files(config: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "account.json") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&config.join("accounts"), &mut found);
    found
}

/// Every directory from `accounts/` down to each `account.json`.
fn account_dirs(config: &Path) -> Vec<PathBuf> {
    let root = config.join("accounts");
    let mut dirs = vec![root.clone()];
    for file in account_files(config) {
        let mut dir = file.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == root {
                break;
            }
            dirs.push(d.clone());
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

const LIVE_FILES: [&str; 4] = ["cert", "chain", "fullchain", "privkey"];

/// Checks that `live/NAME/X.pem` is a relative link to `../../archive/NAME/X<version>.pem`.
fn assert_live_links(run: &Finished, config: &Path, name: &str, version: u32) {
    for file in LIVE_FILES {
        let link = config.join("live").join(name).join(format!("{file}.pem"));
        let meta = fs::symlink_metadata(&link)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", link.display(), run.context()));
        assert!(
            meta.file_type().is_symlink(),
            "{} is a symlink\n{}",
            link.display(),
            run.context()
        );
        let target = fs::read_link(&link).expect("read_link");
        assert_eq!(
            target,
            PathBuf::from(format!("../../archive/{name}/{file}{version}.pem")),
            "{} points into the archive with a relative path\n{}",
            link.display(),
            run.context()
        );
        assert!(
            link.is_file(),
            "{} resolves to a file\n{}",
            link.display(),
            run.context()
        );
    }
}

// --- dns-01 -------------------------------------------------------------------------

#[tokio::test]
async fn dns01_single_name_issues_a_certificate() {
    let pebble = Pebble::start().await;
    let config = config_dir();

    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "single.test", "--challenge", "dns-01"],
    )
    .await;

    let challenges = run.challenges();
    assert_eq!(challenges.len(), 1, "{}", run.context());
    assert_eq!(
        run.cleanup_for(challenges[0].id())["outcome"],
        "valid",
        "{}",
        run.context()
    );
    let certificate = run.certificate();
    assert_eq!(certificate["name"], "single.test", "{}", run.context());
    assert_eq!(certificate["domains"], json!(["single.test"]));
    for field in ["cert_path", "chain_path", "fullchain_path", "key_path"] {
        let path = run.certificate_path(field);
        assert!(
            path.is_file(),
            "{field} {} exists\n{}",
            path.display(),
            run.context()
        );
    }
    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(leaf.len(), 1, "cert.pem holds just the leaf");
    assert_eq!(certs::dns_names(&leaf[0]), ["single.test"]);
    assert!(
        pebble.txt_queries_for("_acme-challenge.single.test").await > 0,
        "the CA looked up the TXT record"
    );
}

#[tokio::test]
async fn dns01_challenge_carries_record_name_and_digest() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "digest.test", "--challenge", "dns-01"],
    );
    let challenges = bridge.until_awaiting().await;

    let hello = bridge.messages()[0].clone();
    assert_eq!(hello["program"], "acme-bridge");
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(hello["name"], "digest.test");
    assert_eq!(hello["domains"], json!(["digest.test"]));
    assert_eq!(hello["challenge_type"], "dns-01");
    assert_eq!(
        hello["timeout_seconds"], 600,
        "the default --timeout is 10m"
    );

    assert_eq!(challenges.len(), 1);
    let challenge = &challenges[0];
    assert_eq!(challenge.domain(), "digest.test");
    assert_eq!(challenge.identifier(), "digest.test");
    assert!(!challenge.wildcard());
    assert_eq!(challenge.challenge_type(), "dns-01");
    assert!(
        challenge
            .key_authorization()
            .starts_with(&format!("{}.", challenge.token())),
        "key authorization = token '.' thumbprint: {:?}",
        challenge.0
    );
    assert_eq!(challenge.dns_name(), "_acme-challenge.digest.test.");
    assert_eq!(
        challenge.dns_value(),
        URL_SAFE_NO_PAD.encode(certs::sha256(challenge.key_authorization().as_bytes())),
        "TXT value = base64url(SHA-256(key authorization))"
    );
    rfc3339(&challenge.0["deadline"]);

    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
}

#[tokio::test]
async fn dns01_wildcard_and_apex_share_a_record() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "*.shared.test",
            "-d",
            "shared.test",
            "--challenge",
            "dns-01",
        ],
    );
    let challenges = bridge.until_awaiting().await;

    assert_eq!(
        bridge.messages()[0]["name"],
        "shared.test",
        "cert name is the wildcard's base"
    );
    assert_eq!(challenges.len(), 2, "one challenge per name");
    let wildcard = challenges
        .iter()
        .find(|c| c.domain() == "*.shared.test")
        .expect("a challenge for *.shared.test");
    let apex = challenges
        .iter()
        .find(|c| c.domain() == "shared.test")
        .expect("a challenge for shared.test");
    assert!(wildcard.wildcard());
    assert!(!apex.wildcard());
    assert_eq!(wildcard.identifier(), "shared.test");
    assert_eq!(apex.identifier(), "shared.test");
    assert_eq!(wildcard.dns_name(), "_acme-challenge.shared.test.");
    assert_eq!(
        apex.dns_name(),
        wildcard.dns_name(),
        "both use the same record"
    );
    assert_ne!(
        apex.dns_value(),
        wildcard.dns_value(),
        "with different values"
    );

    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let mut published = pebble.txt_lookup("_acme-challenge.shared.test.");
    published.sort();
    let mut expected = vec![apex.dns_value().to_owned(), wildcard.dns_value().to_owned()];
    expected.sort();
    assert_eq!(published, expected, "the consumer appended both values");

    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    for challenge in &challenges {
        assert_eq!(
            run.cleanup_for(challenge.id())["outcome"],
            "valid",
            "{}",
            run.context()
        );
    }
    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(certs::dns_names(&leaf[0]), ["*.shared.test", "shared.test"]);
    assert!(
        config.path().join("live/shared.test/cert.pem").is_file(),
        "{}",
        run.context()
    );
}

// --- http-01 and tls-alpn-01 ----------------------------------------------------------

#[tokio::test]
async fn http01_consumer_serves_the_token_with_the_key_authorization() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "web.test", "--challenge", "http-01"],
    );
    let challenges = bridge.until_awaiting().await;
    assert_eq!(challenges.len(), 1);
    let challenge = &challenges[0];
    let http = &challenge.0["http"];
    let token = challenge.token();
    assert_eq!(challenge.challenge_type(), "http-01");
    assert_eq!(http["path"], format!("/.well-known/acme-challenge/{token}"));
    assert_eq!(
        http["url"],
        format!("http://web.test/.well-known/acme-challenge/{token}")
    );
    assert_eq!(http["body"], challenge.key_authorization());
    assert_eq!(http["file_name"], token);
    assert!(
        challenge.0.get("dns").is_none(),
        "only the http form: {}",
        challenge.0
    );

    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    assert_eq!(run.cleanup_for(challenge.id())["outcome"], "valid");
    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(certs::dns_names(&leaf[0]), ["web.test"]);
}

#[tokio::test]
async fn tls_alpn01_challenge_carries_a_ready_certificate_and_digest() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "alpn.test", "--challenge", "tls-alpn-01"],
    );
    let challenges = bridge.until_awaiting().await;
    assert_eq!(challenges.len(), 1);
    let challenge = &challenges[0];
    let alpn = &challenge.0["tls_alpn"];
    let digest = certs::sha256(challenge.key_authorization().as_bytes());
    assert_eq!(alpn["sni"], "alpn.test");
    assert_eq!(alpn["alpn"], "acme-tls/1");
    assert_eq!(alpn["digest"], certs::hex(&digest));

    let cert_pem = alpn["certificate_pem"].as_str().expect("certificate_pem");
    let key_pem = alpn["private_key_pem"].as_str().expect("private_key_pem");
    let cert_der = certs::pem_certificates(cert_pem.as_bytes());
    assert_eq!(cert_der.len(), 1, "one validation certificate");
    assert_eq!(
        certs::dns_names(&cert_der[0]),
        ["alpn.test"],
        "exactly one SAN"
    );
    let parsed = certs::parse(&cert_der[0]);
    let acme_identifier = parsed
        .extensions()
        .iter()
        .find(|ext| ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("an acmeIdentifier extension (RFC 8737)");
    assert!(acme_identifier.critical, "acmeIdentifier is critical");
    let mut expected_value = vec![0x04, 0x20];
    expected_value.extend_from_slice(&digest);
    assert_eq!(
        acme_identifier.value, expected_value,
        "acmeIdentifier holds OCTET STRING(SHA-256(key authorization))"
    );
    assert!(
        certs::key_matches_certificate(key_pem.as_bytes(), &cert_der[0]),
        "private_key_pem belongs to certificate_pem"
    );

    // challtestsrv builds its own certificate from host + key authorization.
    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    assert_eq!(run.cleanup_for(challenge.id())["outcome"], "valid");
    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(certs::dns_names(&leaf[0]), ["alpn.test"]);
}

// --- consumer failures ------------------------------------------------------------------

#[tokio::test]
async fn failed_reply_is_never_answered_to_the_ca() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let reason = "DNS API said 403";
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "deployed.test",
            "-d",
            "refused.test",
            "--challenge",
            "dns-01",
        ],
    );
    let challenges = bridge.until_awaiting().await;
    let (refused, deployed): (Vec<_>, Vec<_>) = challenges
        .into_iter()
        .partition(|c| c.domain() == "refused.test");
    assert_eq!((refused.len(), deployed.len()), (1, 1));

    // The healthy challenge is ready first, so the CA may well be asked about it;
    // the refused one must never reach the CA.
    bridge.act(&pebble, &deployed, |_| Action::Publish).await;
    bridge
        .act(&pebble, &refused, |_| Action::Fail(reason.to_owned()))
        .await;
    let run = bridge.finish().await;

    run.assert_exit(4);
    run.assert_protocol_shape();
    assert_eq!(
        run.cleanup_for(refused[0].id())["outcome"],
        "not_validated",
        "{}",
        run.context()
    );
    let error = run.fatal_error();
    assert_eq!(error["kind"], "challenge", "{}", run.context());
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains(reason))
            || run.stderr.contains(reason),
        "the consumer's reason is reported\n{}",
        run.context()
    );
    assert_eq!(
        pebble.txt_queries_for("_acme-challenge.refused.test").await,
        0,
        "the CA never looked for the TXT record of the failed challenge\n{}",
        run.context()
    );
}

#[tokio::test]
async fn wrong_txt_value_reports_the_cas_problem_document() {
    let pebble = Pebble::start().await;
    let config = config_dir();

    let run = consumer::run(
        &pebble,
        config.path(),
        &["-d", "wrong.test", "--challenge", "dns-01"],
        |_| Action::PublishTxt("not-the-expected-value".to_owned()),
    )
    .await;

    run.assert_exit(4);
    run.assert_protocol_shape();
    assert!(
        pebble.txt_queries_for("_acme-challenge.wrong.test").await > 0,
        "the CA was asked and looked"
    );
    let challenge = &run.challenges()[0];
    let cleanup = run.cleanup_for(challenge.id());
    assert_eq!(cleanup["outcome"], "invalid", "{}", run.context());
    assert!(
        cleanup["problem"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "the cleanup carries the CA's problem\n{}",
        run.context()
    );
    let error = run.fatal_error();
    assert_eq!(error["kind"], "challenge", "{}", run.context());
    let problem = &error["problem"];
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "the fatal error carries the CA's problem document\n{}",
        run.context()
    );
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "with the CA's detail\n{}",
        run.context()
    );
}

#[tokio::test]
async fn garbage_on_stdin_is_reported_and_the_run_still_issues() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "garbage.test", "--challenge", "dns-01"],
    );
    let challenges = bridge.until_awaiting().await;
    let id = challenges[0].id().to_owned();

    let garbage = [
        "this is not json".to_owned(),
        json!({"type": "bogus", "id": id}).to_string(),
        json!({"type": "ready", "id": format!("{id}-no-such-challenge")}).to_string(),
        json!({"type": "ready", "id": 5}).to_string(),
    ];
    for line in &garbage {
        bridge.send_raw("").await; // blank lines are ignored
        bridge.send_raw(line).await;
        let error = bridge.expect("error").await;
        assert_eq!(
            error["fatal"], false,
            "bad input is not fatal: {line} -> {error}"
        );
        assert_eq!(error["kind"], "input", "{line} -> {error}");
    }

    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;
    run.assert_exit(0);
    run.assert_protocol_shape();
    assert_eq!(
        run.non_fatal_errors().len(),
        garbage.len(),
        "one error per bad line, none for blank lines\n{}",
        run.context()
    );
    run.certificate();
}

#[tokio::test]
async fn eof_on_stdin_cleans_up_every_challenge() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "eof-a.test",
            "-d",
            "eof-b.test",
            "--challenge",
            "dns-01",
        ],
    );
    let challenges = bridge.until_awaiting().await;
    bridge.close_stdin();
    let run = bridge.finish().await;

    run.assert_exit(4);
    run.assert_protocol_shape();
    assert_eq!(challenges.len(), 2);
    for challenge in &challenges {
        assert_eq!(
            run.cleanup_for(challenge.id())["outcome"],
            "not_validated",
            "{}",
            run.context()
        );
    }
    assert_eq!(run.fatal_error()["kind"], "eof", "{}", run.context());
}

#[tokio::test]
async fn silent_consumer_times_out() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "silent.test",
            "--challenge",
            "dns-01",
            "--timeout",
            "2s",
        ],
    );
    let challenges = bridge.until_awaiting().await;
    assert_eq!(bridge.messages()[0]["timeout_seconds"], 2);
    bridge.act(&pebble, &challenges, |_| Action::Ignore).await;
    let run = bridge.finish().await; // stdin stays open until the process exits

    run.assert_exit(4);
    run.assert_protocol_shape();
    assert_eq!(
        run.cleanup_for(challenges[0].id())["outcome"],
        "not_validated"
    );
    assert_eq!(run.fatal_error()["kind"], "timeout", "{}", run.context());
}

#[tokio::test]
async fn sigterm_while_waiting_cleans_up_and_exits_5() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut bridge = Bridge::issue(
        &pebble,
        config.path(),
        &[
            "-d",
            "sig-a.test",
            "-d",
            "sig-b.test",
            "--challenge",
            "dns-01",
        ],
    );
    let challenges = bridge.until_awaiting().await;
    bridge.terminate();
    let run = bridge.finish().await;

    run.assert_exit(5);
    run.assert_protocol_shape();
    for challenge in &challenges {
        assert_eq!(
            run.cleanup_for(challenge.id())["outcome"],
            "not_validated",
            "{}",
            run.context()
        );
    }
    assert_eq!(
        run.fatal_error()["kind"],
        "interrupted",
        "{}",
        run.context()
    );
}

// --- the issued certificate and the files on disk -------------------------------------

#[tokio::test]
async fn issued_chain_verifies_against_pebble_root() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "verified.test", "--challenge", "dns-01"],
    )
    .await;

    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    let intermediates = certs::pem_certificates_in(&run.certificate_path("chain_path"));
    assert_eq!(leaf.len(), 1, "{}", run.context());
    assert!(
        !intermediates.is_empty(),
        "chain.pem holds the intermediates"
    );
    let roots = pebble.roots_pem().await;
    certs::verify_chain(&leaf[0], &intermediates, roots.as_bytes(), "verified.test")
        .unwrap_or_else(|e| panic!("the chain does not verify against /roots/0: {e}"));
    assert!(
        certs::verify_chain(&leaf[0], &intermediates, roots.as_bytes(), "other.test").is_err(),
        "and only for its own name"
    );
}

#[tokio::test]
async fn certificate_message_describes_the_issued_certificate() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "described.test",
            "-d",
            "www.described.test",
            "--challenge",
            "dns-01",
        ],
    )
    .await;

    let message = run.certificate();
    assert_eq!(message["name"], "described.test");
    assert_eq!(
        message["domains"],
        json!(["described.test", "www.described.test"])
    );
    assert_eq!(message["version"], 1);
    let live = config.path().join("live/described.test");
    for (field, file) in [
        ("cert_path", "cert.pem"),
        ("chain_path", "chain.pem"),
        ("fullchain_path", "fullchain.pem"),
        ("key_path", "privkey.pem"),
    ] {
        assert_eq!(
            run.certificate_path(field)
                .canonicalize()
                .expect("canonical path"),
            live.join(file).canonicalize().expect("canonical path"),
            "{field} names the live file\n{}",
            run.context()
        );
    }
    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(
        certs::normalize_hex(message["serial"].as_str().expect("serial")),
        certs::serial_hex(&leaf[0]),
        "serial"
    );
    let (not_before, not_after) = certs::validity(&leaf[0]);
    assert_eq!(rfc3339(&message["not_before"]).unix_timestamp(), not_before);
    assert_eq!(rfc3339(&message["not_after"]).unix_timestamp(), not_after);
    assert_eq!(
        certs::dns_names(&leaf[0]),
        ["described.test", "www.described.test"]
    );
}

#[tokio::test]
async fn live_files_are_relative_links_into_the_archive() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "layout.test", "--challenge", "dns-01"],
    )
    .await;
    assert_live_links(&run, config.path(), "layout.test", 1);

    let cert = fs::read(config.path().join("live/layout.test/cert.pem")).expect("cert.pem");
    let chain = fs::read(config.path().join("live/layout.test/chain.pem")).expect("chain.pem");
    let fullchain =
        fs::read(config.path().join("live/layout.test/fullchain.pem")).expect("fullchain.pem");
    assert_eq!(
        fullchain,
        [cert, chain].concat(),
        "fullchain = cert + chain"
    );
}

#[tokio::test]
async fn private_key_and_directories_are_private() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "private.test", "--challenge", "dns-01"],
    )
    .await;
    let root = config.path();

    assert_eq!(
        mode_of(&root.join("archive/private.test/privkey1.pem")),
        0o600,
        "privkey mode"
    );
    for dir in [
        root.join("archive/private.test"),
        root.join("live/private.test"),
    ] {
        assert_eq!(
            mode_of(&dir),
            0o700,
            "{} mode\n{}",
            dir.display(),
            run.context()
        );
    }
    let accounts = account_files(root);
    assert_eq!(accounts.len(), 1, "one account file: {accounts:?}");
    assert_eq!(mode_of(&accounts[0]), 0o600, "{}", accounts[0].display());
    for dir in account_dirs(root) {
        assert_eq!(mode_of(&dir), 0o700, "{} mode", dir.display());
    }
}

#[tokio::test]
async fn private_key_matches_the_certificate_and_defaults_to_ec_p256() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "keypair.test", "--challenge", "dns-01"],
    )
    .await;

    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    let key = fs::read(run.certificate_path("key_path")).expect("privkey.pem");
    assert!(
        certs::key_matches_certificate(&key, &leaf[0]),
        "privkey.pem belongs to cert.pem"
    );
    assert_eq!(
        certs::key_kind(&leaf[0]),
        KeyKind::Ec(certs::P256.to_owned())
    );
}

#[tokio::test]
async fn rsa2048_key_type_gives_an_rsa_2048_certificate() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "rsa.test",
            "--challenge",
            "dns-01",
            "--key-type",
            "rsa2048",
        ],
    )
    .await;

    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(certs::key_kind(&leaf[0]), KeyKind::Rsa(2048));
    let key = fs::read(run.certificate_path("key_path")).expect("privkey.pem");
    assert!(certs::key_matches_certificate(&key, &leaf[0]));
}

#[tokio::test]
async fn ec_p384_key_type_gives_a_p384_certificate() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "p384.test",
            "--challenge",
            "dns-01",
            "--key-type",
            "ec-p384",
        ],
    )
    .await;

    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(
        certs::key_kind(&leaf[0]),
        KeyKind::Ec(certs::P384.to_owned())
    );
    let key = fs::read(run.certificate_path("key_path")).expect("privkey.pem");
    assert!(certs::key_matches_certificate(&key, &leaf[0]));
}

#[tokio::test]
async fn second_issuance_reuses_the_account_and_adds_archive_version_2() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = ["-d", "again.test", "--challenge", "dns-01"];

    let first = consumer::issue_ok(&pebble, config.path(), &args).await;
    assert_eq!(first.certificate()["version"], 1);
    let accounts = account_files(config.path());
    assert_eq!(
        accounts.len(),
        1,
        "one account after the first run: {accounts:?}"
    );
    let account_before = fs::read(&accounts[0]).expect("account.json");
    let new_account = pebble.directory().await["newAccount"]
        .as_str()
        .expect("newAccount")
        .to_owned();
    let account_requests = pebble.requests_logged("POST", &new_account);

    let second = consumer::issue_ok(&pebble, config.path(), &args).await;
    assert_eq!(second.certificate()["version"], 2, "{}", second.context());
    assert_eq!(
        account_files(config.path()),
        accounts,
        "still exactly one account file"
    );
    assert_eq!(
        fs::read(&accounts[0]).expect("account.json"),
        account_before,
        "the account file is unchanged"
    );
    assert!(
        pebble.requests_logged("POST", &new_account) <= account_requests + 1,
        "at most one newAccount lookup for an existing key"
    );
    assert_live_links(&second, config.path(), "again.test", 2);
    for file in LIVE_FILES {
        let archived = config
            .path()
            .join("archive/again.test")
            .join(format!("{file}1.pem"));
        assert!(archived.is_file(), "{} is kept", archived.display());
    }
    let first_leaf =
        certs::pem_certificates_in(&config.path().join("archive/again.test/cert1.pem"));
    let second_leaf = certs::pem_certificates_in(&second.certificate_path("cert_path"));
    assert_ne!(
        certs::serial_hex(&first_leaf[0]),
        certs::serial_hex(&second_leaf[0]),
        "a new certificate"
    );
}

// --- refusals before any order ---------------------------------------------------------

#[tokio::test]
async fn second_run_for_the_same_name_fails_fast_on_the_lock() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let args = ["-d", "locked.test", "--challenge", "dns-01"];

    let mut first = Bridge::issue(&pebble, config.path(), &args);
    let challenges = first.until_awaiting().await;

    // The first run now holds the lock and waits for replies (default timeout: minutes).
    let second = Bridge::issue(&pebble, config.path(), &args).finish().await;
    second.assert_exit(1);
    let fatal_message = second
        .of_type("error")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        contains_ignoring_case(&second.stderr, "lock")
            || contains_ignoring_case(&fatal_message, "lock"),
        "the refusal mentions the lock\n{}",
        second.context()
    );
    assert!(
        second.challenges().is_empty(),
        "the second run announced no challenge\n{}",
        second.context()
    );

    first.act(&pebble, &challenges, |_| Action::Publish).await;
    let first = first.finish().await;
    first.assert_exit(0);
    first.assert_protocol_shape();
}

#[tokio::test]
async fn fresh_account_without_agree_tos_shows_the_terms() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let directory = pebble.directory().await;
    let terms = directory["meta"]["termsOfService"]
        .as_str()
        .expect("Pebble publishes terms of service");

    let mut args = base_issue_args(&pebble, config.path());
    args.extend(["-d", "terms.test", "--challenge", "dns-01"].map(Into::into));
    let run = Bridge::spawn(args).finish().await;

    run.assert_exit(2);
    let messages: String = run
        .of_type("error")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        run.stderr.contains(terms) || messages.contains(terms),
        "the terms of service URL {terms} is shown\n{}",
        run.context()
    );
    assert!(
        account_files(config.path()).is_empty(),
        "no account was stored\n{}",
        run.context()
    );
    let new_account = directory["newAccount"].as_str().expect("newAccount");
    let new_order = directory["newOrder"].as_str().expect("newOrder");
    // A fresh config dir has no account key, so any newAccount request would be an
    // attempt to create an account the user did not agree to.
    assert_eq!(
        pebble.requests_logged("POST", new_account),
        0,
        "no account creation was attempted"
    );
    assert_eq!(
        pebble.requests_logged("POST", new_order),
        0,
        "no order was created"
    );
}

#[tokio::test]
async fn wildcard_with_http01_is_refused_before_any_order() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let new_order = pebble.directory().await["newOrder"]
        .as_str()
        .expect("newOrder")
        .to_owned();

    let run = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "*.nowild.test", "--challenge", "http-01"],
    )
    .finish()
    .await;

    run.assert_exit(2);
    assert!(
        run.challenges().is_empty(),
        "no challenge was announced\n{}",
        run.context()
    );
    assert_eq!(
        pebble.requests_logged("POST", &new_order),
        0,
        "no order was created\n{}",
        pebble.pebble_log()
    );
    assert!(
        contains_ignoring_case(&run.stderr, "dns-01")
            || run
                .of_type("error")
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains("dns-01"))),
        "the refusal says wildcards need dns-01\n{}",
        run.context()
    );
}

// --- a CA that rejects nonces -----------------------------------------------------------

#[tokio::test]
async fn bad_nonce_rejections_are_retried() {
    let pebble = Pebble::builder().nonce_reject_percent(50).start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &["-d", "nonce.test", "--challenge", "dns-01"],
    )
    .await;
    run.certificate();
}

// --- options --------------------------------------------------------------------------

#[tokio::test]
async fn cert_name_option_names_the_lineage() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let run = consumer::issue_ok(
        &pebble,
        config.path(),
        &[
            "-d",
            "first.test",
            "-d",
            "second.test",
            "--challenge",
            "dns-01",
            "--cert-name",
            "my-lineage",
        ],
    )
    .await;

    assert_eq!(run.messages[0]["name"], "my-lineage");
    assert_eq!(run.certificate()["name"], "my-lineage");
    assert_live_links(&run, config.path(), "my-lineage", 1);
    assert!(
        !config.path().join("live/first.test").exists(),
        "the first domain does not name the lineage when --cert-name is given"
    );
}

#[tokio::test]
async fn config_dir_can_come_from_the_environment() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut args = consumer::issue_args(&pebble); // no --config-dir
    args.extend(["--agree-tos", "-d", "envdir.test", "--challenge", "dns-01"].map(Into::into));
    let mut bridge = Bridge::spawn_with_env(args, &[("ACME_BRIDGE_CONFIG_DIR", config.path())]);
    let challenges = bridge.until_awaiting().await;
    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;

    run.assert_exit(0);
    assert_live_links(&run, config.path(), "envdir.test", 1);
}

#[tokio::test]
async fn verbose_logs_stay_on_stderr() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let mut args = vec![std::ffi::OsString::from("-v")];
    args.extend(base_issue_args(&pebble, config.path()));
    args.extend(["--agree-tos", "-d", "verbose.test", "--challenge", "dns-01"].map(Into::into));
    let mut bridge = Bridge::spawn(args);
    // Every stdout line is checked against the output schema as it is read.
    let challenges = bridge.until_awaiting().await;
    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;

    run.assert_exit(0);
    run.assert_protocol_shape();
    assert!(!run.stderr.is_empty(), "-v logs something on stderr");
}

// --- the CA says no -----------------------------------------------------------------------

#[tokio::test]
async fn ca_refusal_is_reported_with_its_problem_document_and_exit_3() {
    let pebble = Pebble::builder()
        .config("domainBlocklist", json!(["blocked.test"]))
        .start()
        .await;
    let config = config_dir();

    let run = Bridge::issue(
        &pebble,
        config.path(),
        &["-d", "blocked.test", "--challenge", "dns-01"],
    )
    .finish()
    .await;

    run.assert_exit(3);
    run.assert_protocol_shape();
    assert!(run.challenges().is_empty(), "{}", run.context());
    let error = run.fatal_error();
    assert_eq!(error["kind"], "ca", "{}", run.context());
    assert_eq!(
        error["problem"]["type"],
        "urn:ietf:params:acme:error:rejectedIdentifier",
        "the CA's problem type, unchanged\n{}",
        run.context()
    );
    assert!(
        error["problem"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("blocked.test")),
        "the CA's detail, unchanged\n{}",
        run.context()
    );
}
