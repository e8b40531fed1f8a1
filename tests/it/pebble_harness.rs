//! The harness works on its own, before any `acme-bridge` code is involved.

use crate::harness::Pebble;

#[tokio::test]
async fn pebble_serves_a_directory_and_a_root() {
    let pebble = Pebble::start().await;

    let directory = pebble.directory().await;
    for resource in ["newNonce", "newAccount", "newOrder"] {
        assert!(
            directory[resource]
                .as_str()
                .is_some_and(|url| url.starts_with("https://")),
            "directory has no {resource}: {directory}"
        );
    }

    let roots = pebble.roots_pem().await;
    assert!(
        roots.contains("-----BEGIN CERTIFICATE-----"),
        "/roots/0 is not a PEM certificate: {roots}"
    );
    assert!(
        pebble.ca_bundle_path().is_file(),
        "the CA bundle for --ca-bundle exists"
    );
}

#[tokio::test]
async fn challtestsrv_serves_published_txt_records_and_records_queries() {
    let pebble = Pebble::start().await;
    let name = "_acme-challenge.harness.test.";

    pebble.set_txt(name, "first").await;
    pebble.set_txt(name, "second").await;
    let mut values = pebble.txt_lookup(name);
    values.sort();
    assert_eq!(values, ["first", "second"], "set-txt appends values");

    let history = pebble
        .dns_request_history("_acme-challenge.harness.test")
        .await;
    assert!(
        history
            .iter()
            .any(|event| event["Question"]["Name"] == name && event["Question"]["Qtype"] == 16),
        "the TXT query shows up in the request history: {history:?}"
    );
    assert_eq!(
        pebble.txt_queries_for("_acme-challenge.harness.test").await,
        1
    );

    pebble.clear_txt(name).await;
    assert!(
        pebble.txt_lookup(name).is_empty(),
        "clear-txt removes all values"
    );
}

#[tokio::test]
async fn two_instances_run_side_by_side() {
    let first = Pebble::start().await;
    let second = Pebble::start().await;
    assert_ne!(first.directory_url(), second.directory_url());
    assert_ne!(first.roots_pem().await, second.roots_pem().await);
}

#[tokio::test]
async fn pebble_requests_are_visible_in_its_log() {
    let pebble = Pebble::start().await;
    let directory = pebble.directory().await;
    let new_nonce = directory["newNonce"].as_str().expect("newNonce");
    assert_eq!(pebble.requests_logged("HEAD", new_nonce), 0);
    let (status, _) = pebble.http().get(new_nonce).await;
    assert!(status.is_success(), "GET newNonce -> {status}");
    assert_eq!(
        pebble.requests_logged("GET", new_nonce),
        1,
        "{}",
        pebble.pebble_log()
    );
}

#[tokio::test]
async fn builder_options_reach_pebble() {
    let pebble = Pebble::builder()
        .nonce_reject_percent(37)
        .authz_reuse_percent(12)
        .certificate_validity_period(3600)
        .start()
        .await;
    let log = pebble.pebble_log();
    for expected in [
        "reject 37% of good nonces",
        "authz reuse for each identifier 12% of the time",
        "validity period of 3600 seconds",
    ] {
        assert!(
            log.contains(expected),
            "Pebble's log lacks {expected:?}:\n{log}"
        );
    }
}
