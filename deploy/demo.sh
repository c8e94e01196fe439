#!/usr/bin/env bash
# The whole Hushmap on this machine: Kafka, ingest, aggregate, dashboard and
# synthetic traffic. Prints the dashboard URL; Ctrl-C stops everything it
# started (a Kafka that was already running is left running).
#
# Demo settings: 60-second windows (dev mode), ε = 1 per window, 100
# submissions/s (override with HUSHMAP_DEMO_WINDOW_SECS / HUSHMAP_DEMO_RATE). The
# contributor secret, payload key, topics and the development identity
# provider's key are made per demo run: each run is a deployment of its own,
# whose schedule starts at the window it starts in.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source deploy/kafka/env.sh

RUN_DIR="$PWD/.run"
mkdir -p "$RUN_DIR"
WINDOW_SECS="${HUSHMAP_DEMO_WINDOW_SECS:-60}"
RATE="${HUSHMAP_DEMO_RATE:-100}"

if ! pkg-config --exists openssl 2>/dev/null; then
  echo "demo: the services link the system's OpenSSL: install its development files and pkg-config (Debian: apt-get install libssl-dev pkg-config)" >&2
  exit 1
fi
started_kafka=0
kafka_running || started_kafka=1
deploy/kafka/up.sh

echo "demo: building the services (first build takes several minutes on 2 cores)"
cargo build --locked -j2 --bin hushmap-ingest --bin hushmap-aggregate --bin hushmap-dashboard --bin hushmap-traffic --bin hushmap-dev-idp

# This run's own topics: a run is a deployment whose schedule begins now;
# the releases of an earlier run are not its history.
RUN_ID="$(date +%s)"
SUBMISSIONS_TOPIC="hushmap.demo.$RUN_ID.submissions"
RELEASES_TOPIC="hushmap.demo.$RUN_ID.releases"
# The measurements behind each release, for researchers (estimates=measured).
MEASUREMENTS_TOPIC="hushmap.demo.$RUN_ID.releases.measured"
# Submissions are stamped by the broker as it appends them (the aggregator
# refuses a topic whose producers stamp their own: deploy/kafka/env.sh).
for topic in "$SUBMISSIONS_TOPIC:6:message.timestamp.type=LogAppendTime" \
  "$RELEASES_TOPIC:1:" "$MEASUREMENTS_TOPIC:1:"; do
  IFS=: read -r name partitions config <<<"$topic"
  kafka_admin org.apache.kafka.tools.TopicCommand --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1 \
    ${config:+--config "$config"} >/dev/null
done

# The development identity provider's key pair (Ed25519): the sign-in page
# and the traffic's signed-in people sign ID tokens with the private half;
# ingest verifies them with the public half.
IDP_DIR="$RUN_DIR/idp"
mkdir -p "$IDP_DIR"
openssl genpkey -algorithm ed25519 -out "$IDP_DIR/dev-idp.key.pem" 2>/dev/null
openssl pkey -in "$IDP_DIR/dev-idp.key.pem" -pubout -out "$IDP_DIR/dev-idp.pem"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: stopping services"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  if [ "$started_kafka" = 1 ]; then
    deploy/kafka/down.sh
  else
    for topic in "$SUBMISSIONS_TOPIC" "$RELEASES_TOPIC" "$MEASUREMENTS_TOPIC"; do
      kafka_admin org.apache.kafka.tools.TopicCommand --delete --topic "$topic" >/dev/null 2>&1 || true
    done
  fi
}
trap cleanup EXIT INT TERM

