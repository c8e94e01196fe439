//! How every Hushmap Kafka client connects to the brokers.
//!
//! One [`KafkaSecurity`] section, the same in all three services (under
//! `kafka.security`), decides the protocol: `plaintext` for a broker on
//! loopback (development, tests) or `sasl_ssl`, SCRAM credentials over TLS,
//! for anything else. Plaintext to a broker that is not on loopback is
//! refused unless `allow_plaintext_remote` says it is deliberate: submissions
//! are sealed, but the releases, consumer offsets and the Kafka keys would
//! still cross the network readable, and anyone could produce.
//!
//! The password comes from `HUSHMAP_KAFKA_SASL_PASSWORD` or from a file
//! (`sasl_password_file`, e.g. a mounted Kubernetes secret), never from a
//! flag; it never prints ([`Secret`]'s `Debug`, rdkafka's sanitized
//! `ClientConfig` `Debug`).
//!
//! ```
//! use hushmap_service::kafka::{KafkaSecurity, SecurityProtocol};
//!
//! // The default: plaintext, fine for a broker on this machine...
//! let local = KafkaSecurity::default();
//! assert!(local.validate("127.0.0.1:9092").is_ok());
//! // ...refused for one elsewhere.
//! assert!(local.validate("kafka-0.kafka:9092").is_err());
//!
//! let secured = KafkaSecurity {
//!     protocol: SecurityProtocol::SaslSsl,
//!     sasl_username: Some("hushmap-ingest".into()),
//!     sasl_password: Some("correct horse battery staple".into()),
//!     ..KafkaSecurity::default()
//! };
//! let config = secured.client_config("kafka-0.kafka:9093").unwrap();
//! assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
//! assert!(!format!("{config:?}").contains("horse"));
//! ```

use crate::secrets::Secret;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where every service looks for Kafka unless told otherwise: the broker
/// `deploy/kafka/up.sh` starts.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The environment variable every service reads its Kafka password from.
pub const SASL_PASSWORD_ENV: &str = "HUSHMAP_KAFKA_SASL_PASSWORD";

/// Where in each service's configuration the password lands
/// (figment key of [`SASL_PASSWORD_ENV`]).
pub const SASL_PASSWORD_KEY: &str = "kafka.security.sasl_password";

/// Why a Kafka security section was refused. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSecurityError {
    #[error(
        "kafka.brokers names {broker}, which is not on loopback, but kafka.security.protocol \
         is plaintext: set protocol = \"sasl_ssl\" with credentials (or \
         allow_plaintext_remote = true, deliberately)"
    )]
    PlaintextRemote { broker: String },
    #[error("kafka.security.{setting} is set but protocol is plaintext, so it would be ignored")]
    IgnoredSetting { setting: &'static str },
    #[error("kafka.security.sasl_username is required with protocol sasl_ssl")]
    MissingUsername,
    #[error(
        "a Kafka password is required with protocol sasl_ssl: set {SASL_PASSWORD_ENV} or \
         kafka.security.sasl_password_file"
    )]
    MissingPassword,
    #[error("both {SASL_PASSWORD_ENV} and kafka.security.sasl_password_file are set; keep one")]
    TwoPasswords,
    #[error("reading kafka.security.sasl_password_file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kafka.security.sasl_password_file {path} holds no password")]
    EmptyPasswordFile { path: PathBuf },
    #[error("kafka.security.ca_location {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `security.protocol` of every client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication: loopback brokers only (unless allowed).
    #[default]
    Plaintext,
    /// SASL authentication inside TLS; the broker's certificate and host
    /// name are verified.
    SaslSsl,
}

/// The SASL mechanism; SCRAM only, so no password ever crosses the wire
/// (PLAIN would send it, if inside TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
}

