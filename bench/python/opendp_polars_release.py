"""The bounded, noised count per region x age band x risk level with
OpenDP's Polars API (Context), on the coarse-record Parquet the Rust bench
writes. Prints the seconds it took (reading the file excluded).

A smaller job than Hushmap's release: one level, risk counts only (no
symptom counts), OpenDP's own threshold for the group keys.
"""
import sys
import time

import opendp.prelude as dp
import polars as pl

dp.enable_features("contrib")
path = sys.argv[1]
# OpenDP's Polars domains take neither u8 nor binary: cast before timing.
data = (
    pl.read_parquet(path, columns=["region", "age_band", "risk", "contributor"])
    .with_columns(
        pl.col("region").cast(pl.Int64),
        pl.col("age_band").cast(pl.Int32),
        pl.col("risk").cast(pl.Int32),
        pl.col("contributor").bin.encode("hex"),
    )
    .lazy()
)

start = time.perf_counter()
context = dp.Context.compositor(
    data=data,
    privacy_unit=dp.unit_of(contributions=1, identifier=pl.col("contributor")),
    privacy_loss=dp.loss_of(rho=0.0172, delta=1e-8),
    split_evenly_over=1,
)
query = (
    context.query()
    .filter(pl.int_range(pl.len()).over("contributor") < 1)
    .group_by("region", "age_band", "risk")
    .agg(dp.len())
)
out = query.release().collect()
elapsed = time.perf_counter() - start
print(f"opendp_polars_s,{elapsed:.3f},partitions,{out.height}")
