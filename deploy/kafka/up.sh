#!/usr/bin/env bash
# Starts a single-node KRaft Kafka on 127.0.0.1:9092 in the background and
# creates Hushmap's topics. Idempotent: on a running broker it only makes sure
# the topics exist.
#
#   deploy/kafka/up.sh            # fetch if needed, format if needed, start
#   HUSHMAP_KAFKA_PORT=19092 deploy/kafka/up.sh
#   HUSHMAP_KAFKA_SECURITY=sasl_ssl HUSHMAP_KAFKA_PORT=39092 deploy/kafka/up.sh
#
# With HUSHMAP_KAFKA_SECURITY=sasl_ssl the broker speaks only SASL_SSL
# (SCRAM-SHA-512 over TLS) to clients: up.sh makes a CA and a certificate for
# 127.0.0.1, a SCRAM user per service with a random password, and ACLs that
# give each service only its own topics. Everything lands in
# deploy/kafka/secrets[-PORT] (0700), wiped by `down.sh --wipe`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

case "$KAFKA_PROTOCOL" in
  plaintext|sasl_ssl) ;;
  *) echo "kafka: HUSHMAP_KAFKA_SECURITY must be plaintext or sasl_ssl, not $KAFKA_PROTOCOL" >&2; exit 1 ;;
esac
if [ -n "${HUSHMAP_KAFKA_SECURITY:-}" ] && [ "$HUSHMAP_KAFKA_SECURITY" != "$KAFKA_PROTOCOL" ]; then
  echo "kafka: the broker on port $KAFKA_PORT was set up for $KAFKA_PROTOCOL; run down.sh --wipe first to change it" >&2
  exit 1
fi
if [ "$KAFKA_PROTOCOL" = sasl_ssl ] && [ -f "$KAFKA_DATA/meta.properties" ] && [ ! -f "$KAFKA_SECRETS/protocol" ]; then
  echo "kafka: the broker on port $KAFKA_PORT was formatted for plaintext; run down.sh --wipe first" >&2
  exit 1
fi

# The service users of a SASL_SSL broker.
SERVICE_USERS="hushmap-ingest hushmap-aggregate hushmap-dashboard"

# CA, broker certificate (for 127.0.0.1 and localhost; serverAuth for
# clients, clientAuth for the node's own controller link), passwords.
make_secrets() {
  local tls="$KAFKA_SECRETS/tls" users="$KAFKA_SECRETS/users"
  rm -rf "$KAFKA_SECRETS"
  mkdir -p "$tls" "$users"
  chmod 700 "$KAFKA_SECRETS"
  echo "kafka: making a CA, a broker certificate and SCRAM passwords in $KAFKA_SECRETS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=Hushmap development Kafka CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=hushmap-kafka" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
    > "$tls/server.ext"
  openssl x509 -req -days 825 -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  # Kafka's PEM keystore: the PKCS#8 key, then the chain.
  cat "$tls/server.key" "$tls/server.crt" "$tls/ca.pem" > "$tls/server.pem"
  rm -f "$tls/server.csr" "$tls/server.ext" "$tls/ca.srl"
  for user in admin $SERVICE_USERS; do
    (umask 077; openssl rand -hex 24 > "$users/$user.password")
  done
  (umask 077; cat > "$KAFKA_SECRETS/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$users/admin.password")";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
  )
  chmod -R go-rwx "$KAFKA_SECRETS"
  echo sasl_ssl > "$KAFKA_SECRETS/protocol"
}

"$KAFKA_DIR/fetch.sh"
mkdir -p "$KAFKA_RUN" "$KAFKA_LOGS"

if kafka_running; then
  echo "kafka: already running (pid $(cat "$KAFKA_PID_FILE")) on $KAFKA_BOOTSTRAP"
else
  if kafka_port_open; then
    echo "kafka: port $KAFKA_PORT is taken by another process; stop it or set HUSHMAP_KAFKA_PORT" >&2
    exit 1
  fi
  fresh=false
  [ -f "$KAFKA_DATA/meta.properties" ] || fresh=true
  if [ "$KAFKA_PROTOCOL" = sasl_ssl ] && [ "$fresh" = true ]; then make_secrets; fi
  admin_password=""
  [ "$KAFKA_PROTOCOL" = sasl_ssl ] && admin_password="$(cat "$KAFKA_SECRETS/users/admin.password")"
  # The broker's settings hold the admin password when secured: owner only.
  (umask 077
   cat "$KAFKA_DIR/server.properties.in" "$KAFKA_DIR/listeners.$KAFKA_PROTOCOL" | sed \
      -e "s#@DATA_DIR@#$KAFKA_DATA#" -e "s#@PORT@#$KAFKA_PORT#" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#" -e "s#@SECRETS@#$KAFKA_SECRETS#" \
      -e "s#@ADMIN_PASSWORD@#$admin_password#" > "$KAFKA_RUN/server.properties")
  if [ "$fresh" = true ]; then
    echo "kafka: formatting KRaft storage in $KAFKA_DATA"
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
    scram=()
    # The inter-broker user must exist before the broker can log in to itself.
    [ "$KAFKA_PROTOCOL" = sasl_ssl ] && scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]")
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$KAFKA_RUN/server.properties" "${scram[@]}" >/dev/null
  fi
  echo "kafka: starting broker (logs in $KAFKA_LOGS)"
  kafka_launch "$KAFKA_RUN/server.properties" "$KAFKA_LOGS" "$KAFKA_PID_FILE" 1g
