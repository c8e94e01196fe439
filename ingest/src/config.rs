//! Ingest configuration: serde defaults, overridden by an optional TOML file,
//! overridden by `HUSHMAP_INGEST_*` environment variables (nested keys with
//! `__`, e.g. `HUSHMAP_INGEST_KAFKA__BROKERS`). The secrets (contributor
//! secret, payload keys) come only from `HUSHMAP_CONTRIBUTOR_SECRET` /
//! `HUSHMAP_PAYLOAD_KEYS` or the file, never from a flag; so does the Kafka
//! password (`HUSHMAP_KAFKA_SASL_PASSWORD`, see [`KafkaSecurity`]).

use hushmap_schema::region::RegionResolution;
use hushmap_schema::window::WindowLengthError;
use hushmap_schema::{PayloadPublicKey, RegionError, WindowLength, topics};
use hushmap_service::config::{LoadError, load_layered};
use hushmap_service::kafka::{self, KafkaSecurity, KafkaSecurityError};
use hushmap_service::secrets::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("region_resolution: {0}")]
    Resolution(#[from] RegionError),
    #[error(transparent)]
    Window(#[from] WindowLengthError),
    #[error(
        "refusing to bind {0}: ingest binds loopback unless `allow_public_bind = true` \
         (HUSHMAP_INGEST_ALLOW_PUBLIC_BIND=true) is set deliberately"
    )]
    PublicBind(SocketAddr),
    #[error(
        "refusing dev_mode on {0}: dev mode relaxes production checks (short windows, a \
         per-process contributor secret, no proof of work) and binds loopback only"
    )]
    DevModeOnPublicBind(SocketAddr),
    #[error("HUSHMAP_CONTRIBUTOR_SECRET (or contributor_secret) is required outside dev mode")]
    MissingSecret,
    #[error(
        "HUSHMAP_PAYLOAD_PUBLIC_KEY (or payload_public_key) is required: records are sealed to \
         the aggregator's public key; print it with `hushmap-aggregate payload-public-key`"
    )]
    MissingPayloadKeys,
    #[error(
        "HUSHMAP_PAYLOAD_KEYS (or payload_keys) is set for ingest: those are the aggregator's \
         private keys, and an ingest holding them could read the whole submissions topic. \
         Give ingest only HUSHMAP_PAYLOAD_PUBLIC_KEY (`hushmap-aggregate payload-public-key`)"
    )]
    PrivateKeyRefused,
    #[error("contributor secret must be at least 32 bytes")]
    ShortSecret,
    #[error(transparent)]
    KafkaSecurity(#[from] KafkaSecurityError),
    #[error("max_in_flight must be positive")]
    NoInFlight,
    #[error(
        "request_timeout_ms ({request}) must exceed kafka.produce_timeout_ms ({produce}), \
         so a client always gets the broker's answer"
    )]
    Timeouts { request: u64, produce: u64 },
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityConfigError),
    #[error("tls: {0}")]
    Tls(#[from] hushmap_service::tls::TlsError),
    #[error("HUSHMAP_CONTRIBUTOR_SECRET: {0}")]
    Keyring(#[from] hushmap_submission::contributor::ContributorKeyringError),
    #[error(
        "identity.sign_in_url was replaced by identity.authorization_endpoint and \
         identity.token_endpoint: the self-check page now signs in with an authorization \
         code flow with PKCE (a token in a link no longer signs anyone in)"
    )]
    SignInUrlReplaced,
    #[error(
        "identity.{0} must be an https:// URL (http:// only to a loopback host), \
         given together with the other endpoint, ID token keys and identity.audience"
    )]
    SignInEndpoint(&'static str),
    #[error(
        "rate_limit.trust_forwarded_for was replaced by rate_limit.trusted_proxies: \
         list the proxies' networks (CIDR) whose X-Forwarded-For is believed"
    )]
    TrustForwardedFor,
    #[error("rate_limit.ipv6_prefix_len must be 1 to 128 (got {0})")]
    Ipv6Prefix(u8),
    #[error(transparent)]
    Http(#[from] hushmap_service::http::HttpLimitsError),
    #[error("proof_of_work.difficulty_bits must be at most 32 (got {0})")]
    ProofDifficulty(u8),
    #[error("proof_of_work.challenge_lifetime_secs must be positive")]
    ProofLifetime,
    #[error(
        "refusing to serve metrics on {0}: the admin listener binds loopback unless \
         `admin_public = true`"
    )]
    PublicAdmin(SocketAddr),
    #[error(
        "allowed_lateness_secs ({lateness_ms} ms) must exceed kafka.produce_timeout_ms \
         ({produce_ms} ms) by at least {LATENESS_MARGIN_MS} ms: a record is given its window when \
         it is sent and may reach the broker that much later, and the aggregator counts it only \
         if the broker appended it before the window's deadline"
    )]
    LatenessBelowProduceTimeout { lateness_ms: i64, produce_ms: u64 },
}