export HUSHMAP_INGEST_DEV_MODE=true HUSHMAP_INGEST_WINDOW_SECS="$WINDOW_SECS" HUSHMAP_INGEST_ALLOWED_LATENESS_SECS=5
export HUSHMAP_INGEST_KAFKA__BROKERS="$KAFKA_BOOTSTRAP" HUSHMAP_INGEST_KAFKA__TOPIC="$SUBMISSIONS_TOPIC"
# The traffic generator is one client sending for thousands of people.
export HUSHMAP_INGEST_RATE_LIMIT__PER_MINUTE=0
# Signed-in people: ID tokens of the development identity provider.
export HUSHMAP_INGEST_IDENTITY__PEM_FILES="[\"$IDP_DIR/dev-idp.pem\"]"
export HUSHMAP_INGEST_IDENTITY__ISSUER=http://127.0.0.1:8090 HUSHMAP_INGEST_IDENTITY__AUDIENCE=hushmap-selfcheck
export HUSHMAP_INGEST_IDENTITY__AUTHORIZATION_ENDPOINT=http://127.0.0.1:8090/authorize
export HUSHMAP_INGEST_IDENTITY__TOKEN_ENDPOINT=http://127.0.0.1:8090/token
export HUSHMAP_AGGREGATE_DEV_MODE=true HUSHMAP_AGGREGATE_WINDOW_SECS="$WINDOW_SECS" HUSHMAP_AGGREGATE_ALLOWED_LATENESS_SECS=5
export HUSHMAP_AGGREGATE_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
export HUSHMAP_AGGREGATE_KAFKA__INPUT_TOPIC="$SUBMISSIONS_TOPIC" HUSHMAP_AGGREGATE_KAFKA__OUTPUT_TOPIC="$RELEASES_TOPIC"
export HUSHMAP_AGGREGATE_KAFKA__MEASUREMENTS_TOPIC="$MEASUREMENTS_TOPIC" HUSHMAP_DASHBOARD_KAFKA__MEASUREMENTS_TOPIC="$MEASUREMENTS_TOPIC"
export HUSHMAP_AGGREGATE_KAFKA__GROUP_ID="hushmap-demo-$RUN_ID" HUSHMAP_AGGREGATE_KAFKA__TRANSACTIONAL_ID="hushmap-demo-$RUN_ID"
# The schedule starts at the window the demo starts in (a deployment's
# default is the next one), so the first map shows within a window.
export HUSHMAP_AGGREGATE_SCHEDULE_EPOCH="$(( $(date +%s) / WINDOW_SECS * WINDOW_SECS * 1000 ))"
# Short demo windows release far more often than a real deployment, so the
# ledger's day and 30-day budgets are raised to match; the dashboard shows
# the true total.
export HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_DAY=100000
export HUSHMAP_AGGREGATE_PRIVACY__MAX_EPSILON_PER_HORIZON=100000
export HUSHMAP_AGGREGATE_PRIVACY__MAX_DELTA_PER_HORIZON=0.0009
export HUSHMAP_DASHBOARD_KAFKA__BROKERS="$KAFKA_BOOTSTRAP" HUSHMAP_DASHBOARD_KAFKA__RELEASES_TOPIC="$RELEASES_TOPIC"
export HUSHMAP_DASHBOARD_DATA_DIR="$RUN_DIR/dashboard-data-$RUN_ID"
# A fresh access token for this demo, both roles; only its hash is kept.
DEMO_TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$DEMO_TOKEN" | target/debug/hushmap-dashboard hash-token --roles analyst,researcher --name demo >"$RUN_DIR/dashboard-tokens"
export HUSHMAP_DASHBOARD_AUTH__TOKENS_FILE="$RUN_DIR/dashboard-tokens"
HUSHMAP_CONTRIBUTOR_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export HUSHMAP_CONTRIBUTOR_SECRET
# Records on the submissions topic are sealed to the aggregator's public
# key; only the aggregator holds the private one. A fresh pair per demo.
PAYLOAD_KEYS="$(target/debug/hushmap-aggregate generate-payload-key --id 1)"
PAYLOAD_PUBLIC_KEY="$(HUSHMAP_PAYLOAD_KEYS="$PAYLOAD_KEYS" target/debug/hushmap-aggregate payload-public-key)"

HUSHMAP_PAYLOAD_PUBLIC_KEY="$PAYLOAD_PUBLIC_KEY" target/debug/hushmap-ingest >"$RUN_DIR/ingest.log" 2>&1 &
pids+=($!)
HUSHMAP_PAYLOAD_KEYS="$PAYLOAD_KEYS" target/debug/hushmap-aggregate >"$RUN_DIR/aggregate.log" 2>&1 &
pids+=($!)
target/debug/hushmap-dashboard >"$RUN_DIR/dashboard.log" 2>&1 &
pids+=($!)
target/debug/hushmap-dev-idp serve --key "$IDP_DIR/dev-idp.key.pem" >"$RUN_DIR/dev-idp.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then break; fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "demo: a service exited; see $RUN_DIR/*.log" >&2; tail -n 5 "$RUN_DIR"/*.log >&2; exit 1; }
  done
  sleep 0.5
done

# A population that comes back: 30% signed in, the rest anonymous browsers
# that send back their contributor tokens.
target/debug/hushmap-traffic --rate "$RATE" --idp-key "$IDP_DIR/dev-idp.key.pem" >"$RUN_DIR/traffic.log" 2>&1 &
pids+=($!)

cat <<MSG

  Hushmap is running.
    Dashboard:  http://127.0.0.1:8081/   (log in with the token below)
    Token:      $DEMO_TOKEN   (analyst + researcher, this demo only)
    Exports:    curl -H "Authorization: Bearer \$TOKEN" 'http://127.0.0.1:8081/api/v1/export?format=parquet' -o cells.parquet
    Flight:     grpc://127.0.0.1:8815 (docs/RESEARCHERS.md)
    Self-check: http://127.0.0.1:8080/   ("Sign in" goes to the development identity provider, :8090)
    Ingest:     POST http://127.0.0.1:8080/v1/submissions
    ID token:   target/debug/hushmap-dev-idp id-token --key $IDP_DIR/dev-idp.key.pem --subject you
    Metrics:    http://127.0.0.1:8083/metrics (ingest admin), http://127.0.0.1:8082/metrics (aggregate)
    Traffic:    $RATE submissions/s; first release about $((WINDOW_SECS + 5)) s after start
    Logs:       $RUN_DIR/*.log

  Ctrl-C stops everything.
MSG
wait "${pids[0]}"
