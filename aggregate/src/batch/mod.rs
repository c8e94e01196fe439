//! Batch mode: historic data through the same coarsening, bounding, noise
//! and ledger as the stream.
//!
//! ```text
//! hushmap-aggregate batch --input FILE(.ndjson | .parquet) --from T --to T
//!                         --epsilon E [--delta D] --out FILE(.arrow | .parquet | .json)
//!                         [--ledger FILE [--ledger-topic] | --fresh-ledger]
//! ```
//!
//! Which windows are released is an input, never read off the data: every
//! window starting in `[from, to)` is released (zeros plus noise, or no
//! rows under threshold selection, when nobody submitted in it), and
//! records outside the range are refused like any bad line. Each window is
//! spent from a persistent ledger: a ledger file (appended to and synced
//! before the window is noised; locked for the run), optionally with the
//! stream's releases topic as further history, so a window released
//! before — by an earlier run or by the stream — is refused, as the stream
//! would refuse it. A fresh ledger (`--fresh-ledger`) shares its budget
//! with nothing, and says so on stderr and in every release's metadata
//! (`hushmap.ledger_scope = fresh`).
//!
//! Inputs:
//! - **NDJSON of submissions**, one API body per line. Each line is parsed,
//!   validated and coarsened by the same code as ingest (`hushmap_submission`), so a
//!   line is accepted or refused exactly as `POST /v1/submissions` would,
//!   except that `observed_at` is required (it places the submission in its
//!   window) and may lie in the past. Who sent a line is the batch-only
//!   field `contributor` (an opaque id, 1 to 128 characters: the person, as
//!   the data's owner knows them), keyed with a secret drawn for this run
//!   only, so bounding works within the run and the keys link to nothing
//!   outside it. A line without one counts as a contributor of its own:
//!   for such lines the unit of privacy is the line, which the run reports.
//! - **Parquet of coarse records** ([`COARSE_RECORD_COLUMNS`]), e.g. a
//!   dump of the submissions topic; later rows count as later.
//!
//! A bad line or row is reported (its number, the error code and field,
//! never its content) and skipped; nothing else is lost. Accepted records
//! go to Arrow IPC files in the run's spill directory as they are read,
//! split by contributor, so the input is never held in memory. Each
//! window is then bounded and counted by the same DataFusion plan as the
//! stream, one pass of `batch.records_per_pass` records at a time (a
//! contributor's records are all in one pass; the passes' counts add up),
//! within `batch.memory_limit_mb` (sorting through disk when a pass's
//! contributors do not fit), authorised by a [`PrivacyLedger`] with the
//! configured limits, and noised once with that authorisation.

use crate::config::AggregateConfig;
use crate::engine::{self, CellCounts, EngineError};
use crate::records::{SequencedRecord, to_record_batch};
use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Int64Array, RecordBatch,
    UInt8Array, UInt16Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt8Type, UInt16Type, UInt64Type};
use arrow::error::ArrowError;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use hushmap_privacy::release::{ReleasePlan, WindowData, WindowOutcome, release_window};
use hushmap_privacy::{LedgerFile, LedgerFileError, PrivacyLedger};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::release::LedgerScope;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, Release, ReleaseMeta, RiskLevel, SymptomSet,
    Window,
};
use hushmap_submission::body::parse_submission;
use hushmap_submission::coarsen::Coarsener;
use hushmap_submission::contributor::ContributorKeys;
use hushmap_submission::validate::{ValidationRules, validate};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::errors::ParquetError;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod cluster;
mod sinks;
mod sources;

pub use cluster::ClusterUrl;

pub use sinks::{OutputFormat, plan_meta, write_output};
use sources::*;
pub use sources::{
    COARSE_RECORD_COLUMNS, CoarseParquetWriter, InputFormat, InputReport, write_coarse_parquet,
};

/// What the hash bounding plan holds in memory per record, about (its
/// contributor aggregate and the join on `seq`; 10M records took 250 MiB):
/// above the pool, batch mode sorts through disk instead.
const HASH_PLAN_BYTES_PER_RECORD: u64 = 32;

