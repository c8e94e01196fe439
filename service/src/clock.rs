//! Wall-clock time as Kafka timestamps and windows count it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
///
/// A clock set before 1970 reads as 0 rather than panicking: windows then
/// look long past, which the schedule and the validation handle as such.
///
/// ```
/// let now = hushmap_service::clock::now_ms();
/// assert!(now > 1_700_000_000_000, "after November 2023");
/// ```
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
