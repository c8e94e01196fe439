//! Coarse time: submissions are reduced to the start of their window.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a `window_secs` setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowLengthError {
    #[error("window_secs must be positive")]
    Zero,
    #[error("window_secs must be at least {min} outside dev mode (got {got})")]
    TooShort { min: u32, got: u32 },
}

/// Length of an aggregation window. Production deployments use 15 minutes
/// or more (the default is one day); shorter windows exist for demos and
/// tests and are only accepted in dev mode (checked by the services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WindowLength(u32);

impl WindowLength {
    /// Shortest window accepted outside dev mode.
    pub const PRODUCTION_MIN: WindowLength = WindowLength(15 * 60);
    pub const ONE_DAY: WindowLength = WindowLength(24 * 60 * 60);

    /// A window of `secs` seconds; `None` for zero.
    pub fn from_secs(secs: u32) -> Option<WindowLength> {
        (secs > 0).then_some(WindowLength(secs))
    }

    /// The window a service's `window_secs` setting gives: positive, and
    /// no shorter than [`PRODUCTION_MIN`](Self::PRODUCTION_MIN) unless in
    /// dev mode. Every service checks its setting with this, so ingest and
    /// the aggregator refuse the same values.
    ///
    /// ```
    /// use hushmap_schema::window::{WindowLength, WindowLengthError};
    /// assert_eq!(WindowLength::configured(3600, false).unwrap().secs(), 3600);
    /// assert!(matches!(WindowLength::configured(60, false), Err(WindowLengthError::TooShort { .. })));
    /// assert!(WindowLength::configured(60, true).is_ok());
    /// assert_eq!(WindowLength::configured(0, true), Err(WindowLengthError::Zero));
    /// ```
    pub fn configured(secs: u32, dev_mode: bool) -> Result<WindowLength, WindowLengthError> {
        let length = WindowLength::from_secs(secs).ok_or(WindowLengthError::Zero)?;
        if !dev_mode && length < WindowLength::PRODUCTION_MIN {
            return Err(WindowLengthError::TooShort {
                min: WindowLength::PRODUCTION_MIN.secs(),
                got: secs,
            });
        }
        Ok(length)
    }

    pub fn secs(self) -> u32 {
        self.0
    }

    pub fn millis(self) -> i64 {
        i64::from(self.0) * 1000
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }
}

impl Default for WindowLength {
    fn default() -> Self {
        WindowLength::ONE_DAY
    }
}

/// A half-open time interval `[start, start + length)`, aligned to the
/// Unix epoch (so every service computes the same windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Start, milliseconds since the Unix epoch (UTC).
    pub start_ms: i64,
    /// End (exclusive), milliseconds since the Unix epoch (UTC).
    pub end_ms: i64,
}

impl Window {
    /// The window containing the instant `t_ms`.
    ///
    /// ```
    /// use hushmap_schema::{Window, WindowLength};
    /// let len = WindowLength::from_secs(60).unwrap();
    /// let w = Window::containing(125_000, len);
    /// assert_eq!((w.start_ms, w.end_ms), (120_000, 180_000));
    /// ```
    pub fn containing(t_ms: i64, len: WindowLength) -> Window {
        let start_ms = t_ms.div_euclid(len.millis()) * len.millis();
        Window {
            start_ms,
            // Only the last window before i64::MAX saturates; no clock or
            // accepted `observed_at` comes near it.
            end_ms: start_ms.saturating_add(len.millis()),
        }
    }

    /// A window from its start, checking alignment; `None` also when its end
    /// would not fit in an i64 (a crafted record, found by fuzzing).
    pub fn from_start(start_ms: i64, len: WindowLength) -> Option<Window> {
        if start_ms.rem_euclid(len.millis()) != 0 {
            return None;
        }
        Some(Window {
            start_ms,
            end_ms: start_ms.checked_add(len.millis())?,
        })
    }
}

/// An instant given as text: milliseconds since the Unix epoch, an RFC 3339
/// time, or a `YYYY-MM-DD` date (its UTC midnight). `None` when it is none
/// of these.
///
/// ```
/// use hushmap_schema::window::parse_instant;
/// assert_eq!(parse_instant("1970-01-02"), Some(86_400_000));
/// assert_eq!(parse_instant("1970-01-01T00:01:00Z"), Some(60_000));
/// assert_eq!(parse_instant("60000"), Some(60_000));
/// assert_eq!(parse_instant("yesterday"), None);
/// ```
pub fn parse_instant(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &date)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_epoch_aligned() {
        let len = WindowLength::ONE_DAY;
        let w = Window::containing(1_700_000_000_123, len);
        assert_eq!(w.start_ms % len.millis(), 0);
        assert!(w.start_ms <= 1_700_000_000_123 && 1_700_000_000_123 < w.end_ms);
        assert_eq!(Window::from_start(w.start_ms, len), Some(w));
        assert_eq!(Window::from_start(w.start_ms + 1, len), None);
        // Instants before the epoch still land in the window that contains them.
        let w = Window::containing(-1, WindowLength::from_secs(10).unwrap());
        assert_eq!((w.start_ms, w.end_ms), (-10_000, 0));
    }

    #[test]
    fn the_last_window_before_overflow_is_refused_not_wrapped() {
        let len = WindowLength::from_secs(60).unwrap();
        let last = i64::MAX - i64::MAX.rem_euclid(len.millis());
        assert_eq!(Window::from_start(last, len), None);
        let before = last - len.millis();
        assert_eq!(Window::from_start(before, len).unwrap().end_ms, last);
        assert_eq!(Window::containing(i64::MAX, len).end_ms, i64::MAX);
    }
}
