//! certbot-external-auth's messages, rendered from our data.
//!
//! acme-bridge succeeds the certbot plugin certbot-external-auth. Scripts written for
//! it read its JSON lines (`--protocol certbot-external-auth`) or its handler
//! environment (the `external-auth` hook style). This module is the one place those
//! messages' fields are produced; both consumers render a message here and only
//! decide how to deliver it.
//!
//! Every function returns a [`Message`], a JSON object whose keys are in the
//! plugin's order (serde_json's `preserve_order` keeps insertion order).
//!
//! # Messages
//!
//! | `cmd` | fields, in order |
//! |---|---|
//! | `perform_challenge`, dns-01 | `type`, `domain`, `token`, `validation` (the TXT value), `txt_domain` (`_acme-challenge.<domain>`, no trailing dot), `key_auth` |
//! | `perform_challenge`, http-01 | `type`, `domain`, `token`, `validation` (the key authorization), `uri`, `command` (a shell recipe, for people), `key_auth` |
//! | `perform_challenge`, tls-alpn-01 | `type`, `domain`, `token`, `validation` (hex SHA-256 of the key authorization), `port` (443), `key_auth`, `cert_pem`, `key_pem` — an extension, see below |
//! | `cleanup` | `type`, `status`, `domain`, `token`, `validation`, `key_auth`, `validated`, `error` |
//! | `deploy_cert` | `domain`, `cert_path`, `key_path`, `chain_path`, `fullchain_path`, `timestamp`, `cert_timestamp` |
//! | `report` | `messages`: `[{"priority":0\|1\|2,"on_crash":bool,"lines":[…]}]` |
//!
//! `cmd` comes first in every message.
//!
//! # `domain`
//!
//! `domain` is the name the CA validates, without `*.`: for `*.example.com` it is
//! `example.com`. That is what certbot handed the plugin (`achall.domain`, the
//! authorization's identifier, which RFC 8555 §7.1.4 gives without the wildcard
//! label), and it is the only reading under which the plugin's own
//! `txt_domain = "_acme-challenge." + domain` names the right record. A wildcard and
//! its apex therefore give two `perform_challenge` lines with the same `domain` and
//! `txt_domain` and different `validation` values: publish both.
//!
//! # Differences from the plugin (its bugs, fixed)
//!
//! - `cleanup.status` is the real state of the challenge at the CA, in ACME's words
//!   (`valid`, `invalid`, `pending` when it was never answered, `processing` when it
//!   was answered but the run ended before the verdict), not the plugin's
//!   `"pending"`-even-after-success; `validated` is a boolean, `true` only when
//!   `valid`; `error` is the CA's problem as text, or `null`.
//! - `deploy_cert` carries the run's start under `timestamp`, as the plugin's README
//!   documents (its code wrote it under `port`), and is sent once per certificate
//!   (the plugin sent it once per name), with `domain` the first name.
//! - tls-sni-01 was withdrawn from ACME in 2019; tls-alpn-01 ([RFC 8737]) replaced
//!   it. Its `perform_challenge` is this program's extension: the plugin's tls-sni-01
//!   fields minus those that no longer apply (`z_domain`, `cert_path`, `key_path`),
//!   with `validation` the acmeIdentifier digest, `port` the number 443, and the
//!   ready certificate and key in `cert_pem` and `key_pem`.
//!
//! [RFC 8737]: https://www.rfc-editor.org/rfc/rfc8737

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::Issued;
use crate::challenge::{Challenge, ChallengeKind};
use crate::error::Error;
use crate::protocol::{Outcome, Problem};
use crate::store::Lineage;

/// One message: field name → value, in the plugin's order.
pub type Message = Map<String, Value>;

/// `cmd` of the message that asks for a challenge to be deployed.
pub const CMD_PERFORM: &str = "perform_challenge";
/// `cmd` of the message that asks for a challenge to be removed.
pub const CMD_CLEANUP: &str = "cleanup";
/// `cmd` of the message that announces a stored certificate.
pub const CMD_DEPLOY_CERT: &str = "deploy_cert";
/// `cmd` of the summary sent at exit.
pub const CMD_REPORT: &str = "report";

/// The port a tls-alpn-01 certificate is served on (RFC 8737 §3).
pub const TLS_ALPN_PORT: u16 = 443;

/// Where the http-01 `command` recipe puts its files.
const RECIPE_ROOT: &str = "/tmp/acme-bridge";

/// An object builder that keeps insertion order.
struct Fields(Message);

