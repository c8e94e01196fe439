#!/usr/bin/env bash
# Runs Hushmap's tests against a real Kafka broker.
#
#   deploy/test.sh                       # everything (what CI runs)
#   deploy/test.sh --test soak           # one area: a module of a suite, or a test file
#   deploy/test.sh --test flood --test schedule
#   deploy/test.sh -p hushmap-privacy    # one package's tests (a filter: the build stays the workspace's)
#   deploy/test.sh -E 'test(/exactly/)'  # other arguments go to `cargo nextest run`
#                                        #   (filters, -E expressions, --no-capture, ...)
#
# Prerequisites: Rust (rustup), Java 17 and Maven (the broker is fetched from
# Maven Central by deploy/kafka), Python 3 with venv (test tools and clients
# in virtualenvs), OpenSSL's development files with pkg-config, and for the
# browser tests Node.js with npm and Chromium.
# Installs what is missing: cargo-nextest and cargo-deny prebuilt into
# deploy/.tools (deploy/tools.sh); as root on Debian, libssl-dev, chromium,
# a Devanagari font and, for a full run, buildah, with apt-get (elsewhere it says what to
# install and stops). `--test NAME` installs only what NAME needs.
#
# The test runner is cargo-nextest (.config/nextest.toml says why and how):
# each test in a process of its own, four at a time, the tests that start
# brokers of their own one at a time, slow tests named, hung ones ended after
# 10 minutes. A full run then runs the doctests, checks the Kubernetes
# manifests, builds the images, runs every bench script in its short mode
# and fuzzes each fuzz target (HUSHMAP_FUZZ_SECS, default 45, 0 skips).
#
# Starts the broker (deploy/kafka/up.sh) when none is running and stops it
# afterwards; a broker that was already running is left alone. Same for the
# Ballista cluster that batch mode's cluster test counts on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/kafka/env.sh

# The suites: one test binary per package, a module per area. A name given
# with --test is a module of one of these, or a test file of its own
# (leakscan's `planted`).
suite_dirs=(tests/suite aggregate/tests/suite ingest/tests/suite)
test_files=(leakscan/tests)
# What areas need beyond Kafka and the build.
browser_areas=" selfcheck_page alerts dashboard_page provisional_map "
python_areas=" dashboard_access utility "
ballista_areas=" batch_mode "

areas=()
packages=()
passthrough=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --test)
      [ "$#" -ge 2 ] || { echo "test: --test takes a name" >&2; exit 2; }
      areas+=("$2"); shift 2 ;;
    --test=*) areas+=("${1#--test=}"); shift ;;
    # A package is selected by a filter, never by cargo's -p: built alone,
    # a package gets other features than in the workspace, and with them a
    # second build of its dependencies.
    -p | --package)
      [ "$#" -ge 2 ] || { echo "test: $1 takes a package name" >&2; exit 2; }
      packages+=("$2"); shift 2 ;;
    *) passthrough+=("$1"); shift ;;
  esac
done
full=0
if [ "${#areas[@]}" = 0 ] && [ "${#packages[@]}" = 0 ] && [ "${#passthrough[@]}" = 0 ]; then full=1; fi

# Each --test name to a nextest filter: a suite module, or a test binary.
filter=
for area in ${areas[@]+"${areas[@]}"}; do
  area_filter=
  for dir in "${suite_dirs[@]}"; do
    if [ "$area" != common ] && [ "$area" != main ] && [ -f "$dir/$area.rs" ]; then
      area_filter="(binary(suite) & test(/^$area::/))"
    fi
  done
  for dir in "${test_files[@]}"; do
    if [ -f "$dir/$area.rs" ]; then area_filter="binary($area)"; fi
  done
  if [ -z "$area_filter" ]; then
    echo "test: no test area named '$area'; the areas are:" >&2
    for dir in "${suite_dirs[@]}" "${test_files[@]}"; do
      echo "  $dir: $(cd "$dir" && ls ./*.rs | sed -e 's|^\./||' -e 's|\.rs$||' | grep -vx 'main\|common' | tr '\n' ' ')" >&2
    done
    exit 2
  fi
  filter="${filter:+$filter | }$area_filter"
done

for package in ${packages[@]+"${packages[@]}"}; do
  filter="${filter:+$filter | }package($package)"
done

