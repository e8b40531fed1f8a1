//! Handler mode end to end, against a real Pebble: hook scripts written the way users
//! write them (bash, publishing through pebble-challtestsrv's management API with
//! python3 — the stand-in for a DNS provider's or web server's API) issue real
//! certificates; failing, hanging and badly behaved hooks stop the run cleanly.
//!
//! Every hook appends one line per call to a log file (`HOOK_LOG`, tab-separated
//! fields: the hook's name and arguments), which is what the assertions read. The
//! scripts get `HOOK_LOG`, `CHALLTESTSRV` and their test switches from acme-bridge's
//! own environment, which hooks inherit.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::certs;
use crate::consumer::{self, Action, BINARY, Bridge};
use crate::harness::Pebble;

/// A guard against a hung binary; not an assertion about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A dehydrated hook script as users write them: one executable dispatching on `$1`,
/// deploying every `DOMAIN TOKEN_FILENAME TOKEN_VALUE` triple it is given (one, or
/// all of them with `HOOK_CHAIN`), ignoring hook names it does not know.
///
/// Test switches: `HOOK_FAIL=<hook>` makes that hook exit 1, `HOOK_HANG=<hook>` makes
/// it hang, `HOOK_TXT_VALUE` publishes a wrong TXT value, `HOOK_STRICT` makes unknown
/// hook names fail (the mistake dehydrated's start-up check catches).
pub(crate) const DEHYDRATED_HOOK: &str = r#"#!/usr/bin/env bash
set -euo pipefail

api() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], data=sys.argv[2].encode(), timeout=10).read()' \
        "${CHALLTESTSRV}/$1" "$2"
}

record() {
    local IFS=$'\t'
    printf '%s\n' "$*" >> "${HOOK_LOG}"
}

deploy_challenge() {
    while (( $# >= 3 )); do
        local DOMAIN="$1" TOKEN_FILENAME="$2" TOKEN_VALUE="$3"
        shift 3
        echo "deploying ${CHALLENGETYPE} for ${DOMAIN}"
        case "${CHALLENGETYPE}" in
            dns-01)
                api set-txt "{\"host\":\"_acme-challenge.${DOMAIN}.\",\"value\":\"${HOOK_TXT_VALUE:-${TOKEN_VALUE}}\"}"
                ;;
            http-01)
                if [[ -n "${WELLKNOWN:-}" ]]; then
                    record webroot-file "${TOKEN_FILENAME}" "$(cat "${WELLKNOWN}/${TOKEN_FILENAME}")"
                fi
                api add-http01 "{\"token\":\"${TOKEN_FILENAME}\",\"content\":\"${TOKEN_VALUE}\"}"
                ;;
        esac
    done
}

clean_challenge() {
    while (( $# >= 3 )); do
        local DOMAIN="$1" TOKEN_FILENAME="$2"
        shift 3
        case "${CHALLENGETYPE}" in
            dns-01) api clear-txt "{\"host\":\"_acme-challenge.${DOMAIN}.\"}" ;;
            http-01) api del-http01 "{\"token\":\"${TOKEN_FILENAME}\"}" ;;
        esac
    done
}

HANDLER="$1"
shift
record "${HANDLER}" "$@"
if [[ "${HOOK_FAIL:-}" == "${HANDLER}" ]]; then
    echo "refusing ${HANDLER} (test switch)" >&2
    exit 1
fi
if [[ "${HOOK_HANG:-}" == "${HANDLER}" ]]; then
    sleep 300
fi

case "${HANDLER}" in
    deploy_challenge) deploy_challenge "$@" ;;
    clean_challenge) clean_challenge "$@" ;;
    startup_hook)
        record environment "CHALLENGETYPE=${CHALLENGETYPE}" "KEY_ALGO=${KEY_ALGO}" \
            "altnames=${altnames}" "COMMAND=${COMMAND}" "BASEDIR=${BASEDIR}" \
            "CERTDIR=${CERTDIR}" "CONFIG=${CONFIG}" "WELLKNOWN=${WELLKNOWN:-}"
        ;;
    deploy_cert|unchanged_cert|invalid_challenge|request_failure|exit_hook) ;;
    *)
        if [[ -n "${HOOK_STRICT:-}" ]]; then
            echo "unknown hook ${HANDLER}" >&2
            exit 1
        fi
        ;;