/// What `allowed_lateness_secs` must leave beyond `produce_timeout_ms`:
/// librdkafka notices a timed-out record up to about a second late (see
/// the producer's `reconnect.backoff.max.ms`), and one more for the clocks.
pub const LATENESS_MARGIN_MS: u64 = 2_000;

/// Kafka connection and topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// How long a submission may wait for the broker's acknowledgement before
    /// the client gets a 503.
    pub produce_timeout_ms: u64,
    /// `linger.ms`: how long the producer waits to fill a batch. Every
    /// millisecond here is a millisecond of each client's wait for its 202;
    /// under load batches fill anyway while earlier requests are in flight.
    pub linger_ms: u32,
    /// TLS and SASL towards the brokers.
    pub security: KafkaSecurity,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: kafka::DEFAULT_BROKERS.into(),
            topic: topics::SUBMISSIONS.into(),
            produce_timeout_ms: 5_000,
            linger_ms: 0,
            security: KafkaSecurity::default(),
        }
    }
}

/// Per-client rate limiting (token bucket on a keyed hash of the address).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained submissions per client per minute; 0 disables limiting.
    pub per_minute: u32,
    /// Submissions a client may send at once before the rate applies.
    pub burst: u32,
    /// Networks of the proxies in front of ingest (CIDR, e.g.
    /// `["10.0.0.0/8"]`). `X-Forwarded-For` is read only from a peer in
    /// one of them, and the client is the right-most address in it that is
    /// not (see `hushmap_service::client_address`). Empty: the socket peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// IPv6 clients are limited per network of this many bits (a
    /// subscriber usually holds a whole /64).
    pub ipv6_prefix_len: u8,
    /// Replaced by `trusted_proxies`; refused if set, so a deployment that
    /// relied on it learns so at start-up rather than trusting nobody.
    #[serde(skip_serializing)]
    pub trust_forwarded_for: Option<bool>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            per_minute: 30,
            burst: 10,
            trusted_proxies: Vec::new(),
            ipv6_prefix_len: 64,
            trust_forwarded_for: None,
        }
    }
}

/// The proof of work anonymous submissions carry
/// ([`crate::proof_of_work`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProofOfWorkSettings {
    /// Leading zero bits a proof needs (expected work 2^bits SHA-256
    /// hashes; 15, about 33,000, takes this page well under a second on a
    /// phone: 0.07 s at 434,000 hashes/s on a server core). 0 turns
    /// it off. Default: 15, or 0 in dev mode.
    pub difficulty_bits: Option<u8>,
    /// How long a challenge may be redeemed.
    pub challenge_lifetime_secs: u64,
}

impl Default for ProofOfWorkSettings {
    fn default() -> Self {
        ProofOfWorkSettings {
            difficulty_bits: None,
            challenge_lifetime_secs: 120,
        }
    }
}