/// Most refused lines or rows described one by one in the report.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// Most windows one run may release (a year of 15-minute windows is
/// 35,040).
pub const MAX_BATCH_WINDOWS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}: unknown input format (expected .ndjson, .jsonl or .parquet)")]
    InputFormat(PathBuf),
    #[error("{0}: unknown output format (expected .arrow, .parquet or .json)")]
    OutputFormat(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: ParquetError },
    #[error("{path}: not a coarse-record file: {reason}")]
    ParquetSchema { path: PathBuf, reason: String },
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    ReleaseStep(#[from] hushmap_privacy::release::ReleaseStepError),
    #[error("encoding the release: {0}")]
    Release(#[from] hushmap_schema::ReleaseError),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("--from/--to: {0}")]
    Range(String),
    #[error(transparent)]
    Ledger(#[from] LedgerFileError),
    #[error("reading the releases topic for the ledger: {0}")]
    ReleasesTopic(#[from] crate::error::AggregatorError),
    #[error(
        "--cluster {0}: this hushmap-aggregate was built without the `cluster` feature (cargo build --features cluster)"
    )]
    NoClusterClient(ClusterUrl),
    #[error("counting on the cluster {url}: {source}")]
    Cluster { url: String, source: EngineError },
}

impl BatchError {
    /// Maps an I/O error on `path`.
    fn io(path: &Path) -> impl Fn(std::io::Error) -> BatchError + '_ {
        move |source| BatchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Maps a Parquet error on `path`.
    fn parquet(path: &Path) -> impl Fn(ParquetError) -> BatchError + '_ {
        move |source| BatchError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// The windows a batch run releases: every window starting in
/// `[from_ms, to_ms)`, both on window boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl WindowRange {
    /// Checks the range against the window length: both ends on window
    /// boundaries, `from` before `to`, at most [`MAX_BATCH_WINDOWS`].
    pub fn new(
        from_ms: i64,
        to_ms: i64,
        length: hushmap_schema::WindowLength,
    ) -> Result<WindowRange, BatchError> {
        for (name, t) in [("--from", from_ms), ("--to", to_ms)] {
            if Window::from_start(t, length).is_none() {
                return Err(BatchError::Range(format!(
                    "{name} must be on a window boundary (windows are {} s long, aligned to \
                     the Unix epoch; a UTC date is one for daily windows)",
                    length.secs()
                )));
            }
        }
        if from_ms >= to_ms {
            return Err(BatchError::Range("--to must be after --from".into()));
        }
        let n = (to_ms - from_ms) / length.millis();
        if n > MAX_BATCH_WINDOWS as i64 {
            return Err(BatchError::Range(format!(
                "{n} windows; at most {MAX_BATCH_WINDOWS} per run"
            )));
        }
        Ok(WindowRange { from_ms, to_ms })
    }

    pub fn contains(&self, window: &Window) -> bool {
        self.from_ms <= window.start_ms && window.start_ms < self.to_ms
    }

    /// Every window of the range, in order.
    pub fn windows(
        &self,
        length: hushmap_schema::WindowLength,
    ) -> impl Iterator<Item = Window> + use<> {
        let to = self.to_ms;
        std::iter::successors(Window::from_start(self.from_ms, length), move |w| {
            Window::from_start(w.end_ms, length)
        })
        .take_while(move |w| w.start_ms < to)
    }
}

/// Where a batch run spends its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchLedger {
    /// A ledger file (created if absent), kept across runs; with
    /// `releases_topic`, the stream's releases topic is read into it as
    /// further history (windows the stream released are refused).
    File { path: PathBuf, releases_topic: bool },
    /// A ledger for this run only: nothing else's spending is counted.
    Fresh,
}

/// What a batch run is asked to do besides its input.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub range: WindowRange,
    pub ledger: BatchLedger,
    /// Count on this Ballista cluster instead of in this process (the
    /// noise and the ledger stay here either way).
    pub cluster: Option<ClusterUrl>,
    /// The cluster's shared secret, presented to its scheduler with every
    /// call (`HUSHMAP_CLUSTER_SECRET`; a scheduler beyond loopback
    /// requires it).
    pub cluster_secret: Option<hushmap_service::secrets::Secret>,
}

