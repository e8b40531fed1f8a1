//! Timestamps as the protocol and the files on disk write them: RFC 3339, UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats a point in time as RFC 3339 in UTC, whole seconds.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}
