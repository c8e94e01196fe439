#!/usr/bin/env bash
# Checks deploy/k8s without a cluster (what is checked: validate.py):
# schemas of Kubernetes (kubernetes-validate from PyPI, which carries them)
# and of Strimzi (generated here by Strimzi's own CRD generator from its
# published model, both from Maven Central; the generator needs Java 21+),
# references between the resources, and each service's configuration as
# its Deployment gives it, checked by the service binary itself.
#
#   deploy/k8s/validate.sh          # binaries from target/debug (deploy/test.sh builds them)
#   HUSHMAP_BIN_DIR=target/release deploy/k8s/validate.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir="${HUSHMAP_BIN_DIR:-$root/target/debug}"
for b in hushmap-ingest hushmap-aggregate hushmap-dashboard; do
  [ -x "$bin_dir/$b" ] || { echo "k8s: $bin_dir/$b missing; run cargo build --workspace --bins" >&2; exit 1; }
done

# kubernetes-validate (and jsonschema, PyYAML with it), pinned.
venv="$here/.venv"
"$here/../python-venv.sh" "$venv" "$here/requirements.txt" "kubernetes-validate"

# Strimzi's CRD schemas, generated once per Strimzi version.
strimzi_version="$(sed -n 's:.*<strimzi.version>\(.*\)</strimzi.version>.*:\1:p' "$here/strimzi/pom.xml")"
crds="$here/.crds/$strimzi_version"
if [ ! -f "$crds/.complete" ]; then
  java21=""
  for candidate in "${HUSHMAP_JAVA21:-}" "${JAVA_HOME:-}/bin/java" java /usr/lib/jvm/*/bin/java; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
    major="$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [ "${major:-0}" -ge 21 ] 2>/dev/null; then java21="$candidate"; break; fi
  done
  [ -n "$java21" ] || { echo "k8s: Strimzi's CRD generator needs Java 21+ (set HUSHMAP_JAVA21)" >&2; exit 1; }
  echo "k8s: generating Strimzi $strimzi_version CRD schemas (Maven Central, $java21)"
  rm -rf "$here/strimzi/lib" "$crds"
  mkdir -p "$crds"
  # Maven's output (colour codes even when quiet) goes to a log, shown on failure.
  mvn -q -B -f "$here/strimzi/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$here/strimzi/lib" -DincludeScope=runtime >"$crds/maven.log" 2>&1 \
    || { cat "$crds/maven.log" >&2; exit 1; }
  "$java21" -cp "$here/strimzi/lib/*" io.strimzi.crdgenerator.CrdGenerator --yaml --crd-api-version v1 \
    io.strimzi.api.kafka.model.kafka.Kafka="$crds/kafka.yaml" \
    io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$crds/kafkanodepool.yaml" \
    io.strimzi.api.kafka.model.topic.KafkaTopic="$crds/kafkatopic.yaml" \
    io.strimzi.api.kafka.model.user.KafkaUser="$crds/kafkauser.yaml"
  touch "$crds/.complete"
fi

"$venv/bin/python" "$here/validate.py" "$here" "$crds" "$bin_dir"
