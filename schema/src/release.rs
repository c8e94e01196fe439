//! The release schema: one definition for the releases topic, the dashboard
//! JSON, Arrow/Parquet exports, Flight and batch output.
//!
//! One row per window × level × region × age band. Every column is an
//! aggregate over a cell; there is no column that could hold a person's
//! record. Schema metadata names the mechanism and privacy cost, so a file
//! that travels alone still says how it was made.

use crate::domain::{AgeBand, Symptom};
use crate::interval::ShareInterval;
use crate::region::RegionCell;
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt8Array,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The `age_band` of a row that counts every age together: only on a
/// provisional release (the final releases are per band; readers add the
/// bands up themselves).
pub const ALL_AGES: &str = "all";

/// Bumped on any incompatible change to the columns below.
pub const SCHEMA_VERSION: &str = "1";

/// Metadata keys of the release schema.
pub mod meta_keys {
    pub const MECHANISM: &str = "hushmap.mechanism";
    pub const RHO: &str = "hushmap.rho";
    pub const EPSILON: &str = "hushmap.epsilon";
    pub const DELTA: &str = "hushmap.delta";
    pub const LEDGER_ENTRY: &str = "hushmap.ledger_entry";
    pub const SCHEMA_VERSION: &str = "hushmap.schema_version";
    /// The window, also when the release has no rows (no region passed
    /// the selection threshold).
    pub const WINDOW_START: &str = "hushmap.window_start";
    pub const WINDOW_END: &str = "hushmap.window_end";
    /// Standard deviation of the noise on each `sym_*` count as measured at
    /// the release resolution (the risk-level counts carry theirs in the
    /// `noise_scale` column). A consistent estimate's error is at most this.
    pub const SYMPTOM_NOISE_SCALE: &str = "hushmap.symptom_noise_scale";
    /// Cells whose 95% interval is wider than ± this were marked suppressed.
    pub const SUPPRESSION_HALF_WIDTH: &str = "hushmap.suppression_half_width";
    /// What each statistic of the release cost (JSON list of
    /// [`StatisticCost`](super::StatisticCost)); they compose to the totals.
    pub const STATISTIC_COSTS: &str = "hushmap.statistic_costs";
    /// `k/n`: the release is part k (from 0) of n of its window, made by a
    /// partitioned aggregator (docs/SCALE.md). Absent on whole releases.
    pub const PART: &str = "hushmap.part";
    /// `complete` (counted from the window's records, also when nobody
    /// submitted) or `missed` (published without data: the aggregator was
    /// down for longer than the submissions topic keeps records). Absent
    /// means `complete`.
    pub const COVERAGE: &str = "hushmap.coverage";
    /// `shared` (spent from the deployment's persistent ledger) or `fresh`
    /// (a batch run told to use a fresh ledger: its budget was shared with
    /// nothing else). Absent means `shared`.
    pub const LEDGER_SCOPE: &str = "hushmap.ledger_scope";
    /// `consistent` (counts made consistent across levels by weighted
    /// least squares, non-negative integers; `noise_scale` is each row's
    /// own standard error) or `noisy` (each count as measured, clamped at
    /// zero; `noise_scale` is the level's noise). Absent means `noisy`.
    pub const ESTIMATES: &str = "hushmap.estimates";
    /// When each region's all-ages counts were measured on their own: per
    /// level, the largest standard error of a region's all-ages count
    /// (JSON, `{"7": 9.1, …}`), which is below the bands' errors summed in
    /// variance. Absent when the all-ages view is just the bands' sum.
    pub const ALL_AGES_NOISE_SCALE: &str = "hushmap.all_ages_noise_scale";
    /// On a provisional release only: how far into its window it counts
    /// and the interval measurements it was made from (JSON,
    /// [`ProvisionalMeta`](super::ProvisionalMeta)). Absent on a final
    /// release.
    pub const PROVISIONAL: &str = "hushmap.provisional";
}

/// Why a release could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("release column `{0}` is missing or has the wrong type")]
    Column(String),
    #[error("release metadata `{0}` is missing or malformed")]
    Metadata(&'static str),
    #[error("release payload holds {0} record batches, expected exactly one")]
    Batches(usize),
    #[error("release payload is not a well-formed Arrow IPC stream (buffers out of bounds)")]
    Malformed,
    #[error("invalid value in column `{column}`: {reason}")]
    Value {
        column: &'static str,
        reason: String,
    },
}

