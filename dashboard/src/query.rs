//! DataFusion over the release store: the cells of a time range (and
//! level), for the Arrow/Parquet exports and Arrow Flight.
//!
//! The store's `day=` directories are a Hive partition column, so a range
//! query opens only the days it needs.

use crate::privacy::compose;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use hushmap_schema::release::{SCHEMA_VERSION, meta_keys, release_fields};
use hushmap_schema::{ReleaseMeta, ReleaseRow};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The table researchers query (Flight SQL) and exports read.
pub const TABLE: &str = "releases";

/// Memory DataFusion may use for all queries at once.
const SQL_MEMORY_LIMIT: usize = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("release query: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("release query: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("release query: {0}")]
    Release(#[from] hushmap_schema::release::ReleaseError),
    #[error("the read took more than its {0} ms of the server's time")]
    Deadline(u64),
    #[error("invalid `{field}`: {reason}")]
    Filter {
        field: &'static str,
        reason: &'static str,
    },
}

/// Which cells: windows starting in `[from, to)` (ms since the epoch, UTC)
/// at one level or all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub level: Option<u8>,
    /// The measurements behind the releases (`estimates=measured`) rather
    /// than the releases themselves.
    pub measured: bool,
}

impl CellFilter {
    /// Parses the public parameters: `from`/`to` as ms since the epoch, an
    /// RFC 3339 time or a `YYYY-MM-DD` date (UTC midnight).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        level: Option<u8>,
    ) -> Result<CellFilter, QueryError> {
        let filter = CellFilter {
            from: from.map(|s| parse_time(s, "from")).transpose()?,
            to: to.map(|s| parse_time(s, "to")).transpose()?,
            level,
            measured: false,
        };
        if let (Some(f), Some(t)) = (filter.from, filter.to)
            && f >= t
        {
            return Err(QueryError::Filter {
                field: "to",
                reason: "must be after from",
            });
        }
        if level.is_some_and(|l| l > 15) {
            return Err(QueryError::Filter {
                field: "level",
                reason: "H3 resolutions are 0 to 15",
            });
        }
        Ok(filter)
    }

    /// Sets which estimates from the public `estimates` parameter:
    /// omitted or `published` for the releases as published, `measured`
    /// for the measurements behind them.
    pub fn with_estimates(mut self, estimates: Option<&str>) -> Result<CellFilter, QueryError> {
        self.measured = match estimates {
            None | Some("published") => false,
            Some("measured") => true,
            Some(_) => {
                return Err(QueryError::Filter {
                    field: "estimates",
                    reason: "must be published (the default) or measured",
                });
            }
        };
        Ok(self)
    }

    pub fn contains_window(&self, window_start: i64) -> bool {
        self.from.is_none_or(|f| window_start >= f) && self.to.is_none_or(|t| window_start < t)
    }
}

fn parse_time(s: &str, field: &'static str) -> Result<i64, QueryError> {
    hushmap_schema::window::parse_instant(s).ok_or(QueryError::Filter {
        field,
        reason: "expected ms since the epoch, an RFC 3339 time or YYYY-MM-DD",
    })
}

/// A DataFusion session with the store registered as table `releases`
/// (the dashboard's own queries; researchers' SQL runs in a worker
/// process of its own, `crate::sql_worker`).
pub struct ReleaseQuery {
    ctx: SessionContext,
}

/// The `day=…` partitioned Parquet files under `dir` as one table. The
/// schema is the release schema, given rather than inferred, so an empty
/// store is a valid (empty) table.
pub fn release_table(dir: &Path) -> Result<Arc<ListingTable>, DataFusionError> {
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("day".into(), DataType::Utf8)]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::new(Schema::new(release_fields())));
    Ok(Arc::new(ListingTable::try_new(config)?))
}

