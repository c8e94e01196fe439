# Shared settings for the Ballista scripts; sourced, not run.
BALLISTA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BALLISTA_ROOT="$(cd "$BALLISTA_DIR/../.." && pwd)"
# The scheduler's port; each executor takes the next two (Flight, gRPC).
BALLISTA_PORT="${HUSHMAP_BALLISTA_PORT:-50050}"
BALLISTA_EXECUTORS="${HUSHMAP_BALLISTA_EXECUTORS:-2}"
# Memory each executor's tasks share (MiB); beyond it they spill to disk.
BALLISTA_EXECUTOR_MEMORY_MB="${HUSHMAP_BALLISTA_EXECUTOR_MEMORY_MB:-512}"
# How long a finished job's results wait on the executors for the client.
BALLISTA_LINGER_SECS="${HUSHMAP_BALLISTA_LINGER_SECS:-10}"
BALLISTA_BIN="${HUSHMAP_CLUSTER_BIN:-$BALLISTA_ROOT/target/debug/hushmap-cluster}"
BALLISTA_RUN="$BALLISTA_DIR/run"
BALLISTA_LOGS="$BALLISTA_DIR/logs"
BALLISTA_URL="df://127.0.0.1:$BALLISTA_PORT"

# The processes up.sh started: scheduler, then executors 1..N.
ballista_pid_files() {
  echo "$BALLISTA_RUN/scheduler.pid"
  for i in $(seq 1 "$BALLISTA_EXECUTORS"); do echo "$BALLISTA_RUN/executor-$i.pid"; done
}

ballista_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ballista_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
