//! acme2certifier, the second ACME server: the harness proves itself (directory, profiles
//! that really change the certificate, ARI), and acme-bridge issues from it and renews
//! by its ARI window.
//!
//! The harness checks (profiles, ARI) drive acme2certifier with instant-acme directly, so
//! they do not depend on acme-bridge options; the issuance tests run the real binary.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::extensions::ParsedExtension;

use crate::a2c_harness::{
    Acme2Certifier, DEFAULT_VALIDITY_DAYS, PROFILE_CLASSIC, PROFILE_SHORTLIVED,
    SHORTLIVED_VALIDITY_DAYS,
};
use crate::certs;
use crate::consumer::{Bridge, Finished, issue_args_for};

const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------
// The harness proves itself
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn directory_advertises_renewal_info_and_profiles() {
    let a2c = Acme2Certifier::builder().profiles(true).start().await;
    let directory = a2c.directory().await;
    let origin = a2c
        .directory_url()
        .strip_suffix("/directory")
        .expect("directory URL ends with /directory");
    assert!(origin.starts_with("https://127.0.0.1:"), "{origin}");
    for key in [
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "renewalInfo",
    ] {
        let url = directory[key]
            .as_str()
            .unwrap_or_else(|| panic!("directory without {key}: {directory}"));
        assert!(
            url.starts_with(&format!("{origin}/")),
            "{key} is an https URL on the server itself: {url}"
        );
    }
    let mut profiles: Vec<&str> = directory["meta"]["profiles"]
        .as_object()
        .unwrap_or_else(|| panic!("directory without meta.profiles: {directory}"))
        .keys()
        .map(String::as_str)
        .collect();
    profiles.sort_unstable();
    assert_eq!(
        profiles,
        [PROFILE_CLASSIC, PROFILE_SHORTLIVED],
        "{directory}"
    );
}

#[tokio::test]
async fn directory_without_profiles_offers_none() {
    let a2c = Acme2Certifier::start().await;
    let directory = a2c.directory().await;
    assert!(directory["renewalInfo"].is_string(), "{directory}");
    assert!(
        directory["meta"].get("profiles").is_none(),
        "no profiles configured, none advertised: {directory}"
    );
}

#[tokio::test]
async fn profiles_issue_certificates_of_their_own_lifetime() {
    let a2c = Acme2Certifier::builder().profiles(true).start().await;
    let account = account(&a2c).await;

    let classic = issue_with(
        &a2c,
        &account,
        "classic.example.test",
        Some(PROFILE_CLASSIC),
    )
    .await;
    let shortlived = issue_with(
        &a2c,
        &account,
        "short.example.test",
        Some(PROFILE_SHORTLIVED),
    )
    .await;
    let unnamed = issue_with(&a2c, &account, "none.example.test", None).await;
    for (chain, days) in [
        (&classic, DEFAULT_VALIDITY_DAYS),
        (&shortlived, SHORTLIVED_VALIDITY_DAYS),
        (&unnamed, DEFAULT_VALIDITY_DAYS),
    ] {
        let (not_before, not_after) = certs::validity(&chain[0]);
        assert_eq!(
            not_after - not_before,
            i64::from(days) * DAY,
            "lifetime of {:?}",
            certs::dns_names(&chain[0])
        );
    }

    let refused = try_issue_with(&account, "bad.example.test", Some("no-such-profile"))
        .await
        .expect_err("an unknown profile is refused");
    match refused {
        instant_acme::Error::Api(problem) => assert_eq!(
            problem.r#type.as_deref(),
            Some("urn:ietf:params:acme:error:invalidProfile"),
            "{problem:?}"
        ),
        other => panic!("expected an invalidProfile problem, got {other:?}"),
    }
}

#[tokio::test]
async fn issued_certificates_carry_the_issuing_ca_key_identifier() {
    let a2c = Acme2Certifier::start().await;
    let account = account(&a2c).await;
    let chain = issue_with(&a2c, &account, "aki.example.test", None).await;

    let issuing = certs::pem_certificates(a2c.issuing_ca_pem().as_bytes());
    let ski = subject_key_identifier(&issuing[0]).expect("the issuing CA has an SKI");
    let aki = authority_key_identifier(&chain[0]).expect("issued certificates have an AKI");
    assert_eq!(certs::hex(&aki), certs::hex(&ski));
    certs::verify_chain(
        &chain[0],
        &chain[1..],
        a2c.issuing_ca_pem().as_bytes(),
        "aki.example.test",
    )
    .expect("the issued chain verifies against the issuing CA");
}