impl ReleaseQuery {
    /// Registers the store under `dir` ([`release_table`]).
    pub fn new(dir: &Path) -> Result<ReleaseQuery, QueryError> {
        // A bounded memory pool: a query that needs more fails instead of
        // the dashboard.
        //
        // No cache of directory listings: DataFusion keeps one by default,
        // with no expiry, so a day's files listed once stay the day's
        // files, and every release stored after the first query of a day
        // would be missing from exports until a restart. Listing a local
        // directory costs less than a read of the files it finds.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(SQL_MEMORY_LIMIT, 1.0)
            .with_object_list_cache_limit(0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        ctx.register_table(TABLE, release_table(dir)?)?;
        Ok(ReleaseQuery { ctx })
    }

    /// The cells matching `filter` in the `days` given (`YYYY-MM-DD`, in
    /// order), ordered by window, level (coarsest first), region and age
    /// band, under the release schema with `meta` as its metadata.
    ///
    /// Streamed one day partition at a time: memory holds one day's cells
    /// (sorted), never the whole range, so a 30-day export costs what a
    /// one-day export costs.
    pub fn cells(
        self: &Arc<Self>,
        filter: CellFilter,
        days: Vec<String>,
        meta: HashMap<String, String>,
    ) -> (SchemaRef, CellStream) {
        let schema = Arc::new(Schema::new_with_metadata(release_fields(), meta));
        let query = self.clone();
        let out = schema.clone();
        let stream = stream::iter(days)
            .then(move |day| {
                let query = query.clone();
                async move { query.one_day(filter, day).await }
            })
            .try_flatten()
            .map(move |batch| {
                let batch = batch?;
                Ok(RecordBatch::try_new(out.clone(), batch.columns().to_vec())?)
            })
            .boxed();
        (schema, stream)
    }

    async fn one_day(
        &self,
        filter: CellFilter,
        day: String,
    ) -> Result<BoxStream<'static, Result<RecordBatch, QueryError>>, QueryError> {
        let ts = |ms| {
            lit(ScalarValue::TimestampMillisecond(
                Some(ms),
                Some("UTC".into()),
            ))
        };
        // The partition filter prunes every other day's files unopened.
        let mut df = self
            .ctx
            .table(TABLE)
            .await?
            .filter(col("day").eq(lit(day)))?;
        if let Some(from) = filter.from {
            df = df.filter(col("window_start").gt_eq(ts(from)))?;
        }
        if let Some(to) = filter.to {
            df = df.filter(col("window_start").lt(ts(to)))?;
        }
        if let Some(level) = filter.level {
            df = df.filter(col("level").eq(lit(level)))?;
        }
        let columns: Vec<String> = release_fields().iter().map(|f| f.name().clone()).collect();
        let df = df
            .select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>())?
            .sort(vec![
                col("window_start").sort(true, false),
                col("level").sort(true, false),
                col("region").sort(true, false),
                col("age_band").sort(true, false),
            ])?;
        Ok(df
            .execute_stream()
            .await?
            .map(|b| b.map_err(QueryError::from))
            .boxed())
    }
}

impl ReleaseQuery {
    /// Every stored row of `region` (every window, level and age band),
    /// ordered by window and age band: a cell's history, read from the
    /// files. The filter goes into the Parquet scan, whose page
    /// statistics skip what they can.
    pub async fn region_rows(&self, region: &str) -> Result<Vec<ReleaseRow>, QueryError> {
        // The region's level is its H3 resolution: a second filter the
        // files' page statistics can prune by.
        let Ok(cell) = region.parse::<hushmap_schema::RegionCell>() else {
            return Ok(Vec::new());
        };
        let columns: Vec<String> = release_fields().iter().map(|f| f.name().clone()).collect();
        let batches = self
            .ctx
            .table(TABLE)
            .await?
            .filter(
                col("level")
                    .eq(lit(cell.resolution()))
                    .and(col("region").eq(lit(region))),
            )?
            .select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>())?
            .sort(vec![
                col("window_start").sort(true, false),
                col("age_band").sort(true, false),
            ])?
            .collect()
            .await?;
        let mut rows = Vec::new();
        for batch in &batches {
            // Final releases only: the all-ages label is never stored.
            rows.extend(ReleaseRow::from_record_batch(batch, false)?);
        }
        Ok(rows)
    }
}

/// Cells, a batch at a time.
pub type CellStream = BoxStream<'static, Result<RecordBatch, QueryError>>;

