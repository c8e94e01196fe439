//! The release store: every release the dashboard has consumed, noisy data
//! only, kept as Parquet files partitioned by day under the data directory:
//!
//! ```text
//! <data_dir>/releases/day=2026-11-29/window_start=1764374400000.parquet
//! ```
//!
//! One file per released window, written whole and renamed into place, so a
//! crash leaves either the file or nothing. The schema metadata (mechanism,
//! ρ/ε/δ, ledger entry) travels inside each file. On start the store's
//! index is rebuilt from the files' footers; the consumer then goes on
//! from its group's committed offset, and a window already held is
//! skipped, so a restart neither loses nor duplicates a release. A window
//! is stored once; a second copy of it (a replay) is ignored and counted,
//! never shown.
//!
//! Memory does not grow with history: what every window keeps in memory
//! is its metadata and its cell counts ([`StoredWindow`]); the rows of
//! only the few most recently used windows are held ([`ReleaseStore::get`]
//! reads any other from its file), and questions across history (a cell's
//! series, exports) go to the files through DataFusion.
//!
//! A partitioned aggregator publishes a window in parts (disjoint cells,
//! the same metadata); parts wait in memory until all of them are in, and
//! the window is then stored and shown whole, never half. Parts not yet
//! whole at a restart come back from the topic, which is read again from
//! its beginning.
//!
//! The files are also what [`ReleaseQuery`](crate::query::ReleaseQuery)
//! scans with DataFusion for exports and Flight.

use arrow::array::{Array, UInt8Array};
use arrow::compute::concat_batches;
use hushmap_schema::release::ReleasePart;
use hushmap_schema::{Release, ReleaseMeta};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many windows' rows the store holds in memory unless configured:
/// the newest and the three before it that alerts compare it with.
pub const DEFAULT_CACHED_WINDOWS: usize = 4;

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

/// What the store keeps in memory of every window it holds: the release's
/// metadata and how many cells it has at each level. The rows are in the
/// window's file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub meta: ReleaseMeta,
    /// Cells (rows) per level.
    pub cells_by_level: BTreeMap<u8, usize>,
}

impl StoredWindow {
    fn of(release: &Release) -> StoredWindow {
        let mut cells_by_level = BTreeMap::new();
        for row in &release.rows {
            *cells_by_level.entry(row.level).or_default() += 1;
        }
        StoredWindow {
            meta: release.meta.clone(),
            cells_by_level,
        }
    }

    /// Cells (rows) at every level.
    pub fn cells(&self) -> usize {
        self.cells_by_level.values().sum()
    }
}

/// The rows of the most recently used windows, newest use last.
#[derive(Debug)]
struct RecentReleases {
    capacity: usize,
    entries: VecDeque<(i64, Arc<Release>)>,
}

impl RecentReleases {
    fn get(&mut self, window_start: i64) -> Option<Arc<Release>> {
        let i = self.entries.iter().position(|(s, _)| *s == window_start)?;
        let entry = self.entries.remove(i).expect("found");
        let release = entry.1.clone();
        self.entries.push_back(entry);
        Some(release)
    }