#[tokio::test]
async fn renewal_info_window_starts_at_the_configured_threshold() {
    let a2c = Acme2Certifier::builder()
        .cert_validity_days(30)
        .renewal_threshold_pctg(50.0)
        .start()
        .await;
    let account = account(&a2c).await;
    let chain = issue_with(&a2c, &account, "ari.example.test", None).await;
    let (not_before, not_after) = certs::validity(&chain[0]);

    let (start, end) = suggested_window(&a2c, &chain[0]).await;
    assert!(
        (start - (not_before + 15 * DAY)).abs() <= 2,
        "window starts half-way: start {start}, not_before {not_before}"
    );
    assert!((end - not_after).abs() <= 2, "window ends at expiry");
}

#[tokio::test]
async fn renewal_force_makes_every_certificate_due() {
    let a2c = Acme2Certifier::builder().renewal_force(true).start().await;
    let account = account(&a2c).await;
    let chain = issue_with(&a2c, &account, "due.example.test", None).await;

    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (start, end) = suggested_window(&a2c, &chain[0]).await;
    assert!(start < now && now < end, "due now: {start} < {now} < {end}");
}

// ---------------------------------------------------------------------------------------
// acme-bridge against acme2certifier
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn acme_bridge_issues_with_http01() {
    let a2c = Acme2Certifier::start().await;
    let config = tempfile::tempdir().expect("config dir");

    let run = bridge_issue(
        &a2c,
        config.path(),
        &["-d", "a.example.test", "--challenge", "http-01"],
    )
    .await;
    assert_issued(&a2c, &run, &["a.example.test"], 1);
    assert_eq!(run.challenges().len(), 1, "{}", run.context());
    let id = run.challenges()[0].id().to_owned();
    assert_eq!(
        run.cleanup_for(&id)["outcome"],
        "valid",
        "{}\n{}",
        run.context(),
        a2c.log_tail(40)
    );
}

#[tokio::test]
async fn acme_bridge_issues_a_wildcard_with_dns01_and_reuses_its_account() {
    let a2c = Acme2Certifier::start().await;
    let config = tempfile::tempdir().expect("config dir");
    let args = [
        "-d",
        "b.example.test",
        "-d",
        "*.b.example.test",
        "--challenge",
        "dns-01",
    ];

    let first = bridge_issue(&a2c, config.path(), &args).await;
    assert_issued(&a2c, &first, &["*.b.example.test", "b.example.test"], 1);
    let challenges = first.challenges();
    assert_eq!(challenges.len(), 2, "{}", first.context());
    assert!(
        challenges.iter().any(|c| c.wildcard()) && challenges.iter().any(|c| !c.wildcard()),
        "one challenge for the apex, one for the wildcard\n{}",
        first.context()
    );

    let second = bridge_issue(&a2c, config.path(), &args).await;
    assert_issued(&a2c, &second, &["*.b.example.test", "b.example.test"], 2);
    let accounts = std::fs::read_dir(config.path().join("accounts"))
        .expect("accounts directory")
        .count();
    assert_eq!(accounts, 1, "one account directory for one server");
    let account_creations = a2c
        .log()
        .lines()
        .filter(|line| line.contains("\"POST /acme/newaccount "))
        .count();
    assert_eq!(
        account_creations,
        1,
        "the second run reuses the stored account\n{}",
        second.context()
    );
}

#[tokio::test]
async fn acme_bridge_profile_shortlived_gives_a_shorter_certificate() {
    let a2c = Acme2Certifier::builder().profiles(true).start().await;
    let config = tempfile::tempdir().expect("config dir");

    let default = bridge_issue(&a2c, config.path(), &["-d", "default.example.test"]).await;
    assert_issued(&a2c, &default, &["default.example.test"], 1);
    let short = bridge_issue(
        &a2c,
        config.path(),
        &["-d", "short.example.test", "--profile", PROFILE_SHORTLIVED],
    )
    .await;
    assert_issued(&a2c, &short, &["short.example.test"], 1);

    let lifetime = |name: &str| {
        let leaf = certs::pem_certificates_in(&config.path().join(format!("live/{name}/cert.pem")));
        let (not_before, not_after) = certs::validity(&leaf[0]);
        not_after - not_before
    };
    let (default_lifetime, short_lifetime) = (
        lifetime("default.example.test"),
        lifetime("short.example.test"),
    );
    assert!(
        short_lifetime < default_lifetime,
        "shortlived lasts {short_lifetime}s, the default {default_lifetime}s"
    );
    assert_eq!(short_lifetime, i64::from(SHORTLIVED_VALIDITY_DAYS) * DAY);
    assert_eq!(default_lifetime, i64::from(DEFAULT_VALIDITY_DAYS) * DAY);

    let settings = |name: &str| -> Value {
        let path = config.path().join(format!("renewal/{name}.json"));
        serde_json::from_slice(&std::fs::read(&path).expect("read renewal settings"))
            .expect("renewal settings are JSON")
    };
    assert_eq!(
        settings("short.example.test")["profile"],
        PROFILE_SHORTLIVED
    );
    assert!(
        settings("default.example.test").get("profile").is_none(),
        "no --profile, none recorded"
    );
}

