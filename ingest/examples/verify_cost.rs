//! What checking who a submission is from costs, per request, without the
//! HTTP stack: ID token verification (EdDSA, ES256, RS256), contributor
//! token issue and opening, a proof of work (issuing, checking, and what
//! solving one costs a client at the default difficulty), and sealing a
//! record to the aggregator's public key (HPKE; opening it is the
//! aggregator's cost). Run by `bench/ingest.sh` (release build); the
//! figures go to docs/BENCHMARKS.md.
//!
//!   cargo run --release -p hushmap-ingest --example verify_cost -- KEY_DIR
//!
//! KEY_DIR holds `NAME.key.pem` / `NAME.pem` pairs (the bench makes them
//! with OpenSSL).

use hushmap_dev_idp::DevSigner;
use hushmap_ingest::identity::{IdTokenVerifier, IdentitySettings};
use hushmap_ingest::proof_of_work::{Proofs, solve};
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, PayloadKeyring, RegionCell, RiskLevel, SymptomSet,
    Window, WindowLength,
};
use hushmap_submission::contributor::ContributorKeys;
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

    // Proof of work at the default difficulty (15 bits).
    let bits = 15;
    let proofs = Proofs::new(b"bench-proof-of-work-key-0123456789abcdef", bits, 120);
    let now_secs = 1_795_910_400;
    let started = Instant::now();
    let challenges: Vec<String> = (0..ROUNDS).map(|_| proofs.issue(now_secs)).collect();
    let issue = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
    const SOLVED: usize = 200;
    let started = Instant::now();
    let solved: Vec<String> = challenges[..SOLVED]
        .iter()
        .map(|c| format!("{c}.{}", solve(c, bits)))
        .collect();
    let solve_ms = started.elapsed().as_secs_f64() * 1e3 / SOLVED as f64;
    let started = Instant::now();
    for proof in &solved {
        proofs.redeem(proof, now_secs)?;
    }
    let redeem = started.elapsed().as_secs_f64() / SOLVED as f64;
    println!(
        "verify_cost: proof of work ({bits} bits) issue {:.1} µs, check {:.1} µs; solving one takes a client {solve_ms:.1} ms (mean of {SOLVED}, one core, native code)",
        issue * 1e6,
        redeem * 1e6,
    );

    // Sealing to the aggregator's public key (ingest, per record) and
    // opening (the aggregator, per record).
    let private: PayloadKeyring = PayloadKeyring::generate_entry(1).parse()?;
    let public = private.public_key();
    let len = WindowLength::ONE_DAY;
    let record = CoarseRecord {
        window: Window::containing(1_795_910_400_000, len),
        window_length: len,
        region: RegionCell::from_coordinate(19.08, 72.88, RegionResolution::new(5)?)?,
        age_band: AgeBand::From45To59,
        risk: RiskLevel::Moderate,
        symptoms: SymptomSet::default(),
        contributor: ContributorKey([3; 16]),
    };
    // One encapsulation per record (the one-shot seal): what every record
    // would cost without epochs; the aggregator's first record of an epoch.
    let n = ROUNDS / 10;
    let started = Instant::now();
    let one_shot: Vec<Vec<u8>> = (0..n).map(|_| public.seal(&record)).collect();
    let encapsulate = started.elapsed().as_secs_f64() / f64::from(n);
    let started = Instant::now();
    for s in &one_shot {
        std::hint::black_box(private.open(s)?);
    }
    let decapsulate = started.elapsed().as_secs_f64() / f64::from(n);
    // Ingest's sealer: one encapsulation a minute.
    let sealer = public.sealer(std::time::Duration::from_secs(60), 1 << 20);
    let started = Instant::now();
    let sealed: Vec<Vec<u8>> = (0..ROUNDS).map(|_| sealer.seal(&record)).collect();
    let seal = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
    let started = Instant::now();
    for s in &sealed {
        std::hint::black_box(private.open(s)?);
    }
    let open = started.elapsed().as_secs_f64() / f64::from(ROUNDS);
    println!(
        "verify_cost: HPKE per epoch: encapsulate+seal {:.1} µs (ingest), decapsulate+open {:.1} µs (aggregator); per record in an epoch: seal {:.2} µs, open {:.2} µs",
        encapsulate * 1e6,
        decapsulate * 1e6,
        seal * 1e6,
        open * 1e6
    );
    Ok(())
}
