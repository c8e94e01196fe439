//! Writes `n` synthetic coarse records as a batch input file, a slice at
//! a time (a 100-million-record file in the memory of one slice), for the
//! batch memory benchmark (`bench/aggregate.sh`, `BENCH_BATCH_SIZES`).
//!
//! `cargo run --release -p hushmap-aggregate --example synthetic_records -- <out.parquet> <n>`
//!
//! The same shape as `benches/engine.rs`: one daily window, `n / 2`
//! contributors (about two records each), 200 regions, six age bands,
//! three risk levels, random symptoms.

use hushmap_aggregate::batch::CoarseParquetWriter;
use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window, WindowLength,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, n] = args.as_slice() else {
        anyhow::bail!("usage: synthetic_records <out.parquet> <n>");
    };
    let n: u64 = n.parse()?;
    let mut rng = StdRng::seed_from_u64(42);
    let len = WindowLength::ONE_DAY;
    let window = Window::containing(1_767_225_600_000, len);
    // 200 resolution-5 cells: the children of neighbouring resolution-3
    // cells (a res-3 index's digits step by 2^42), as the engine bench.
    let res3 = RegionCell::from_coordinate(52.5, 13.4, RegionResolution::new(3)?)?;
    let mut regions = Vec::new();
    let mut parent = res3.raw();
    while regions.len() < 200 {
        if let Ok(cell) = RegionCell::from_raw(parent)
            && cell.resolution() == 3
        {
            regions.extend(cell.children(5).unwrap_or_default());
        }
        parent += 1 << 42;
    }
    regions.truncate(200);
    let contributors = (n / 2).max(1);
    let mut writer = CoarseParquetWriter::create(std::path::Path::new(out))?;
    let mut chunk = Vec::with_capacity(1 << 18);
    let mut written = 0u64;
    while written < n {
        chunk.clear();
        for _ in 0..(n - written).min(1 << 18) {
            let who = rng.random_range(0..contributors);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&who.to_le_bytes());
            chunk.push(CoarseRecord {
                window,
                window_length: len,
                region: regions[rng.random_range(0..regions.len())],
                age_band: AgeBand::ALL[rng.random_range(0..6)],
                risk: RiskLevel::ALL[rng.random_range(0..3)],
                symptoms: SymptomSet::from_bits(rng.random_range(0..1024u16)).unwrap(),
                contributor: ContributorKey(key),
            });
        }
        writer.write(&chunk)?;
        written += chunk.len() as u64;
        if written % 10_000_000 < (1 << 18) {
            eprintln!("synthetic_records: {written} / {n}");
        }
    }
    writer.finish()?;
    eprintln!("synthetic_records: {n} records in {out}");
    Ok(())
}
