//! dehydrated's hook convention: `HOOK <name> args…`, one executable dispatching on
//! its first argument.

use serde_json::json;

use crate::challenge::{Challenge, ChallengeKind};
use crate::error::Error;
use crate::keys::KeyType;
use crate::protocol::Problem;

/// The name dehydrated calls at start-up to check that unknown hooks are ignored.
pub(super) const BROKEN_HOOK_NAME: &str = "this_hookscript_is_broken__dehydrated_is_working_fine__please_ignore_unknown_hooks_in_your_script";

/// dehydrated's message when that check fails.
pub(super) const BROKEN_HOOK_MESSAGE: &str = "Please check your hook script, it should exit cleanly without doing anything on unknown/new hooks.";

/// dehydrated's `COMMAND` while issuing (`dehydrated --cron`).
pub(super) const COMMAND: &str = "sign_domains";

/// `TOKEN_VALUE`: the TXT value for dns-01, the key authorization for http-01, the
/// hex SHA-256 of the key authorization for tls-alpn-01.
pub(super) fn token_value(challenge: &Challenge) -> &str {
    match &challenge.kind {
        ChallengeKind::Dns01 { dns } => &dns.value,
        ChallengeKind::Http01 { http } => &http.body,
        ChallengeKind::TlsAlpn01 { tls_alpn } => &tls_alpn.digest,
    }
}

/// `DOMAIN TOKEN_FILENAME TOKEN_VALUE`. `DOMAIN` is the identifier the CA validates
/// (a wildcard's base, as dehydrated passes it).
pub(super) fn triple(challenge: &Challenge) -> [String; 3] {
    [
        challenge.identifier.clone(),
        challenge.token.clone(),
        token_value(challenge).to_owned(),
    ]
}

/// dehydrated's `KEY_ALGO` names.
pub(super) fn key_algo(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::EcP256 => "prime256v1",
        KeyType::EcP384 => "secp384r1",
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => "rsa",
    }
}

/// `invalid_challenge`'s `RESPONSE`: the challenge object as the CA shows it for an
/// invalid challenge (`type`, `status`, `token`, and the problem as `error`), which
/// is what dehydrated passes.
pub(super) fn invalid_response(challenge: &Challenge, problem: Option<&Problem>) -> String {
    json!({
        "type": challenge.challenge_type(),
        "status": "invalid",
        "token": challenge.token,
        "error": problem,
    })
    .to_string()
}

/// `request_failure STATUSCODE REASON REQTYPE HEADERS` for an error the CA answered
/// with a problem document; `None` for every other error. `REASON` is the CA's
/// problem document (JSON, the body dehydrated passes), `REQTYPE` the request's
/// method as dehydrated names it (`get` for the directory, else `post`: every
/// other ACME request is a signed POST), `HEADERS` the one header acme-bridge keeps
/// (`Retry-After`, from a rate-limit answer).
pub(super) fn request_failure(err: &Error) -> Option<[String; 4]> {
    use crate::acme::AcmeError;
    let Error::Acme(acme) = err else {
        return None;
    };
    let (context, problem, retry_at) = match acme.as_ref() {
        AcmeError::Problem { context, problem } => (context, problem, None),
        AcmeError::RateLimited {
            context,
            problem,
            retry_at,
        } => (context, problem, retry_at.as_ref()),
        _ => return None,
    };
    let status = problem.status.map(|s| s.to_string()).unwrap_or_default();
    let reason = serde_json::to_string(problem).unwrap_or_default();
    let method = if context.starts_with("reading the directory") {
        "get"
    } else {
        "post"
    };
    let headers = retry_at
        .map(|at| format!("Retry-After: {at}"))
        .unwrap_or_default();
    Some([status, reason, method.to_owned(), headers])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{ChallengeSource, ChallengeType};

    fn challenge(kind: ChallengeType) -> Challenge {
        Challenge::compute(
            ChallengeSource {
                id: "c1".into(),
                domain: "*.example.com",
                identifier: "example.com",
                wildcard: true,
                token: "tok_en-1",
                challenge_type: kind,
            },
            "thumb",
        )
        .unwrap()
    }

    #[test]
    fn token_values_per_challenge_type() {
        let dns = challenge(ChallengeType::Dns01);
        let ChallengeKind::Dns01 { dns: record } = &dns.kind else {
            unreachable!()
        };
        assert_eq!(
            triple(&dns),
            [
                "example.com".to_owned(),
                "tok_en-1".into(),
                record.value.clone()
            ]
        );
        assert_eq!(
            token_value(&challenge(ChallengeType::Http01)),
            "tok_en-1.thumb"
        );
        let alpn = challenge(ChallengeType::TlsAlpn01);
        let value = token_value(&alpn);
        assert_eq!(value.len(), 64);
        assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn invalid_response_carries_the_problem_as_error() {
        let problem = Problem {
            kind: Some("urn:ietf:params:acme:error:unauthorized".into()),
            detail: Some("wrong TXT".into()),
            status: Some(403),
            subproblems: Vec::new(),
        };
        let value: serde_json::Value = serde_json::from_str(&invalid_response(
            &challenge(ChallengeType::Dns01),
            Some(&problem),
        ))
        .unwrap();
        assert_eq!(value["type"], "dns-01");
        assert_eq!(value["status"], "invalid");
        assert_eq!(value["error"]["detail"], "wrong TXT");
        assert_eq!(value["error"]["status"], 403);
    }

    #[test]
    fn request_failure_only_for_ca_problems() {
        let problem = Problem {
            kind: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
            detail: Some("no".into()),
            status: Some(400),
            subproblems: Vec::new(),
        };
        let err = Error::from(crate::acme::AcmeError::Problem {
            context: "creating the order".into(),
            problem,
        });
        let [status, reason, method, headers] = request_failure(&err).unwrap();
        assert_eq!(status, "400");
        assert!(reason.contains("rejectedIdentifier"), "{reason}");
        assert_eq!(method, "post");
        assert_eq!(headers, "");
        assert!(request_failure(&Error::Config("x".into())).is_none());
    }
}
