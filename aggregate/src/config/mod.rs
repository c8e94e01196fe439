//! Aggregate configuration: serde defaults < TOML file < `HUSHMAP_AGGREGATE_*`
//! environment variables (nested keys with `__`). Secrets (payload keys,
//! the Kafka password) come from their own variables or the file, never a flag.
//!
//! The `privacy` section, and what the release plan is built from, is in
//! [`privacy`].

mod privacy;

pub use privacy::{MAX_PARENT_LEVELS, MAX_PUBLIC_CELLS, Mechanism, PrivacyConfig};

use hushmap_privacy::noise::NoiseError;
use hushmap_privacy::release::ReleasePlan;
use hushmap_schema::region::RegionResolution;
use hushmap_schema::window::WindowLengthError;
use hushmap_schema::{PayloadKeyring, RegionError, WindowLength, topics};
use hushmap_service::config::{LoadError, load_layered};
use hushmap_service::kafka::{self, KafkaSecurity, KafkaSecurityError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Window(#[from] WindowLengthError),
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
    #[error("kafka.measurements_topic: {0}")]
    MeasurementsTopic(&'static str),
    #[error(
        "kafka.trust_producer_timestamps is for benchmarks in dev_mode only: a deployment \
         judges lateness by the broker's append time"
    )]
    ProducerTimestampsOutsideDevMode,
    #[error("privacy.provisional_share: {0}")]
    Provisional(&'static str),
    #[error(
        "batch.memory_limit_mb must be at least 24 (DataFusion needs room to sort through disk)"
    )]
    BatchMemory,
    #[error("batch.records_per_pass must be at least {MIN_RECORDS_PER_PASS}")]
    RecordsPerPass,
}

/// Fewest records a batch pass may be set to count (smaller passes only
/// add per-pass planning).
pub const MIN_RECORDS_PER_PASS: u64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub input_topic: String,
    pub output_topic: String,
    /// Where the measurements behind each release go, unclamped
    /// (`hushmap.estimates = measured`), in the release's own transaction;
    /// empty (the default): not published. The demo and the Kubernetes
    /// manifests use `hushmap.releases.measured.v1`.
    pub measurements_topic: String,
    /// Where provisional counts within each open window go, when
    /// `privacy.provisional_share` is above 0: one message per sub-window,
    /// each in its own transaction (`hushmap.releases.provisional.v1`).
    pub provisional_topic: String,
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
    /// Reads an input topic whose records carry their producer's
    /// timestamps (`CreateTime`) instead of refusing it. For benchmarks
    /// that replay a recorded backlog stamped in past windows, and nothing
    /// else: only in `dev_mode` (a deployment's aggregator refuses the
    /// setting), since a producer's stamps let any writer to the topic
    /// close windows early ([`require_broker_timestamps`]).
    ///
    /// [`require_broker_timestamps`]: crate::resume::require_broker_timestamps
    pub trust_producer_timestamps: bool,
}

