//! Dashboard configuration: serde defaults < TOML file <
//! `HUSHMAP_DASHBOARD_*` environment variables (nested keys with `__`).

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use hushmap_schema::topics;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error(
        "refusing to bind {0}: the dashboard has no authentication configured, so it serves loopback only"
    )]
    PublicBind(SocketAddr),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub releases_topic: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            releases_topic: topics::RELEASES.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    pub kafka: KafkaSettings,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            kafka: KafkaSettings::default(),
        }
    }
}

impl DashboardConfig {
    pub fn load(file: Option<&Path>) -> Result<DashboardConfig, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(DashboardConfig::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        let config: DashboardConfig = fig
            .merge(Env::prefixed("HUSHMAP_DASHBOARD_").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::PublicBind(self.listen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_bind_without_auth_is_refused() {
        assert!(DashboardConfig::default().validate().is_ok());
        let c = DashboardConfig {
            listen: "0.0.0.0:8081".parse().unwrap(),
            ..DashboardConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::PublicBind(_))));
    }
}
