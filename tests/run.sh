#!/usr/bin/env bash
# The whole test suite, from a fresh machine: checks the toolchain, installs what the tests
# need (the container engine and test tools from Debian: podman, runc, catatonit, mmdebstrap,
# docker-registry; awscli and moto into .venv from PyPI), builds or reuses the cached Debian base
# image (tests/base-image.sh), starts one Podman API service for the whole run, then runs every
# test. This is the README's test command; CI calls it through .ci/run.
#
# The tests get:
#   DEVAMI_TEST_ROOTFS  the Debian 12 root-filesystem tarball to import as a base image
#   DOCKER_HOST         unix:// socket of the Podman service (Docker-compatible API)
#   CONTAINERS_CONF     the containers.conf that service runs with (runc, ulimits within limits)
#   DEVAMI_TEST_BASE    that tarball imported into the engine (what every alias resolves to)
#   DEVAMI_TEST_REGISTRY  127.0.0.1:PORT, where the pull test runs a registry the engine trusts
# On exit the service is stopped, and the containers and images labelled devami.test=1 removed.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=setup.sh
. tests/setup.sh
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v git >/dev/null || fail "git is missing: apt-get install git"
command -v python3 >/dev/null || fail "python3 is missing: install Python 3 with pip"

need_tools "the local backend's container engine and the test tools" podman runc catatonit mmdebstrap docker-registry curl

if ! { [ -x .venv/bin/aws ] && [ -x .venv/bin/moto_server ] && .venv/bin/python -c "import boto3" 2>/dev/null; }; then
  echo "== installing awscli into .venv (used inside test jobs)"
  python3 -m venv .venv || fail "python3 -m venv failed: install python3-venv"
  .venv/bin/pip install --quiet --disable-pip-version-check 'awscli>=1.36,<2' 'boto3>=1.35' 'moto[server]==5.2.5' || fail "pip could not install awscli, boto3 and moto into .venv"
fi
.venv/bin/aws --version >/dev/null || fail "awscli in .venv does not run"

echo "== base image"
rootfs="$(bash tests/base-image.sh)" || fail "tests/base-image.sh could not provide the Debian base image"
rootfs="${rootfs##*$'\n'}"
[ -s "$rootfs" ] || fail "tests/base-image.sh printed '$rootfs', which is not a tarball"
export DEVAMI_TEST_ROOTFS="$rootfs"
echo "$DEVAMI_TEST_ROOTFS"

echo "== container engine"
engine_tmp="$(mktemp -d "${TMPDIR:-/tmp}/devami_tests.XXXXXX")" || fail "mktemp -d failed"
sock="$engine_tmp/podman.sock"
engine_pid=""
engine_ready=""

engine_alive() { [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; }
engine_answers() { curl -sf --max-time 1 --unix-socket "$sock" http://d/v1.41/_ping >/dev/null 2>&1; }
# Runs podman against the test service when it answers, else against local storage directly.
engine_podman() {
  if engine_answers; then podman --url "unix://$sock" "$@"; else podman "$@"; fi
}
stop_engine() {
  local status=$? ids
  set +e
  trap - EXIT INT TERM
  if [ -n "$engine_ready" ]; then
    ids="$(engine_podman ps -aq --filter label=devami.test=1 2>/dev/null | sort -u)"
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086 # one container id per word
      engine_podman rm -f -t 0 $ids >/dev/null ||
        echo "warning: could not remove the test containers: ${ids//$'\n'/ }" >&2
    fi
    # Several passes: an image that others were committed from goes once they are gone.
    for _ in 1 2 3; do
      ids="$(engine_podman images -q --filter label=devami.test=1 2>/dev/null | sort -u)"
      [ -n "$ids" ] || break
      # shellcheck disable=SC2086 # one image id per word
      engine_podman rmi -f $ids >/dev/null 2>&1
    done
    ids="$(engine_podman images -q --filter label=devami.test=1 2>/dev/null | sort -u)"
    [ -z "$ids" ] || echo "warning: could not remove the test images: ${ids//$'\n'/ }" >&2
    if ! engine_alive && [ "$status" != 0 ]; then
      echo "the podman service had stopped before the end; its last log lines:" >&2
      tail -n 20 "$engine_tmp/podman.log" >&2
    fi
  fi
  if engine_alive; then
    kill "$engine_pid" 2>/dev/null
    for _ in $(seq 50); do engine_alive || break; sleep 0.1; done
    engine_alive && kill -9 "$engine_pid" 2>/dev/null
    wait "$engine_pid" 2>/dev/null
  fi
  rm -rf "$engine_tmp"
  exit "$status"
}
trap stop_engine EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Podman 4.3 on this kind of machine: crun cannot run in a cgroup v1 "hybrid" hierarchy, so use
# runc; the default ulimits exceed the hard limits, and raising them needs CAP_SYS_RESOURCE.
limit() {
  local hard
  hard="$(ulimit -H "$1")"
  if [ "$hard" = unlimited ] || [ "$hard" -gt 4096 ]; then echo 4096; else echo "$hard"; fi
}
nofile="$(limit -n)"
nproc="$(limit -u)"
{
  echo "[containers]"
  echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
  if command -v runc >/dev/null; then
    echo
    echo "[engine]"
    echo "runtime = \"runc\""
  fi
} >"$engine_tmp/containers.conf"
export CONTAINERS_CONF="$engine_tmp/containers.conf"

# A registry on loopback for the pull test (Debian's docker-registry, started by the test itself):
# plain HTTP, so the engine is told it is an insecure registry.
registry_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
{
  echo 'unqualified-search-registries = ["docker.io"]'
  echo
  echo '[[registry]]'
  echo "location = \"127.0.0.1:$registry_port\""
  echo 'insecure = true'
} >"$engine_tmp/registries.conf"
export CONTAINERS_REGISTRIES_CONF="$engine_tmp/registries.conf"
export DEVAMI_TEST_REGISTRY="127.0.0.1:$registry_port"

podman system service --time=0 "unix://$sock" \
  </dev/null >"$engine_tmp/podman.log" 2>&1 &
engine_pid=$!
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  engine_answers && break
  engine_alive || { tail -n 20 "$engine_tmp/podman.log" >&2; fail "podman system service exited before answering"; }
  sleep 0.1
done
engine_answers || { tail -n 20 "$engine_tmp/podman.log" >&2; fail "podman system service did not answer on $sock within 30 s"; }
engine_ready=1
export DOCKER_HOST="unix://$sock"
echo "podman $(podman --version | awk '{print $3}') answers on $DOCKER_HOST"

# The tests' base OS image, imported through the engine's API (no registry needed); every alias
# of the tests resolves to it (DEVAMI_IMAGE_<ALIAS>, see tests/integration/support.rs).
base_ref="localhost/devamitest/base:latest"
curl -sf --unix-socket "$sock" -X POST -H 'Content-Type: application/x-tar' -T "$DEVAMI_TEST_ROOTFS" \
  "http://d/v1.41/images/create?fromSrc=-&repo=localhost/devamitest/base&tag=latest&changes=LABEL%20devami.test%3D1" \
  >/dev/null || fail "the engine could not import $DEVAMI_TEST_ROOTFS"
engine_podman image exists "$base_ref" || fail "the engine has no $base_ref after the import"
export DEVAMI_TEST_BASE="$base_ref"
echo "base image $DEVAMI_TEST_BASE"

echo "== formatting"
cargo fmt --check || fail "cargo fmt --check found unformatted code: run cargo fmt"

echo "== tests"
cargo test --locked --all-targets
