//! The JSON-lines protocol, version 1: the contract between acme-bridge and the
//! automation that publishes challenges.
//!
//! # Framing
//! One JSON object per line, UTF-8, terminated by `\n` and flushed per line. Every
//! message has a `type` field that says what it is. acme-bridge writes [`Output`]
//! messages on **stdout** and nothing else there (logs go to stderr); it reads
//! [`Input`] messages on **stdin**. Blank input lines are ignored.
//!
//! # Versioning
//! The first message, [`Hello`], carries `protocol: 1`. Within a version, fields and
//! message types are only ever *added*: consumers must ignore fields and message
//! types they do not know. A change that would break a consumer gets a new version
//! number. The JSON Schema in `schema/` is generated from these types
//! (`acme-bridge schema output|input`), and a test fails when the two drift.
//!
//! # A run
//! ```text
//! > {"type":"hello","protocol":1,"program":"acme-bridge","version":"0.1.0","name":"example.com","domains":["example.com","*.example.com"],"challenge_type":"dns-01","timeout_seconds":600}
//! > {"type":"challenge","name":"example.com","id":"c1","domain":"example.com","identifier":"example.com","wildcard":false,"token":"…","key_authorization":"…","challenge_type":"dns-01","dns":{"name":"_acme-challenge.example.com.","value":"…"},"deadline":"2026-11-28T18:10:00Z"}
//! > {"type":"challenge","name":"example.com","id":"c2","domain":"*.example.com","identifier":"example.com","wildcard":true,…,"dns":{"name":"_acme-challenge.example.com.","value":"…"},…}
//! > {"type":"awaiting","name":"example.com","ids":["c1","c2"],"deadline":"2026-11-28T18:10:00Z"}
//! < {"type":"ready","id":"c1"}
//! < {"type":"ready","id":"c2"}
//! > {"type":"cleanup","name":"example.com","id":"c1",…,"outcome":"valid"}
//! > {"type":"cleanup","name":"example.com","id":"c2",…,"outcome":"valid"}
//! > {"type":"certificate","name":"example.com","domains":["example.com","*.example.com"],"version":1,…}
//! ```
//! (`>` is stdout, `<` is stdin.)
//!
//! # Rules
//! - Every `challenge` is announced before any reply is awaited, so they can be
//!   deployed in parallel; `awaiting` follows the last one.
//! - A challenge is answered to the CA only after its `ready` reply. One `failed`
//!   reply ends the run: no further challenge is answered.
//! - `cleanup` is sent for every announced challenge, whatever happened: success,
//!   failure, timeout, end of input, or a signal. It names the exact value to remove.
//! - The run ends with exactly one `certificate` or one fatal `error`.
//! - A bad input line (not JSON, unknown type, unknown or already answered id) gets
//!   a non-fatal `error` of kind `input`; the run keeps waiting.
//!
//! # Several certificates at once
//! `acme-bridge renew` may run several certificates' runs concurrently on the same
//! stdout and stdin (`--parallel`). Each run is the sequence above, from its own
//! `hello` to its own `certificate` or fatal `error`; runs interleave line by line.
//! Every message names its certificate (`name`), challenge ids are `NAME/c1`,
//! `NAME/c2`, … (unique within the process), and each reply is routed to its run
//! by its `id`. A reply whose id no run claims gets a non-fatal `error` without a
//! `name`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::challenge::{Challenge, ChallengeType};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message acme-bridge writes on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// First message of every run.
    Hello(Hello),
    /// A challenge to deploy; expects a `ready` or `failed` reply.
    Challenge(ChallengeMessage),
    /// Every challenge has been announced; replies are awaited until `deadline`.
    Awaiting(Awaiting),
    /// Remove what was deployed for a challenge. Needs no reply.
    Cleanup(Cleanup),
    /// The certificate was issued and stored. Last message of a successful run.
    Certificate(CertificateMessage),
    /// Something went wrong. Fatal errors are the last message of a run.
    Error(ErrorMessage),
}