#[tokio::test]
async fn acme_bridge_refuses_a_profile_the_ca_does_not_offer() {
    let a2c = Acme2Certifier::builder().profiles(true).start().await;
    let config = tempfile::tempdir().expect("config dir");

    let run = Bridge::spawn(bridge_args(
        &a2c,
        config.path(),
        &["-d", "bad.example.test", "--profile", "no-such-profile"],
    ))
    .finish()
    .await;
    run.assert_exit(2);
    run.assert_protocol_shape();
    assert_eq!(run.fatal_error()["kind"], "config", "{}", run.context());
    for named in ["no-such-profile", PROFILE_CLASSIC, PROFILE_SHORTLIVED] {
        assert!(
            run.stderr.contains(named),
            "stderr names {named}\n{}",
            run.context()
        );
    }
    let posts: Vec<String> = a2c
        .log()
        .lines()
        .filter(|line| line.contains("\"POST /acme/"))
        .map(str::to_owned)
        .collect();
    assert!(
        posts.is_empty(),
        "refused before any account or order: {posts:?}"
    );
    assert!(!config.path().join("live/bad.example.test").exists());
}

#[tokio::test]
async fn acme_bridge_renews_when_the_ari_window_has_begun() {
    let a2c = Acme2Certifier::builder().renewal_force(true).start().await;
    let config = tempfile::tempdir().expect("config dir");
    let name = "renew.example.test";
    let issued = bridge_issue(&a2c, config.path(), &["-d", name]).await;
    assert_issued(&a2c, &issued, &[name], 1);
    let old_serial = live_serial(config.path(), name);
    let orders_before = new_orders(&a2c);

    // Brand new, so not due by its lifetime: only the CA's window makes it due.
    let run = answer_every_challenge(Bridge::spawn(renew_args(config.path()))).await;
    assert_issued(&a2c, &run, &[name], 2);
    let ids: Vec<String> = run.challenges().iter().map(|c| c.id().to_owned()).collect();
    assert_eq!(ids, [format!("{name}/c1")], "{}", run.context());
    assert!(
        run.messages.iter().all(|m| m["name"] == name),
        "every message names the certificate\n{}",
        run.context()
    );
    assert_eq!(
        cert_link(config.path(), name),
        Path::new(&format!("../../archive/{name}/cert2.pem"))
    );
    assert_ne!(live_serial(config.path(), name), old_serial);
    for said in [
        "renewing: the CA's suggested renewal window (ARI) has begun",
        "renew: 1 renewed, 0 not due, 0 failed",
        // acme2certifier 0.46.3 knows nothing of `replaces`: it neither echoes nor
        // records it. instant-acme compares the echo only when the order carried
        // `replaces`, so this warning is the evidence that the renewal order did.
        "the CA ignored `replaces`; ordering without it",
    ] {
        assert!(
            run.stderr.contains(said),
            "stderr says {said:?}\n{}",
            run.context()
        );
    }
    // The order with `replaces` and the one without: no retries of an answer that
    // would not change.
    assert_eq!(
        new_orders(&a2c) - orders_before,
        2,
        "{}\n{}",
        run.context(),
        a2c.log_tail(40)
    );
}

/// How many newOrder requests acme2certifier has answered.
fn new_orders(a2c: &Acme2Certifier) -> usize {
    a2c.log().matches("POST /acme/neworders").count()
}