impl Fields {
    fn new(cmd: &str) -> Self {
        let mut map = Map::new();
        map.insert("cmd".to_owned(), Value::from(cmd));
        Self(map)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }
}

/// The plugin's `validation` for a challenge: the TXT value for dns-01, the key
/// authorization (the file's content) for http-01, the hex digest for tls-alpn-01.
pub fn validation(challenge: &Challenge) -> &str {
    match &challenge.kind {
        ChallengeKind::Dns01 { dns } => &dns.value,
        ChallengeKind::Http01 { http } => &http.body,
        ChallengeKind::TlsAlpn01 { tls_alpn } => &tls_alpn.digest,
    }
}

/// `_acme-challenge.<identifier>` without the trailing dot, as certbot wrote it.
fn txt_domain(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// The plugin's informational http-01 recipe: write the file under a fresh web root
/// and serve it on port 80. Never run by acme-bridge. Token and key authorization
/// are base64url (checked in [`Challenge::compute`]), so single quotes suffice.
fn http_command(file_name: &str, body: &str) -> String {
    format!(
        "mkdir -p {RECIPE_ROOT}/public_html/.well-known/acme-challenge\n\
         cd {RECIPE_ROOT}/public_html\n\
         printf '%s' '{body}' > .well-known/acme-challenge/{file_name}\n\
         # run only once per server:\n\
         python3 -m http.server 80"
    )
}

/// `perform_challenge`: deploy this challenge. See the [module
/// documentation](self) for the fields per challenge type.
pub fn perform_message(challenge: &Challenge) -> Message {
    let fields = Fields::new(CMD_PERFORM)
        .with("type", challenge.challenge_type().as_str())
        .with("domain", challenge.identifier.as_str())
        .with("token", challenge.token.as_str())
        .with("validation", validation(challenge));
    let key_auth = challenge.key_authorization.as_str();
    let fields = match &challenge.kind {
        ChallengeKind::Dns01 { dns } => fields
            .with("txt_domain", txt_domain(&dns.name))
            .with("key_auth", key_auth),
        ChallengeKind::Http01 { http } => fields
            .with("uri", http.url.as_str())
            .with("command", http_command(&http.file_name, &http.body))
            .with("key_auth", key_auth),
        ChallengeKind::TlsAlpn01 { tls_alpn } => fields
            .with("port", TLS_ALPN_PORT)
            .with("key_auth", key_auth)
            .with("cert_pem", tls_alpn.certificate_pem.as_str())
            .with("key_pem", tls_alpn.private_key_pem.as_str()),
    };
    fields.0
}

/// The challenge's state at the CA in ACME's words (RFC 8555 §7.1.6), as the
/// plugin's `status` meant to report it: `valid`, `invalid`, `pending` (never
/// answered) or `processing` (answered; the run ended before the verdict).
pub fn status(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Valid => "valid",
        Outcome::Invalid => "invalid",
        Outcome::NotValidated => "pending",
        Outcome::Unknown => "processing",
    }
}

/// `cleanup`: remove what was deployed for this challenge. `status` is the real
/// outcome ([`status`]), `validated` is `true` only when it is valid, `error` is the
/// CA's problem as text, or `null`.
pub fn cleanup_message(
    challenge: &Challenge,
    outcome: Outcome,
    problem: Option<&Problem>,
) -> Message {
    Fields::new(CMD_CLEANUP)
        .with("type", challenge.challenge_type().as_str())
        .with("status", status(outcome))
        .with("domain", challenge.identifier.as_str())
        .with("token", challenge.token.as_str())
        .with("validation", validation(challenge))
        .with("key_auth", challenge.key_authorization.as_str())
        .with("validated", outcome == Outcome::Valid)
        .with(
            "error",
            problem.map_or(Value::Null, |p| Value::from(p.to_string())),
        )
        .0
}

/// Unix seconds (negative before 1970, which cannot happen here).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// When a file (through its link) was last written, in unix seconds.
fn modified_seconds(path: &Path) -> Option<i64> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(unix_seconds)
}

/// `deploy_cert` for a certificate just issued: once per certificate. `started` is
/// when the run began (the plugin's `timestamp`); see [`deploy_message_for`].
pub fn deploy_message(issued: &Issued, started: SystemTime) -> Message {
    deploy_message_for(&issued.domains, &issued.lineage, started)
}

