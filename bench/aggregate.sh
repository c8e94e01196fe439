#!/usr/bin/env bash
# The DP engine side by side with its baselines (docs/BENCHMARKS.md):
#
# 1. batch DP release vs a raw DataFusion GROUP BY and vs the same bounded
#    query in plain DataFusion SQL, on 1M and 10M synthetic coarse records
#    (aggregate/benches/engine.rs);
# 2. the same release in PipelineDP's local backend and OpenDP's Polars API
#    (PyPI, in the bench-only virtualenv bench/.venv), 1M records;
# 3. peak RSS and wall time of `hushmap-aggregate batch` on Parquet files of
#    BENCH_BATCH_SIZES records (default: the BENCH_SIZES; add 100000000 for
#    the 100M run: ~2.5 GB of input, written by the synthetic_records
#    example), at the default batch.memory_limit_mb (BENCH_BATCH_MEMORY_MB
#    sets another);
# 4. streaming: the aggregator's sustained records/s vs a raw rdkafka
#    consumer loop on the same topic (aggregate/benches/stream.rs; starts the
#    local Kafka if it is not running);
# 5. single vs partitioned aggregation of a backlog: records/s and records
#    per CPU-second, the single topology and 1 to 3 partitioned instances
#    (aggregate/benches/partitioned.rs; BENCH_INSTANCES, default "1 2 3",
#    "1 2" in the short mode);
# 6. with BENCH_CLUSTER=df://HOST:PORT (a Ballista cluster, e.g.
#    deploy/ballista/up.sh with HUSHMAP_CLUSTER_BIN=target/release/hushmap-cluster),
#    step 3's runs again counted on that cluster (`batch --cluster`): wall
#    time and the batch process's peak RSS, and the executors' peak RSS
#    when they are deploy/ballista's.
#
#   bench/aggregate.sh                  # everything
#   BENCH_SIZES="1000000" bench/aggregate.sh
#   BENCH_SHORT=1 bench/aggregate.sh    # CI's smoke run (bench/short.sh): 10,000 records, dev build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/short.sh
SIZES="${BENCH_SIZES:-1000000 10000000}"
[ "$SHORT" = 1 ] && SIZES="${BENCH_SIZES:-10000 20000}"
OUT="$PWD/target/bench"
VENV="$PWD/bench/.venv"
mkdir -p "$OUT"

# The benches: release (cargo bench's own profile), or in short mode the
# tests' dev build, selected workspace-wide so its dependencies are shared.
if [ "$SHORT" = 1 ]; then
  BENCH_ARGS=(--profile dev --workspace)
  dev_build
else
  # With `batch --cluster` (off by default) for the cluster step.
  BENCH_ARGS=(-p hushmap-aggregate --features cluster)
  echo "bench: building (release profile)"
  cargo build -j"$JOBS" --release "${BENCH_ARGS[@]}" --bin hushmap-aggregate --example synthetic_records 2>&1 | tail -n 1
fi
cargo bench -j"$JOBS" "${BENCH_ARGS[@]}" --bench engine --bench stream --bench partitioned --no-run 2>&1 | tail -n 1
BATCH_SIZES="${BENCH_BATCH_SIZES:-$SIZES}"

# PipelineDP and OpenDP on Polars, pinned with their hashes
# (bench/python/aggregate-requirements.in; deploy/pip-lock.sh).
deploy/python-venv.sh "$VENV" bench/python/aggregate-requirements.txt "pipeline-dp and opendp[polars]"

declare -A RSS
for n in $SIZES; do
  parquet="$OUT/records-$n.parquet"
  echo "bench: engine, $n records"
  BENCH_RECORDS="$n" BENCH_PARQUET="$parquet" \
    cargo bench -q -j"$JOBS" "${BENCH_ARGS[@]}" --bench engine 2>/dev/null | tee "$OUT/engine-$n.csv"
  [ -s "$OUT/engine-$n.csv" ] || { echo "bench: the engine bench wrote nothing" >&2; exit 1; }
done

# One timed batch run over the n-record file: NAME N [batch arguments];
# prints NAME_wall and peak RSS, and leaves the RSS (KiB) in $rss and the
# run's stderr in $OUT/NAME-N.time.
batch_run() {
  local name="$1" n="$2" wall
  shift 2
  local time="$OUT/$name-$n.time"
  env ${BENCH_BATCH_MEMORY_MB:+HUSHMAP_AGGREGATE_BATCH__MEMORY_LIMIT_MB=$BENCH_BATCH_MEMORY_MB} \
    /usr/bin/time -v "$BIN_DIR/hushmap-aggregate" batch --input "$OUT/batch-input-$n.parquet" \
      --from 2026-01-01 --to 2026-01-02 --fresh-ledger --epsilon 1 \
      --out "$OUT/release-$name-$n.parquet" "$@" 2>"$time" >/dev/null || {
    tail -n 20 "$time"; exit 1; }
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$time")
  echo "${name}_wall,$wall,peak_rss_kib,$rss"
}

