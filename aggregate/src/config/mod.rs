//! Aggregate configuration: serde defaults < TOML file < `HUSHMAP_AGGREGATE_*`
//! environment variables (nested keys with `__`). Secrets (payload keys,
//! the Kafka password) come from their own variables or the file, never a flag.

use crate::release::{LevelPlan, RegionSelection, ReleasePlan};
use hushmap_privacy::noise::{
    CountNoise, DiscreteGaussian, DiscreteLaplace, NoiseError, ThresholdSelector,
};
use hushmap_privacy::sensitivity::ContributionBounds;
use hushmap_privacy::{Budget, BudgetLimit, ReleaseCost, zcdp_rho_for};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    PayloadKeyring, RegionCell, RegionError, StatisticCost, WindowLength, topics,
};
use hushmap_service::config::{LoadError, load_layered};
use hushmap_service::kafka::{self, KafkaSecurity, KafkaSecurityError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("window_secs must be at least {min} outside dev mode (got {got})")]
    WindowTooShort { min: u32, got: u32 },
    #[error("window_secs must be positive")]
    WindowZero,
    #[error("region_resolution: {0}")]
    Resolution(#[from] RegionError),
    #[error("privacy.{field}: {reason}")]
    Privacy {
        field: &'static str,
        reason: &'static str,
    },
    #[error("noise calibration: {0}")]
    Noise(#[from] NoiseError),
    #[error(
        "refusing to serve metrics on {0}: the aggregator binds loopback unless \
         `metrics_public = true`"
    )]
    PublicMetrics(std::net::SocketAddr),
    #[error(
        "HUSHMAP_PAYLOAD_KEYS (or payload_keys) is required to read the submissions topic: \
         the private keys whose public halves ingest seals to \
         (`hushmap-aggregate generate-payload-key`)"
    )]
    MissingPayloadKeys,
    #[error(transparent)]
    KafkaSecurity(#[from] KafkaSecurityError),
    #[error("schedule_epoch: {0} (expected an RFC 3339 time or YYYY-MM-DD on a window boundary)")]
    Epoch(&'static str),
    #[error("max_buffered_records_per_window must be positive")]
    BufferCap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub input_topic: String,
    pub output_topic: String,
    pub group_id: String,
    /// Transactional id of the release producer. Releases and consumer
    /// offsets are committed in one Kafka transaction under this id; a
    /// restarted instance with the same id fences off its predecessor.
    pub transactional_id: String,
    /// Longest wait for a transaction step (init, commit) before retrying.
    pub transaction_timeout_ms: u64,
    /// TLS and SASL towards the brokers.
    pub security: KafkaSecurity,
    /// Partitioned topology only: the topic between its two stages.
    pub bounded_topic: String,
    /// Partitioned topology only: this instance's name, which makes its
    /// transactional ids (`<transactional_id>-bound-<id>`, `-release-<id>`).
    /// A stable name (a StatefulSet pod's) lets a restarted instance abort
    /// its predecessor's open transactions at once; without one a random
    /// name is drawn and a crashed instance's open transaction blocks its
    /// partitions until `transaction_timeout_ms` passes.
    pub instance_id: Option<String>,
    /// Partitioned topology only: how long the group waits for a silent
    /// member before handing its partitions to the others.
    pub session_timeout_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            input_topic: topics::SUBMISSIONS.into(),
            output_topic: topics::RELEASES.into(),
            group_id: "hushmap-aggregate".into(),
            transactional_id: "hushmap-aggregate-releases".into(),
            transaction_timeout_ms: 30_000,
            security: KafkaSecurity::default(),
            bounded_topic: topics::BOUNDED.into(),
            instance_id: None,
            session_timeout_ms: 10_000,
        }
    }
}

/// The noise mechanism of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Discrete Gaussian under zCDP; ε is stated at `privacy.delta`.
    Gaussian,
    /// Discrete Laplace under pure ε-DP (δ = 0).
    Laplace,
}

