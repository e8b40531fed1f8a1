//! certbot's manual hooks (`--manual-auth-hook`, `--manual-cleanup-hook`): one
//! call per challenge, everything in `CERTBOT_*` environment variables.

use crate::challenge::{Challenge, ChallengeKind};

/// The environment of the auth hook for `challenges[index]` (the cleanup hook gets
/// the same plus `CERTBOT_AUTH_OUTPUT`). `None` for a challenge type certbot's
/// convention has no form for (tls-alpn-01).
pub(super) fn env(challenges: &[Challenge], index: usize) -> Option<Vec<(String, String)>> {
    let challenge = &challenges[index];
    let validation = match &challenge.kind {
        ChallengeKind::Dns01 { dns } => dns.value.clone(),
        ChallengeKind::Http01 { http } => http.body.clone(),
        ChallengeKind::TlsAlpn01 { .. } => return None,
    };
    let mut env = vec![
        ("CERTBOT_DOMAIN".to_owned(), challenge.identifier.clone()),
        (
            "CERTBOT_IDENTIFIER".to_owned(),
            challenge.identifier.clone(),
        ),
        ("CERTBOT_VALIDATION".to_owned(), validation),
        (
            "CERTBOT_REMAINING_CHALLENGES".to_owned(),
            (challenges.len() - index - 1).to_string(),
        ),
        (
            "CERTBOT_ALL_DOMAINS".to_owned(),
            challenges
                .iter()
                .map(|c| c.identifier.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let ChallengeKind::Http01 { .. } = challenge.kind {
        env.push(("CERTBOT_TOKEN".to_owned(), challenge.token.clone()));
    }
    Some(env)
}

/// `CERTBOT_AUTH_OUTPUT`: the auth hook's stdout, trimmed as certbot does. It is
/// already capped at [`crate::runner::MAX_STDOUT`]; NUL bytes cannot be passed in an
/// environment variable and are dropped.
pub(super) fn auth_output(stdout: &str) -> String {
    stdout.trim().replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{ChallengeSource, ChallengeType};

    fn challenge(id: &str, domain: &str, kind: ChallengeType) -> Challenge {
        Challenge::compute(
            ChallengeSource {
                id: id.into(),
                domain,
                identifier: domain.trim_start_matches("*."),
                wildcard: domain.starts_with("*."),
                token: "tok",
                challenge_type: kind,
            },
            "thumb",
        )
        .unwrap()
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn dns_and_http_environments() {
        let all = [
            challenge("c1", "example.com", ChallengeType::Dns01),
            challenge("c2", "*.example.com", ChallengeType::Dns01),
        ];
        let first = env(&all, 0).unwrap();
        assert_eq!(get(&first, "CERTBOT_DOMAIN"), Some("example.com"));
        assert_eq!(get(&first, "CERTBOT_REMAINING_CHALLENGES"), Some("1"));
        assert_eq!(
            get(&first, "CERTBOT_ALL_DOMAINS"),
            Some("example.com,example.com")
        );
        assert_eq!(get(&first, "CERTBOT_TOKEN"), None);
        let ChallengeKind::Dns01 { dns } = &all[1].kind else {
            unreachable!()
        };
        let second = env(&all, 1).unwrap();
        assert_eq!(get(&second, "CERTBOT_VALIDATION"), Some(dns.value.as_str()));
        assert_eq!(get(&second, "CERTBOT_REMAINING_CHALLENGES"), Some("0"));

        let http = [challenge("c1", "a.test", ChallengeType::Http01)];
        let env = env(&http, 0).unwrap();
        assert_eq!(get(&env, "CERTBOT_TOKEN"), Some("tok"));
        assert_eq!(get(&env, "CERTBOT_VALIDATION"), Some("tok.thumb"));
        assert_eq!(get(&env, "CERTBOT_IDENTIFIER"), Some("a.test"));
    }

    #[test]
    fn tls_alpn_has_no_certbot_form() {
        let alpn = [challenge("c1", "a.test", ChallengeType::TlsAlpn01)];
        assert!(super::env(&alpn, 0).is_none());
        assert_eq!(auth_output("  out\0put\n"), "output");
    }
}
