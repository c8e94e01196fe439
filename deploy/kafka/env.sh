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

kafka_running() {
  [ -f "$KAFKA_PID_FILE" ] && kill -0 "$(cat "$KAFKA_PID_FILE")" 2>/dev/null
}

kafka_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
}
