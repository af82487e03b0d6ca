//! Timestamps as the API and the stores see them.

use time::OffsetDateTime;

/// Now, in UTC, truncated to microseconds so it round-trips through every
/// store (PostgreSQL keeps microseconds).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}