    fn put(&mut self, window_start: i64, release: Arc<Release>) {
        self.entries.retain(|(s, _)| *s != window_start);
        self.entries.push_back((window_start, release));
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

/// Releases by window start: on disk, with an index of every window and
/// the rows of a few recent ones in memory.
#[derive(Debug)]
pub struct ReleaseStore {
    dir: PathBuf,
    by_window: BTreeMap<i64, StoredWindow>,
    recent: Mutex<RecentReleases>,
    /// Window starts in the order they were stored (loaded from files
    /// first): what an incremental reader asks after (`sequence`).
    stored_order: Vec<i64>,
    /// Drawn when the store is opened: a sequence number means something
    /// only within one instance.
    instance: u64,
    /// Parts of windows not yet whole, by window start and part index.
    partial: BTreeMap<i64, BTreeMap<u32, Release>>,
    duplicates: u64,
    /// Reads of a window's file because its rows were not held.
    file_reads: std::sync::atomic::AtomicU64,
}

impl ReleaseStore {
    /// Opens (creating if needed) the store under `data_dir` and indexes
    /// every release file (its footer and its `level` column: the rows
    /// are read when asked for). An unreadable file is skipped with a
    /// warning: its window comes back from the topic and the file is
    /// rewritten.
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
                match read_index(&path) {
                    Ok(window) => {
                        by_window.insert(window.meta.window_start, window);
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
            recent: Mutex::new(RecentReleases {
                capacity: DEFAULT_CACHED_WINDOWS,
                entries: VecDeque::new(),
            }),
            partial: BTreeMap::new(),
            duplicates: 0,
            file_reads: Default::default(),
        })
    }

    /// Holds the rows of at most `windows` windows in memory (at least
    /// one: the newest, which every page load asks for).
    pub fn with_cached_windows(self, windows: usize) -> ReleaseStore {
        self.recent.lock().expect("cache lock").capacity = windows.max(1);
        self
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
        self.by_window.insert(start, StoredWindow::of(&release));
        self.stored_order.push(start);
        // The newest window is the one the page asks for next.
        self.recent
            .lock()
            .expect("cache lock")
            .put(start, Arc::new(release));
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

    /// The windows stored after the first `since` (in storing order,
    /// which is not always window order: a late window comes last).
    pub fn stored_since(&self, since: usize) -> impl Iterator<Item = &StoredWindow> {
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

    /// The release of the window starting at `window_start`, rows and
    /// all: from memory if recently used, else read from its file (a
    /// blocking read: call it off the async workers). `None` if no such
    /// window is stored.
    pub fn get(&self, window_start: i64) -> Result<Option<Arc<Release>>, StoreError> {
        self.read(window_start, true)
    }

    /// As [`get`](Self::get), but a window read from its file is not kept:
    /// for reads of many windows once (a long alerts baseline), which must
    /// neither hold them all nor push the recent ones out.
    pub fn get_uncached(&self, window_start: i64) -> Result<Option<Arc<Release>>, StoreError> {
        self.read(window_start, false)
    }

    fn read(&self, window_start: i64, keep: bool) -> Result<Option<Arc<Release>>, StoreError> {
        if !self.by_window.contains_key(&window_start) {
            return Ok(None);
        }
        if let Some(release) = self.recent.lock().expect("cache lock").get(window_start) {
            return Ok(Some(release));
        }
        // Read without the cache's lock: another window's hit need not wait.
        self.file_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let release = Arc::new(read_release(&self.path_of(window_start))?);
        if keep {
            self.recent
                .lock()
                .expect("cache lock")
                .put(window_start, release.clone());
        }
        Ok(Some(release))
    }

    /// The newest window's release.
    pub fn latest(&self) -> Result<Option<Arc<Release>>, StoreError> {
        match self.latest_window() {
            Some(w) => self.get(w.meta.window_start),
            None => Ok(None),
        }
    }

    /// The release of the window starting at `window_start`, or the latest
    /// when `None` (what the JSON API's optional `window=` means).
    pub fn window_or_latest(
        &self,
        window_start: Option<i64>,
    ) -> Result<Option<Arc<Release>>, StoreError> {
        match window_start {
            Some(start) => self.get(start),
            None => self.latest(),
        }
    }

    /// Every stored window, oldest first, without rows.
    pub fn windows(&self) -> impl DoubleEndedIterator<Item = &StoredWindow> {
        self.by_window.values()
    }

    /// The newest stored window, without rows.
    pub fn latest_window(&self) -> Option<&StoredWindow> {
        self.by_window.values().next_back()
    }

    /// The window starting at `window_start`, without rows.
    pub fn window(&self, window_start: i64) -> Option<&StoredWindow> {
        self.by_window.get(&window_start)
    }

    /// How many times a window's rows were read from its file, not memory.
    pub fn file_reads(&self) -> u64 {
        self.file_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn path_of(&self, window_start: i64) -> PathBuf {
        day_dir(&self.dir, window_start).join(file_name(window_start))
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
    let day = day_dir(dir, release.meta.window_start);
    std::fs::create_dir_all(&day).map_err(StoreError::io(&day))?;
    let name = file_name(release.meta.window_start);
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

/// The partition directory of a window under the store's `dir`.
fn day_dir(dir: &Path, window_start: i64) -> PathBuf {
    dir.join(format!("day={}", day_of(window_start)))
}

fn file_name(window_start: i64) -> String {
    format!("window_start={window_start}.parquet")
}

/// A file's index entry: the metadata from its footer, the cells per
/// level from its `level` column (the one column decoded).
fn read_index(path: &Path) -> Result<StoredWindow, StoreError> {
    let file = std::fs::File::open(path).map_err(StoreError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| StoreError::file(path, e))?;
    let meta = ReleaseMeta::from_metadata(builder.schema().metadata())
        .map_err(|e| StoreError::file(path, e))?;
    let level = builder
        .schema()
        .index_of("level")
        .map_err(|e| StoreError::file(path, e))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [level]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| StoreError::file(path, e))?;
    let mut cells_by_level = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| StoreError::file(path, e))?;
        let levels = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt8Array>()
            .ok_or_else(|| StoreError::file(path, "level is not a UInt8 column"))?;
        for l in levels.iter().flatten() {
            *cells_by_level.entry(l).or_default() += 1;
        }
    }
    Ok(StoredWindow {
        meta,
        cells_by_level,
    })
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
                ..Default::default()
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
            reopened.get(1_764_374_400_000).unwrap().as_deref(),
            Some(&sample_release(1_764_374_400_000, 3))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Only `cached_windows` windows' rows stay in memory; the others are
    /// read from their files, the same release, and a reopened store holds
    /// no rows until asked.
    #[test]
    fn rows_beyond_the_cached_windows_come_from_their_files() {
        let dir = std::env::temp_dir().join(format!("hushmap-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = ReleaseStore::open(&dir).unwrap().with_cached_windows(2);
        let hour = 3_600_000;
        let start = |k: i64| 1_764_374_400_000 + k * hour;
        for k in 0..6 {
            store
                .insert(sample_release(start(k), 3 + k as usize))
                .unwrap();
        }
        assert_eq!(store.recent.lock().unwrap().entries.len(), 2);
        assert_eq!(store.latest_window().unwrap().cells(), 8);
        let newest = store.latest().unwrap().unwrap();
        assert_eq!(*newest, sample_release(start(5), 8));
        assert_eq!(store.file_reads(), 0, "the newest is held");
        let old = store.get(start(1)).unwrap().unwrap();
        assert_eq!(*old, sample_release(start(1), 4));
        assert_eq!(store.file_reads(), 1);
        store.get(start(1)).unwrap().unwrap();
        assert_eq!(store.file_reads(), 1, "now held");
        assert_eq!(store.recent.lock().unwrap().entries.len(), 2);
        assert!(store.get(start(9)).unwrap().is_none());
        let once = store.get_uncached(start(0)).unwrap().unwrap();
        assert_eq!(*once, sample_release(start(0), 3));
        assert_eq!(store.file_reads(), 2);
        assert!(
            !store
                .recent
                .lock()
                .unwrap()
                .entries
                .iter()
                .any(|(s, _)| *s == start(0)),
            "an uncached read is not kept"
        );

        let reopened = ReleaseStore::open(&dir).unwrap();
        assert!(reopened.recent.lock().unwrap().entries.is_empty());
        let index: Vec<_> = reopened.windows().cloned().collect();
        let before: Vec<_> = store.windows().cloned().collect();
        assert_eq!(index, before, "metadata and cells per level from the files");
        assert_eq!(
            reopened.window(start(2)).unwrap().cells_by_level,
            BTreeMap::from([(5, 5)])
        );
        assert_eq!(*reopened.latest().unwrap().unwrap(), *newest);
        assert_eq!(reopened.file_reads(), 1);
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
        assert_eq!(store.get(start).unwrap().as_deref(), Some(&expected));
        assert!(
            !store.insert(part(1)).unwrap(),
            "the window is already whole"
        );
        assert_eq!(store.duplicates(), 2);
        let reopened = ReleaseStore::open(&dir).unwrap();
        assert_eq!(reopened.get(start).unwrap().as_deref(), Some(&expected));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