impl SaslMechanism {
    fn as_kafka(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// How a service authenticates to Kafka and verifies the brokers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl_mechanism: SaslMechanism,
    /// The SCRAM user; one per service, so the broker's ACLs can give each
    /// only what it needs.
    pub sasl_username: Option<String>,
    /// From [`SASL_PASSWORD_ENV`] (or the TOML file); never a flag.
    #[serde(skip_serializing)]
    pub sasl_password: Option<Secret>,
    /// A file holding the password (surrounding whitespace ignored), read at
    /// every client start, so a rotated secret is picked up on restart.
    pub sasl_password_file: Option<PathBuf>,
    /// PEM bundle of the CAs that may sign the brokers' certificates;
    /// unset, the system's trust store.
    pub ca_location: Option<PathBuf>,
    /// Plaintext to brokers beyond loopback, deliberately (e.g. inside a
    /// service mesh that encrypts and authenticates for us).
    pub allow_plaintext_remote: bool,
}

impl KafkaSecurity {
    /// Checks the section against the broker list it will be used with.
    pub fn validate(&self, brokers: &str) -> Result<(), KafkaSecurityError> {
        match self.protocol {
            SecurityProtocol::Plaintext => {
                let set = [
                    ("sasl_username", self.sasl_username.is_some()),
                    ("sasl_password", self.sasl_password.is_some()),
                    ("sasl_password_file", self.sasl_password_file.is_some()),
                    ("ca_location", self.ca_location.is_some()),
                ];
                if let Some((setting, _)) = set.into_iter().find(|(_, is_set)| *is_set) {
                    return Err(KafkaSecurityError::IgnoredSetting { setting });
                }
                if !self.allow_plaintext_remote
                    && let Some(broker) = brokers
                        .split(',')
                        .map(str::trim)
                        .find(|b| !b.is_empty() && !is_loopback(b))
                {
                    return Err(KafkaSecurityError::PlaintextRemote {
                        broker: broker.to_string(),
                    });
                }
                Ok(())
            }
            SecurityProtocol::SaslSsl => {
                if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                    return Err(KafkaSecurityError::MissingUsername);
                }
                self.password()?;
                if let Some(path) = &self.ca_location {
                    std::fs::File::open(path).map_err(|source| KafkaSecurityError::CaFile {
                        path: path.clone(),
                        source,
                    })?;
                }
                Ok(())
            }
        }
    }

    /// The password, from the environment or its file.
    fn password(&self) -> Result<Secret, KafkaSecurityError> {
        match (&self.sasl_password, &self.sasl_password_file) {
            (Some(_), Some(_)) => Err(KafkaSecurityError::TwoPasswords),
            (Some(p), None) if !p.expose().is_empty() => Ok(p.clone()),
            (Some(_), None) | (None, None) => Err(KafkaSecurityError::MissingPassword),
            (None, Some(path)) => read_password_file(path),
        }
    }

    /// A client configuration for `brokers` with these settings; each
    /// service adds its own (group, transactions, timeouts) on top.
    ///
    /// Fails as rdkafka does for a bad setting (`ClientCreation`), with our
    /// message, if the section is invalid.
    pub fn client_config(&self, brokers: &str) -> Result<ClientConfig, KafkaError> {
        self.validate(brokers)
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        match self.protocol {
            SecurityProtocol::Plaintext => {
                config.set("security.protocol", "PLAINTEXT");
            }
            SecurityProtocol::SaslSsl => {
                let password = self
                    .password()
                    .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
                config
                    .set("security.protocol", "SASL_SSL")
                    .set("sasl.mechanisms", self.sasl_mechanism.as_kafka())
                    .set(
                        "sasl.username",
                        self.sasl_username.as_deref().unwrap_or_default(),
                    )
                    .set("sasl.password", password.expose())
                    // Both are librdkafka's defaults; stated so that no
                    // later default change can turn verification off.
                    .set("enable.ssl.certificate.verification", "true")
                    .set("ssl.endpoint.identification.algorithm", "https");
                if let Some(ca) = &self.ca_location {
                    config.set("ssl.ca.location", ca.display().to_string());
                }
            }
        }
        Ok(config)
    }
}

fn read_password_file(path: &Path) -> Result<Secret, KafkaSecurityError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KafkaSecurityError::PasswordFile {
            path: path.to_path_buf(),
            source,
        })?;
    let password = text.trim();
    if password.is_empty() {
        return Err(KafkaSecurityError::EmptyPasswordFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(password))
}