impl KafkaSettings {
    /// The measurements a window's release came with, when this
    /// deployment publishes them (`measurements_topic` set); `None`
    /// otherwise, so they are not kept until the release is out.
    pub fn measurements_to_publish(
        &self,
        measured: Option<Box<hushmap_schema::Release>>,
    ) -> Option<hushmap_schema::Release> {
        measured
            .filter(|_| !self.measurements_topic.is_empty())
            .map(|m| *m)
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: kafka::DEFAULT_BROKERS.into(),
            input_topic: topics::SUBMISSIONS.into(),
            output_topic: topics::RELEASES.into(),
            measurements_topic: String::new(),
            provisional_topic: topics::PROVISIONAL.into(),
            group_id: "hushmap-aggregate".into(),
            transactional_id: "hushmap-aggregate-releases".into(),
            transaction_timeout_ms: 30_000,
            security: KafkaSecurity::default(),
            bounded_topic: topics::BOUNDED.into(),
            instance_id: None,
            session_timeout_ms: 10_000,
            trust_producer_timestamps: false,
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
    /// Batch mode's memory and spill space.
    pub batch: BatchSettings,
}

/// How much memory a batch run's counting may take, and where it spills.
///
/// The input is never held in memory: accepted records go to Arrow IPC
/// files in `spill_dir` as they are read, split by contributor, and
/// DataFusion bounds and counts them from there one pass of at most
/// `records_per_pass` records at a time, within `memory_limit_mb`
/// (sorting through disk when a pass's contributors do not fit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// DataFusion's memory pool for the bounding and counting plan (MiB).
    /// Past it, the plan spills; peak RSS is about this plus the process's
    /// own (tens of MiB), whatever the input's size.
    pub memory_limit_mb: u64,
    /// Records bounded and counted at once. A larger input is split by
    /// contributor into passes of about this many, counted one after the
    /// other (the counts add up: a contributor is in one pass), so the
    /// counting's memory stays that of one pass (~32 bytes a record)
    /// whatever the input's size.
    pub records_per_pass: u64,
    /// Where the run keeps its copy of the accepted records and the
    /// plan's spill files (a fresh directory inside, removed at the end).
    /// Default: the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            memory_limit_mb: 256,
            records_per_pass: 1 << 20,
            spill_dir: None,
        }
    }
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
            batch: BatchSettings::default(),
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
        WindowLength::configured(self.window_secs, self.dev_mode)?;
        RegionResolution::new(self.region_resolution)?;
        if self.batch.memory_limit_mb < 24 {
            return Err(ConfigError::BatchMemory);
        }
        if self.batch.records_per_pass < MIN_RECORDS_PER_PASS {
            return Err(ConfigError::RecordsPerPass);
        }
        let epoch = self.schedule_epoch_ms()?;
        if self.topology == Topology::Partitioned && epoch.is_none() {
            return Err(ConfigError::Epoch(
                "required with topology = \"partitioned\": every instance must start the \
                 schedule at the same window",
            ));
        }
        self.kafka.security.validate(&self.kafka.brokers)?;
        if self.kafka.trust_producer_timestamps && !self.dev_mode {
            return Err(ConfigError::ProducerTimestampsOutsideDevMode);
        }
        if self.kafka.measurements_topic == self.kafka.output_topic {
            return Err(ConfigError::MeasurementsTopic(
                "must differ from output_topic: a topic holds one kind of release",
            ));
        }
        if self.privacy.provisional_share > 0.0 {
            if self.topology == Topology::Partitioned {
                return Err(ConfigError::Provisional(
                    "provisional numbers are published by the single topology only; set it to 0 \
                     with topology = \"partitioned\"",
                ));
            }
            let topic = &self.kafka.provisional_topic;
            if topic.is_empty()
                || *topic == self.kafka.output_topic
                || *topic == self.kafka.measurements_topic
            {
                return Err(ConfigError::Provisional(
                    "needs kafka.provisional_topic, a topic of its own",
                ));
            }
        }
        if self.max_buffered_records_per_window == 0 {
            return Err(ConfigError::BufferCap);
        }
        if !self.metrics_listen.ip().is_loopback() && !self.metrics_public {
            return Err(ConfigError::PublicMetrics(self.metrics_listen));
        }
        self.privacy.check(self.region_resolution)?;
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
        let length = WindowLength::from_secs(self.window_secs)
            .ok_or(ConfigError::Window(WindowLengthError::Zero))?;
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

    /// Producer-stamped input (benchmarks' recorded backlogs) is refused
    /// unless in dev mode: a deployment judges lateness by the broker's
    /// append time, and no configuration of one can turn that off.
    #[test]
    fn producer_timestamps_are_trusted_in_dev_mode_only() {
        let mut c = AggregateConfig::default();
        assert!(!c.kafka.trust_producer_timestamps, "off by default");
        c.kafka.trust_producer_timestamps = true;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ProducerTimestampsOutsideDevMode)
        ));
        c.dev_mode = true;
        c.validate().unwrap();
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
}
