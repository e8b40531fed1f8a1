//! `acme-bridge renew` end to end against real Pebbles: certificates issued in
//! handler and JSON mode are renewed unattended with the options they were issued
//! with; what is not due is left alone (and its dehydrated hook hears
//! `unchanged_cert`); a certificate whose hook fails does not stop the others;
//! JSON-mode renewals run side by side on one stdin and stdout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::certs;
use crate::consumer::{self, Bridge, Challenge};
use crate::handler_mode::{self, DEHYDRATED_HOOK, DEPLOY_HOOK, Hooks};
use crate::harness::Pebble;
use crate::lifecycle::{Command, command_with_env};

/// A dehydrated hook whose DNS provider stopped taking its credentials: it records
/// its calls like the others and refuses to deploy.
const REFUSING_HOOK: &str = r#"#!/usr/bin/env bash
printf '%s\t%s\n' "refusing-$1" "${2:-}" >> "${HOOK_LOG}"
if [[ "$1" == deploy_challenge ]]; then
    echo "the DNS provider rejected our API token" >&2
    exit 1
fi
exit 0
"#;

/// `acme-bridge --config-dir CONFIG renew ARGS…` with stdin closed, as a timer runs it.
async fn renew(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut all = vec!["renew"];
    all.extend_from_slice(args);
    command_with_env(config, &all, env).await
}

/// Where `live/NAME/cert.pem` points, e.g. `../../archive/NAME/cert2.pem`.
fn cert_link(config: &Path, name: &str) -> PathBuf {
    let link = config.join("live").join(name).join("cert.pem");
    std::fs::read_link(&link).unwrap_or_else(|e| panic!("{} is not a link: {e}", link.display()))
}

fn version_link(name: &str, version: u32) -> PathBuf {
    PathBuf::from(format!("../../archive/{name}/cert{version}.pem"))
}

/// The live leaf's serial (hex) and validity (Unix seconds).
fn live_leaf(config: &Path, name: &str) -> (String, i64, i64) {
    let path = config.join("live").join(name).join("cert.pem");
    let der = certs::pem_certificates_in(&path)
        .first()
        .unwrap_or_else(|| panic!("{} holds no certificate", path.display()))
        .to_vec();
    let (not_before, not_after) = certs::validity(&der);
    (certs::serial_hex(&der), not_before, not_after)
}

/// The live certificate verifies against `pebble`'s roots, for `name`.
async fn assert_verifies(pebble: &Pebble, config: &Path, name: &str) {
    let live = config.join("live").join(name);
    let leaf = certs::pem_certificates_in(&live.join("cert.pem"));
    let intermediates = certs::pem_certificates_in(&live.join("chain.pem"));
    let roots = pebble.roots_pem().await;
    certs::verify_chain(&leaf[0], &intermediates, roots.as_bytes(), name)
        .unwrap_or_else(|e| panic!("{name}: the chain does not verify: {e}"));
}