/// Schema metadata for cells of several releases. One release: its own
/// metadata. Several: the same keys describing the whole (their windows'
/// span, the composed cost as the ledger counts it, every ledger entry)
/// plus `hushmap.releases`, each release's own metadata as a JSON list.
pub fn export_metadata(metas: &[&ReleaseMeta]) -> HashMap<String, String> {
    if let [one] = metas {
        let mut m = one.to_metadata();
        m.insert(
            RELEASES_KEY.into(),
            serde_json::to_string(metas).unwrap_or_default(),
        );
        return m;
    }
    let mut m = HashMap::new();
    m.insert(meta_keys::SCHEMA_VERSION.into(), SCHEMA_VERSION.into());
    m.insert(
        RELEASES_KEY.into(),
        serde_json::to_string(metas).unwrap_or_default(),
    );
    let Some(first) = metas.first() else {
        return m;
    };
    let same = |f: fn(&ReleaseMeta) -> String| {
        let v = f(first);
        metas.iter().all(|x| f(x) == v).then_some(v)
    };
    let total = compose(metas.iter().copied());
    let span = |f: fn(&ReleaseMeta) -> i64, max: bool| {
        let it = metas.iter().map(|x| f(x));
        if max { it.max() } else { it.min() }
            .unwrap_or_default()
            .to_string()
    };
    m.insert(
        meta_keys::WINDOW_START.into(),
        span(|x| x.window_start, false),
    );
    m.insert(meta_keys::WINDOW_END.into(), span(|x| x.window_end, true));
    m.insert(
        meta_keys::MECHANISM.into(),
        same(|x| x.mechanism.clone()).unwrap_or_else(|| "mixed".into()),
    );
    let all_zcdp = metas.iter().all(|x| x.rho.is_some());
    m.insert(
        meta_keys::RHO.into(),
        if all_zcdp {
            total.rho.to_string()
        } else {
            String::new()
        },
    );
    m.insert(meta_keys::EPSILON.into(), total.epsilon.to_string());
    m.insert(meta_keys::DELTA.into(), total.delta.to_string());
    m.insert(
        meta_keys::LEDGER_ENTRY.into(),
        metas
            .iter()
            .map(|x| x.ledger_entry.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    let widest = |f: fn(&ReleaseMeta) -> f64| {
        metas
            .iter()
            .map(|x| f(x))
            .fold(0.0_f64, f64::max)
            .to_string()
    };
    m.insert(
        meta_keys::SYMPTOM_NOISE_SCALE.into(),
        widest(|x| x.symptom_noise_scale),
    );
    m.insert(
        meta_keys::SUPPRESSION_HALF_WIDTH.into(),
        widest(|x| x.max_ci_half_width),
    );
    let costs: Vec<_> = metas
        .iter()
        .flat_map(|x| x.statistic_costs.iter())
        .collect();
    m.insert(
        meta_keys::STATISTIC_COSTS.into(),
        serde_json::to_string(&costs).unwrap_or_default(),
    );
    m.insert(
        meta_keys::ESTIMATES.into(),
        same(|x| x.estimates.as_str().to_string()).unwrap_or_else(|| "mixed".into()),
    );
    let mut all_ages = std::collections::BTreeMap::<u8, f64>::new();
    for (level, se) in metas.iter().flat_map(|x| &x.all_ages_noise_scale) {
        let widest = all_ages.entry(*level).or_insert(0.0);
        *widest = widest.max(*se);
    }
    if !all_ages.is_empty() {
        m.insert(
            meta_keys::ALL_AGES_NOISE_SCALE.into(),
            serde_json::to_string(&all_ages).unwrap_or_default(),
        );
    }
    m
}

/// Metadata key of an export: each release's own metadata (JSON list).
pub const RELEASES_KEY: &str = "hushmap.releases";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReleaseStore;
    use crate::store::tests::sample_release;

    #[tokio::test]
    async fn range_and_level_select_the_right_cells_across_days() {
        let dir = std::env::temp_dir().join(format!("hushmap-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = ReleaseStore::open(&dir).unwrap();
        let day0 = 1_795_910_400_000; // 2026-11-29T00:00Z
        let hour = 3_600_000;
        // Two windows on the 29th (3 and 2 rows), one on the 30th (4 rows).
        for (start, rows) in [(day0, 3), (day0 + hour, 2), (day0 + 24 * hour, 4)] {
            store.insert(sample_release(start, rows)).unwrap();
        }
        let query = Arc::new(ReleaseQuery::new(store.dir()).unwrap());
        let days = vec!["2026-11-29".to_string(), "2026-11-30".to_string()];
        let rows = |f: CellFilter| {
            let (query, days) = (query.clone(), days.clone());
            async move {
                let (schema, batches) = query.cells(f, days, HashMap::new());
                assert_eq!(schema.fields().len(), release_fields().len());
                let batches: Vec<RecordBatch> = batches.try_collect().await.unwrap();
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            }
        };
        assert_eq!(rows(CellFilter::default()).await, 9);
        let day = |s: &str, e: &str| CellFilter::parse(Some(s), Some(e), None).unwrap();
        assert_eq!(rows(day("2026-11-29", "2026-11-30")).await, 5);
        assert_eq!(rows(day("2026-11-30", "2026-12-01")).await, 4);
        let one = CellFilter {
            from: Some(day0 + hour),
            to: Some(day0 + hour + 1),
            ..CellFilter::default()
        };
        assert_eq!(rows(one).await, 2);
        let level = |l| CellFilter {
            level: Some(l),
            ..CellFilter::default()
        };
        assert_eq!(rows(level(5)).await, 9);
        assert_eq!(rows(level(4)).await, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A release stored after a day has been queried shows in the next
    /// query of that day (DataFusion's listing cache once hid it for good).
    #[tokio::test]
    async fn a_release_stored_after_a_query_of_its_day_shows_in_the_next() {
        let dir = std::env::temp_dir().join(format!("hushmap-query-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = ReleaseStore::open(&dir).unwrap();
        let day0 = 1_795_910_400_000; // 2026-11-29T00:00Z
        let query = Arc::new(ReleaseQuery::new(store.dir()).unwrap());
        let rows = || {
            let query = query.clone();
            async move {
                let days = vec!["2026-11-29".to_string()];
                let (_, batches) = query.cells(CellFilter::default(), days, HashMap::new());
                let batches: Vec<RecordBatch> = batches.try_collect().await.unwrap();
                batches.iter().map(|b| b.num_rows()).sum::<usize>()
            }
        };
        store.insert(sample_release(day0, 3)).unwrap();
        assert_eq!(rows().await, 3);
        store.insert(sample_release(day0 + 10_000, 2)).unwrap();
        assert_eq!(rows().await, 5, "the second window of the day");
        let researcher =
            crate::sql_worker::researcher_session(store.dir(), 64 * 1024 * 1024, 1).unwrap();
        let sql = crate::sql_worker::plan(&researcher, "SELECT count(*) FROM releases")
            .await
            .unwrap();
        let counted = sql.collect().await.unwrap();
        let n = counted[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 5, "researchers' SQL sees it too");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn filters_parse_in_three_forms_and_refuse_nonsense() {
        let day =
            CellFilter::parse(Some("2026-11-29"), Some("2026-11-30T00:00:00Z"), None).unwrap();
        assert_eq!(day.from, Some(1_795_910_400_000));
        assert_eq!(day.to, Some(1_795_910_400_000 + 86_400_000));
        assert!(day.contains_window(1_795_910_400_000));
        assert!(!day.contains_window(1_795_910_400_000 + 86_400_000));
        assert_eq!(
            CellFilter::parse(Some("5"), None, Some(4)).unwrap().from,
            Some(5)
        );
        assert!(CellFilter::parse(Some("yesterday"), None, None).is_err());
        assert!(CellFilter::parse(Some("10"), Some("5"), None).is_err());
        assert!(CellFilter::parse(None, None, Some(16)).is_err());
        let parsed = |e| CellFilter::default().with_estimates(e);
        assert!(!parsed(None).unwrap().measured);
        assert!(!parsed(Some("published")).unwrap().measured);
        assert!(parsed(Some("measured")).unwrap().measured);
        assert!(parsed(Some("raw")).is_err());
    }
}
