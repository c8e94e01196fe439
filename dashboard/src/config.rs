//! Dashboard configuration: serde defaults < TOML file <
//! `HUSHMAP_DASHBOARD_*` environment variables (nested keys with `__`).
//!
//! Secure by default: both listeners bind loopback, and a bind beyond
//! loopback refuses to start unless access tokens are configured. The
//! Kafka password comes from `HUSHMAP_KAFKA_SASL_PASSWORD` or a file only.

use crate::alerts::{AlertSettings, AlertSettingsError};
use crate::auth::{AccessTokens, AuthError, TokenEntry};
use crate::sql_limits::SqlLimits;
use hushmap_schema::topics;
use hushmap_service::config::{LoadError, load_layered};
use hushmap_service::http::{HttpLimits, HttpLimitsError};
use hushmap_service::kafka::{self, KafkaSecurity, KafkaSecurityError};
use hushmap_service::tls::{ServerTls, TlsError, TlsSettings};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "refusing to bind {0}: no access tokens are configured (auth.tokens or auth.tokens_file), so the dashboard serves loopback only"
    )]
    PublicBind(SocketAddr),
    #[error("access tokens: {0}")]
    Tokens(#[from] AuthError),
    #[error(transparent)]
    KafkaSecurity(#[from] KafkaSecurityError),
    #[error(transparent)]
    Http(#[from] HttpLimitsError),
    #[error(
        "sql.query_timeout_ms ({query}) must be below http.request_timeout_ms ({request}) and \
         http.idle_timeout_ms: a query would be cut off by the listener instead of ending with \
         its own error"
    )]
    QueryPastRequestDeadline { query: u64, request: u64 },
    #[error(
        "sql.query_timeout_ms, sql.max_concurrent_per_token and sql.workers must be positive, \
         and sql.worker_memory_mb at least 160"
    )]
    SqlLimits,
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Alerts(#[from] AlertSettingsError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub releases_topic: String,
    /// The aggregator's measurements topic (`kafka.measurements_topic`
    /// there), read into a store of its own so that exports and Flight can
    /// serve the unclamped measurements (`estimates=measured`); empty (the
    /// default): not read.
    pub measurements_topic: String,
    /// The aggregator's provisional topic (`kafka.provisional_topic`
    /// there): the latest provisional numbers of the open window are
    /// shown, marked, until its final release replaces them; empty (the
    /// default): not read.
    pub provisional_topic: String,
    /// TLS and SASL towards the brokers.
    pub security: KafkaSecurity,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: kafka::DEFAULT_BROKERS.into(),
            releases_topic: topics::RELEASES.into(),
            measurements_topic: String::new(),
            provisional_topic: String::new(),
            security: KafkaSecurity::default(),
        }
    }
}

/// Who may read what. Tokens are stored as SHA-256 hashes only
/// (`hushmap-dashboard hash-token` prints the line for a new token).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Hashed tokens with their roles.
    pub tokens: Vec<TokenEntry>,
    /// A file of hashed tokens, one per line: `<sha256 hex> <role>[,<role>] [name]`.
    pub tokens_file: Option<PathBuf>,
    /// Mark the login cookie `Secure` (set it when a TLS proxy fronts the
    /// dashboard; browsers drop Secure cookies over plain HTTP). Always on
    /// when the dashboard terminates TLS itself (`tls`).
    pub cookie_secure: bool,
    /// The proxies in front of the dashboard (the ingress controllers'
    /// network) whose `X-Forwarded-For` names the client, as ingest's
    /// `rate_limit.trusted_proxies`. Failed tokens are throttled per
    /// client: without these, every client behind the ingress is one
    /// client, and five wrong tokens a minute lock out every analyst. Also
    /// added to `http.shared_peers`. With TLS passed through (not
    /// re-encrypted) the ingress adds no header, and the client is unknown.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// HTTP: analyst page, JSON API, exports.
    pub listen: SocketAddr,
    /// Arrow Flight for researchers.
    pub flight_listen: SocketAddr,
    /// Where the release store keeps its Parquet files (noisy data only).
    pub data_dir: PathBuf,
    /// How many windows' rows are held in memory, most recently used
    /// first (at least 1). Every window's metadata is always held; other
    /// rows are read from their file when asked for. A national daily
    /// release is tens of MB in memory: this, not the history's length,
    /// sets the dashboard's size.
    pub cached_windows: usize,
    pub kafka: KafkaSettings,
    pub auth: AuthSettings,
    /// Header-read and idle timeouts and the connection cap, for the HTTP
    /// and the Flight listener each.
    pub http: HttpLimits,
    /// What a researcher's Flight SQL query may cost.
    pub sql: SqlLimits,
    /// TLS on both listeners (page and Flight), from PEM files re-read on
    /// change; off when neither file is set.
    pub tls: TlsSettings,
    /// Where risk is rising: the baseline, the false-discovery rate and
    /// the webhook ([`alerts`](crate::alerts)).
    pub alerts: AlertSettings,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            flight_listen: SocketAddr::from(([127, 0, 0, 1], 8815)),
            data_dir: PathBuf::from("data/dashboard"),
            cached_windows: crate::store::DEFAULT_CACHED_WINDOWS,
            kafka: KafkaSettings::default(),
            auth: AuthSettings::default(),
            http: HttpLimits::default(),
            sql: SqlLimits::default(),
            tls: TlsSettings::default(),
            alerts: AlertSettings::default(),
        }
    }
}

