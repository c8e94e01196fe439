//! `hushmap-traffic`: posts synthetic self-checks to ingest at a steady rate,
//! from a population of signed-in people and anonymous browsers that come
//! back (contributor tokens kept, ID tokens signed by the development
//! identity provider's key when one is given).

use clap::Parser;
use hushmap_dev_idp::DevSigner;
use hushmap_traffic::{Population, PopulationProfile, Sender, SubmissionGenerator};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    version,
    about = "Posts synthetic self-check submissions to a Hushmap ingest endpoint"
)]
struct Args {
    /// Ingest base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest_url: String,
    /// Submissions per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Stop after this many submissions (default: run until stopped).
    #[arg(long)]
    count: Option<u64>,
    /// Seed for reproducible traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The development identity provider's Ed25519 private key: signed-in
    /// people send ID tokens signed with it. Without it, everyone is anonymous.
    #[arg(long)]
    idp_key: Option<PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    idp_issuer: String,
    #[arg(long, default_value = "hushmap-selfcheck")]
    idp_audience: String,
    /// Share of submissions from signed-in people (with --idp-key).
    #[arg(long, default_value_t = 0.3)]
    signed_in_share: f64,
    /// Signed-in people and anonymous browsers submissions are drawn from.
    #[arg(long, default_value_t = 2_000)]
    people: u32,
    #[arg(long, default_value_t = 20_000)]
    browsers: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .compact()
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let signer = match &args.idp_key {
        Some(key) => Some(DevSigner::load(
            key,
            &args.idp_issuer,
            &args.idp_audience,
            3600,
        )?),
        None => None,
    };
    let population = Arc::new(Mutex::new(Population::new(
        args.seed,
        PopulationProfile {
            signed_in_share: if signer.is_some() {
                args.signed_in_share
            } else {
                0.0
            },
            people: args.people,
            browsers: args.browsers,
        },
    )));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let url = format!("{}/v1/submissions", args.ingest_url.trim_end_matches('/'));
    let mut generator = SubmissionGenerator::new(args.seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let (mut sent, mut accepted, mut failed) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    loop {
        if args.count.is_some_and(|c| sent >= c) {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let body = generator.next_submission();
                let (sender, mut request) = {
                    let mut p = population.lock().expect("population lock");
                    let sender = p.next_sender();
                    let mut request = client.post(&url).json(&body);
                    match sender {
                        Sender::SignedIn(n) => {
                            if let Some(s) = &signer {
                                request = request.bearer_auth(s.sign(&Population::subject(n))?);
                            }
                        }
                        Sender::Browser(_) => {
                            if let Some(t) = p.contributor_token(sender) {
                                request = request.header("hushmap-contributor", t);
                            }
                        }
                    }
                    (sender, request)
                };
                request = request.header("accept", "application/json");
                let (population, tx) = (population.clone(), tx.clone());
                tokio::spawn(async move {
                    let ok = match request.send().await {
                        Ok(r) if r.status().as_u16() == 202 => {
                            let answer: serde_json::Value = r.json().await.unwrap_or_default();
                            let token = answer["contributor_token"].as_str();
                            population.lock().expect("population lock").remember(sender, token);
                            true
                        }
                        Ok(r) if r.status().as_u16() == 401 => {
                            // A token not accepted: the browser starts over.
                            population.lock().expect("population lock").remember(sender, None);
                            false
                        }
                        _ => false,
                    };
                    let _ = tx.send(ok);
                });
                sent += 1;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        while let Ok(ok) = rx.try_recv() {
            if ok { accepted += 1 } else { failed += 1 }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            tracing::info!(sent, accepted, failed, "traffic");
            last_report = Instant::now();
        }
    }
    drop(tx);
    while let Some(ok) = rx.recv().await {
        if ok { accepted += 1 } else { failed += 1 }
    }
    tracing::info!(sent, accepted, failed, "traffic finished");
    anyhow::ensure!(
        accepted > 0 || sent == 0,
        "no submission was accepted; is ingest running at {url}?"
    );
    Ok(())
}
