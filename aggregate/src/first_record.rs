//! The provisional series' bounding: each contributor counts once, in the
//! sub-window of their first record in the window (a separate DataFusion
//! plan from the final release's, which keeps each contributor's latest
//! records).
//!
//! "First" is by the time ingest produced the record (its Kafka
//! timestamp), ties broken by partition and offset: all three are the same
//! when a restarted aggregator reads the records again, so the replay
//! assigns every contributor the sub-window it had. A record read late (a
//! timestamp earlier than one already counted) can only move a contributor
//! to an earlier sub-window, whose intervals at each level of the tree end
//! no later than the ones it was counted in; so a contributor still moves
//! at most one noised count per level (the bound the series' noise is
//! calibrated to, [`continual`](hushmap_privacy::release::continual)).

use crate::engine::{EngineError, collect_over, risk_count_columns};
use arrow::array::{
    Array, AsArray, Int32Array, Int64Array, RecordBatch, UInt8Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt32Type, UInt64Type};
use datafusion::prelude::SessionContext;
use hushmap_privacy::release::continual::{FirstRecordCounts, SubWindowTree};
use hushmap_schema::{CoarseRecord, RegionCell, Window};
use std::sync::Arc;

/// Where and when a buffered record was read: what orders a contributor's
/// records for the provisional series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When the broker appended it (its Kafka timestamp, ms: the input
    /// topic is `LogAppendTime`, checked at start).
    pub produced_ms: i64,
    pub partition: i32,
    pub offset: i64,
}

/// The first-record counts of `window`, cut into the sub-windows of
/// `tree`, per region at `level`: each contributor once, at their earliest
/// record produced before the window's end (one produced before the
/// window's start counts in its first sub-window; one produced after its
/// end only in the final release: [`SubWindowTree::sub_window_of`]).
pub async fn first_record_counts(
    ctx: &SessionContext,
    window: Window,
    tree: SubWindowTree,
    level: u8,
    records: impl Iterator<Item = (&CoarseRecord, &Arrival)>,
) -> Result<Vec<FirstRecordCounts>, EngineError> {
    let mut columns = Columns::default();
    for (record, arrival) in records {
        let Some(sub) = tree.sub_window_of(window, arrival.produced_ms) else {
            continue;
        };
        let Some(region) = record.region.parent(level) else {
            continue;
        };
        let (hi, lo) = record.contributor.halves();
        columns.contributor_hi.push(hi);
        columns.contributor_lo.push(lo);
        columns.region.push(region.raw());
        columns.risk.push(record.risk.code());
        columns.sub_window.push(sub);
        columns.produced_ms.push(arrival.produced_ms);
        columns.partition.push(arrival.partition);
        columns.offset.push(arrival.offset);
    }
    if columns.region.is_empty() {
        return Ok(Vec::new());
    }
    let table = ctx.read_batch(columns.into_batch()?)?.into_view();
    let batches = collect_over(ctx, "first_records", table, &first_record_sql()).await?;
    let mut out = Vec::new();
    for batch in batches {
        out.extend(counts_from_batch(&batch)?);
    }
    Ok(out)
}

/// Each contributor's earliest record (by produce time, partition,
/// offset), counted per sub-window × region × risk level.
fn first_record_sql() -> String {
    format!(
        "SELECT sub_window, region, {risk} FROM ( \
           SELECT sub_window, region, risk, \
                  ROW_NUMBER() OVER (PARTITION BY contributor_hi, contributor_lo \
                                     ORDER BY produced_ms, kafka_partition, kafka_offset) AS rn \
           FROM first_records) \
         WHERE rn = 1 \
         GROUP BY sub_window, region ORDER BY sub_window, region",
        risk = risk_count_columns()
    )
}

