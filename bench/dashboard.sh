#!/usr/bin/env bash
# The dashboard on a realistic history, seeded straight into a release
# store: BENCH_WINDOWS windows (720 by default; BENCH_HOURS is the old name)
# of BENCH_WINDOW_HOURS hours (1) each, of BENCH_REGIONS level-5 cells (150)
# with their two parent levels and six age bands each.
#
#   bench/dashboard.sh            # 30 days hourly, ~3 min after the release build
#   BENCH_WINDOW_HOURS=24 BENCH_REGIONS=13000 BENCH_HISTORY="30 90 365" bench/dashboard.sh
#                                 # national daily windows: RSS against history
#   BENCH_SHORT=1 bench/dashboard.sh   # CI's smoke run (bench/short.sh): 6 windows, dev build
#
# BENCH_DASHBOARD_BIN: another build to measure on the same store.
# BENCH_HISTORY: measure the dashboard on the newest N windows of the
# seeded store for each N listed (hard links into a store of their own;
# the store is seeded with the largest N). Default: all BENCH_WINDOWS once.
#
# Measures (release build): start-up with the store indexed from Parquet,
# API answers and exports over HTTP (curl), the analyst page's load in
# chromium until the map is drawn, and the dashboard's RSS. Needs the broker
# (started here if not running) only because the dashboard consumes the
# releases topic; a fresh, empty topic is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/short.sh
source deploy/kafka/env.sh
WINDOWS="${BENCH_WINDOWS:-${BENCH_HOURS:-720}}"
REGIONS="${BENCH_REGIONS:-150}"
RUNS="${BENCH_RUNS:-5}"
if [ "$SHORT" = 1 ]; then
  WINDOWS="${BENCH_WINDOWS:-6}" REGIONS="${BENCH_REGIONS:-10}" RUNS="${BENCH_RUNS:-1}"
fi
WINDOW_HOURS="${BENCH_WINDOW_HOURS:-1}"
# Another build of the dashboard to measure on the same store (an older
# commit's, for a before/after): BENCH_DASHBOARD_BIN=path.
BIN="${BENCH_DASHBOARD_BIN:-$BIN_DIR/hushmap-dashboard}"
HISTORY="${BENCH_HISTORY:-$WINDOWS}"
for n in $HISTORY; do [ "$n" -gt "$WINDOWS" ] && WINDOWS="$n"; done
OUT=target/bench/dashboard
STORE="$OUT/store-$WINDOWS-$REGIONS-${WINDOW_HOURS}h"
mkdir -p "$OUT"

if [ "$SHORT" = 1 ]; then
  dev_build
else
  echo "bench: release build of the dashboard and the store seeder"
  cargo build -j"$JOBS" --release -p hushmap-dashboard --bin hushmap-dashboard --example seed_store 2>&1 | tail -n 1
fi
[ -d dashboard/web/node_modules/playwright-core ] || npm ci --prefix dashboard/web --no-audit --no-fund >/dev/null

if [ ! -f "$STORE/seeded" ]; then
  echo "bench: seeding $WINDOWS releases of $WINDOW_HOURS h, $REGIONS regions"
  rm -rf "$STORE"
  t0=$(date +%s)
  "$BIN_DIR/examples/seed_store" "$STORE" "$WINDOWS" "$REGIONS" "$WINDOW_HOURS" 2>&1 | awk 'NR % 50 == 0 || /releases in/'
  echo "bench: seeded in $(( $(date +%s) - t0 )) s"
  touch "$STORE/seeded"
fi
du -sh "$STORE/releases" | sed 's/^/bench: store on disk /'

started_kafka=0
kafka_running || started_kafka=1
deploy/kafka/up.sh >/dev/null
TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$TOKEN" | "$BIN" hash-token --roles analyst,researcher --name bench >"$OUT/tokens"
export HUSHMAP_DASHBOARD_LISTEN=127.0.0.1:18081 HUSHMAP_DASHBOARD_FLIGHT_LISTEN=127.0.0.1:18815
export HUSHMAP_DASHBOARD_AUTH__TOKENS_FILE="$OUT/tokens"
export HUSHMAP_DASHBOARD_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
BASE=http://127.0.0.1:18081
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$started_kafka" = 1 ]; then deploy/kafka/down.sh >/dev/null; fi
}
trap cleanup EXIT

