//! What provisional numbers cost in accuracy, from the calibration itself
//! (no sampling: every figure is a standard error the release states).
//!
//! For the default configuration (ε = 1 per daily window, Gaussian, three
//! levels) with a public region set, and `provisional_share` 0 and the
//! given share (default 0.25) over hourly sub-windows, prints:
//! - the final release's risk-count noise per level, with and without the
//!   share taken (every error of the final release scales by this ratio:
//!   the estimates are linear in the measurements);
//! - the provisional series: per-interval noise, and the standard error of
//!   the cumulative count after each hour.
//!
//!     cargo run -p hushmap-aggregate --example provisional_accuracy [SHARE]

use hushmap_aggregate::AggregateConfig;

fn main() -> anyhow::Result<()> {
    let share: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0.25);
    let mut config = AggregateConfig::default();
    // Any public area will do: the noise does not depend on it.
    config.privacy.public_bbox = Some([18.4, 73.7, 18.6, 73.95]);
    let without = config.validated_plan()?;
    config.privacy.provisional_share = share;
    let with = config.validated_plan()?;
    println!(
        "window: ε {:.3} (δ {:.0e}) either way; provisional share {share}",
        with.cost.epsilon, config.privacy.delta
    );
    println!("final release, risk-count noise s.d. per band cell (measured, before consistency):");
    println!(
        "| level | band cell, without | band cell, with | all-ages measurement, with | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (a, b) in without.levels.iter().zip(&with.levels) {
        let (x, y) = (a.risk.std_dev(), b.risk.std_dev());
        let all_ages = b.all_ages.as_ref().map_or(f64::NAN, |n| n.std_dev());
        println!(
            "| {} | {x:.2} | {y:.2} | {all_ages:.2} | {:.3} |",
            a.level,
            y / x
        );
    }
    let series = with
        .provisional
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no provisional series at share {share}"))?;
    let tree = series.tree;
    let node = series.node.std_dev();
    println!(
        "provisional series: level {}, {} sub-windows, tree of {} levels, interval noise s.d. {node:.2}",
        series.level,
        tree.sub_windows(),
        tree.levels()
    );
    println!("| hours in | s.e. of each cumulative count | intervals in the cover |");
    println!("|---:|---:|---:|");
    for n in [1, 2, 3, 4, 6, 8, 12, 16, 18, 23, 24] {
        if n > tree.sub_windows() {
            break;
        }
        let (_, variance) = tree
            .cumulative(n, |_| 0.0, node * node)
            .expect("within the window");
        println!("| {n} | {:.2} | {} |", variance.sqrt(), tree.cover(n).len());
    }
    Ok(())
}