/// Everything ingest can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address to serve on. Loopback unless `allow_public_bind`.
    pub listen: SocketAddr,
    /// Where `/metrics` is served: never on the public listener (port 0:
    /// any free port).
    pub admin_listen: SocketAddr,
    /// Deliberately serve the admin listener beyond loopback.
    pub admin_public: bool,
    /// Deliberately serve beyond loopback (ingest is a public endpoint).
    pub allow_public_bind: bool,
    /// Relaxes production checks for demos and tests: windows shorter than
    /// 15 minutes, a per-process random contributor secret.
    pub dev_mode: bool,
    pub kafka: KafkaSettings,
    /// H3 resolution regions are coarsened to (at most 6).
    pub region_resolution: u8,
    /// Aggregation window length; must match the aggregator's.
    pub window_secs: u32,
    /// How long after a window ends records for it are still accepted.
    pub allowed_lateness_secs: u32,
    /// Key for contributor keys (HMAC of a verified subject or of an
    /// anonymous browser's token id) and of contributor tokens' MACs.
    #[serde(skip_serializing)]
    pub contributor_secret: Option<Secret>,
    /// The aggregator's public key records are sealed to (`ID:HEX64`, from
    /// `hushmap-aggregate payload-public-key`). Not secret: it seals, it
    /// cannot open.
    #[serde(skip_serializing)]
    pub payload_public_key: Option<PayloadPublicKey>,
    /// Present only to refuse it: the aggregator's private keys must never
    /// be in ingest's configuration (see [`ConfigError::PrivateKeyRefused`]).
    #[serde(skip_serializing)]
    pub payload_keys: Option<RefusedSecret>,
    /// Request body limit, bytes.
    pub max_body_bytes: usize,
    /// Submissions waiting for Kafka at once; beyond it clients get 503.
    pub max_in_flight: usize,
    /// Whole-request deadline (reading the body included).
    pub request_timeout_ms: u64,
    pub rate_limit: RateLimitSettings,
    /// Header-read and idle timeouts and the connection cap of the public
    /// listener.
    pub http: hushmap_service::http::HttpLimits,
    /// Who submits: ID tokens from the identity provider, contributor
    /// tokens for anonymous browsers.
    pub identity: crate::identity::IdentitySettings,
    pub proof_of_work: ProofOfWorkSettings,
    /// TLS on the public listener, terminated by ingest itself, so that ID
    /// tokens and answers never cross the cluster network in clear behind
    /// an ingress that re-encrypts (none set: plain, for loopback or a
    /// sidecar proxy). Re-read when the files change.
    pub tls: hushmap_service::tls::TlsSettings,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            admin_public: false,
            allow_public_bind: false,
            dev_mode: false,
            kafka: KafkaSettings::default(),
            region_resolution: 5,
            window_secs: WindowLength::ONE_DAY.secs(),
            allowed_lateness_secs: 600,
            contributor_secret: None,
            payload_public_key: None,
            payload_keys: None,
            max_body_bytes: 16 * 1024,
            max_in_flight: 4096,
            request_timeout_ms: 15_000,
            rate_limit: RateLimitSettings::default(),
            http: hushmap_service::http::HttpLimits::default(),
            identity: crate::identity::IdentitySettings::default(),
            proof_of_work: ProofOfWorkSettings::default(),
            tls: hushmap_service::tls::TlsSettings::default(),
        }
    }
}

/// A setting that must not be given to ingest (the aggregator's private
/// payload keys): read as anything, so the configuration can refuse it by
/// name instead of failing on its format, and never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedSecret;

impl<'de> Deserialize<'de> for RefusedSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(RefusedSecret)
    }
}

