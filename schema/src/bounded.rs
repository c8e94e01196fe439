//! [`BoundedMessage`]: what travels on `hushmap.bounded.v1`, between the two
//! stages of partitioned aggregation (docs/SCALE.md).
//!
//! Stage 1 ("bound") forwards the records that survive contribution
//! bounding, and tells every stage-2 partition how far each submissions
//! partition is done with a [`Watermark`]. Stage 2 ("release") releases a
//! window once every submissions partition's watermark has passed its end.
//!
//! Every message travels sealed under the aggregator's bounded-topic key
//! ([`BoundedKeyring`], version `0xB2` envelope): a record or a watermark
//! that is not sealed by a holder of the aggregator's private key is
//! refused, so neither ingest (which holds only the public key) nor anyone
//! else with write access to the topic can skip bounding or release a window
//! early.
//!
//! Encoding inside the envelope: one tag byte, then the body.
//!
//! | tag | body |
//! |----:|------|
//! | 1   | the coarse record (41 bytes, `record.rs`) |
//! | 2   | partition u32, partitions u32, through_ms i64, n u16, n × window start i64 (little endian) |

use crate::record::{CoarseRecord, RecordError};
use crate::sealed::{BoundedKeyring, OpenError};

/// Longest list of windows one watermark may name.
pub const MAX_WATERMARK_WINDOWS: usize = 4096;

const TAG_RECORD: u8 = 1;
const TAG_WATERMARK: u8 = 2;
const WATERMARK_HEADER: usize = 1 + 4 + 4 + 8 + 2;

/// One record on the bounded topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedMessage {
    /// A record that survived bounding.
    Record(CoarseRecord),
    Watermark(Watermark),
}

