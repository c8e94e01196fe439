//! `hushmap-dev-idp`: the development identity provider, for demos and
//! tests only. It signs ID tokens with a local key, as the health
//! authority's provider would; ingest only ever verifies them. Never
//! deployed: no image carries it, and ingest has no such command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Development only: signs ID tokens with a local key, one at a time
/// (`id-token`) or behind a sign-in page (`serve`).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints an ID token for SUBJECT signed with the key (PKCS#8 PEM:
    /// Ed25519 from `openssl genpkey -algorithm ed25519`, or P-256 or
    /// RSA), as the identity provider would sign one.
    IdToken {
        #[command(flatten)]
        idp: IdpArgs,
        /// The `sub` claim: who the token says you are.
        #[arg(long)]
        subject: String,
    },
    /// Serves a sign-in page that stands in for the identity provider:
    /// `/authorize`, `/sign-in` and `/token` of an authorization code flow
    /// with PKCE, for the client whose id is the audience.
    Serve {
        #[command(flatten)]
        idp: IdpArgs,
        /// Loopback only: this page signs a token for whoever asks.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The one redirect URI accepted: the self-check page.
        #[arg(long, default_value = "http://127.0.0.1:8080/")]
        redirect_uri: String,
    },
}

/// The key and what its tokens say.
#[derive(clap::Args)]
struct IdpArgs {
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

impl IdpArgs {
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
    match Args::parse().command {
        Command::IdToken { idp, subject } => {
            println!("{}", idp.signer()?.sign(&subject)?);
        }
        Command::Serve {
            idp,
            listen,
            redirect_uri,
        } => {
            // A page that signs a token for anyone who asks must not be
            // reachable from beyond this machine.
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "refusing to serve the development sign-in page on {listen}: it signs a token \
                 for whoever asks, so it listens on loopback only"
            );
            hushmap_service::init_tracing();
            hushmap_dev_idp::DevIdp::new(idp.signer()?, &redirect_uri)
                .serve(listen, hushmap_service::shutdown_signal())
                .await?;
        }
    }
    Ok(())
}