# What this run needs: a full run or free arguments need everything; named
# areas only what they need.
need() { # need KIND: some area of this run needs KIND
  local list=$1 area
  [ "${#areas[@]}" = 0 ] && return 0
  for area in "${areas[@]}"; do
    case "$list" in *" $area "*) return 0 ;; esac
  done
  return 1
}

apt_install() { # apt_install PACKAGE WHY
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing $1 ($2)"
    if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "test: $2 needs $1 (apt-get install $1, as root)" >&2
    return 1
  fi
}

# The services link the system's OpenSSL (.cargo/config.toml says why).
if ! pkg-config --exists openssl 2>/dev/null; then
  command -v pkg-config >/dev/null || apt_install pkg-config "the build (it finds the system's OpenSSL)"
  apt_install libssl-dev "the build (the services link the system's OpenSSL)"
fi

deploy/tools.sh
NEXTEST="$PWD/deploy/.tools/bin/cargo-nextest"

if need "$browser_areas"; then
  # The pages are tested in a real browser: Debian's chromium, driven by
  # playwright-core from npm (no browser download), checked with axe-core.
  if ! command -v "${HUSHMAP_CHROMIUM:-chromium}" >/dev/null; then
    apt_install chromium "the browser tests (or set HUSHMAP_CHROMIUM=/path)"
  fi
  # The self-check page speaks Hindi and Marathi: a Devanagari font, so that
  # the screenshots show the script rather than empty boxes (the tests
  # themselves read text, not pixels).
  if command -v fc-list >/dev/null && [ -z "$(fc-list :lang=hi)" ]; then
    apt_install fonts-lohit-deva "Devanagari in the screenshots" ||
      echo "test: Hindi and Marathi screenshots will show boxes" >&2
  fi
  if [ ! -d ingest/tests/browser/node_modules/playwright-core ] || [ ! -d ingest/tests/browser/node_modules/axe-core ]; then
    echo "test: installing playwright-core for the self-check page's browser tests (npm ci)"
    npm ci --prefix ingest/tests/browser --no-audit --no-fund >/dev/null
  fi
  # The dashboard's page is bundled from dashboard/web and its browser
  # checks run from there too.
  if [ ! -d dashboard/web/node_modules/playwright-core ] || [ ! -d dashboard/web/node_modules/axe-core ]; then
    echo "test: installing the dashboard page's packages (npm ci)"
    npm ci --prefix dashboard/web --no-audit --no-fund >/dev/null
  fi
fi
if [ "$full" = 1 ] && ! command -v buildah >/dev/null; then
  # The container images are built with buildah (no daemon, no registry).
  apt_install buildah "the image test"
fi
if need "$python_areas"; then
  # The researchers' real clients: pyarrow, polars and DuckDB, in a
  # test-only virtualenv.
  deploy/python-venv.sh tests/python/.venv tests/python/requirements.txt \
    "the researcher client's pyarrow, pandas, polars, duckdb"
fi

started_kafka=0
if ! kafka_running; then
  started_kafka=1
fi
deploy/kafka/up.sh
started_ballista=0
cleanup() {
  if [ "$started_ballista" = 1 ]; then deploy/ballista/down.sh >/dev/null || true; fi
  if [ "$started_kafka" = 1 ]; then deploy/kafka/down.sh; fi
}
trap cleanup EXIT
export HUSHMAP_TEST_KAFKA="$KAFKA_BOOTSTRAP"

echo "test: building the workspace (2 jobs; the first build takes a while) at ${SECONDS}s"
# The process tests (soak, faults, secure defaults) start the service
# binaries from target/debug, so every package's binaries are built with the
# tests. `--tests` with `--bins`: the binaries get the tests' features
# (proptest's dev-dependency turns on rand and getrandom features that reach
# DataFusion through uuid); built with `--bins` alone, their dependencies
# would be a second copy of the whole DataFusion stack.
#
# A full run builds every target (the benches and examples too, which the
# benches' short mode runs). HUSHMAP_CLIPPY=1 (what CI sets) lints while it
# builds: clippy-driver, which is rustc with clippy's lints, compiles the
# workspace's own crates, so the lints need no second compile of the
# dependencies (`cargo clippy` checks all of them again, in check mode:
# docs/BENCHMARKS.md, "The test suite and CI"). Set for every cargo command
# of the run, so that none rebuilds our crates without it.
build_targets=(--bins --tests)
if [ "$full" = 1 ]; then build_targets=(--all-targets); fi
if [ "${HUSHMAP_CLIPPY:-0}" = 1 ]; then
  RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)" || {
    echo "test: HUSHMAP_CLIPPY=1 needs clippy (rustup component add clippy)" >&2
    exit 1
  }
  export RUSTC_WORKSPACE_WRAPPER
  # What `cargo clippy -- -D warnings` hands clippy-driver.
  export CLIPPY_ARGS=-Dwarnings
  echo "test: clippy lints the workspace as it builds (-D warnings)"
