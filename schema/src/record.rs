//! [`CoarseRecord`]: everything that survives ingest, and its wire encoding.
//!
//! The record holds a window, a region cell, an age band, the triage level,
//! the symptom set and a pseudonymous contributor key, and nothing else: no
//! coordinate, exact age, exact time, gender, condition, free text or id.
//!
//! Encoding (version 1, 41 bytes, little endian), chosen over a generic
//! format so that the byte layout itself shows there is no room for more:
//!
//! | offset | size | field                          |
//! |-------:|-----:|--------------------------------|
//! | 0      | 1    | version (`1`)                  |
//! | 1      | 8    | window start, ms since epoch   |
//! | 9      | 4    | window length, seconds         |
//! | 13     | 8    | region, raw H3 index           |
//! | 21     | 1    | age band code                  |
//! | 22     | 1    | risk level code                |
//! | 23     | 2    | symptom bit set                |
//! | 25     | 16   | contributor key                |

use crate::domain::{AgeBand, RiskLevel, SymptomSet};
use crate::region::{RegionCell, RegionError};
use crate::window::{Window, WindowLength};
use std::fmt;

/// 128-bit pseudonymous key of a contributor: a keyed hash of a signed-up
/// user's id, or a fresh random value for anonymous submissions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContributorKey(pub [u8; 16]);

impl ContributorKey {
    /// The key as two 64-bit halves (how Arrow columns store it).
    pub fn halves(self) -> (u64, u64) {
        let (hi, lo) = self.0.split_at(8);
        (
            u64::from_le_bytes(hi.try_into().expect("8 bytes")),
            u64::from_le_bytes(lo.try_into().expect("8 bytes")),
        )
    }
}

// Keys are pseudonyms; keep them out of logs even by accident.
impl fmt::Debug for ContributorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContributorKey(..)")
    }
}

/// One coarsened submission, as ingest produces it to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoarseRecord {
    pub window: Window,
    pub window_length: WindowLength,
    pub region: RegionCell,
    pub age_band: AgeBand,
    pub risk: RiskLevel,
    pub symptoms: SymptomSet,
    pub contributor: ContributorKey,
}

/// Why bytes from the topic are not a valid record. Bad records are skipped
/// and counted by the consumer, never counted in a release.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, expected {expected}", expected = CoarseRecord::ENCODED_LEN)]
    Length(usize),
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("window is not aligned to its length")]
    Window,
    #[error("region: {0}")]
    Region(#[from] RegionError),
    #[error("unknown age band code {0}")]
    AgeBand(u8),
    #[error("unknown risk level code {0}")]
    Risk(u8),
    #[error("unknown symptom bits {0:#x}")]
    Symptoms(u16),
}

impl CoarseRecord {
    pub const VERSION: u8 = 1;
    pub const ENCODED_LEN: usize = 41;

