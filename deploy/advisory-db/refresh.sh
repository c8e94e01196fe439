#!/usr/bin/env bash
# Refreshes the vendored RustSec advisory database (rustsec-advisory-db.tar.xz
# and SNAPSHOT) from GitHub, on a machine that can reach it; commit both.
#
#   deploy/advisory-db/refresh.sh [GIT-URL-OR-PATH]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source="${1:-https://github.com/rustsec/advisory-db}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q --depth 1 "$source" "$work/db"
commit="$(git -C "$work/db" rev-parse HEAD)"
date="$(git -C "$work/db" show -s --format=%cI HEAD)"
# Reproducible: sorted names, the commit's time, no owners.
tar -C "$work/db" --sort=name --mtime="$date" --owner=0 --group=0 --numeric-owner \
  -cJf "$here/rustsec-advisory-db.tar.xz" crates rust LICENSE.txt README.md
sha256="$(sha256sum "$here/rustsec-advisory-db.tar.xz" | cut -d' ' -f1)"
sed -i -e "s/^commit=.*/commit=$commit/" -e "s/^date=.*/date=$date/" -e "s/^sha256=.*/sha256=$sha256/" "$here/SNAPSHOT"
echo "advisory-db: $commit of $date"