/// `deploy_cert` for any stored certificate, e.g. one that was not renewed (the
/// plugin sent the same message to a handler's `unchanged_cert`). `domain` is the
/// first name; `timestamp` is `started` and `cert_timestamp` the time `cert.pem` was
/// written, both unix seconds, so `cert_timestamp >= timestamp` tells a new
/// certificate from an unchanged one, as in the plugin.
pub fn deploy_message_for(domains: &[String], lineage: &Lineage, started: SystemTime) -> Message {
    let path = |p: &Path| p.display().to_string();
    let cert_timestamp =
        modified_seconds(&lineage.cert).unwrap_or_else(|| unix_seconds(SystemTime::now()));
    Fields::new(CMD_DEPLOY_CERT)
        .with("domain", domains.first().cloned().unwrap_or_default())
        .with("cert_path", path(&lineage.cert))
        .with("key_path", path(&lineage.privkey))
        .with("chain_path", path(&lineage.chain))
        .with("fullchain_path", path(&lineage.fullchain))
        .with("timestamp", unix_seconds(started))
        .with("cert_timestamp", cert_timestamp)
        .0
}

/// certbot's reporter priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// 0: the outcome of the run, errors.
    High = 0,
    /// 1: what was done (certbot's "Congratulations!" message).
    Medium = 1,
    /// 2: details.
    Low = 2,
}

/// One entry of a `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEntry {
    /// How important it is.
    pub priority: Priority,
    /// Whether it matters also when the run failed (certbot printed entries without
    /// it only after a success).
    pub on_crash: bool,
    /// The text, one element per line.
    pub lines: Vec<String>,
}

/// `report`: `{"cmd":"report","messages":[{"priority":…,"on_crash":…,"lines":[…]}]}`,
/// entries ordered by priority (stable), as certbot's priority queue printed them.
pub fn report_message(entries: &[ReportEntry]) -> Message {
    let mut sorted: Vec<&ReportEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.priority);
    let messages: Vec<Value> = sorted
        .into_iter()
        .map(|e| {
            Value::Object(
                Fields(Map::new())
                    .with("priority", e.priority as u8)
                    .with("on_crash", e.on_crash)
                    .with("lines", e.lines.clone())
                    .0,
            )
        })
        .collect();
    Fields::new(CMD_REPORT).with("messages", messages).0
}