/// Where a run's bounded counts were made (the counts are the same
/// wherever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// In this process, within `batch.memory_limit_mb`, in `passes`
    /// passes over disjoint sets of contributors; `through_disk` of them
    /// sorted through disk, their contributors not fitting the pool.
    Here { passes: usize, through_disk: usize },
    /// By the executors of a Ballista cluster, in `passes` jobs over
    /// disjoint sets of contributors.
    OnCluster { url: ClusterUrl, passes: usize },
}

/// The outcome of a batch run.
#[derive(Debug)]
pub struct BatchReport {
    pub input: InputReport,
    /// Where the bounded counts were made.
    pub counted: Counted,
    /// Every released window, in time order.
    pub releases: Vec<Release>,
    /// The measurements behind each release (unclamped,
    /// `hushmap.estimates = measured`), in the same order.
    pub measurements: Vec<Release>,
    /// Entries the ledger held before this run (file and topic).
    pub ledger_history: usize,
    /// Windows the ledger refused, with the reason.
    pub refused_windows: Vec<RefusedWindow>,
    /// What each window's release costs, and its mechanism (the metadata
    /// of an output with no window).
    pub plan_meta: ReleaseMeta,
}

/// A window the ledger would not release, and why.
pub type RefusedWindow = (Window, String);

/// Reports progress of a long run (a progress bar in the CLI).
pub trait Progress {
    /// A new phase with `total` steps (`None` when unknown).
    fn phase(&self, name: &'static str, total: Option<u64>);
    /// `n` more steps of the current phase are done.
    fn advance(&self, n: u64);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &'static str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
}

/// Reads `input` and releases every window of `options.range` under
/// `config`, spending from `options.ledger`; returns the releases (write
/// them with [`write_output`]).
pub async fn run_batch(
    config: &AggregateConfig,
    input: &Path,
    options: &BatchOptions,
    progress: &dyn Progress,
) -> Result<BatchReport, BatchError> {
    // History has no open window to publish provisional numbers for: the
    // final releases get the whole budget.
    let config = &config.without_provisional();
    let plan = config.validated_plan()?;
    let format = InputFormat::of(input)?;
    // The ledger first: a run that cannot spend must not read gigabytes.
    let (mut ledger, mut ledger_file, ledger_history) = open_ledger(config, &options.ledger)?;
    // The accepted records and the plan's spill files, removed at the end
    // of the run, even on an error.
    let spill_parent = config
        .batch
        .spill_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    // Owner only: it holds individual (coarse) records.
    let spill = tempfile::Builder::new()
        .prefix("hushmap-batch-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&spill_parent)
        .map_err(BatchError::io(&spill_parent))?;
    let (records, input_report) = match format {
        InputFormat::Ndjson => {
            read_submissions(config, input, options.range, progress, spill.path())?
        }
        InputFormat::Parquet => {
            read_coarse_records(config, input, options.range, progress, spill.path())?
        }
    };
    let (cells, counted) = match &options.cluster {
        Some(url) => {
            progress.phase("bounding and counting on the cluster", Some(records.rows));
            let (cells, passes) = cluster::count_on_cluster(
                url,
                options.cluster_secret.as_ref(),
                &records,
                config.batch.records_per_pass,
                config.bounds(),
                progress,
            )
            .await?;
            let url = url.clone();
            (cells, Counted::OnCluster { url, passes })
        }
        None => count_bounded(config, &records, spill.path(), progress).await?,
    };
    drop(spill);
    let scope = match options.ledger {
        BatchLedger::File { .. } => LedgerScope::Shared,
        BatchLedger::Fresh => LedgerScope::Fresh,
    };
    let ReleasedWindows {
        releases,
        measurements,
        refused: refused_windows,
    } = release_windows(
        config,
        &plan,
        options.range,
        cells,
        (&mut ledger, ledger_file.as_mut()),
        scope,
        progress,
    )?;
    let mut plan_meta = plan_meta(&plan);
    plan_meta.ledger_scope = scope;
    Ok(BatchReport {
        input: input_report,
        counted,
        releases,
        measurements,
        ledger_history,
        refused_windows,
        plan_meta,
    })
}

/// The run's ledger with its history, and the file it is kept in.
fn open_ledger(
    config: &AggregateConfig,
    choice: &BatchLedger,
) -> Result<(PrivacyLedger, Option<LedgerFile>, usize), BatchError> {
    let mut ledger = PrivacyLedger::new(config.budget());
    let BatchLedger::File {
        path,
        releases_topic,
    } = choice
    else {
        return Ok((ledger, None, 0));
    };
    let (file, entries) = LedgerFile::open(path)?;
    let mut history = entries.len();
    for entry in entries {
        ledger.restore(entry);
    }
    if *releases_topic {
        let published = crate::release_log::ReleaseLog::new(config)?.read_new()?;
        history += published.len();
        for entry in published {
            ledger.restore(entry);
        }
    }
    Ok((ledger, Some(file), history))
}

/// Most malloc arenas a batch run may use (glibc; see
/// [`cap_allocator_arenas`]).
pub const BATCH_ALLOCATOR_ARENAS: i32 = 2;

/// Caps glibc's malloc at [`BATCH_ALLOCATOR_ARENAS`] arenas for this
/// process; call it before any thread is started (an arena a thread has
/// taken stays its own). A no-op on other C libraries.
///
/// Why: by default glibc gives threads up to eight arenas per core, and an
/// arena keeps what its threads freed for their next allocations. A batch
/// run's DataFusion threads each allocate and free a sort's or a scan's
/// buffers, so the freed memory of many arenas stayed resident. Counted
/// in passes, without this call: 1M records peaked at 114–115 MiB, 10M at
/// 128–132 MiB, 100M at 154 MiB; with it, 109–110, 122–129 and 136–137
/// MiB, no slower (docs/BENCHMARKS.md). The stream does not cap them: its threads
/// allocate concurrently all the time, and contention would cost more than
/// the memory saved.
pub fn cap_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; glibc takes its
    // own lock, and M_ARENA_MAX is a documented parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, BATCH_ALLOCATOR_ARENAS);
    }
}

