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
//! never its content) and skipped; nothing else is lost. Each window is then
//! bounded and counted by the same DataFusion plan as the stream, authorised
//! by a [`PrivacyLedger`] with the configured limits, and noised once with
//! that authorisation.

use crate::config::AggregateConfig;
use crate::engine::{self, CellCounts, EngineError};
use crate::records::{SequencedRecord, to_record_batch};
use crate::release::{ReleasePlan, noisy_release};
use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Int64Array, RecordBatch,
    UInt8Array, UInt16Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt8Type, UInt16Type, UInt64Type};
use arrow::error::ArrowError;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use hushmap_privacy::noise::NoiseError;
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

/// Most refused lines or rows described one by one in the report.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// Rows per Arrow batch handed to DataFusion (it runs them in parallel).
const ENGINE_BATCH_ROWS: usize = 256 * 1024;

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
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
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

/// Where a batch run's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Submission bodies, one JSON object per line.
    Ndjson,
    /// Coarse records ([`COARSE_RECORD_COLUMNS`]).
    Parquet,
}

impl InputFormat {
    pub fn of(path: &Path) -> Result<InputFormat, BatchError> {
        match extension(path).as_deref() {
            Some("ndjson" | "jsonl") => Ok(InputFormat::Ndjson),
            Some("parquet") => Ok(InputFormat::Parquet),
            _ => Err(BatchError::InputFormat(path.to_path_buf())),
        }
    }
}

/// What a batch run writes: the release schema in one of three encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Arrow IPC file; every window's rows, one schema.
    Arrow,
    Parquet,
    /// A JSON array of releases, each `{"meta": …, "rows": […]}`.
    Json,
}

impl OutputFormat {
    pub fn of(path: &Path) -> Result<OutputFormat, BatchError> {
        match extension(path).as_deref() {
            Some("arrow" | "ipc" | "feather") => Ok(OutputFormat::Arrow),
            Some("parquet") => Ok(OutputFormat::Parquet),
            Some("json") => Ok(OutputFormat::Json),
            _ => Err(BatchError::OutputFormat(path.to_path_buf())),
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// Columns of the coarse-record Parquet input, in this order. `region` is
/// the H3 index as an integer (coarsened to the configured resolution if
/// finer), `age_band` and `risk` are codes (`AgeBand::code`,
/// `RiskLevel::code`), `symptoms` a bit set in `Symptom::ALL` order.
pub static COARSE_RECORD_COLUMNS: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", DataType::Int64, false),
        Field::new("region", DataType::UInt64, false),
        Field::new("age_band", DataType::UInt8, false),
        Field::new("risk", DataType::UInt8, false),
        Field::new("symptoms", DataType::UInt16, false),
        Field::new("contributor", DataType::FixedSizeBinary(16), false),
    ]))
});

/// Writes coarse records in the Parquet input format (tests, benchmarks,
/// topic dumps).
pub fn write_coarse_parquet(path: &Path, records: &[CoarseRecord]) -> Result<(), BatchError> {
    let file = File::create(path).map_err(BatchError::io(path))?;
    let parquet_err = BatchError::parquet(path);
    let mut writer =
        ArrowWriter::try_new(file, COARSE_RECORD_COLUMNS.clone(), None).map_err(&parquet_err)?;
    for chunk in records.chunks(ENGINE_BATCH_ROWS) {
        let mut contributors = FixedSizeBinaryBuilder::with_capacity(chunk.len(), 16);
        for r in chunk {
            contributors.append_value(r.contributor.0)?;
        }
        let batch = RecordBatch::try_new(
            COARSE_RECORD_COLUMNS.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    chunk.iter().map(|r| r.window.start_ms),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    chunk.iter().map(|r| r.region.raw()),
                )),
                Arc::new(UInt8Array::from_iter_values(
                    chunk.iter().map(|r| r.age_band.code()),
                )),
                Arc::new(UInt8Array::from_iter_values(
                    chunk.iter().map(|r| r.risk.code()),
                )),
                Arc::new(UInt16Array::from_iter_values(
                    chunk.iter().map(|r| r.symptoms.bits()),
                )),
                Arc::new(contributors.finish()),
            ],
        )?;
        writer.write(&batch).map_err(&parquet_err)?;
    }
    writer.close().map_err(&parquet_err)?;
    Ok(())
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
}

