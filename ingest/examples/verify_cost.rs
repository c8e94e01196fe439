//! What checking who a submission is from costs, per request, without the
//! HTTP stack: ID token verification (EdDSA, ES256, RS256) and contributor
//! token issue and opening. Run by `bench/ingest.sh` (release build); the
//! figures go to docs/BENCHMARKS.md.
//!
//!   cargo run --release -p hushmap-ingest --example verify_cost -- KEY_DIR
//!
//! KEY_DIR holds `NAME.key.pem` / `NAME.pem` pairs (the bench makes them
//! with OpenSSL).

use hushmap_ingest::contributor::ContributorKeys;
use hushmap_ingest::dev_idp::DevSigner;
use hushmap_ingest::identity::{IdTokenVerifier, IdentitySettings};
use std::path::PathBuf;
use std::time::Instant;

const ROUNDS: u32 = 20_000;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).expect("KEY_DIR"));
    let (issuer, audience) = ("https://id.bench.invalid", "hushmap-bench");
    for name in ["ed25519", "p256", "rsa"] {
        let settings = IdentitySettings {
            pem_files: vec![dir.join(format!("{name}.pem"))],
            issuer: Some(issuer.into()),
            audience: Some(audience.into()),
            ..IdentitySettings::default()
        };
        let verifier = IdTokenVerifier::new(&settings)?.expect("keys configured");
        let token = DevSigner::load(&dir.join(format!("{name}.key.pem")), issuer, audience, 3600)?
            .sign("bench-subject")?;
        verifier.verify(&token)?;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(verifier.verify(std::hint::black_box(&token))?);
        }
        let per = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
        println!(
            "verify_cost: ID token {name:<8} {:>8.1} µs per verification",
            per * 1e6
        );
    }
    let keys = ContributorKeys::new(b"bench-contributor-secret-0123456789abcdef");
    let now = 1_795_910_400_000;
    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..ROUNDS {
        token = keys.issue_token(now).0.to_string();
    }
    let issue = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        std::hint::black_box(keys.open_token(std::hint::black_box(&token), now, 365)?);
    }
    let open = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
    println!(
        "verify_cost: contributor token issue {:.1} µs, open {:.1} µs",
        issue * 1e6,
        open * 1e6
    );
    Ok(())
}