/// Privacy parameters. Defaults follow published deployments: Google's
/// COVID-19 symptom trends spent ε ≈ 1.68 per user-day and its vaccination
/// search insights (ε, δ) = (2.19, 10⁻⁵) per user-day; Hushmap spends ε = 1
/// per daily window (at δ = 10⁻⁸ under the Gaussian mechanism, well below
/// one over any country's population) and refuses more than 1 per rolling
/// day or 10 per rolling 30 days.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    pub mechanism: Mechanism,
    /// ε spent by one window's release (risk counts + symptom counts); for
    /// the Gaussian mechanism, at `delta`.
    pub epsilon_per_window: f64,
    /// δ at which zCDP losses (per window and over every budgeted span) are
    /// converted to ε. Ignored by the Laplace mechanism.
    pub delta: f64,
    /// Share of the window's budget (ρ or ε) given to the risk-level
    /// counts; the rest goes to the symptom counts.
    pub risk_share: f64,
    /// Records per contributor per window that count (latest kept).
    pub max_contributions_per_window: u32,
    /// Ledger limit over any rolling day.
    pub max_epsilon_per_day: f64,
    /// Ledger limit over any rolling `budget_horizon_days`.
    pub max_epsilon_per_horizon: f64,
    /// Ledger limit on δ over any budgeted span (the conversion's `delta`
    /// once plus every release's threshold δ).
    pub max_delta_per_horizon: f64,
    pub budget_horizon_days: u32,
    /// Suppress cells whose 95% interval of the high-risk share is wider
    /// than ± this.
    pub max_ci_half_width: f64,
    /// A public, data-independent set of H3 cells (at the release
    /// resolution or coarser; coarser ones stand for all their children).
    /// When set, exactly these regions are released, every age band, zeros
    /// included, and records elsewhere are dropped. When empty, regions are
    /// chosen from the data by OpenDP's threshold mechanism.
    pub public_regions: Vec<String>,
    /// A public area as a polygon of `[lat, lon]` vertices: every cell at
    /// the release resolution touching it joins the public region set.
    pub public_polygon: Vec<[f64; 2]>,
    /// A public area as a box `[south, west, north, east]` in degrees; its
    /// cells join the public region set like the polygon's.
    pub public_bbox: Option<[f64; 4]>,
    /// Share of the window's budget (ρ or ε) spent choosing regions when
    /// there is no public set.
    pub selection_share: f64,
    /// δ of the threshold mechanism (per window, all levels together), on
    /// top of `delta`.
    pub selection_delta: f64,
    /// Coarser H3 levels released besides the release resolution (2: also
    /// r−1 and r−2), from the same bounded counts; the budget is split
    /// evenly across levels. A suppressed cell points to its nearest
    /// unsuppressed ancestor.
    pub parent_levels: u8,
}

/// Most coarser levels a release may carry (each one takes a share of the
/// budget).
pub const MAX_PARENT_LEVELS: u8 = 4;

/// Most cells a public region set may expand to (a release noises 13
/// counts per cell and age band).
pub const MAX_PUBLIC_CELLS: usize = 50_000;

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            mechanism: Mechanism::Gaussian,
            epsilon_per_window: 1.0,
            delta: 1e-8,
            risk_share: 0.5,
            max_contributions_per_window: 1,
            max_epsilon_per_day: 1.0,
            max_epsilon_per_horizon: 10.0,
            max_delta_per_horizon: 1e-6,
            budget_horizon_days: 30,
            max_ci_half_width: 0.15,
            public_regions: Vec::new(),
            public_polygon: Vec::new(),
            public_bbox: None,
            selection_share: 0.1,
            selection_delta: 1e-8,
            parent_levels: 2,
        }
    }
}