timed() { # name url
  local best=999999999 t s code
  for _ in 1 2 3; do
    read -r t s code < <(curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{time_total} %{size_download} %{http_code}\n' "$2")
    [ "$code" = 200 ] || { echo "bench: $1 answered $code" >&2; exit 1; }
    t=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000000 }')
    [ "$t" -lt "$best" ] && best=$t
  done
  printf 'bench: %-38s %8.1f ms  %10d bytes\n' "$1" "$(awk -v b="$best" 'BEGIN { print b / 1000 }')" "$s"
}
mib() { awk -v k="$1" '$1 == k":" { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status"; }

# The dashboard on the newest $1 windows of the seeded store.
measure() {
  local n="$1" store="$STORE"
  if [ "$n" != "$WINDOWS" ]; then
    store="$OUT/store-$n-of-$(basename "$STORE")"
    if [ ! -d "$store" ]; then
      mkdir -p "$store/releases"
      # Hard links of the newest n files, in their day directories.
      (cd "$STORE/releases" && find . -name '*.parquet' | sort -t= -k3 -n | tail -n "$n") |
        while read -r f; do
          mkdir -p "$store/releases/$(dirname "$f")"
          ln "$STORE/releases/$f" "$store/releases/$f"
        done
    fi
  fi
  echo "bench: === $n windows of $WINDOW_HOURS h ($(du -sh "$store/releases" | cut -f1) of Parquet) ==="
  export HUSHMAP_DASHBOARD_DATA_DIR="$store"
  export HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC="bench.releases.$(date +%s%N)"
  local t0
  t0=$(date +%s%N)
  "$BIN" >"$OUT/dashboard-$n.log" 2>&1 &
  pid=$!
  until curl -sf "$BASE/healthz" >/dev/null; do
    kill -0 "$pid" || { cat "$OUT/dashboard-$n.log"; exit 1; }
    sleep 0.05
  done
  echo "bench: start-up (store indexed from Parquet) $(( ($(date +%s%N) - t0) / 1000000 )) ms, RSS $(mib VmRSS)"
  local last first region
  last=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/releases" | python3 -c 'import json,sys; r=json.load(sys.stdin)["releases"]; print(r[-1]["window_start"])')
  first=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/releases" | python3 -c 'import json,sys; r=json.load(sys.stdin)["releases"]; print(r[0]["window_start"])')
  region=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/heatmap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cells"][0]["region"])')
  timed "GET /api/v1/releases" "$BASE/api/v1/releases"
  timed "GET /api/v1/heatmap (latest, all ages)" "$BASE/api/v1/heatmap?age_band=all"
  timed "GET /api/v1/table (latest)" "$BASE/api/v1/table?window=$last"
  timed "GET /api/v1/cell (whole series)" "$BASE/api/v1/cell?region=$region"
  timed "GET /api/v1/alerts (latest)" "$BASE/api/v1/alerts"
  # Best of 3 is a cached read after the first: the first, alone, is the file's.
  printf 'bench: %-38s %8.1f ms\n' "GET /api/v1/heatmap (oldest, from file)" \
    "$(curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{time_total}' "$BASE/api/v1/heatmap?window=$first" | awk '{ print $1 * 1000 }')"
  timed "export arrow, one window" "$BASE/api/v1/export?format=arrow&from=$last"
  # Whole-history exports only for the default (small) store: at national
  # size they are tens of millions of rows.
  if [ -z "${BENCH_HISTORY:-}" ]; then
    timed "export arrow, all" "$BASE/api/v1/export?format=arrow"
    timed "export parquet, all" "$BASE/api/v1/export?format=parquet"
  fi
  echo "bench: page load in chromium (fresh context each run)"
  node dashboard/web/bench/load.mjs "$BASE" "$TOKEN" "$RUNS" | tee "$OUT/page-load-$n.jsonl"
  echo "bench: dashboard RSS ($n windows) $(mib VmRSS), peak $(mib VmHWM)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

for n in $HISTORY; do
  measure "$n"
done
