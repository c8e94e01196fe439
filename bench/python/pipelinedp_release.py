"""The bounded, noised count per region x age band x risk level in
PipelineDP's local backend, on the coarse-record Parquet the Rust bench
writes. Prints the seconds it took (reading the file excluded).

A smaller job than Hushmap's release: one level, risk counts only (no
symptom counts), PipelineDP's own partition selection.
"""
import sys
import time

import pipeline_dp
import pyarrow.parquet as pq

path = sys.argv[1]
table = pq.read_table(path, columns=["region", "age_band", "risk", "contributor"])
rows = list(
    zip(
        table.column("region").to_pylist(),
        table.column("age_band").to_pylist(),
        table.column("risk").to_pylist(),
        table.column("contributor").to_pylist(),
    )
)

start = time.perf_counter()
accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=1.0, total_delta=1e-8)
engine = pipeline_dp.DPEngine(accountant, pipeline_dp.LocalBackend())
params = pipeline_dp.AggregateParams(
    noise_kind=pipeline_dp.NoiseKind.GAUSSIAN,
    metrics=[pipeline_dp.Metrics.COUNT],
    max_partitions_contributed=1,
    max_contributions_per_partition=1,
)
extractors = pipeline_dp.DataExtractors(
    partition_extractor=lambda r: (r[0], r[1], r[2]),
    privacy_id_extractor=lambda r: r[3],
    value_extractor=lambda r: 0,
)
result = engine.aggregate(rows, params, extractors)
accountant.compute_budgets()
out = list(result)
elapsed = time.perf_counter() - start
print(f"pipelinedp_s,{elapsed:.3f},partitions,{len(out)}")
