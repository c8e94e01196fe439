#!/usr/bin/env bash
# Builds the OCI images of the three services (and of the batch cluster's
# hushmap-cluster) without a registry or a
# daemon: buildah, from scratch, with the service binary, only the shared
# libraries it links (ldd: glibc, libm, zlib, libgcc and the build
# machine's OpenSSL, libssl and libcrypto; librdkafka is built into the
# binary), the CA bundle, and a non-root
# user (65532, as the manifests run it). Nothing in the image is written
# at run time: the root file system can be read-only.
#
#   deploy/images/build.sh                          # release binaries (built if missing)
#   HUSHMAP_BIN_DIR=target/debug deploy/images/build.sh   # what CI checks (no release build)
#
# Images are named as deploy/k8s names them, ghcr.io/hushmap/hushmap-<service>:<version>
# (the workspace version), kept in buildah's local storage (vfs: works
# unprivileged in a sandbox) and written as OCI archives to target/images/.
# Labels: org.opencontainers.image.{title,description,version,revision,created,source,licenses}.
# Check them with deploy/images/check.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
command -v buildah >/dev/null || { echo "images: buildah is needed (Debian: apt-get install buildah)" >&2; exit 1; }

bin_dir="${HUSHMAP_BIN_DIR:-target/release}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
source_url="${HUSHMAP_IMAGE_SOURCE:-https://github.com/hushmap/hushmap}"
registry="${HUSHMAP_IMAGE_REGISTRY:-ghcr.io/hushmap}"
out="$root/target/images"
services=(ingest aggregate dashboard cluster)
mkdir -p "$out"

missing=0
for s in "${services[@]}"; do [ -x "$bin_dir/hushmap-$s" ] || missing=1; done
if [ "$missing" = 1 ]; then
  [ "$bin_dir" = target/release ] || { echo "images: binaries missing in $bin_dir" >&2; exit 1; }
  echo "images: release build of the services and the cluster"
  cargo build --release --locked -j"${HUSHMAP_JOBS:-$(nproc)}" \
    -p hushmap-ingest -p hushmap-aggregate -p hushmap-dashboard -p hushmap-cluster \
    --bin hushmap-ingest --bin hushmap-aggregate --bin hushmap-dashboard \
    --bin hushmap-cluster --features hushmap-aggregate/cluster 2>&1 | tail -n 1
fi

describe() {
  case "$1" in
    ingest) echo "the submission edge: HTTP in, sealed records to Kafka" ;;
    aggregate) echo "windows, contribution bounding, DP noise and the ledger" ;;
    dashboard) echo "the analyst page, JSON API, exports and Arrow Flight" ;;
    cluster) echo "a Ballista scheduler or executor that counts for batch --cluster" ;;
  esac
}

for s in "${services[@]}"; do
  name="hushmap-$s"
  image="$registry/$name:$version"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
  cp "$bin_dir/$name" "$rootfs/usr/local/bin/$name"
  # Every library the binary loads, at the path the loader looks for it
  # (symlinks resolved: the file itself under the name asked for).
  ldd "$bin_dir/$name" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u |
    while read -r lib; do
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/nonexistent:/nonexistent\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  chmod 1777 "$rootfs/tmp"

  ctr="$(buildah from scratch)"
  buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config \
    --user 65532:65532 \
    --workingdir / \
    --entrypoint "[\"/usr/local/bin/$name\"]" \
    --cmd '[]' \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.description=Hushmap $s: $(describe "$s")" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --label "org.opencontainers.image.source=$source_url" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    "$ctr"
  buildah commit --quiet --rm "$ctr" "$image" >/dev/null
  buildah push --quiet "$image" "oci-archive:$out/$name.tar:$image"
  rm -rf "$rootfs"
  trap - EXIT
  echo "images: $image ($(du -h "$out/$name.tar" | cut -f1), $out/$name.tar)"
done
# Earlier builds' images, now untagged, would fill the disk.
buildah rmi --prune >/dev/null 2>&1 || true
