#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer,
# starting from the corpus in fuzz/corpus/<target> (kept in the repo,
# minimised with `cargo +nightly fuzz cmin`; new finds go to
# fuzz/target/new-corpus) and the inputs in fuzz/regressions/<target> that
# once failed. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/.
#
#   fuzz/run.sh          # 60 s per target (CI)
#   fuzz/run.sh 3600     # the longer run docs/RELIABILITY.md records
#
# Needs a nightly toolchain (libFuzzer's instrumentation flags) and
# cargo-fuzz; both are installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-60}"
targets=(submission coarse_record release bounded)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing a nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2
fi

echo "fuzz: building ${targets[*]} (release, address sanitizer; the first build takes minutes)"
for target in "${targets[@]}"; do
  cargo +nightly fuzz build "$target" 2>&1 | tail -n 1
done
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  # New inputs go to a scratch directory (the first one), so the committed
  # corpus and the inputs that once failed are read, never rewritten. To
  # grow the committed corpus: cargo +nightly fuzz cmin <target> corpus/<target>
  # after copying target/new-corpus/<target>/* into it.
  mkdir -p "target/new-corpus/$target"
  dirs=("target/new-corpus/$target" "corpus/$target")
  if [ -d "regressions/$target" ]; then dirs+=("regressions/$target"); fi
  cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -max_len=20000 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)|ERROR|panicked|SUMMARY" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target found a failing input in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no failures"
