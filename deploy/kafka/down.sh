#!/usr/bin/env bash
# Stops the broker started by up.sh. Add --wipe to delete its data as well.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if kafka_running; then
  echo "kafka: stopping broker (pid $(cat "$KAFKA_PID_FILE"))"
else
  echo "kafka: not running"
fi
kafka_stop "$KAFKA_PID_FILE"
if [ "${1:-}" = "--wipe" ]; then
  rm -rf "$KAFKA_DATA" "$KAFKA_LOGS" "$KAFKA_SECRETS"
  echo "kafka: data wiped"
fi
