//! The wall clock, as records and metrics state it: milliseconds (records'
//! `received_at_ms`, snapshots' `as_of_ms`, the follower's lag) and seconds
//! (Prometheus timestamps) since the Unix epoch. A clock before 1970 reads 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
