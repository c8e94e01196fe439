//! [`BoundedMessage`]: what travels on `hushmap.bounded.v1`, between the two
//! stages of partitioned aggregation (docs/SCALE.md).
//!
//! Stage 1 ("bound") forwards the sealed records that survive contribution
//! bounding, unchanged (the same envelope as on the submissions topic: no
//! new kind of data), and tells every stage-2 partition how far each
//! submissions partition is done with a [`Watermark`]. Stage 2 ("release")
//! releases a window once every submissions partition's watermark has
//! passed its end.
//!
//! Encoding: one tag byte, then the body.
//!
//! | tag | body |
//! |----:|------|
//! | 1   | the sealed record, as on the submissions topic |
//! | 2   | partition u32, partitions u32, through_ms i64, n u16, n × window start i64 (little endian) |

/// Longest list of windows one watermark may name.
pub const MAX_WATERMARK_WINDOWS: usize = 4096;

const TAG_SEALED: u8 = 1;
const TAG_WATERMARK: u8 = 2;
const WATERMARK_HEADER: usize = 1 + 4 + 4 + 8 + 2;

/// One record on the bounded topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedMessage {
    /// A sealed record that survived bounding, byte for byte as ingest
    /// sealed it.
    Sealed(Vec<u8>),
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// let sealed = BoundedMessage::Sealed(vec![9; 84]);
    /// assert_eq!(BoundedMessage::decode(&sealed.encode()), Ok(sealed));
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BoundedMessage::Sealed(bytes) => {
                let mut out = Vec::with_capacity(1 + bytes.len());
                out.push(TAG_SEALED);
                out.extend_from_slice(bytes);
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

    /// Decodes a message; never panics on any input. A sealed record is
    /// returned still sealed (opening it is the reader's job).
    pub fn decode(bytes: &[u8]) -> Result<BoundedMessage, BoundedError> {
        let (&tag, body) = bytes.split_first().ok_or(BoundedError::Empty)?;
        match tag {
            TAG_SEALED => Ok(BoundedMessage::Sealed(body.to_vec())),
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
