#!/usr/bin/env bash
# Starts a Ballista cluster on this machine for `hushmap-aggregate batch
# --cluster`: one scheduler on 127.0.0.1:50050 and two executors
# (`hushmap-cluster`, built from Ballista's libraries with the workspace's
# DataFusion), each with its own owner-only work directory. Idempotent: a
# running cluster is left alone.
#
#   deploy/ballista/up.sh         # then: batch --cluster df://127.0.0.1:50050
#   HUSHMAP_BALLISTA_PORT=51050 HUSHMAP_BALLISTA_EXECUTORS=3 deploy/ballista/up.sh
#
# The binary is target/debug/hushmap-cluster (`cargo build --workspace
# --bins`) or HUSHMAP_CLUSTER_BIN. Logs go to deploy/ballista/logs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ ! -x "$BALLISTA_BIN" ]; then
  echo "ballista: $BALLISTA_BIN is not built; run cargo build --workspace --bins (or set HUSHMAP_CLUSTER_BIN)" >&2
  exit 1
fi

all_alive=1
for f in $(ballista_pid_files); do ballista_alive "$f" || all_alive=0; done
if [ "$all_alive" = 1 ]; then
  echo "ballista: already running at $BALLISTA_URL"
  exit 0
fi
# A partial cluster from an earlier start: stop what is left first.
"$BALLISTA_DIR/down.sh" >/dev/null

mkdir -p "$BALLISTA_RUN" "$BALLISTA_LOGS"
if ballista_port_open "$BALLISTA_PORT"; then
  echo "ballista: port $BALLISTA_PORT is taken by another process; stop it or set HUSHMAP_BALLISTA_PORT" >&2
  exit 1
fi

launch() { # name, then the arguments
  local name="$1"; shift
  HUSHMAP_LOG="${HUSHMAP_LOG:-info}" nohup "$BALLISTA_BIN" "$@" \
    >"$BALLISTA_LOGS/$name.log" 2>&1 &
  echo $! > "$BALLISTA_RUN/$name.pid"
}

wait_for() { # what, pid file, port, [log line]
  local what="$1" pid="$2" port="$3" line="${4:-}"
  for _ in $(seq 1 300); do
    if ! ballista_alive "$pid"; then
      echo "ballista: the $what exited during start-up; last log lines:" >&2
      tail -n 30 "$BALLISTA_LOGS/$what.log" >&2 || true
      exit 1
    fi
    if ballista_port_open "$port" && { [ -z "$line" ] || grep -Eq "$line" "$BALLISTA_LOGS/$what.log"; }; then
      return 0
    fi
    sleep 0.1
  done
  echo "ballista: the $what did not start in 30 s; last log lines:" >&2
  tail -n 30 "$BALLISTA_LOGS/$what.log" >&2 || true
  exit 1
}

# The cluster's secret: the scheduler takes plans only from clients that
# present it (HUSHMAP_CLUSTER_SECRET_FILE=$BALLISTA_RUN/secret for
# `batch --cluster`).
mkdir -p "$BALLISTA_RUN"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$BALLISTA_RUN/secret")
echo "ballista: starting the scheduler on 127.0.0.1:$BALLISTA_PORT (logs in $BALLISTA_LOGS)"
HUSHMAP_CLUSTER_SECRET_FILE="$BALLISTA_RUN/secret" launch scheduler scheduler --bind "127.0.0.1:$BALLISTA_PORT" --external-host 127.0.0.1 \
  --job-data-linger-secs "$BALLISTA_LINGER_SECS"
wait_for scheduler "$BALLISTA_RUN/scheduler.pid" "$BALLISTA_PORT"

for i in $(seq 1 "$BALLISTA_EXECUTORS"); do
  flight=$((BALLISTA_PORT + 2 * i - 1))
  grpc=$((BALLISTA_PORT + 2 * i))
  launch "executor-$i" executor --scheduler "127.0.0.1:$BALLISTA_PORT" \
    --bind-host 127.0.0.1 --flight-port "$flight" --grpc-port "$grpc" \
    --work-dir "$BALLISTA_RUN/executor-$i/work" --vcores 2 \
    --memory-limit-mb "$BALLISTA_EXECUTOR_MEMORY_MB"
done
for i in $(seq 1 "$BALLISTA_EXECUTORS"); do
  # Registered with the scheduler and polling it for work (pull
  # scheduling: executors open no task port).
  wait_for "executor-$i" "$BALLISTA_RUN/executor-$i.pid" "$((BALLISTA_PORT + 2 * i - 1))" \
    "Executor registration succeed|poll work loop"
done
echo "ballista: $BALLISTA_EXECUTORS executors ready; scheduler at $BALLISTA_URL (its clients: HUSHMAP_CLUSTER_SECRET_FILE=$BALLISTA_RUN/secret)"