/// How a release was made and what it cost; travels as schema metadata.
// Default: for tests and examples, which name only the fields they set
// (`..Default::default()`); the aggregator names every field, so that a new
// one is a decision there, not a zero.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReleaseMeta {
    /// The released window (ms since the epoch, UTC).
    pub window_start: i64,
    pub window_end: i64,
    /// e.g. `"discrete_laplace"` or `"discrete_gaussian"`.
    pub mechanism: String,
    /// zCDP cost of the whole release (`None` for pure-ε mechanisms).
    pub rho: Option<f64>,
    /// ε of the whole release (at `delta`).
    pub epsilon: f64,
    /// δ of the whole release (0 for pure ε-DP).
    pub delta: f64,
    /// Identifier of the ledger entry that authorised the release.
    pub ledger_entry: String,
    /// Standard deviation of the noise on each symptom count.
    pub symptom_noise_scale: f64,
    /// Suppression threshold: half-width of the 95% interval of the share.
    pub max_ci_half_width: f64,
    /// The cost of each statistic (per hierarchy level); they compose
    /// (add, in ρ or in pure ε) to `rho`/`epsilon`, and their δs add to
    /// `delta` less the conversion's.
    pub statistic_costs: Vec<StatisticCost>,
    /// Which part of its window's release this is; whole unless a
    /// partitioned aggregator made it. Not in JSON when whole.
    #[serde(default, skip_serializing_if = "ReleasePart::is_whole")]
    pub part: ReleasePart,
    /// Whether the window's records were counted.
    #[serde(default)]
    pub coverage: Coverage,
    /// Whose budget the release was spent from.
    #[serde(default)]
    pub ledger_scope: LedgerScope,
    /// What the counts are: as measured, or made consistent.
    #[serde(default)]
    pub estimates: Estimates,
    /// Per level, the standard error the all-ages sum of a region's bands
    /// has at most, when the all-ages counts were measured on their own
    /// (empty: the bands' errors add in variance).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub all_ages_noise_scale: BTreeMap<u8, f64>,
    /// Set on a provisional release (counts so far within an open
    /// window); `None` on the final release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisional: Option<Box<ProvisionalMeta>>,
}

/// What a provisional release is: the cumulative counts of its window's
/// first `sub_windows_in` sub-windows (each contributor counted once, at
/// their first record), made by the binary-tree mechanism over
/// sub-windows. The cost in the release's metadata is the whole window's
/// (provisional series and final release together), charged once.
///
/// ```
/// use hushmap_schema::release::{IntervalCounts, ProvisionalMeta};
/// let meta = ProvisionalMeta {
///     sub_windows_in: 3, sub_windows: 24, sub_window_ms: 3_600_000,
///     through_ms: 10_800_000, level: 3, node_noise_scale: 4.2,
///     intervals: vec![IntervalCounts { start: 2, end: 3,
///         counts: [("8360c1fffffffff".to_string(), [4, -1, 2])].into() }],
/// };
/// let json = serde_json::to_string(&meta).unwrap();
/// assert_eq!(serde_json::from_str::<ProvisionalMeta>(&json).unwrap(), meta);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionalMeta {
    /// Sub-windows counted so far (the rows are the counts of records
    /// produced before `through_ms`).
    pub sub_windows_in: u32,
    /// Sub-windows of the window.
    pub sub_windows: u32,
    pub sub_window_ms: i64,
    /// The end of the last sub-window counted.
    pub through_ms: i64,
    /// H3 resolution of the provisional regions.
    pub level: u8,
    /// Standard deviation of the noise on each interval's counts.
    pub node_noise_scale: f64,
    /// The intervals of sub-windows noised for this release (those that
    /// ended with its last sub-window), as measured: what the next
    /// provisional releases are also estimated from, and what a restarted
    /// aggregator reads back rather than noising them again.
    pub intervals: Vec<IntervalCounts>,
}

/// The noisy risk-level counts (low, moderate, high) of each provisional
/// region over the sub-windows `[start, end)` of a window, as measured
/// (negative values included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalCounts {
    pub start: u32,
    pub end: u32,
    /// Region (H3 index) → counts.
    pub counts: BTreeMap<String, [i64; 3]>,
}

/// `as_str` and `FromStr` for an enum of the release's metadata, from one
/// list of its variants and their names (the names serde writes too), so
/// that the two directions cannot drift apart.
macro_rules! text_names {
    ($enum:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $enum {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $enum {
            type Err = ();

            fn from_str(s: &str) -> Result<$enum, ()> {
                match s {
                    $($text => Ok($enum::$variant),)+
                    _ => Err(()),
                }
            }
        }
    };
}

/// What a release's counts are.
///
/// Both come from the same noisy measurements; making them consistent is
/// post-processing and costs nothing.
///
/// ```
/// # use hushmap_schema::release::Estimates;
/// assert_eq!("consistent".parse::<Estimates>(), Ok(Estimates::Consistent));
/// assert_eq!(Estimates::default().as_str(), "noisy");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimates {
    /// Each count as measured (independent noise per cell and level),
    /// clamped at zero; a parent need not equal the sum of its children.
    #[default]
    Noisy,
    /// Weighted least squares over the levels of the window (every
    /// estimate uses every measurement), then non-negative integers whose
    /// children add up to their parent; each row's `noise_scale` is the
    /// standard error of its own estimate.
    Consistent,
    /// The measurements themselves, unclamped: every count as drawn (it
    /// may be negative), unbiased, with the level's noise as
    /// `noise_scale`. `n_total` is their sum; the share, its interval and
    /// `suppressed` are computed as for `noisy` (from the counts clamped at
    /// zero). The companion of a consistent release, published on the
    /// measurements topic for researchers who pool or model the noise
    /// themselves; not a choice of `privacy.estimates`.
    Measured,
}