/// Accepted records, turned into Arrow batches as they come so the input
/// is held once, in its compact columnar form.
struct RecordSink {
    pending: Vec<SequencedRecord>,
    batches: Vec<RecordBatch>,
    next_seq: u64,
}

impl RecordSink {
    fn new() -> RecordSink {
        RecordSink {
            pending: Vec::with_capacity(ENGINE_BATCH_ROWS),
            batches: Vec::new(),
            next_seq: 0,
        }
    }

    /// Appends a record; later calls count as later (`seq`).
    fn push(&mut self, record: CoarseRecord) -> Result<(), BatchError> {
        self.pending.push(SequencedRecord {
            seq: self.next_seq,
            record,
        });
        self.next_seq += 1;
        if self.pending.len() == ENGINE_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BatchError> {
        if !self.pending.is_empty() {
            self.batches.push(to_record_batch(&self.pending)?);
            self.pending.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RecordBatch>, BatchError> {
        self.flush()?;
        Ok(self.batches)
    }
}

/// What happened to the input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InputReport {
    /// Lines (NDJSON, blank ones skipped) or rows (Parquet) read.
    pub read: u64,
    pub accepted: u64,
    /// Invalid, or outside the run's windows.
    pub refused: u64,
    /// Of the refused, those valid but outside `[from, to)`.
    pub outside_range: u64,
    /// Accepted NDJSON lines without a `contributor` (each its own).
    pub without_contributor: u64,
    /// The first [`MAX_REPORTED_ERRORS`] refusals: position, code, field,
    /// rule. Never the refused content.
    pub errors: Vec<String>,
}

/// Why a valid record outside the run's windows is refused.
const OUTSIDE: &str = "its window does not start in [--from, --to)";

impl InputReport {
    fn refuse(&mut self, error: impl FnOnce() -> String) {
        self.refused += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(error());
        }
    }

    fn outside(&mut self, error: impl FnOnce() -> String) {
        self.outside_range += 1;
        self.refuse(error);
    }
}

/// The outcome of a batch run.
#[derive(Debug)]
pub struct BatchReport {
    pub input: InputReport,
    /// Every released window, in time order.
    pub releases: Vec<Release>,
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
    let plan = config.validated_plan()?;
    let format = InputFormat::of(input)?;
    // The ledger first: a run that cannot spend must not read gigabytes.
    let (mut ledger, mut ledger_file, ledger_history) = open_ledger(config, &options.ledger)?;
    let (records, input_report) = match format {
        InputFormat::Ndjson => read_submissions(config, input, options.range, progress)?,
        InputFormat::Parquet => read_coarse_records(config, input, options.range, progress)?,
    };
    let cells = count_bounded(config, records).await?;
    let scope = match options.ledger {
        BatchLedger::File { .. } => LedgerScope::Shared,
        BatchLedger::Fresh => LedgerScope::Fresh,
    };
    let (releases, refused_windows) = release_windows(
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
        releases,
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

fn read_submissions(
    config: &AggregateConfig,
    path: &Path,
    range: WindowRange,
    progress: &dyn Progress,
) -> Result<(Vec<RecordBatch>, InputReport), BatchError> {
    let io_err = BatchError::io(path);
    let file = File::open(path).map_err(&io_err)?;
    let size = file.metadata().map(|m| m.len()).ok();
    progress.phase("reading submissions", size);
    let rules = ValidationRules {
        resolution: RegionResolution::new(config.region_resolution)
            .map_err(crate::config::ConfigError::from)?,
        window: config.window_length(),
        allowed_lateness_ms: i64::from(config.allowed_lateness_secs) * 1000,
    };
    // A secret for this run only: keys bound contributors within the run and
    // link to nothing outside it.
    let secret: [u8; 32] = rand::random();
    let coarsener = Coarsener::new(&secret, config.window_length());
    let contributors = ContributorKeys::new(&secret);
    let mut report = InputReport::default();
    let mut records = RecordSink::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let now_ms = hushmap_service::clock::now_ms();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(&io_err)?;
        if n == 0 {
            break;
        }
        progress.advance(n as u64);
        line_no += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.read += 1;
        let (body, contributor) = match split_contributor(&line) {
            Ok(split) => split,
            Err(reason) => {
                report.refuse(|| format!("line {line_no}: {reason}"));
                continue;
            }
        };
        let problem = match parse_submission(body.as_deref().unwrap_or(&line)) {
            Ok(sub) => match batch_observed_ms(sub.observed_at.as_deref(), now_ms) {
                // "Now" is when it was observed: a past submission is valid
                // in batch mode, and still refused if it claims the future.
                Ok(observed) => match validate(sub, &rules, observed) {
                    Ok(valid) => {
                        let key = match &contributor {
                            Some(id) => contributors.batch_key(id),
                            None => {
                                report.without_contributor += 1;
                                ContributorKey(rand::random())
                            }
                        };
                        let (_, record) = coarsener.coarsen(valid, key);
                        if !range.contains(&record.window) {
                            report.outside(|| {
                                format!("line {line_no}: outside_range (observed_at): {OUTSIDE}")
                            });
                            continue;
                        }
                        records.push(record)?;
                        report.accepted += 1;
                        continue;
                    }
                    Err(p) => p,
                },
                Err(reason) => {
                    report.refuse(|| {
                        format!("line {line_no}: invalid_value (observed_at): {reason}")
                    });
                    continue;
                }
            },
            Err(p) => p,
        };
        report.refuse(|| {
            format!(
                "line {line_no}: {}{}: {}",
                problem.code.as_str(),
                problem
                    .field
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default(),
                problem.detail
            )
        });
    }
    Ok((records.finish()?, report))
}

/// A batch line's batch-only `contributor` field taken out: the rest of
/// the line (re-encoded; `None` when there was no such field and the line
/// is parsed as it is) and the id. The error says which rule failed, never
/// the value.
fn split_contributor(line: &[u8]) -> Result<(Option<Vec<u8>>, Option<String>), &'static str> {
    const FIELD: &[u8] = b"\"contributor\"";
    if !line.windows(FIELD.len()).any(|w| w == FIELD) {
        return Ok((None, None));
    }
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(line) else {
        // Not an object: let the API's parser say what is wrong.
        return Ok((None, None));
    };
    let id = match fields.remove("contributor") {
        None => return Ok((None, None)),
        Some(serde_json::Value::String(id)) if (1..=128).contains(&id.chars().count()) => id,
        Some(_) => {
            return Err(
                "invalid_value (contributor): contributor must be a string of 1 to 128 characters",
            );
        }
    };
    let rest = serde_json::to_vec(&fields).expect("a JSON map encodes");
    Ok((Some(rest), Some(id)))
}

/// The observation time of a batch submission, which must state it, and
/// not in the future of `now_ms` (beyond the API's clock-skew allowance).
fn batch_observed_ms(observed_at: Option<&str>, now_ms: i64) -> Result<i64, &'static str> {
    let text = observed_at.ok_or("observed_at is required in batch mode")?;
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| "observed_at must be an RFC 3339 timestamp")?;
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| "observed_at is out of range")?;
    if ms > now_ms.saturating_add(hushmap_submission::validate::MAX_FUTURE_MS) {
        return Err("observed_at may be at most 5 minutes in the future");
    }
    Ok(ms)
}