#[derive(Default)]
struct Columns {
    contributor_hi: Vec<u64>,
    contributor_lo: Vec<u64>,
    region: Vec<u64>,
    risk: Vec<u8>,
    sub_window: Vec<u32>,
    produced_ms: Vec<i64>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl Columns {
    fn into_batch(self) -> Result<RecordBatch, EngineError> {
        let schema = Schema::new(vec![
            Field::new("contributor_hi", DataType::UInt64, false),
            Field::new("contributor_lo", DataType::UInt64, false),
            Field::new("region", DataType::UInt64, false),
            Field::new("risk", DataType::UInt8, false),
            Field::new("sub_window", DataType::UInt32, false),
            Field::new("produced_ms", DataType::Int64, false),
            Field::new("kafka_partition", DataType::Int32, false),
            Field::new("kafka_offset", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(UInt64Array::from(self.contributor_hi)),
                Arc::new(UInt64Array::from(self.contributor_lo)),
                Arc::new(UInt64Array::from(self.region)),
                Arc::new(UInt8Array::from(self.risk)),
                Arc::new(UInt32Array::from(self.sub_window)),
                Arc::new(Int64Array::from(self.produced_ms)),
                Arc::new(Int32Array::from(self.partition)),
                Arc::new(Int64Array::from(self.offset)),
            ],
        )
        .map_err(|e| EngineError::DataFusion(e.into()))
    }
}

fn counts_from_batch(batch: &RecordBatch) -> Result<Vec<FirstRecordCounts>, EngineError> {
    let sub = batch
        .column(0)
        .as_primitive_opt::<UInt32Type>()
        .ok_or(EngineError::Column("sub_window"))?;
    let region = batch
        .column(1)
        .as_primitive_opt::<UInt64Type>()
        .ok_or(EngineError::Column("region"))?;
    let counts = (0..3)
        .map(|i| {
            batch
                .column(2 + i)
                .as_primitive_opt::<Int64Type>()
                .ok_or(EngineError::Column("count"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut risk = [0i64; 3];
        for (k, c) in counts.iter().enumerate() {
            risk[k] = if c.is_null(row) { 0 } else { c.value(row) };
        }
        out.push(FirstRecordCounts {
            sub_window: sub.value(row),
            region: RegionCell::from_raw(region.value(row))
                .map_err(|_| EngineError::Value("region"))?,
            risk,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{AgeBand, ContributorKey, RiskLevel, SymptomSet, WindowLength};

    const HOUR: i64 = 3_600_000;

    fn record(contributor: u8, lat: f64, risk: RiskLevel) -> CoarseRecord {
        let day = WindowLength::ONE_DAY;
        CoarseRecord {
            window: Window::containing(0, day),
            window_length: day,
            region: RegionCell::from_coordinate(lat, 73.85, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: AgeBand::From30To44,
            risk,
            symptoms: SymptomSet::default(),
            contributor: ContributorKey([contributor; 16]),
        }
    }

    fn at(produced_ms: i64, partition: i32, offset: i64) -> Arrival {
        Arrival {
            produced_ms,
            partition,
            offset,
        }
    }

    #[tokio::test]
    async fn each_contributor_counts_once_at_their_first_record() {
        let ctx = SessionContext::new();
        let day = Window::from_start(0, WindowLength::ONE_DAY).unwrap();
        let pune = 18.52;
        let rows = [
            // Contributor 1: first at hour 2 (high), again at hour 5 (low).
            (record(1, pune, RiskLevel::Low), at(5 * HOUR, 0, 7)),
            (record(1, pune, RiskLevel::High), at(2 * HOUR, 1, 3)),
            // Contributor 2: two records in the same instant: the lower
            // partition, then the lower offset, is first.
            (record(2, pune, RiskLevel::Moderate), at(HOUR, 1, 0)),
            (record(2, pune, RiskLevel::Low), at(HOUR, 0, 9)),
            // Contributor 3: produced before the window (counted in its
            // first sub-window); 4: after its end (not provisional).
            (record(3, pune, RiskLevel::High), at(-60_000, 0, 1)),
            (record(4, pune, RiskLevel::High), at(25 * HOUR, 0, 2)),
        ];
        let tree = SubWindowTree::new(24).unwrap();
        let counts = first_record_counts(&ctx, day, tree, 4, rows.iter().map(|(r, a)| (r, a)))
            .await
            .unwrap();
        let region = rows[0].0.region.parent(4).unwrap();
        let got: Vec<(u32, [i64; 3])> = counts
            .iter()
            .map(|c| {
                assert_eq!(c.region, region);
                (c.sub_window, c.risk)
            })
            .collect();
        assert_eq!(got, vec![(0, [0, 0, 1]), (1, [1, 0, 0]), (2, [0, 0, 1])]);
        // Nothing counted: nothing to say.
        assert!(
            first_record_counts(&ctx, day, tree, 4, std::iter::empty())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
