#!/usr/bin/env bash
# Runs every test binary of the workspace (unit tests of each library and
# binary, and each integration test file) in two lanes at once, as
# `cargo test` would run each one: from its package's directory, with the
# test harness's own parallelism inside. Called by deploy/test.sh for a
# full run, after the build; needs HUSHMAP_TEST_KAFKA.
#
# Lane "own-brokers" holds the tests that start Kafka brokers of their own
# (a spare broker, a SASL_SSL broker, a 3-node cluster): they run one after
# another, so two of them never compete for ports or for the machine's
# memory. Every other binary (found by asking cargo, so a new test file
# joins without being listed) runs in lane "shared" against the broker
# deploy/test.sh started. A binary's output is kept in target/test-lanes/
# and printed in full when it fails; the run fails if any binary failed,
# after both lanes are done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each starts brokers of its own; keep this list in step with testkit's
# SpareBroker and KafkaCluster users.
own_brokers="broker_outage kafka_cluster kafka_sasl_ssl partitioned"

logs=target/test-lanes
rm -rf "$logs"
mkdir -p "$logs"

# "executable package-dir label" for every test binary, from cargo's own
# build plan (already built by deploy/test.sh: this only lists).
if ! cargo test --workspace --locked -j2 --no-run --message-format=json \
  >"$logs/plan.json" 2>"$logs/plan.log"; then
  cat "$logs/plan.log" >&2
  echo "test-lanes: cargo could not build the tests" >&2
  exit 1
fi
python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    label = "{}:{}({})".format(m["package_id"].split("#")[-1].split("@")[0].rsplit("/", 1)[-1], t["name"], t["kind"][0])
    print(m["executable"], os.path.dirname(m["manifest_path"]), label, t["name"])
' <"$logs/plan.json" >"$logs/binaries.txt"
if [ ! -s "$logs/binaries.txt" ]; then
  echo "test-lanes: cargo listed no test binaries" >&2
  exit 1
fi
: >"$logs/lane-own-brokers.txt"
: >"$logs/lane-shared.txt"
while read -r exe dir label name; do
  case " $own_brokers " in
    *" $name "*) echo "$exe $dir $label" >>"$logs/lane-own-brokers.txt" ;;
    *) echo "$exe $dir $label" >>"$logs/lane-shared.txt" ;;
  esac
done <"$logs/binaries.txt"
for name in $own_brokers; do
  if ! grep -q " [^ ]*:$name(test)\$" "$logs/lane-own-brokers.txt"; then
    echo "test-lanes: no test binary named $name; update own_brokers" >&2
    exit 1
  fi
done

run_lane() {
  local lane=$1 failed=0 exe dir label log start
  while read -r exe dir label; do
    log="$logs/$(basename "$exe").log"
    start=$SECONDS
    if (cd "$dir" && "$exe") >"$log" 2>&1; then
      echo "test: [$lane] $label ok in $((SECONDS - start))s:" \
        "$(grep -h '^test result' "$log" | sed -e 's/^test result: //' -e 's/; finished.*//' | tr '\n' ' ')"
    else
      failed=1
      # One block, so the other lane's lines do not cut into it.
      {
        echo "test: [$lane] $label FAILED after $((SECONDS - start))s; its output:"
        cat "$log"
        echo "test: [$lane] end of $label's output"
      } >"$log.report"
      cat "$log.report"
    fi
  done <"$logs/lane-$lane.txt"
  return "$failed"
}

echo "test-lanes: $(wc -l <"$logs/lane-shared.txt") binaries in lane shared," \
  "$(wc -l <"$logs/lane-own-brokers.txt") in lane own-brokers"
run_lane own-brokers &
own=$!
shared_rc=0
run_lane shared || shared_rc=$?
own_rc=0
wait "$own" || own_rc=$?
if [ "$shared_rc" != 0 ] || [ "$own_rc" != 0 ]; then
  echo "test-lanes: failures above (outputs in $logs/)" >&2
  exit 1
fi
echo "test-lanes: every test binary passed"
