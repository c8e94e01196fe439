#!/usr/bin/env bash
# One entry point for the benchmarks; results go to target/bench and are
# recorded by hand in docs/BENCHMARKS.md.
#
#   bench/run.sh ingest      # edge throughput, latency, identity and PoW cost
#   bench/run.sh aggregate   # DP engine vs baselines, batch RSS, streaming
#   bench/run.sh dashboard   # start-up, API, exports, page load, RSS
#   bench/run.sh utility     # accuracy of the published numbers vs the truth
#   bench/run.sh --short all # every script once, tiny (what CI runs; bench/short.sh)
#
# Knobs are environment variables named BENCH_*: BENCH_JOBS (build jobs,
# every core by default), BENCH_SECS and BENCH_CONNECTIONS (ingest),
# BENCH_SIZES, BENCH_BATCH_SIZES, BENCH_BATCH_MEMORY_MB, BENCH_CLUSTER and
# BENCH_RECORDS and BENCH_INSTANCES (aggregate), BENCH_HOURS, BENCH_REGIONS and
# BENCH_RUNS (dashboard), BENCH_PEOPLE, BENCH_RUNS, BENCH_EPSILON and
# BENCH_SEED (utility). Each script's header says what they do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ "${1:-}" = --short ]; then
  export BENCH_SHORT=1
  shift
fi
case "${1:-}" in
  ingest | aggregate | dashboard | utility)
    what="$1"
    shift
    exec "./$what.sh" "$@"
    ;;
  all)
    for what in ingest aggregate dashboard utility; do
      echo "bench: ===== $what ====="
      "./$what.sh"
    done
    ;;
  *)
    echo "usage: bench/run.sh [--short] ingest|aggregate|dashboard|utility|all" >&2
    exit 2
    ;;
esac
