//! Aggregate configuration: serde defaults < TOML file < `HUSHMAP_AGGREGATE_*`
//! environment variables (nested keys with `__`).

use crate::ledger::Budget;
use crate::noise::{DiscreteLaplace, NoiseError};
use crate::release::ReleasePlan;
use crate::sensitivity::ContributionBounds;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{RegionError, WindowLength, topics};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration: {0}")]
    Load(#[from] Box<figment::Error>),
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
        }
    }
}

/// Privacy parameters. Defaults follow published deployments: Google's
/// COVID-19 symptom trends spent ε ≈ 1.68 per user-day; we spend ε = 1 per
/// daily window and refuse more than 1 per rolling day.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// ε spent by one window's release (risk counts + symptom counts).
    pub epsilon_per_window: f64,
    /// Share of `epsilon_per_window` given to the risk-level counts; the
    /// rest goes to the symptom counts.
    pub risk_share: f64,
    /// Records per contributor per window that count (latest kept).
    pub max_contributions_per_window: u32,
    /// Ledger budget: maximum ε per contributor over `budget_horizon_secs`.
    pub max_epsilon_per_horizon: f64,
    pub budget_horizon_secs: u64,
    /// Suppress cells whose 95% interval of the high-risk share is wider
    /// than ± this.
    pub max_ci_half_width: f64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            epsilon_per_window: 1.0,
            risk_share: 0.5,
            max_contributions_per_window: 1,
            max_epsilon_per_horizon: 1.0,
            budget_horizon_secs: 24 * 3600,
            max_ci_half_width: 0.15,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// Allows windows shorter than 15 minutes (demos, tests).
    pub dev_mode: bool,
    pub kafka: KafkaSettings,
    /// Must match ingest's.
    pub window_secs: u32,
    /// A window is released this long after it ends; later records are dropped.
    pub allowed_lateness_secs: u32,
    /// H3 resolution of released regions (ingest coarsens to the same).
    pub region_resolution: u8,
    pub privacy: PrivacyConfig,
    /// How often open windows are checked for closing.
    pub tick_ms: u64,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            dev_mode: false,
            kafka: KafkaSettings::default(),
            window_secs: WindowLength::ONE_DAY.secs(),
            allowed_lateness_secs: 600,
            region_resolution: 5,
            privacy: PrivacyConfig::default(),
            tick_ms: 500,
        }
    }
}

impl AggregateConfig {
    pub fn load(file: Option<&Path>) -> Result<AggregateConfig, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(AggregateConfig::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        let config: AggregateConfig = fig
            .merge(Env::prefixed("HUSHMAP_AGGREGATE_").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let window = WindowLength::from_secs(self.window_secs).ok_or(ConfigError::WindowZero)?;
        if !self.dev_mode && window.secs() < WindowLength::PRODUCTION_MIN.secs() {
            return Err(ConfigError::WindowTooShort {
                min: WindowLength::PRODUCTION_MIN.secs(),
                got: window.secs(),
            });
        }
        RegionResolution::new(self.region_resolution)?;
        let p = &self.privacy;
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
        if !positive(p.max_epsilon_per_horizon) {
            return Err(ConfigError::Privacy {
                field: "max_epsilon_per_horizon",
                reason: "must be positive",
            });
        }
        if !positive(p.max_ci_half_width) {
            return Err(ConfigError::Privacy {
                field: "max_ci_half_width",
                reason: "must be positive",
            });
        }
        self.release_plan()?;
        Ok(())
    }

    pub fn window_length(&self) -> WindowLength {
        WindowLength::from_secs(self.window_secs).expect("validated")
    }

    pub fn bounds(&self) -> ContributionBounds {
        ContributionBounds::new(self.privacy.max_contributions_per_window)
    }

    pub fn budget(&self) -> Budget {
        Budget {
            max_epsilon: self.privacy.max_epsilon_per_horizon,
            horizon_ms: i64::try_from(self.privacy.budget_horizon_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    /// Calibrates both mechanisms from the budget split and the sensitivities.
    pub fn release_plan(&self) -> Result<ReleasePlan, ConfigError> {
        let p = &self.privacy;
        let bounds = self.bounds();
        let risk_eps = p.epsilon_per_window * p.risk_share;
        Ok(ReleasePlan {
            risk: DiscreteLaplace::calibrate(bounds.risk_counts_l1(), risk_eps)?,
            symptoms: DiscreteLaplace::calibrate(
                bounds.symptom_counts_l1(),
                p.epsilon_per_window - risk_eps,
            )?,
            max_ci_half_width: p.max_ci_half_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_spend_the_configured_epsilon() {
        let c = AggregateConfig::default();
        c.validate().unwrap();
        let plan = c.release_plan().unwrap();
        assert!(plan.epsilon() <= c.privacy.epsilon_per_window);
        assert!(plan.epsilon() > 0.999 * c.privacy.epsilon_per_window);
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
}