fn read_coarse_records(
    config: &AggregateConfig,
    path: &Path,
    range: WindowRange,
    progress: &dyn Progress,
) -> Result<(Vec<RecordBatch>, InputReport), BatchError> {
    let file = File::open(path).map_err(BatchError::io(path))?;
    let parquet_err = BatchError::parquet(path);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(&parquet_err)?;
    let rows = builder.metadata().file_metadata().num_rows();
    check_coarse_schema(path, builder.schema())?;
    progress.phase("reading coarse records", u64::try_from(rows).ok());
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(&parquet_err)?;
    let window_length = config.window_length();
    let resolution = config.region_resolution;
    let mut report = InputReport::default();
    let mut records = RecordSink::new();
    let mut row_no = 0u64;
    for batch in reader {
        let batch = batch?;
        let col = |i: usize| batch.column(i);
        let (Some(window), Some(region), Some(band), Some(risk), Some(symptoms), Some(who)) = (
            col(0).as_primitive_opt::<Int64Type>(),
            col(1).as_primitive_opt::<UInt64Type>(),
            col(2).as_primitive_opt::<UInt8Type>(),
            col(3).as_primitive_opt::<UInt8Type>(),
            col(4).as_primitive_opt::<UInt16Type>(),
            col(5).as_any().downcast_ref::<FixedSizeBinaryArray>(),
        ) else {
            return Err(BatchError::ParquetSchema {
                path: path.to_path_buf(),
                reason: "column types changed between row groups".into(),
            });
        };
        for i in 0..batch.num_rows() {
            row_no += 1;
            report.read += 1;
            let nulls = [
                window.is_null(i),
                region.is_null(i),
                band.is_null(i),
                risk.is_null(i),
                symptoms.is_null(i),
                who.is_null(i),
            ];
            if nulls.iter().any(|n| *n) {
                report.refuse(|| format!("row {row_no}: a value is null"));
                continue;
            }
            let record = coarse_record(
                window.value(i),
                region.value(i),
                band.value(i),
                risk.value(i),
                symptoms.value(i),
                who.value(i),
                window_length,
                resolution,
            );
            match record {
                Ok(record) if !range.contains(&record.window) => {
                    report.outside(|| format!("row {row_no}: {OUTSIDE}"));
                }
                Ok(record) => {
                    records.push(record)?;
                    report.accepted += 1;
                }
                Err(reason) => report.refuse(|| format!("row {row_no}: {reason}")),
            }
        }
        progress.advance(batch.num_rows() as u64);
    }
    Ok((records.finish()?, report))
}

