//! The JSON documents the lifecycle commands print — `list`, `plan` and
//! `order begin` — for Ansible facts, Puppet facts, Chef and scripts.
//!
//! Each is one JSON object on stdout with a `format` version (1). As with the
//! protocol, fields are only added within a version: readers must ignore fields they
//! do not know. Their JSON Schemas are generated from these types
//! (`acme-bridge schema list|plan|order`) and committed under `schema/`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::challenge::{Challenge, ChallengeKind, ChallengeType};
use crate::policy::Reason;

/// The version of these documents' format.
pub const FORMAT: u32 = 1;

/// `acme-bridge list`: every stored certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateList {
    /// Always 1 for this layout.
    pub format: u32,
    /// The configuration directory.
    pub config_dir: String,
    /// One entry per certificate, sorted by name.
    pub certificates: Vec<CertificateEntry>,
    /// Certificates whose files cannot be read, each on its own (the others are
    /// listed as usual).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// A stored certificate that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unreadable {
    /// The certificate's name.
    pub name: String,
    /// What is wrong.
    pub error: String,
}

/// One stored certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateEntry {
    /// The certificate's name (directory under `live/`).
    pub name: String,
    /// The names in the certificate.
    pub domains: Vec<String>,
    /// Archive version `N` that `live/` points at.
    pub version: u32,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_before: String,
    /// End of validity (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: i64,
    /// `live/NAME/cert.pem`.
    pub cert_path: String,
    /// `live/NAME/chain.pem`.
    pub chain_path: String,
    /// `live/NAME/fullchain.pem`.
    pub fullchain_path: String,
    /// `live/NAME/privkey.pem`.
    pub key_path: String,
    /// The ACME directory it was issued by.
    pub server: Option<String>,
    /// The challenge type renewals use.
    pub challenge_type: Option<ChallengeType>,
    /// The mode renewals use.
    pub mode: Option<String>,
    /// Set once the certificate was revoked through acme-bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
    /// The offline renewal verdict (the lifetime rule; `plan --ari` asks the CA).
    pub renewal: RenewalVerdict,
}

/// A revocation done through acme-bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Revocation {
    /// When (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// The reason given, e.g. `keyCompromise`, or none.
    pub reason: Option<String>,
}

/// Whether a certificate should be renewed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RenewalVerdict {
    /// Whether `acme-bridge renew` would renew it now.
    pub should_renew: bool,
    /// Why, stable for automation.
    pub reason: Reason,
    /// Why, in words.
    pub reason_text: String,
    /// When it is or was due (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub due_at: String,
}

/// `acme-bridge plan`: what `renew` would do, without doing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// Always 1 for this layout.
    pub format: u32,
    /// Whether the CA's ARI windows were asked for (`--ari`).
    pub ari: bool,
    /// One entry per certificate.
    pub certificates: Vec<PlanEntry>,
    /// Certificates whose files cannot be read, each on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// The plan for one certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanEntry {
    /// The certificate's name.
    pub name: String,
    /// The names in the certificate.
    pub domains: Vec<String>,
    /// End of validity (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// Whole days until `not_after`.
    pub days_left: i64,
    /// Whether it was revoked through acme-bridge.
    pub revoked: bool,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: RenewalVerdict,
    /// The CA's suggested window, when it was asked (`--ari`) and offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_window: Option<AriWindow>,
    /// Why the CA could not be asked, when `--ari` failed for this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_error: Option<String>,
}

/// An ARI suggested window ([RFC 9773 §4.2]).
///
/// [RFC 9773 §4.2]: https://www.rfc-editor.org/rfc/rfc9773#section-4.2
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AriWindow {
    /// Window start (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub start: String,
    /// Window end (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub end: String,
    /// The CA's explanation page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
}

/// `acme-bridge order begin`: the first step of a two-step run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderDocument {
    /// Always 1 for this layout.
    pub format: u32,
    /// The certificate's name; `order finish NAME` completes it.
    pub name: String,
    /// The names ordered.
    pub domains: Vec<String>,
    /// The order URL at the CA.
    pub order_url: String,
    /// The account URL.
    pub account_url: String,
    /// The order's status at the CA: `pending` (deploy the challenges, then run
    /// `order finish`) or `ready` (every name is already authorized).
    pub status: String,
    /// True when this is an order created by an earlier `begin` and still pending:
    /// the same order and the same challenge data.
    pub resumed: bool,
    /// The challenge type.
    pub challenge_type: ChallengeType,
    /// Every challenge to deploy, exactly as in the protocol's `challenge` message.
    pub challenges: Vec<Challenge>,
    /// As Ansible's `acme_certificate` returns it: identifier → challenge type →
    /// `{resource, resource_value, record}`.
    pub challenge_data: BTreeMap<String, BTreeMap<String, ChallengeData>>,
    /// dns-01 only: record name (no trailing dot) → every TXT value it must hold
    /// (a wildcard and its apex share a record).
    pub challenge_data_dns: BTreeMap<String, Vec<String>>,
}

/// identifier → challenge type → data, as Ansible's `challenge_data`.
pub type ChallengeDataMap = BTreeMap<String, BTreeMap<String, ChallengeData>>;
/// record name → TXT values, as Ansible's `challenge_data_dns`.
pub type DnsRecordMap = BTreeMap<String, Vec<String>>;

/// One challenge in Ansible's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChallengeData {
    /// dns-01: `_acme-challenge`; http-01: `.well-known/acme-challenge/TOKEN`;
    /// tls-alpn-01: the identifier.
    pub resource: String,
    /// dns-01: the TXT value; http-01: the body; tls-alpn-01: the hex digest.
    pub resource_value: String,
    /// dns-01: the full record name without trailing dot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl OrderDocument {
    /// Ansible's two views of the challenges. A wildcard's entry is keyed by its
    /// `*.` name, as Ansible does.
    pub fn ansible_views(challenges: &[Challenge]) -> (ChallengeDataMap, DnsRecordMap) {
        let mut data: BTreeMap<String, BTreeMap<String, ChallengeData>> = BTreeMap::new();
        let mut dns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in challenges {
            let (kind, entry) = match &c.kind {
                ChallengeKind::Dns01 { dns: record } => {
                    let name = record.name.trim_end_matches('.').to_owned();
                    dns.entry(name.clone())
                        .or_default()
                        .push(record.value.clone());
                    (
                        "dns-01",
                        ChallengeData {
                            resource: "_acme-challenge".into(),
                            resource_value: record.value.clone(),
                            record: Some(name),
                        },
                    )
                }
                ChallengeKind::Http01 { http } => (
                    "http-01",
                    ChallengeData {
                        resource: http.path.trim_start_matches('/').to_owned(),
                        resource_value: http.body.clone(),
                        record: None,
                    },
                ),
                ChallengeKind::TlsAlpn01 { tls_alpn } => (
                    "tls-alpn-01",
                    ChallengeData {
                        resource: c.identifier.clone(),
                        resource_value: tls_alpn.digest.clone(),
                        record: None,
                    },
                ),
            };
            data.entry(c.domain.clone())
                .or_default()
                .insert(kind.to_owned(), entry);
        }
        (data, dns)
    }
}
