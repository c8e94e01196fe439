//! Secure defaults, checked on the real binaries:
//!
//! * every service refuses to listen beyond loopback unless told so
//!   deliberately (ingest: `allow_public_bind`; the aggregator's metrics:
//!   `metrics_public`; the dashboard and its Flight port: access tokens);
//! * secrets come from the environment or a file, and no `--help` output
//!   shows them even when they are set;
//! * a malformed or short secret is refused with an error that names the
//!   setting, never its value;
//! * every service refuses plaintext Kafka to a broker beyond loopback, and
//!   a Kafka security section that is incomplete or would be ignored;
//! * ingest refuses dev mode beyond loopback, even with `allow_public_bind`,
//!   and carries no development tools: the token minter and sign-in page
//!   are `hushmap-dev-idp`, which refuses to serve beyond loopback too.
//!
//! That running services keep secrets out of their logs is checked where
//! they run at TRACE level: `ingest/tests/no_pii_in_logs.rs` and the soak.

use hushmap_testkit::payload_public_key;
use hushmap_tests::processes::{free_port, service_binary};
use hushmap_tests::{brokers, payload_keys};
use std::process::{Command, Output};

const CONTRIBUTOR_SECRET: &str = "secret-contributor-value-0123456789abcdef";
const LEAKSCAN_TOKEN: &str = "secret-leakscan-token-0123456789";
const DASHBOARD_TOKENS: &str = "[\"secret-dashboard-inline-token\"]";
const KAFKA_PASSWORD: &str = "secret-kafka-sasl-password-0123456789";