text_names!(Estimates { Noisy => "noisy", Consistent => "consistent", Measured => "measured" });

/// Whether a release counted its window's records.
///
/// Every scheduled window is published (which windows exist never depends
/// on the data); this says whether its numbers come from the data.
///
/// ```
/// # use hushmap_schema::release::Coverage;
/// assert_eq!("missed".parse::<Coverage>(), Ok(Coverage::Missed));
/// assert_eq!(Coverage::default().as_str(), "complete");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Counted from every record of the window that arrived in time
    /// (zero records included).
    #[default]
    Complete,
    /// Published without data and at no cost: the aggregator was down for
    /// longer than the submissions topic keeps a window's records, so the
    /// window could not be counted whole. No rows.
    Missed,
}

text_names!(Coverage { Complete => "complete", Missed => "missed" });

/// Whose privacy budget a release was spent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerScope {
    /// The deployment's persistent ledger (the releases topic, or a batch
    /// ledger file): a second release of a window is refused there.
    #[default]
    Shared,
    /// A ledger made for one batch run and shared with nothing: the budget
    /// it reports was not checked against any other release.
    Fresh,
}

text_names!(LedgerScope { Shared => "shared", Fresh => "fresh" });

/// Part `index` of `of` disjoint parts of one window's release.
///
/// A partitioned aggregator publishes a window as one part per shard of
/// the coarsest released cells; the parts share every metadata value but
/// this, hold disjoint cells, and together are the whole release.
///
/// ```
/// # use hushmap_schema::release::ReleasePart;
/// assert!(ReleasePart::WHOLE.is_whole());
/// assert_eq!("2/3".parse::<ReleasePart>(), Ok(ReleasePart { index: 2, of: 3 }));
/// assert!("3/3".parse::<ReleasePart>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReleasePart {
    pub index: u32,
    pub of: u32,
}

impl ReleasePart {
    pub const WHOLE: ReleasePart = ReleasePart { index: 0, of: 1 };

    pub fn is_whole(&self) -> bool {
        self.of == 1
    }
}

impl Default for ReleasePart {
    fn default() -> Self {
        ReleasePart::WHOLE
    }
}

impl std::fmt::Display for ReleasePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

impl std::str::FromStr for ReleasePart {
    type Err = ();

    fn from_str(s: &str) -> Result<ReleasePart, ()> {
        let (index, of) = s.split_once('/').ok_or(())?;
        let part = ReleasePart {
            index: index.parse().map_err(|_| ())?,
            of: of.parse().map_err(|_| ())?,
        };
        (part.index < part.of).then_some(part).ok_or(())
    }
}

/// The privacy cost of one statistic of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticCost {
    /// `"selection"`, `"risk_counts"`, `"all_ages_risk_counts"` or
    /// `"symptom_counts"`.
    pub statistic: String,
    /// H3 resolution the statistic was computed at.
    pub level: u8,
    /// ρ (zCDP mechanisms) or ε (pure-DP mechanisms).
    pub cost: f64,
    /// δ of the statistic itself (the threshold's; 0 for counts).
    pub delta: f64,
}

/// One released cell: noisy counts and their uncertainty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRow {
    /// Window start, ms since the Unix epoch (UTC).
    pub window_start: i64,
    /// Window end (exclusive), ms since the Unix epoch (UTC).
    pub window_end: i64,
    /// H3 resolution of `region`.
    pub level: u8,
    pub region: String,
    pub age_band: String,
    pub n_low: i64,
    pub n_moderate: i64,
    pub n_high: i64,
    pub n_total: i64,
    pub high_share: Option<f64>,
    pub high_share_ci_low: f64,
    pub high_share_ci_high: f64,
    pub noise_scale: f64,
    pub suppressed: bool,
    /// Noisy count per symptom, in `Symptom::ALL` order (`sym_*` columns).
    #[serde(flatten, with = "symptom_columns")]
    pub symptoms: [i64; 10],
}