/// How the streaming aggregator is laid out (docs/SCALE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One instance reads every submissions partition and publishes each
    /// window whole.
    #[default]
    Single,
    /// Any number of instances share two consumer groups: stage 1 bounds
    /// contributions per submissions partition, stage 2 counts, noises and
    /// publishes one part of each window per bounded-topic partition.
    Partitioned,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// Allows windows shorter than 15 minutes (demos, tests).
    pub dev_mode: bool,
    pub topology: Topology,
    pub kafka: KafkaSettings,
    /// Must match ingest's.
    pub window_secs: u32,
    /// A window is released this long after it ends; later records are dropped.
    pub allowed_lateness_secs: u32,
    /// The first window released (RFC 3339 or `YYYY-MM-DD`, UTC, on a
    /// window boundary); every window from it on is released, whatever the
    /// data. Default: the first window at or after the first start-up,
    /// kept in the consumer group's commit metadata so a restart continues
    /// it. Required with `topology = "partitioned"`, whose instances must
    /// agree on it.
    #[serde(deserialize_with = "instant_text")]
    pub schedule_epoch: Option<String>,
    /// How long after a window's deadline (end + lateness) its records are
    /// surely still on the submissions topic: the topic's retention less
    /// window and lateness (deploy/ keeps 6 h), less time for a replay. A
    /// window whose deadline passed longer ago than this when the
    /// aggregator started is published empty, marked `missed`, at no cost.
    pub replay_horizon_secs: u32,
    /// Records one window may buffer (in each stage, per input partition
    /// in the partitioned topology), so a flood cannot exhaust memory:
    /// past it a window's records are refused and counted
    /// (`records_dropped_total{reason="window_full"}`). Reaching it changes
    /// the privacy analysis of that window (see docs/PRIVACY.md); size it
    /// well above real traffic.
    pub max_buffered_records_per_window: usize,
    /// H3 resolution of released regions (ingest coarsens to the same).
    pub region_resolution: u8,
    pub privacy: PrivacyConfig,
    /// How often open windows are checked for closing.
    pub tick_ms: u64,
    /// Where `/metrics` and `/healthz` are served (port 0: any free port).
    pub metrics_listen: std::net::SocketAddr,
    /// Deliberately serve metrics beyond loopback (they hold counts only).
    pub metrics_public: bool,
    /// Private keys that open sealed records (`ID:HEX64[,...]`) and derive
    /// the bounded topic's key; only from `HUSHMAP_PAYLOAD_KEYS` or the file.
    /// Streaming needs them, batch not.
    #[serde(skip_serializing)]
    pub payload_keys: Option<PayloadKeyring>,
}

/// An instant as text or as a number of ms: figment reads an environment
/// variable of digits as a number.
fn instant_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Instant {
        Text(String),
        Millis(i64),
    }
    Ok(Option::<Instant>::deserialize(d)?.map(|i| match i {
        Instant::Text(t) => t,
        Instant::Millis(ms) => ms.to_string(),
    }))
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            dev_mode: false,
            topology: Topology::Single,
            kafka: KafkaSettings::default(),
            window_secs: WindowLength::ONE_DAY.secs(),
            allowed_lateness_secs: 600,
            schedule_epoch: None,
            replay_horizon_secs: 5 * 3600,
            max_buffered_records_per_window: 5_000_000,
            region_resolution: 5,
            privacy: PrivacyConfig::default(),
            tick_ms: 500,
            metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8082)),
            metrics_public: false,
            payload_keys: None,
        }
    }
}

impl AggregateConfig {
    pub fn load(file: Option<&Path>) -> Result<AggregateConfig, ConfigError> {
        // Each secret from its variable or the file its `_FILE` names.
        let config: AggregateConfig = load_layered(
            file,
            "HUSHMAP_AGGREGATE_",
            &[
                ("HUSHMAP_PAYLOAD_KEYS", "payload_keys"),
                (kafka::SASL_PASSWORD_ENV, kafka::SASL_PASSWORD_KEY),
            ],
        )?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting and that the noise can be calibrated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validated_plan().map(|_| ())
    }

    /// Checks every setting and calibrates: the plan of a valid config.
    pub fn validated_plan(&self) -> Result<ReleasePlan, ConfigError> {
        self.check_settings()?;
        self.release_plan()
    }

