//! Batch inputs: NDJSON submission bodies (through the same submission
//! steps as ingest) and Parquet coarse records, read a line or a batch at
//! a time into Arrow IPC shards of accepted records (split by
//! contributor) in the run's spill directory, with a report of every
//! refusal.

use super::*;

/// Rows per Arrow batch handed to DataFusion (it runs them in parallel).
pub(crate) const ENGINE_BATCH_ROWS: usize = 256 * 1024;

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
    let mut writer = CoarseParquetWriter::create(path)?;
    writer.write(records)?;
    writer.finish()
}

/// Writes coarse records in the Parquet input format a slice at a time,
/// so a file of any size is written in the memory of one slice.
pub struct CoarseParquetWriter {
    writer: ArrowWriter<BufWriter<File>>,
    path: PathBuf,
}

impl CoarseParquetWriter {
    pub fn create(path: &Path) -> Result<CoarseParquetWriter, BatchError> {
        let file = File::create(path).map_err(BatchError::io(path))?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            COARSE_RECORD_COLUMNS.clone(),
            None,
        )
        .map_err(BatchError::parquet(path))?;
        Ok(CoarseParquetWriter {
            writer,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, records: &[CoarseRecord]) -> Result<(), BatchError> {
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
            self.writer
                .write(&batch)
                .map_err(BatchError::parquet(&self.path))?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<(), BatchError> {
        let parquet_err = BatchError::parquet(&self.path);
        let file = self.writer.into_inner().map_err(&parquet_err)?;
        file.into_inner()
            .map_err(|e| BatchError::io(&self.path)(e.into_error()))?
            .sync_all()
            .map_err(BatchError::io(&self.path))
    }
}

/// Fewer bytes than the shortest submission line: an NDJSON input's size
/// over this is more than its number of lines.
const NDJSON_LINE_BYTES_AT_LEAST: u64 = 64;

/// How a shard's file name ends (DataFusion lists a pass's files by it).
const SHARD_EXTENSION: &str = ".arrow";

/// Most files a run's accepted records are split into (see
/// [`RecordSink`]).
pub(crate) const MAX_SHARDS: usize = 256;

/// Shards of an input whose size nothing tells (a FIFO). Passes take whole
/// shards up to `records_per_pass`, so a small input still counts in one
/// pass; up to this many times `records_per_pass` records, a pass stays
/// within it. The shards' buffers hold about one engine batch in all
/// whatever their number (see `RecordSink::flush_rows`).
pub(crate) const SHARDS_WHEN_SIZE_UNKNOWN: usize = 64;

/// Fewest rows a shard buffers before writing them out as a batch.
const MIN_SHARD_FLUSH_ROWS: usize = 2048;

/// Most rows in a shard's batch. The counting plan gets the batches as
/// written: DataFusion's own batch size, not the engine's 256 Ki rows,
/// whose per-batch buffers took ~75 MiB more at 1M records.
const SHARD_BATCH_ROWS: usize = 8192;

/// Accepted records, written as they come to Arrow IPC files in the run's
/// spill directory, a batch at a time: the input is never held in memory,
/// however large.
///
/// The records are split into shards by their contributor (a hash keyed
/// for this run), so each contributor's records are all in one shard, and
/// shards can be bounded and counted one pass at a time: the counts of
/// disjoint sets of contributors add up to the counts of all of them.
/// There are about as many shards as the input is expected to fill passes
/// of `records_per_pass`; an input of unknown size (a FIFO) gets
/// [`SHARDS_WHEN_SIZE_UNKNOWN`].
///
/// Arrow IPC, not Parquet: a Parquet writer keeps every row group's
/// metadata until it closes, and many shards mean many small row groups
/// (100M records in 96 shards grew the run to 305 MiB while reading;
/// an IPC writer keeps 24 bytes a batch).
pub(crate) struct RecordSink {
    shards: Vec<ShardWriter>,
    /// Which shard a contributor's records go to; keyed afresh each run,
    /// so no input can choose to crowd one shard.
    by_contributor: std::hash::RandomState,
    /// Rows a shard buffers before writing them as a batch: the buffers of all
    /// shards together hold about one engine batch.
    flush_rows: usize,
    next_seq: u64,
}

/// One shard's file and the rows waiting to be written to it.
struct ShardWriter {
    pending: Vec<SequencedRecord>,
    writer: arrow::ipc::writer::FileWriter<BufWriter<File>>,
    path: PathBuf,
    rows: u64,
}

/// The accepted records of a run, in the run's spill directory.
#[derive(Debug)]
pub(crate) struct SpilledRecords {
    /// Each shard's file and its number of records.
    pub(crate) shards: Vec<(PathBuf, u64)>,
    pub(crate) rows: u64,
}

/// Shards counted together: at most `records_per_pass` records, or one
/// shard that alone holds more.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CountingPass {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) rows: u64,
}

impl SpilledRecords {
    /// The passes that count every record, each over whole shards (so
    /// over whole contributors), in shard order; empty shards are left
    /// out.
    pub(crate) fn passes(&self, records_per_pass: u64) -> Vec<CountingPass> {
        let mut passes: Vec<CountingPass> = Vec::new();
        for (path, rows) in self.shards.iter().filter(|(_, rows)| *rows > 0) {
            match passes.last_mut() {
                Some(pass) if pass.rows + rows <= records_per_pass => {
                    pass.files.push(path.clone());
                    pass.rows += rows;
                }
                _ => passes.push(CountingPass {
                    files: vec![path.clone()],
                    rows: *rows,
                }),
            }
        }
        passes
    }
}

impl CountingPass {
    /// This pass's records as the `records` table of the counting plan.
    pub(crate) fn listing_table(&self) -> Result<Arc<dyn TableProvider>, EngineError> {
        let urls = self
            .files
            .iter()
            .map(|f| ListingTableUrl::parse(f.display().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        listing_table(urls)
    }
}

fn listing_table(urls: Vec<ListingTableUrl>) -> Result<Arc<dyn TableProvider>, EngineError> {
    let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(SHARD_EXTENSION);
    let table = ListingTable::try_new(
        ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(crate::records::RECORD_SCHEMA.clone()),
    )?;
    Ok(Arc::new(table))
}

/// How many shards an input expected to hold `expected_rows` records is
/// split into: one per pass it should fill, at least one, at most
/// [`MAX_SHARDS`]; [`SHARDS_WHEN_SIZE_UNKNOWN`] when nothing tells.
pub(crate) fn shard_count(expected_rows: Option<u64>, records_per_pass: u64) -> usize {
    let Some(expected_rows) = expected_rows else {
        return SHARDS_WHEN_SIZE_UNKNOWN;
    };
    let passes = expected_rows.div_ceil(records_per_pass.max(1));
    usize::try_from(passes)
        .unwrap_or(MAX_SHARDS)
        .clamp(1, MAX_SHARDS)
}

impl RecordSink {
    /// A sink of `shards` files in `dir/records` (created; `dir` must
    /// exist).
    pub(crate) fn create(dir: &Path, shards: usize) -> Result<RecordSink, BatchError> {
        let dir = dir.join("records");
        std::fs::create_dir(&dir).map_err(BatchError::io(&dir))?;
        let shards = shards.clamp(1, MAX_SHARDS);
        let flush_rows = (ENGINE_BATCH_ROWS / shards).clamp(MIN_SHARD_FLUSH_ROWS, SHARD_BATCH_ROWS);
        let writers = (0..shards)
            .map(|i| {
                let path = dir.join(format!("shard-{i:03}{SHARD_EXTENSION}"));
                let file = File::create(&path).map_err(BatchError::io(&path))?;
                let writer = arrow::ipc::writer::FileWriter::try_new(
                    BufWriter::with_capacity((1 << 20) / shards, file),
                    &crate::records::RECORD_SCHEMA,
                )?;
                Ok(ShardWriter {
                    pending: Vec::with_capacity(flush_rows),
                    writer,
                    path,
                    rows: 0,
                })
            })
            .collect::<Result<Vec<_>, BatchError>>()?;
        Ok(RecordSink {
            shards: writers,
            by_contributor: std::hash::RandomState::new(),
            flush_rows,
            next_seq: 0,
        })
    }

    /// Appends a record; later calls count as later (`seq`).
    pub(crate) fn push(&mut self, record: CoarseRecord) -> Result<(), BatchError> {
        use std::hash::BuildHasher;
        let n = self.shards.len();
        let i = if n == 1 {
            0
        } else {
            (self.by_contributor.hash_one(record.contributor.0) % n as u64) as usize
        };
        let shard = &mut self.shards[i];
        shard.pending.push(SequencedRecord {
            seq: self.next_seq,
            record,
        });
        self.next_seq += 1;
        if shard.pending.len() >= self.flush_rows {
            shard.flush()?;
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<SpilledRecords, BatchError> {
        let shards = self
            .shards
            .into_iter()
            .map(ShardWriter::finish)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SpilledRecords {
            shards,
            rows: self.next_seq,
        })
    }
}

impl ShardWriter {
    fn flush(&mut self) -> Result<(), BatchError> {
        if !self.pending.is_empty() {
            let batch = to_record_batch(&self.pending)?;
            self.writer.write(&batch)?;
            self.rows += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(PathBuf, u64), BatchError> {
        self.flush()?;
        self.writer.finish()?;
        let path = self.path;
        let file = self.writer.into_inner()?;
        file.into_inner()
            .map_err(|e| BatchError::io(&path)(e.into_error()))?;
        Ok((path, self.rows))
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
pub(crate) const OUTSIDE: &str = "its window does not start in [--from, --to)";

impl InputReport {
    pub(crate) fn refuse(&mut self, error: impl FnOnce() -> String) {
        self.refused += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(error());
        }
    }

    pub(crate) fn outside(&mut self, error: impl FnOnce() -> String) {
        self.outside_range += 1;
        self.refuse(error);
    }
}

pub(crate) fn read_submissions(
    config: &AggregateConfig,
    path: &Path,
    range: WindowRange,
    progress: &dyn Progress,
    spill: &Path,
) -> Result<(SpilledRecords, InputReport), BatchError> {
    let io_err = BatchError::io(path);
    let file = File::open(path).map_err(&io_err)?;
    // A FIFO's length is 0 whatever comes through it: unknown.
    let size = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
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
    // Too many shards cost only small files; too few, larger passes.
    let expected = size.map(|bytes| bytes / NDJSON_LINE_BYTES_AT_LEAST);
    let shards = shard_count(expected, config.batch.records_per_pass);
    let mut records = RecordSink::create(spill, shards)?;
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
pub(crate) fn split_contributor(
    line: &[u8],
) -> Result<(Option<Vec<u8>>, Option<String>), &'static str> {
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
pub(crate) fn batch_observed_ms(
    observed_at: Option<&str>,
    now_ms: i64,
) -> Result<i64, &'static str> {
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

pub(crate) fn read_coarse_records(
    config: &AggregateConfig,
    path: &Path,
    range: WindowRange,
    progress: &dyn Progress,
    spill: &Path,
) -> Result<(SpilledRecords, InputReport), BatchError> {
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
    let shards = shard_count(u64::try_from(rows).ok(), config.batch.records_per_pass);
    let mut records = RecordSink::create(spill, shards)?;
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

pub(crate) fn check_coarse_schema(path: &Path, schema: &Schema) -> Result<(), BatchError> {
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
pub(crate) fn coarse_record(
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