esac
"#;

/// certbot's `--manual-auth-hook`: everything comes in `CERTBOT_*` variables; what it
/// prints reaches the cleanup hook as `CERTBOT_AUTH_OUTPUT`.
const CERTBOT_AUTH_HOOK: &str = r#"#!/usr/bin/env bash
set -euo pipefail
printf 'auth\t%s\t%s\t%s\t%s\t%s\t%s\n' "${CERTBOT_DOMAIN}" "${CERTBOT_IDENTIFIER}" \
    "${CERTBOT_TOKEN:-}" "${CERTBOT_REMAINING_CHALLENGES}" "${CERTBOT_ALL_DOMAINS}" \
    "${CERTBOT_VALIDATION}" >> "${HOOK_LOG}"
if [[ -n "${HOOK_FAIL:-}" ]]; then
    echo "cannot reach the DNS provider (test switch)" >&2
    echo "partial-${CERTBOT_DOMAIN}"
    exit 1
fi
if [[ -n "${CERTBOT_TOKEN:-}" ]]; then
    body="{\"token\":\"${CERTBOT_TOKEN}\",\"content\":\"${CERTBOT_VALIDATION}\"}"
    endpoint=add-http01
else
    body="{\"host\":\"_acme-challenge.${CERTBOT_DOMAIN}.\",\"value\":\"${CERTBOT_VALIDATION}\"}"
    endpoint=set-txt
fi
python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], data=sys.argv[2].encode(), timeout=10).read()' \
    "${CHALLTESTSRV}/${endpoint}" "${body}"
echo "record-id-for-${CERTBOT_DOMAIN}"
"#;

/// certbot's `--manual-cleanup-hook`.
const CERTBOT_CLEANUP_HOOK: &str = r#"#!/usr/bin/env bash
set -euo pipefail
printf 'cleanup\t%s\t%s\n' "${CERTBOT_DOMAIN}" "${CERTBOT_AUTH_OUTPUT}" >> "${HOOK_LOG}"
if [[ -n "${CERTBOT_TOKEN:-}" ]]; then
    body="{\"token\":\"${CERTBOT_TOKEN}\"}"
    endpoint=del-http01
else
    body="{\"host\":\"_acme-challenge.${CERTBOT_DOMAIN}.\"}"
    endpoint=clear-txt
fi
python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], data=sys.argv[2].encode(), timeout=10).read()' \
    "${CHALLTESTSRV}/${endpoint}" "${body}"
"#;

/// A certbot-external-auth handler: the command is `$1`, the message's fields are in
/// the environment as `<key>` and `cbot_<key>`, `cbot_json` holds the whole message.
/// Commands it does not implement answer `NotImplemented` and exit 1, as the
/// plugin's handlers did.
const EXTERNAL_AUTH_HANDLER: &str = r#"#!/usr/bin/env bash
set -euo pipefail

api() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], data=sys.argv[2].encode(), timeout=10).read()' \
        "${CHALLTESTSRV}/$1" "$2"
}

record() {
    local IFS=$'\t'
    printf '%s\n' "$*" >> "${HOOK_LOG}"
}

case "$1" in
    perform)
        record perform "${cmd}" "${type}" "${domain}" "${txt_domain}" "${cbot_validation}" "${key_auth}"
        api set-txt "{\"host\":\"${txt_domain}.\",\"value\":\"${validation}\"}"
        ;;
    cleanup)
        record cleanup "${cbot_cmd}" "${domain}" "${status}" "${validated}" "${cbot_json}"
        api clear-txt "{\"host\":\"_acme-challenge.${domain}.\"}"
        ;;
    deploy_cert)
        record deploy_cert "${domain}" "${cert_path}" "${key_path}" "${chain_path}" "${fullchain_path}"
        ;;
    *)
        record "$1"
        echo NotImplemented
        exit 1
        ;;