impl IngestConfig {
    /// Loads defaults < `file` < environment.
    pub fn load(file: Option<&Path>) -> Result<IngestConfig, ConfigError> {
        // Each secret from its variable or the file its `_FILE` names.
        let config: IngestConfig = load_layered(
            file,
            "HUSHMAP_INGEST_",
            &[
                ("HUSHMAP_CONTRIBUTOR_SECRET", "contributor_secret"),
                ("HUSHMAP_PAYLOAD_PUBLIC_KEY", "payload_public_key"),
                // Read only to be refused, from the variable or its file.
                ("HUSHMAP_PAYLOAD_KEYS", "payload_keys"),
                (kafka::SASL_PASSWORD_ENV, kafka::SASL_PASSWORD_KEY),
            ],
        )?;
        config.validate()?;
        Ok(config)
    }

    /// The proof-of-work difficulty in force: as configured, else 15 (0 in
    /// dev mode).
    pub fn proof_of_work_bits(&self) -> u8 {
        self.proof_of_work
            .difficulty_bits
            .unwrap_or(if self.dev_mode { 0 } else { 15 })
    }

    /// Checks the invariants the service relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        RegionResolution::new(self.region_resolution)?;
        WindowLength::configured(self.window_secs, self.dev_mode)?;
        // Dev mode is for one machine: never reachable from others, even
        // with allow_public_bind (a demo left on a public address would
        // take anonymous submissions with no price at all).
        for addr in [self.listen, self.admin_listen] {
            if self.dev_mode && !addr.ip().is_loopback() {
                return Err(ConfigError::DevModeOnPublicBind(addr));
            }
        }
        if !self.listen.ip().is_loopback() && !self.allow_public_bind {
            return Err(ConfigError::PublicBind(self.listen));
        }
        if !self.admin_listen.ip().is_loopback() && !self.admin_public {
            return Err(ConfigError::PublicAdmin(self.admin_listen));
        }
        if self.identity.sign_in_url.is_some() {
            return Err(ConfigError::SignInUrlReplaced);
        }
        let id = &self.identity;
        for (name, url, other) in [
            (
                "authorization_endpoint",
                &id.authorization_endpoint,
                &id.token_endpoint,
            ),
            (
                "token_endpoint",
                &id.token_endpoint,
                &id.authorization_endpoint,
            ),
        ] {
            if let Some(url) = url
                && (!is_sign_in_endpoint(url)
                    || other.is_none()
                    || id.audience.is_none()
                    || !id.accepts_id_tokens())
            {
                return Err(ConfigError::SignInEndpoint(name));
            }
        }
        // Loads the keys: a broken key file is refused at start, not at
        // the first signed-in submission.
        crate::identity::IdTokenVerifier::new(&self.identity)?;
        self.kafka.security.validate(&self.kafka.brokers)?;
        if self.max_in_flight == 0 {
            return Err(ConfigError::NoInFlight);
        }
        if self.rate_limit.trust_forwarded_for.is_some() {
            return Err(ConfigError::TrustForwardedFor);
        }
        if !(1..=128).contains(&self.rate_limit.ipv6_prefix_len) {
            return Err(ConfigError::Ipv6Prefix(self.rate_limit.ipv6_prefix_len));
        }
        self.http.validate()?;
        if self.proof_of_work_bits() > 32 {
            return Err(ConfigError::ProofDifficulty(self.proof_of_work_bits()));
        }
        if self.proof_of_work.challenge_lifetime_secs == 0 {
            return Err(ConfigError::ProofLifetime);
        }
        let lateness_ms = i64::from(self.allowed_lateness_secs) * 1000;
        let produce_ms = self.kafka.produce_timeout_ms;
        if lateness_ms < (produce_ms + LATENESS_MARGIN_MS) as i64 {
            // Demos and tests use windows of seconds; there it may cost a
            // late record, never privacy.
            if !self.dev_mode {
                return Err(ConfigError::LatenessBelowProduceTimeout {
                    lateness_ms,
                    produce_ms,
                });
            }
            tracing::warn!(
                lateness_ms,
                produce_ms,
                "allowed lateness is shorter than the produce timeout plus margin: \
                 a slow acknowledgement may leave a record out of its window"
            );
        }
        if self.request_timeout_ms <= self.kafka.produce_timeout_ms {
            return Err(ConfigError::Timeouts {
                request: self.request_timeout_ms,
                produce: self.kafka.produce_timeout_ms,
            });
        }
        match &self.contributor_secret {
            None if !self.dev_mode => return Err(ConfigError::MissingSecret),
            Some(s) => {
                hushmap_submission::contributor::ContributorKeys::parse(s.expose()).map_err(
                    |e| match e {
                        hushmap_submission::contributor::ContributorKeyringError::ShortSecret(
                            id,
                        ) if id == "0" => ConfigError::ShortSecret,
                        e => ConfigError::Keyring(e),
                    },
                )?;
            }
            _ => {}
        }
        if self.payload_keys.is_some() {
            return Err(ConfigError::PrivateKeyRefused);
        }
        // Loaded, not only named: a missing file or a key that does not
        // match its certificate is refused before anything starts.
        hushmap_service::tls::ServerTls::load(&self.tls)?;
        if self.payload_public_key.is_none() {
            return Err(ConfigError::MissingPayloadKeys);
        }
        Ok(())
    }

    pub fn resolution(&self) -> RegionResolution {
        RegionResolution::new(self.region_resolution).expect("validated")
    }

    pub fn window_length(&self) -> WindowLength {
        WindowLength::from_secs(self.window_secs).expect("validated")
    }
}

