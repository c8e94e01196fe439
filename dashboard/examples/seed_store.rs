//! Fills a release store with synthetic releases, for measuring the
//! dashboard on a realistic history (`bench/dashboard.sh`).
//!
//! `cargo run --release -p hushmap-dashboard --example seed_store -- <data dir> <windows> <regions> [window hours]`
//!
//! Windows are an hour long unless `window hours` says otherwise (24: a
//! national deployment's daily windows), the newest ending on 2026-11-29.
//!
//! Each release holds `regions` cells at H3 level 5 around a few cities,
//! their level-4 and level-3 parents, six age bands each, with counts and
//! noise like a default-budget release (σ ≈ 14, suppression at ± 0.2).

use h3o::{LatLng, Resolution};
use hushmap_dashboard::store::ReleaseStore;
use hushmap_schema::release::{CellLabel, ReleaseRow};
use hushmap_schema::{AgeBand, Release, ReleaseMeta};
use std::collections::BTreeMap;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, windows, regions, window_hours) = match args.as_slice() {
        [dir, windows, regions] => (dir, windows, regions, "1"),
        [dir, windows, regions, hours] => (dir, windows, regions, hours.as_str()),
        _ => anyhow::bail!("usage: seed_store <data dir> <windows> <regions> [window hours]"),
    };
    let (windows, regions): (i64, usize) = (windows.parse()?, regions.parse()?);
    let window_ms = window_hours.parse::<i64>()? * 3_600_000;
    let mut store = ReleaseStore::open(std::path::Path::new(dir))?;
    let cities = [
        (19.07, 72.88),
        (28.61, 77.21),
        (12.97, 77.59),
        (22.57, 88.36),
        (13.08, 80.27),
    ];
    // Cells: rings of cells around each city until `regions` are chosen
    // (distinct: at national sizes two cities' rings meet).
    let mut cells = Vec::new();
    let mut chosen = std::collections::HashSet::new();
    'outer: for k in 0.. {
        for &(lat, lon) in &cities {
            let centre = LatLng::new(lat, lon)?.to_cell(Resolution::Five);
            for c in centre.grid_ring_fast(k).flatten() {
                if cells.len() == regions {
                    break 'outer;
                }
                if chosen.insert(c) {
                    cells.push(c);
                }
            }
        }
    }
    let first_start = (1_795_910_400_000 / window_ms - windows) * window_ms;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sigma = 13.9;
    for h in 0..windows {
        let window_start = first_start + h * window_ms;
        let window_end = window_start + window_ms;
        let mut rows = Vec::new();
        for level in [5u8, 4, 3] {
            let mut by_parent: BTreeMap<String, i64> = BTreeMap::new();
            for c in &cells {
                let res = Resolution::try_from(level)?;
                let p = c.parent(res).expect("coarser");
                *by_parent.entry(p.to_string()).or_default() += 1;
            }
            for (region, children) in by_parent {
                for band in AgeBand::ALL {
                    let base = children * 40;
                    let noisy = |m: i64, r: &mut dyn FnMut() -> u64| m + (r() % 29) as i64 - 14;
                    let risk = [
                        noisy(base, &mut rand),
                        noisy(base / 3, &mut rand),
                        noisy(base / 8, &mut rand),
                    ];
                    let symptoms = [0; 10].map(|_: i64| noisy(base / 4, &mut rand));
                    rows.push(ReleaseRow::from_noisy_counts(
                        CellLabel {
                            window_start,
                            window_end,
                            level,
                            region: region.clone(),
                            age_band: band.label().into(),
                        },
                        risk,
                        symptoms,
                        sigma,
                        0.2,
                    ));
                }
            }
        }
        store.insert(Release {
            meta: ReleaseMeta {
                window_start,
                window_end,
                mechanism: "discrete_gaussian".into(),
                rho: Some(0.0134),
                epsilon: 1.0,
                delta: 1.86e-8,
                ledger_entry: format!("seed-{window_start}"),
                symptom_noise_scale: sigma,
                max_ci_half_width: 0.2,
                // What the risk counts cost: the release's δ is then the
                // conversion's, as a real release states it.
                statistic_costs: vec![hushmap_schema::StatisticCost {
                    statistic: "risk_counts".into(),
                    level: 5,
                    cost: 0.0134,
                    delta: 0.0,
                }],
                ..Default::default()
            },
            rows,
        })?;
        if (h + 1) % 10 == 0 {
            eprintln!("seed_store: {} / {windows} releases", h + 1);
        }
    }
    eprintln!("seed_store: {} releases in {dir}", store.len());
    Ok(())
}
