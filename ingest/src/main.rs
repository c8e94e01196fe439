//! `hushmap-ingest`: the public submission endpoint.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hushmap_ingest::{IngestConfig, IngestServer};
use std::path::PathBuf;

/// Validates, triages and coarsens self-check submissions and produces
/// sealed coarse records to Kafka. Settings: defaults < --config FILE <
/// HUSHMAP_INGEST_* env; secrets only from HUSHMAP_CONTRIBUTOR_SECRET and
/// HUSHMAP_PAYLOAD_PUBLIC_KEY (or the file), never from flags.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Loads and checks the configuration (file and environment, secrets
    /// included) as a start would, prints `configuration ok` and exits;
    /// non-zero with the reason otherwise. Connects to nothing.
    CheckConfig,
    /// Development only: prints an ID token for SUBJECT signed with a local
    /// key (PKCS#8 PEM: Ed25519 from `openssl genpkey -algorithm ed25519`,
    /// or P-256 or RSA), as the identity provider would sign one.
    DevIdToken {
        #[command(flatten)]
        idp: DevIdpArgs,
        /// The `sub` claim: who the token says you are.
        #[arg(long)]
        subject: String,
    },
    /// Development only: serves a sign-in page that stands in for the
    /// identity provider and sends the browser back to the self-check page
    /// with `#id_token=…`.
    DevIdp {
        #[command(flatten)]
        idp: DevIdpArgs,
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The self-check page to return to.
        #[arg(long, default_value = "http://127.0.0.1:8080/")]
        return_to: String,
    },
}

/// The development identity provider's key and what its tokens say.
#[derive(clap::Args)]
struct DevIdpArgs {
    /// Private key (PKCS#8 PEM; Ed25519, P-256 or RSA). Its name without
    /// `.key.pem` is the key id; give ingest the public key under that name.
    #[arg(long)]
    key: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    issuer: String,
    #[arg(long, default_value = "hushmap-selfcheck")]
    audience: String,
    /// Lifetime of a token, seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
}

impl DevIdpArgs {
    fn signer(&self) -> anyhow::Result<hushmap_dev_idp::DevSigner> {
        Ok(hushmap_dev_idp::DevSigner::load(
            &self.key,
            &self.issuer,
            &self.audience,
            self.ttl_secs,
        )?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::CheckConfig) => {
            IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
            println!("configuration ok");
            return Ok(());
        }
        Some(Command::DevIdToken { idp, subject }) => {
            println!("{}", idp.signer()?.sign(&subject)?);
            return Ok(());
        }
        Some(Command::DevIdp {
            idp,
            listen,
            return_to,
        }) => {
            hushmap_service::init_tracing();
            hushmap_dev_idp::DevIdp::new(idp.signer()?, &return_to)
                .serve(listen, hushmap_service::shutdown_signal())
                .await?;
            return Ok(());
        }
        None => {}
    }
    hushmap_service::init_tracing();
    let config = IngestConfig::load(args.config.as_deref()).context("loading configuration")?;
    let server = IngestServer::bind(config)
        .await
        .context("starting ingest")?;
    server
        .serve(hushmap_service::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
