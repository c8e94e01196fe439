#!/usr/bin/env bash
# Runs every test of the workspace against a real Kafka broker.
#
#   deploy/test.sh              # all tests
#   deploy/test.sh -p hushmap-ingest   # extra arguments go to `cargo test`
#
# Starts the broker (deploy/kafka/up.sh) when none is running and stops it
# afterwards; a broker that was already running is left alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/kafka/env.sh

# The dashboard page is tested in a real browser: Debian's chromium.
if ! command -v "${HUSHMAP_CHROMIUM:-chromium}" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: the browser test needs chromium (apt-get install chromium) or HUSHMAP_CHROMIUM=/path" >&2
    exit 1
  fi
fi

# The self-check page speaks Hindi and Marathi: a Devanagari font, so that
# the browser tests' screenshots show the script rather than empty boxes
# (the tests themselves read text, not pixels).
if command -v fc-list >/dev/null && [ -z "$(fc-list :lang=hi)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing a Devanagari font for the screenshots"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-lohit-deva >/dev/null
  else
    echo "test: no Devanagari font (apt-get install fonts-lohit-deva): Hindi and Marathi screenshots will show boxes" >&2
  fi
fi

# The container images are built with buildah (no daemon, no registry).
if ! command -v buildah >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing buildah for the image test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
  else
    echo "test: the image test needs buildah (apt-get install buildah)" >&2
    exit 1
  fi
fi

# Browser tests drive that chromium through playwright-core (no browser
# download), and check the self-check page with axe-core.
if [ ! -d ingest/tests/browser/node_modules/playwright-core ] || [ ! -d ingest/tests/browser/node_modules/axe-core ]; then
  echo "test: installing playwright-core for the browser tests"
  npm ci --prefix ingest/tests/browser --no-audit --no-fund >/dev/null
fi

# The dashboard's page is bundled from dashboard/web (Leaflet, Natural Earth
# outlines) and its browser test runs from there too.
if [ ! -d dashboard/web/node_modules/playwright-core ] || [ ! -d dashboard/web/node_modules/axe-core ]; then
  echo "test: installing the dashboard page's packages (npm ci)"
  npm ci --prefix dashboard/web --no-audit --no-fund >/dev/null
fi

# The researcher-client test runs pyarrow, polars and DuckDB from a
# test-only virtualenv.
deploy/python-venv.sh integration/python/.venv integration/python/requirements.txt \
  "the researcher client's pyarrow, pandas, polars, duckdb"

started_kafka=0
if ! kafka_running; then
  started_kafka=1
fi
deploy/kafka/up.sh
cleanup() {
  if [ "$started_kafka" = 1 ]; then
    deploy/kafka/down.sh
  fi
}
trap cleanup EXIT

export HUSHMAP_TEST_KAFKA="$KAFKA_BOOTSTRAP"
echo "test: building the workspace (2 jobs; the first build takes a while) at ${SECONDS}s"
# The process tests (soak, faults, secure defaults) start the service
# binaries from target/debug; `cargo test` builds a binary only for a
# package with integration tests of its own, so build them all first.
# `--tests` with `--bins` builds them with the tests' features (proptest's
# dev-dependency turns on rand and getrandom features that reach DataFusion
# through uuid): built with `--bins` alone, the binaries' dependencies would
# be a second copy of the whole DataFusion stack, minutes and gigabytes more.
cargo build --workspace --locked -j2 --bins --tests

# Batch mode's cluster test counts on a real Ballista cluster: a scheduler
# and two executors from the build above (deploy/ballista), stopped at the
# end whatever happens.
deploy/ballista/up.sh
cleanup() {
  deploy/ballista/down.sh >/dev/null || true
  if [ "$started_kafka" = 1 ]; then
    deploy/kafka/down.sh
  fi
}
export HUSHMAP_TEST_BALLISTA="df://127.0.0.1:${HUSHMAP_BALLISTA_PORT:-50050}"
if [ "$#" -gt 0 ]; then
  echo "test: running the selected tests at ${SECONDS}s"
  cargo test --workspace --locked -j2 "$@"
else
  # A full run in two lanes side by side: most of these tests wait on Kafka
  # and on window deadlines, not on the CPU, and one after another they
  # took 16 minutes. deploy/test-lanes.sh runs the test binaries as cargo
  # would (from each package's directory), the four that start brokers of
  # their own in one lane and every other binary in the other; the
  # doctests follow.
  # The benches' short mode (below) needs oha; a fresh machine builds it
  # here, on one job at the lowest priority, while the lanes mostly wait,
  # instead of for minutes after them.
  oha_install=
  if [ "${HUSHMAP_BENCH_SHORT:-1}" != 0 ]; then
    BENCH_SHORT=1 BENCH_JOBS=1 nice -n 19 bench/oha.sh > target/oha-install.log 2>&1 &
    oha_install=$!
  fi
  echo "test: running the workspace tests in two lanes at ${SECONDS}s"
  deploy/test-lanes.sh
  echo "test: running the doctests at ${SECONDS}s"
  cargo test --workspace --locked -j2 --doc
fi

# The Kubernetes manifests: schemas, references, and each service's own
# check of the configuration its Deployment gives it (a full run only).
if [ "$#" -eq 0 ]; then
  echo "test: checking the Kubernetes manifests (deploy/k8s/validate.sh) at ${SECONDS}s"
  deploy/k8s/validate.sh
  # The images the manifests name, built here from the test build's
  # binaries (a release build would add a quarter of an hour; the images'
  # make-up is the same), and each binary's check of its workload's
  # configuration run inside its image's root file system.
  echo "test: building and checking the images (deploy/images) at ${SECONDS}s"
  HUSHMAP_BIN_DIR=target/debug deploy/images/build.sh
  HUSHMAP_BIN_DIR=target/debug deploy/images/check.sh
fi

# Every benchmark script once in its short mode (bench/short.sh: the dev
# build above, tiny inputs), so that none can rot unnoticed; a full run
# only, and HUSHMAP_BENCH_SHORT=0 skips it.
if [ "$#" -eq 0 ] && [ "${HUSHMAP_BENCH_SHORT:-1}" != 0 ]; then
  if [ -n "${oha_install:-}" ] && ! wait "$oha_install"; then
    cat target/oha-install.log >&2
    echo "test: installing oha for the benches' short mode failed" >&2
    exit 1
  fi
  echo "test: the benchmark scripts in their short mode (bench/run.sh --short all) at ${SECONDS}s"
  # The batch step's cluster runs too, on the tests' cluster.
  BENCH_CLUSTER="$HUSHMAP_TEST_BALLISTA" bench/run.sh --short all > target/bench-short.log 2>&1 || {
    tail -n 40 target/bench-short.log >&2
    echo "test: a benchmark script failed in its short mode (whole output: target/bench-short.log)" >&2
    exit 1
  }
fi

# The fuzz targets (libFuzzer, nightly) for HUSHMAP_FUZZ_SECS each (default
# 45, three minutes for the four targets; 0 skips), on a full run only:
# arguments select particular tests.
fuzz_secs="${HUSHMAP_FUZZ_SECS:-45}"
if [ "$#" -eq 0 ] && [ "$fuzz_secs" != 0 ]; then
  echo "test: fuzzing each target for ${fuzz_secs}s (fuzz/run.sh) at ${SECONDS}s"
  fuzz/run.sh "$fuzz_secs"
fi
echo "test: done in ${SECONDS}s"