    fn check_settings(&self) -> Result<(), ConfigError> {
        let window = WindowLength::from_secs(self.window_secs).ok_or(ConfigError::WindowZero)?;
        if !self.dev_mode && window.secs() < WindowLength::PRODUCTION_MIN.secs() {
            return Err(ConfigError::WindowTooShort {
                min: WindowLength::PRODUCTION_MIN.secs(),
                got: window.secs(),
            });
        }
        RegionResolution::new(self.region_resolution)?;
        let epoch = self.schedule_epoch_ms()?;
        if self.topology == Topology::Partitioned && epoch.is_none() {
            return Err(ConfigError::Epoch(
                "required with topology = \"partitioned\": every instance must start the \
                 schedule at the same window",
            ));
        }
        self.kafka.security.validate(&self.kafka.brokers)?;
        if self.max_buffered_records_per_window == 0 {
            return Err(ConfigError::BufferCap);
        }
        if !self.metrics_listen.ip().is_loopback() && !self.metrics_public {
            return Err(ConfigError::PublicMetrics(self.metrics_listen));
        }
        let p = &self.privacy;
        if p.parent_levels > self.region_resolution || p.parent_levels > MAX_PARENT_LEVELS {
            return Err(ConfigError::Privacy {
                field: "parent_levels",
                reason: "must be at most 4 and at most region_resolution",
            });
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(p.epsilon_per_window) {
            return Err(ConfigError::Privacy {
                field: "epsilon_per_window",
                reason: "must be positive",
            });
        }
        if !(p.risk_share > 0.0 && p.risk_share < 1.0) {
            return Err(ConfigError::Privacy {
                field: "risk_share",
                reason: "must be strictly between 0 and 1",
            });
        }
        if p.max_contributions_per_window == 0 {
            return Err(ConfigError::Privacy {
                field: "max_contributions_per_window",
                reason: "must be at least 1",
            });
        }
        if !(p.delta > 0.0 && p.delta < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "delta",
                reason: "must be in (0, 0.001)",
            });
        }
        if !positive(p.max_epsilon_per_day) {
            return Err(ConfigError::Privacy {
                field: "max_epsilon_per_day",
                reason: "must be positive",
            });
        }
        if !positive(p.max_epsilon_per_horizon) {
            return Err(ConfigError::Privacy {
                field: "max_epsilon_per_horizon",
                reason: "must be positive",
            });
        }
        if !(p.selection_share > 0.0 && p.selection_share < 1.0) {
            return Err(ConfigError::Privacy {
                field: "selection_share",
                reason: "must be strictly between 0 and 1",
            });
        }
        if !(p.selection_delta > 0.0 && p.selection_delta < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "selection_delta",
                reason: "must be in (0, 0.001)",
            });
        }
        if !(p.max_delta_per_horizon > p.delta && p.max_delta_per_horizon < 1e-3) {
            return Err(ConfigError::Privacy {
                field: "max_delta_per_horizon",
                reason: "must be above delta and below 0.001",
            });
        }
        if p.budget_horizon_days == 0 {
            return Err(ConfigError::Privacy {
                field: "budget_horizon_days",
                reason: "must be at least 1",
            });
        }
        if !positive(p.max_ci_half_width) {
            return Err(ConfigError::Privacy {
                field: "max_ci_half_width",
                reason: "must be positive",
            });
        }
        Ok(())
    }

    pub fn window_length(&self) -> WindowLength {
        WindowLength::from_secs(self.window_secs).expect("validated")
    }

    /// The configured schedule epoch, checked to be a window start.
    pub fn schedule_epoch_ms(&self) -> Result<Option<i64>, ConfigError> {
        let Some(text) = &self.schedule_epoch else {
            return Ok(None);
        };
        let ms =
            hushmap_schema::window::parse_instant(text).ok_or(ConfigError::Epoch("not a time"))?;
        let length = WindowLength::from_secs(self.window_secs).ok_or(ConfigError::WindowZero)?;
        hushmap_schema::Window::from_start(ms, length)
            .ok_or(ConfigError::Epoch("not the start of a window"))?;
        Ok(Some(ms))
    }

    pub fn lateness_ms(&self) -> i64 {
        i64::from(self.allowed_lateness_secs) * 1000
    }

    pub fn replay_horizon_ms(&self) -> i64 {
        i64::from(self.replay_horizon_secs) * 1000
    }

    /// The keys that open sealed records; streaming cannot run without them.
    pub fn payload_keyring(&self) -> Result<PayloadKeyring, ConfigError> {
        self.payload_keys
            .clone()
            .ok_or(ConfigError::MissingPayloadKeys)
    }

    /// The coarsest released resolution: partitioned stage 2 shards by it,
    /// so each shard holds whole trees of the hierarchy.
    pub fn coarsest_level(&self) -> u8 {
        self.region_resolution
            .saturating_sub(self.privacy.parent_levels)
    }

    pub fn bounds(&self) -> ContributionBounds {
        ContributionBounds::new(self.privacy.max_contributions_per_window)
    }

    pub fn budget(&self) -> Budget {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let p = &self.privacy;
        Budget {
            limits: vec![
                BudgetLimit {
                    horizon_ms: DAY_MS,
                    max_epsilon: p.max_epsilon_per_day,
                },
                BudgetLimit {
                    horizon_ms: DAY_MS * i64::from(p.budget_horizon_days),
                    max_epsilon: p.max_epsilon_per_horizon,
                },
            ],
            delta: p.delta,
            max_delta: p.max_delta_per_horizon,
        }
    }

    /// The public region set, expanded to the release resolution (`None`
    /// when regions are chosen from the data): the listed cells (coarser
    /// ones stand for their children) and the cells covering the public
    /// polygon and box.
    pub fn public_regions(&self) -> Result<Option<BTreeSet<RegionCell>>, ConfigError> {
        let p = &self.privacy;
        if p.public_regions.is_empty() && p.public_polygon.is_empty() && p.public_bbox.is_none() {
            return Ok(None);
        }
        let invalid = |field, reason| ConfigError::Privacy { field, reason };
        let too_many = || {
            invalid(
                "public_regions",
                "the set expands to more than 50,000 cells",
            )
        };
        let mut set = BTreeSet::new();
        for text in &p.public_regions {
            let cell: RegionCell = text
                .parse()
                .map_err(|_| invalid("public_regions", "each entry must be an H3 cell index"))?;
            let children = cell.children(self.region_resolution).ok_or(invalid(
                "public_regions",
                "a cell is finer than region_resolution",
            ))?;
            set.extend(children);
            if set.len() > MAX_PUBLIC_CELLS {
                return Err(too_many());
            }
        }
        let mut areas: Vec<(&'static str, Vec<(f64, f64)>)> = Vec::new();
        if !p.public_polygon.is_empty() {
            areas.push((
                "public_polygon",
                p.public_polygon
                    .iter()
                    .map(|[lat, lon]| (*lat, *lon))
                    .collect(),
            ));
        }
        if let Some([south, west, north, east]) = p.public_bbox {
            if !(south < north && west < east) {
                return Err(invalid(
                    "public_bbox",
                    "must be [south, west, north, east] with south < north and west < east",
                ));
            }
            areas.push((
                "public_bbox",
                vec![(south, west), (south, east), (north, east), (north, west)],
            ));
        }
        for (field, vertices) in areas {
            let cells = RegionCell::covering(&vertices, self.region_resolution, MAX_PUBLIC_CELLS)
                .map_err(|e| match e {
                RegionError::AreaTooLarge => too_many(),
                _ => invalid(
                    field,
                    "must be at least three valid [lat, lon] vertices of a simple polygon",
                ),
            })?;
            set.extend(cells);
            if set.len() > MAX_PUBLIC_CELLS {
                return Err(too_many());
            }
        }
        Ok(Some(set))
    }

    /// The H3 resolutions released, finest (the release resolution) first.
    pub fn release_levels(&self) -> Vec<u8> {
        (0..=self.privacy.parent_levels)
            .filter_map(|k| self.region_resolution.checked_sub(k))
            .collect()
    }

    /// Calibrates every mechanism from the budget split and the
    /// sensitivities ([`ContributionBounds`]).
    ///
    /// The window's budget (ρ for the Gaussian mechanism, ε for Laplace) is
    /// split evenly across the hierarchy levels; within a level,
    /// `selection_share` goes to choosing regions when there is no public
    /// set, and the rest is split by `risk_share` between the risk-level
    /// counts and the symptom counts. Every statistic's cost is OpenDP's
    /// privacy map at the bounded sensitivity; they add up (ρ and pure ε
    /// both compose additively) to the release's cost.
    pub fn release_plan(&self) -> Result<ReleasePlan, ConfigError> {
        let p = &self.privacy;
        let bounds = self.bounds();
        let public = self.public_regions()?;
        let levels = self.release_levels();
        let n_levels = levels.len() as f64;
        let total = match p.mechanism {
            Mechanism::Gaussian => {
                zcdp_rho_for(p.epsilon_per_window, p.delta).map_err(NoiseError::from)?
            }
            Mechanism::Laplace => p.epsilon_per_window,
        };
        let (selection_budget, counts_budget) = match public {
            Some(_) => (0.0, total / n_levels),
            None => (
                total * p.selection_share / n_levels,
                total * (1.0 - p.selection_share) / n_levels,
            ),
        };
        let (risk_budget, symptom_budget) = (
            counts_budget * p.risk_share,
            counts_budget * (1.0 - p.risk_share),
        );
        let mut level_plans = Vec::with_capacity(levels.len());
        let mut costs = Vec::new();
        let mut cost_of = |statistic: &str, level: u8, cost: f64, delta: f64| {
            costs.push(StatisticCost {
                statistic: statistic.into(),
                level,
                cost,
                delta,
            })
        };
        for level in levels {
            let selection = match &public {
                // Parents of public cells are public too (and derived from
                // nothing but the configuration).
                Some(set) => RegionSelection::Public(Arc::new(
                    set.iter().filter_map(|c| c.parent(level)).collect(),
                )),
                None => {
                    let selector = match p.mechanism {
                        Mechanism::Gaussian => ThresholdSelector::gaussian,
                        Mechanism::Laplace => ThresholdSelector::laplace,
                    }(
                        bounds.region_totals(),
                        selection_budget,
                        p.selection_delta / n_levels,
                    )?;
                    cost_of("selection", level, selector.cost, selector.delta);
                    RegionSelection::Threshold(selector)
                }
            };
            let (risk, symptoms) = match p.mechanism {
                Mechanism::Gaussian => {
                    let risk = DiscreteGaussian::calibrate(bounds.risk_counts_l2(), risk_budget)?;
                    let symptoms =
                        DiscreteGaussian::calibrate(bounds.symptom_counts_l2(), symptom_budget)?;
                    cost_of("risk_counts", level, risk.rho, 0.0);
                    cost_of("symptom_counts", level, symptoms.rho, 0.0);
                    (CountNoise::Gaussian(risk), CountNoise::Gaussian(symptoms))
                }
                Mechanism::Laplace => {
                    let risk = DiscreteLaplace::calibrate(bounds.risk_counts_l1(), risk_budget)?;
                    let symptoms =
                        DiscreteLaplace::calibrate(bounds.symptom_counts_l1(), symptom_budget)?;
                    cost_of("risk_counts", level, risk.epsilon, 0.0);
                    cost_of("symptom_counts", level, symptoms.epsilon, 0.0);
                    (CountNoise::Laplace(risk), CountNoise::Laplace(symptoms))
                }
            };
            level_plans.push(LevelPlan {
                level,
                selection,
                risk,
                symptoms,
            });
        }
        let (mechanism, cost) = match p.mechanism {
            Mechanism::Gaussian => (
                DiscreteGaussian::NAME,
                ReleaseCost::concentrated(costs, p.delta).map_err(NoiseError::from)?,
            ),
            Mechanism::Laplace => {
                let epsilon: f64 = costs.iter().map(|c| c.cost).sum();
                let delta: f64 = costs.iter().map(|c| c.delta).sum();
                (
                    DiscreteLaplace::NAME,
                    ReleaseCost::pure(epsilon, delta, costs),
                )
            }
        };
        Ok(ReleasePlan {
            mechanism,
            levels: level_plans,
            cost,
            max_ci_half_width: p.max_ci_half_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    #[test]
    fn the_schedule_epoch_is_a_window_start_given_as_text_or_ms() {
        // As figment reads it from a file or the environment, where a
        // variable of digits becomes a number.
        let read = |toml: &str| {
            let c: AggregateConfig =
                Figment::from(Serialized::defaults(AggregateConfig::default()))
                    .merge(Toml::string(toml))
                    .extract()
                    .unwrap();
            c.schedule_epoch_ms().unwrap()
        };
        for toml in [
            "schedule_epoch = 1767225600000",
            "schedule_epoch = \"2026-01-01\"",
            "schedule_epoch = \"2026-01-01T00:00:00Z\"",
        ] {
            assert_eq!(read(toml), Some(1_767_225_600_000), "{toml}");
        }
        let mut c = AggregateConfig {
            schedule_epoch: Some("2026-01-01T00:00:30Z".into()),
            ..AggregateConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Epoch(_))));
        c.schedule_epoch = Some("soon".into());
        assert!(matches!(c.validate(), Err(ConfigError::Epoch(_))));
        // Partitioned instances must agree on it: no default.
        c.schedule_epoch = None;
        c.topology = Topology::Partitioned;
        assert!(matches!(c.validate(), Err(ConfigError::Epoch(_))));
    }

    #[test]
    fn defaults_validate_and_spend_the_configured_epsilon() {
        for mechanism in [Mechanism::Gaussian, Mechanism::Laplace] {
            let mut c = AggregateConfig::default();
            c.privacy.mechanism = mechanism;
            c.validate().unwrap();
            let cost = c.release_plan().unwrap().cost;
            assert!(cost.epsilon <= c.privacy.epsilon_per_window);
            assert!(cost.epsilon > 0.999 * c.privacy.epsilon_per_window);
            assert_eq!(cost.rho.is_some(), mechanism == Mechanism::Gaussian);
        }
    }

    #[test]
    fn gaussian_is_less_noisy_for_the_symptom_vector() {
        // The symptom vector's L2 sensitivity is √10 against an L1 of 10:
        // at the same ε, Gaussian noise on symptoms is much smaller.
        let mut c = AggregateConfig::default();
        let gauss = c.release_plan().unwrap().finest().symptoms.std_dev();
        c.privacy.mechanism = Mechanism::Laplace;
        let laplace = c.release_plan().unwrap().finest().symptoms.std_dev();
        assert!(gauss < laplace, "gaussian {gauss} vs laplace {laplace}");
    }

    #[test]
    fn refuses_bad_privacy_settings() {
        let mut c = AggregateConfig::default();
        c.privacy.epsilon_per_window = 0.0;
        assert!(c.validate().is_err());
        let mut c = AggregateConfig::default();
        c.privacy.risk_share = 1.0;
        assert!(c.validate().is_err());
        let c = AggregateConfig {
            window_secs: 10,
            ..AggregateConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::WindowTooShort { .. })
        ));
        let c = AggregateConfig {
            window_secs: 10,
            dev_mode: true,
            ..AggregateConfig::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_public_box_or_polygon_becomes_the_cells_covering_it() {
        let mut c = AggregateConfig::default();
        // About 0.4° × 0.6° around Berlin.
        c.privacy.public_bbox = Some([52.3, 13.1, 52.7, 13.7]);
        let from_box = c.public_regions().unwrap().unwrap();
        let res = RegionResolution::new(5).unwrap();
        // Every point of the box, corners included, lies in a public cell.
        for lat in [52.3, 52.45, 52.7] {
            for lon in [13.1, 13.4, 13.7] {
                let cell = RegionCell::from_coordinate(lat, lon, res).unwrap();
                assert!(from_box.contains(&cell), "({lat}, {lon})");
            }
        }
        assert!(from_box.len() < 40, "{} cells", from_box.len());
        let outside = RegionCell::from_coordinate(48.1, 11.6, res).unwrap();
        assert!(!from_box.contains(&outside));
        // The same area as a polygon gives the same cells.
        c.privacy.public_bbox = None;
        c.privacy.public_polygon = vec![[52.3, 13.1], [52.3, 13.7], [52.7, 13.7], [52.7, 13.1]];
        assert_eq!(c.public_regions().unwrap().unwrap(), from_box);
        c.validate().unwrap();
        // Parents of the area's cells are the parent levels' public set.
        let plan = c.release_plan().unwrap();
        assert!(matches!(
            plan.levels[2].selection,
            RegionSelection::Public(_)
        ));

        // Bad areas are refused with the field named.
        c.privacy.public_polygon = vec![[52.3, 13.1], [52.3, 13.7]];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_polygon",
                ..
            })
        ));
        c.privacy.public_polygon.clear();
        c.privacy.public_bbox = Some([52.7, 13.1, 52.3, 13.7]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_bbox",
                ..
            })
        ));
        // A continent at resolution 5 is far over the cell limit.
        c.privacy.public_bbox = Some([35.0, -10.0, 70.0, 40.0]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Privacy {
                field: "public_regions",
                ..
            })
        ));
    }
}
