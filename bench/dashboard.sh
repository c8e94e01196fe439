#!/usr/bin/env bash
# The dashboard on a realistic history: 30 days of hourly releases
# (BENCH_HOURS, 720 by default) of level-5 cells (BENCH_REGIONS, 150) with
# their two parent levels and six age bands each, seeded straight into a release store.
#
#   bench/dashboard.sh            # ~3 min after the release build
#
# Measures (release build): start-up with the store rebuilt from Parquet,
# API answers and exports over HTTP (curl), the analyst page's load in
# chromium until the map is drawn, and the dashboard's RSS. Needs the broker
# (started here if not running) only because the dashboard consumes the
# releases topic; a fresh, empty topic is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Build jobs: every core unless BENCH_JOBS says otherwise.
JOBS="${BENCH_JOBS:-$(nproc)}"
source deploy/kafka/env.sh
HOURS="${BENCH_HOURS:-720}"
REGIONS="${BENCH_REGIONS:-150}"
RUNS="${BENCH_RUNS:-5}"
OUT=target/bench/dashboard
STORE="$OUT/store-$HOURS-$REGIONS"
mkdir -p "$OUT"

echo "bench: release build of the dashboard and the store seeder"
cargo build -j"$JOBS" --release -p hushmap-dashboard --bin hushmap-dashboard --example seed_store 2>&1 | tail -n 1
[ -d dashboard/web/node_modules/playwright-core ] || npm ci --prefix dashboard/web --no-audit --no-fund >/dev/null

if [ ! -d "$STORE/releases" ]; then
  echo "bench: seeding $HOURS hourly releases of $REGIONS regions"
  target/release/examples/seed_store "$STORE" "$HOURS" "$REGIONS"
fi
du -sh "$STORE/releases" | sed 's/^/bench: store on disk /'

started_kafka=0
kafka_running || started_kafka=1
deploy/kafka/up.sh >/dev/null
TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$TOKEN" | target/release/hushmap-dashboard hash-token --roles analyst,researcher --name bench >"$OUT/tokens"
export HUSHMAP_DASHBOARD_LISTEN=127.0.0.1:18081 HUSHMAP_DASHBOARD_FLIGHT_LISTEN=127.0.0.1:18815
export HUSHMAP_DASHBOARD_DATA_DIR="$STORE" HUSHMAP_DASHBOARD_AUTH__TOKENS_FILE="$OUT/tokens"
export HUSHMAP_DASHBOARD_KAFKA__BROKERS="$KAFKA_BOOTSTRAP" HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC="bench.releases.$(date +%s)"
BASE=http://127.0.0.1:18081

t0=$(date +%s%N)
target/release/hushmap-dashboard >"$OUT/dashboard.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$started_kafka" = 1 ]; then deploy/kafka/down.sh >/dev/null; fi
}
trap cleanup EXIT
until curl -sf "$BASE/healthz" >/dev/null; do
  kill -0 "$pid" || { cat "$OUT/dashboard.log"; exit 1; }
  sleep 0.05
done
echo "bench: start-up (store rebuilt from Parquet) $(( ($(date +%s%N) - t0) / 1000000 )) ms"

timed() { # name url
  local best=999999999 t s
  for _ in 1 2 3; do
    read -r t s < <(curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{time_total} %{size_download}\n' "$2")
    t=$(awk -v t="$t" 'BEGIN { printf "%d", t * 1000000 }')
    [ "$t" -lt "$best" ] && best=$t
  done
  printf 'bench: %-38s %8.1f ms  %10d bytes\n' "$1" "$(awk -v b="$best" 'BEGIN { print b / 1000 }')" "$s"
}
last=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/releases" | python3 -c 'import json,sys; r=json.load(sys.stdin)["releases"]; print(r[-1]["window_start"])')
region=$(curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/heatmap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cells"][0]["region"])')
timed "GET /api/v1/releases" "$BASE/api/v1/releases"
timed "GET /api/v1/heatmap (latest, all ages)" "$BASE/api/v1/heatmap?age_band=all"
timed "GET /api/v1/table (latest)" "$BASE/api/v1/table?window=$last"
timed "GET /api/v1/cell (30-day series)" "$BASE/api/v1/cell?region=$region"
timed "export arrow, one day" "$BASE/api/v1/export?format=arrow&from=$((last - 86400000 + 3600000))"
timed "export arrow, 30 days" "$BASE/api/v1/export?format=arrow"
timed "export parquet, 30 days" "$BASE/api/v1/export?format=parquet"

echo "bench: page load in chromium (fresh context each run)"
node dashboard/web/bench/load.mjs "$BASE" "$TOKEN" "$RUNS" | tee "$OUT/page-load.jsonl"
echo "bench: dashboard RSS $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status), peak $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$pid/status)"
