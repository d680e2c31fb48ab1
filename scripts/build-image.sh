#!/usr/bin/env bash
# Build the hapaxd OCI image without a container daemon or a registry, as root:
#
#   scripts/build-image.sh [OUT_DIR]          (default build/image; `make image` runs it)
#
# mmdebstrap makes a Debian bookworm root filesystem (minbase: no compiler) with python3, and runs
# the image's own python3 in the chroot to make the venv /opt/hapax and `pip install` the project
# into it (pyproject.toml, README.md, server/, clients/, as the Dockerfile's builder does), and the
# user hapax (10001:10001) who owns /var/lib/hapax. umoci turns that into a one-layer OCI image
# layout, OUT_DIR/oci, tag `latest`, with the Dockerfile's runtime settings, which are read from
# scripts/image-config.json (tests/deploy/test_dockerfile_agrees.py checks they agree with the
# Dockerfile). OUT_DIR/image.json gets the image's digest and sizes. Run it with
# scripts/run-image.sh, or copy it elsewhere with skopeo (`skopeo copy oci:OUT_DIR/oci:latest
# docker-daemon:hapax:latest`).
#
# A rerun replaces OUT_DIR/oci and OUT_DIR/image.json, and only once the new image is complete.
# With $SOURCE_DATE_EPOCH set (say to the commit's time) all the image's timestamps are that time;
# unset, it is the newest modification time of the files the build reads. PyPI and the Debian
# mirror are reached over the network (about 30 MB of .debs, 20 MB of wheels); pip trusts the
# host's CA bundle for the build only (a TLS-intercepting proxy), which the image does not keep.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$ROOT/scripts/image-config.json
SOURCES=(pyproject.toml README.md server clients)

die() {
  echo "build-image: $*" >&2
  exit 1
}

[ "$#" -le 1 ] || die "usage: scripts/build-image.sh [OUT_DIR]"
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, files owned by uid 10001)"
for tool in mmdebstrap umoci jq tar gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (make tools installs it)"
done
for source in "${SOURCES[@]}"; do
  [ -e "$ROOT/$source" ] || die "$ROOT/$source is missing"
done

OUT=$(realpath -m "${1:-build/image}")
mkdir -p "$OUT"
started=$SECONDS

cfg() { jq -er "$1" "$CONFIG"; }
SUITE=$(cfg .suite)
PACKAGES=$(cfg '.packages | join(",")')
TAG=$(cfg .tag)
export IMG_VENV IMG_USER IMG_UID IMG_GID IMG_STATE IMG_WORK IMG_HOST_CA
IMG_VENV=$(cfg .venv)
IMG_USER=$(cfg .user.name)
IMG_UID=$(cfg .user.uid)
IMG_GID=$(cfg .user.gid)
IMG_STATE=$(cfg .state_dir)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(cd "$ROOT" && find "${SOURCES[@]}" -name __pycache__ -prune -o -type f \
    -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
fi
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

case "$(dpkg --print-architecture)" in
  amd64) ARCH=amd64 ;;
  arm64) ARCH=arm64 ;;
  armhf) ARCH=arm ;;
  i386) ARCH=386 ;;
  ppc64el) ARCH=ppc64le ;;
  s390x) ARCH=s390x ;;
  *) die "unsupported architecture $(dpkg --print-architecture)" ;;
esac

# Everything is made in a scratch folder next to OUT_DIR and moved in at the end.
IMG_WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$IMG_WORK"' EXIT

# The build context, as .dockerignore lets it through: no caches or egg-info.
tar -C "$ROOT" -cf "$IMG_WORK/src.tar" --sort=name --owner=0 --group=0 --numeric-owner \
  --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.egg-info' \
  --exclude=.mypy_cache --exclude=.ruff_cache "${SOURCES[@]}"

# pip in the chroot: only these variables reach it (`env -i`), so the host's PIP_FIND_LINKS and the
# like do not; the host's CA bundle lets it through a TLS-intercepting proxy.
IMG_HOST_CA=
pip_env=(PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH"
  PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  PIP_NO_INPUT=1)
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  IMG_HOST_CA=/etc/ssl/certs/ca-certificates.crt
  pip_env+=(PIP_CERT=/tmp/host-ca.crt)
fi
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
  PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
  if [ -n "${!name:-}" ]; then pip_env+=("$name=${!name}"); fi
done
export IMG_PIP_ENV
IMG_PIP_ENV=$(printf '%q ' "${pip_env[@]}")

# No compiler may reach the image: the Dockerfile's runtime stage has none either.
compilers='.*/s?bin/(cc|c\+\+|cpp|gcc|g\+\+|clang|clang\+\+|tcc|[a-z0-9_]+-linux-gnu[a-z]*-(gcc|g\+\+|cpp))(-[0-9.]+)?'