    /// Encodes the record.
    ///
    /// ```
    /// # use hushmap_schema::*;
    /// # use hushmap_schema::region::RegionResolution;
    /// let len = WindowLength::from_secs(60).unwrap();
    /// let record = CoarseRecord {
    ///     window: Window::containing(1_700_000_000_000, len),
    ///     window_length: len,
    ///     region: RegionCell::from_coordinate(51.5, -0.12, RegionResolution::new(5).unwrap()).unwrap(),
    ///     age_band: AgeBand::From30To44,
    ///     risk: RiskLevel::Moderate,
    ///     symptoms: [Symptom::Fever].into_iter().collect(),
    ///     contributor: ContributorKey([7; 16]),
    /// };
    /// let bytes = record.encode();
    /// assert_eq!(CoarseRecord::decode(&bytes), Ok(record));
    /// ```
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = Self::VERSION;
        out[1..9].copy_from_slice(&self.window.start_ms.to_le_bytes());
        out[9..13].copy_from_slice(&self.window_length.secs().to_le_bytes());
        out[13..21].copy_from_slice(&self.region.raw().to_le_bytes());
        out[21] = self.age_band.code();
        out[22] = self.risk.code();
        out[23..25].copy_from_slice(&self.symptoms.bits().to_le_bytes());
        out[25..41].copy_from_slice(&self.contributor.0);
        out
    }

    /// Decodes and validates a record; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<CoarseRecord, RecordError> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes
            .try_into()
            .map_err(|_| RecordError::Length(bytes.len()))?;
        if bytes[0] != Self::VERSION {
            return Err(RecordError::Version(bytes[0]));
        }
        let start_ms = i64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let len_secs = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
        let window_length = WindowLength::from_secs(len_secs).ok_or(RecordError::Window)?;
        let window = Window::from_start(start_ms, window_length).ok_or(RecordError::Window)?;
        let region = RegionCell::from_raw(u64::from_le_bytes(
            bytes[13..21].try_into().expect("8 bytes"),
        ))?;
        let age_band = AgeBand::from_code(bytes[21]).ok_or(RecordError::AgeBand(bytes[21]))?;
        let risk = RiskLevel::from_code(bytes[22]).ok_or(RecordError::Risk(bytes[22]))?;
        let bits = u16::from_le_bytes(bytes[23..25].try_into().expect("2 bytes"));
        let symptoms = SymptomSet::from_bits(bits).ok_or(RecordError::Symptoms(bits))?;
        let mut key = [0u8; 16];
        key.copy_from_slice(&bytes[25..41]);
        Ok(CoarseRecord {
            window,
            window_length,
            region,
            age_band,
            risk,
            symptoms,
            contributor: ContributorKey(key),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::Symptom;
    use crate::region::RegionResolution;

    /// A record with every field set, shared by the encoding tests here and
    /// the sealing tests in [`crate::sealed`].
    pub(crate) fn sample() -> CoarseRecord {
        let len = WindowLength::from_secs(900).unwrap();
        CoarseRecord {
            window: Window::containing(1_764_000_000_000, len),
            window_length: len,
            region: RegionCell::from_coordinate(
                18.5204,
                73.8567,
                RegionResolution::new(5).unwrap(),
            )
            .unwrap(),
            age_band: AgeBand::From60To74,
            risk: RiskLevel::High,
            symptoms: Symptom::ALL.into_iter().collect(),
            contributor: ContributorKey([0xAB; 16]),
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(CoarseRecord::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn rejects_every_malformation() {
        let good = sample().encode();
        assert_eq!(
            CoarseRecord::decode(&good[..40]),
            Err(RecordError::Length(40))
        );
        assert_eq!(CoarseRecord::decode(&[]), Err(RecordError::Length(0)));
        let mut b = good;
        b[0] = 2;
        assert_eq!(CoarseRecord::decode(&b), Err(RecordError::Version(2)));
        let mut b = good;
        b[1] ^= 1; // start no longer aligned
        assert_eq!(CoarseRecord::decode(&b), Err(RecordError::Window));
        let mut b = good;
        b[9..13].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(CoarseRecord::decode(&b), Err(RecordError::Window));
        let mut b = good;
        b[21] = 6;
        assert_eq!(CoarseRecord::decode(&b), Err(RecordError::AgeBand(6)));
        let mut b = good;
        b[22] = 3;
        assert_eq!(CoarseRecord::decode(&b), Err(RecordError::Risk(3)));
        let mut b = good;
        b[24] = 0x80;
        assert!(matches!(
            CoarseRecord::decode(&b),
            Err(RecordError::Symptoms(_))
        ));
        let mut b = good;
        b[13..21].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            CoarseRecord::decode(&b),
            Err(RecordError::Region(RegionError::InvalidCell))
        );
    }

    #[test]
    fn fine_regions_are_refused_on_decode() {
        let fine = h3o::LatLng::new(18.5204, 73.8567)
            .unwrap()
            .to_cell(h3o::Resolution::Ten);
        let mut b = sample().encode();
        b[13..21].copy_from_slice(&u64::from(fine).to_le_bytes());
        assert_eq!(
            CoarseRecord::decode(&b),
            Err(RecordError::Region(RegionError::TooFine(10)))
        );
    }

    #[test]
    fn debug_output_hides_the_contributor() {
        let text = format!("{:?}", sample());
        assert!(text.contains("ContributorKey(..)"));
        assert!(!text.contains("171")); // 0xAB
    }
}
