# Shared settings for the Kafka scripts; sourced, not run.
KAFKA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_PORT="${HUSHMAP_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${HUSHMAP_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_LIB="$KAFKA_DIR/lib"
# Per-port state, so a second broker (e.g. the outage test's) can run beside
# the default one without sharing anything.
if [ "$KAFKA_PORT" = 9092 ]; then KAFKA_SUFFIX=""; else KAFKA_SUFFIX="-$KAFKA_PORT"; fi
KAFKA_DATA="$KAFKA_DIR/data$KAFKA_SUFFIX"
KAFKA_LOGS="$KAFKA_DIR/logs$KAFKA_SUFFIX"
KAFKA_RUN="$KAFKA_DIR/run$KAFKA_SUFFIX"
KAFKA_PID_FILE="$KAFKA_RUN/kafka.pid"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# TLS material, SCRAM passwords and the admin client's settings of a
# SASL_SSL broker (HUSHMAP_KAFKA_SECURITY=sasl_ssl); wiped with the data.
KAFKA_SECRETS="$KAFKA_DIR/secrets$KAFKA_SUFFIX"
# A broker keeps the protocol it was formatted with.
if [ -f "$KAFKA_SECRETS/protocol" ]; then
  KAFKA_PROTOCOL="$(cat "$KAFKA_SECRETS/protocol")"
else
  KAFKA_PROTOCOL="${HUSHMAP_KAFKA_SECURITY:-plaintext}"
fi

kafka_java() {
  # The Kafka tools (storage formatter, topic admin) share the broker's classpath.
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_LOGS" -cp "$KAFKA_LIB/*" "$@"
}

# Runs a Kafka admin tool (TopicCommand, ConfigCommand, AclCommand) against
# this broker, as its admin user when it speaks SASL_SSL.
kafka_admin() {
  local tool="$1"; shift
  if [ "$KAFKA_PROTOCOL" = sasl_ssl ]; then
    kafka_java "$tool" --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --command-config "$KAFKA_SECRETS/admin.properties" "$@"
  else
    kafka_java "$tool" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
  fi
}

# Hushmap's topics on the broker(s) kafka_admin reaches, made if missing and
# their settings (re)applied, so a broker started by an older script gets
# today's retention too. $1: replication factor, $2: min.insync.replicas.
#
# Submissions: sealed coarse records, kept just long enough to be released:
# the window (HUSHMAP_WINDOW_SECS, default 1 day) plus allowed lateness
# (HUSHMAP_LATENESS_SECS, default 10 min) plus a margin for an aggregator
# outage (HUSHMAP_OUTAGE_MARGIN_SECS, default 6 h): 30 h 10 min by default.
# Kafka deletes whole segments only, so segments roll every hour; without
# that the default 7-day segment would keep records up to a week.
# Submissions are stamped by the broker as it appends them
# (message.timestamp.type=LogAppendTime): the aggregator judges lateness by
# that time and refuses to read a topic whose producers stamp their own.
# Releases: noisy aggregates only, one record per window; kept for good
# (the aggregator restores its ledger and the dashboard its store from them).
kafka_make_topics() {
  local replication="$1" min_isr="$2"
  local window_secs="${HUSHMAP_WINDOW_SECS:-86400}"
  local lateness_secs="${HUSHMAP_LATENESS_SECS:-600}"
  local margin_secs="${HUSHMAP_OUTAGE_MARGIN_SECS:-21600}"
  local retention_ms=$(( (window_secs + lateness_secs + margin_secs) * 1000 ))
  local topic partitions config
  while read -r topic partitions config; do
    kafka_admin org.apache.kafka.tools.TopicCommand --create --if-not-exists --topic "$topic" \
      --partitions "$partitions" --replication-factor "$replication" >/dev/null
    kafka_admin kafka.admin.ConfigCommand --entity-type topics --entity-name "$topic" \
      --alter --add-config "$config,min.insync.replicas=$min_isr" >/dev/null
  done <<TOPICS
hushmap.submissions.v1 6 retention.ms=$retention_ms,segment.ms=3600000,cleanup.policy=delete,message.timestamp.type=LogAppendTime
hushmap.bounded.v1 6 retention.ms=$retention_ms,segment.ms=3600000,cleanup.policy=delete
hushmap.releases.v1 1 retention.ms=-1,retention.bytes=-1,cleanup.policy=delete
hushmap.releases.measured.v1 1 retention.ms=-1,retention.bytes=-1,cleanup.policy=delete
hushmap.releases.provisional.v1 1 retention.ms=2678400000,cleanup.policy=delete
TOPICS
}

kafka_running() {
  [ -f "$KAFKA_PID_FILE" ] && kill -0 "$(cat "$KAFKA_PID_FILE")" 2>/dev/null
}

# Whether something listens on 127.0.0.1:$1 (default: this broker's port).
kafka_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/${1:-$KAFKA_PORT}") 2>/dev/null
}

# Stops the broker whose pid is in $1 (if it runs) with signal $2 (default
# TERM), killing it if it has not stopped after 30 s; removes the pid file.
kafka_stop() {
  local pid_file="$1" signal="${2:-TERM}" pid
  if [ -f "$pid_file" ] && pid="$(cat "$pid_file")" && kill -0 "$pid" 2>/dev/null; then
    kill -"$signal" "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka: broker (pid $pid) did not stop in 30 s; killing it" >&2
      kill -9 "$pid" || true
    fi
  fi
  rm -f "$pid_file"
}

# Starts a broker in the background: $1 its settings, $2 its log directory,
# $3 the pid file, $4 the heap limit.
kafka_launch() {
  nohup java -Xms128m -Xmx"$4" -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$2" -cp "$KAFKA_LIB/*" \
    kafka.Kafka "$1" >"$2/stdout.log" 2>&1 &
  echo $! > "$3"
}