esac
"#;

/// certbot's `--deploy-hook`.
pub(crate) const DEPLOY_HOOK: &str = r#"#!/usr/bin/env bash
printf 'deploy-hook\t%s\t%s\n' "${RENEWED_LINEAGE}" "${RENEWED_DOMAINS}" >> "${HOOK_LOG}"
"#;

/// A deploy hook that fails (the web server would not reload).
const FAILING_DEPLOY_HOOK: &str = r#"#!/usr/bin/env bash
printf 'deploy-hook\t%s\t%s\n' "${RENEWED_LINEAGE}" "${RENEWED_DOMAINS}" >> "${HOOK_LOG}"
echo "nginx: configuration test failed" >&2
exit 1
"#;

/// A temporary directory of hook scripts and the log they append to.
pub(crate) struct Hooks {
    dir: TempDir,
    pub(crate) log: PathBuf,
}

impl Hooks {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("acme-bridge-hooks-")
            .tempdir()
            .expect("temporary hook directory");
        let log = dir.path().join("calls.log");
        Self { dir, log }
    }

    /// Writes an executable (0755) script.
    pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("write hook script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755");
        path
    }

    /// Every recorded call: the fields of each log line.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// The recorded calls of one hook name, without the name.
    pub(crate) fn calls_of(&self, name: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|call| call[0] == name)
            .map(|call| call[1..].to_vec())
            .collect()
    }

    /// The hook names in call order.
    fn names(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|call| call[0].clone())
            .collect()
    }
}

pub(crate) fn config_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("acme-bridge-config-")
        .tempdir()
        .expect("temporary config dir")
}

/// A finished `acme-bridge issue --mode handler` run.
pub(crate) struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
    calls: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "--- exit: {}\n--- stdout:\n{}\n--- stderr:\n{}\n--- hook calls:\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr,
            self.calls
        )
    }

    pub(crate) fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.context()
        );
    }

    /// Handler mode writes nothing on stdout: hook output goes to the log (stderr).
    fn assert_stdout_empty(&self) {
        assert!(
            self.stdout.is_empty(),
            "stdout must stay empty in handler mode\n{}",
            self.context()
        );
    }
}