/// Where a row sits: window, level, region and age band.
#[derive(Debug, Clone, PartialEq)]
pub struct CellLabel {
    pub window_start: i64,
    pub window_end: i64,
    pub level: u8,
    pub region: String,
    pub age_band: String,
}

impl ReleaseRow {
    /// The one post-processing step from noisy counts to a published row:
    /// counts clamped to ≥ 0, `n_total` their sum, the high-risk share with
    /// its 95% interval ([`ShareInterval`]) given the per-count noise s.d.
    /// `noise_scale`, and `suppressed` when the share is undefined or the
    /// interval is wider than ± `max_ci_half_width`.
    ///
    /// ```
    /// use hushmap_schema::release::{CellLabel, ReleaseRow};
    /// let label = CellLabel { window_start: 0, window_end: 60_000, level: 5,
    ///     region: "85608b0bfffffff".into(), age_band: "30-44".into() };
    /// let row = ReleaseRow::from_noisy_counts(label, [40, -2, 10], [0; 10], 0.0, 0.15);
    /// assert_eq!((row.n_moderate, row.n_total, row.high_share), (0, 50, Some(0.2)));
    /// assert!(!row.suppressed);
    /// ```
    pub fn from_noisy_counts(
        label: CellLabel,
        risk: [i64; 3],
        symptoms: [i64; 10],
        noise_scale: f64,
        max_ci_half_width: f64,
    ) -> ReleaseRow {
        ReleaseRow::from_counts(label, risk, symptoms, noise_scale, max_ci_half_width, true)
    }

    /// A row of the measurements themselves ([`Estimates::Measured`]): the
    /// counts as drawn, negative ones included, `n_total` their sum; the
    /// share, its interval and `suppressed` as
    /// [`from_noisy_counts`](Self::from_noisy_counts) computes them.
    ///
    /// ```
    /// use hushmap_schema::release::{CellLabel, ReleaseRow};
    /// let label = CellLabel { window_start: 0, window_end: 60_000, level: 5,
    ///     region: "85608b0bfffffff".into(), age_band: "30-44".into() };
    /// let row = ReleaseRow::from_measured_counts(label, [40, -2, 10], [-1; 10], 3.0, 0.15);
    /// assert_eq!((row.n_moderate, row.n_total, row.symptoms[0]), (-2, 48, -1));
    /// assert_eq!(row.high_share, Some(0.2));
    /// ```
    pub fn from_measured_counts(
        label: CellLabel,
        risk: [i64; 3],
        symptoms: [i64; 10],
        noise_scale: f64,
        max_ci_half_width: f64,
    ) -> ReleaseRow {
        ReleaseRow::from_counts(label, risk, symptoms, noise_scale, max_ci_half_width, false)
    }

    fn from_counts(
        label: CellLabel,
        risk: [i64; 3],
        symptoms: [i64; 10],
        noise_scale: f64,
        max_ci_half_width: f64,
        clamp: bool,
    ) -> ReleaseRow {
        let clamped = risk.map(|c| c.max(0));
        let ci = ShareInterval::for_high_share(clamped[2], clamped.iter().sum(), noise_scale);
        let [n_low, n_moderate, n_high] = if clamp { clamped } else { risk };
        ReleaseRow {
            window_start: label.window_start,
            window_end: label.window_end,
            level: label.level,
            region: label.region,
            age_band: label.age_band,
            n_low,
            n_moderate,
            n_high,
            n_total: n_low + n_moderate + n_high,
            high_share: ci.share,
            high_share_ci_low: ci.low,
            high_share_ci_high: ci.high,
            noise_scale,
            suppressed: ci.share.is_none() || ci.half_width() > max_ci_half_width,
            symptoms: if clamp {
                symptoms.map(|c| c.max(0))
            } else {
                symptoms
            },
        }
    }
}

/// A whole release: its metadata and rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub meta: ReleaseMeta,
    pub rows: Vec<ReleaseRow>,
}

/// The Arrow schema of releases, without metadata.
pub fn release_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("level", DataType::UInt8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("age_band", DataType::Utf8, false),
        Field::new("n_low", DataType::Int64, false),
        Field::new("n_moderate", DataType::Int64, false),
        Field::new("n_high", DataType::Int64, false),
        Field::new("n_total", DataType::Int64, false),
        Field::new("high_share", DataType::Float64, true),
        Field::new("high_share_ci_low", DataType::Float64, false),
        Field::new("high_share_ci_high", DataType::Float64, false),
        Field::new("noise_scale", DataType::Float64, false),
        Field::new("suppressed", DataType::Boolean, false),
    ];
    fields.extend(
        Symptom::ALL
            .iter()
            .map(|s| Field::new(s.column(), DataType::Int64, false)),
    );
    fields
}

