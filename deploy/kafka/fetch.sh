#!/usr/bin/env bash
# Fetches Apache Kafka (broker, tools, log4j2 binding) from Maven Central into
# deploy/kafka/lib. A no-op when the jars are already there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ -f "$KAFKA_LIB/.complete" ]; then
  exit 0
fi
command -v java >/dev/null || { echo "kafka: java (17+) is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka: maven (mvn) is required" >&2; exit 1; }
echo "kafka: fetching Apache Kafka from Maven Central into $KAFKA_LIB ..."
rm -rf "$KAFKA_LIB"
mvn -q -B -f "$KAFKA_DIR/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$KAFKA_LIB" -DincludeScope=runtime
touch "$KAFKA_LIB/.complete"
echo "kafka: $(ls "$KAFKA_LIB"/*.jar | wc -l) jars ready"