/// Runs `acme-bridge --config-dir CONFIG issue --mode handler --server … --ca-bundle …
/// --agree-tos EXTRA` with `HOOK_LOG`, `CHALLTESTSRV` and `env` in its environment.
pub(crate) async fn run_handler(
    pebble: &Pebble,
    config: &Path,
    hooks: &Hooks,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut args: Vec<OsString> = vec![
        "--config-dir".into(),
        config.into(),
        "issue".into(),
        "--mode".into(),
        "handler".into(),
        "--server".into(),
        pebble.directory_url().into(),
        "--ca-bundle".into(),
        pebble.ca_bundle_path().into(),
        "--agree-tos".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(&args)
        .env_remove("ACME_BRIDGE_CONFIG_DIR")
        .env_remove("ACME_BRIDGE_LOG")
        .env("HOOK_LOG", &hooks.log)
        .env("CHALLTESTSRV", pebble.challtestsrv_url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let output = tokio::time::timeout(HANG_GUARD, command.output())
        .await
        .unwrap_or_else(|_| panic!("acme-bridge {args:?} did not exit within {HANG_GUARD:?}"))
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
    Run {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
        calls: std::fs::read_to_string(&hooks.log).unwrap_or_default(),
    }
}

/// The live files of `name` verify against Pebble's root, for `domain`.
async fn assert_issued(pebble: &Pebble, config: &Path, name: &str, domain: &str, run: &Run) {
    let live = config.join("live").join(name);
    let leaf = certs::pem_certificates_in(&live.join("cert.pem"));
    let intermediates = certs::pem_certificates_in(&live.join("chain.pem"));
    assert_eq!(leaf.len(), 1, "{}", run.context());
    let roots = pebble.roots_pem().await;
    certs::verify_chain(&leaf[0], &intermediates, roots.as_bytes(), domain)
        .unwrap_or_else(|e| panic!("the chain does not verify: {e}\n{}", run.context()));
}

fn is_base64url(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

// --- dehydrated ------------------------------------------------------------------------

#[tokio::test]
async fn dehydrated_hook_issues_a_wildcard_certificate_over_dns01() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let deploy = hooks.script("deploy.sh", DEPLOY_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "hooked.test",
            "-d",
            "*.hooked.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
            "--deploy-hook",
            deploy.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(&pebble, config.path(), "hooked.test", "x.hooked.test", &run).await;
    assert!(
        run.stderr
            .contains("[deploy_challenge hooked.test] deploying dns-01 for hooked.test"),
        "the hook's stdout is in the log, labelled\n{}",
        run.context()
    );

    // The start-up check, then startup_hook, then the challenges, the certificate and
    // exit_hook (without ERROR).
    let names = hooks.names();
    assert_eq!(
        names.first().map(String::as_str),
        Some(
            "this_hookscript_is_broken__dehydrated_is_working_fine__please_ignore_unknown_hooks_in_your_script"
        ),
        "{}",
        run.context()
    );
    assert_eq!(names[1], "startup_hook", "{}", run.context());
    assert_eq!(names.last().map(String::as_str), Some("exit_hook"));
    assert_eq!(hooks.calls_of("exit_hook"), vec![Vec::<String>::new()]);

    let env = hooks.calls_of("environment");
    let root = path_str(&std::path::absolute(config.path()).unwrap());
    assert_eq!(
        env,
        vec![vec![
            "CHALLENGETYPE=dns-01".to_owned(),
            "KEY_ALGO=prime256v1".to_owned(),
            "altnames=hooked.test *.hooked.test".to_owned(),
            "COMMAND=sign_domains".to_owned(),
            format!("BASEDIR={root}"),
            format!("CERTDIR={root}/live"),
            format!("CONFIG={root}/renewal/hooked.test.json"),
            "WELLKNOWN=".to_owned(),
        ]],
        "{}",
        run.context()
    );

    // A wildcard and its apex: two calls for the same DOMAIN (the identifier), two
    // different TXT values; every one cleaned up.
    let deployed = hooks.calls_of("deploy_challenge");
    assert_eq!(deployed.len(), 2, "{}", run.context());
    for call in &deployed {
        assert_eq!(call.len(), 3, "{}", run.context());
        assert_eq!(call[0], "hooked.test");
        assert!(is_base64url(&call[1]));
        assert_eq!(call[2].len(), 43, "TOKEN_VALUE is the TXT value");
    }
    assert_ne!(deployed[0][2], deployed[1][2]);
    let mut cleaned = hooks.calls_of("clean_challenge");
    let mut expected = deployed.clone();
    cleaned.sort();
    expected.sort();
    assert_eq!(cleaned, expected, "{}", run.context());
    assert!(pebble.txt_queries_for("_acme-challenge.hooked.test").await > 0);

    // deploy_cert once per certificate, with the live files.
    let live = format!("{root}/live/hooked.test");
    let deploy_cert = hooks.calls_of("deploy_cert");
    assert_eq!(deploy_cert.len(), 1, "{}", run.context());
    assert_eq!(
        deploy_cert[0][..5],
        [
            "hooked.test".to_owned(),
            format!("{live}/privkey.pem"),
            format!("{live}/cert.pem"),
            format!("{live}/fullchain.pem"),
            format!("{live}/chain.pem"),
        ]
    );
    let timestamp: i64 = deploy_cert[0][5].parse().expect("TIMESTAMP is a number");
    assert!((timestamp - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 600);

    // --deploy-hook, certbot's convention.
    assert_eq!(
        hooks.calls_of("deploy-hook"),
        vec![vec![live.clone(), "hooked.test *.hooked.test".to_owned()]],
        "{}",
        run.context()
    );
}

#[tokio::test]
async fn hook_chain_deploys_and_cleans_every_http01_challenge_in_one_call() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "one.test",
            "-d",
            "two.test",
            "--challenge",
            "http-01",
            "--key-type",
            "ec-p384",
            "--handler",
            hook.to_str().unwrap(),
            "--hook-chain",
        ],
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(&pebble, config.path(), "one.test", "two.test", &run).await;

    let deployed = hooks.calls_of("deploy_challenge");
    assert_eq!(deployed.len(), 1, "one chained call\n{}", run.context());
    let args = &deployed[0];
    assert_eq!(args.len(), 6, "two triples\n{}", run.context());
    let mut domains = vec![args[0].clone(), args[3].clone()];
    domains.sort();
    assert_eq!(domains, ["one.test", "two.test"]);
    for triple in args.chunks(3) {
        // http-01: TOKEN_VALUE is the key authorization, TOKEN.THUMBPRINT.
        assert!(is_base64url(&triple[1]));
        assert!(
            triple[2].starts_with(&format!("{}.", triple[1])),
            "{}",
            run.context()
        );
    }
    assert_eq!(
        hooks.calls_of("clean_challenge"),
        deployed,
        "one chained cleanup with the same triples\n{}",
        run.context()
    );
    assert!(
        hooks.calls_of("environment")[0].contains(&"KEY_ALGO=secp384r1".to_owned()),
        "{}",
        run.context()
    );
}

#[tokio::test]
async fn http01_token_files_go_into_the_webroot_while_the_hook_runs() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let webroot = tempfile::tempdir().expect("document root");
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "files.test",
            "--challenge",
            "http-01",
            "--handler",
            hook.to_str().unwrap(),
            "--webroot",
            webroot.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_stdout_empty();
    let well_known = std::path::absolute(webroot.path())
        .unwrap()
        .join(".well-known/acme-challenge");
    assert!(
        hooks.calls_of("environment")[0].contains(&format!("WELLKNOWN={}", path_str(&well_known))),
        "WELLKNOWN is the challenge directory\n{}",
        run.context()
    );
    // When deploy_challenge ran, the file was there with the key authorization.
    let deployed = hooks.calls_of("deploy_challenge");
    let seen = hooks.calls_of("webroot-file");
    assert_eq!(
        seen,
        [[deployed[0][1].clone(), deployed[0][2].clone()]],
        "{}",
        run.context()
    );
    // Afterwards it is gone, with the directories acme-bridge created.
    assert!(
        !webroot.path().join(".well-known").exists(),
        "{}",
        run.context()
    );
}

#[tokio::test]
async fn a_failing_deploy_hook_stops_the_run_before_the_ca_is_asked() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "refused.test",
            "-d",
            "second.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
        ],
        &[("HOOK_FAIL", "deploy_challenge")],
    )
    .await;
    run.assert_exit(4);
    run.assert_stdout_empty();
    assert!(
        run.stderr
            .contains("refusing deploy_challenge (test switch)"),
        "the reason names the hook's stderr\n{}",
        run.context()
    );

    // The first deployment failed: the second was never attempted, nothing was
    // answered (the CA never looked up a TXT record), and the one deployed was
    // cleaned up.
    let deployed = hooks.calls_of("deploy_challenge");
    assert_eq!(deployed.len(), 1, "{}", run.context());
    assert_eq!(
        hooks.calls_of("clean_challenge"),
        deployed,
        "{}",
        run.context()
    );
    for name in ["refused.test", "second.test"] {
        assert_eq!(
            pebble
                .txt_queries_for(&format!("_acme-challenge.{name}"))
                .await,
            0,
            "{}",
            run.context()
        );
    }
    assert!(hooks.calls_of("deploy_cert").is_empty());
    let exit = hooks.calls_of("exit_hook");
    assert_eq!(exit.len(), 1, "{}", run.context());
    assert!(
        exit[0].len() == 1 && exit[0][0].contains("refusing deploy_challenge"),
        "exit_hook gets the ERROR\n{}",
        run.context()
    );
    assert!(!config.path().join("live/refused.test").exists());
}