/// The summary of a run for its `report`: where the certificate is, or why there is
/// none.
pub fn run_report(result: Result<&Issued, &Error>) -> Vec<ReportEntry> {
    match result {
        Ok(issued) => {
            let lineage = &issued.lineage;
            vec![ReportEntry {
                priority: Priority::Medium,
                on_crash: false,
                lines: vec![
                    format!(
                        "Certificate {} (version {}) for {} was issued and saved.",
                        lineage.name.as_str(),
                        lineage.version,
                        issued.domains.join(", ")
                    ),
                    format!("Certificate and chain: {}", lineage.fullchain.display()),
                    format!("Key file: {}", lineage.privkey.display()),
                    format!(
                        "It expires on {}.",
                        crate::time::rfc3339(issued.info.not_after)
                    ),
                ],
            }]
        }
        Err(err) => {
            let mut lines: Vec<String> = vec!["The certificate was not issued.".to_owned()];
            lines.extend(err.to_string().lines().map(str::to_owned));
            vec![ReportEntry {
                priority: Priority::High,
                on_crash: true,
                lines,
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::certificate::CertInfo;
    use crate::challenge::{ChallengeSource, ChallengeType};
    use crate::protocol::{ProblemIdentifier, Subproblem};
    use crate::store::CertName;

    const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const KEY_AUTH: &str =
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn challenge(challenge_type: ChallengeType, domain: &str) -> Challenge {
        let identifier = domain.strip_prefix("*.").unwrap_or(domain);
        Challenge::compute(
            ChallengeSource {
                id: "c1".into(),
                domain,
                identifier,
                wildcard: domain.starts_with("*."),
                token: TOKEN,
                challenge_type,
            },
            THUMB,
        )
        .unwrap()
    }

    fn keys(message: &Message) -> Vec<&str> {
        message.keys().map(String::as_str).collect()
    }

    #[test]
    fn dns01_perform_has_the_plugins_fields_in_order() {
        let c = challenge(ChallengeType::Dns01, "example.com");
        let ChallengeKind::Dns01 { dns } = &c.kind else {
            unreachable!()
        };
        let m = perform_message(&c);
        assert_eq!(
            keys(&m),
            [
                "cmd",
                "type",
                "domain",
                "token",
                "validation",
                "txt_domain",
                "key_auth"
            ]
        );
        assert_eq!(
            Value::Object(m.clone()),
            json!({
                "cmd": "perform_challenge",
                "type": "dns-01",
                "domain": "example.com",
                "token": TOKEN,
                "validation": dns.value,
                "txt_domain": "_acme-challenge.example.com",
                "key_auth": KEY_AUTH,
            })
        );
        // The serialised line keeps the order too.
        let line = Value::Object(m).to_string();
        assert!(
            line.starts_with(
                r#"{"cmd":"perform_challenge","type":"dns-01","domain":"example.com","token":"#
            ),
            "{line}"
        );
    }

    #[test]
    fn a_wildcard_is_announced_by_its_base_name_as_certbot_did() {
        let c = challenge(ChallengeType::Dns01, "*.example.com");
        let m = perform_message(&c);
        assert_eq!(m["domain"], "example.com");
        assert_eq!(m["txt_domain"], "_acme-challenge.example.com");
        let m = cleanup_message(&c, Outcome::Valid, None);
        assert_eq!(m["domain"], "example.com");
    }

    #[test]
    fn http01_perform_has_uri_command_and_the_key_authorization() {
        let c = challenge(ChallengeType::Http01, "www.example.com");
        let m = perform_message(&c);
        assert_eq!(
            keys(&m),
            [
                "cmd",
                "type",
                "domain",
                "token",
                "validation",
                "uri",
                "command",
                "key_auth"
            ]
        );
        assert_eq!(m["type"], "http-01");
        assert_eq!(m["domain"], "www.example.com");
        assert_eq!(m["token"], TOKEN);
        assert_eq!(m["validation"], KEY_AUTH);
        assert_eq!(
            m["uri"],
            format!("http://www.example.com/.well-known/acme-challenge/{TOKEN}")
        );
        assert_eq!(m["key_auth"], KEY_AUTH);
        assert_eq!(
            m["command"],
            format!(
                "mkdir -p /tmp/acme-bridge/public_html/.well-known/acme-challenge\n\
                 cd /tmp/acme-bridge/public_html\n\
                 printf '%s' '{KEY_AUTH}' > .well-known/acme-challenge/{TOKEN}\n\
                 # run only once per server:\n\
                 python3 -m http.server 80"
            )
        );
    }

    #[test]
    fn tls_alpn01_perform_is_the_tls_sni_shape_with_the_ready_certificate() {
        let c = challenge(ChallengeType::TlsAlpn01, "tls.example.com");
        let ChallengeKind::TlsAlpn01 { tls_alpn } = &c.kind else {
            unreachable!()
        };
        let m = perform_message(&c);
        assert_eq!(
            keys(&m),
            [
                "cmd",
                "type",
                "domain",
                "token",
                "validation",
                "port",
                "key_auth",
                "cert_pem",
                "key_pem"
            ]
        );
        assert_eq!(
            Value::Object(m),
            json!({
                "cmd": "perform_challenge",
                "type": "tls-alpn-01",
                "domain": "tls.example.com",
                "token": TOKEN,
                "validation": tls_alpn.digest,
                "port": 443,
                "key_auth": KEY_AUTH,
                "cert_pem": tls_alpn.certificate_pem,
                "key_pem": tls_alpn.private_key_pem,
            })
        );
        assert_eq!(tls_alpn.digest.len(), 64);
    }

    #[test]
    fn cleanup_reports_the_real_status() {
        let c = challenge(ChallengeType::Dns01, "example.com");
        let value = validation(&c).to_owned();
        let m = cleanup_message(&c, Outcome::Valid, None);
        assert_eq!(
            keys(&m),
            [
                "cmd",
                "type",
                "status",
                "domain",
                "token",
                "validation",
                "key_auth",
                "validated",
                "error"
            ]
        );
        assert_eq!(
            Value::Object(m),
            json!({
                "cmd": "cleanup",
                "type": "dns-01",
                "status": "valid",
                "domain": "example.com",
                "token": TOKEN,
                "validation": value,
                "key_auth": KEY_AUTH,
                "validated": true,
                "error": null,
            })
        );
        let m = cleanup_message(&c, Outcome::NotValidated, None);
        assert_eq!(
            (&m["status"], &m["validated"], &m["error"]),
            (&json!("pending"), &json!(false), &Value::Null)
        );
        let m = cleanup_message(&c, Outcome::Unknown, None);
        assert_eq!(
            (&m["status"], &m["validated"]),
            (&json!("processing"), &json!(false))
        );
    }

    #[test]
    fn cleanup_of_an_invalid_challenge_carries_the_problem() {
        let c = challenge(ChallengeType::Http01, "example.com");
        let problem = Problem {
            kind: Some("urn:ietf:params:acme:error:unauthorized".into()),
            detail: Some("Incorrect TXT record".into()),
            status: Some(403),
            subproblems: vec![Subproblem {
                kind: Some("urn:ietf:params:acme:error:dns".into()),
                detail: Some("NXDOMAIN".into()),
                identifier: Some(ProblemIdentifier {
                    kind: "dns".into(),
                    value: "example.com".into(),
                }),
            }],
        };
        let m = cleanup_message(&c, Outcome::Invalid, Some(&problem));
        assert_eq!(m["status"], "invalid");
        assert_eq!(m["validated"], false);
        assert_eq!(m["validation"], KEY_AUTH);
        assert_eq!(
            m["error"],
            "Incorrect TXT record (urn:ietf:params:acme:error:unauthorized); \
             example.com: NXDOMAIN (urn:ietf:params:acme:error:dns)"
        );
    }

    fn issued(dir: &Path) -> Issued {
        let live = dir.join("live/example.com");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("cert.pem"), "x").unwrap();
        Issued {
            domains: vec!["example.com".into(), "www.example.com".into()],
            lineage: Lineage {
                name: CertName::new("example.com").unwrap(),
                version: 3,
                cert: live.join("cert.pem"),
                chain: live.join("chain.pem"),
                fullchain: live.join("fullchain.pem"),
                privkey: live.join("privkey.pem"),
                live_dir: live,
            },
            info: CertInfo {
                serial: "1f".into(),
                not_before: time::macros::datetime!(2026-11-28 17:30 UTC),
                not_after: time::macros::datetime!(2027-02-26 17:29:59 UTC),
                dns_names: vec!["example.com".into(), "www.example.com".into()],
                spki_der: Vec::new(),
            },
        }
    }

    #[test]
    fn deploy_cert_has_timestamp_not_port() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issued(dir.path());
        let started = SystemTime::now() - Duration::from_secs(30);
        let m = deploy_message(&issued, started);
        assert_eq!(
            keys(&m),
            [
                "cmd",
                "domain",
                "cert_path",
                "key_path",
                "chain_path",
                "fullchain_path",
                "timestamp",
                "cert_timestamp"
            ]
        );
        let live = |f: &str| {
            PathBuf::from(dir.path())
                .join("live/example.com")
                .join(f)
                .display()
                .to_string()
        };
        let written = std::fs::metadata(live("cert.pem"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            Value::Object(m.clone()),
            json!({
                "cmd": "deploy_cert",
                "domain": "example.com",
                "cert_path": live("cert.pem"),
                "key_path": live("privkey.pem"),
                "chain_path": live("chain.pem"),
                "fullchain_path": live("fullchain.pem"),
                "timestamp": unix_seconds(started),
                "cert_timestamp": unix_seconds(written),
            })
        );
        assert!(m["cert_timestamp"].as_i64() >= m["timestamp"].as_i64());
        assert!(!m.contains_key("port"));
    }

    #[test]
    fn report_lists_entries_by_priority() {
        let m = report_message(&[
            ReportEntry {
                priority: Priority::Low,
                on_crash: false,
                lines: vec!["detail".into()],
            },
            ReportEntry {
                priority: Priority::High,
                on_crash: true,
                lines: vec!["first".into(), "second".into()],
            },
        ]);
        assert_eq!(keys(&m), ["cmd", "messages"]);
        assert_eq!(
            Value::Object(m).to_string(),
            r#"{"cmd":"report","messages":[{"priority":0,"on_crash":true,"lines":["first","second"]},{"priority":2,"on_crash":false,"lines":["detail"]}]}"#
        );
        assert_eq!(
            Value::Object(report_message(&[])),
            json!({"cmd": "report", "messages": []})
        );
    }

    #[test]
    fn run_report_summarises_success_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issued(dir.path());
        let entries = run_report(Ok(&issued));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].priority, Priority::Medium);
        assert!(!entries[0].on_crash);
        assert_eq!(
            entries[0].lines[0],
            "Certificate example.com (version 3) for example.com, www.example.com was issued and saved."
        );
        assert_eq!(entries[0].lines[3], "It expires on 2027-02-26T17:29:59Z.");

        let err = Error::Eof { ids: "c1".into() };
        let entries = run_report(Err(&err));
        assert_eq!(
            entries,
            [ReportEntry {
                priority: Priority::High,
                on_crash: true,
                lines: vec![
                    "The certificate was not issued.".into(),
                    "stdin closed while c1 still awaited a reply".into()
                ],
            }]
        );
    }
}