echo "build-image: mmdebstrap $SUITE + pip install (about a minute)" >&2
step=$SECONDS
# The hooks run in mmdebstrap's sh, with $1 the root filesystem and this script's exports.
# shellcheck disable=SC2016
mmdebstrap --mode=root --variant=minbase --quiet --format=tar \
  --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='mkdir -p "$1/tmp/src" && tar -C "$1/tmp/src" -xf "$IMG_WORK/src.tar"' \
  --customize-hook='[ -z "$IMG_HOST_CA" ] || cp "$IMG_HOST_CA" "$1/tmp/host-ca.crt"' \
  --customize-hook='chroot "$1" python3 -m venv "$IMG_VENV"' \
  --customize-hook='eval "chroot \"\$1\" env -i $IMG_PIP_ENV \"$IMG_VENV/bin/pip\" install -q /tmp/src"' \
  --customize-hook='chroot "$1" "$IMG_VENV/bin/hapaxd" --version >"$IMG_WORK/version"' \
  --customize-hook='chroot "$1" python3 -c "import platform; print(platform.python_version())" >"$IMG_WORK/python"' \
  --customize-hook='chroot "$1" groupadd --system --gid "$IMG_GID" "$IMG_USER"' \
  --customize-hook='chroot "$1" useradd --system --uid "$IMG_UID" --gid "$IMG_USER" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$IMG_USER" 2>/dev/null' \
  --customize-hook='mkdir -p "$1$IMG_STATE" && chown "$IMG_UID:$IMG_GID" "$1$IMG_STATE"' \
  --customize-hook='rm -rf "$1/tmp/src" "$1/tmp/host-ca.crt" "$1/root/.cache" && rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
  --customize-hook="found=\$(find \"\$1\" -xdev -regextype posix-extended -regex '$compilers' \\( -type f -o -type l \\) -print); if [ -n \"\$found\" ]; then echo \"build-image: compilers in the image: \$found\" >&2; exit 1; fi" \
  "$SUITE" "$IMG_WORK/rootfs.tar" </dev/null
echo "build-image: rootfs in $((SECONDS - step))s" >&2

step=$SECONDS
LAYOUT=$IMG_WORK/oci
config_args=(--config.user "$(cfg .config.User)")
while IFS= read -r value; do config_args+=(--config.entrypoint "$value"); done \
  < <(jq -r '.config.Entrypoint[]' "$CONFIG")
while IFS= read -r value; do config_args+=(--config.cmd "$value"); done \
  < <(jq -r '.config.Cmd[]' "$CONFIG")
while IFS= read -r value; do config_args+=(--config.exposedports "$value"); done \
  < <(jq -r '.config.ExposedPorts[]' "$CONFIG")
while IFS= read -r value; do config_args+=(--config.env "$value"); done \
  < <(jq -r '.config.Env[], .base_env[]' "$CONFIG")
while IFS= read -r value; do config_args+=(--config.volume "$value"); done \
  < <(jq -r '.config.Volumes[]' "$CONFIG")
VERSION=$(tr -d '\n' <"$IMG_WORK/version")
VERSION=${VERSION#hapaxd }
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$TAG"
umoci raw add-layer --image "$LAYOUT:$TAG" --history.created "$CREATED" \
  --history.created_by "mmdebstrap $SUITE minbase + pip install hapax-gateway" "$IMG_WORK/rootfs.tar"
umoci config --image "$LAYOUT:$TAG" --architecture "$ARCH" --os linux --created "$CREATED" \
  --history.created "$CREATED" --history.created_by "scripts/build-image.sh image config" \
  --config.label "org.opencontainers.image.title=hapax" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  "${config_args[@]}"
umoci gc --layout "$LAYOUT"
echo "build-image: OCI layout in $((SECONDS - step))s" >&2

# Sizes: the compressed layer (what a registry stores and a pull moves), the layer's tar, and the
# files it holds once unpacked (regular files only, as `du --apparent-size` would count them).
manifest=$(jq -er --arg tag "$TAG" \
  '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
  "$LAYOUT/index.json")
blob() { echo "$LAYOUT/blobs/${1%%:*}/${1#*:}"; }
compressed=$(jq '[.layers[].size] | add' "$(blob "$manifest")")
layers=$(jq '.layers | length' "$(blob "$manifest")")
tar_bytes=$(stat -c %s "$IMG_WORK/rootfs.tar")
read -r unpacked venv_bytes < <(tar -tvf "$IMG_WORK/rootfs.tar" | awk -v venv="./${IMG_VENV#/}/" '
  $1 ~ /^-/ { total += $3; if (index($6, venv) == 1) in_venv += $3 }
  END { printf "%d %d\n", total, in_venv }')
rm -f "$IMG_WORK/rootfs.tar" "$IMG_WORK/src.tar"
layout_bytes=$(du -sb "$LAYOUT" | cut -f1)

jq -n --arg reference "$OUT/oci:$TAG" --arg digest "$manifest" --arg version "$VERSION" \
  --arg python "$(tr -d '\n' <"$IMG_WORK/python")" --arg created "$CREATED" \
  --arg suite "$SUITE" --arg arch "$ARCH" \
  --argjson compressed "$compressed" --argjson layers "$layers" --argjson tar "$tar_bytes" \
  --argjson unpacked "$unpacked" --argjson venv "$venv_bytes" --argjson layout "$layout_bytes" \
  --argjson seconds "$((SECONDS - started))" \
  '{reference: $reference, manifest_digest: $digest, hapaxd_version: $version,
    python_version: $python, debian_suite: $suite, architecture: $arch, created: $created,
    layers: $layers, compressed_layer_bytes: $compressed, layout_bytes: $layout,
    rootfs_tar_bytes: $tar, unpacked_rootfs_bytes: $unpacked, venv_bytes: $venv,
    build_seconds: $seconds}' >"$IMG_WORK/image.json"

# Replace the previous output only now that the new one is whole.
rm -rf "$OUT/oci" "$OUT/image.json"
mv "$LAYOUT" "$OUT/oci"
mv "$IMG_WORK/image.json" "$OUT/image.json"

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "image: $OUT/oci:$TAG ($manifest), hapaxd $VERSION on Python $(cat "$IMG_WORK/python")"
echo "size: compressed layer $(mb "$compressed") ($compressed bytes);" \
  "unpacked rootfs $(mb "$unpacked") ($unpacked bytes), of which $IMG_VENV $(mb "$venv_bytes")"
echo "built in $((SECONDS - started))s; details in $OUT/image.json"
