//! Synthetic coarse records for the aggregate's benchmarks: the engine
//! bench holds them in memory, the batch bench writes them to a file a
//! slice at a time (`synthetic_records`). Both draw the same records from
//! the same seed, so their figures are about the same data.

use hushmap_schema::region::RegionResolution;
use hushmap_schema::{
    AgeBand, CoarseRecord, ContributorKey, RegionCell, RiskLevel, SymptomSet, Window, WindowLength,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` records of one daily window (1 January 2026) from `n / 2`
/// contributors (about two records each), over [`bench_regions`], six age
/// bands, three risk levels and random symptoms; seeded, so every run draws
/// the same records.
///
/// ```
/// let records: Vec<_> = hushmap_testkit::synthetic::SyntheticRecords::new(10).collect();
/// assert_eq!(records.len(), 10);
/// assert!(records.iter().all(|r| r.window == records[0].window));
/// ```
pub struct SyntheticRecords {
    rng: StdRng,
    regions: Vec<RegionCell>,
    contributors: u64,
    window: Window,
    left: u64,
}

impl SyntheticRecords {
    pub fn new(n: u64) -> SyntheticRecords {
        SyntheticRecords {
            rng: StdRng::seed_from_u64(42),
            regions: bench_regions(),
            contributors: (n / 2).max(1),
            window: Window::containing(1_767_225_600_000, WindowLength::ONE_DAY),
            left: n,
        }
    }
}

impl Iterator for SyntheticRecords {
    type Item = CoarseRecord;

    fn next(&mut self) -> Option<CoarseRecord> {
        self.left = self.left.checked_sub(1)?;
        let rng = &mut self.rng;
        let who = rng.random_range(0..self.contributors);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&who.to_le_bytes());
        Some(CoarseRecord {
            window: self.window,
            window_length: WindowLength::ONE_DAY,
            region: self.regions[rng.random_range(0..self.regions.len())],
            age_band: AgeBand::ALL[rng.random_range(0..6)],
            risk: RiskLevel::ALL[rng.random_range(0..3)],
            symptoms: SymptomSet::from_bits(rng.random_range(0..1024u16))
                .expect("10 bits are 10 symptoms"),
            contributor: ContributorKey(key),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).ok();
        (left.unwrap_or(usize::MAX), left)
    }
}

/// 200 resolution-5 cells near Berlin: the children of neighbouring
/// resolution-3 cells.
pub fn bench_regions() -> Vec<RegionCell> {
    let resolution = RegionResolution::new(3).expect("3 is a resolution");
    let res3 = RegionCell::from_coordinate(52.5, 13.4, resolution).expect("a valid coordinate");
    let mut out = Vec::new();
    let mut parent = res3.raw();
    while out.len() < 200 {
        if let Ok(cell) = RegionCell::from_raw(parent)
            && cell.resolution() == 3
        {
            out.extend(cell.children(5).unwrap_or_default());
        }
        // The next resolution-3 index (the digits of a res-3 cell step by 2^42).
        parent += 1 << 42;
    }
    out.truncate(200);
    out
}
