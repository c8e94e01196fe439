#!/usr/bin/env bash
# Stops the broker started by up.sh. Add --wipe to delete its data as well.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if kafka_running; then
  pid=$(cat "$KAFKA_PID_FILE")
  echo "kafka: stopping broker (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka: broker did not stop in 30 s; killing it" >&2
    kill -9 "$pid" || true
  fi
else
  echo "kafka: not running"
fi
rm -f "$KAFKA_PID_FILE"
if [ "${1:-}" = "--wipe" ]; then
  rm -rf "$KAFKA_DATA" "$KAFKA_LOGS" "$KAFKA_SECRETS"
  echo "kafka: data wiped"
fi
