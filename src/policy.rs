//! Renewal policy: when a certificate is due.
//!
//! A certificate is due when the CA's ARI suggested window ([RFC 9773 §4.2]) has
//! begun, when the CA offers one; otherwise when a third of its lifetime is left
//! (certbot's rule), or when less than `--renew-before` is left if that is given.
//! A revoked or expired certificate is always due.
//!
//! [RFC 9773 §4.2]: https://www.rfc-editor.org/rfc/rfc9773#section-4.2

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the decision is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The CA's suggested window, when known.
    pub ari_window: Option<(OffsetDateTime, OffsetDateTime)>,
    /// Whether the certificate was revoked through acme-bridge.
    pub revoked: bool,
    /// `--renew-before`: renew when less than this is left.
    pub renew_before: Option<Duration>,
}

/// Why a certificate is or is not due, stable for automation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Renewal was forced (`--force`).
    Forced,
    /// The certificate was revoked.
    Revoked,
    /// The certificate has expired.
    Expired,
    /// The CA's ARI window has begun.
    AriWindow,
    /// The CA's ARI window has not begun.
    AriNotYet,
    /// Less than a third of the lifetime is left.
    LifetimeThird,
    /// Less than `--renew-before` is left.
    RenewBefore,
    /// More than the threshold is left.
    NotDue,
}

/// The verdict for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether to renew now.
    pub should_renew: bool,
    /// Why.
    pub reason: Reason,
    /// When it is (or was) due.
    pub due_at: OffsetDateTime,
}

impl Reason {
    /// A sentence for logs and people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Forced => "renewal was forced",
            Self::Revoked => "the certificate was revoked",
            Self::Expired => "the certificate has expired",
            Self::AriWindow => "the CA's suggested renewal window (ARI) has begun",
            Self::AriNotYet => "the CA's suggested renewal window (ARI) has not begun",
            Self::LifetimeThird => "less than a third of its lifetime is left",
            Self::RenewBefore => "less than --renew-before is left",
            Self::NotDue => "not due yet",
        }
    }
}

/// Decides whether a certificate is due at `now`.
pub fn decide(facts: &Facts, now: OffsetDateTime, force: bool) -> Decision {
    let verdict = |should_renew, reason, due_at| Decision {
        should_renew,
        reason,
        due_at,
    };
    if force {
        return verdict(true, Reason::Forced, now);
    }
    if facts.revoked {
        return verdict(true, Reason::Revoked, now);
    }
    if now >= facts.not_after {
        return verdict(true, Reason::Expired, facts.not_after);
    }
    if let Some((start, _end)) = facts.ari_window {
        return if now >= start {
            verdict(true, Reason::AriWindow, start)
        } else {
            verdict(false, Reason::AriNotYet, start)
        };
    }
    let (due_at, reason) = match facts.renew_before {
        Some(before) => (
            // Never before issuance: a longer --renew-before than the lifetime (or one
            // beyond the calendar) means due since not_before, not a panic.
            time::Duration::try_from(before)
                .ok()
                .and_then(|before| facts.not_after.checked_sub(before))
                .map_or(facts.not_before, |due| due.max(facts.not_before)),
            Reason::RenewBefore,
        ),
        None => (
            facts.not_after - (facts.not_after - facts.not_before) / 3,
            Reason::LifetimeThird,
        ),
    };
    if now >= due_at {
        verdict(true, reason, due_at)
    } else {
        verdict(false, Reason::NotDue, due_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn facts() -> Facts {
        Facts {
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2026-03-31 0:00 UTC), // 89 days
            ari_window: None,
            revoked: false,
            renew_before: None,
        }
    }

    #[test]
    fn a_third_of_the_lifetime_left_makes_it_due() {
        let f = facts();
        let due = f.not_after - (f.not_after - f.not_before) / 3;
        let before = decide(&f, due - time::Duration::minutes(1), false);
        assert_eq!(
            (before.should_renew, before.reason),
            (false, Reason::NotDue)
        );
        assert_eq!(before.due_at, due);
        let after = decide(&f, due, false);
        assert_eq!(
            (after.should_renew, after.reason),
            (true, Reason::LifetimeThird)
        );
    }

    #[test]
    fn renew_before_overrides_the_third() {
        let mut f = facts();
        f.renew_before = Some(Duration::from_secs(7 * 86_400));
        let d = decide(&f, datetime!(2026-03-20 0:00 UTC), false);
        assert_eq!((d.should_renew, d.reason), (false, Reason::NotDue));
        let d = decide(&f, datetime!(2026-03-25 0:00 UTC), false);
        assert_eq!((d.should_renew, d.reason), (true, Reason::RenewBefore));
    }

    #[test]
    fn the_ari_window_wins_over_the_lifetime_rule() {
        let mut f = facts();
        f.ari_window = Some((
            datetime!(2026-01-10 0:00 UTC),
            datetime!(2026-01-12 0:00 UTC),
        ));
        let d = decide(&f, datetime!(2026-01-11 0:00 UTC), false);
        assert_eq!((d.should_renew, d.reason), (true, Reason::AriWindow));
        let d = decide(&f, datetime!(2026-01-05 0:00 UTC), false);
        assert_eq!((d.should_renew, d.reason), (false, Reason::AriNotYet));
    }

    #[test]
    fn revoked_expired_and_forced_are_always_due() {
        let mut f = facts();
        assert_eq!(
            decide(&f, datetime!(2026-01-02 0:00 UTC), true).reason,
            Reason::Forced
        );
        assert_eq!(
            decide(&f, datetime!(2026-04-02 0:00 UTC), false).reason,
            Reason::Expired
        );
        f.revoked = true;
        assert!(decide(&f, datetime!(2026-01-02 0:00 UTC), false).should_renew);
    }
}