impl ReleaseMeta {
    /// Whether the release measured `statistic` (`"symptom_counts"`, …)
    /// at some level; a statistic switched off has no cost entry.
    pub fn has_statistic(&self, statistic: &str) -> bool {
        self.statistic_costs
            .iter()
            .any(|c| c.statistic == statistic)
    }

    /// The schema metadata map.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(
            meta_keys::WINDOW_START.into(),
            self.window_start.to_string(),
        );
        m.insert(meta_keys::WINDOW_END.into(), self.window_end.to_string());
        m.insert(meta_keys::MECHANISM.into(), self.mechanism.clone());
        m.insert(
            meta_keys::RHO.into(),
            self.rho.map(|r| r.to_string()).unwrap_or_default(),
        );
        m.insert(meta_keys::EPSILON.into(), self.epsilon.to_string());
        m.insert(meta_keys::DELTA.into(), self.delta.to_string());
        m.insert(meta_keys::LEDGER_ENTRY.into(), self.ledger_entry.clone());
        m.insert(meta_keys::SCHEMA_VERSION.into(), SCHEMA_VERSION.into());
        m.insert(
            meta_keys::SYMPTOM_NOISE_SCALE.into(),
            self.symptom_noise_scale.to_string(),
        );
        m.insert(
            meta_keys::SUPPRESSION_HALF_WIDTH.into(),
            self.max_ci_half_width.to_string(),
        );
        m.insert(
            meta_keys::STATISTIC_COSTS.into(),
            serde_json::to_string(&self.statistic_costs).unwrap_or_default(),
        );
        if !self.part.is_whole() {
            m.insert(meta_keys::PART.into(), self.part.to_string());
        }
        m.insert(meta_keys::COVERAGE.into(), self.coverage.as_str().into());
        m.insert(
            meta_keys::LEDGER_SCOPE.into(),
            self.ledger_scope.as_str().into(),
        );
        m.insert(meta_keys::ESTIMATES.into(), self.estimates.as_str().into());
        if !self.all_ages_noise_scale.is_empty() {
            m.insert(
                meta_keys::ALL_AGES_NOISE_SCALE.into(),
                serde_json::to_string(&self.all_ages_noise_scale).unwrap_or_default(),
            );
        }
        if let Some(provisional) = &self.provisional {
            m.insert(
                meta_keys::PROVISIONAL.into(),
                serde_json::to_string(provisional).unwrap_or_default(),
            );
        }
        m
    }

    /// Reads the metadata back from a schema.
    pub fn from_metadata(m: &HashMap<String, String>) -> Result<ReleaseMeta, ReleaseError> {
        let get = |k: &'static str| m.get(k).ok_or(ReleaseError::Metadata(k));
        let num = |k: &'static str| {
            get(k)?
                .parse::<f64>()
                .map_err(|_| ReleaseError::Metadata(k))
        };
        if get(meta_keys::SCHEMA_VERSION)? != SCHEMA_VERSION {
            return Err(ReleaseError::Metadata(meta_keys::SCHEMA_VERSION));
        }
        let rho = match get(meta_keys::RHO)?.as_str() {
            "" => None,
            s => Some(
                s.parse::<f64>()
                    .map_err(|_| ReleaseError::Metadata(meta_keys::RHO))?,
            ),
        };
        let ms = |k: &'static str| {
            get(k)?
                .parse::<i64>()
                .map_err(|_| ReleaseError::Metadata(k))
        };
        // A key added after the first schema: absent in older files, where
        // its default is what those releases were.
        fn named<T: std::str::FromStr<Err = ()> + Default>(
            m: &HashMap<String, String>,
            key: &'static str,
        ) -> Result<T, ReleaseError> {
            m.get(key).map_or(Ok(T::default()), |text| {
                text.parse().map_err(|()| ReleaseError::Metadata(key))
            })
        }
        Ok(ReleaseMeta {
            window_start: ms(meta_keys::WINDOW_START)?,
            window_end: ms(meta_keys::WINDOW_END)?,
            mechanism: get(meta_keys::MECHANISM)?.clone(),
            rho,
            epsilon: num(meta_keys::EPSILON)?,
            delta: num(meta_keys::DELTA)?,
            ledger_entry: get(meta_keys::LEDGER_ENTRY)?.clone(),
            symptom_noise_scale: num(meta_keys::SYMPTOM_NOISE_SCALE)?,
            max_ci_half_width: num(meta_keys::SUPPRESSION_HALF_WIDTH)?,
            statistic_costs: serde_json::from_str(get(meta_keys::STATISTIC_COSTS)?)
                .map_err(|_| ReleaseError::Metadata(meta_keys::STATISTIC_COSTS))?,
            part: named(m, meta_keys::PART)?,
            coverage: named(m, meta_keys::COVERAGE)?,
            ledger_scope: named(m, meta_keys::LEDGER_SCOPE)?,
            estimates: named(m, meta_keys::ESTIMATES)?,
            all_ages_noise_scale: match m.get(meta_keys::ALL_AGES_NOISE_SCALE) {
                None => BTreeMap::new(),
                Some(text) => serde_json::from_str(text)
                    .map_err(|_| ReleaseError::Metadata(meta_keys::ALL_AGES_NOISE_SCALE))?,
            },
            provisional: match m.get(meta_keys::PROVISIONAL) {
                None => None,
                Some(text) => {
                    Some(Box::new(serde_json::from_str(text).map_err(|_| {
                        ReleaseError::Metadata(meta_keys::PROVISIONAL)
                    })?))
                }
            },
        })
    }

    /// The Arrow schema of a release with this metadata.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new_with_metadata(
            release_fields(),
            self.to_metadata(),
        ))
    }
}