#[tokio::test]
async fn acme_bridge_renew_leaves_a_certificate_alone_before_its_ari_window() {
    let a2c = Acme2Certifier::start().await;
    let config = tempfile::tempdir().expect("config dir");
    let name = "kept.example.test";
    let issued = bridge_issue(&a2c, config.path(), &["-d", name]).await;
    assert_issued(&a2c, &issued, &[name], 1);
    let serial = live_serial(config.path(), name);

    let mut bridge = Bridge::spawn(renew_args(config.path()));
    bridge.close_stdin();
    let run = bridge.finish().await;
    run.assert_exit(0);
    assert!(
        run.messages.is_empty(),
        "nothing to say on stdout\n{}",
        run.context()
    );
    assert_eq!(
        cert_link(config.path(), name),
        Path::new(&format!("../../archive/{name}/cert1.pem"))
    );
    assert_eq!(live_serial(config.path(), name), serial);
    // Not due as the CA sees it: the log names the start of the CA's window.
    let leaf = certs::pem_certificates_in(&config.path().join(format!("live/{name}/cert.pem")));
    let (start, _) = suggested_window(&a2c, &leaf[0]).await;
    let begins = OffsetDateTime::from_unix_timestamp(start)
        .expect("window start")
        .format(&Rfc3339)
        .expect("RFC 3339");
    for said in [
        format!("not due: the CA's suggested window (ARI) begins {begins}"),
        "renew: 0 renewed, 1 not due, 0 failed".to_owned(),
    ] {
        assert!(
            run.stderr.contains(&said),
            "stderr says {said:?}\n{}",
            run.context()
        );
    }
}

/// `--config-dir CONFIG_DIR issue --mode json --server ... --ca-bundle ... --agree-tos
/// EXTRA` against `a2c`.
fn bridge_args(a2c: &Acme2Certifier, config_dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args = vec!["--config-dir".into(), config_dir.as_os_str().to_owned()];
    args.extend(issue_args_for(a2c.directory_url(), a2c.ca_bundle_path()));
    args.push("--agree-tos".into());
    args.extend(extra.iter().map(Into::into));
    args
}

/// Runs `acme-bridge issue --agree-tos EXTRA` against `a2c` with a consumer that replies
/// `ready` to every challenge (acme2certifier does not validate), to completion.
async fn bridge_issue(a2c: &Acme2Certifier, config_dir: &Path, extra: &[&str]) -> Finished {
    answer_every_challenge(Bridge::spawn(bridge_args(a2c, config_dir, extra))).await
}

/// Reads one run's announcements, replies `ready` to each challenge, runs to the end.
async fn answer_every_challenge(mut bridge: Bridge) -> Finished {
    let challenges = bridge.until_awaiting().await;
    for challenge in &challenges {
        bridge.ready(challenge.id()).await;
    }
    bridge.finish().await
}

/// `--config-dir CONFIG_DIR renew`.
fn renew_args(config_dir: &Path) -> Vec<OsString> {
    vec!["--config-dir".into(), config_dir.into(), "renew".into()]
}

/// Where `live/NAME/cert.pem` points.
fn cert_link(config_dir: &Path, name: &str) -> PathBuf {
    let link = config_dir.join("live").join(name).join("cert.pem");
    std::fs::read_link(&link).unwrap_or_else(|e| panic!("{} is not a link: {e}", link.display()))
}

/// The serial (hex) of the live leaf of `name`.
fn live_serial(config_dir: &Path, name: &str) -> String {
    let leaf = certs::pem_certificates_in(&config_dir.join("live").join(name).join("cert.pem"));
    certs::serial_hex(&leaf[0])
}