impl DashboardConfig {
    pub fn load(file: Option<&Path>) -> Result<DashboardConfig, ConfigError> {
        // Each secret from its variable or the file its `_FILE` names.
        let config: DashboardConfig = load_layered(
            file,
            "HUSHMAP_DASHBOARD_",
            &[(kafka::SASL_PASSWORD_ENV, kafka::SASL_PASSWORD_KEY)],
        )?;
        config.validate()?;
        Ok(config)
    }

    /// The configured tokens (inline and from the file), checked.
    pub fn access_tokens(&self) -> Result<AccessTokens, ConfigError> {
        Ok(AccessTokens::load(
            &self.auth.tokens,
            self.auth.tokens_file.as_deref(),
        )?)
    }

    /// Refuses a bind beyond loopback when no tokens are configured.
    pub fn validate(&self) -> Result<AccessTokens, ConfigError> {
        self.kafka.security.validate(&self.kafka.brokers)?;
        self.http.validate()?;
        if self.sql.query_timeout_ms == 0
            || self.sql.max_concurrent_per_token == 0
            || self.sql.workers == 0
            || self.sql.worker_memory_mb < crate::sql_worker::MIN_WORKER_MEMORY_MB
        {
            return Err(ConfigError::SqlLimits);
        }
        // A query must end by its own deadline, with its own error, before
        // the listener's request deadline answers 408.
        if self.sql.query_timeout_ms >= self.http.request_timeout_ms
            || self.sql.query_timeout_ms >= self.http.idle_timeout_ms
        {
            return Err(ConfigError::QueryPastRequestDeadline {
                query: self.sql.query_timeout_ms,
                request: self.http.request_timeout_ms,
            });
        }
        // Loaded, not only named: a missing file, a key that does not match
        // its certificate, is refused before anything starts.
        ServerTls::load(&self.tls)?;
        self.alerts.validate()?;
        let tokens = self.access_tokens()?;
        if tokens.is_empty() {
            for addr in [self.listen, self.flight_listen] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::PublicBind(addr));
                }
            }
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn public_bind_without_tokens_is_refused() {
        assert!(DashboardConfig::default().validate().is_ok());
        for (listen, flight) in [
            ("0.0.0.0:8081", "127.0.0.1:8815"),
            ("127.0.0.1:8081", "0.0.0.0:8815"),
        ] {
            let c = DashboardConfig {
                listen: listen.parse().unwrap(),
                flight_listen: flight.parse().unwrap(),
                ..DashboardConfig::default()
            };
            assert!(matches!(c.validate(), Err(ConfigError::PublicBind(_))));
        }
    }

    #[test]
    fn public_bind_with_tokens_starts() {
        let mut c = DashboardConfig {
            listen: "0.0.0.0:8081".parse().unwrap(),
            ..DashboardConfig::default()
        };
        c.auth.tokens.push(TokenEntry::for_token(
            "a-long-random-token",
            vec![Role::Analyst],
            "ops",
        ));
        assert!(c.validate().is_ok());
    }
}
