//! Batch outputs: the releases as Arrow IPC, Parquet or JSON.

use super::*;

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

pub(crate) fn combined_meta(releases: &[Release], plan_meta: ReleaseMeta) -> ReleaseMeta {
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
        // One file states the widest error of any window at each level.
        all_ages_noise_scale: releases.iter().fold(Default::default(), |mut acc, r| {
            for (level, se) in &r.meta.all_ages_noise_scale {
                let widest = acc.entry(*level).or_insert(0.0f64);
                *widest = widest.max(*se);
            }
            acc
        }),
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
        symptom_noise_scale: plan.finest().symptom_sd(),
        max_ci_half_width: plan.max_ci_half_width,
        statistic_costs: plan.cost.statistics.clone(),
        part: hushmap_schema::release::ReleasePart::WHOLE,
        coverage: Default::default(),
        ledger_scope: LedgerScope::Shared,
        estimates: plan.estimates,
        all_ages_noise_scale: Default::default(),
        provisional: None,
    }
}