for n in $BATCH_SIZES; do
  input="$OUT/batch-input-$n.parquet"
  if [ ! -f "$input" ]; then
    echo "bench: writing $n synthetic records to $input"
    "$BIN_DIR/examples/synthetic_records" "$input" "$n" 2>&1 | tail -n 1
  fi
  echo "bench: batch CLI peak RSS, $n records ($(du -h "$input" | cut -f1) of Parquet)"
  batch_run batch_cli "$n"
  grep -h "counted through disk" "$OUT/batch_cli-$n.time" || true
  RSS[$n]=$rss
done

if [ -n "${BENCH_CLUSTER:-}" ]; then
  # deploy/ballista's scheduler takes plans only with its secret.
  if [ -z "${HUSHMAP_CLUSTER_SECRET:-}${HUSHMAP_CLUSTER_SECRET_FILE:-}" ] && [ -f deploy/ballista/run/secret ]; then
    export HUSHMAP_CLUSTER_SECRET_FILE="$PWD/deploy/ballista/run/secret"
  fi
  for n in $BATCH_SIZES; do
    echo "bench: batch on the cluster $BENCH_CLUSTER, $n records"
    batch_run batch_cli_cluster "$n" --cluster "$BENCH_CLUSTER"
    grep -q "counted on the cluster" "$OUT/batch_cli_cluster-$n.time" ||
      { echo "bench: the run did not count on the cluster" >&2; exit 1; }
  done
  # The executors' peak RSS since they started (deploy/ballista's only).
  for f in deploy/ballista/run/executor-*.pid; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || continue
    echo "executor_peak_rss_kib,$(basename "$f" .pid),$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$f")/status")"
  done
fi

first=$(echo "$SIZES" | awk '{print $1}')
echo "bench: PipelineDP and OpenDP (Polars) on $first records"
"$VENV/bin/python" bench/python/pipelinedp_release.py "$OUT/records-$first.parquet" | tee "$OUT/pipelinedp-$first.csv"
"$VENV/bin/python" bench/python/opendp_polars_release.py "$OUT/records-$first.parquet" 2>/dev/null | tee "$OUT/opendp-$first.csv"

echo "bench: streaming, $first records"
deploy/kafka/up.sh >/dev/null
BENCH_RECORDS="$first" cargo bench -q -j"$JOBS" "${BENCH_ARGS[@]}" --bench stream 2>/dev/null | tee "$OUT/stream-$first.csv"
[ -s "$OUT/stream-$first.csv" ] || { echo "bench: the stream bench wrote nothing" >&2; exit 1; }

echo "bench: single vs partitioned aggregation, $first records"
INSTANCES="${BENCH_INSTANCES:-1 2 3}"
[ "$SHORT" = 1 ] && INSTANCES="${BENCH_INSTANCES:-1 2}"
BENCH_RECORDS="$first" BENCH_INSTANCES="$INSTANCES" cargo bench -q -j"$JOBS" "${BENCH_ARGS[@]}" --bench partitioned 2>/dev/null | tee "$OUT/partitioned-$first.csv"
grep -q "^partitioned_" "$OUT/partitioned-$first.csv" || { echo "bench: the partitioned bench did not finish" >&2; exit 1; }

dp_ms=$(awk -F, '/^dp_release_ms/ {print $2}' "$OUT/engine-$first.csv")
ahead_ms=$(awk -F, '/^dp_release_noise_ahead_ms/ {print $2}' "$OUT/engine-$first.csv")
echo
echo "summary ($first records):"
awk -F, -v dp="$dp_ms" '/^pipelinedp_s/ {printf "  PipelineDP %.2f s = %.0fx Hushmap'\''s DP release (%.0f ms)\n", $2, $2*1000/dp, dp}' "$OUT/pipelinedp-$first.csv"
awk -F, -v dp="$ahead_ms" '/^pipelinedp_s/ {printf "  PipelineDP %.2f s = %.0fx Hushmap'\''s DP release with its noise drawn ahead (%.0f ms)\n", $2, $2*1000/dp, dp}' "$OUT/pipelinedp-$first.csv"
awk -F, -v dp="$dp_ms" '/^opendp_polars_s/ {printf "  OpenDP Polars %.2f s = %.0fx Hushmap'\''s DP release\n", $2, $2*1000/dp}' "$OUT/opendp-$first.csv"
grep ratio "$OUT/engine-$first.csv" | sed 's/^/  /'
grep ratio "$OUT/stream-$first.csv" | sed 's/^/  /'
set -- $BATCH_SIZES
if [ $# -ge 2 ]; then
  awk -v a="${RSS[$1]}" -v b="${RSS[$2]}" -v n1="$1" -v n2="$2" \
    'BEGIN {printf "  peak RSS %d records %.0f MiB, %d records %.0f MiB: ratio %.2f\n", n1, a/1024, n2, b/1024, b/a}'
fi