/// An identity provider endpoint the page may be sent to: https, or http
/// to this machine (the development provider), with a host and no
/// character that could leave the `<meta>` or the CSP it is written into.
fn is_sign_in_endpoint(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let clean = url.bytes().all(|b| {
        b.is_ascii_graphic()
            && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b';' | b',' | b'\\' | b'*')
    });
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    clean
        && !host.is_empty()
        && !authority.contains('@')
        && (scheme == "https" || (scheme == "http" && loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Option<PayloadPublicKey> {
        let private: hushmap_schema::PayloadKeyring =
            hushmap_schema::PayloadKeyring::generate_entry(1)
                .parse()
                .unwrap();
        Some(private.public_key())
    }

    fn dev() -> IngestConfig {
        IngestConfig {
            dev_mode: true,
            payload_public_key: keys(),
            ..IngestConfig::default()
        }
    }

    #[test]
    fn defaults_are_secure() {
        let c = IngestConfig::default();
        assert!(c.listen.ip().is_loopback());
        assert!(matches!(c.validate(), Err(ConfigError::MissingSecret)));
        assert!(dev().validate().is_ok());
    }

    #[test]
    fn refuses_public_bind_without_flag() {
        let c = IngestConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..dev()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DevModeOnPublicBind(_))
        ));
        let c = IngestConfig {
            dev_mode: false,
            contributor_secret: Some(Secret::new("x".repeat(32))),
            ..c
        };
        assert!(matches!(c.validate(), Err(ConfigError::PublicBind(_))));
        let c = IngestConfig {
            allow_public_bind: true,
            ..c
        };
        assert!(c.validate().is_ok());
        // Dev mode stays on loopback, whatever else is allowed.
        let c = IngestConfig {
            dev_mode: true,
            ..c
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DevModeOnPublicBind(_))
        ));
    }

    #[test]
    fn lateness_must_outlast_a_produce() {
        let production = IngestConfig {
            contributor_secret: Some(Secret::new("x".repeat(32))),
            payload_public_key: keys(),
            allowed_lateness_secs: 6,
            ..IngestConfig::default()
        };
        assert!(matches!(
            production.validate(),
            Err(ConfigError::LatenessBelowProduceTimeout {
                lateness_ms: 6_000,
                produce_ms: 5_000
            })
        ));
        let ok = IngestConfig {
            allowed_lateness_secs: 7,
            ..production.clone()
        };
        assert!(ok.validate().is_ok());
        // Dev mode (windows of seconds) only warns.
        let dev = IngestConfig {
            allowed_lateness_secs: 2,
            ..dev()
        };
        assert!(dev.validate().is_ok());
    }

    #[test]
    fn refuses_fine_resolution_and_short_windows() {
        assert!(matches!(
            IngestConfig {
                region_resolution: 7,
                ..dev()
            }
            .validate(),
            Err(ConfigError::Resolution(_))
        ));
        let c = IngestConfig {
            window_secs: 10,
            contributor_secret: Some(Secret::new("x".repeat(32))),
            payload_public_key: keys(),
            ..IngestConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Window(WindowLengthError::TooShort { .. }))
        ));
        assert!(
            IngestConfig {
                window_secs: 10,
                ..dev()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn secret_never_prints() {
        let c = IngestConfig {
            contributor_secret: Some(Secret::new("super-secret-value-0123456789abcdef")),
            ..dev()
        };
        let text = format!("{c:?}");
        assert!(!text.contains("super-secret"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("super-secret"));
    }

    #[test]
    fn payload_keys_required_even_in_dev_mode() {
        let c = IngestConfig {
            payload_public_key: None,
            ..dev()
        };
        assert!(matches!(c.validate(), Err(ConfigError::MissingPayloadKeys)));
    }

    #[test]
    fn a_private_payload_key_is_refused_wherever_it_comes_from() {
        // From the configuration file, as the aggregator's keyring would be
        // written: refused even beside a valid public key.
        let dir =
            std::env::temp_dir().join(format!("hushmap-ingest-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ingest.toml");
        std::fs::write(
            &file,
            format!(
                "dev_mode = true\npayload_public_key = \"{}\"\npayload_keys = \"{}\"\n",
                keys().unwrap(),
                hushmap_schema::PayloadKeyring::generate_entry(1)
            ),
        )
        .unwrap();
        let err = IngestConfig::load(Some(&file)).unwrap_err();
        assert!(matches!(err, ConfigError::PrivateKeyRefused), "{err}");
        // The message names the remedy, never the key.
        assert!(err.to_string().contains("HUSHMAP_PAYLOAD_PUBLIC_KEY"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sign_in_endpoints_are_https_or_loopback_and_complete() {
        assert!(is_sign_in_endpoint("https://id.example.gov.in/authorize"));
        assert!(is_sign_in_endpoint("http://127.0.0.1:8090/token"));
        assert!(is_sign_in_endpoint("http://[::1]/token"));
        for bad in [
            "http://id.example/authorize",
            "http://127.0.0.1@evil.example/authorize",
            "javascript:alert(1)",
            "https://id.example/a\"><script>",
            "https://id.example/a; script-src *",
            "https:///authorize",
            // A wildcard would open the CSP's connect-src to every host.
            "https://*/token",
            "https://*.example/token",
            "ftp://127.0.0.1/",
        ] {
            assert!(!is_sign_in_endpoint(bad), "{bad}");
        }
        // The implicit flow's setting is refused with what replaced it.
        let old = IngestConfig {
            identity: crate::identity::IdentitySettings {
                sign_in_url: Some("http://127.0.0.1:8090/".into()),
                ..Default::default()
            },
            ..dev()
        };
        let err = old.validate().unwrap_err();
        assert!(matches!(err, ConfigError::SignInUrlReplaced));
        assert!(err.to_string().contains("identity.authorization_endpoint"));
        // One endpoint without the other, or without keys and a client id.
        let half = IngestConfig {
            identity: crate::identity::IdentitySettings {
                authorization_endpoint: Some("https://id.example/authorize".into()),
                ..Default::default()
            },
            ..dev()
        };
        assert!(matches!(
            half.validate(),
            Err(ConfigError::SignInEndpoint("authorization_endpoint"))
        ));
    }
}
