//! `hushmap-traffic`: posts synthetic self-checks to ingest at a steady rate.

use clap::Parser;
use hushmap_traffic::SubmissionGenerator;
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
                let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
                tokio::spawn(async move {
                    let ok = matches!(client.post(&url).json(&body).send().await, Ok(r) if r.status().as_u16() == 202);
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