impl Release {
    /// The release as one Arrow record batch (schema carries the metadata).
    pub fn to_record_batch(&self) -> Result<RecordBatch, ReleaseError> {
        let rows = &self.rows;
        let i64s = |f: fn(&ReleaseRow) -> i64| {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
        };
        let f64s = |f: fn(&ReleaseRow) -> f64| {
            Arc::new(Float64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
        };
        let ts = |f: fn(&ReleaseRow) -> i64| {
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.iter().map(f))
                    .with_timezone("UTC"),
            ) as ArrayRef
        };
        let mut columns: Vec<ArrayRef> = vec![
            ts(|r| r.window_start),
            ts(|r| r.window_end),
            Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.level))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.region.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.age_band.as_str()),
            )),
            i64s(|r| r.n_low),
            i64s(|r| r.n_moderate),
            i64s(|r| r.n_high),
            i64s(|r| r.n_total),
            Arc::new(rows.iter().map(|r| r.high_share).collect::<Float64Array>()),
            f64s(|r| r.high_share_ci_low),
            f64s(|r| r.high_share_ci_high),
            f64s(|r| r.noise_scale),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.suppressed))
                    .collect::<BooleanArray>(),
            ),
        ];
        for i in 0..Symptom::ALL.len() {
            columns.push(Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.symptoms[i]),
            )));
        }
        Ok(RecordBatch::try_new(self.meta.schema(), columns)?)
    }

    /// Reads a release back from a record batch with the release schema.
    pub fn from_record_batch(batch: &RecordBatch) -> Result<Release, ReleaseError> {
        let meta = ReleaseMeta::from_metadata(batch.schema().metadata())?;
        let rows = ReleaseRow::from_record_batch(batch, meta.provisional.is_some())?;
        Ok(Release { meta, rows })
    }

    /// Encodes the release as an Arrow IPC stream (the releases topic payload).
    pub fn to_ipc(&self) -> Result<Vec<u8>, ReleaseError> {
        let batch = self.to_record_batch()?;
        let mut buf = Vec::new();
        let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        Ok(buf)
    }

    /// Decodes an Arrow IPC stream holding exactly one release batch; never
    /// panics on any input.
    pub fn from_ipc(bytes: &[u8]) -> Result<Release, ReleaseError> {
        // Two defences against crafted bytes, both found by fuzzing
        // (fuzz/corpus/release/regression-*): `StreamDecoder` takes the
        // message from the slice as it is, where `StreamReader` allocates
        // whatever body length a header claims up front (an abort, not an
        // error, at exabytes); and arrow-ipc 59.3 asserts (panics) on buffer
        // offsets past the body instead of returning an error, so the read
        // is fenced. Bytes on the releases topic come from our own
        // transactional producer, but a crafted record must not take down
        // the dashboard or the aggregator's ledger recovery.
        let read = std::panic::catch_unwind(|| {
            let mut decoder = StreamDecoder::new();
            let mut buffer = Buffer::from(bytes.to_vec());
            let mut batches = Vec::new();
            while let Some(batch) = decoder.decode(&mut buffer)? {
                batches.push(batch);
            }
            decoder.finish()?;
            Ok::<_, ArrowError>(batches)
        });
        let batches = read.map_err(|_| ReleaseError::Malformed)??;
        match batches.as_slice() {
            [batch] => Release::from_record_batch(batch),
            other => Err(ReleaseError::Batches(other.len())),
        }
    }
}

/// (De)serialises the symptom array as flat `sym_<name>` JSON members, so the
/// JSON rows have exactly the Arrow columns.
mod symptom_columns {
    use super::Symptom;
    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::HashMap;

