#!/usr/bin/env bash
# What may be linked into Hushmap: licences, bans and sources of every
# dependency, by cargo-deny and the rules in deny.toml. CI runs it with the
# lints (.ci/run).
#
#   deploy/deny.sh
#
# cargo-deny (crates.io, a pinned version) is installed into deploy/.tools
# on first use: about 3 minutes on a 2-core machine. Advisories are not
# checked: the RustSec database lives on GitHub, which this project's
# machines cannot reach (deny.toml says so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=0.20.2
ROOT="$PWD/deploy/.tools"
DENY="$ROOT/bin/cargo-deny"
if [ ! -x "$DENY" ] || [ "$("$DENY" --version)" != "cargo-deny $VERSION" ]; then
  echo "deny: installing cargo-deny $VERSION into $ROOT (once)"
  cargo install --locked --quiet --root "$ROOT" --version "$VERSION" cargo-deny -j"${DENY_JOBS:-$(nproc)}"
fi
# Offline and locked: the crates are the ones Cargo.lock names, already
# fetched by the build.
"$DENY" deny --offline --locked --log-level error check licenses bans sources