#[tokio::test]
async fn a_hung_hook_is_killed_after_hook_timeout() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "hung.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
            "--hook-timeout",
            "2s",
        ],
        &[("HOOK_HANG", "deploy_challenge")],
    )
    .await;
    run.assert_exit(4);
    run.assert_stdout_empty();
    assert!(
        run.stderr.contains("did not finish within 2s"),
        "{}",
        run.context()
    );
    // Killed after 2 s, not after the hook's `sleep 300`.
    assert!(run.elapsed < Duration::from_secs(60), "{}", run.context());
    assert_eq!(hooks.calls_of("deploy_challenge").len(), 1);
    assert_eq!(
        hooks.calls_of("clean_challenge"),
        hooks.calls_of("deploy_challenge"),
        "cleanup ran\n{}",
        run.context()
    );
    assert_eq!(pebble.txt_queries_for("_acme-challenge.hung.test").await, 0);
}

#[tokio::test]
async fn a_hook_that_fails_unknown_names_is_refused_before_any_order() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "strict.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
        ],
        &[("HOOK_STRICT", "1")],
    )
    .await;
    run.assert_exit(2);
    run.assert_stdout_empty();
    assert!(
        run.stderr.contains(
            "Please check your hook script, it should exit cleanly without doing anything on unknown/new hooks."
        ),
        "{}",
        run.context()
    );
    assert_eq!(
        hooks.calls().len(),
        1,
        "only the check ran\n{}",
        run.context()
    );
    let directory = pebble.directory().await;
    let new_order = directory["newOrder"].as_str().expect("newOrder");
    assert_eq!(
        pebble.requests_logged("POST", new_order),
        0,
        "no order was created\n{}",
        run.context()
    );
}