/// The bounded counts of every window (the stream's plan, over all windows
/// at once: contributors are bounded per window), from the spilled
/// records, one pass of at most `batch.records_per_pass` records at a
/// time, within `batch.memory_limit_mb`.
///
/// A pass holds whole contributors (whole shards, [`RecordSink`]), so its
/// bounded counts are exactly its contributors' share, and the passes'
/// counts add up to the counts of one pass over everything. Each pass runs
/// the stream's hash plan, the fastest, when its memory should fit the
/// pool (its hash join cannot spill); otherwise, or if it runs out, the
/// sort plan (the same counts: the bound is the same rule), sorting
/// through `spill_dir`. Memory is then that of one pass, whatever the
/// input's size.
async fn count_bounded(
    config: &AggregateConfig,
    records: &SpilledRecords,
    spill_dir: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<CellCounts>, Counted), BatchError> {
    let limit = usize::try_from(config.batch.memory_limit_mb)
        .unwrap_or(usize::MAX / (1 << 20))
        .saturating_mul(1 << 20);
    let sorts = spill_dir.join("sorts");
    std::fs::create_dir_all(&sorts).map_err(BatchError::io(&sorts))?;
    let context = || -> Result<SessionContext, BatchError> {
        let runtime = RuntimeEnvBuilder::new()
            // The consumers that took most are named when the pool runs out.
            .with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(limit),
                std::num::NonZeroUsize::new(5).expect("non-zero"),
            )))
            .with_temp_file_path(&sorts)
            // A merge holds a batch of each spill file it reads at once:
            // merged a few at a time, many spills fit a small pool.
            .with_max_spill_merge_fan_in(4)
            .build_arc()
            .map_err(EngineError::DataFusion)?;
        // Each sort keeps this much back for merging its spill files
        // (DataFusion's default, 10 MiB, is most of a small pool).
        let session = SessionConfig::new()
            .with_sort_spill_reservation_bytes(limit / 16)
            // A shard read in byte ranges is read a whole range at a time
            // (tens of MiB); read from start to end, a batch at a time.
            .with_repartition_file_scans(false);
        Ok(SessionContext::new_with_config_rt(session, runtime))
    };
    let passes = records.passes(config.batch.records_per_pass);
    progress.phase("bounding and counting", Some(records.rows));
    let mut sums = CellSums::default();
    let mut through_disk = 0;
    for pass in &passes {
        // The hash plan's memory grows with the records (its aggregate and
        // join hold a few dozen bytes for each); it is tried only when that
        // should fit, since under memory pressure DataFusion 55's hash plan
        // was seen to stall instead of failing (10M records in a 128 MiB
        // pool). Should it still run out, the sort plan follows.
        if pass.rows.saturating_mul(HASH_PLAN_BYTES_PER_RECORD) <= limit as u64 {
            let counted =
                engine::bounded_counts_table(&context()?, pass.listing_table()?, config.bounds())
                    .await;
            match counted {
                Err(EngineError::DataFusion(e))
                    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => {}
                counted => {
                    sums.add(counted?);
                    progress.advance(pass.rows);
                    continue;
                }
            }
        }
        tracing::info!(
            memory_limit_mb = config.batch.memory_limit_mb,
            pass_records = pass.rows,
            "a pass's contributors do not fit batch.memory_limit_mb: bounding by sorting through disk"
        );
        let table = pass.listing_table()?;
        sums.add(engine::sort_bounded_counts_table(&context()?, table, config.bounds()).await?);
        through_disk += 1;
        progress.advance(pass.rows);
    }
    let counted = Counted::Here {
        passes: passes.len(),
        through_disk,
    };
    Ok((sums.into_cells(), counted))
}