fn check_coarse_schema(path: &Path, schema: &Schema) -> Result<(), BatchError> {
    for (i, want) in COARSE_RECORD_COLUMNS.fields().iter().enumerate() {
        let ok = schema
            .fields()
            .get(i)
            .is_some_and(|f| f.name() == want.name() && f.data_type() == want.data_type());
        if !ok {
            return Err(BatchError::ParquetSchema {
                path: path.to_path_buf(),
                reason: format!(
                    "column {i} must be `{}` of type {}",
                    want.name(),
                    want.data_type()
                ),
            });
        }
    }
    Ok(())
}

/// One coarse-record row, checked and coarsened to the configured
/// resolution; the error says which rule failed, never the value.
#[allow(clippy::too_many_arguments)]
fn coarse_record(
    window_start: i64,
    region: u64,
    band: u8,
    risk: u8,
    symptoms: u16,
    contributor: &[u8],
    window_length: hushmap_schema::WindowLength,
    resolution: u8,
) -> Result<CoarseRecord, &'static str> {
    let window = Window::from_start(window_start, window_length)
        .ok_or("window_start is not the start of a window of the configured length")?;
    let cell = RegionCell::from_raw(region).map_err(|_| "region is not an H3 cell index")?;
    let region = cell
        .parent(resolution)
        .ok_or("region is coarser than the configured resolution")?;
    Ok(CoarseRecord {
        window,
        window_length,
        region,
        age_band: AgeBand::from_code(band).ok_or("age_band is not an age band code")?,
        risk: RiskLevel::from_code(risk).ok_or("risk is not a risk level code")?,
        symptoms: SymptomSet::from_bits(symptoms).ok_or("symptoms has unknown bits")?,
        contributor: ContributorKey(
            contributor
                .try_into()
                .map_err(|_| "contributor is not 16 bytes")?,
        ),
    })
}