#[tokio::test]
async fn invalid_challenge_receives_the_cas_json() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "wrong.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
        ],
        &[("HOOK_TXT_VALUE", "not-the-right-value")],
    )
    .await;
    run.assert_exit(4);
    run.assert_stdout_empty();
    let invalid = hooks.calls_of("invalid_challenge");
    assert_eq!(invalid.len(), 1, "{}", run.context());
    assert_eq!(invalid[0][0], "wrong.test");
    let response: Value = serde_json::from_str(&invalid[0][1])
        .unwrap_or_else(|e| panic!("RESPONSE is not JSON ({e})\n{}", run.context()));
    assert_eq!(response["status"], "invalid");
    assert_eq!(response["type"], "dns-01");
    // The CA's problem document (unauthorized, or a DNS error under load).
    assert!(
        response["error"]["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "{response}\n{}",
        run.context()
    );
    assert!(
        response["error"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{response}"
    );
    assert!(pebble.txt_queries_for("_acme-challenge.wrong.test").await > 0);
    // Then the cleanup, then exit_hook with the error.
    let names = hooks.names();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no {name} call\n{}", run.context()))
    };
    assert!(
        at("invalid_challenge") < at("clean_challenge"),
        "{}",
        run.context()
    );
    assert_eq!(
        hooks.calls_of("exit_hook").first().map(Vec::len),
        Some(1),
        "exit_hook ERROR\n{}",
        run.context()
    );
}

#[tokio::test]
async fn request_failure_reports_an_error_answered_by_the_ca() {
    let pebble = Pebble::builder()
        .config("domainBlocklist", json!(["blocked.test"]))
        .start()
        .await;
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "blocked.test",
            "--challenge",
            "dns-01",
            "--handler",
            hook.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_exit(3);
    run.assert_stdout_empty();
    let failures = hooks.calls_of("request_failure");
    assert_eq!(failures.len(), 1, "{}", run.context());
    let [status, reason, reqtype, headers] = &failures[0][..] else {
        panic!(
            "request_failure takes STATUSCODE REASON REQTYPE HEADERS\n{}",
            run.context()
        );
    };
    assert_eq!(status, "400");
    let problem: Value = serde_json::from_str(reason).expect("REASON is the CA's JSON");
    assert_eq!(
        problem["type"],
        "urn:ietf:params:acme:error:rejectedIdentifier",
        "{}",
        run.context()
    );
    assert_eq!(reqtype, "post");
    assert_eq!(headers, "");
    assert!(hooks.calls_of("deploy_challenge").is_empty());
    assert_eq!(hooks.calls_of("exit_hook")[0].len(), 1, "exit_hook ERROR");
}

