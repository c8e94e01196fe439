#!/usr/bin/env bash
# Starts a single-node KRaft Kafka on 127.0.0.1:9092 in the background and
# creates Hushmap's topics. Idempotent: on a running broker it only makes sure
# the topics exist.
#
#   deploy/kafka/up.sh            # fetch if needed, format if needed, start
#   HUSHMAP_KAFKA_PORT=19092 deploy/kafka/up.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

"$KAFKA_DIR/fetch.sh"
mkdir -p "$KAFKA_RUN" "$KAFKA_LOGS"

if kafka_running; then
  echo "kafka: already running (pid $(cat "$KAFKA_PID_FILE")) on $KAFKA_BOOTSTRAP"
else
  if kafka_port_open; then
    echo "kafka: port $KAFKA_PORT is taken by another process; stop it or set HUSHMAP_KAFKA_PORT" >&2
    exit 1
  fi
  sed -e "s#@DATA_DIR@#$KAFKA_DATA#" -e "s#@PORT@#$KAFKA_PORT#" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#" \
      "$KAFKA_DIR/server.properties.in" > "$KAFKA_RUN/server.properties"
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    echo "kafka: formatting KRaft storage in $KAFKA_DATA"
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$KAFKA_RUN/server.properties" >/dev/null
  fi
  echo "kafka: starting broker (logs in $KAFKA_LOGS)"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_LOGS" -cp "$KAFKA_LIB/*" \
    kafka.Kafka "$KAFKA_RUN/server.properties" >"$KAFKA_LOGS/stdout.log" 2>&1 &
  echo $! > "$KAFKA_PID_FILE"
fi

printf "kafka: waiting for the broker"
for _ in $(seq 1 120); do
  if ! kafka_running; then
    echo; echo "kafka: broker exited during start-up; last log lines:" >&2
    tail -n 30 "$KAFKA_LOGS/stdout.log" "$KAFKA_LOGS/server.log" >&2 2>/dev/null || true
    exit 1
  fi
  if kafka_port_open && kafka_java org.apache.kafka.tools.TopicCommand \
       --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>&1; then
    echo " ready"
    break
  fi
  printf "."
  sleep 1
done
kafka_port_open || { echo; echo "kafka: broker did not answer in time" >&2; exit 1; }

# Creates a topic if missing and (re)applies its settings, so a broker
# started by an older script gets today's retention too.
create_topic() {
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --entity-type topics --entity-name "$1" --alter --add-config "$3" >/dev/null
}
# Submissions: sealed coarse records, kept just long enough to be released:
# the window (HUSHMAP_WINDOW_SECS, default 1 day) plus allowed lateness
# (HUSHMAP_LATENESS_SECS, default 10 min) plus a margin for an aggregator
# outage (HUSHMAP_OUTAGE_MARGIN_SECS, default 6 h): 30 h 10 min by default.
# Kafka deletes whole segments only, so segments roll every hour; without
# that the default 7-day segment would keep records up to a week.
window_secs="${HUSHMAP_WINDOW_SECS:-86400}"
lateness_secs="${HUSHMAP_LATENESS_SECS:-600}"
margin_secs="${HUSHMAP_OUTAGE_MARGIN_SECS:-21600}"
retention_ms=$(( (window_secs + lateness_secs + margin_secs) * 1000 ))
create_topic hushmap.submissions.v1 6 \
  "retention.ms=$retention_ms,segment.ms=3600000,cleanup.policy=delete"
# Releases: noisy aggregates only, one record per window; kept for good
# (the aggregator restores its ledger and the dashboard its store from them).
create_topic hushmap.releases.v1 1 "retention.ms=-1,retention.bytes=-1,cleanup.policy=delete"
echo "kafka: topics ready on $KAFKA_BOOTSTRAP"
