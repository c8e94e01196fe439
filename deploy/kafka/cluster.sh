#!/usr/bin/env bash
# A local 3-node KRaft Kafka cluster for scale-out tests: every node is both
# broker and controller (3 voters, so the quorum survives one loss), topics
# are replicated 3 times and a write needs 2 in-sync replicas
# (min.insync.replicas=2, producers use acks=all), so one node may die
# without losing or refusing anything.
#
#   deploy/kafka/cluster.sh up            # fetch, format if needed, start all, make topics
#   deploy/kafka/cluster.sh down [--wipe] # stop all (and delete their data)
#   deploy/kafka/cluster.sh kill N        # kill -9 node N (1..3)
#   deploy/kafka/cluster.sh start N       # start node N again, keeping its data
#   deploy/kafka/cluster.sh bootstrap     # print bootstrap.servers
#
# Ports: node N serves clients on BASE+10N+2 and its controller on
# BASE+10N+3, BASE = HUSHMAP_KAFKA_CLUSTER_BASE (default 29090: 29102,
# 29112, 29122). State lives in deploy/kafka/cluster-BASE/node-N.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

BASE="${HUSHMAP_KAFKA_CLUSTER_BASE:-29090}"
NODES=(1 2 3)
CLUSTER_DIR="$KAFKA_DIR/cluster-$BASE"

client_port() { echo $((BASE + 10 * $1 + 2)); }
controller_port() { echo $((BASE + 10 * $1 + 3)); }
node_dir() { echo "$CLUSTER_DIR/node-$1"; }
pid_file() { echo "$(node_dir "$1")/kafka.pid"; }
node_running() { [ -f "$(pid_file "$1")" ] && kill -0 "$(cat "$(pid_file "$1")")" 2>/dev/null; }

bootstrap() {
  local out=()
  for n in "${NODES[@]}"; do out+=("127.0.0.1:$(client_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

voters() {
  local out=()
  for n in "${NODES[@]}"; do out+=("$n@127.0.0.1:$(controller_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

# The single-node template with this node's identity and the cluster's
# replication on top (a later line of a properties file wins).
write_properties() {
  local n="$1" dir; dir="$(node_dir "$n")"
  mkdir -p "$dir/data" "$dir/logs"
  {
    cat "$KAFKA_DIR/server.properties.in" "$KAFKA_DIR/listeners.plaintext"
    cat <<PROPS
# --- cluster node $n ---
node.id=$n
controller.quorum.voters=$(voters)
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Leaders move back to their preferred node soon after it returns.
leader.imbalance.check.interval.seconds=10
PROPS
  } | sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@PORT@#$(client_port "$n")#" \
      -e "s#@CONTROLLER_PORT@#$(controller_port "$n")#" > "$dir/server.properties"
}

start_node() {
  local n="$1" dir; dir="$(node_dir "$n")"
  if node_running "$n"; then return 0; fi
  if kafka_port_open "$(client_port "$n")"; then
    echo "kafka cluster: port $(client_port "$n") is taken by another process" >&2
    exit 1
  fi
  write_properties "$n"
  kafka_launch "$dir/server.properties" "$dir/logs" "$(pid_file "$n")" 512m
}

stop_node() { kafka_stop "$(pid_file "$1")" "${2:-TERM}"; }

# Waits until node $1 answers an admin request through its own port.
wait_node() {
  local n="$1"
  for _ in $(seq 1 120); do
    node_running "$n" || { echo "kafka cluster: node $n exited; see $(node_dir "$n")/logs" >&2; exit 1; }
    if kafka_port_open "$(client_port "$n")" && kafka_java org.apache.kafka.tools.TopicCommand \
         --bootstrap-server "127.0.0.1:$(client_port "$n")" --list >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "kafka cluster: node $n did not answer in time" >&2
  exit 1
}

case "${1:-}" in
  up)
    "$KAFKA_DIR/fetch.sh"
    if [ ! -f "$(node_dir 1)/data/meta.properties" ]; then
      echo "kafka cluster: formatting 3 nodes in $CLUSTER_DIR"
      cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
      for n in "${NODES[@]}"; do
        write_properties "$n"
        kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
          -c "$(node_dir "$n")/server.properties" >/dev/null
      done
    fi
    for n in "${NODES[@]}"; do start_node "$n"; done
    printf "kafka cluster: waiting for 3 nodes"
    for n in "${NODES[@]}"; do wait_node "$n"; printf "."; done
    echo " ready"
    # The same topics as the single node (env.sh), replicated.
    KAFKA_BOOTSTRAP="$(bootstrap)" KAFKA_PROTOCOL=plaintext kafka_make_topics 3 2
    echo "kafka cluster: topics ready (replication 3, min.insync.replicas 2) on $(bootstrap)"
    ;;
  down)
    for n in "${NODES[@]}"; do stop_node "$n"; done
    if [ "${2:-}" = "--wipe" ]; then rm -rf "$CLUSTER_DIR"; echo "kafka cluster: data wiped"; fi
    echo "kafka cluster: stopped"
    ;;
  kill)
    stop_node "${2:?node 1..3}" KILL
    echo "kafka cluster: node $2 killed"
    ;;
  start)
    start_node "${2:?node 1..3}"
    wait_node "$2"
    echo "kafka cluster: node $2 back"
    ;;
  bootstrap)
    bootstrap
    ;;
  *)
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