/// `acme-bridge renew ARGS…` in JSON mode: a reply no run can claim first (it is
/// reported, nothing else happens to it), then every challenge deployed through
/// challtestsrv and answered, until `certificates` certificates arrived.
async fn renew_json(
    pebble: &Pebble,
    config: &Path,
    args: &[&str],
    certificates: usize,
) -> consumer::Finished {
    let mut all = vec![
        OsString::from("--config-dir"),
        config.into(),
        "renew".into(),
    ];
    all.extend(args.iter().map(OsString::from));
    let mut bridge = Bridge::spawn(all);
    bridge
        .send_raw(r#"{"type":"ready","id":"nobody.test/c1"}"#)
        .await;
    let mut seen = 0;
    while seen < certificates {
        let Some(message) = bridge.next_message().await else {
            break;
        };
        match message["type"].as_str() {
            Some("challenge") => {
                let challenge = Challenge(message.clone());
                challenge.publish(pebble).await;
                bridge.ready(challenge.id()).await;
            }
            Some("certificate") => seen += 1,
            _ => {}
        }
    }
    bridge.finish().await
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[tokio::test]
async fn renew_replaces_what_is_due_keeps_the_rest_and_survives_a_failing_hook() {
    const LIFETIME: i64 = 15;
    // Short-lived certificates from one CA, long-lived ones from another; no
    // authorization reuse, so every renewal really presents its challenges.
    let short = Pebble::builder()
        .certificate_validity_period(LIFETIME as u64)
        .authz_reuse_percent(0)
        .start()
        .await;
    let long = Pebble::builder().authz_reuse_percent(0).start().await;
    let hooks = Hooks::new();
    let hook = hooks.script("hook", DEHYDRATED_HOOK);
    let refusing = hooks.script("refusing-hook", DEHYDRATED_HOOK);
    let deploy = hooks.script("deploy", DEPLOY_HOOK);
    let config = handler_mode::config_dir();
    let config = config.path();
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    for (pebble, name, hook) in [
        (&long, "kept.test", &hook),
        (&short, "due.test", &hook),
        (&short, "broken.test", &refusing),
    ] {
        let run = handler_mode::run_handler(
            pebble,
            config,
            &hooks,
            &[
                "-d",
                name,
                "--handler",
                &path(hook),
                "--deploy-hook",
                &path(&deploy),
            ],
            &[],
        )
        .await;
        run.assert_exit(0);
    }
    // Since then, the DNS provider stopped taking broken.test's hook's token.
    hooks.script("refusing-hook", REFUSING_HOOK);
    let (due_serial, not_before, not_after) = live_leaf(config, "due.test");
    let (broken_serial, ..) = live_leaf(config, "broken.test");
    let (kept_serial, ..) = live_leaf(config, "kept.test");

    // A third of the lifetime left: due. (The lifetime rule decides: Pebble offers no
    // ARI.)
    let due_at = not_after - (not_after - not_before) / 3;
    while OffsetDateTime::now_utc().unix_timestamp() <= due_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hook_log = path(&hooks.log);
    let challtestsrv = short.challtestsrv_url();
    let run = renew(
        config,
        &[],
        &[("HOOK_LOG", &hook_log), ("CHALLTESTSRV", &challtestsrv)],
    )
    .await;

    // broken.test failed: a hook failure is exit code 4, and the log says which.
    assert_eq!(run.status.code(), Some(4), "{}", run.context());
    assert!(
        run.stderr.contains("1 renewed, 1 not due, 1 failed") && run.stderr.contains("broken.test"),
        "{}",
        run.context()
    );
    assert!(run.stdout.is_empty(), "{}", run.context());

    // due.test: a new certificate from its CA, the live links moved to version 2,
    // the same mode and hooks as before, and the deploy hook ran for it.
    assert_eq!(
        cert_link(config, "due.test"),
        version_link("due.test", 2),
        "{}",
        run.context()
    );
    let (renewed_serial, renewed_not_before, _) = live_leaf(config, "due.test");
    assert_ne!(renewed_serial, due_serial, "{}", run.context());
    assert!(renewed_not_before >= not_before);
    assert_verifies(&short, config, "due.test").await;
    let settings = read_json(&config.join("renewal/due.test.json"));
    assert_eq!(settings["mode"], "handler");
    assert_eq!(settings["mode_options"]["hooks"]["hook"], path(&hook));
    let lineage = path(&config.join("live/due.test"));
    let deployed: Vec<Vec<String>> = hooks
        .calls_of("deploy-hook")
        .into_iter()
        .filter(|call| call[0] == lineage)
        .collect();
    assert_eq!(deployed.len(), 2, "issued and renewed: {deployed:?}");
    assert_eq!(deployed[1][1], "due.test");
    let deployed_challenges = hooks.calls_of("deploy_challenge");
    assert!(
        deployed_challenges
            .iter()
            .filter(|call| call[0] == "due.test")
            .count()
            == 2,
        "the renewal presented its challenge through the stored hook: {deployed_challenges:?}"
    );

    // kept.test: not due, untouched, and its hook heard `unchanged_cert`.
    assert_eq!(cert_link(config, "kept.test"), version_link("kept.test", 1));
    assert_eq!(live_leaf(config, "kept.test").0, kept_serial);
    let kept_live = config.join("live/kept.test");
    assert_eq!(
        hooks.calls_of("unchanged_cert"),
        vec![vec![
            "kept.test".to_owned(),
            path(&kept_live.join("privkey.pem")),
            path(&kept_live.join("cert.pem")),
            path(&kept_live.join("fullchain.pem")),
            path(&kept_live.join("chain.pem")),
        ]],
        "{}",
        run.context()
    );

    // broken.test: its hook refused, nothing was answered, the last good
    // certificate stays in place, and no deploy hook ran for it again.
    assert!(
        hooks
            .calls_of("refusing-deploy_challenge")
            .iter()
            .any(|call| call[0] == "broken.test"),
        "{}",
        run.context()
    );
    assert_eq!(
        cert_link(config, "broken.test"),
        version_link("broken.test", 1)
    );
    assert_eq!(live_leaf(config, "broken.test").0, broken_serial);
    let broken_lineage = path(&config.join("live/broken.test"));
    assert_eq!(
        hooks
            .calls_of("deploy-hook")
            .iter()
            .filter(|call| call[0] == broken_lineage)
            .count(),
        1,
        "only the first issuance was deployed"
    );
}

#[tokio::test]
async fn renew_runs_json_mode_certificates_side_by_side_with_distinguishable_messages() {
    let pebble = Pebble::builder().authz_reuse_percent(0).start().await;
    let config = handler_mode::config_dir();
    let config = config.path();
    let names = ["a.test", "b.test"];
    for name in names {
        consumer::issue_ok(&pebble, config, &["-d", name]).await;
    }

    let run = renew_json(
        &pebble,
        config,
        &["--force", "--parallel", "2"],
        names.len(),
    )
    .await;
    run.assert_exit(0);

    // Both runs began before either ended: they ran side by side.
    let types: Vec<(&str, &str)> = run
        .messages
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let first_certificate = types
        .iter()
        .position(|(t, _)| *t == "certificate")
        .unwrap_or_else(|| panic!("no certificate\n{}", run.context()));
    for name in names {
        assert!(
            types[..first_certificate].contains(&("hello", name)),
            "{name}'s hello came before the first certificate\n{}",
            run.context()
        );
    }
    // Every message of a run names its certificate; challenge ids carry the name.
    for message in &run.messages {
        match message["type"].as_str() {
            Some("hello" | "challenge" | "awaiting" | "cleanup" | "certificate") => {
                let name = message["name"].as_str().unwrap_or("");
                assert!(names.contains(&name), "{message}\n{}", run.context());
                if let Some(id) = message["id"].as_str() {
                    assert!(id.starts_with(&format!("{name}/c")), "{message}");
                }
            }
            Some("error") => {
                assert_eq!(message["fatal"], false, "{message}");
                assert_eq!(message["kind"], "input");
                assert_eq!(message["id"], "nobody.test/c1");
                assert!(message.get("name").is_none(), "{message}");
            }
            other => panic!("unexpected message type {other:?}: {message}"),
        }
    }
    assert_eq!(run.of_type("error").len(), 1, "{}", run.context());
    for name in names {
        let certificate = run
            .of_type("certificate")
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no certificate for {name}\n{}", run.context()));
        assert_eq!(certificate["version"], 2);
        let cleanups = run
            .of_type("cleanup")
            .into_iter()
            .filter(|c| c["name"] == name)
            .count();
        assert_eq!(cleanups, 1, "{name}: one challenge, one cleanup");
        assert_eq!(cert_link(config, name), version_link(name, 2));
        assert_verifies(&pebble, config, name).await;
    }
}

#[tokio::test]
async fn a_signal_during_renew_cleans_up_and_keeps_the_last_good_certificate() {
    let pebble = Pebble::builder().authz_reuse_percent(0).start().await;
    let config = handler_mode::config_dir();
    let config = config.path();
    consumer::issue_ok(&pebble, config, &["-d", "sig.test"]).await;
    let (serial, ..) = live_leaf(config, "sig.test");

    let mut bridge = Bridge::spawn([
        OsString::from("--config-dir"),
        config.into(),
        "renew".into(),
        "--force".into(),
    ]);
    let announced = bridge.until_awaiting().await;
    assert_eq!(announced.len(), 1);
    bridge.terminate();
    let run = bridge.finish().await;

    run.assert_exit(5);
    let cleanup = run.cleanup_for(announced[0].id());
    assert_eq!(cleanup["outcome"], "not_validated", "{}", run.context());
    assert_eq!(cleanup["name"], "sig.test");
    let error = run.fatal_error();
    assert_eq!(error["kind"], "interrupted", "{}", run.context());
    assert_eq!(error["name"], "sig.test");
    assert_eq!(cert_link(config, "sig.test"), version_link("sig.test", 1));
    assert_eq!(live_leaf(config, "sig.test").0, serial);

    // Nothing was left behind: the next renewal goes through.
    let again = renew_json(&pebble, config, &["--force"], 1).await;
    again.assert_exit(0);
    assert_eq!(cert_link(config, "sig.test"), version_link("sig.test", 2));
}

#[tokio::test]
async fn a_corrupt_certificate_is_reported_on_its_own_by_list_plan_and_renew() {
    let pebble = Pebble::start().await;
    let config = handler_mode::config_dir();
    let config = config.path();
    for name in ["bad.test", "good.test"] {
        consumer::issue_ok(&pebble, config, &["-d", name]).await;
    }
    // Someone deleted bad.test's archive: its live links point nowhere.
    std::fs::remove_dir_all(config.join("archive/bad.test")).expect("remove the archive");

    for args in [&["list"][..], &["plan"][..]] {
        let run = command_with_env(config, args, &[]).await;
        assert_eq!(run.status.code(), Some(0), "{}", run.context());
        let doc: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
        let names: Vec<&str> = doc["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["good.test"], "{}", run.context());
        assert_eq!(
            doc["unreadable"][0]["name"],
            "bad.test",
            "{}",
            run.context()
        );
        assert!(
            doc["unreadable"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no complete archive version")),
            "{}",
            run.context()
        );
    }

    // renew: good.test is looked at (not due), bad.test fails on its own (exit 1, a
    // local failure).
    let run = renew(config, &[], &[]).await;
    assert_eq!(run.status.code(), Some(1), "{}", run.context());
    assert!(
        run.stderr.contains("0 renewed, 1 not due, 1 failed") && run.stderr.contains("bad.test"),
        "{}",
        run.context()
    );
    assert_eq!(cert_link(config, "good.test"), version_link("good.test", 1));
}