#[tokio::test]
async fn a_handler_that_is_not_executable_is_a_configuration_error() {
    let config = config_dir();
    let hooks = Hooks::new();
    let hook = hooks.script("hook.sh", DEHYDRATED_HOOK);
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = tokio::process::Command::new(BINARY)
        .arg("--config-dir")
        .arg(config.path())
        .args(["issue", "--mode", "handler", "-d", "x.test", "--handler"])
        .arg(&hook)
        // Never contacted: the check comes first.
        .args(["--server", "https://127.0.0.1:9/dir", "--agree-tos"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run acme-bridge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not executable"), "{stderr}");
    assert!(output.stdout.is_empty());
}

// --- certbot ---------------------------------------------------------------------------

#[tokio::test]
async fn certbot_hooks_issue_over_http01() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let auth = hooks.script("auth.sh", CERTBOT_AUTH_HOOK);
    let cleanup = hooks.script("cleanup.sh", CERTBOT_CLEANUP_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "web1.test",
            "-d",
            "web2.test",
            "--challenge",
            "http-01",
            "--hook-style",
            "certbot",
            "--auth-hook",
            auth.to_str().unwrap(),
            "--cleanup-hook",
            cleanup.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(&pebble, config.path(), "web1.test", "web2.test", &run).await;
    assert!(
        run.stderr.contains("record-id-for-web1.test"),
        "the auth hook's stdout is logged on stderr\n{}",
        run.context()
    );

    let auths = hooks.calls_of("auth");
    assert_eq!(auths.len(), 2, "{}", run.context());
    let all_domains = auths[0][4].clone();
    let mut listed: Vec<&str> = all_domains.split(',').collect();
    listed.sort_unstable();
    assert_eq!(listed, ["web1.test", "web2.test"]);
    for (index, call) in auths.iter().enumerate() {
        let [domain, identifier, token, remaining, all, validation] = &call[..] else {
            panic!("{}", run.context());
        };
        assert_eq!(domain, identifier);
        assert!(is_base64url(token), "CERTBOT_TOKEN for http-01");
        assert!(validation.starts_with(&format!("{token}.")));
        assert_eq!(remaining, &(1 - index).to_string());
        assert_eq!(all, &all_domains);
    }
    let mut cleanups = hooks.calls_of("cleanup");
    cleanups.sort();
    assert_eq!(
        cleanups,
        [
            ["web1.test", "record-id-for-web1.test"],
            ["web2.test", "record-id-for-web2.test"],
        ],
        "the cleanup hook gets CERTBOT_AUTH_OUTPUT\n{}",
        run.context()
    );
}

#[tokio::test]
async fn a_failing_certbot_auth_hook_is_never_answered() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let auth = hooks.script("auth.sh", CERTBOT_AUTH_HOOK);
    let cleanup = hooks.script("cleanup.sh", CERTBOT_CLEANUP_HOOK);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "dns-only.test",
            "--challenge",
            "dns-01",
            "--hook-style",
            "certbot",
            "--auth-hook",
            auth.to_str().unwrap(),
            "--cleanup-hook",
            cleanup.to_str().unwrap(),
        ],
        &[("HOOK_FAIL", "1")],
    )
    .await;
    run.assert_exit(4);
    run.assert_stdout_empty();
    assert!(
        run.stderr.contains("cannot reach the DNS provider"),
        "{}",
        run.context()
    );
    let auths = hooks.calls_of("auth");
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0][3], "0", "CERTBOT_REMAINING_CHALLENGES");
    assert_eq!(auths[0][2], "", "no CERTBOT_TOKEN for dns-01");
    assert_eq!(
        hooks.calls_of("cleanup"),
        [["dns-only.test", "partial-dns-only.test"]],
        "the cleanup still runs, with what the auth hook printed\n{}",
        run.context()
    );
    assert_eq!(
        pebble
            .txt_queries_for("_acme-challenge.dns-only.test")
            .await,
        0
    );
}

// --- certbot-external-auth --------------------------------------------------------------