    pub fn serialize<S: Serializer>(values: &[i64; 10], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(values.len()))?;
        for (sym, v) in Symptom::ALL.iter().zip(values) {
            map.serialize_entry(&sym.column(), v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[i64; 10], D::Error> {
        let map = HashMap::<String, i64>::deserialize(d)?;
        let mut out = [0i64; 10];
        for (i, sym) in Symptom::ALL.iter().enumerate() {
            out[i] = *map
                .get(&sym.column())
                .ok_or_else(|| D::Error::missing_field("sym_*"))?;
        }
        Ok(out)
    }
}

impl ReleaseRow {
    /// The rows of a record batch with the release schema's columns (its
    /// metadata is not needed: a query over the release store returns rows
    /// without it). `provisional`: whether the all-ages label is allowed,
    /// as it is only in a provisional release.
    pub fn from_record_batch(
        batch: &RecordBatch,
        provisional: bool,
    ) -> Result<Vec<ReleaseRow>, ReleaseError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| ReleaseError::Column(name.into()))
        };
        macro_rules! typed {
            ($name:expr, $ty:ty) => {
                col($name)?
                    .as_any()
                    .downcast_ref::<$ty>()
                    .ok_or_else(|| ReleaseError::Column($name.to_string()))?
            };
        }
        let window_start = typed!("window_start", TimestampMillisecondArray);
        let window_end = typed!("window_end", TimestampMillisecondArray);
        let level = typed!("level", UInt8Array);
        let region = typed!("region", StringArray);
        let age_band = typed!("age_band", StringArray);
        let n_low = typed!("n_low", Int64Array);
        let n_moderate = typed!("n_moderate", Int64Array);
        let n_high = typed!("n_high", Int64Array);
        let n_total = typed!("n_total", Int64Array);
        let high_share = typed!("high_share", Float64Array);
        let ci_low = typed!("high_share_ci_low", Float64Array);
        let ci_high = typed!("high_share_ci_high", Float64Array);
        let noise_scale = typed!("noise_scale", Float64Array);
        let suppressed = typed!("suppressed", BooleanArray);
        let mut symptom_cols = Vec::with_capacity(Symptom::ALL.len());
        for s in Symptom::ALL {
            let name = s.column();
            symptom_cols.push(typed!(name.as_str(), Int64Array));
        }
        let mut rows = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let region_label = region.value(i);
            region_label
                .parse::<RegionCell>()
                .map_err(|e| ReleaseError::Value {
                    column: "region",
                    reason: e.to_string(),
                })?;
            let band = age_band.value(i);
            // Provisional numbers are all ages together, said so by name.
            let all_ages = band == ALL_AGES && provisional;
            if AgeBand::from_label(band).is_none() && !all_ages {
                return Err(ReleaseError::Value {
                    column: "age_band",
                    reason: format!("unknown band {band:?}"),
                });
            }
            let mut symptoms = [0i64; 10];
            for (j, c) in symptom_cols.iter().enumerate() {
                symptoms[j] = c.value(i);
            }
            rows.push(ReleaseRow {
                window_start: window_start.value(i),
                window_end: window_end.value(i),
                level: level.value(i),
                region: region_label.to_string(),
                age_band: band.to_string(),
                n_low: n_low.value(i),
                n_moderate: n_moderate.value(i),
                n_high: n_high.value(i),
                n_total: n_total.value(i),
                high_share: high_share.is_valid(i).then(|| high_share.value(i)),
                high_share_ci_low: ci_low.value(i),
                high_share_ci_high: ci_high.value(i),
                noise_scale: noise_scale.value(i),
                suppressed: suppressed.value(i),
                symptoms,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record batch message claiming an exabyte body: `StreamReader`
    /// would try to allocate it (and abort); ours reads what is there.
    #[test]
    fn a_huge_claimed_body_is_an_error_not_an_allocation() {
        let mut bytes = sample().to_ipc().unwrap();
        // Stream framing: 0xFFFFFFFF, i32 metadata length, metadata, body.
        let mut at = 0;
        let mut patched = false;
        while at + 8 <= bytes.len() {
            let len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            let meta = at + 8..at + 8 + len;
            let message = arrow::ipc::root_as_message(&bytes[meta.clone()]).unwrap();
            let body = message.bodyLength() as usize;
            if message.header_type() == arrow::ipc::MessageHeader::RecordBatch {
                let needle = (body as i64).to_le_bytes();
                let pos = bytes[meta.clone()]
                    .windows(8)
                    .position(|w| w == needle)
                    .expect("bodyLength in the message");
                let huge: i64 = 0x0c00_0000_1c00_0000;
                bytes[meta.start + pos..meta.start + pos + 8].copy_from_slice(&huge.to_le_bytes());
                patched = true;
                break;
            }
            at = meta.end + body;
        }
        assert!(patched);
        assert!(Release::from_ipc(&bytes).is_err());
    }

    #[test]
    fn malformed_ipc_is_an_error_not_a_panic() {
        let crafted = include_bytes!("../../fuzz/regressions/release/buffer-out-of-bounds");
        assert!(Release::from_ipc(crafted).is_err());
        assert!(Release::from_ipc(&[]).is_err());
        assert!(Release::from_ipc(b"ARROW1 not really").is_err());
    }

    pub(crate) fn sample() -> Release {
        Release {
            meta: ReleaseMeta {
                window_start: 1_700_000_000_000,
                window_end: 1_700_000_060_000,
                mechanism: "discrete_laplace".into(),
                rho: None,
                epsilon: 1.0,
                delta: 0.0,
                ledger_entry: "w1700000000000".into(),
                symptom_noise_scale: 28.3,
                max_ci_half_width: 0.15,
                statistic_costs: vec![StatisticCost {
                    statistic: "risk_counts".into(),
                    level: 5,
                    cost: 0.5,
                    delta: 0.0,
                }],
                all_ages_noise_scale: BTreeMap::from([(7, 9.5), (6, 12.25)]),
                ..Default::default()
            },
            rows: vec![ReleaseRow {
                window_start: 1_700_000_000_000,
                window_end: 1_700_000_060_000,
                level: 5,
                region: "85608b0bfffffff".into(),
                age_band: "30-44".into(),
                n_low: 10,
                n_moderate: 5,
                n_high: 2,
                n_total: 17,
                high_share: Some(2.0 / 17.0),
                high_share_ci_low: 0.0,
                high_share_ci_high: 0.4,
                noise_scale: 2.8,
                suppressed: true,
                symptoms: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            }],
        }
    }

    #[test]
    fn ipc_round_trip_keeps_rows_and_metadata() {
        let release = sample();
        let bytes = release.to_ipc().unwrap();
        assert_eq!(Release::from_ipc(&bytes).unwrap(), release);
    }

    #[test]
    fn a_provisional_release_says_so_and_keeps_its_interval_measurements() {
        let mut release = sample();
        release.meta.provisional = Some(Box::new(ProvisionalMeta {
            sub_windows_in: 2,
            sub_windows: 4,
            sub_window_ms: 15_000,
            through_ms: release.meta.window_start + 30_000,
            level: 5,
            node_noise_scale: 1.5,
            intervals: vec![IntervalCounts {
                start: 0,
                end: 2,
                counts: BTreeMap::from([("85608b0bfffffff".to_string(), [3, -1, 0])]),
            }],
        }));
        let back = Release::from_ipc(&release.to_ipc().unwrap()).unwrap();
        assert_eq!(back, release);
        // Its rows may count all ages together; a final release's may not.
        let mut all = release.clone();
        all.rows[0].age_band = ALL_AGES.into();
        assert!(Release::from_ipc(&all.to_ipc().unwrap()).is_ok());
        all.meta.provisional = None;
        assert!(Release::from_ipc(&all.to_ipc().unwrap()).is_err());
        // A final release carries no such key, and a garbled one is refused.
        assert!(
            !sample()
                .meta
                .to_metadata()
                .contains_key(meta_keys::PROVISIONAL)
        );
        let mut md = release.meta.to_metadata();
        md.insert(meta_keys::PROVISIONAL.into(), "{".into());
        assert!(matches!(
            ReleaseMeta::from_metadata(&md),
            Err(ReleaseError::Metadata(meta_keys::PROVISIONAL))
        ));
    }

    #[test]
    fn json_rows_have_the_arrow_columns() {
        let release = sample();
        let json = serde_json::to_value(&release.rows[0]).unwrap();
        let keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        let mut expected: Vec<String> = release_fields().iter().map(|f| f.name().clone()).collect();
        let mut got = keys.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        let back: ReleaseRow = serde_json::from_value(json).unwrap();
        assert_eq!(back, release.rows[0]);
    }

    #[test]
    fn schema_metadata_is_complete() {
        let batch = sample().to_record_batch().unwrap();
        let md = batch.schema().metadata().clone();
        for k in [
            meta_keys::MECHANISM,
            meta_keys::RHO,
            meta_keys::EPSILON,
            meta_keys::DELTA,
            meta_keys::LEDGER_ENTRY,
            meta_keys::SCHEMA_VERSION,
        ] {
            assert!(md.contains_key(k), "missing {k}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Release::from_ipc(b"not arrow").is_err());
        assert!(Release::from_ipc(&[]).is_err());
        let mut bytes = sample().to_ipc().unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(Release::from_ipc(&bytes).is_err());
    }
}
