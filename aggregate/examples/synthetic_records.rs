//! Writes `n` synthetic coarse records as a batch input file, a slice at
//! a time (a 100-million-record file in the memory of one slice), for the
//! batch memory benchmark (`bench/aggregate.sh`, `BENCH_BATCH_SIZES`).
//!
//! `cargo run --release -p hushmap-aggregate --example synthetic_records -- <out.parquet> <n>`
//!
//! The records of `benches/engine.rs` (`hushmap_testkit::synthetic`): one
//! daily window, `n / 2` contributors (about two records each), 200
//! regions, six age bands, three risk levels, random symptoms.

use hushmap_aggregate::batch::CoarseParquetWriter;
use hushmap_testkit::synthetic::SyntheticRecords;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, n] = args.as_slice() else {
        anyhow::bail!("usage: synthetic_records <out.parquet> <n>");
    };
    let n: u64 = n.parse()?;
    let mut records = SyntheticRecords::new(n);
    let mut writer = CoarseParquetWriter::create(std::path::Path::new(out))?;
    let mut chunk = Vec::with_capacity(1 << 18);
    let mut written = 0u64;
    while written < n {
        chunk.clear();
        chunk.extend(records.by_ref().take(1 << 18));
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
