//! The DataFusion plan: contribution bounding, then counting per cell.
//!
//! Bounding happens in the plan, before any grouping: each contributor keeps
//! only their latest `m` records of the window. For the default `m = 1` that
//! is a hash aggregate (`MAX(seq)` per contributor) joined back by hash; for
//! larger `m`, `ROW_NUMBER()` over the contributor key, newest first (a sort,
//! several times slower; see docs/BENCHMARKS.md). Everything after that
//! point may assume the bounds of
//! [`ContributionBounds`](hushmap_privacy::sensitivity::ContributionBounds).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt8Type, UInt64Type};
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use hushmap_privacy::sensitivity::ContributionBounds;
use hushmap_schema::{AgeBand, RegionCell, RiskLevel, Symptom};
use std::sync::Arc;

/// The engine's output, the noising step's input (one definition, in the
/// privacy crate).
pub use hushmap_privacy::release::CellCounts;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("datafusion: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("unexpected result column `{0}`")]
    Column(&'static str),
    #[error("engine produced an invalid {0}")]
    Value(&'static str),
}

/// The bounded GROUP BY, as SQL over the `records` table, which may hold
/// many windows (batch mode): a contributor is bounded per window, keeping
/// their latest `m` records. For `m = 1` by hashing; otherwise by sorting
/// ([`sort_bounded_counts_sql`]).
pub fn bounded_counts_sql(bounds: ContributionBounds) -> String {
    if bounds.max_records_per_window == 1 {
        // The default bound, by hashing: each contributor's latest record
        // per window is found by a hash aggregate (MAX(seq)) and kept by a
        // hash join on `seq`, with no sort. Sound because `seq` is unique
        // per record (`SequencedRecord`): each MAX(seq) names exactly one
        // record, of that contributor and window, so the join keeps each
        // kept record once.
        //
        // The latest seqs come first: without statistics (batch mode's
        // Arrow IPC files have none) DataFusion builds its hash table on
        // the join's left side, and that side should be the one column of
        // latest seqs, not the records. Built on the records (as `seq IN
        // (…)` was), a 1M-record pass held them all and emitted them in
        // batches of ~400k rows: ~70 MiB more at its peak.
        counts_sql(
            "SELECT r.window_start, r.region, r.age_band, r.risk, r.symptoms \
             FROM ( \
               SELECT MAX(seq) AS latest FROM records \
               GROUP BY window_start, contributor_hi, contributor_lo) l \
             JOIN records r ON r.seq = l.latest",
        )
    } else {
        sort_bounded_counts_sql(bounds)
    }
}

/// The bounded GROUP BY with the bound kept by `ROW_NUMBER()` over each
/// contributor's records, newest first: any `m`, but a sort (several times
/// slower than the hash plan; compared in `benches/engine.rs`).
pub fn sort_bounded_counts_sql(bounds: ContributionBounds) -> String {
    counts_sql(&format!(
        "SELECT window_start, region, age_band, risk, symptoms FROM ( \
           SELECT window_start, region, age_band, risk, symptoms, \
                  ROW_NUMBER() OVER (PARTITION BY window_start, contributor_hi, contributor_lo \
                                     ORDER BY seq DESC) AS rn \
           FROM records) \
         WHERE rn <= {m}",
        m = bounds.max_records_per_window
    ))
}

/// The SQL aggregates counting each risk level of a group's `risk` column,
/// `n_low, n_moderate, n_high` in `RiskLevel::code` order.
pub(crate) fn risk_count_columns() -> String {
    RiskLevel::ALL
        .iter()
        .map(|r| {
            format!(
                "SUM(CASE WHEN risk = {} THEN 1 ELSE 0 END) AS n_{}",
                r.code(),
                r.label()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `sql` with `table` registered as `name` in `ctx`, and unregisters
/// it whether or not the query succeeded (a context serves window after
/// window).
pub(crate) async fn collect_over(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
    sql: &str,
) -> Result<Vec<RecordBatch>, EngineError> {
    ctx.register_table(name, table)?;
    let result = match ctx.sql(sql).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    ctx.deregister_table(name)?;
    Ok(result?)
}

/// Counts per window × region × age band over the `bounded` query.
fn counts_sql(bounded: &str) -> String {
    let sym_cols: Vec<String> = Symptom::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SUM(CASE WHEN (symptoms & {}) <> 0 THEN 1 ELSE 0 END) AS {}",
                1u32 << i,
                s.column()
            )
        })
        .collect();
    format!(
        "WITH bounded AS ({bounded}) \
         SELECT window_start, region, age_band, {risk}, {sym} \
         FROM bounded GROUP BY window_start, region, age_band \
         ORDER BY window_start, region, age_band",
        risk = risk_count_columns(),
        sym = sym_cols.join(", "),
    )
}

/// Runs the bounded count over one window's records.
pub async fn bounded_counts(
    ctx: &SessionContext,
    records: RecordBatch,
    bounds: ContributionBounds,
) -> Result<Vec<CellCounts>, EngineError> {
    let table = ctx.read_batch(records)?.into_view();
    bounded_counts_table(ctx, table, bounds).await
}

/// Runs the bounded count over a `records` table of any number of windows
/// and partitions.
pub async fn bounded_counts_table(
    ctx: &SessionContext,
    records: Arc<dyn TableProvider>,
    bounds: ContributionBounds,
) -> Result<Vec<CellCounts>, EngineError> {
    counts_over(ctx, records, &bounded_counts_sql(bounds)).await
}

/// The same counts as [`bounded_counts_table`] by the sort plan
/// ([`sort_bounded_counts_sql`]): slower, but under a memory pool its
/// sort goes through disk, so it finishes in bounded memory however many
/// contributors there are (the hash plan's join cannot spill).
pub async fn sort_bounded_counts_table(
    ctx: &SessionContext,
    records: Arc<dyn TableProvider>,
    bounds: ContributionBounds,
) -> Result<Vec<CellCounts>, EngineError> {
    counts_over(ctx, records, &sort_bounded_counts_sql(bounds)).await
}

async fn counts_over(
    ctx: &SessionContext,
    records: Arc<dyn TableProvider>,
    sql: &str,
) -> Result<Vec<CellCounts>, EngineError> {
    let batches = collect_over(ctx, "records", records, sql).await?;
    let mut cells = Vec::new();
    for batch in batches {
        cells.extend(cells_from_batch(&batch)?);
    }
    Ok(cells)
}

fn cells_from_batch(batch: &RecordBatch) -> Result<Vec<CellCounts>, EngineError> {
    let window = batch
        .column(0)
        .as_primitive_opt::<Int64Type>()
        .ok_or(EngineError::Column("window_start"))?;
    let region = batch
        .column(1)
        .as_primitive_opt::<UInt64Type>()
        .ok_or(EngineError::Column("region"))?;
    let band = batch
        .column(2)
        .as_primitive_opt::<UInt8Type>()
        .ok_or(EngineError::Column("age_band"))?;
    let count = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<Int64Type>()
            .ok_or(EngineError::Column("count"))
    };
    let risk_cols = (0..3)
        .map(|i| count(3 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let sym_cols = (0..10)
        .map(|i| count(6 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut risk = [0i64; 3];
        for (i, c) in risk_cols.iter().enumerate() {
            risk[i] = if c.is_null(row) { 0 } else { c.value(row) };
        }
        let mut symptoms = [0i64; 10];
        for (i, c) in sym_cols.iter().enumerate() {
            symptoms[i] = if c.is_null(row) { 0 } else { c.value(row) };
        }
        out.push(CellCounts {
            window_start: window.value(row),
            region: RegionCell::from_raw(region.value(row))
                .map_err(|_| EngineError::Value("region"))?,
            age_band: AgeBand::from_code(band.value(row)).ok_or(EngineError::Value("age band"))?,
            risk,
            symptoms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{SequencedRecord, to_record_batch};
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{CoarseRecord, ContributorKey, SymptomSet, Window, WindowLength};

    fn rec(
        seq: u64,
        contributor: u8,
        lat: f64,
        band: AgeBand,
        risk: RiskLevel,
        symptoms: &[Symptom],
    ) -> SequencedRecord {
        let len = WindowLength::from_secs(60).unwrap();
        SequencedRecord {
            seq,
            record: CoarseRecord {
                window: Window::containing(0, len),
                window_length: len,
                region: RegionCell::from_coordinate(lat, 10.0, RegionResolution::new(5).unwrap())
                    .unwrap(),
                age_band: band,
                risk,
                symptoms: symptoms.iter().copied().collect::<SymptomSet>(),
                contributor: ContributorKey([contributor; 16]),
            },
        }
    }

    #[tokio::test]
    async fn counts_per_cell_with_latest_record_per_contributor() {
        let records = vec![
            // contributor 1 submits twice; only the later (seq 5, high) counts
            rec(1, 1, 50.0, AgeBand::From30To44, RiskLevel::Low, &[]),
            rec(
                5,
                1,
                50.0,
                AgeBand::From30To44,
                RiskLevel::High,
                &[Symptom::Breathlessness],
            ),
            rec(
                2,
                2,
                50.0,
                AgeBand::From30To44,
                RiskLevel::Moderate,
                &[Symptom::Fever, Symptom::Headache],
            ),
            rec(3, 3, 50.0, AgeBand::From75, RiskLevel::Low, &[]),
            rec(
                4,
                4,
                20.0,
                AgeBand::From30To44,
                RiskLevel::Low,
                &[Symptom::Fever],
            ),
        ];
        let ctx = SessionContext::new();
        let cells = bounded_counts(
            &ctx,
            to_record_batch(&records).unwrap(),
            ContributionBounds::new(1),
        )
        .await
        .unwrap();
        assert_eq!(cells.len(), 3);
        let r50 = records[0].record.region;
        let c = cells
            .iter()
            .find(|c| c.region == r50 && c.age_band == AgeBand::From30To44)
            .unwrap();
        assert_eq!(c.risk, [0, 1, 1]);
        assert_eq!(c.symptoms, [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]);
        let total: i64 = cells.iter().flat_map(|c| c.risk).sum();
        assert_eq!(total, 4, "one record per contributor");

        // The sort plan keeps the same record for m = 1.
        let df = ctx.read_batch(to_record_batch(&records).unwrap()).unwrap();
        ctx.register_table("records", df.into_view()).unwrap();
        let sorted = ctx
            .sql(&sort_bounded_counts_sql(ContributionBounds::new(1)))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        ctx.deregister_table("records").unwrap();
        let sorted: Vec<CellCounts> = sorted
            .iter()
            .flat_map(|b| cells_from_batch(b).unwrap())
            .collect();
        assert_eq!(sorted, cells);

        // With m = 2 both of contributor 1's records count.
        let cells = bounded_counts(
            &ctx,
            to_record_batch(&records).unwrap(),
            ContributionBounds::new(2),
        )
        .await
        .unwrap();
        let total: i64 = cells.iter().flat_map(|c| c.risk).sum();
        assert_eq!(total, 5);
    }

    #[tokio::test]
    async fn empty_window_has_no_cells() {
        let ctx = SessionContext::new();
        let cells = bounded_counts(
            &ctx,
            to_record_batch(&[]).unwrap(),
            ContributionBounds::new(1),
        )
        .await
        .unwrap();
        assert!(cells.is_empty());
    }
}