fi

printf "kafka: waiting for the broker"
for _ in $(seq 1 120); do
  if ! kafka_running; then
    echo; echo "kafka: broker exited during start-up; last log lines:" >&2
    tail -n 30 "$KAFKA_LOGS/stdout.log" "$KAFKA_LOGS/server.log" >&2 2>/dev/null || true
    exit 1
  fi
  if kafka_port_open && kafka_admin org.apache.kafka.tools.TopicCommand --list >/dev/null 2>&1; then
    echo " ready"
    break
  fi
  printf "."
  sleep 1
done
kafka_port_open || { echo; echo "kafka: broker did not answer in time" >&2; exit 1; }

kafka_make_topics 1 1
echo "kafka: topics ready on $KAFKA_BOOTSTRAP"

# Users and ACLs once per broker (both commands are idempotent, so an
# interrupted first start is simply done again).
if [ "$KAFKA_PROTOCOL" = sasl_ssl ] && [ ! -f "$KAFKA_SECRETS/users.done" ]; then
  # ConfigCommand refuses SCRAM settings from --add-config-file, so each
  # password is on this local tool's command line for its 2 s run: fine for
  # a development broker; production brokers get users from their operator
  # (Strimzi's KafkaUser, deploy/k8s).
  for user in $SERVICE_USERS; do
    kafka_admin kafka.admin.ConfigCommand --alter --entity-type users --entity-name "$user" \
      --add-config "SCRAM-SHA-512=[password=$(cat "$KAFKA_SECRETS/users/$user.password")]" >/dev/null
  done
  # Least privilege: ingest may only write submissions; the aggregator reads
  # them and writes releases in its own transactions and groups; the
  # dashboard may only read releases.
  acl() { kafka_admin org.apache.kafka.tools.AclCommand --add "$@" >/dev/null; }
  acl --allow-principal User:hushmap-ingest --operation Write --operation Describe \
    --topic hushmap.submissions.v1
  # DescribeConfigs: the aggregator checks at start that the broker stamps
  # the submissions (message.timestamp.type=LogAppendTime).
  acl --allow-principal User:hushmap-aggregate --operation Read --operation Describe \
    --operation DescribeConfigs --topic hushmap.submissions.v1
  acl --allow-principal User:hushmap-aggregate --operation Read --operation Write \
    --operation Describe --topic hushmap.releases.v1
  acl --allow-principal User:hushmap-aggregate --operation Write --operation Describe \
    --topic hushmap.releases.measured.v1
  # Provisional numbers: written, and read back at start-up (each charged
  # its window; a restart continues the series without noising again).
  acl --allow-principal User:hushmap-aggregate --operation Read --operation Write \
    --operation Describe --topic hushmap.releases.provisional.v1
  # The partitioned aggregator's two stages talk over the bounded topic.
  acl --allow-principal User:hushmap-aggregate --operation Read --operation Write \
    --operation Describe --topic hushmap.bounded.v1
  acl --allow-principal User:hushmap-aggregate --operation Read --operation Describe \
    --resource-pattern-type prefixed --group hushmap-aggregate
  acl --allow-principal User:hushmap-aggregate --operation Write --operation Describe \
    --resource-pattern-type prefixed --transactional-id hushmap-aggregate
  acl --allow-principal User:hushmap-dashboard --operation Read --operation Describe \
    --topic hushmap.releases.v1
  acl --allow-principal User:hushmap-dashboard --operation Read --operation Describe \
    --topic hushmap.releases.measured.v1
  acl --allow-principal User:hushmap-dashboard --operation Read --operation Describe \
    --topic hushmap.releases.provisional.v1
  acl --allow-principal User:hushmap-dashboard --operation Read \
    --resource-pattern-type prefixed --group hushmap-dashboard-
  touch "$KAFKA_SECRETS/users.done"
  echo "kafka: SCRAM users and ACLs ready for: $SERVICE_USERS"
fi
if [ "$KAFKA_PROTOCOL" = sasl_ssl ]; then
  echo "kafka: SASL_SSL on $KAFKA_BOOTSTRAP; CA $KAFKA_SECRETS/tls/ca.pem, passwords in $KAFKA_SECRETS/users/<user>.password"
fi
