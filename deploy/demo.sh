#!/usr/bin/env bash
# The whole Hushmap on this machine: Kafka, ingest, aggregate, dashboard and
# synthetic traffic. Prints the dashboard URL; Ctrl-C stops everything it
# started (a Kafka that was already running is left running).
#
# Demo settings: 60-second windows (dev mode), ε = 1 per window, 100
# submissions/s (override with HUSHMAP_DEMO_WINDOW_SECS / HUSHMAP_DEMO_RATE). The
# contributor secret is generated per demo run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/kafka/env.sh

RUN_DIR="$PWD/.run"
mkdir -p "$RUN_DIR"
WINDOW_SECS="${HUSHMAP_DEMO_WINDOW_SECS:-60}"
RATE="${HUSHMAP_DEMO_RATE:-100}"

started_kafka=0
kafka_running || started_kafka=1
deploy/kafka/up.sh

echo "demo: building the services (first build takes several minutes on 2 cores)"
cargo build --locked -j2 --bin hushmap-ingest --bin hushmap-aggregate --bin hushmap-dashboard --bin hushmap-traffic

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping services"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  if [ "$started_kafka" = 1 ]; then deploy/kafka/down.sh; fi
}
trap cleanup EXIT INT TERM

export HUSHMAP_INGEST_DEV_MODE=true HUSHMAP_INGEST_WINDOW_SECS="$WINDOW_SECS" HUSHMAP_INGEST_ALLOWED_LATENESS_SECS=5
export HUSHMAP_INGEST_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
# The traffic generator is one client sending for thousands of people.
export HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE=0
export HUSHMAP_AGGREGATE_DEV_MODE=true HUSHMAP_AGGREGATE_WINDOW_SECS="$WINDOW_SECS" HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS=5
export HUSHMAP_AGGREGATE_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
# Short demo windows release far more often than a real deployment, so the
# ledger's day and 30-day budgets are raised to match; the dashboard shows
# the true total.
export HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_DAY=100000
export HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_HORIZON=100000
export HUSHMAP_AGGREGATE_PRIVACY__MAX_DELTA_PER_HORIZON=0.0009
export HUSHMAP_DASHBOARD_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
export HUSHMAP_DASHBOARD_DATA_DIR="$RUN_DIR/dashboard-data"
# A fresh access token for this demo, both roles; only its hash is kept.
DEMO_TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$DEMO_TOKEN" | target/debug/hushmap-dashboard hash-token --roles analyst,researcher --name demo >"$RUN_DIR/dashboard-tokens"
export HUSHMAP_DASHBOARD_AUTH__TOKENS_FILE="$RUN_DIR/dashboard-tokens"
HUSHMAP_CONTRIBUTOR_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export HUSHMAP_CONTRIBUTOR_SECRET
# Records on the submissions topic are sealed under this key (both
# services hold it); a fresh one per demo.
HUSHMAP_PAYLOAD_KEYS="$(target/debug/hushmap-ingest generate-payload-key --id 1)"
export HUSHMAP_PAYLOAD_KEYS

target/debug/hushmap-ingest >"$RUN_DIR/ingest.log" 2>&1 &
pids+=($!)
target/debug/hushmap-aggregate >"$RUN_DIR/aggregate.log" 2>&1 &
pids+=($!)
target/debug/hushmap-dashboard >"$RUN_DIR/dashboard.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then break; fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "demo: a service exited; see $RUN_DIR/*.log" >&2; tail -n 5 "$RUN_DIR"/*.log >&2; exit 1; }
  done
  sleep 0.5
done

target/debug/hushmap-traffic --rate "$RATE" >"$RUN_DIR/traffic.log" 2>&1 &
pids+=($!)

cat <<MSG

  Hushmap is running.
    Dashboard:  http://127.0.0.1:8081/   (log in with the token below)
    Token:      $DEMO_TOKEN   (analyst + researcher, this demo only)
    Exports:    curl -H "Authorization: Bearer \$TOKEN" 'http://127.0.0.1:8081/api/v1/export?format=parquet' -o cells.parquet
    Flight:     grpc://127.0.0.1:8815 (docs/RESEARCHERS.md)
    Ingest:     POST http://127.0.0.1:8080/v1/submissions
    Metrics:    http://127.0.0.1:8080/metrics (ingest), http://127.0.0.1:8082/metrics (aggregate)
    Traffic:    $RATE submissions/s; first release about $((WINDOW_SECS + 5)) s after start
    Logs:       $RUN_DIR/*.log

  Ctrl-C stops everything.
MSG
wait "${pids[0]}"
