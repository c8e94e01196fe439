//! The release store: every release the dashboard has consumed, noisy data
//! only, kept as Parquet files partitioned by day under the data directory:
//!
//! ```text
//! <data_dir>/releases/day=2026-11-29/window_start=1764374400000.parquet
//! ```
//!
//! One file per released window, written whole and renamed into place, so a
//! crash leaves either the file or nothing. The schema metadata (mechanism,
//! ρ/ε/δ, ledger entry) travels inside each file. On start the store is
//! rebuilt from the files; the consumer then reads the releases topic from
//! its beginning and every window already held is skipped, so a restart
//! neither loses nor duplicates a release. A window is stored once; a second
//! copy of it (a replay) is ignored and counted, never shown.
//!
//! A partitioned aggregator publishes a window in parts (disjoint cells,
//! the same metadata); parts wait in memory until all of them are in, and
//! the window is then stored and shown whole, never half. Parts not yet
//! whole at a restart come back from the topic, which is read again from
//! its beginning.
//!
//! The files are also what [`ReleaseQuery`](crate::query::ReleaseQuery)
//! scans with DataFusion for exports and Flight.

use arrow::compute::concat_batches;
use hushmap_schema::Release;
use hushmap_schema::release::ReleasePart;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("release store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("release store file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.into(),
            source,
        }
    }

    fn file(path: &Path, reason: impl ToString) -> StoreError {
        StoreError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Releases by window start, in memory for serving and on disk for restarts.
#[derive(Debug)]
pub struct ReleaseStore {
    dir: PathBuf,
    by_window: BTreeMap<i64, Release>,
    /// Window starts in the order they were stored (loaded from files
    /// first): what an incremental reader asks after (`sequence`).
    stored_order: Vec<i64>,
    /// Drawn when the store is opened: a sequence number means something
    /// only within one instance.
    instance: u64,
    /// Parts of windows not yet whole, by window start and part index.
    partial: BTreeMap<i64, BTreeMap<u32, Release>>,
    duplicates: u64,
}

impl ReleaseStore {
    /// Opens (creating if needed) the store under `data_dir` and loads every
    /// release file. An unreadable file is skipped with a warning: its window
    /// comes back from the topic and the file is rewritten.
    pub fn open(data_dir: &Path) -> Result<ReleaseStore, StoreError> {
        ReleaseStore::open_in(data_dir.join("releases"))
    }

    /// The store of the measurements topic's releases, beside the
    /// releases' own (`<data_dir>/measurements`).
    pub fn open_measurements(data_dir: &Path) -> Result<ReleaseStore, StoreError> {
        ReleaseStore::open_in(data_dir.join("measurements"))
    }

    fn open_in(dir: PathBuf) -> Result<ReleaseStore, StoreError> {
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let mut by_window = BTreeMap::new();
        let mut unreadable = 0usize;
        for day in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let day = day.map_err(StoreError::io(&dir))?.path();
            if !day.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&day).map_err(StoreError::io(&day))? {
                let path = file.map_err(StoreError::io(&day))?.path();
                if path.extension().is_none_or(|e| e != "parquet") {
                    continue;
                }
                match read_release(&path) {
                    Ok(release) => {
                        by_window.insert(release.meta.window_start, release);
                    }
                    Err(e) => {
                        unreadable += 1;
                        tracing::warn!(error = %e, "skipping unreadable release file");
                    }
                }
            }
        }
        tracing::info!(
            releases = by_window.len(),
            unreadable,
            "release store loaded"
        );
        Ok(ReleaseStore {
            dir,
            stored_order: by_window.keys().copied().collect(),
            instance: random_id(),
            by_window,
            partial: BTreeMap::new(),
            duplicates: 0,
        })
    }

    /// The directory holding the `day=…` partitions.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a release (file first, then memory); returns false if its
    /// window (or this part of it) was already held. A part is held until
    /// its window's last part arrives; the window is then stored whole.
    pub fn insert(&mut self, release: Release) -> Result<bool, StoreError> {
        let start = release.meta.window_start;
        if self.by_window.contains_key(&start) {
            self.duplicates += 1;
            return Ok(false);
        }
        let release = if release.meta.part.is_whole() {
            release
        } else {
            let part = release.meta.part;
            let parts = self.partial.entry(start).or_default();
            let agrees = parts
                .values()
                .next()
                .is_none_or(|first| same_window_release(&first.meta, &release.meta));
            if !agrees {
                tracing::warn!(
                    window_start = start,
                    %part,
                    "release part disagrees with its window's other parts; ignored"
                );
                return Ok(false);
            }
            if parts.contains_key(&part.index) {
                self.duplicates += 1;
                return Ok(false);
            }
            parts.insert(part.index, release);
            if parts.len() < part.of as usize {
                return Ok(true);
            }
            let parts = self.partial.remove(&start).expect("just filled");
            whole_of(parts.into_values())
        };
        write_release(&self.dir, &release)?;
        self.by_window.insert(start, release);
        self.stored_order.push(start);
        Ok(true)
    }

    /// How many windows have been stored by this instance (files loaded
    /// included): the position an incremental reader has read up to.
    pub fn sequence(&self) -> usize {
        self.stored_order.len()
    }

    /// Names this instance of the store (sequence numbers of another
    /// instance, before a restart, mean nothing here).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The releases stored after the first `since` (in storing order,
    /// which is not always window order: a late window comes last).
    pub fn stored_since(&self, since: usize) -> impl Iterator<Item = &Release> {
        self.stored_order
            .get(since..)
            .unwrap_or_default()
            .iter()
            .filter_map(|start| self.by_window.get(start))
    }

    /// Windows with some parts in and some still missing.
    pub fn incomplete(&self) -> usize {
        self.partial.len()
    }

    pub fn get(&self, window_start: i64) -> Option<&Release> {
        self.by_window.get(&window_start)
    }

    pub fn latest(&self) -> Option<&Release> {
        self.by_window.values().next_back()
    }

    /// The release of the window starting at `window_start`, or the latest
    /// when `None` (what the JSON API's optional `window=` means).
    pub fn window_or_latest(&self, window_start: Option<i64>) -> Option<&Release> {
        match window_start {
            Some(start) => self.get(start),
            None => self.latest(),
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Release> {
        self.by_window.values()
    }

    pub fn len(&self) -> usize {
        self.by_window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_window.is_empty()
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// Whether two parts belong to one window's release: everything but the
/// part index agrees.
fn same_window_release(a: &hushmap_schema::ReleaseMeta, b: &hushmap_schema::ReleaseMeta) -> bool {
    let mut b = b.clone();
    b.part.index = a.part.index;
    *a == b
}

/// One release from all the parts of a window, rows in a whole release's
/// order (finest level first, then region, then age band).
fn whole_of(parts: impl Iterator<Item = Release>) -> Release {
    let mut meta = None;
    let mut rows = Vec::new();
    for part in parts {
        meta.get_or_insert(part.meta);
        rows.extend(part.rows);
    }
    let mut meta = meta.expect("at least one part");
    meta.part = ReleasePart::WHOLE;
    rows.sort_by(|a, b| {
        (std::cmp::Reverse(a.level), &a.region, &a.age_band).cmp(&(
            std::cmp::Reverse(b.level),
            &b.region,
            &b.age_band,
        ))
    });
    Release { meta, rows }
}

/// A fresh random name (a store instance, a consumer group): the standard
/// library's randomly keyed hasher over the time, no RNG crate needed.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The UTC day (`YYYY-MM-DD`) of a window start: its partition.
pub fn day_of(window_start_ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(window_start_ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn write_release(dir: &Path, release: &Release) -> Result<(), StoreError> {
    let day = dir.join(format!("day={}", day_of(release.meta.window_start)));
    std::fs::create_dir_all(&day).map_err(StoreError::io(&day))?;
    let name = format!("window_start={}.parquet", release.meta.window_start);
    let path = day.join(&name);
    // Not ending in .parquet: a scan running meanwhile never sees it.
    let tmp = day.join(format!(".{name}.tmp"));
    let batch = release
        .to_record_batch()
        .map_err(|e| StoreError::file(&path, e))?;
    let file = std::fs::File::create(&tmp).map_err(StoreError::io(&tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| StoreError::file(&path, e))?;
    writer
        .write(&batch)
        .map_err(|e| StoreError::file(&path, e))?;
    let file = writer
        .into_inner()
        .map_err(|e| StoreError::file(&path, e))?;
    file.sync_all().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
    Ok(())
}

fn read_release(path: &Path) -> Result<Release, StoreError> {
    let file = std::fs::File::open(path).map_err(StoreError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StoreError::file(path, e))?;
    // The builder's schema carries the release metadata; the batches' not.
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| StoreError::file(path, e))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::file(path, e))?;
    let batch = concat_batches(&schema, &batches).map_err(|e| StoreError::file(path, e))?;
    Release::from_record_batch(&batch).map_err(|e| StoreError::file(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hushmap_schema::ReleaseMeta;
    use hushmap_schema::release::{CellLabel, ReleaseRow};

    pub(crate) fn sample_release(window_start: i64, n_rows: usize) -> Release {
        let window_end = window_start + 3_600_000;
        let rows = (0..n_rows)
            .map(|i| {
                ReleaseRow::from_noisy_counts(
                    CellLabel {
                        window_start,
                        window_end,
                        level: 5,
                        region: h3o::LatLng::new(40.0 + i as f64, -3.0)
                            .unwrap()
                            .to_cell(h3o::Resolution::Five)
                            .to_string(),
                        age_band: "30-44".into(),
                    },
                    [10 + i as i64, 5, 3],
                    [1; 10],
                    2.0,
                    0.2,
                )
            })
            .collect();
        Release {
            meta: ReleaseMeta {
                window_start,
                window_end,
                mechanism: "discrete_gaussian".into(),
                rho: Some(0.01),
                epsilon: 1.0,
                delta: 1e-8,
                ledger_entry: format!("w{window_start}"),
                symptom_noise_scale: 2.0,
                max_ci_half_width: 0.2,
                statistic_costs: vec![],
                part: hushmap_schema::release::ReleasePart::WHOLE,
                coverage: Default::default(),
                ledger_scope: Default::default(),
                estimates: Default::default(),
                all_ages_noise_scale: Default::default(),
                provisional: None,
            },
            rows,
        }
    }

    #[test]
    fn releases_survive_a_reopen_once_each() {
        let dir = std::env::temp_dir().join(format!("hushmap-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = ReleaseStore::open(&dir).unwrap();
        let day = 86_400_000;
        assert!(store.insert(sample_release(1_764_374_400_000, 3)).unwrap());
        assert!(
            store
                .insert(sample_release(1_764_374_400_000 + day, 2))
                .unwrap()
        );
        assert!(!store.insert(sample_release(1_764_374_400_000, 3)).unwrap());
        assert_eq!(store.duplicates(), 1);
        assert!(dir.join("releases/day=2025-11-29").is_dir());

        // A torn file (as a crash mid-write would leave without the rename)
        // is skipped, not fatal.
        std::fs::write(
            dir.join("releases/day=2025-11-29/window_start=1.parquet"),
            b"PAR1junk",
        )
        .unwrap();
        let reopened = ReleaseStore::open(&dir).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(
            reopened.get(1_764_374_400_000),
            Some(&sample_release(1_764_374_400_000, 3))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_window_in_parts_is_shown_only_when_whole_and_once() {
        let dir = std::env::temp_dir().join(format!("hushmap-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = ReleaseStore::open(&dir).unwrap();
        let start = 1_764_374_400_000;
        let whole = sample_release(start, 6);
        // Three parts of two rows each, out of order, one sent twice.
        let part = |k: u32| {
            let mut r = whole.clone();
            r.rows = whole.rows[2 * k as usize..2 * k as usize + 2].to_vec();
            r.meta.part = ReleasePart { index: k, of: 3 };
            r
        };
        assert!(store.insert(part(2)).unwrap());
        assert!(store.insert(part(0)).unwrap());
        assert!(!store.insert(part(0)).unwrap(), "a repeated part");
        assert_eq!((store.len(), store.incomplete()), (0, 1), "not shown half");
        let mut stranger = part(1);
        stranger.meta.epsilon = 2.0;
        assert!(
            !store.insert(stranger).unwrap(),
            "a part of another release"
        );
        assert_eq!(store.len(), 0);
        assert!(store.insert(part(1)).unwrap());
        assert_eq!((store.len(), store.incomplete()), (1, 0));
        let mut expected = whole.clone();
        expected
            .rows
            .sort_by(|a, b| (&a.region, &a.age_band).cmp(&(&b.region, &b.age_band)));
        assert_eq!(store.get(start), Some(&expected));
        assert!(
            !store.insert(part(1)).unwrap(),
            "the window is already whole"
        );
        assert_eq!(store.duplicates(), 2);
        let reopened = ReleaseStore::open(&dir).unwrap();
        assert_eq!(reopened.get(start), Some(&expected));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