/// Bounded counts of disjoint sets of contributors, added up per window
/// and cell.
#[derive(Default)]
struct CellSums(BTreeMap<(i64, RegionCell, AgeBand), CellCounts>);

impl CellSums {
    fn add(&mut self, cells: Vec<CellCounts>) {
        for c in cells {
            match self.0.entry((c.window_start, c.region, c.age_band)) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(c);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let sum = e.get_mut();
                    for (s, n) in sum.risk.iter_mut().zip(c.risk) {
                        *s += n;
                    }
                    for (s, n) in sum.symptoms.iter_mut().zip(c.symptoms) {
                        *s += n;
                    }
                }
            }
        }
    }

    /// The sums in window, region and age-band order (the plan's order).
    fn into_cells(self) -> Vec<CellCounts> {
        self.0.into_values().collect()
    }
}

/// Releases every window of `range`, in order, each authorised by the
/// ledger (and recorded in its file, synced, before it is noised).
fn release_windows(
    config: &AggregateConfig,
    plan: &ReleasePlan,
    range: WindowRange,
    cells: Vec<CellCounts>,
    (ledger, mut file): (&mut PrivacyLedger, Option<&mut LedgerFile>),
    scope: LedgerScope,
    progress: &dyn Progress,
) -> Result<ReleasedWindows, BatchError> {
    let mut by_window: BTreeMap<i64, Vec<CellCounts>> = BTreeMap::new();
    for c in cells {
        by_window.entry(c.window_start).or_default().push(c);
    }
    let length = config.window_length();
    let windows: Vec<Window> = range.windows(length).collect();
    progress.phase("noising windows", Some(windows.len() as u64));
    let mut releases = Vec::with_capacity(windows.len());
    let mut measurements = Vec::with_capacity(windows.len());
    let mut refused = Vec::new();
    for window in windows {
        // Every window of the range, whether or not anyone is in it.
        let cells = by_window.remove(&window.start_ms).unwrap_or_default();
        let data = WindowData::Counted(&cells);
        match release_window(ledger, file.as_deref_mut(), plan, window, None, data, None)? {
            WindowOutcome::Released(mut release, measured) => {
                release.meta.ledger_scope = scope;
                releases.push(release);
                if let Some(mut measured) = measured {
                    measured.meta.ledger_scope = scope;
                    measurements.push(*measured);
                }
            }
            WindowOutcome::Refused(e) => refused.push((window, e.to_string())),
        }
        progress.advance(1);
    }
    Ok(ReleasedWindows {
        releases,
        measurements,
        refused,
    })
}

