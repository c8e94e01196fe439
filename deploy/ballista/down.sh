#!/usr/bin/env bash
# Stops the cluster started by up.sh (executors first: each deletes its
# shuffle data on the way out). Add --wipe to delete the logs and work
# directories as well.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

stop() { # pid file
  local f="$1"
  if ballista_alive "$f"; then
    local pid; pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Every executor up.sh started (however many), then the scheduler.
for f in "$BALLISTA_RUN"/executor-*.pid "$BALLISTA_RUN/scheduler.pid"; do
  [ -f "$f" ] && echo "ballista: stopping $(basename "$f" .pid)"
  stop "$f"
done
if [ "${1:-}" = "--wipe" ]; then
  rm -rf "$BALLISTA_RUN" "$BALLISTA_LOGS"
  echo "ballista: logs and work directories wiped"
fi