/// A reply acme-bridge reads on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// The challenge is deployed and visible to the CA: answer it now.
    Ready {
        /// The challenge's `id`.
        id: String,
    },
    /// The challenge could not be deployed: it is not answered and the run fails.
    Failed {
        /// The challenge's `id`.
        id: String,
        /// Why, in words for the log and the final error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// The first message: who is speaking, which protocol, and what this run is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// Protocol version; this document describes version 1.
    pub protocol: u32,
    /// Always `acme-bridge`.
    pub program: String,
    /// The program's version.
    pub version: String,
    /// The certificate's name (its directory under `live/`).
    pub name: String,
    /// Every name the certificate is for, in order.
    pub domains: Vec<String>,
    /// The challenge type this run uses.
    pub challenge_type: ChallengeType,
    /// How long replies are awaited once challenges are announced.
    pub timeout_seconds: u64,
}

/// A challenge to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChallengeMessage {
    /// The certificate this is about, as in `hello`: concurrent runs of `renew`
    /// share stdout, and this tells them apart.
    pub name: String,
    /// The challenge data.
    #[serde(flatten)]
    pub challenge: Challenge,
    /// When acme-bridge stops waiting for the reply (RFC 3339, UTC).
    #[schemars(extend("format" = "date-time"))]
    pub deadline: String,
}

/// All challenges are announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Awaiting {
    /// The certificate this is about, as in `hello`: concurrent runs of `renew`
    /// share stdout, and this tells them apart.
    pub name: String,
    /// The ids that need a reply.
    pub ids: Vec<String>,
    /// When acme-bridge stops waiting (RFC 3339, UTC).
    #[schemars(extend("format" = "date-time"))]
    pub deadline: String,
}

/// Remove what was deployed for a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cleanup {
    /// The certificate this is about, as in `hello`: concurrent runs of `renew`
    /// share stdout, and this tells them apart.
    pub name: String,
    /// The same challenge data as announced: remove exactly this value.
    #[serde(flatten)]
    pub challenge: Challenge,
    /// What became of the challenge.
    pub outcome: Outcome,
    /// The CA's problem document when the outcome is `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// What became of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The CA validated it.
    Valid,
    /// The CA tried and rejected it.
    Invalid,
    /// It was never answered to the CA.
    NotValidated,
    /// It was answered, but the run ended before the CA's verdict was known.
    Unknown,
}

/// The certificate was issued and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertificateMessage {
    /// The certificate's name (directory under `live/` and `archive/`).
    pub name: String,
    /// The names the certificate is for.
    pub domains: Vec<String>,
    /// Archive version: the `N` in `archive/NAME/certN.pem`.
    pub version: u32,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity (RFC 3339, UTC).
    #[schemars(extend("format" = "date-time"))]
    pub not_before: String,
    /// End of validity (RFC 3339, UTC).
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
    /// `live/NAME/cert.pem`: the certificate alone.
    pub cert_path: String,
    /// `live/NAME/chain.pem`: the intermediates.
    pub chain_path: String,
    /// `live/NAME/fullchain.pem`: the certificate and intermediates.
    pub fullchain_path: String,
    /// `live/NAME/privkey.pem`: the private key (mode 0600).
    pub key_path: String,
}

/// An error. Fatal ones end the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorMessage {
    /// Whether the run ends with this error. Non-fatal errors are about input lines.
    pub fatal: bool,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A sentence for people.
    pub message: String,
    /// The challenge this is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The certificate this is about, when there is one (absent for an input line
    /// that no run could claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The CA's problem document, unchanged in meaning, when the CA reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// Kinds of error, stable for automation to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An input line was not understood (non-fatal).
    Input,
    /// No reply came before the deadline.
    Timeout,
    /// stdin closed while replies were still awaited.
    Eof,
    /// The consumer reported a challenge as failed, or the CA found it invalid.
    Challenge,
    /// The CA refused a request or could not be reached.
    Ca,
    /// The command line or configuration is wrong.
    Config,
    /// Reading or writing files failed, or another run holds the lock.
    Storage,
    /// A signal stopped the run.
    Interrupted,
    /// A bug or an unexpected condition.
    Internal,
}