/// The bounded counts of every window (the stream's plan, over all windows
/// at once: contributors are bounded per window).
async fn count_bounded(
    config: &AggregateConfig,
    batches: Vec<RecordBatch>,
) -> Result<Vec<CellCounts>, BatchError> {
    let ctx = SessionContext::new();
    let schema = crate::records::RECORD_SCHEMA.clone();
    // One partition per batch so both cores share the work.
    let partitions = batches.into_iter().map(|b| vec![b]).collect();
    let table = MemTable::try_new(schema, partitions)
        .map_err(|e| BatchError::Engine(EngineError::DataFusion(e)))?;
    Ok(engine::bounded_counts_table(&ctx, Arc::new(table), config.bounds()).await?)
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
) -> Result<(Vec<Release>, Vec<RefusedWindow>), BatchError> {
    let mut by_window: BTreeMap<i64, Vec<CellCounts>> = BTreeMap::new();
    for c in cells {
        by_window.entry(c.window_start).or_default().push(c);
    }
    let length = config.window_length();
    let windows: Vec<Window> = range.windows(length).collect();
    progress.phase("noising windows", Some(windows.len() as u64));
    let mut releases = Vec::with_capacity(windows.len());
    let mut refused = Vec::new();
    for window in windows {
        // Every window of the range, whether or not anyone is in it.
        let cells = by_window.remove(&window.start_ms).unwrap_or_default();
        match ledger.authorise(window, plan.cost.clone()) {
            Ok(authorisation) => {
                if let Some(file) = file.as_deref_mut() {
                    let entry = ledger.entry(&window).expect("just authorised");
                    file.append(entry)?;
                }
                let mut release = noisy_release(&cells, plan, authorisation)?;
                release.meta.ledger_scope = scope;
                releases.push(release);
            }
            Err(e) => refused.push((window, e.to_string())),
        }
        progress.advance(1);
    }
    Ok((releases, refused))
}

/// Writes `releases` to `path` in the format its extension names.
///
/// Arrow and Parquet hold one schema for all rows: its metadata is the first
/// release's with the window widened to the whole run and the ledger
/// entries joined by commas (every window costs the same; refused windows
/// are absent). JSON keeps each release's own metadata.
pub fn write_output(
    path: &Path,
    releases: &[Release],
    plan_meta: ReleaseMeta,
) -> Result<(), BatchError> {
    let format = OutputFormat::of(path)?;
    let io_err = BatchError::io(path);
    let file = File::create(path).map_err(&io_err)?;
    match format {
        OutputFormat::Json => {
            let mut out = BufWriter::new(file);
            serde_json::to_writer(&mut out, releases)?;
            out.write_all(b"\n").map_err(&io_err)?;
            out.flush().map_err(&io_err)?;
        }
        OutputFormat::Arrow | OutputFormat::Parquet => {
            let meta = combined_meta(releases, plan_meta);
            let rows: Vec<_> = releases.iter().flat_map(|r| r.rows.clone()).collect();
            let batch = Release { meta, rows }.to_record_batch()?;
            if format == OutputFormat::Arrow {
                let mut w =
                    arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), &batch.schema())?;
                w.write(&batch)?;
                w.finish()?;
            } else {
                let parquet_err = BatchError::parquet(path);
                let mut w =
                    ArrowWriter::try_new(file, batch.schema(), None).map_err(&parquet_err)?;
                w.write(&batch).map_err(&parquet_err)?;
                w.close().map_err(&parquet_err)?;
            }
        }
    }
    Ok(())
}

fn combined_meta(releases: &[Release], plan_meta: ReleaseMeta) -> ReleaseMeta {
    let (Some(first), Some(last)) = (releases.first(), releases.last()) else {
        return plan_meta;
    };
    ReleaseMeta {
        window_start: first.meta.window_start,
        window_end: last.meta.window_end,
        ledger_entry: releases
            .iter()
            .map(|r| r.meta.ledger_entry.as_str())
            .collect::<Vec<_>>()
            .join(","),
        ..first.meta.clone()
    }
}

/// The metadata a release under `plan` carries, without a window (for an
/// output with no released window).
pub fn plan_meta(plan: &ReleasePlan) -> ReleaseMeta {
    ReleaseMeta {
        window_start: 0,
        window_end: 0,
        mechanism: plan.mechanism.to_string(),
        rho: plan.cost.rho,
        epsilon: plan.cost.epsilon,
        delta: plan.cost.delta,
        ledger_entry: String::new(),
        symptom_noise_scale: plan.finest().symptoms.std_dev(),
        max_ci_half_width: plan.max_ci_half_width,
        statistic_costs: plan.cost.statistics.clone(),
        part: hushmap_schema::release::ReleasePart::WHOLE,
        coverage: Default::default(),
        ledger_scope: LedgerScope::Shared,
    }
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
