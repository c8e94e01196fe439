# Sourced by each bench script: the short mode (BENCH_SHORT=1, or
# `bench/run.sh --short ...`), which CI runs after the tests so that no
# script can rot unnoticed. A short run uses the tests' dev build (nothing
# of its own to compile but the examples), seconds of load and tiny inputs;
# its figures mean nothing, only that every step still runs and answers.
#
# Sets SHORT (0 or 1), JOBS, BIN_DIR (target/release, or target/debug when
# short) and `dev_build` (the tests' build, plus the examples).
JOBS="${BENCH_JOBS:-$(nproc)}"
SHORT="${BENCH_SHORT:-0}"
if [ "$SHORT" = 1 ]; then
  BIN_DIR="$PWD/target/debug"
  echo "bench: short mode: the tests' dev build, tiny inputs; the figures mean nothing"
else
  BIN_DIR="$PWD/target/release"
fi

# The load tool, oha (crates.io), installed once by `install_oha`: a release
# build in bench/.tools for real runs; for the short mode, which only needs
# answers, a dev build (a fraction of the release build's minutes on a
# fresh machine) in bench/.tools-short, kept apart so that a real run never
# measures with it.
if [ "$SHORT" = 1 ]; then
  OHA_ROOT="$PWD/bench/.tools-short"
  OHA_PROFILE=(--debug)
else
  OHA_ROOT="$PWD/bench/.tools"
  OHA_PROFILE=()
fi
OHA="$OHA_ROOT/bin/oha"
install_oha() {
  if [ ! -x "$OHA" ]; then
    echo "bench: installing oha into $OHA_ROOT (once)"
    # TLS from the system's OpenSSL (native-tls) instead of oha's default
    # rustls on aws-lc (a fifth less build time, measured): every bench
    # speaks plain HTTP on loopback, so the TLS stack is never used.
    cargo install --locked ${OHA_PROFILE[@]+"${OHA_PROFILE[@]}"} --root "$OHA_ROOT" oha \
      --no-default-features --features native-tls -j"$JOBS" >/dev/null
  fi
}

# The workspace's dev build as deploy/test.sh makes it, with the examples:
# the same package selection, so the same features and no second build of
# the dependencies.
dev_build() {
  cargo build --workspace --locked -j"$JOBS" --bins --tests --examples 2>&1 | tail -n 1
}