/// The run succeeded and stored a certificate for `names` (sorted) as archive `version`
/// that chains to the issuing CA.
fn assert_issued(a2c: &Acme2Certifier, run: &Finished, names: &[&str], version: u64) {
    assert_eq!(
        run.status.code(),
        Some(0),
        "acme-bridge failed against acme2certifier\n{}\n--- acme2certifier log (tail) ---\n{}",
        run.context(),
        a2c.log_tail(60)
    );
    run.assert_protocol_shape();
    let certificate = run.certificate();
    assert_eq!(certificate["version"], version, "{}", run.context());

    let leaf = certs::pem_certificates_in(&run.certificate_path("cert_path"));
    assert_eq!(leaf.len(), 1, "cert.pem holds the leaf only");
    let chain = certs::pem_certificates_in(&run.certificate_path("chain_path"));
    let fullchain = certs::pem_certificates_in(&run.certificate_path("fullchain_path"));
    assert_eq!(fullchain.len(), 1 + chain.len(), "fullchain = leaf + chain");
    assert_eq!(fullchain[0], leaf[0]);
    assert_eq!(certs::dns_names(&leaf[0]), names);
    assert_eq!(
        certificate["serial"].as_str().map(certs::normalize_hex),
        Some(certs::serial_hex(&leaf[0])),
        "{}",
        run.context()
    );
    let key = std::fs::read(run.certificate_path("key_path")).expect("read privkey.pem");
    assert!(certs::key_matches_certificate(&key, &leaf[0]));
    for name in names {
        let name = name.trim_start_matches("*.");
        certs::verify_chain(&leaf[0], &chain, a2c.issuing_ca_pem().as_bytes(), name)
            .unwrap_or_else(|e| panic!("the chain does not verify for {name}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------
// A minimal instant-acme client for the harness checks
// ---------------------------------------------------------------------------------------

/// instant-acme's HTTP client trait over hyper, trusting only the harness's TLS CA.
struct TrustingClient(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl TrustingClient {
    fn new(ca_bundle: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_bundle).expect("read the CA bundle") {
            roots.add(cert.expect("CA PEM")).expect("add the CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        Self(Client::builder(TokioExecutor::new()).build(connector))
    }
}

impl instant_acme::HttpClient for TrustingClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.0.request(req);
        Box::pin(async move {
            response
                .await
                .map(BytesResponse::from)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

/// A new account (no contact) on `a2c`.
async fn account(a2c: &Acme2Certifier) -> Account {
    let (account, _credentials) =
        Account::builder_with_http(Box::new(TrustingClient::new(a2c.ca_bundle_path())))
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                a2c.directory_url().to_owned(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("account on acme2certifier: {e}\n{}", a2c.log_tail(40)));
    account
}

/// Issues a certificate for `name` (optionally under `profile`); panics on failure.
async fn issue_with(
    a2c: &Acme2Certifier,
    account: &Account,
    name: &str,
    profile: Option<&str>,
) -> Vec<CertificateDer<'static>> {
    try_issue_with(account, name, profile)
        .await
        .unwrap_or_else(|e| panic!("issuing {name} ({profile:?}): {e}\n{}", a2c.log_tail(60)))
}

/// Order, answer every challenge (validation is off), finalize, download the chain.
async fn try_issue_with(
    account: &Account,
    name: &str,
    profile: Option<&str>,
) -> Result<Vec<CertificateDer<'static>>, instant_acme::Error> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(profile) = profile {
        new_order = new_order.profile(profile);
    }
    let mut order = account.new_order(&new_order).await?;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        if authorization.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or(instant_acme::Error::Str("no http-01 challenge offered"))?;
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new();
    let status = order.poll_ready(&retries).await?;
    assert_eq!(status, OrderStatus::Ready, "order for {name}");

    let key = rcgen::KeyPair::generate().expect("certificate key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("CSR params");
    // rcgen's default subject is "CN=rcgen self signed cert", which acme2certifier
    // rightly refuses (badCSR: a CN that is not one of the order's identifiers).
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).expect("CSR");
    order.finalize_csr(csr.der()).await?;
    let pem = order.poll_certificate(&retries).await?;
    Ok(certs::pem_certificates(pem.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// X.509 and ARI helpers
// ---------------------------------------------------------------------------------------

fn subject_key_identifier(der: &[u8]) -> Option<Vec<u8>> {
    let cert = certs::parse(der);
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn authority_key_identifier(der: &[u8]) -> Option<Vec<u8>> {
    let cert = certs::parse(der);
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

/// `GET {renewalInfo}/{base64url(AKI)}.{base64url(serial)}` (RFC 9773) for `leaf`:
/// the suggested window as Unix timestamps.
async fn suggested_window(a2c: &Acme2Certifier, leaf: &[u8]) -> (i64, i64) {
    let directory = a2c.directory().await;
    let base = directory["renewalInfo"]
        .as_str()
        .unwrap_or_else(|| panic!("no renewalInfo: {directory}"));
    let aki = authority_key_identifier(leaf).expect("AKI");
    let serial = certs::parse(leaf).raw_serial().to_vec();
    let url = format!(
        "{base}/{}.{}",
        URL_SAFE_NO_PAD.encode(aki),
        URL_SAFE_NO_PAD.encode(serial)
    );
    let (status, body) = a2c.http().get(&url).await;
    assert!(
        status.is_success(),
        "GET {url} -> {status}: {}\n{}",
        String::from_utf8_lossy(&body),
        a2c.log_tail(40)
    );
    let info: Value = serde_json::from_slice(&body).expect("renewal info is JSON");
    let at = |field: &str| {
        let text = info["suggestedWindow"][field]
            .as_str()
            .unwrap_or_else(|| panic!("suggestedWindow.{field} missing: {info}"));
        OffsetDateTime::parse(text, &Rfc3339)
            .unwrap_or_else(|e| panic!("suggestedWindow.{field} {text:?}: {e}"))
            .unix_timestamp()
    };
    (at("start"), at("end"))
}
