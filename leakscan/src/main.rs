//! `hushmap-leakscan`: scans topics, files and endpoints for personal data.
//! Exit status: 0 nothing found, 1 findings, 2 a source could not be read.

use anyhow::Context;
use clap::Parser;
use hushmap_leakscan::{Needles, Scanner};
use hushmap_service::kafka::{KafkaSecurity, SASL_PASSWORD_ENV, SecurityProtocol};
use hushmap_service::secrets::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Looks for coordinates, exact ages, profile ids (and their unsalted
/// hashes), client IPs and user agents in Kafka topics (from offset 0,
/// uncommitted records included), files and directories (logs, the release
/// store; Parquet and Arrow are decoded) and HTTP endpoints (metrics,
/// exports). Findings name the kind and place, never the value. A bearer
/// token for endpoints is read from HUSHMAP_LEAKSCAN_TOKEN, never a flag;
/// so is the Kafka password (HUSHMAP_KAFKA_SASL_PASSWORD, or a file).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Kafka bootstrap servers for --topic.
    #[arg(long, default_value = hushmap_service::kafka::DEFAULT_BROKERS)]
    brokers: String,
    /// Log in to Kafka as this SCRAM-SHA-512 user over TLS (SASL_SSL); the
    /// password comes from HUSHMAP_KAFKA_SASL_PASSWORD or --kafka-password-file.
    #[arg(long)]
    kafka_user: Option<String>,
    /// A file holding the Kafka password.
    #[arg(long, requires = "kafka_user")]
    kafka_password_file: Option<PathBuf>,
    /// PEM CA bundle for the brokers' certificates (default: system store).
    #[arg(long, requires = "kafka_user")]
    kafka_ca: Option<PathBuf>,
    /// A topic to read from offset 0 (repeatable).
    #[arg(long)]
    topic: Vec<String>,
    /// A file or directory (repeatable).
    #[arg(long)]
    path: Vec<PathBuf>,
    /// An HTTP(S) URL to GET (repeatable).
    #[arg(long)]
    url: Vec<String>,
    /// Known submitted values, one `KIND VALUE` per line (coordinate,
    /// profile, client_ip, user_agent, token).
    #[arg(long)]
    needles: Option<PathBuf>,
    /// One JSON object per finding on stdout instead of text.
    #[arg(long)]
    json: bool,
}

async fn scan(args: &Args) -> anyhow::Result<Scanner> {
    let needles = match &args.needles {
        Some(path) => Needles::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => Needles::default(),
    };
    let mut scanner = Scanner::new(needles);
    let security = kafka_security(args);
    for topic in &args.topic {
        eprintln!("leakscan: topic {topic}");
        let (brokers, topic, security) = (args.brokers.clone(), topic.clone(), security.clone());
        scanner = tokio::task::spawn_blocking(move || {
            scanner
                .scan_topic(&brokers, &security, &topic)
                .map(|()| scanner)
        })
        .await??;
    }
    for path in &args.path {
        eprintln!("leakscan: path {}", path.display());
        scanner.scan_path(path)?;
    }
    let token = std::env::var("HUSHMAP_LEAKSCAN_TOKEN").ok();
    for url in &args.url {
        eprintln!("leakscan: url {url}");
        scanner.scan_url(url, token.as_deref()).await?;
    }
    Ok(scanner)
}

/// The services' `kafka.security`, from the flags and the environment.
fn kafka_security(args: &Args) -> KafkaSecurity {
    let Some(user) = &args.kafka_user else {
        return KafkaSecurity::default();
    };
    KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        sasl_username: Some(user.clone()),
        sasl_password: std::env::var(SASL_PASSWORD_ENV)
            .ok()
            .map(|p| Secret::from(p.as_str())),
        sasl_password_file: args.kafka_password_file.clone(),
        ca_location: args.kafka_ca.clone(),
        ..KafkaSecurity::default()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let scanner = match scan(&args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leakscan: {e:#}");
            return ExitCode::from(2);
        }
    };
    let total: u64 = scanner.scanned.iter().map(|(_, b)| b).sum();
    eprintln!(
        "leakscan: {} sources, {total} bytes scanned",
        scanner.scanned.len()
    );
    let findings = scanner.into_findings();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &findings {
        *by_kind.entry(f.kind.to_string()).or_default() += 1;
        if args.json {
            println!("{}", serde_json::to_string(f).expect("findings serialise"));
        } else {
            println!("{}\t{}\t{}\t{}", f.kind, f.location, f.rule, f.hint);
        }
    }
    if findings.is_empty() {
        eprintln!("leakscan: no findings");
        ExitCode::SUCCESS
    } else {
        eprintln!("leakscan: {} findings {by_kind:?}", findings.len());
        ExitCode::from(1)
    }
}
