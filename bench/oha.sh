#!/usr/bin/env bash
# Installs the benches' load tool, oha, if it is not there yet (bench/short.sh
# says where; BENCH_SHORT=1 for the short mode's dev build). deploy/test.sh
# runs this in the background while the tests wait on Kafka, so that the
# benches' short mode does not wait for the build afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/short.sh
install_oha