/// What [`release_windows`] made of a range: the releases and the
/// measurements behind them (in window order), and the windows refused.
struct ReleasedWindows {
    releases: Vec<Release>,
    measurements: Vec<Release>,
    refused: Vec<RefusedWindow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            InputFormat::of(Path::new("a.NDJSON")).unwrap(),
            InputFormat::Ndjson
        );
        assert_eq!(
            InputFormat::of(Path::new("a.parquet")).unwrap(),
            InputFormat::Parquet
        );
        assert!(InputFormat::of(Path::new("a.csv")).is_err());
        assert_eq!(
            OutputFormat::of(Path::new("x.arrow")).unwrap(),
            OutputFormat::Arrow
        );
        assert!(OutputFormat::of(Path::new("x")).is_err());
    }

    #[test]
    fn a_range_is_whole_windows_and_lists_every_one() {
        let day = hushmap_schema::WindowLength::ONE_DAY;
        const D: i64 = 86_400_000;
        let r = WindowRange::new(D, 4 * D, day).unwrap();
        let starts: Vec<i64> = r.windows(day).map(|w| w.start_ms).collect();
        assert_eq!(starts, vec![D, 2 * D, 3 * D]);
        assert!(r.contains(&Window::from_start(3 * D, day).unwrap()));
        assert!(!r.contains(&Window::from_start(4 * D, day).unwrap()));
        assert!(WindowRange::new(D + 1, 4 * D, day).is_err());
        assert!(WindowRange::new(4 * D, 4 * D, day).is_err());
        assert!(WindowRange::new(0, (MAX_BATCH_WINDOWS as i64 + 1) * D, day).is_err());
    }

    #[test]
    fn passes_take_whole_shards_up_to_the_limit_and_a_big_shard_alone() {
        let spilled = SpilledRecords {
            shards: [400, 0, 500, 200, 1_500, 300, 100]
                .iter()
                .enumerate()
                .map(|(i, rows)| (PathBuf::from(format!("s{i}")), *rows))
                .collect(),
            rows: 3_000,
        };
        let passes: Vec<(Vec<String>, u64)> = spilled
            .passes(1_000)
            .into_iter()
            .map(|p| {
                let files = p.files.iter().map(|f| f.display().to_string()).collect();
                (files, p.rows)
            })
            .collect();
        let files = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            passes,
            vec![
                (files(&["s0", "s2"]), 900),
                (files(&["s3"]), 200),
                (files(&["s4"]), 1_500),
                (files(&["s5", "s6"]), 400),
            ]
        );
        // Every record is in exactly one pass.
        let total: u64 = passes.iter().map(|(_, rows)| rows).sum();
        assert_eq!(total, spilled.rows);
    }

    #[test]
    fn an_input_gets_a_shard_per_pass_it_should_fill() {
        assert_eq!(shard_count(None, 1_000), SHARDS_WHEN_SIZE_UNKNOWN);
        assert_eq!(shard_count(Some(0), 1_000), 1);
        assert_eq!(shard_count(Some(1_000), 1_000), 1);
        assert_eq!(shard_count(Some(1_001), 1_000), 2);
        assert_eq!(shard_count(Some(10_000_000), 1 << 20), 10);
        assert_eq!(shard_count(Some(u64::MAX), 1_000), MAX_SHARDS);
    }

    #[test]
    fn sums_add_the_same_cell_and_keep_the_plans_order() {
        let cell = |h: u64| RegionCell::from_raw(h).unwrap();
        let counts = |window_start, region, n| CellCounts {
            risk: [n, 0, 2 * n],
            symptoms: [n; 10],
            ..CellCounts::empty(window_start, region, AgeBand::From30To44)
        };
        let (a, b) = (cell(0x0852_8347_3fff_ffff), cell(0x0852_8344_7fff_ffff));
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let mut sums = CellSums::default();
        sums.add(vec![counts(0, second, 1), counts(86_400_000, first, 5)]);
        sums.add(vec![counts(0, first, 3), counts(0, second, 2)]);
        let cells = sums.into_cells();
        assert_eq!(
            cells,
            vec![
                counts(0, first, 3),
                counts(0, second, 3),
                counts(86_400_000, first, 5)
            ]
        );
    }

    #[test]
    fn batch_submissions_must_say_when() {
        let now = 1_000_000_000;
        assert!(batch_observed_ms(None, now).is_err());
        assert!(batch_observed_ms(Some("yesterday"), now).is_err());
        assert_eq!(
            batch_observed_ms(Some("1970-01-01T00:01:00Z"), now),
            Ok(60_000)
        );
        assert!(batch_observed_ms(Some("2999-01-01T00:00:00Z"), now).is_err());
    }
}
