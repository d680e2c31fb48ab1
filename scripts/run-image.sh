#!/usr/bin/env bash
# Run the image scripts/build-image.sh made, with runc, detached, as root:
#
#   scripts/run-image.sh [-n NAME] [-b BUNDLE] [-e KEY=VALUE]... [-c CONFIG.yaml] [-s STATE_DIR]
#                        [-p] [IMAGE_DIR]
#
# IMAGE_DIR is build-image.sh's OUT_DIR (default build/image); the image is IMAGE_DIR/oci:latest.
# `umoci unpack` makes the runtime bundle BUNDLE (default IMAGE_DIR/bundle-NAME; made afresh each
# time), whose config.json is then edited with jq:
#   - process.terminal false, so that `runc run -d` needs no console socket; the container's
#     stdout and stderr go to BUNDLE/container.log
#   - the host's network namespace (the gateway listens on the host's ports, 50051 and 9090
#     unless HAPAX_GRPC_ADDRESS / HAPAX_METRICS_ADDRESS say otherwise), with the host's
#     /etc/resolv.conf and /etc/hosts; -p keeps a private one with only a loopback (reach it
#     with `nsenter --net=/proc/PID/ns/net ...`)
#   - -e KEY=VALUE: added to the environment (repeatable)
#   - -c FILE: mounted read-only at /etc/hapax/hapax.yaml, with HAPAX_CONFIG pointing at it
#   - -s DIR: the state directory (usage ledger), the image's VOLUME /var/lib/hapax, is this host
#     folder (made and given to uid 10001 if missing); without it, a tmpfs owned by 10001 that
#     goes with the container
# Then `runc run -d`. Stop it with `runc kill NAME TERM` (it drains in-flight calls for
# server.grace_period, 10s by default), remove it with `runc delete -f NAME`.
set -euo pipefail

die() {
  echo "run-image: $*" >&2
  exit 1
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$ROOT/scripts/image-config.json
NAME=hapax
BUNDLE=
CONFIG_FILE=
STATE=
NETWORK=host
ENVS=()
while getopts "n:b:e:c:s:ph" opt; do
  case $opt in
    n) NAME=$OPTARG ;;
    b) BUNDLE=$OPTARG ;;
    e) [[ $OPTARG == ?*=* ]] || die "-e wants KEY=VALUE, not $OPTARG"; ENVS+=("$OPTARG") ;;
    c) CONFIG_FILE=$(realpath -e "$OPTARG") || die "no config file $OPTARG" ;;
    s) STATE=$(realpath -m "$OPTARG") ;;
    p) NETWORK=private ;;
    h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "usage: scripts/run-image.sh [-n NAME] [-b BUNDLE] [-e KEY=VALUE]... [-c FILE] [-s DIR] [-p] [IMAGE_DIR]" ;;
  esac
done
shift $((OPTIND - 1))
[ "$#" -le 1 ] || die "one IMAGE_DIR at most"
[ "$(id -u)" -eq 0 ] || die "must run as root (runc, and files owned by uid 10001)"
for tool in umoci runc jq; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (make tools installs it)"
done

IMAGE_DIR=$(realpath -m "${1:-build/image}")
TAG=$(jq -er .tag "$CONFIG")
[ -f "$IMAGE_DIR/oci/index.json" ] || die "no image in $IMAGE_DIR: run scripts/build-image.sh first"
BUNDLE=$(realpath -m "${BUNDLE:-$IMAGE_DIR/bundle-$NAME}")
STATE_IN=$(jq -er .state_dir "$CONFIG")
OWNER=$(jq -er '"\(.user.uid):\(.user.gid)"' "$CONFIG")

# A stopped container of this name (a previous run) is removed; a running one is left alone.
if status=$(runc state "$NAME" 2>/dev/null | jq -r .status); then
  [ "$status" = stopped ] || die "container $NAME is $status: runc kill $NAME TERM; runc delete $NAME"
  runc delete "$NAME"
fi

rm -rf "$BUNDLE"
umoci unpack --image "$IMAGE_DIR/oci:$TAG" "$BUNDLE" >/dev/null

if [ -n "$STATE" ] && [ ! -d "$STATE" ]; then
  mkdir -p "$STATE"
  chown "$OWNER" "$STATE"
fi
[ -z "$CONFIG_FILE" ] || ENVS+=("HAPAX_CONFIG=/etc/hapax/hapax.yaml")
envs_json=$(printf '%s\n' ${ENVS[@]+"${ENVS[@]}"} | jq -R 'select(length > 0)' | jq -s .)
host_files=()
for file in /etc/resolv.conf /etc/hosts; do
  if [ -e "$file" ]; then host_files+=("$file"); fi
done
host_files_json=$(printf '%s\n' ${host_files[@]+"${host_files[@]}"} | jq -R 'select(length > 0)' | jq -s .)

# shellcheck disable=SC2016  # jq's variables
jq --arg net "$NETWORK" --arg config "$CONFIG_FILE" --arg state "$STATE" \
  --arg state_in "$STATE_IN" --arg owner "$OWNER" --argjson env "$envs_json" \
  --argjson host_files "$host_files_json" '
  def key: split("=")[0];
  def ro_bind($from; $to): {destination: $to, type: "bind", source: $from,
    options: ["rbind", "ro", "nosuid", "nodev"]};
  .process.terminal = false
  | .process.env = ([.process.env[] | select(key as $k | ($env | map(key) | index($k)) == null)]
                    + $env)
  | .mounts |= map(select(.destination != $state_in))
  | .mounts += [if $state == "" then
        {destination: $state_in, type: "tmpfs", source: "tmpfs",
         options: ["nosuid", "nodev", "noexec", "mode=0755",
                   "uid=\($owner | split(":")[0])", "gid=\($owner | split(":")[1])"]}
      else
        {destination: $state_in, type: "bind", source: $state,
         options: ["rbind", "rw", "nosuid", "nodev", "noexec"]}
      end]
  | if $config == "" then . else .mounts += [ro_bind($config; "/etc/hapax/hapax.yaml")] end
  | if $net == "host" then
      .linux.namespaces |= map(select(.type != "network"))
      | .mounts += [$host_files[] | ro_bind(.; .)]
    else . end
  ' "$BUNDLE/config.json" >"$BUNDLE/config.json.new"
mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"

LOG=$BUNDLE/container.log
if ! runc run -d -b "$BUNDLE" --pid-file "$BUNDLE/container.pid" "$NAME" </dev/null >"$LOG" 2>&1; then
  cat "$LOG" >&2
  die "runc run failed"
fi

grpc=127.0.0.1:50051
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  case $kv in HAPAX_GRPC_ADDRESS=*) grpc=${kv#*=}; grpc=${grpc/#0.0.0.0:/127.0.0.1:} ;; esac
done
echo "running: container $NAME, pid $(cat "$BUNDLE/container.pid"), $NETWORK network, log $LOG"
echo "health:  runc exec $NAME hapaxd healthcheck $grpc"
echo "stop:    runc kill $NAME TERM; then runc delete -f $NAME && rm -rf $BUNDLE"
