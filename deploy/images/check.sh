#!/usr/bin/env bash
# Checks the images deploy/images/build.sh made, on this machine (no
# container runtime needed: podman and crun cannot run them in a sandbox
# that refuses setrlimit, so the binaries run in a chroot of each image's
# root file system):
#   - every image deploy/k8s names exists, and a name that was not built
#     is refused;
#   - each service binary (and hushmap-cluster), inside its image, as user 65532, loads the
#     configuration its workload gives it (args, environment, mounted
#     ConfigMaps, stand-ins for secrets) with `check-config`;
#   - each image runs as 65532:65532, and carries the version, revision
#     and source labels.
#
#   deploy/images/check.sh          # after deploy/images/build.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
bin_dir="${HUSHMAP_BIN_DIR:-target/debug}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
registry="${HUSHMAP_IMAGE_REGISTRY:-ghcr.io/hushmap}"

containers=()
cleanup() {
  for c in "${containers[@]}"; do
    buildah umount "$c" >/dev/null 2>&1 || true
    buildah rm "$c" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

roots="$(mktemp)"
echo "{" >"$roots"
sep=""
for s in ingest aggregate dashboard cluster; do
  image="$registry/hushmap-$s:$version"
  buildah inspect --type image "$image" >/dev/null 2>&1 ||
    { echo "images: $image is not built (deploy/images/build.sh)" >&2; exit 1; }
  user="$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")"
  [ "$user" = "65532:65532" ] || { echo "images: $image runs as '$user', not 65532:65532" >&2; exit 1; }
  for label in version revision source; do
    value="$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"org.opencontainers.image.$label\"}}" "$image")"
    [ -n "$value" ] || { echo "images: $image has no org.opencontainers.image.$label label" >&2; exit 1; }
  done
  ctr="$(buildah from --quiet "$image")"
  containers+=("$ctr")
  mnt="$(buildah mount "$ctr")"
  [ "$s" = dashboard ] && dashboard_root="$mnt"
  printf '%s  "%s": "%s"' "$sep" "$image" "$mnt" >>"$roots"
  sep=$',\n'
done
echo "}" >>"$roots"

venv="$root/deploy/k8s/.venv"
"$root/deploy/python-venv.sh" "$venv" "$root/deploy/k8s/requirements.txt" "kubernetes-validate"
"$venv/bin/python" "$root/deploy/k8s/validate.py" --images "$root/deploy/k8s" "$bin_dir" "$roots"
rm -f "$roots"

# Researchers' SQL in the dashboard's image (issue 34, item 1): its query
# worker, as the image holds it, refuses 60 KB of `1+1+…+1` (which once
# overflowed a stack and aborted the dashboard) before planning, dies
# alone under a memory limit on a string doubled thirty times (the
# dashboard sets the limit on its workers; `prlimit` stands in for it
# here), and answers an ordinary query.
worker() {
  chroot --userspec=65532:65532 "$dashboard_root" \
    /usr/local/bin/hushmap-dashboard sql-worker --store /tmp --memory-mb 256 "$@"
}
deep="SELECT $(printf '1+%.0s' $(seq 30000))1"
said="$(printf '{"sql":"%s","schema_only":false,"max_rows":1000000,"max_bytes":268435456}' "$deep" | worker 2>&1 >/dev/null)" && code=0 || code=$?
if [ "$code" != 2 ] || ! grep -q 'nests expressions' <<<"$said"; then
  echo "images: the dashboard's SQL worker did not refuse a 60 KB 1+1+…+1 (exit $code): $said" >&2
  exit 1
fi
doubled="WITH t0 AS (SELECT 'xxxxxxxxxxxxxxxx' AS s)"
for i in $(seq 1 30); do doubled="$doubled, t$i AS (SELECT s || s AS s FROM t$((i - 1)))"; done
doubled="$doubled SELECT length(s) FROM t30"
printf '{"sql":"%s","schema_only":false,"max_rows":1000000,"max_bytes":268435456}' "$doubled" |
  prlimit --data=$((256 * 1024 * 1024)) chroot --userspec=65532:65532 "$dashboard_root" \
    /usr/local/bin/hushmap-dashboard sql-worker --store /tmp --memory-mb 256 >/dev/null 2>&1 && code=0 || code=$?
if [ "$code" -lt 128 ]; then
  echo "images: a string doubled thirty times did not end the SQL worker at its memory limit (exit $code)" >&2
  exit 1
fi
answer="$(printf '{"sql":"SELECT 40 + 2 AS answer","schema_only":false,"max_rows":1000000,"max_bytes":268435456}' | worker 2>&1 | wc -c)" && code=0 || code=$?
# An Arrow stream holding the answer's schema and one row: some hundreds
# of bytes (a failure would print a line of JSON and exit non-zero).
[ "$code" = 0 ] && [ "$answer" -gt 100 ] ||
  { echo "images: the dashboard's SQL worker did not answer SELECT 40 + 2 (exit $code)" >&2; exit 1; }
echo "images: the dashboard's SQL worker refuses deep nesting, dies alone at its memory limit, answers a query"

# The chroot uses what the image holds, nothing of this machine's: without
# its C library, the binary must not start.
ctr="$(buildah from --quiet "$registry/hushmap-ingest:$version")"
containers+=("$ctr")
mnt="$(buildah mount "$ctr")"
find "$mnt" -name 'libc.so.6' -delete
if chroot --userspec=65532:65532 "$mnt" /usr/local/bin/hushmap-ingest --version >/dev/null 2>&1; then
  echo "images: a binary ran in an image root without its C library: the chroot is not the image's" >&2
  exit 1
fi
echo "images: self-test: without its libraries the binary does not start in the chroot"