/// "Submissions partition `partition` (of `partitions`) has forwarded every
/// record of every window ending at or before `through_ms`."
///
/// `windows` is part of the format but sent empty: stage 2 publishes every
/// window of its schedule by the clock, so which windows had records is
/// neither needed nor shown to the broker. A reader ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub partition: u32,
    pub partitions: u32,
    pub through_ms: i64,
    pub windows: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundedError {
    #[error("empty bounded-topic record")]
    Empty,
    #[error("unknown bounded-topic record tag {0}")]
    Tag(u8),
    #[error("watermark is {0} bytes, shorter than its header or window list")]
    Length(usize),
    #[error("watermark names partition {partition} of {partitions}")]
    Partition { partition: u32, partitions: u32 },
    #[error("watermark lists {0} windows (at most {MAX_WATERMARK_WINDOWS})")]
    TooManyWindows(usize),
    #[error("bounded-topic record: {0}")]
    Record(#[from] RecordError),
}

/// Why a bounded-topic record was refused: its envelope, or the message in
/// an authentic envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundedOpenError {
    #[error(transparent)]
    Envelope(#[from] OpenError),
    #[error(transparent)]
    Message(#[from] BoundedError),
}

impl BoundedKeyring {
    /// Seals a message for the bounded topic.
    pub fn seal(&self, message: &BoundedMessage) -> Vec<u8> {
        self.seal_bytes(&message.encode())
    }

    /// Opens and decodes a bounded-topic record with its seal id; never
    /// panics on any input.
    ///
    /// ```
    /// # use hushmap_schema::bounded::{BoundedMessage, Watermark};
    /// # use hushmap_schema::sealed::PayloadKeyring;
    /// let keys: PayloadKeyring = PayloadKeyring::generate_entry(1).parse().unwrap();
    /// let bounded = keys.bounded_keyring();
    /// let mark = BoundedMessage::Watermark(Watermark {
    ///     partition: 0, partitions: 1, through_ms: 60_000, windows: vec![],
    /// });
    /// assert_eq!(bounded.open(&bounded.seal(&mark)).unwrap().0, mark);
    /// // A watermark written in the clear by someone without the key:
    /// assert!(bounded.open(&mark.encode()).is_err());
    /// ```
    pub fn open(&self, bytes: &[u8]) -> Result<(BoundedMessage, u128), BoundedOpenError> {
        let (plain, seal_id) = self.open_bytes(bytes)?;
        Ok((BoundedMessage::decode(&plain)?, seal_id))
    }
}

impl BoundedMessage {
    /// Encodes the message.
    ///
    /// ```
    /// # use hushmap_schema::bounded::{BoundedMessage, Watermark};
    /// let mark = BoundedMessage::Watermark(Watermark {
    ///     partition: 1, partitions: 3, through_ms: 60_000, windows: vec![0],
    /// });
    /// assert_eq!(BoundedMessage::decode(&mark.encode()), Ok(mark));
    /// # use hushmap_schema::record::CoarseRecord;
    /// let bytes = [0u8; CoarseRecord::ENCODED_LEN];
    /// // Tag 1 carries a coarse record; these zeros are not one.
    /// assert!(BoundedMessage::decode(&[&[1u8][..], &bytes].concat()).is_err());
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BoundedMessage::Record(record) => {
                let mut out = Vec::with_capacity(1 + CoarseRecord::ENCODED_LEN);
                out.push(TAG_RECORD);
                out.extend_from_slice(&record.encode());
                out
            }
            BoundedMessage::Watermark(w) => {
                let windows = &w.windows[..w.windows.len().min(MAX_WATERMARK_WINDOWS)];
                let mut out = Vec::with_capacity(WATERMARK_HEADER + 8 * windows.len());
                out.push(TAG_WATERMARK);
                out.extend_from_slice(&w.partition.to_le_bytes());
                out.extend_from_slice(&w.partitions.to_le_bytes());
                out.extend_from_slice(&w.through_ms.to_le_bytes());
                out.extend_from_slice(&(windows.len() as u16).to_le_bytes());
                for start in windows {
                    out.extend_from_slice(&start.to_le_bytes());
                }
                out
            }
        }
    }

    /// Decodes a message (already out of its envelope); never panics on any
    /// input.
    pub fn decode(bytes: &[u8]) -> Result<BoundedMessage, BoundedError> {
        let (&tag, body) = bytes.split_first().ok_or(BoundedError::Empty)?;
        match tag {
            TAG_RECORD => Ok(BoundedMessage::Record(CoarseRecord::decode(body)?)),
            TAG_WATERMARK => {
                if bytes.len() < WATERMARK_HEADER {
                    return Err(BoundedError::Length(bytes.len()));
                }
                let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4"));
                let i64_at = |i: usize| i64::from_le_bytes(bytes[i..i + 8].try_into().expect("8"));
                let (partition, partitions) = (u32_at(1), u32_at(5));
                if partition >= partitions {
                    return Err(BoundedError::Partition {
                        partition,
                        partitions,
                    });
                }
                let n = usize::from(u16::from_le_bytes([bytes[17], bytes[18]]));
                if n > MAX_WATERMARK_WINDOWS {
                    return Err(BoundedError::TooManyWindows(n));
                }
                if bytes.len() != WATERMARK_HEADER + 8 * n {
                    return Err(BoundedError::Length(bytes.len()));
                }
                Ok(BoundedMessage::Watermark(Watermark {
                    partition,
                    partitions,
                    through_ms: i64_at(9),
                    windows: (0..n).map(|k| i64_at(WATERMARK_HEADER + 8 * k)).collect(),
                }))
            }
            other => Err(BoundedError::Tag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_travel_sealed_and_forgeries_are_refused() {
        use crate::record::tests::sample;
        use crate::sealed::PayloadKeyring;
        let keys: PayloadKeyring = PayloadKeyring::generate_entry(1).parse().unwrap();
        let bounded = keys.bounded_keyring();
        let record = BoundedMessage::Record(sample());
        let (opened, _) = bounded.open(&bounded.seal(&record)).unwrap();
        assert_eq!(opened, record);
        // A watermark forged in the clear, or sealed to ingest's public key
        // (what a stolen ingest could do), is refused.
        let mark = BoundedMessage::Watermark(Watermark {
            partition: 0,
            partitions: 1,
            through_ms: i64::MAX,
            windows: vec![],
        });
        assert!(matches!(
            bounded.open(&mark.encode()),
            Err(BoundedOpenError::Envelope(OpenError::Unsealed(2)))
        ));
        let from_ingest = keys.public_key().seal(&sample());
        assert!(matches!(
            bounded.open(&from_ingest),
            Err(BoundedOpenError::Envelope(OpenError::WrongPurpose { .. }))
        ));
        // An authentic envelope around a bad message is refused by content.
        assert!(matches!(
            bounded.open(&bounded.seal_bytes(&[1, 0, 0])),
            Err(BoundedOpenError::Message(BoundedError::Record(_)))
        ));
    }

    #[test]
    fn malformed_watermarks_are_refused_not_panicked_on() {
        let good = BoundedMessage::Watermark(Watermark {
            partition: 0,
            partitions: 2,
            through_ms: -5,
            windows: vec![1, 2, 3],
        })
        .encode();
        assert!(BoundedMessage::decode(&good).is_ok());
        for cut in 0..good.len() {
            assert!(BoundedMessage::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            BoundedMessage::decode(&longer),
            Err(BoundedError::Length(good.len() + 1))
        );
        let mut wrong_partition = good.clone();
        wrong_partition[1] = 2;
        assert!(matches!(
            BoundedMessage::decode(&wrong_partition),
            Err(BoundedError::Partition { .. })
        ));
        let mut too_many = good;
        too_many[17..19].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            BoundedMessage::decode(&too_many),
            Err(BoundedError::TooManyWindows(usize::from(u16::MAX)))
        );
        assert_eq!(BoundedMessage::decode(&[7, 1]), Err(BoundedError::Tag(7)));
        assert_eq!(BoundedMessage::decode(&[]), Err(BoundedError::Empty));
    }

    #[test]
    fn shards_spread_and_keep_trees_together() {
        use crate::region::{RegionCell, RegionResolution};
        let res5 = RegionResolution::new(5).unwrap();
        let mut per_shard = [0u32; 4];
        for i in 0..400 {
            let lat = -60.0 + (i as f64) * 0.3;
            let cell = RegionCell::from_coordinate(lat, (i as f64) * 0.7 - 140.0, res5).unwrap();
            let shard = cell.shard(3, 4).unwrap();
            assert_eq!(Some(shard), cell.parent(4).unwrap().shard(3, 4));
            per_shard[shard as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 60), "{per_shard:?}");
        let coarse = RegionCell::from_coordinate(0.0, 0.0, RegionResolution::new(2).unwrap());
        assert_eq!(
            coarse.unwrap().shard(3, 4),
            None,
            "coarser than the shard level"
        );
    }
}