/// An RFC 7807 problem document as the CA sent it ([RFC 8555 §6.7]).
///
/// [RFC 8555 §6.7]: https://www.rfc-editor.org/rfc/rfc8555#section-6.7
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// The problem type, e.g. `urn:ietf:params:acme:error:unauthorized`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The CA's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The HTTP status the CA answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Problems per identifier ([RFC 8555 §6.7.1]).
    ///
    /// [RFC 8555 §6.7.1]: https://www.rfc-editor.org/rfc/rfc8555#section-6.7.1
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<Subproblem>,
}

/// A problem about one identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subproblem {
    /// The problem type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The CA's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The identifier it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<ProblemIdentifier>,
}

/// An identifier inside a subproblem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProblemIdentifier {
    /// `dns` (or `ip`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The name.
    pub value: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let detail = self.detail.as_deref().unwrap_or("no detail given");
        write!(f, "{detail}")?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        for sub in &self.subproblems {
            let who = sub.identifier.as_ref().map_or("?", |i| i.value.as_str());
            write!(
                f,
                "; {who}: {}",
                sub.detail.as_deref().unwrap_or("no detail given")
            )?;
            if let Some(kind) = &sub.kind {
                write!(f, " ({kind})")?;
            }
        }
        Ok(())
    }
}

/// Which schema to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaDocument {
    /// Messages acme-bridge writes: `schema/output-v1.json`.
    Output,
    /// Replies acme-bridge reads: `schema/input-v1.json`.
    Input,
    /// `acme-bridge list`: `schema/list-v1.json`.
    List,
    /// `acme-bridge plan`: `schema/plan-v1.json`.
    Plan,
    /// `acme-bridge order begin`: `schema/order-v1.json`.
    Order,
}

impl SchemaDocument {
    /// The file under `schema/` that holds the committed copy.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Output => "output-v1.json",
            Self::Input => "input-v1.json",
            Self::List => "list-v1.json",
            Self::Plan => "plan-v1.json",
            Self::Order => "order-v1.json",
        }
    }

    /// The JSON Schema (draft 2020-12), pretty-printed with a final newline.
    pub fn render(self) -> String {
        let schema = match self {
            Self::Output => schemars::schema_for!(Output),
            Self::Input => schemars::schema_for!(Input),
            Self::List => schemars::schema_for!(crate::report::CertificateList),
            Self::Plan => schemars::schema_for!(crate::report::Plan),
            Self::Order => schemars::schema_for!(crate::report::OrderDocument),
        };
        // Keys sorted, whatever map order serde_json keeps: the committed files
        // stay stable (serde_json's `preserve_order` is enabled for the
        // certbot-external-auth messages, whose field order matters).
        // schemars still puts its keywords (`$schema`, `title`, …) first.
        let mut value = schema.to_value();
        value.sort_all_objects();
        let schema = schemars::Schema::try_from(value).expect("a schema is an object");
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{ChallengeKind, DnsRecord};

    #[test]
    fn messages_are_flat_objects_with_a_type() {
        let msg = Output::Challenge(ChallengeMessage {
            name: "example.com".into(),
            challenge: Challenge {
                id: "c1".into(),
                domain: "*.example.com".into(),
                identifier: "example.com".into(),
                wildcard: true,
                token: "tok".into(),
                key_authorization: "tok.thumb".into(),
                kind: ChallengeKind::Dns01 {
                    dns: DnsRecord {
                        name: "_acme-challenge.example.com.".into(),
                        value: "v".into(),
                    },
                },
            },
            deadline: "2026-11-28T18:00:00Z".into(),
        });
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "challenge");
        assert_eq!(json["challenge_type"], "dns-01");
        assert_eq!(json["dns"]["name"], "_acme-challenge.example.com.");
        assert_eq!(json["deadline"], "2026-11-28T18:00:00Z");
        let back: Output = serde_json::from_value(json).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn replies_ignore_unknown_fields() {
        let input: Input =
            serde_json::from_str(r#"{"type":"ready","id":"c1","extra":[1,2]}"#).unwrap();
        assert_eq!(input, Input::Ready { id: "c1".into() });
        let failed: Input =
            serde_json::from_str(r#"{"type":"failed","id":"c2","reason":"no API"}"#).unwrap();
        assert!(matches!(failed, Input::Failed { reason: Some(r), .. } if r == "no API"));
    }
}