/// Whether a `host:port` entry of `bootstrap.servers` is on loopback.
fn is_loopback(broker: &str) -> bool {
    let broker = broker.rsplit("://").next().unwrap_or(broker);
    let host = match broker.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => broker,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(password: Option<&str>, file: Option<PathBuf>) -> KafkaSecurity {
        KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_username: Some("hushmap-test".into()),
            sasl_password: password.map(Secret::from),
            sasl_password_file: file,
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn loopback_brokers_are_recognised() {
        for b in [
            "127.0.0.1:9092",
            "localhost:9092",
            "[::1]:9092",
            "127.0.0.2:1",
            "PLAINTEXT://localhost:9092",
        ] {
            assert!(is_loopback(b), "{b}");
        }
        for b in [
            "10.0.0.1:9092",
            "kafka:9092",
            "[2001:db8::1]:9092",
            "localhost.example.com:9092",
        ] {
            assert!(!is_loopback(b), "{b}");
        }
    }

    #[test]
    fn plaintext_beyond_loopback_needs_deliberate_consent() {
        let plain = KafkaSecurity::default();
        assert!(plain.validate("127.0.0.1:9092,localhost:9093").is_ok());
        let err = plain.validate("127.0.0.1:9092, kafka-1:9092").unwrap_err();
        assert!(
            matches!(&err, KafkaSecurityError::PlaintextRemote { broker } if broker == "kafka-1:9092")
        );
        let allowed = KafkaSecurity {
            allow_plaintext_remote: true,
            ..KafkaSecurity::default()
        };
        assert!(allowed.validate("kafka-1:9092").is_ok());
    }

    #[test]
    fn credentials_with_plaintext_are_refused_not_ignored() {
        let plain = KafkaSecurity {
            sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        };
        assert!(matches!(
            plain.validate("127.0.0.1:9092"),
            Err(KafkaSecurityError::IgnoredSetting {
                setting: "sasl_username"
            })
        ));
    }

    #[test]
    fn sasl_needs_a_user_and_exactly_one_password() {
        assert!(sasl(Some("pw"), None).validate("kafka:9093").is_ok());
        assert!(matches!(
            sasl(None, None).validate("kafka:9093"),
            Err(KafkaSecurityError::MissingPassword)
        ));
        assert!(matches!(
            sasl(Some(""), None).validate("kafka:9093"),
            Err(KafkaSecurityError::MissingPassword)
        ));
        let dir = std::env::temp_dir().join(format!("hushmap-kafka-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        assert!(matches!(
            sasl(Some("pw"), Some(file.clone())).validate("kafka:9093"),
            Err(KafkaSecurityError::TwoPasswords)
        ));
        let from_file = sasl(None, Some(file.clone()));
        assert_eq!(from_file.password().unwrap().expose(), "from-a-file");
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            from_file.validate("kafka:9093"),
            Err(KafkaSecurityError::EmptyPasswordFile { .. })
        ));
        assert!(matches!(
            sasl(None, Some(dir.join("missing"))).validate("kafka:9093"),
            Err(KafkaSecurityError::PasswordFile { .. })
        ));
        let mut no_user = sasl(Some("pw"), None);
        no_user.sasl_username = None;
        assert!(matches!(
            no_user.validate("kafka:9093"),
            Err(KafkaSecurityError::MissingUsername)
        ));
        let mut bad_ca = sasl(Some("pw"), None);
        bad_ca.ca_location = Some(dir.join("no-ca.pem"));
        assert!(matches!(
            bad_ca.validate("kafka:9093"),
            Err(KafkaSecurityError::CaFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_never_prints() {
        let s = sasl(Some("hunter2-very-secret"), None);
        assert!(!format!("{s:?}").contains("hunter2"));
        let config = s.client_config("kafka:9093").unwrap();
        assert_eq!(config.get("sasl.password"), Some("hunter2-very-secret"));
        assert!(!format!("{config:?}").contains("hunter2"));
        // Serialized (e.g. an effective-config dump) it is left out.
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        let err = sasl(None, None).client_config("kafka:9093").unwrap_err();
        assert!(err.to_string().contains(SASL_PASSWORD_ENV));
    }

    #[test]
    fn mechanism_names_are_kafkas() {
        let s: KafkaSecurity =
            serde_json::from_str(r#"{"protocol":"sasl_ssl","sasl_mechanism":"SCRAM-SHA-256"}"#)
                .unwrap();
        assert_eq!(s.sasl_mechanism, SaslMechanism::ScramSha256);
        assert!(serde_json::from_str::<KafkaSecurity>(r#"{"sasl_mechanism":"PLAIN"}"#).is_err());
    }
}
