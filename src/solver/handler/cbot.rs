//! certbot-external-auth's handler convention: `HANDLER <command>`, every field of
//! the command's message as `<key>` and `cbot_<key>` environment variables, and
//! `cbot_json` holding the whole message.

use std::time::SystemTime;

use serde_json::Value;

use crate::challenge::Challenge;
use crate::solver::external_auth::{self, Message};
use crate::solver::{Done, Issued};
use crate::store::Lineage;

/// `perform`'s message (`perform_challenge`).
pub(super) fn perform_message(challenge: &Challenge) -> Message {
    external_auth::perform_message(challenge)
}

/// `cleanup`'s message, with the challenge's real outcome and the CA's problem.
pub(super) fn cleanup_message(done: &Done<'_>) -> Message {
    external_auth::cleanup_message(done.challenge, done.outcome, done.problem)
}

/// `deploy_cert`'s message; `started` is when the run began.
pub(super) fn deploy_cert_message(issued: &Issued, started: SystemTime) -> Message {
    external_auth::deploy_message(issued, started)
}

/// `unchanged_cert`'s message: the same `deploy_cert` record, as the plugin sent it.
pub(super) fn unchanged_cert_message(
    domains: &[String],
    lineage: &Lineage,
    started: SystemTime,
) -> Message {
    external_auth::deploy_message_for(domains, lineage, started)
}

/// The environment for one message: each field as `<key>` and `cbot_<key>`
/// (strings as they are, `null` as an empty string, anything else as JSON text),
/// and `cbot_json` with the whole message. As in certbot-external-auth, the
/// `command` field (a shell recipe for http-01) is only in `cbot_json`. NUL bytes,
/// which an environment cannot hold, are dropped.
pub(super) fn env(message: &Message) -> Vec<(String, String)> {
    let clean = |s: &str| s.replace('\0', "");
    let mut env = Vec::new();
    for (key, value) in message {
        if key == "command" || key.is_empty() || key.contains(['=', '\0']) {
            continue;
        }
        let text = match value {
            Value::String(s) => clean(s),
            Value::Null => String::new(),
            other => clean(&other.to_string()),
        };
        env.push((key.clone(), text.clone()));
        env.push((format!("cbot_{key}"), text));
    }
    env.push((
        "cbot_json".to_owned(),
        clean(&Value::Object(message.clone()).to_string()),
    ));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{ChallengeSource, ChallengeType};

    #[test]
    fn every_field_twice_and_the_whole_message() {
        let message: Message = serde_json::from_str(
            r#"{"cmd":"perform_challenge","type":"dns-01","domain":"a.test","validated":null,"port":443,"command":"sh recipe"}"#,
        )
        .unwrap();
        let env = env(&message);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("cmd"), Some("perform_challenge"));
        assert_eq!(get("cbot_type"), Some("dns-01"));
        assert_eq!(get("domain"), Some("a.test"));
        assert_eq!(get("cbot_validated"), Some(""));
        assert_eq!(get("port"), Some("443"));
        assert_eq!(get("command"), None);
        let json: Value = serde_json::from_str(get("cbot_json").unwrap()).unwrap();
        assert_eq!(json["command"], "sh recipe");
        assert_eq!(json["domain"], "a.test");
    }

    #[test]
    fn a_dns01_perform_in_the_environment() {
        let challenge = Challenge::compute(
            ChallengeSource {
                id: "c1".into(),
                domain: "*.a.test",
                identifier: "a.test",
                wildcard: true,
                token: "tok",
                challenge_type: ChallengeType::Dns01,
            },
            "thumb",
        )
        .unwrap();
        let env = env(&perform_message(&challenge));
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("cmd"), Some("perform_challenge"));
        assert_eq!(get("domain"), Some("a.test"));
        assert_eq!(get("cbot_txt_domain"), Some("_acme-challenge.a.test"));
        assert_eq!(get("key_auth"), Some("tok.thumb"));
        assert_eq!(get("validation").map(str::len), Some(43));
    }
}