/// Runs a binary with every secret it takes set in its environment (ingest
/// gets the payload public key, everything else the private one).
fn run(binary: &str, args: &[&str], extra: &[(&str, String)]) -> Output {
    let payload_key = if binary == "hushmap-ingest" {
        (
            "HUSHMAP_PAYLOAD_PUBLIC_KEY",
            payload_public_key().to_string(),
        )
    } else {
        ("HUSHMAP_PAYLOAD_KEYS", payload_keys().to_string())
    };
    Command::new(service_binary(binary).expect("binary built"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HUSHMAP_CONTRIBUTOR_SECRET", CONTRIBUTOR_SECRET)
        .env(payload_key.0, payload_key.1)
        .env("HUSHMAP_LEAKSCAN_TOKEN", LEAKSCAN_TOKEN)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A binary, the environment it is started with, and what its refusal says.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);

/// Runs `binary` with `env`, checks that it refuses to start and says
/// `expected`, and returns everything it printed.
fn refusal(binary: &str, env: &[(&str, String)], expected: &str) -> String {
    let out = run(binary, &[], env);
    let said = text(&out);
    assert!(!out.status.success(), "{binary} started with {env:?}");
    assert!(
        said.contains(expected),
        "{binary} did not say {expected:?}: {said}"
    );
    said
}

fn secrets() -> Vec<String> {
    let key_hex = payload_keys().split_once(':').unwrap().1.to_string();
    vec![
        CONTRIBUTOR_SECRET.to_string(),
        key_hex[..16].to_string(),
        LEAKSCAN_TOKEN.to_string(),
        "secret-dashboard-inline-token".to_string(),
        KAFKA_PASSWORD.to_string(),
    ]
}

#[test]
fn help_output_never_shows_secrets() {
    let cases: [(&str, &[&str]); 7] = [
        ("hushmap-ingest", &["--help"]),
        ("hushmap-aggregate", &["generate-payload-key", "--help"]),
        ("hushmap-aggregate", &["--help"]),
        ("hushmap-aggregate", &["batch", "--help"]),
        ("hushmap-dashboard", &["--help"]),
        ("hushmap-dashboard", &["hash-token", "--help"]),
        ("hushmap-leakscan", &["--help"]),
    ];
    for (binary, args) in cases {
        let out = run(
            binary,
            args,
            &[
                ("HUSHMAP_DASHBOARD_AUTH__TOKENS", DASHBOARD_TOKENS.into()),
                ("HUSHMAP_KAFKA_SASL_PASSWORD", KAFKA_PASSWORD.into()),
            ],
        );
        assert!(out.status.success(), "{binary} {args:?}: {}", text(&out));
        let help = text(&out);
        assert!(help.len() > 200, "{binary} {args:?} printed no help");
        for secret in secrets() {
            assert!(!help.contains(&secret), "{binary} {args:?} shows a secret");
        }
    }
}

#[test]
fn malformed_secrets_are_refused_without_echoing_them() {
    let bad_key = format!("1:{}zz", "ab".repeat(31));
    let short_secret = "too-short-secret-abc";
    // The aggregator's private key handed to ingest, in a mounted file.
    let private_file = std::env::temp_dir().join(format!("hushmap-private-{}", std::process::id()));
    std::fs::write(&private_file, payload_keys()).unwrap();
    let cases: [Case; 7] = [
        (
            "hushmap-ingest",
            vec![("HUSHMAP_PAYLOAD_PUBLIC_KEY", bad_key.clone())],
            "payload key 1",
        ),
        // Ingest holds no private key: refused from the variable or a file,
        // whatever else is right.
        (
            "hushmap-ingest",
            vec![("HUSHMAP_PAYLOAD_KEYS", payload_keys().to_string())],
            "is set for ingest",
        ),
        (
            "hushmap-ingest",
            vec![(
                "HUSHMAP_PAYLOAD_KEYS_FILE",
                private_file.display().to_string(),
            )],
            "is set for ingest",
        ),
        (
            "hushmap-aggregate",
            vec![("HUSHMAP_PAYLOAD_KEYS", String::new())],
            "payload keyring is empty",
        ),
        (
            "hushmap-aggregate",
            vec![("HUSHMAP_PAYLOAD_KEYS", bad_key.clone())],
            "payload key 1",
        ),
        (
            "hushmap-ingest",
            vec![("HUSHMAP_CONTRIBUTOR_SECRET", short_secret.to_string())],
            "at least 32 bytes",
        ),
        (
            "hushmap-ingest",
            vec![("HUSHMAP_PAYLOAD_PUBLIC_KEY", String::new())],
            "payload keyring is empty",
        ),
    ];
    for (binary, env, expected) in cases {
        let said = refusal(binary, &env, expected);
        for (_, value) in &env {
            if !value.is_empty() {
                assert!(
                    !said.contains(value.as_str()),
                    "{binary} echoed a secret: {said}"
                );
            }
        }
        assert!(
            !said.contains(&"ab".repeat(8)),
            "{binary} echoed key material"
        );
        let private_hex = payload_keys().split_once(':').unwrap().1;
        assert!(
            !said.contains(&private_hex[..16]),
            "{binary} echoed the private key"
        );
    }
    std::fs::remove_file(&private_file).unwrap();
}

#[test]
fn every_service_refuses_a_public_bind_unless_told() {
    let kafka = brokers();
    let cases: [Case; 5] = [
        (
            "hushmap-ingest",
            vec![
                ("HUSHMAP_INGEST_LISTEN", format!("0.0.0.0:{}", free_port())),
                ("HUSHMAP_INGEST_KAFKA__BROKERS", kafka.clone()),
            ],
            "allow_public_bind",
        ),
        (
            "hushmap-ingest",
            vec![
                (
                    "HUSHMAP_INGEST_ADMIN_LISTEN",
                    format!("0.0.0.0:{}", free_port()),
                ),
                ("HUSHMAP_INGEST_KAFKA__BROKERS", kafka.clone()),
            ],
            "admin_public",
        ),
        (
            "hushmap-aggregate",
            vec![
                (
                    "HUSHMAP_AGGREGATE_METRICS_LISTEN",
                    format!("0.0.0.0:{}", free_port()),
                ),
                ("HUSHMAP_AGGREGATE_KAFKA__BROKERS", kafka.clone()),
            ],
            "metrics_public",
        ),
        (
            "hushmap-dashboard",
            vec![
                (
                    "HUSHMAP_DASHBOARD_LISTEN",
                    format!("0.0.0.0:{}", free_port()),
                ),
                ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", kafka.clone()),
            ],
            "token",
        ),
        (
            "hushmap-dashboard",
            vec![
                (
                    "HUSHMAP_DASHBOARD_FLIGHT_LISTEN",
                    format!("0.0.0.0:{}", free_port()),
                ),
                ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", kafka.clone()),
            ],
            "token",
        ),
    ];
    for (binary, env, expected) in cases {
        refusal(binary, &env, expected);
    }
}

/// A demo left on a public address: dev mode turns off the proof of work
/// and takes a per-process contributor secret. Refused beyond loopback,
/// whatever else is allowed. And the production ingest binary cannot mint
/// ID tokens: its development commands moved to `hushmap-dev-idp`.
#[test]
fn dev_mode_and_dev_tools_stay_off_production() {
    let said = refusal(
        "hushmap-ingest",
        &[
            ("HUSHMAP_INGEST_DEV_MODE", "true".to_string()),
            ("HUSHMAP_INGEST_ALLOW_PUBLIC_BIND", "true".to_string()),
            ("HUSHMAP_INGEST_LISTEN", format!("0.0.0.0:{}", free_port())),
            ("HUSHMAP_INGEST_KAFKA__BROKERS", brokers()),
        ],
        "refusing dev_mode",
    );
    assert!(said.contains("loopback only"), "{said}");
    // The development commands are gone from ingest (clap: unknown
    // subcommand), and no trace of the sign-in page is in its binary.
    for command in ["dev-idp", "dev-id-token"] {
        let out = run("hushmap-ingest", &[command, "--help"], &[]);
        assert!(
            !out.status.success(),
            "hushmap-ingest {command} ran: {}",
            text(&out)
        );
    }
    let ingest = std::fs::read(service_binary("hushmap-ingest").expect("binary built"))
        .expect("ingest binary readable");
    let page_title = b"Development sign-in";
    assert!(
        !ingest.windows(page_title.len()).any(|w| w == page_title),
        "the development sign-in page is linked into hushmap-ingest"
    );
    // The development provider's own page refuses a public address.
    let out = run(
        "hushmap-dev-idp",
        &[
            "serve",
            "--key",
            hushmap_testkit::idp::TestIdp::ed25519()
                .private_key_file()
                .to_str()
                .expect("UTF-8 path"),
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
        ],
        &[],
    );
    assert!(!out.status.success(), "hushmap-dev-idp served on 0.0.0.0");
    assert!(text(&out).contains("loopback only"), "{}", text(&out));
}

#[test]
fn every_service_refuses_unsafe_kafka_security() {
    let remote = "kafka.example.net:9092".to_string();
    let password = || ("HUSHMAP_KAFKA_SASL_PASSWORD", KAFKA_PASSWORD.to_string());
    let cases: [Case; 6] = [
        (
            "hushmap-ingest",
            vec![("HUSHMAP_INGEST_KAFKA__BROKERS", remote.clone())],
            "not on loopback",
        ),
        (
            "hushmap-aggregate",
            vec![("HUSHMAP_AGGREGATE_KAFKA__BROKERS", remote.clone())],
            "not on loopback",
        ),
        (
            "hushmap-dashboard",
            vec![("HUSHMAP_DASHBOARD_KAFKA__BROKERS", remote.clone())],
            "not on loopback",
        ),
        (
            "hushmap-ingest",
            vec![
                (
                    "HUSHMAP_INGEST_KAFKA__SECURITY__PROTOCOL",
                    "sasl_ssl".into(),
                ),
                (
                    "HUSHMAP_INGEST_KAFKA__SECURITY__SASL_USERNAME",
                    "hushmap-ingest".into(),
                ),
            ],
            "a Kafka password is required",
        ),
        // A password with plaintext would silently not be used.
        ("hushmap-aggregate", vec![password()], "would be ignored"),
        (
            "hushmap-dashboard",
            vec![
                ("HUSHMAP_DASHBOARD_KAFKA__BROKERS", remote),
                (
                    "HUSHMAP_DASHBOARD_KAFKA__SECURITY__PROTOCOL",
                    "sasl_ssl".into(),
                ),
                (
                    "HUSHMAP_DASHBOARD_KAFKA__SECURITY__SASL_USERNAME",
                    "hushmap-dashboard".into(),
                ),
                (
                    "HUSHMAP_DASHBOARD_KAFKA__SECURITY__CA_LOCATION",
                    "/nonexistent/ca.pem".into(),
                ),
                password(),
            ],
            "ca_location",
        ),
    ];
    for (binary, env, expected) in cases {
        let said = refusal(binary, &env, expected);
        assert!(
            !said.contains(KAFKA_PASSWORD),
            "{binary} echoed the password"
        );
    }
}