#[tokio::test]
async fn external_auth_handler_issues_over_dns01() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let handler = hooks.script("handler.sh", EXTERNAL_AUTH_HANDLER);
    let run = run_handler(
        &pebble,
        config.path(),
        &hooks,
        &[
            "-d",
            "ext.test",
            "-d",
            "*.ext.test",
            "--challenge",
            "dns-01",
            "--hook-style",
            "external-auth",
            "--handler",
            handler.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    run.assert_exit(0);
    run.assert_stdout_empty();
    assert_issued(&pebble, config.path(), "ext.test", "w.ext.test", &run).await;

    // NotImplemented (pre-/post- commands here) is not an error.
    assert_eq!(
        hooks.names(),
        [
            "pre-perform",
            "perform",
            "perform",
            "post-perform",
            "pre-cleanup",
            "cleanup",
            "cleanup",
            "post-cleanup",
            "deploy_cert"
        ],
        "{}",
        run.context()
    );
    let performs = hooks.calls_of("perform");
    for call in &performs {
        let [cmd, kind, domain, txt_domain, validation, key_auth] = &call[..] else {
            panic!("{}", run.context());
        };
        assert_eq!(cmd, "perform_challenge");
        assert_eq!(kind, "dns-01");
        assert_eq!(domain, "ext.test");
        assert_eq!(txt_domain, "_acme-challenge.ext.test");
        assert_eq!(validation.len(), 43);
        assert!(key_auth.contains('.'));
    }
    assert_ne!(performs[0][4], performs[1][4]);
    for call in hooks.calls_of("cleanup") {
        let [cmd, domain, status, validated, json] = &call[..] else {
            panic!("{}", run.context());
        };
        assert_eq!(
            (
                cmd.as_str(),
                domain.as_str(),
                status.as_str(),
                validated.as_str()
            ),
            ("cleanup", "ext.test", "valid", "true")
        );
        let message: Value = serde_json::from_str(json).expect("cbot_json is the message");
        assert_eq!(message["cmd"], "cleanup");
        assert_eq!(message["validated"], true);
    }
    let live = std::path::absolute(config.path())
        .unwrap()
        .join("live/ext.test");
    assert_eq!(
        hooks.calls_of("deploy_cert"),
        [[
            "ext.test".to_owned(),
            path_str(&live.join("cert.pem")),
            path_str(&live.join("privkey.pem")),
            path_str(&live.join("chain.pem")),
            path_str(&live.join("fullchain.pem")),
        ]],
        "{}",
        run.context()
    );
}

// --- --deploy-hook in another mode -----------------------------------------------------

#[tokio::test]
async fn a_failing_deploy_hook_in_json_mode_keeps_the_certificate() {
    let pebble = Pebble::start().await;
    let config = config_dir();
    let hooks = Hooks::new();
    let deploy = hooks.script("deploy.sh", FAILING_DEPLOY_HOOK);
    let mut args = consumer::base_issue_args(&pebble, config.path());
    args.extend(
        [
            "--agree-tos",
            "-d",
            "json-deploy.test",
            "--challenge",
            "dns-01",
            "--deploy-hook",
        ]
        .map(OsString::from),
    );
    args.push(deploy.clone().into());
    let mut bridge = Bridge::spawn_with_env(args, &[("HOOK_LOG", hooks.log.as_path())]);
    let challenges = bridge.until_awaiting().await;
    bridge.act(&pebble, &challenges, |_| Action::Publish).await;
    let run = bridge.finish().await;

    run.assert_exit(4);
    let live = std::path::absolute(config.path())
        .unwrap()
        .join("live/json-deploy.test");
    assert_eq!(
        run.certificate()["name"],
        "json-deploy.test",
        "the certificate is announced: it is stored\n{}",
        run.context()
    );
    assert!(live.join("fullchain.pem").is_file(), "{}", run.context());
    assert_eq!(
        hooks.calls_of("deploy-hook"),
        [[path_str(&live), "json-deploy.test".to_owned()]],
        "{}",
        run.context()
    );
    assert!(
        run.stderr.contains("nginx: configuration test failed"),
        "{}",
        run.context()
    );
}
