//! Coarse records as Arrow: the input table of the DataFusion plan.

use arrow::array::{Int64Array, RecordBatch, UInt8Array, UInt16Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use hushmap_schema::CoarseRecord;
use std::sync::{Arc, LazyLock};

/// Columns of the `records` table. The contributor key is split into two
/// u64 halves; `seq` is arrival order (later = larger) used to keep a
/// contributor's latest records.
pub static RECORD_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", DataType::Int64, false),
        Field::new("region", DataType::UInt64, false),
        Field::new("age_band", DataType::UInt8, false),
        Field::new("risk", DataType::UInt8, false),
        Field::new("symptoms", DataType::UInt16, false),
        Field::new("contributor_hi", DataType::UInt64, false),
        Field::new("contributor_lo", DataType::UInt64, false),
        Field::new("seq", DataType::UInt64, false),
    ]))
});

/// A record with its arrival sequence number, which must be unique within
/// a table: the bounding plan keeps a contributor's records by `seq`.
#[derive(Debug, Clone, Copy)]
pub struct SequencedRecord {
    pub seq: u64,
    pub record: CoarseRecord,
}

/// Builds the `records` batch.
pub fn to_record_batch(records: &[SequencedRecord]) -> Result<RecordBatch, ArrowError> {
    let halves: Vec<(u64, u64)> = records
        .iter()
        .map(|r| r.record.contributor.halves())
        .collect();
    RecordBatch::try_new(
        RECORD_SCHEMA.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.record.window.start_ms),
            )),
            Arc::new(UInt64Array::from_iter_values(
                records.iter().map(|r| r.record.region.raw()),
            )),
            Arc::new(UInt8Array::from_iter_values(
                records.iter().map(|r| r.record.age_band.code()),
            )),
            Arc::new(UInt8Array::from_iter_values(
                records.iter().map(|r| r.record.risk.code()),
            )),
            Arc::new(UInt16Array::from_iter_values(
                records.iter().map(|r| r.record.symptoms.bits()),
            )),
            Arc::new(UInt64Array::from_iter_values(halves.iter().map(|h| h.0))),
            Arc::new(UInt64Array::from_iter_values(halves.iter().map(|h| h.1))),
            Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.seq))),
        ],
    )
}
