//! Intake: topic bytes to a [`CoarseRecord`], or a counted reason to drop them.
//!
//! Every record on the submissions topic should be a sealed coarse record
//! of this aggregator's window length. Anything else (empty, truncated,
//! oversized, unsealed, under a key we do not hold, tampered, authentic but
//! invalid, another window length, a replayed copy of a record already
//! buffered) is dropped and counted by [`DropReason`]: it never reaches a
//! count and never stops the consumer.

use hushmap_schema::{CoarseRecord, OpenError, PayloadKeyring, WindowLength};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a topic record was dropped before counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No payload at all (a tombstone or a stray key-only record).
    Empty,
    /// Not the sealed envelope's length: truncated or oversized.
    Malformed,
    /// A plain (or otherwise unsealed) record.
    Unsealed,
    /// An envelope sealed for another topic: a submission copied onto the
    /// bounded topic, or a bounded message copied onto the submissions topic.
    WrongPurpose,
    /// Sealed under a key id this aggregator does not hold.
    UnknownKey,
    /// Failed authentication.
    Tampered,
    /// Authentic, but the record inside does not decode.
    InvalidRecord,
    /// A valid record for another window length (ingest misconfigured).
    WindowLength,
    /// A second copy of a sealed record already in its window (same seal).
    Replayed,
    /// Its window already buffers `max_buffered_records_per_window`.
    WindowFull,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Empty,
        DropReason::Malformed,
        DropReason::Unsealed,
        DropReason::WrongPurpose,
        DropReason::UnknownKey,
        DropReason::Tampered,
        DropReason::InvalidRecord,
        DropReason::WindowLength,
        DropReason::Replayed,
        DropReason::WindowFull,
    ];

    /// The `reason` label on `hushmap_aggregate_records_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Empty => "empty",
            DropReason::Malformed => "malformed",
            DropReason::Unsealed => "unsealed",
            DropReason::WrongPurpose => "wrong_purpose",
            DropReason::UnknownKey => "unknown_key",
            DropReason::Tampered => "tampered",
            DropReason::InvalidRecord => "invalid_record",
            DropReason::WindowLength => "window_length",
            DropReason::Replayed => "replayed",
            DropReason::WindowFull => "window_full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<&OpenError> for DropReason {
    fn from(e: &OpenError) -> DropReason {
        match e {
            OpenError::Length(_) => DropReason::Malformed,
            OpenError::Unsealed(_) => DropReason::Unsealed,
            OpenError::WrongPurpose { .. } => DropReason::WrongPurpose,
            OpenError::UnknownKey(_) => DropReason::UnknownKey,
            OpenError::Tampered => DropReason::Tampered,
            OpenError::Record(_) => DropReason::InvalidRecord,
        }
    }
}

/// Whether a window buffering `held` records may take one more under
/// `cap`; `full` remembers a refusal so the warning (no ids, no values) is
/// logged once per window.
pub(crate) fn has_room(held: usize, cap: usize, full: &mut bool, window_start: i64) -> bool {
    if held < cap {
        return true;
    }
    if !*full {
        *full = true;
        tracing::warn!(
            window_start,
            cap,
            "a window reached max_buffered_records_per_window; its further records are refused"
        );
    }
    false
}

/// Opens one topic record for a window length, with its seal id (see
/// [`PayloadKeyring::open_with_seal_id`]); never panics on any input.
/// Replays are recognised later, per window, by the seal id.
///
/// ```
/// # use hushmap_aggregate::intake::{open_record, DropReason};
/// # use hushmap_schema::{PayloadKeyring, WindowLength};
/// let keys: PayloadKeyring = PayloadKeyring::generate_entry(1).parse().unwrap();
/// let day = WindowLength::ONE_DAY;
/// assert_eq!(open_record(&keys, day, None), Err(DropReason::Empty));
/// assert_eq!(open_record(&keys, day, Some(b"{\"lat\":1}")), Err(DropReason::Unsealed));
/// ```
pub fn open_record(
    keyring: &PayloadKeyring,
    window_length: WindowLength,
    payload: Option<&[u8]>,
) -> Result<(CoarseRecord, u128), DropReason> {
    let payload = payload.filter(|p| !p.is_empty()).ok_or(DropReason::Empty)?;
    let (record, seal_id) = keyring
        .open_with_seal_id(payload)
        .map_err(|e| DropReason::from(&e))?;
    if record.window_length != window_length {
        return Err(DropReason::WindowLength);
    }
    Ok((record, seal_id))
}

/// Dropped records by reason.
#[derive(Debug, Default)]
pub struct DropCounts([AtomicU64; DropReason::ALL.len()]);

impl DropCounts {
    /// [`open_record`], counting the reason when the record is dropped:
    /// every stage that opens topic records counts its drops the same way.
    pub fn opened(
        &self,
        keyring: &PayloadKeyring,
        window_length: WindowLength,
        payload: Option<&[u8]>,
    ) -> Option<(CoarseRecord, u128)> {
        open_record(keyring, window_length, payload)
            .inspect_err(|&reason| self.add(reason))
            .ok()
    }

    pub fn add(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|&r| self.get(r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{AgeBand, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window};

    fn record(len: WindowLength) -> CoarseRecord {
        CoarseRecord {
            window: Window::containing(1_764_000_000_000, len),
            window_length: len,
            region: RegionCell::from_coordinate(51.5, -0.1, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: AgeBand::From18To29,
            risk: RiskLevel::Low,
            symptoms: SymptomSet::default(),
            contributor: ContributorKey([1; 16]),
        }
    }

    #[test]
    fn each_kind_of_bad_record_has_its_reason() {
        let keys: PayloadKeyring = PayloadKeyring::generate_entry(1).parse().unwrap();
        let others: PayloadKeyring = PayloadKeyring::generate_entry(2).parse().unwrap();
        let day = WindowLength::ONE_DAY;
        let good = keys.public_key().seal(&record(day));
        let (opened, seal_id) = open_record(&keys, day, Some(&good)).unwrap();
        assert_eq!(opened, record(day));
        assert_eq!(open_record(&keys, day, Some(&good)).unwrap().1, seal_id);
        let again = keys.public_key().seal(&record(day));
        let bounded = keys
            .bounded_keyring()
            .seal(&hushmap_schema::BoundedMessage::Record(record(day)));
        assert_ne!(open_record(&keys, day, Some(&again)).unwrap().1, seal_id);
        let mut tampered = good.clone();
        tampered[40] ^= 0x80;
        let hour = WindowLength::from_secs(3600).unwrap();
        let cases: [(Option<&[u8]>, DropReason); 8] = [
            (None, DropReason::Empty),
            (Some(&[]), DropReason::Empty),
            (Some(&good[..good.len() - 1]), DropReason::Malformed),
            (Some(&record(day).encode()), DropReason::Unsealed),
            (Some(&bounded), DropReason::WrongPurpose),
            (
                Some(&others.public_key().seal(&record(day))),
                DropReason::UnknownKey,
            ),
            (Some(&tampered), DropReason::Tampered),
            (
                Some(&keys.public_key().seal(&record(hour))),
                DropReason::WindowLength,
            ),
        ];
        let counts = DropCounts::default();
        for (payload, want) in cases {
            let got = open_record(&keys, day, payload).unwrap_err();
            assert_eq!(got, want);
            counts.add(got);
        }
        assert_eq!(counts.get(DropReason::Empty), 2);
        assert_eq!(counts.total(), 8);
    }
}
