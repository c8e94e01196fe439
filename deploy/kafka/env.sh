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

kafka_java() {
  # The Kafka tools (storage formatter, topic admin) share the broker's classpath.
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_LOGS" -cp "$KAFKA_LIB/*" "$@"
}

kafka_running() {
  [ -f "$KAFKA_PID_FILE" ] && kill -0 "$(cat "$KAFKA_PID_FILE")" 2>/dev/null
}

kafka_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
}
