#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer,
# starting from the corpus in fuzz/corpus/<target> (kept in the repo,
# minimised with `cargo +nightly fuzz cmin`; new finds go to
# fuzz/target/new-corpus) and the inputs in fuzz/regressions/<target> that
# once failed. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/.
#
#   fuzz/run.sh          # 60 s per target
#   fuzz/run.sh 3600     # the longer run docs/RELIABILITY.md records
#   fuzz/run.sh 10       # a smoke run (CI): see below
#   FUZZ_BUILD_ONLY=1 fuzz/run.sh 10   # only build (deploy/test.sh does it
#                                      # early, in the background)
#
# A run of 30 s or less per target is a smoke run: it replays the corpus
# and the regressions and fuzzes briefly from an unoptimised build (what
# `cargo fuzz build --dev` makes: libFuzzer, address sanitizer, debug
# assertions), built with plain cargo so that cargo-fuzz need not be
# installed. Cold, on 2 cores, that build took 96 s where the optimised
# one took 304 s and installing cargo-fuzz about 4 minutes more; the
# optimised build only pays for itself over longer runs.
#
# Needs a nightly toolchain (libFuzzer's instrumentation flags) and, for
# runs over 30 s, cargo-fuzz (deploy/tools.sh, prebuilt); both are
# installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-60}"
# The fuzz targets build with nightly: a stable clippy-driver left as the
# workspace's rustc wrapper by deploy/test.sh (HUSHMAP_CLIPPY=1) would
# compile them with the wrong compiler.
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
targets=(submission coarse_record release bounded)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing a nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
# What `cargo fuzz build --dev` passes rustc (cargo-fuzz 0.13.2,
# src/project.rs), for the smoke run, which then needs no cargo-fuzz:
# installing it from source took longer than the whole smoke run.
SMOKE_RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions"
HOST="$(rustc +nightly -vV | sed -n 's/^host: //p')"

smoke=0
if [ "$seconds" -le 30 ]; then
  smoke=1
  echo "fuzz: building ${targets[*]} (smoke run: unoptimised, address sanitizer)"
  RUSTFLAGS="$SMOKE_RUSTFLAGS" cargo +nightly build --bins --target "$HOST" --target-dir target/smoke 2>&1 | tail -n 1
else
  # cargo-fuzz, prebuilt, into deploy/.tools/bin (deploy/tools.sh).
  ../deploy/tools.sh
  export PATH="$PWD/../deploy/.tools/bin:$PATH"
  echo "fuzz: building ${targets[*]} (release, address sanitizer; the first build takes minutes)"
  cargo +nightly fuzz build 2>&1 | tail -n 1
fi
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
  echo "fuzz: built"
  exit 0
fi
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  # New inputs go to a scratch directory (the first one), so the committed
  # corpus and the inputs that once failed are read, never rewritten. To
  # grow the committed corpus: cargo +nightly fuzz cmin <target> corpus/<target>
  # after copying target/new-corpus/<target>/* into it.
  mkdir -p "target/new-corpus/$target"
  dirs=("target/new-corpus/$target" "corpus/$target")
  if [ -d "regressions/$target" ]; then dirs+=("regressions/$target"); fi
  args=(-max_total_time="$seconds" -max_len=20000 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ "$smoke" = 1 ]; then
    # As `cargo fuzz run` runs it: failing inputs to artifacts/<target>/.
    mkdir -p "artifacts/$target"
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0" \
      "target/smoke/$HOST/debug/$target" -artifact_prefix="$PWD/artifacts/$target/" "${dirs[@]}" "${args[@]}" 2>&1 \
      | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)|ERROR|panicked|SUMMARY" || true
  else
    cargo +nightly fuzz run "$target" "${dirs[@]}" -- "${args[@]}" 2>&1 \
      | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)|ERROR|panicked|SUMMARY" || true
  fi
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found a failing input in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no failures"