fi
cargo build --workspace --locked -j2 "${build_targets[@]}"

if need "$ballista_areas"; then
  # Batch mode's cluster test counts on a real Ballista cluster: a scheduler
  # and two executors from the build above (deploy/ballista).
  started_ballista=1
  deploy/ballista/up.sh
  export HUSHMAP_TEST_BALLISTA="df://127.0.0.1:${HUSHMAP_BALLISTA_PORT:-50050}"
fi

oha_install=
if [ "$full" = 1 ] && [ "${HUSHMAP_BENCH_SHORT:-1}" != 0 ]; then
  # The benches' short mode (below) needs oha; a fresh machine builds it
  # while the tests mostly wait, on one job at the lowest priority.
  BENCH_SHORT=1 BENCH_JOBS=1 nice -n 19 bench/oha.sh > target/oha-install.log 2>&1 &
  oha_install=$!
fi
fuzz_secs="${HUSHMAP_FUZZ_SECS:-45}"
fuzz_build=
if [ "$full" = 1 ] && [ "$fuzz_secs" != 0 ]; then
  # Likewise the fuzz targets' build (a nightly toolchain, the targets and
  # their dependencies with the sanitizer's flags, in fuzz/target).
  FUZZ_BUILD_ONLY=1 nice -n 19 fuzz/run.sh "$fuzz_secs" > target/fuzz-build.log 2>&1 &
  fuzz_build=$!
fi

echo "test: running the tests (cargo nextest) at ${SECONDS}s"
nextest_args=(--workspace --locked --tests --build-jobs 2 --no-tests fail)
if [ -n "$filter" ]; then nextest_args+=(-E "$filter"); fi
"$NEXTEST" nextest run "${nextest_args[@]}" ${passthrough[@]+"${passthrough[@]}"}

if [ "$full" = 1 ]; then
  echo "test: running the doctests at ${SECONDS}s"
  cargo test --workspace --locked -j2 --doc

  # The Kubernetes manifests: schemas, references, and each service's own
  # check of the configuration its Deployment gives it.
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
# only, and HUSHMAP_BENCH_SHORT=0 skips it. The scripts that need no oha
# go first, while its build (started before the tests) may still be
# finishing: on a fresh 2-core machine it did not finish within the tests,
# and waiting for it cost ~3 minutes of a cold CI run.
bench_short() {
  # The batch step's cluster runs too, on the tests' cluster.
  BENCH_CLUSTER="$HUSHMAP_TEST_BALLISTA" bench/run.sh --short "$1" >> target/bench-short.log 2>&1 || {
    tail -n 40 target/bench-short.log >&2
    echo "test: the $1 benchmark script failed in its short mode (whole output: target/bench-short.log)" >&2
    exit 1
  }
}
if [ -n "$oha_install" ]; then
  : > target/bench-short.log
  for what in aggregate dashboard utility; do
    echo "test: the $what benchmark script in its short mode (bench/run.sh --short $what) at ${SECONDS}s"
    bench_short "$what"
  done
  if ! wait "$oha_install"; then
    cat target/oha-install.log >&2
    echo "test: installing oha for the benches' short mode failed" >&2
    exit 1
  fi
  echo "test: the ingest benchmark script in its short mode (bench/run.sh --short ingest) at ${SECONDS}s"
  bench_short ingest
fi

# The fuzz targets (libFuzzer, nightly) for HUSHMAP_FUZZ_SECS each (default
# 45, three minutes for the four targets; 0 skips), on a full run only.
if [ -n "$fuzz_build" ]; then
  if ! wait "$fuzz_build"; then
    cat target/fuzz-build.log >&2
    echo "test: building the fuzz targets failed" >&2
    exit 1
  fi
  echo "test: fuzzing each target for ${fuzz_secs}s (fuzz/run.sh) at ${SECONDS}s"
  fuzz/run.sh "$fuzz_secs"
fi
echo "test: done in ${SECONDS}s"
