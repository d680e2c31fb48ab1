#!/usr/bin/env bash
# Debian packages the test suite drives as real peers: `prometheus` (gives the `prometheus` and
# `promtool` binaries), `nghttp2-client` (gives `h2load`, the HTTP/2 load generator that drops
# connections mid-call), `redis-server` (the shared rate-limit store; tests start their own on
# loopback), `postgresql` (the usage ledger's shared store, started by the tests on loopback),
# and Go with Debian's gRPC libraries for the Go stubs and example (`protoc` and its
# Go plugins generate them; they build in GOPATH mode from /usr/share/gocode), and a JDK with
# Debian's grpc-java for the Java stubs and example (`grpc_java_plugin` generates them; javac
# builds them against the jars in /usr/share/java, listed in tests/clients/test_java_example.py).
# Installs only the packages whose binary or library is missing. `make tools` runs this.
set -euo pipefail

packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v h2load >/dev/null 2>&1 || packages+=(nghttp2-client)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
# PostgreSQL's server, for the usage ledger's PostgreSQL store (tests initdb their own on
# loopback). Debian keeps initdb off PATH, in /usr/lib/postgresql/<version>/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 ||
  packages+=(postgresql)
command -v go >/dev/null 2>&1 || packages+=(golang-go)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null 2>&1 || packages+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null 2>&1 || packages+=(protoc-gen-go-grpc)
# grpc-go with the protobuf APIv2 runtime (its dependency would pick the old 1.3 one) and genproto.
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || packages+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/google.golang.org/protobuf ] || packages+=(golang-google-protobuf-dev)
[ -d /usr/share/gocode/src/github.com/golang/protobuf/ptypes ] ||
  packages+=(golang-github-golang-protobuf-1-5-dev)
[ -d /usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc ] ||
  packages+=(golang-google-genproto-dev)
command -v javac >/dev/null 2>&1 || packages+=(openjdk-17-jdk-headless)
command -v grpc_java_plugin >/dev/null 2>&1 || packages+=(protobuf-compiler-grpc-java-plugin)
# libgrpc-java declares almost none of what its jars need at run time, hence the rest; geronimo's
# annotations give the javax.annotation.Generated the generated stubs carry.
java=/usr/share/java
[ -f $java/grpc-netty.jar ] || packages+=(libgrpc-java)
[ -f $java/protobuf.jar ] || packages+=(libprotobuf-java)
[ -f $java/guava.jar ] || packages+=(libguava-java)
[ -f $java/gson.jar ] || packages+=(libgoogle-gson-java)
[ -f $java/perfmark-api.jar ] || packages+=(libperfmark-java)
[ -f $java/netty-codec-http2.jar ] || packages+=(libnetty-java)
[ -f $java/geronimo-annotation-1.3-spec.jar ] || packages+=(libgeronimo-annotation-1.3-spec-java)
# Production peers (README "Running in production"): nginx as the L7 proxy in front of two
# gateway processes (grpc_pass), and the daemonless image build and run: mmdebstrap makes the
# root filesystem from Debian's packages, umoci assembles the OCI image, runc runs it, jq edits
# its runtime config.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx)
command -v mmdebstrap >/dev/null 2>&1 || packages+=(mmdebstrap)
command -v umoci >/dev/null 2>&1 || packages+=(umoci)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || packages+=(runc)
command -v jq >/dev/null 2>&1 || packages+=(jq)
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${packages[*]} and there is no apt-get;" \
       "install these Debian packages by hand" >&2
  exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "install-system-deps: not root and no sudo; as root run:" \
         "apt-get update && apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
${as_root[@]+"${as_root[@]}"} apt-get update
# The JDK's postinst links man pages into /usr/share/man/man1, which slim images lack.
${as_root[@]+"${as_root[@]}"} mkdir -p /usr/share/man/man1
${as_root[@]+"${as_root[@]}"} apt-get install -y --no-install-recommends "${packages[@]}"

# Only the binaries are wanted. On a host running systemd the package also starts a Prometheus
# service on :9090 (the gateway's metrics port), and redis-server one on :6379; stop both and keep
# them from starting at boot.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  ${as_root[@]+"${as_root[@]}"} systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  ${as_root[@]+"${as_root[@]}"} systemctl disable --now redis-server.service >/dev/null 2>&1 || true
  ${as_root[@]+"${as_root[@]}"} systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi
